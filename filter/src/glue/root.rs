//! The root context: configuration, snapshot cache, lease and long poll.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::rc::Rc;
use std::time::Duration;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{BufferType, ContextType, MapType, Status};

use super::metrics::{inc, set};
use super::state::{now_ms, one_line, shared, VmState};
use super::stream::Stream;
use crate::config::{Config, TenantSource};
use crate::snapshot::catalog::Catalog;
use crate::snapshot::fetch::{self, PollOutcome};
use crate::snapshot::lease::{self, LeaseStep};

pub fn new_root(context_id: u32) -> Box<dyn RootContext> {
    Box::new(Root {
        vm: Rc::new(VmState::default()),
        me: random_id(context_id),
        in_flight: None,
        failures: 0,
        next_attempt_ms: 0,
        holds_lease: false,
    })
}

/// A random identity for the lease (std's hasher keys come from WASI `random_get`).
fn random_id(salt: u32) -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u32(salt);
    h.write_u64(now_ms());
    h.finish()
}

pub struct Root {
    vm: Rc<VmState>,
    me: u64,
    /// Token and start (ms) of the outstanding poll.
    in_flight: Option<(u32, u64)>,
    failures: u32,
    next_attempt_ms: u64,
    holds_lease: bool,
}

impl Root {
    fn config(&self) -> Option<Rc<Config>> {
        self.vm.config()
    }

    fn tick(&mut self) {
        let Some(config) = self.config() else {
            return;
        };
        if !config.needs_snapshot() {
            return;
        }
        let now = now_ms();
        self.vm.sync_from_shared(&config);
        if let Some(at) = self.vm.fetched_at_ms() {
            set(
                self.vm.metrics().snapshot_age,
                now.saturating_sub(at) / 1000,
            );
        }
        self.renew_lease(now);
        if let Some((_, since)) = self.in_flight {
            // Envoy always answers a call (success, failure or timeout); this only
            // guards against a host that lost it.
            let limit = config.snapshot.as_ref().map_or(0, |s| s.poll_timeout_ms)
                + 2 * fetch::CALL_TIMEOUT_MARGIN_MS;
            if now.saturating_sub(since) > limit {
                self.in_flight = None;
            } else {
                return;
            }
        }
        if self.holds_lease && now >= self.next_attempt_ms {
            self.poll(&config, now);
        }
    }

    fn renew_lease(&mut self, now: u64) {
        let current = hostcalls::get_shared_data(lease::LEASE_KEY)
            .ok()
            .and_then(|(v, cas)| Some((v?, cas.unwrap_or(0))));
        let step = lease::next_step(
            self.me,
            now,
            lease::LEASE_TTL_MS,
            current.as_ref().map(|(v, cas)| (v.as_slice(), *cas)),
        );
        let was = self.holds_lease;
        self.holds_lease = match step {
            LeaseStep::Write { value, cas } => {
                hostcalls::set_shared_data(lease::LEASE_KEY, Some(&value), cas).is_ok()
            }
            LeaseStep::Follow { .. } => false,
        };
        if was != self.holds_lease {
            log::info!(
                "kubelet-scope: this worker {} the snapshot poll",
                if self.holds_lease {
                    "now leads"
                } else {
                    "no longer leads"
                }
            );
        }
    }

    fn still_holds_lease(&self) -> bool {
        shared(lease::LEASE_KEY)
            .and_then(|b| lease::Lease::decode(&b))
            .is_some_and(|l| l.holder == self.me)
    }

    fn poll(&mut self, config: &Config, now: u64) {
        let Some(source) = &config.snapshot else {
            return;
        };
        let current = shared(fetch::VERSION_KEY).and_then(|v| String::from_utf8(v).ok());
        // Envoy's node id (`--service-node`): the node whose virtual pods to ask for.
        let node = source
            .per_node
            .then(|| hostcalls::get_property(vec!["node", "id"]).ok().flatten())
            .flatten()
            .and_then(|id| String::from_utf8(id).ok());
        let request = fetch::poll_request(source, current.as_deref(), node.as_deref());
        let headers: Vec<(&str, &str)> = request
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        match hostcalls::dispatch_http_call(
            &source.cluster,
            headers,
            None,
            vec![],
            Duration::from_millis(request.timeout_ms),
        ) {
            Ok(token) => self.in_flight = Some((token, now)),
            Err(status) => self.failed(
                now,
                &format!(
                    "cannot call cluster {:?}: {}",
                    source.cluster,
                    status_name(status)
                ),
            ),
        }
    }

    fn failed(&mut self, now: u64, why: &str) {
        self.failures = self.failures.saturating_add(1);
        let delay = fetch::backoff_ms(self.failures);
        self.next_attempt_ms = now.saturating_add(delay);
        inc(self.vm.metrics().fetch_failure);
        log::warn!(
            "kubelet-scope: snapshot poll failed ({} in a row, next in {} ms): {}",
            self.failures,
            delay,
            one_line(why)
        );
    }

    fn succeeded(&mut self, now: u64) {
        if self.failures > 0 {
            log::info!("kubelet-scope: snapshot poll recovered");
        }
        self.failures = 0;
        self.next_attempt_ms = now;
        inc(self.vm.metrics().fetch_success);
        if self.still_holds_lease() {
            let _ = hostcalls::set_shared_data(
                fetch::FETCHED_AT_KEY,
                Some(&fetch::encode_ms(now)),
                None,
            );
        }
    }

    fn poll_answered(&mut self, num_headers: usize, body_size: usize) {
        let now = now_ms();
        let Some(config) = self.config() else {
            return;
        };
        let status = if num_headers == 0 {
            None
        } else {
            hostcalls::get_map_value_bytes(MapType::HttpCallResponseHeaders, ":status")
                .ok()
                .flatten()
        };
        let body = if body_size == 0 {
            None
        } else {
            hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size)
                .ok()
                .flatten()
        };
        let current = shared(fetch::VERSION_KEY).and_then(|v| String::from_utf8(v).ok());
        match fetch::interpret(status.as_deref(), body, current.as_deref()) {
            PollOutcome::Changed { snapshot, raw } => {
                // A worker that lost the lease while its poll was out does not
                // overwrite what the new holder may already have published.
                if self.still_holds_lease() {
                    let _ = hostcalls::set_shared_data(fetch::SNAPSHOT_KEY, Some(&raw), None);
                    let _ = hostcalls::set_shared_data(
                        fetch::VERSION_KEY,
                        Some(snapshot.version.as_bytes()),
                        None,
                    );
                    log::info!(
                        "kubelet-scope: fetched snapshot version {} ({} namespaces)",
                        snapshot.version,
                        snapshot.namespaces.len()
                    );
                }
                self.succeeded(now);
            }
            PollOutcome::Unchanged => self.succeeded(now),
            PollOutcome::Failed(why) => {
                if why.starts_with("rejected") {
                    inc(self.vm.metrics().snapshot_rejected);
                }
                self.failed(now, &why);
            }
        }
        self.vm.sync_from_shared(&config);
    }
}

fn status_name(status: Status) -> &'static str {
    match status {
        Status::BadArgument => "bad argument (unknown cluster?)",
        Status::InternalFailure => "internal failure",
        Status::NotFound => "not found",
        _ => "error",
    }
}

impl Context for Root {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        if self.in_flight.map(|(t, _)| t) != Some(token_id) {
            return;
        }
        self.in_flight = None;
        self.poll_answered(num_headers, body_size);
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        let bytes = if plugin_configuration_size == 0 {
            Vec::new()
        } else {
            hostcalls::get_buffer(
                BufferType::PluginConfiguration,
                0,
                plugin_configuration_size,
            )
            .ok()
            .flatten()
            .unwrap_or_default()
        };
        let config = match Config::parse(&bytes) {
            Ok(c) => c,
            Err(e) => {
                log::error!("kubelet-scope: {}", one_line(&e.to_string()));
                return false;
            }
        };
        if let Ok(level) = hostcalls::get_log_level() {
            proxy_wasm::set_log_level(level);
        }
        self.vm.ensure_metrics();
        log::info!("kubelet-scope: configured: {}", describe(&config));
        let config = Rc::new(config);
        self.vm.set_config(Rc::clone(&config));
        if config.needs_snapshot() {
            // A (re)configuration rebuilds the catalog from the snapshot in shared
            // data, if any.
            self.vm.forget_snapshot();
            if hostcalls::set_tick_period(Duration::from_millis(fetch::TICK_MS)).is_err() {
                log::error!("kubelet-scope: cannot set the tick period");
                return false;
            }
            // Use what another VM already fetched, but compete for the lease only
            // from the first tick: Envoy configures root contexts on the main thread
            // that it discards without ever ticking them, and one of those taking the
            // lease here would hold it, unrenewed and its poll lost, for a whole TTL.
            self.vm.sync_from_shared(&config);
        } else {
            self.vm
                .set_catalog(Some(Rc::new(Catalog::new(&config, None))));
        }
        true
    }

    fn on_tick(&mut self) {
        self.tick();
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Stream::new(Rc::clone(&self.vm))))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

fn describe(config: &Config) -> String {
    let inject = match &config.inject {
        Some(i) => format!("inject {} label(s)", i.labels.len()),
        None => "no injection".to_owned(),
    };
    let tenancy = match &config.tenancy {
        Some(t) => match &t.tenant {
            TenantSource::Header(h) => format!("tenant from header {h:?}"),
            TenantSource::Static(s) => format!("static tenant {s:?}"),
            TenantSource::NamespaceOf(n) => {
                format!("tenant of the namespace in header {:?}", n.header)
            }
        },
        None if config.pass_through => "pass-through".to_owned(),
        None => "no tenancy".to_owned(),
    };
    let snapshot = match (&config.snapshot, config.needs_snapshot()) {
        (Some(s), true) => format!("snapshot from cluster {:?} {}", s.cluster, s.path),
        _ => "no snapshot needed".to_owned(),
    };
    format!("{inject}, {tenancy}, {snapshot}")
}
