//! The HTTP context: one request through the filter.
//!
//! Request: resolve the tenant (and remove its header), [`decide`], answer locally
//! (403/503) or let the request go with `Accept-Encoding: identity` and a text
//! `Accept` when the body will be rewritten.
//!
//! Response: non-2xx passes unchanged; a body the rewriter cannot read is refused
//! (502, tenant mode) or passed and counted (injection mode) while the headers can
//! still change; `content-length` is removed; then each chunk is rewritten and
//! written back in place (`set_buffer(0, chunk_len, out)` + `Continue`), the last
//! partial line flushed at end of stream.
//!
//! Failure after the headers went out (a body the rewriter refuses mid-stream): the
//! status can no longer change, so the current chunk is emptied (no unfiltered byte
//! leaves) and the stream is reset (`proxy_close_stream(HttpResponse)`); the client
//! sees a truncated, aborted response, never a silently partial one.
//!
//! JSON bodies stream the same way (the JSON filter holds back at most one element,
//! capped by `maxJsonBodyBytes`). End of stream in trailers: after `Continue` Envoy
//! offers no body buffer in the trailers callback, so what `finish` still has to
//! write cannot be written. For Prometheus text that is only a last line without
//! its newline (an invalid body): it is dropped and counted. For JSON it is the
//! closing of the document: the stream is reset rather than end in truncated JSON.
//! (Kubelets do not send trailers.)

use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, BufferType, MapType};

use super::metrics::{inc, Metrics};
use super::state::{now_ms, VmState};
use crate::body::BodyError;
use crate::config::Config;
use crate::policy::answer::answer;
use crate::policy::decide::{decide, resolve_tenant, Decision, Request};
use crate::policy::endpoint::BodyKind;
use crate::policy::http::{
    check_response, redirect_path, tenant_header, upstream_accept, upstream_status, TenantHeader,
    Upstream,
};
use crate::rewrite::BodyFilter;
use crate::snapshot::catalog::RequestScope;

pub struct Stream {
    vm: Rc<VmState>,
    metrics: Rc<Metrics>,
    phase: Phase,
    /// The rewriter, kept until `on_done` for its counters.
    filter: Option<BodyFilter>,
    /// Rewritten output of the current chunk (reused).
    out: Vec<u8>,
}

/// What a rewritten request still needs when its response comes: enough to
/// decide a redirect's target as the request itself was decided.
struct Pending {
    config: Rc<Config>,
    method: String,
    tenant: Option<String>,
    virtual_cluster: Option<String>,
}

enum Phase {
    /// Nothing (more) to do with this stream.
    Pass,
    /// The request is to be rewritten; waiting for the response headers.
    Rewrite {
        kind: BodyKind,
        scope: RequestScope,
        pending: Pending,
    },
    /// Rewriting the response body.
    Streaming { kind: BodyKind, filtering: bool },
    /// The body was refused after the headers went out; the stream was reset.
    Failed,
}

impl Stream {
    pub fn new(vm: Rc<VmState>) -> Stream {
        let metrics = vm.metrics();
        Stream {
            vm,
            metrics,
            phase: Phase::Pass,
            filter: None,
            out: Vec::new(),
        }
    }

    /// Answers locally, as a kubelet would shape the answer ([`answer`]).
    fn refuse(&mut self, status: u16, reason: &str) -> Action {
        let a = answer(status, reason);
        let headers: Vec<(&str, &str)> = a.headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let _ =
            hostcalls::send_http_response(u32::from(a.status), headers, Some(a.body.as_bytes()));
        self.phase = Phase::Pass;
        self.filter = None;
        Action::Pause
    }

    fn request_headers(&mut self) -> Action {
        let Some(config) = self.vm.config() else {
            return self.refuse(503, "kubelet-scope: the filter is not configured");
        };
        let headers = hostcalls::get_map_bytes(MapType::HttpRequestHeaders).unwrap_or_default();
        let header = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .and_then(|(_, v)| std::str::from_utf8(v).ok())
        };
        let path = header(":path").unwrap_or("").to_owned();
        let method = header(":method").unwrap_or("").to_owned();
        let caller = self.take_caller(&config, &headers);
        let virtual_cluster = config
            .tenancy
            .as_ref()
            .and_then(|t| t.virtual_cluster_header.as_deref())
            .and_then(|name| take_header(name, &headers));
        if config.needs_snapshot() {
            self.vm.sync_from_shared(&config);
        }
        let catalog = self.vm.catalog_for_request(&config, now_ms());
        let tenant = resolve_tenant(&config, catalog.as_deref(), caller.as_deref());
        let request = Request {
            method: &method,
            path: &path,
            tenant: tenant.as_deref(),
            virtual_cluster: virtual_cluster.as_deref(),
        };
        let decision = decide(&config, catalog.as_deref(), &request);
        match decision {
            Decision::Deny { status, reason } => {
                inc(self.metrics.requests_denied);
                inc(match status {
                    503 => self.metrics.refused_unavailable,
                    405 => self.metrics.refused_method,
                    _ => self.metrics.refused_forbidden,
                });
                log::debug!(
                    "kubelet-scope: {status} for {method} {:?} (tenant {:?}): {reason}",
                    truncate(&path),
                    tenant.as_deref().unwrap_or("-")
                );
                self.refuse(status, &reason)
            }
            Decision::PassThrough => {
                inc(self.metrics.requests_passed);
                Action::Continue
            }
            Decision::Rewrite(kind) => {
                let Some(catalog) = catalog else {
                    // decide() only rewrites with a catalog; fail closed regardless.
                    return self.refuse(503, "kubelet-scope: namespace snapshot not available");
                };
                inc(self.metrics.requests_rewritten);
                // A range of the kubelet's body is not a range of the rewritten one.
                for name in ["range", "if-range"] {
                    let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, None);
                }
                let accept = upstream_accept(kind, header("accept").map(str::as_bytes));
                let _ = hostcalls::set_map_value(
                    MapType::HttpRequestHeaders,
                    "accept-encoding",
                    Some("identity"),
                );
                let _ =
                    hostcalls::set_map_value(MapType::HttpRequestHeaders, "accept", Some(accept));
                self.phase = Phase::Rewrite {
                    kind,
                    scope: RequestScope::of_request(
                        catalog,
                        tenant.as_deref(),
                        virtual_cluster.as_deref(),
                    ),
                    pending: Pending {
                        config,
                        method,
                        tenant,
                        virtual_cluster,
                    },
                };
                Action::Continue
            }
        }
    }

    /// The tenant header's value (the tenant, or the caller's namespace), removed
    /// from the request: it is never forwarded to the kubelet.
    fn take_caller(&self, config: &Config, headers: &[(String, Vec<u8>)]) -> Option<String> {
        take_header(config.tenancy.as_ref()?.tenant.header()?, headers)
    }

    /// A non-2xx answer of the kubelet on a rewritten path. Injection mode passes
    /// it. Tenant mode passes a redirect only to a path the tenant may use, and
    /// replaces every other body (kubelet error bodies can list other tenants'
    /// series or container IDs) with the plain status text, status kept.
    fn non_success(&mut self, status: Upstream, filtering: bool, next: &Pending) -> Action {
        if !filtering {
            return Action::Continue;
        }
        let header = |name: &str| {
            hostcalls::get_map_value_bytes(MapType::HttpResponseHeaders, name)
                .ok()
                .flatten()
        };
        let code = match status {
            Upstream::Success | Upstream::NotModified => return Action::Continue,
            Upstream::Redirect => {
                let location = header("location");
                let allowed = redirect_path(location.as_deref()).is_some_and(|path| {
                    let catalog = self.vm.catalog_for_request(&next.config, now_ms());
                    let request = Request {
                        method: &next.method,
                        path,
                        tenant: next.tenant.as_deref(),
                        virtual_cluster: next.virtual_cluster.as_deref(),
                    };
                    !matches!(
                        decide(&next.config, catalog.as_deref(), &request),
                        Decision::Deny { .. }
                    )
                });
                if allowed {
                    return Action::Continue;
                }
                next.config
                    .tenancy
                    .as_ref()
                    .map_or(404, |t| t.denied_status)
            }
            Upstream::Error(code) => code,
        };
        inc(self.metrics.error_body_replaced);
        log::debug!("kubelet-scope: the kubelet answered {status:?}; body replaced");
        self.refuse(code, "kubelet-scope: the kubelet's answer is withheld")
    }

    fn response_headers(&mut self, end_of_stream: bool) -> Action {
        let (kind, scope, pending) = match std::mem::replace(&mut self.phase, Phase::Pass) {
            Phase::Rewrite {
                kind,
                scope,
                pending,
            } => (kind, scope, pending),
            other => {
                self.phase = other;
                return Action::Continue;
            }
        };
        let header = |name: &str| {
            hostcalls::get_map_value_bytes(MapType::HttpResponseHeaders, name)
                .ok()
                .flatten()
        };
        let filtering = scope.filtering();
        let status = upstream_status(header(":status").as_deref());
        if status != Upstream::Success {
            return self.non_success(status, filtering, &pending);
        }
        if pending.method == "HEAD" {
            // No body to rewrite; the kubelet's length is not the rewritten one's.
            let _ = hostcalls::set_map_value(MapType::HttpResponseHeaders, "content-length", None);
            return Action::Continue;
        }
        if let Err(why) = check_response(
            kind,
            header("content-type").as_deref(),
            header("content-encoding").as_deref(),
        ) {
            if filtering {
                inc(match why {
                    crate::policy::http::Unreadable::ContentEncoding(_) => {
                        self.metrics.refused_content_encoding
                    }
                    crate::policy::http::Unreadable::ContentType(_) => {
                        self.metrics.refused_content_type
                    }
                });
                log::debug!("kubelet-scope: 502: {}", why.reason());
                return self.refuse(502, &why.reason());
            }
            inc(self.metrics.unreadable_passed);
            log::debug!(
                "kubelet-scope: passing an unreadable response ({})",
                why.kind()
            );
            return Action::Continue;
        }
        let config_max = self.vm.config().map_or(0, |c| c.max_json_body_bytes);
        let mut filter = BodyFilter::new(kind, scope, config_max);
        self.out.clear();
        // An empty feed costs nothing and tells, while the status can still change,
        // whether this body can be rewritten at all (e.g. a JSON endpoint whose
        // filter is not available).
        if let Err(e) = filter.feed(&[], &mut self.out) {
            return self.refuse_before_body(filtering, &e);
        }
        let _ = hostcalls::set_map_value(MapType::HttpResponseHeaders, "content-length", None);
        if end_of_stream {
            // No body: nothing was carried, and there is no body buffer to write to.
            if let Err(e) = filter.finish(&mut self.out) {
                self.filter = Some(filter);
                return self.refuse_before_body(filtering, &e);
            }
            if !self.out.is_empty() {
                inc(self.metrics.body_tail_dropped);
            }
            self.filter = Some(filter);
            return Action::Continue;
        }
        self.filter = Some(filter);
        self.phase = Phase::Streaming { kind, filtering };
        Action::Continue
    }

    fn refuse_before_body(&mut self, filtering: bool, e: &BodyError) -> Action {
        inc(self.metrics.refused_body);
        log::debug!("kubelet-scope: cannot rewrite the body: {e}");
        if filtering {
            return self.refuse(502, &format!("kubelet-scope: {e}"));
        }
        inc(self.metrics.unreadable_passed);
        self.filter = None;
        self.phase = Phase::Pass;
        Action::Continue
    }

    fn response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let filtering = match self.phase {
            Phase::Streaming { filtering, .. } => filtering,
            Phase::Failed => {
                drain(body_size);
                return Action::Pause;
            }
            _ => return Action::Continue,
        };
        let Some(filter) = self.filter.as_mut() else {
            return Action::Continue;
        };
        let chunk = if body_size == 0 {
            None
        } else {
            match hostcalls::get_buffer(BufferType::HttpResponseBody, 0, body_size) {
                Ok(Some(chunk)) => Some(chunk),
                // A chunk that cannot be read cannot be filtered.
                _ => {
                    let e = BodyError("the response body could not be read".into());
                    return self.fail_stream(body_size, filtering, &e);
                }
            }
        };
        self.out.clear();
        let mut result = filter.feed(chunk.as_deref().unwrap_or_default(), &mut self.out);
        if end_of_stream && result.is_ok() {
            result = filter.finish(&mut self.out);
        }
        drop(chunk);
        if let Err(e) = result {
            return self.fail_stream(body_size, filtering, &e);
        }
        if (body_size > 0 || !self.out.is_empty())
            && hostcalls::set_buffer(BufferType::HttpResponseBody, 0, body_size, &self.out).is_err()
        {
            // The original chunk would go out as it is.
            let e = BodyError("the rewritten body could not be written".into());
            return self.fail_stream(body_size, filtering, &e);
        }
        if end_of_stream {
            self.phase = Phase::Pass;
        }
        Action::Continue
    }

    fn response_trailers(&mut self) -> Action {
        let (kind, filtering) = match self.phase {
            Phase::Streaming { kind, filtering } => (kind, filtering),
            _ => return Action::Continue,
        };
        let Some(filter) = self.filter.as_mut() else {
            return Action::Continue;
        };
        self.out.clear();
        if let Err(e) = filter.finish(&mut self.out) {
            return self.fail_stream(0, filtering, &e);
        }
        self.phase = Phase::Pass;
        if self.out.is_empty() {
            return Action::Continue;
        }
        // After `Continue` Envoy has no response body buffer in the trailers
        // callback (and the SDK would panic on the error): the rest cannot be written.
        match kind {
            BodyKind::Exposition => {
                inc(self.metrics.body_tail_dropped);
                log::debug!(
                    "kubelet-scope: dropped a {}-byte last line without newline before trailers",
                    self.out.len()
                );
                Action::Continue
            }
            BodyKind::Json(_) => self.fail_stream(
                0,
                filtering,
                &BodyError("the JSON body ended in trailers; its end cannot be written".into()),
            ),
        }
    }

    fn fail_stream(&mut self, body_size: usize, filtering: bool, e: &BodyError) -> Action {
        inc(self.metrics.refused_body);
        log::debug!(
            "kubelet-scope: body refused mid-stream ({}), resetting the stream: {e}",
            if filtering {
                "tenant mode"
            } else {
                "injection mode"
            }
        );
        drain(body_size);
        self.phase = Phase::Failed;
        let _ = hostcalls::reset_http_response();
        Action::Pause
    }
}

/// Empties the current response body chunk.
fn drain(body_size: usize) {
    if body_size > 0 {
        let _ = hostcalls::set_buffer(BufferType::HttpResponseBody, 0, body_size, &[]);
    }
}

fn truncate(path: &str) -> &str {
    match path.char_indices().nth(200) {
        Some((i, _)) => &path[..i],
        None => path,
    }
}

impl Context for Stream {
    fn on_done(&mut self) -> bool {
        if let Some(filter) = self.filter.take() {
            self.metrics.add_body(&filter.counters());
        }
        true
    }
}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.request_headers()
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        self.response_headers(end_of_stream)
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.response_body(body_size, end_of_stream)
    }

    fn on_http_response_trailers(&mut self, _num_trailers: usize) -> Action {
        self.response_trailers()
    }
}

/// The value of the identity header `name` (the tenant, the caller's namespace, or
/// its virtual cluster), removed from the request: it is never forwarded to the
/// kubelet. Sent twice or not one valid value: none.
fn take_header(name: &str, headers: &[(String, Vec<u8>)]) -> Option<String> {
    let found = tenant_header(
        name,
        headers.iter().map(|(n, v)| (n.as_str(), v.as_slice())),
    );
    if found != TenantHeader::Missing {
        let _ = hostcalls::set_map_value_bytes(MapType::HttpRequestHeaders, name, None);
    }
    match found {
        TenantHeader::One(t) => Some(t),
        TenantHeader::Ambiguous => {
            log::debug!("kubelet-scope: header {name:?} sent more than once");
            None
        }
        TenantHeader::Missing | TenantHeader::Invalid => None,
    }
}
