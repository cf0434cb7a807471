//! Namespaces from the apiserver: one metadata-only list+watch.
//!
//! kube-rs' `watcher` does the hard parts — it relists after `410 Gone` (an expired
//! or compacted resource version), follows bookmarks and re-watches after
//! disconnects; `default_backoff` spaces the retries. This loop only keeps the
//! namespace map: a relist is collected on the side and swapped in when complete,
//! so the previous snapshot stays served while the apiserver is away or a relist is
//! running.
//!
//! It must not write to the apiserver, nor request anything but Namespace metadata:
//! the deploy/ ClusterRole grants list and watch on namespaces and nothing else. A
//! relist in progress must never be published half-done.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::core::PartialObjectMeta;
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};

use super::metrics::Metrics;
use super::select::LabelSelection;
use super::store::{Namespaces, Store};

pub async fn run(client: Client, selection: LabelSelection, store: Store, metrics: Arc<Metrics>) {
    // `Api<PartialObjectMeta<_>>` makes metadata-only list/watch requests.
    let api: Api<PartialObjectMeta<Namespace>> = Api::all(client);
    let mut events = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut state = Namespaces::new();
    let mut relist: Option<Namespaces> = None;
    let mut lists = 0u64;
    let entry = |ns: &PartialObjectMeta<Namespace>| {
        let name = ns.metadata.name.clone().unwrap_or_default();
        (name, selection.exported(ns.metadata.labels.as_ref()))
    };
    while let Some(event) = events.next().await {
        match event {
            Ok(Event::Init) => {
                if lists > 0 {
                    metrics.watch_restarts.inc();
                    tracing::info!("relisting namespaces; the current snapshot stays served");
                }
                relist = Some(Namespaces::new());
            }
            Ok(Event::InitApply(ns)) => {
                let (name, labels) = entry(&ns);
                relist.get_or_insert_default().insert(name, labels);
            }
            Ok(Event::InitDone) => {
                state = relist.take().unwrap_or_default();
                lists += 1;
                tracing::info!(namespaces = state.len(), "namespace list complete");
                store.publish(state.clone());
            }
            Ok(Event::Apply(ns)) => {
                let (name, labels) = entry(&ns);
                if state.get(&name) != Some(&labels) {
                    state.insert(name, labels);
                    store.publish(state.clone());
                }
            }
            Ok(Event::Delete(ns)) => {
                let (name, _) = entry(&ns);
                if state.remove(&name).is_some() {
                    store.publish(state.clone());
                }
            }
            Err(error) => {
                metrics.source_errors.inc();
                tracing::warn!(%error, "namespace watch failed; retrying with backoff");
            }
        }
    }
}
