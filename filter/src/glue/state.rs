//! What the root context of a VM shares with that VM's HTTP contexts.
//!
//! Plain `Cell`s of `Rc`s, read by "take, clone, put back": there is no `RefCell`
//! borrow that could fail (and panic), and an HTTP context keeps the `Rc<Catalog>` it
//! started with even when the root swaps in a newer one mid-request.

use std::cell::Cell;
use std::rc::Rc;
use std::time::UNIX_EPOCH;

use proxy_wasm::hostcalls;

use super::metrics::{inc, set, Metrics};
use crate::config::Config;
use crate::snapshot::catalog::Catalog;
use crate::snapshot::fetch;
use crate::snapshot::Snapshot;

/// A value from the VM-wide shared data.
pub fn shared(key: &str) -> Option<Vec<u8>> {
    hostcalls::get_shared_data(key).ok().and_then(|(v, _)| v)
}

/// A message on one log line.
pub fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

#[derive(Default)]
pub struct VmState {
    config: Cell<Option<Rc<Config>>>,
    /// The catalog of the current snapshot (or of no snapshot, when the config
    /// needs none); `None` until the first snapshot arrived.
    catalog: Cell<Option<Rc<Catalog>>>,
    /// Last successful poll by any VM (from shared data), ms since the epoch.
    fetched_at_ms: Cell<Option<u64>>,
    /// Version of the snapshot behind `catalog`.
    loaded_version: Cell<Option<Vec<u8>>>,
    /// A version found in shared data that did not parse (not retried, not re-logged).
    rejected_version: Cell<Option<Vec<u8>>>,
    metrics: Cell<Option<Rc<Metrics>>>,
}

fn peek<T: Clone>(cell: &Cell<Option<T>>) -> Option<T> {
    let value = cell.take();
    cell.set(value.clone());
    value
}

impl VmState {
    pub fn config(&self) -> Option<Rc<Config>> {
        peek(&self.config)
    }

    pub fn set_config(&self, config: Rc<Config>) {
        self.config.set(Some(config));
    }

    pub fn catalog(&self) -> Option<Rc<Catalog>> {
        peek(&self.catalog)
    }

    pub fn set_catalog(&self, catalog: Option<Rc<Catalog>>) {
        self.catalog.set(catalog);
    }

    /// Drops the catalog (a reconfiguration: it is rebuilt from shared data).
    pub fn forget_snapshot(&self) {
        self.catalog.set(None);
        self.loaded_version.set(None);
        self.rejected_version.set(None);
    }

    /// Picks up what the polling VM published: one host call for the small version
    /// key (and one for the fetch time) unless the version changed. Called on every
    /// tick and at the start of every request, so that a new snapshot is used from
    /// the next request on, not from the next tick.
    pub fn sync_from_shared(&self, config: &Config) {
        self.fetched_at_ms
            .set(shared(fetch::FETCHED_AT_KEY).and_then(|b| fetch::decode_ms(&b)));
        let Some(version) = shared(fetch::VERSION_KEY) else {
            return;
        };
        let loaded = self.loaded_version.take();
        let rejected = self.rejected_version.take();
        let known = loaded.as_ref() == Some(&version) || rejected.as_ref() == Some(&version);
        self.loaded_version.set(loaded);
        self.rejected_version.set(rejected);
        if known {
            return;
        }
        let bytes = shared(fetch::SNAPSHOT_KEY).unwrap_or_default();
        match Snapshot::parse(&bytes) {
            Ok(snapshot) => self.load(config, &snapshot),
            Err(e) => {
                log::warn!(
                    "kubelet-scope: ignoring the snapshot in shared data (version {}): {}",
                    String::from_utf8_lossy(&version),
                    one_line(&e.to_string())
                );
                self.rejected_version.set(Some(version));
            }
        }
    }

    fn load(&self, config: &Config, snapshot: &Snapshot) {
        self.catalog
            .set(Some(Rc::new(Catalog::new(config, Some(snapshot)))));
        self.loaded_version
            .set(Some(snapshot.version.as_bytes().to_vec()));
        let metrics = self.metrics();
        inc(metrics.snapshot_loaded);
        set(
            metrics.snapshot_namespaces,
            snapshot.namespaces.len() as u64,
        );
        log::info!(
            "kubelet-scope: snapshot version {} loaded ({} namespaces)",
            snapshot.version,
            snapshot.namespaces.len()
        );
    }

    pub fn fetched_at_ms(&self) -> Option<u64> {
        self.fetched_at_ms.get()
    }

    /// The VM's metrics; a VM that has not been configured yet records nothing.
    pub fn metrics(&self) -> Rc<Metrics> {
        match peek(&self.metrics) {
            Some(m) => m,
            None => Rc::new(Metrics::default()),
        }
    }

    pub fn ensure_metrics(&self) {
        if peek(&self.metrics).is_none() {
            self.metrics.set(Some(Rc::new(Metrics::define())));
        }
    }

    /// The catalog a request may use at `now_ms`: `None` when the snapshot the
    /// config needs is missing, or — in tenant mode only — older than
    /// `maxStalenessSeconds` (injection keeps using old labels: better than none).
    pub fn catalog_for_request(&self, config: &Config, now_ms: u64) -> Option<Rc<Catalog>> {
        let catalog = self.catalog()?;
        if let (Some(_), Some(source)) = (&config.tenancy, &config.snapshot) {
            if config.needs_snapshot()
                && fetch::is_stale(now_ms, self.fetched_at_ms(), source.max_staleness_seconds)
            {
                return None;
            }
        }
        Some(catalog)
    }
}

/// Host wall-clock time in ms since the epoch (0 if the host has none).
pub fn now_ms() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
