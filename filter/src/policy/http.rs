//! Header rules of the HTTP filter: what the kubelet is asked for, which responses
//! can be rewritten, and how the tenant header is read. Pure functions over header
//! values, used by the proxy-wasm glue.

use crate::policy::endpoint::BodyKind;

/// `Accept` sent to the kubelet for a rewritten endpoint. Metrics are asked for as
/// OpenMetrics only when the client asked for OpenMetrics, else as Prometheus text
/// 0.0.4; never protobuf or anything else the rewriter cannot read.
pub fn upstream_accept(kind: BodyKind, client_accept: Option<&[u8]>) -> &'static str {
    match kind {
        BodyKind::Json(_) => "application/json",
        BodyKind::Exposition => {
            let wants_openmetrics = client_accept.is_some_and(|a| {
                a.to_ascii_lowercase()
                    .windows(OPENMETRICS.len())
                    .any(|w| w == OPENMETRICS.as_bytes())
            });
            if wants_openmetrics {
                "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
            } else {
                "text/plain;version=0.0.4"
            }
        }
    }
}

const OPENMETRICS: &str = "application/openmetrics-text";

/// Why a response body cannot be rewritten.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unreadable {
    /// A `Content-Encoding` other than identity (e.g. gzip).
    ContentEncoding(String),
    /// A media type the rewriter does not read (or none at all).
    ContentType(String),
}

impl Unreadable {
    /// Short name, used in metric names and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Unreadable::ContentEncoding(_) => "content_encoding",
            Unreadable::ContentType(_) => "content_type",
        }
    }

    /// The plain-text reason of the 502 sent in tenant mode.
    pub fn reason(&self) -> String {
        match self {
            Unreadable::ContentEncoding(v) => {
                format!("kubelet-scope: the kubelet answered with content-encoding {v:?}, which the filter cannot read")
            }
            Unreadable::ContentType(v) => {
                format!("kubelet-scope: the kubelet answered with content-type {v:?}, which the filter cannot read")
            }
        }
    }
}

/// Checks the headers of a 2xx response before its body is rewritten.
pub fn check_response(
    kind: BodyKind,
    content_type: Option<&[u8]>,
    content_encoding: Option<&[u8]>,
) -> Result<(), Unreadable> {
    if let Some(encoding) = content_encoding {
        let e = lossy_trimmed_lower(encoding);
        if !(e.is_empty() || e == "identity") {
            return Err(Unreadable::ContentEncoding(e));
        }
    }
    let media = content_type.map(|ct| {
        let ct = lossy_trimmed_lower(ct);
        match ct.split_once(';') {
            Some((media, _)) => media.trim().to_owned(),
            None => ct,
        }
    });
    let ok = match (&media, kind) {
        (Some(m), BodyKind::Exposition) => m == "text/plain" || m == OPENMETRICS,
        (Some(m), BodyKind::Json(_)) => m == "application/json",
        (None, _) => false,
    };
    if ok {
        Ok(())
    } else {
        Err(Unreadable::ContentType(media.unwrap_or_default()))
    }
}

fn lossy_trimmed_lower(v: &[u8]) -> String {
    String::from_utf8_lossy(v).trim().to_ascii_lowercase()
}

/// True for a `:status` of 200–299.
pub fn is_success(status: Option<&[u8]>) -> bool {
    matches!(status, Some([b'2', a, b]) if a.is_ascii_digit() && b.is_ascii_digit())
}

/// A kubelet answer on a rewritten path, by its `:status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upstream {
    /// 2xx: the body is rewritten.
    Success,
    /// 301, 302, 303, 307, 308: passes only when its `Location` may be used.
    Redirect,
    /// 304: has no body by definition, so it carries nothing to withhold.
    NotModified,
    /// Anything else (an unreadable status included, as 502): in tenant mode
    /// the status stays and the body is replaced.
    Error(u16),
}

pub fn upstream_status(status: Option<&[u8]>) -> Upstream {
    let code = status
        .and_then(|s| std::str::from_utf8(s).ok())
        .filter(|s| s.len() == 3)
        .and_then(|s| s.parse::<u16>().ok())
        .filter(|c| (100..600).contains(c));
    match code {
        Some(200..=299) => Upstream::Success,
        Some(301 | 302 | 303 | 307 | 308) => Upstream::Redirect,
        Some(304) => Upstream::NotModified,
        Some(c) => Upstream::Error(c),
        None => Upstream::Error(502),
    }
}

/// The path a redirect's `Location` names on the same kubelet: an absolute
/// path (the kubelet's own redirects are `/runningpods/`-style), query kept.
/// Anything else (another host, a scheme, a relative reference) is `None`.
pub fn redirect_path(location: Option<&[u8]>) -> Option<&str> {
    let location = std::str::from_utf8(location?).ok()?.trim();
    (location.starts_with('/') && !location.starts_with("//")).then_some(location)
}

/// The tenant header as found in the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantHeader {
    Missing,
    One(String),
    /// Sent more than once: a client may have added its own next to the one the
    /// trusted filter set, so neither is believed.
    Ambiguous,
    /// Not UTF-8.
    Invalid,
}

/// Reads the tenant header from the request's header pairs (names compared
/// case-insensitively; Envoy's are lower-case already).
pub fn tenant_header<'a>(
    name: &str,
    headers: impl IntoIterator<Item = (&'a str, &'a [u8])>,
) -> TenantHeader {
    let mut found = TenantHeader::Missing;
    for (n, v) in headers {
        if !n.eq_ignore_ascii_case(name) {
            continue;
        }
        if found != TenantHeader::Missing {
            return TenantHeader::Ambiguous;
        }
        found = match std::str::from_utf8(v) {
            Ok(s) => TenantHeader::One(s.trim().to_owned()),
            Err(_) => TenantHeader::Invalid,
        };
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::endpoint::JsonEndpoint;

    #[test]
    fn upstream_statuses() {
        let s = |v: &[u8]| upstream_status(Some(v));
        assert_eq!(s(b"200"), Upstream::Success);
        assert_eq!(s(b"206"), Upstream::Success);
        assert_eq!(s(b"301"), Upstream::Redirect);
        assert_eq!(s(b"308"), Upstream::Redirect);
        assert_eq!(s(b"304"), Upstream::NotModified);
        assert_eq!(s(b"404"), Upstream::Error(404));
        assert_eq!(s(b"500"), Upstream::Error(500));
        for bad in [&b"2000"[..], b"20", b"abc", b"099", b"600", b""] {
            assert_eq!(s(bad), Upstream::Error(502), "{bad:?}");
        }
        assert_eq!(upstream_status(None), Upstream::Error(502));
        assert_eq!(redirect_path(Some(b"/runningpods/")), Some("/runningpods/"));
        assert_eq!(redirect_path(Some(b"/pods/?a=1")), Some("/pods/?a=1"));
        for bad in [
            &b"//evil/x"[..],
            b"https://evil/pods",
            b"pods",
            b"",
            b"\xff",
        ] {
            assert_eq!(redirect_path(Some(bad)), None, "{bad:?}");
        }
    }

    #[test]
    fn accept_is_text_unless_openmetrics_was_asked_for() {
        let prom = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert!(upstream_accept(BodyKind::Exposition, Some(prom.as_bytes()))
            .starts_with("application/openmetrics-text"));
        for a in [
            None,
            Some(&b"*/*"[..]),
            Some(b"application/vnd.google.protobuf"),
        ] {
            assert_eq!(
                upstream_accept(BodyKind::Exposition, a),
                "text/plain;version=0.0.4"
            );
        }
        assert_eq!(
            upstream_accept(BodyKind::Json(JsonEndpoint::PodList), None),
            "application/json"
        );
    }

    #[test]
    fn only_identity_text_is_readable() {
        let ex = BodyKind::Exposition;
        assert_eq!(
            check_response(ex, Some(b"text/plain; version=0.0.4; charset=utf-8"), None),
            Ok(())
        );
        assert_eq!(
            check_response(
                ex,
                Some(b"application/openmetrics-text; version=1.0.0"),
                Some(b"identity")
            ),
            Ok(())
        );
        assert_eq!(check_response(ex, Some(b"Text/Plain"), Some(b"")), Ok(()));
        assert_eq!(
            check_response(ex, Some(b"text/plain"), Some(b"gzip")),
            Err(Unreadable::ContentEncoding("gzip".into()))
        );
        assert!(matches!(
            check_response(
                ex,
                Some(b"application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily"),
                None
            ),
            Err(Unreadable::ContentType(_))
        ));
        assert!(matches!(
            check_response(ex, None, None),
            Err(Unreadable::ContentType(_))
        ));
        let json = BodyKind::Json(JsonEndpoint::StatsSummary);
        assert_eq!(
            check_response(json, Some(b"application/json"), None),
            Ok(())
        );
        assert!(check_response(json, Some(b"text/plain"), None).is_err());
    }

    #[test]
    fn status_and_tenant_header() {
        assert!(is_success(Some(b"200")) && is_success(Some(b"204")));
        for s in [
            None,
            Some(&b"304"[..]),
            Some(b"2"),
            Some(b"20x"),
            Some(b"500"),
            Some(b"2000"),
        ] {
            assert!(!is_success(s), "{s:?}");
        }
        let h = |pairs: &[(&'static str, &'static [u8])]| {
            tenant_header("x-tenant", pairs.iter().copied())
        };
        assert_eq!(h(&[(":path", b"/")]), TenantHeader::Missing);
        assert_eq!(
            h(&[("X-Tenant", b" acme ")]),
            TenantHeader::One("acme".into())
        );
        assert_eq!(
            h(&[("x-tenant", b"a"), ("x-tenant", b"a")]),
            TenantHeader::Ambiguous
        );
        assert_eq!(h(&[("x-tenant", b"\xff")]), TenantHeader::Invalid);
    }
}
