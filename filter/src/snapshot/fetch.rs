//! Snapshot delivery: the long-poll request to the control plane, how its answer is
//! read, the back-off after failures, and how old a snapshot may get.
//!
//! The control plane serves `GET /v1/snapshot?waitSeconds=N` with
//! `If-None-Match: "<version>"`: `200` with the snapshot (and `ETag: "<version>"`)
//! as soon as the version differs, or `304` when nothing changed within `N` seconds.
//!
//! The fetching VM (see [`crate::snapshot::lease`]) writes what it got into proxy-wasm shared
//! data under the keys below; every VM of the Envoy reads [`VERSION_KEY`] (a few
//! bytes) on each tick and decodes [`SNAPSHOT_KEY`] only when that changed.

use crate::config::SnapshotSource;
use crate::snapshot::Snapshot;

/// The snapshot JSON, as served by the control plane.
pub const SNAPSHOT_KEY: &str = "kubelet-scope/snapshot";
/// The version of [`SNAPSHOT_KEY`]; written after it.
pub const VERSION_KEY: &str = "kubelet-scope/version";
/// Wall-clock ms of the last successful contact with the control plane (200 or
/// 304): the snapshot's age is measured from it.
pub const FETCHED_AT_KEY: &str = "kubelet-scope/fetched-at";

/// How often each VM looks at shared data (and the lease holder polls).
pub const TICK_MS: u64 = 1_000;
/// Added to the long-poll wait for the HTTP call's own timeout.
pub const CALL_TIMEOUT_MARGIN_MS: u64 = 5_000;
/// First retry delay after a failed fetch; doubled per failure up to the maximum.
pub const BACKOFF_BASE_MS: u64 = 1_000;
pub const BACKOFF_MAX_MS: u64 = 30_000;
/// `Retry-After` of a 503 while the snapshot is missing or stale, in seconds.
pub const RETRY_AFTER_SECONDS: u64 = 5;

/// The HTTP call for one long poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollRequest {
    pub headers: Vec<(String, String)>,
    pub timeout_ms: u64,
}

/// Builds the long-poll request. `current` is the version in shared data, if any;
/// without one the control plane answers at once. `node` is Envoy's node id, sent
/// as `node=` when the source is `perNode`.
pub fn poll_request(
    source: &SnapshotSource,
    current: Option<&str>,
    node: Option<&str>,
) -> PollRequest {
    let wait_seconds = source.poll_timeout_ms / 1000;
    let separator = if source.path.contains('?') { '&' } else { '?' };
    let mut path = format!("{}{separator}waitSeconds={wait_seconds}", source.path);
    if let Some(node) = node.filter(|n| source.per_node && !n.is_empty()) {
        path.push_str("&node=");
        for &b in node.as_bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                path.push(char::from(b));
            } else {
                path.push_str(&format!("%{b:02X}"));
            }
        }
    }
    let authority = source
        .authority
        .clone()
        .unwrap_or_else(|| source.cluster.clone());
    let mut headers = vec![
        (":method".to_owned(), "GET".to_owned()),
        (":path".to_owned(), path),
        (":authority".to_owned(), authority),
        ("accept".to_owned(), "application/json".to_owned()),
    ];
    if let Some(version) = current {
        headers.push(("if-none-match".to_owned(), format!("\"{version}\"")));
    }
    PollRequest {
        headers,
        timeout_ms: source.poll_timeout_ms + CALL_TIMEOUT_MARGIN_MS,
    }
}

/// What one poll answer means.
#[derive(Debug)]
pub enum PollOutcome {
    /// A snapshot with a version other than the current one. `raw` is what goes
    /// into shared data (the body as received).
    Changed { snapshot: Snapshot, raw: Vec<u8> },
    /// 304, or a 200 with the version already held.
    Unchanged,
    /// Anything else; the current snapshot stays in use.
    Failed(String),
}

/// Reads the answer to a poll: `status` is the `:status` header (`None` when the
/// call failed without a response, e.g. a reset or no healthy upstream).
pub fn interpret(
    status: Option<&[u8]>,
    body: Option<Vec<u8>>,
    current: Option<&str>,
) -> PollOutcome {
    let Some(status) = status else {
        return PollOutcome::Failed("no response from the control plane".into());
    };
    match status {
        b"304" => PollOutcome::Unchanged,
        b"200" => {
            let raw = body.unwrap_or_default();
            match Snapshot::parse(&raw) {
                Ok(snapshot) if Some(snapshot.version.as_str()) == current => {
                    PollOutcome::Unchanged
                }
                Ok(snapshot) => PollOutcome::Changed { snapshot, raw },
                Err(e) => PollOutcome::Failed(format!("rejected the snapshot: {e}")),
            }
        }
        other => PollOutcome::Failed(format!(
            "control plane answered {}",
            String::from_utf8_lossy(other)
        )),
    }
}

/// Delay before the next attempt after `failures` consecutive failures.
pub fn backoff_ms(failures: u32) -> u64 {
    if failures == 0 {
        return 0;
    }
    let shift = (failures - 1).min(16);
    BACKOFF_BASE_MS
        .saturating_mul(1 << shift)
        .min(BACKOFF_MAX_MS)
}

/// True when a snapshot last confirmed at `fetched_at_ms` (never: `None`) is too old
/// to filter tenants with.
pub fn is_stale(now_ms: u64, fetched_at_ms: Option<u64>, max_staleness_seconds: u64) -> bool {
    match fetched_at_ms {
        None => true,
        Some(at) => now_ms.saturating_sub(at) > max_staleness_seconds.saturating_mul(1000),
    }
}

/// Encodes/decodes [`FETCHED_AT_KEY`].
pub fn encode_ms(ms: u64) -> Vec<u8> {
    ms.to_string().into_bytes()
}

pub fn decode_ms(bytes: &[u8]) -> Option<u64> {
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source() -> SnapshotSource {
        SnapshotSource {
            cluster: "control-plane".into(),
            authority: None,
            path: "/v1/snapshot".into(),
            poll_timeout_ms: 30_000,
            max_staleness_seconds: 300,
            per_node: false,
        }
    }

    fn header<'a>(r: &'a PollRequest, name: &str) -> Option<&'a str> {
        r.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn long_poll_request() {
        let r = poll_request(&source(), Some("v7"), Some("node-a"));
        assert_eq!(header(&r, ":path"), Some("/v1/snapshot?waitSeconds=30"));
        assert_eq!(header(&r, ":authority"), Some("control-plane"));
        assert_eq!(header(&r, ":method"), Some("GET"));
        assert_eq!(header(&r, "if-none-match"), Some("\"v7\""));
        assert_eq!(r.timeout_ms, 35_000);
        let mut s = source();
        s.path = "/v1/snapshot?node=a".into();
        s.authority = Some("cp.example".into());
        let r = poll_request(&s, None, None);
        assert_eq!(
            header(&r, ":path"),
            Some("/v1/snapshot?node=a&waitSeconds=30")
        );
        assert_eq!(header(&r, ":authority"), Some("cp.example"));
        assert_eq!(header(&r, "if-none-match"), None);
        // perNode: Envoy's node id, percent-encoded; none known, none sent.
        let mut s = source();
        s.per_node = true;
        let r = poll_request(&s, None, Some("node-1.zone a/b"));
        assert_eq!(
            header(&r, ":path"),
            Some("/v1/snapshot?waitSeconds=30&node=node-1.zone%20a%2Fb")
        );
        let r = poll_request(&s, None, None);
        assert_eq!(header(&r, ":path"), Some("/v1/snapshot?waitSeconds=30"));
    }

    const SNAP: &[u8] = br#"{"version":"v8","generatedAt":"t","namespaces":{}}"#;

    #[test]
    fn interprets_answers() {
        assert!(matches!(
            interpret(Some(b"304"), None, Some("v7")),
            PollOutcome::Unchanged
        ));
        match interpret(Some(b"200"), Some(SNAP.to_vec()), Some("v7")) {
            PollOutcome::Changed { snapshot, raw } => {
                assert_eq!(snapshot.version, "v8");
                assert_eq!(raw, SNAP);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            interpret(Some(b"200"), Some(SNAP.to_vec()), Some("v8")),
            PollOutcome::Unchanged
        ));
        for (status, body) in [
            (Some(&b"200"[..]), Some(b"{not json".to_vec())),
            (Some(b"200"), None),
            (Some(b"503"), None),
            (Some(b"404"), Some(SNAP.to_vec())),
            (None, None),
        ] {
            assert!(
                matches!(interpret(status, body, Some("v7")), PollOutcome::Failed(_)),
                "{status:?}"
            );
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        assert_eq!(backoff_ms(0), 0);
        assert_eq!(backoff_ms(1), 1_000);
        assert_eq!(backoff_ms(2), 2_000);
        assert_eq!(backoff_ms(5), 16_000);
        assert_eq!(backoff_ms(6), 30_000);
        assert_eq!(backoff_ms(u32::MAX), 30_000);
    }

    #[test]
    fn staleness() {
        assert!(is_stale(0, None, 300));
        assert!(!is_stale(300_000, Some(0), 300));
        assert!(is_stale(300_001, Some(0), 300));
        assert!(
            !is_stale(0, Some(10), 300),
            "clock going backwards is not stale"
        );
        assert_eq!(decode_ms(&encode_ms(1_234)), Some(1_234));
        assert_eq!(decode_ms(b"x"), None);
    }
}
