//! What the root context of a VM shares with that VM's HTTP contexts.
//!
//! Plain `Cell`s of `Rc`s, read by "take, clone, put back": there is no `RefCell`
//! borrow that could fail (and panic), and an HTTP context keeps the `Rc<Catalog>` it
//! started with even when the root swaps in a newer one mid-request.

use std::cell::Cell;
use std::rc::Rc;
use std::time::UNIX_EPOCH;

use proxy_wasm::hostcalls;

use super::metrics::Metrics;
use crate::catalog::Catalog;
use crate::config::Config;
use crate::fetch;

#[derive(Default)]
pub struct VmState {
    config: Cell<Option<Rc<Config>>>,
    /// The catalog of the current snapshot (or of no snapshot, when the config
    /// needs none); `None` until the first snapshot arrived.
    catalog: Cell<Option<Rc<Catalog>>>,
    /// Last successful poll by any VM (from shared data), ms since the epoch.
    fetched_at_ms: Cell<Option<u64>>,
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

    pub fn fetched_at_ms(&self) -> Option<u64> {
        self.fetched_at_ms.get()
    }

    pub fn set_fetched_at_ms(&self, at: Option<u64>) {
        self.fetched_at_ms.set(at);
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
