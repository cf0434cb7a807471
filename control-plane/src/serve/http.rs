//! The HTTP API every Envoy polls.
//!
//! `GET /v1/snapshot` answers at once with the current snapshot unless the client
//! already holds it (`If-None-Match: "<version>"`); then, with `?waitSeconds=N`,
//! the request is held until the version changes (200) or N seconds pass (304).
//! One apiserver watch thus fans out to every node with a single idle request per
//! Envoy, and a change reaches all of them as soon as it is published.
//!
//! Owns the routes, the long-poll and the `ETag`/`If-None-Match` handling. It only
//! reads the [`Store`] and bumps [`Metrics`]: it must not change the namespace map,
//! talk to the apiserver or hold a request longer than [`MAX_WAIT_SECONDS`].

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{MatchedPath, Query, Request, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::auth::{self, Authenticator};
use super::metrics::{Metrics, RequestLabels};
use axum::body::Bytes;

use super::store::{Current, Store};

/// Longest a long-poll is held; larger `waitSeconds` are capped to it, which keeps
/// idle connections well under the usual 60–120 s proxy/LB idle timeouts.
pub const MAX_WAIT_SECONDS: u64 = 60;

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub metrics: Arc<Metrics>,
    /// Cancelled on SIGTERM: waiting long-polls answer at once so shutdown is not
    /// held up for a minute.
    pub shutdown: CancellationToken,
}

#[cfg(test)]
pub fn router(state: AppState) -> Router {
    guarded_router(state, None)
}

/// The API with `/v1/snapshot` behind `auth`, when given; health, readiness and
/// metrics stay open (they name no namespace).
pub fn guarded_router(state: AppState, auth: Option<Arc<Authenticator>>) -> Router {
    let mut snapshots = Router::new().route("/v1/snapshot", get(snapshot));
    if let Some(auth) = auth {
        snapshots = snapshots.route_layer(middleware::from_fn_with_state(auth, auth::require));
    }
    Router::new()
        .merge(snapshots)
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .with_state(state)
}

#[derive(Deserialize)]
struct SnapshotQuery {
    #[serde(rename = "waitSeconds")]
    wait_seconds: Option<u64>,
    /// The asking node: its own virtual pods only (none: every node's).
    node: Option<String>,
}

async fn snapshot(
    State(state): State<AppState>,
    Query(query): Query<SnapshotQuery>,
    headers: HeaderMap,
) -> Response {
    let wait = Duration::from_secs(query.wait_seconds.unwrap_or(0).min(MAX_WAIT_SECONDS));
    let deadline = tokio::time::Instant::now() + wait;
    let held = if_none_match(&headers);
    let mut rx = state.store.subscribe();
    let mut _waiting = None;
    let node = query.node.as_deref().filter(|n| !n.is_empty());
    loop {
        let current = rx.borrow_and_update().clone();
        if let Some(p) = &current {
            let (version, body) = p.view(node);
            if !held.as_ref().is_some_and(|h| h.matches(version)) {
                return full(version, body);
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return unchanged(current, node);
        }
        _waiting.get_or_insert_with(|| WaitingGuard::new(&state.metrics));
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { return unchanged(current, node) },
            () = tokio::time::sleep_until(deadline) => {},
            () = state.shutdown.cancelled() => return unchanged(current, node),
        }
    }
}

/// Counts a waiting long-poll for as long as it waits, including when the client
/// goes away and the handler future is dropped.
struct WaitingGuard(Arc<Metrics>);

impl WaitingGuard {
    fn new(metrics: &Arc<Metrics>) -> Self {
        metrics.long_polls_waiting.inc();
        WaitingGuard(metrics.clone())
    }
}

impl Drop for WaitingGuard {
    fn drop(&mut self) {
        self.0.long_polls_waiting.dec();
    }
}

/// The versions named in `If-None-Match` (`"v"`, `W/"v"`, lists, `*`).
enum Held {
    Any,
    Versions(Vec<String>),
}

impl Held {
    fn matches(&self, version: &str) -> bool {
        match self {
            Held::Any => true,
            Held::Versions(v) => v.iter().any(|v| v == version),
        }
    }
}

fn if_none_match(headers: &HeaderMap) -> Option<Held> {
    let mut versions = Vec::new();
    for value in headers.get_all(IF_NONE_MATCH) {
        let value = value.to_str().ok()?;
        for tag in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            if tag == "*" {
                return Some(Held::Any);
            }
            let tag = tag.strip_prefix("W/").unwrap_or(tag);
            versions.push(tag.trim_matches('"').to_string());
        }
    }
    (!versions.is_empty()).then_some(Held::Versions(versions))
}

fn etag(version: &str) -> HeaderValue {
    // Versions are hex digests, always a valid header value.
    HeaderValue::from_str(&format!("\"{version}\"")).unwrap_or(HeaderValue::from_static("\"\""))
}

fn full(version: &str, body: &Bytes) -> Response {
    (
        [
            (CONTENT_TYPE, HeaderValue::from_static("application/json")),
            (CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (ETAG, etag(version)),
        ],
        body.clone(),
    )
        .into_response()
}

/// 304 when the client's version is still current, 503 while there is no snapshot.
fn unchanged(current: Current, node: Option<&str>) -> Response {
    match current {
        Some(p) => (StatusCode::NOT_MODIFIED, [(ETAG, etag(p.view(node).0))]).into_response(),
        None => not_ready(),
    }
}

fn not_ready() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(RETRY_AFTER, HeaderValue::from_static("1"))],
        "no namespace snapshot yet: the first list has not completed\n",
    )
        .into_response()
}

async fn readyz(State(state): State<AppState>) -> Response {
    match state.store.current() {
        Some(_) => "ok\n".into_response(),
        None => not_ready(),
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        )],
        state.metrics.encode(&state.store),
    )
        .into_response()
}

async fn count_requests(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let path = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("other", MatchedPath::as_str)
        .to_string();
    let response = next.run(request).await;
    let labels = RequestLabels {
        path,
        code: response.status().as_u16().to_string(),
    };
    state.metrics.requests.get_or_create(&labels).inc();
    response
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use axum::body::Body;
    use http_body_util::BodyExt;
    use kubelet_scope_filter::snapshot::{NamespaceLabels, Snapshot};
    use tower::ServiceExt;

    use super::*;
    use crate::serve::store::Namespaces;

    fn app() -> (AppState, Router) {
        let state = AppState {
            store: Store::default(),
            metrics: Arc::default(),
            shutdown: CancellationToken::new(),
        };
        (state.clone(), router(state))
    }

    fn ns(team: &str) -> Namespaces {
        let labels = BTreeMap::from([("team".to_string(), team.to_string())]);
        BTreeMap::from([("a".to_string(), NamespaceLabels { labels })])
    }

    fn get(uri: &str, held: Option<&str>) -> Request {
        let mut r = Request::builder().uri(uri);
        if let Some(v) = held {
            r = r.header(IF_NONE_MATCH, format!("\"{v}\""));
        }
        r.body(Body::empty()).unwrap()
    }

    /// `get(uri, held)` through the router, answered.
    async fn send(app: &Router, uri: &str, held: Option<&str>) -> Response {
        app.clone().oneshot(get(uri, held)).await.unwrap()
    }

    /// [`send`], and how long (in the test's clock) the answer took.
    async fn timed_send(app: &Router, uri: &str, held: Option<&str>) -> (Response, Duration) {
        let start = tokio::time::Instant::now();
        let r = send(app, uri, held).await;
        (r, start.elapsed())
    }

    /// `get(uri, held)` through the router in a task of its own (a long-poll the
    /// test acts on while it waits).
    fn spawn_get(app: &Router, uri: &str, held: Option<&str>) -> tokio::task::JoinHandle<Response> {
        let request = app.clone().oneshot(get(uri, held));
        tokio::spawn(async move { request.await.unwrap() })
    }

    async fn body(r: Response) -> Vec<u8> {
        r.into_body().collect().await.unwrap().to_bytes().to_vec()
    }

    fn version(state: &AppState) -> String {
        state.store.current().unwrap().version.clone()
    }

    /// [`app`] with namespace `a` of team `x` published, and that version.
    fn published() -> (AppState, Router, String) {
        let (state, app) = app();
        state.store.publish(ns("x"));
        let v = version(&state);
        (state, app, v)
    }

    #[tokio::test]
    async fn snapshot_is_503_until_published_then_200_with_etag() {
        let (state, app) = app();
        let r = send(&app, "/v1/snapshot", None).await;
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        let r = send(&app, "/readyz", None).await;
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        state.store.publish(ns("x"));
        let r = send(&app, "/readyz", None).await;
        assert_eq!(r.status(), StatusCode::OK);
        let r = send(&app, "/v1/snapshot", None).await;
        assert_eq!(r.status(), StatusCode::OK);
        let v = version(&state);
        assert_eq!(r.headers()[ETAG], format!("\"{v}\"").as_str());
        let s = Snapshot::parse(&body(r).await).unwrap();
        assert_eq!(s.version, v);
        assert_eq!(s.namespaces["a"].labels["team"], "x");
    }

    #[tokio::test(start_paused = true)]
    async fn long_poll_times_out_with_304_after_wait_seconds() {
        let (_, app, v) = published();
        let (r, took) = timed_send(&app, "/v1/snapshot?waitSeconds=5", Some(&v)).await;
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(r.headers()[ETAG], format!("\"{v}\"").as_str());
        assert_eq!(took, Duration::from_secs(5));
        // Without waitSeconds a matching version answers 304 at once.
        let (r, took) = timed_send(&app, "/v1/snapshot", Some(&v)).await;
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(took, Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn wait_seconds_is_capped_at_60() {
        let (_, app, v) = published();
        let (r, took) = timed_send(&app, "/v1/snapshot?waitSeconds=3600", Some(&v)).await;
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(took, Duration::from_secs(MAX_WAIT_SECONDS));
    }

    #[tokio::test(start_paused = true)]
    async fn long_poll_answers_200_as_soon_as_the_version_changes() {
        let (state, app, v) = published();
        let start = tokio::time::Instant::now();
        let req = spawn_get(&app, "/v1/snapshot?waitSeconds=30", Some(&v));
        tokio::time::sleep(Duration::from_secs(2)).await;
        let m = body(send(&app, "/metrics", None).await).await;
        let m = String::from_utf8(m).unwrap();
        assert!(m.contains("kubelet_scope_long_polls_waiting 1\n"), "{m}");
        // Same content: the waiter keeps waiting.
        assert!(!state.store.publish(ns("x")));
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!req.is_finished());
        state.store.publish(ns("y"));
        let r = req.await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(start.elapsed(), Duration::from_secs(3));
        let s = Snapshot::parse(&body(r).await).unwrap();
        assert_eq!(s.namespaces["a"].labels["team"], "y");
        assert_ne!(s.version, v);
        let m = body(send(&app, "/metrics", None).await).await;
        let m = String::from_utf8(m).unwrap();
        assert!(m.contains("kubelet_scope_long_polls_waiting 0\n"), "{m}");
        assert!(
            m.contains(r#"kubelet_scope_http_requests_total{path="/v1/snapshot",code="200"} 1"#),
            "{m}"
        );
    }

    #[tokio::test]
    async fn stale_or_foreign_etag_gets_the_snapshot_at_once() {
        let (state, app) = app();
        state.store.publish(ns("x"));
        for held in ["W/\"nope\"", "\"old\", \"older\""] {
            let req = Request::builder()
                .uri("/v1/snapshot?waitSeconds=60")
                .header(IF_NONE_MATCH, held)
                .body(Body::empty())
                .unwrap();
            let r = app.clone().oneshot(req).await.unwrap();
            assert_eq!(r.status(), StatusCode::OK, "{held}");
        }
        let v = version(&state);
        let req = Request::builder()
            .uri("/v1/snapshot")
            .header(IF_NONE_MATCH, format!("\"old\", W/\"{v}\""))
            .body(Body::empty())
            .unwrap();
        let r = app.clone().oneshot(req).await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
        let r = send(&app, "/v1/snapshot?waitSeconds=abc", None).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_releases_waiting_long_polls() {
        let (state, app, v) = published();
        let req = spawn_get(&app, "/v1/snapshot?waitSeconds=60", Some(&v));
        tokio::time::sleep(Duration::from_secs(1)).await;
        let start = tokio::time::Instant::now();
        state.shutdown.cancel();
        let r = req.await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn long_poll_before_first_sync_waits_for_it() {
        let (state, app) = app();
        let req = spawn_get(&app, "/v1/snapshot?waitSeconds=10", None);
        tokio::time::sleep(Duration::from_secs(1)).await;
        state.store.publish(ns("x"));
        let r = req.await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let (_, app) = self::app();
        let (r, took) = timed_send(&app, "/v1/snapshot?waitSeconds=2", None).await;
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(took, Duration::from_secs(2));
    }
}
