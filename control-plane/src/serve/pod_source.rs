//! Host pods of virtual clusters, from the apiserver: one list+watch of the pods a
//! vcluster syncer made (label `vcluster.loft.sh/managed-by`), grouped by node, for
//! the snapshot's `virtualPods` (the names a virtual cluster's tenant sees).
//!
//! The virtual names come from the syncer's annotations (`vcluster.loft.sh/
//! object-name`, `-namespace`, `-uid`), never from the host name (which the syncer
//! truncates and hashes past 63 characters). A pod counts only when it is in the
//! host namespace configured for the virtual cluster its label names: anyone who
//! may create pods elsewhere could put that label on one, and would then show it to
//! that cluster's tenant under a name of their choosing. A pod not scheduled yet,
//! or without the three annotations, is left out until it has them.
//!
//! As for namespaces (`kube_source`), kube-rs' `watcher` relists and re-watches;
//! a relist is collected on the side and swapped in whole. It must not write to
//! the apiserver.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use kubelet_scope_filter::snapshot::VirtualPod;

use super::metrics::Metrics;
use super::store::{Store, VirtualPods};

pub const MANAGED_BY: &str = "vcluster.loft.sh/managed-by";
pub const OBJECT_NAME: &str = "vcluster.loft.sh/object-name";
pub const OBJECT_NAMESPACE: &str = "vcluster.loft.sh/object-namespace";
pub const OBJECT_UID: &str = "vcluster.loft.sh/object-uid";

/// A host pod's place in the snapshot: its node, its key and its virtual names.
type Entry = (String, String, VirtualPod);

/// What a host pod is to the snapshot, if anything: `host_namespaces` maps each
/// configured virtual cluster to its host namespace.
pub fn entry(pod: &Pod, host_namespaces: &HashMap<String, String>) -> Option<Entry> {
    let meta = &pod.metadata;
    let cluster = meta.labels.as_ref()?.get(MANAGED_BY)?;
    let namespace = meta.namespace.as_deref()?;
    if host_namespaces.get(cluster).map(String::as_str) != Some(namespace) {
        return None;
    }
    let node = pod
        .spec
        .as_ref()?
        .node_name
        .as_deref()
        .filter(|n| !n.is_empty())?;
    let annotations = meta.annotations.as_ref()?;
    let annotation = |key| annotations.get(key).filter(|v| !v.is_empty()).cloned();
    let virtual_pod = VirtualPod {
        cluster: cluster.clone(),
        namespace: annotation(OBJECT_NAMESPACE)?,
        name: annotation(OBJECT_NAME)?,
        uid: annotation(OBJECT_UID)?,
        host_uid: meta.uid.clone().filter(|u| !u.is_empty())?,
    };
    let key = format!("{namespace}/{}", meta.name.as_deref()?);
    Some((node.to_owned(), key, virtual_pod))
}

/// The entries grouped by node, as the store takes them.
fn by_node(entries: &HashMap<String, Entry>) -> VirtualPods {
    let mut pods: VirtualPods = BTreeMap::new();
    for (node, key, pod) in entries.values() {
        pods.entry(node.clone())
            .or_default()
            .insert(key.clone(), pod.clone());
    }
    pods
}

pub async fn run(
    client: Client,
    host_namespaces: HashMap<String, String>,
    store: Store,
    metrics: Arc<Metrics>,
) {
    let api: Api<Pod> = Api::all(client);
    let config = watcher::Config::default().labels(MANAGED_BY);
    let mut events = watcher(api, config).default_backoff().boxed();
    // By the host pod's namespace/name (a pod's key in the watch).
    let mut state: HashMap<String, Entry> = HashMap::new();
    let mut relist: Option<HashMap<String, Entry>> = None;
    let id = |pod: &Pod| {
        let m = &pod.metadata;
        format!(
            "{}/{}",
            m.namespace.as_deref().unwrap_or_default(),
            m.name.as_deref().unwrap_or_default()
        )
    };
    while let Some(event) = events.next().await {
        let changed = match event {
            Ok(Event::Init) => {
                relist = Some(HashMap::new());
                false
            }
            Ok(Event::InitApply(pod)) => {
                if let Some(e) = entry(&pod, &host_namespaces) {
                    relist.get_or_insert_default().insert(id(&pod), e);
                }
                false
            }
            Ok(Event::InitDone) => {
                state = relist.take().unwrap_or_default();
                tracing::info!(pods = state.len(), "virtual clusters' pod list complete");
                true
            }
            Ok(Event::Apply(pod)) => match entry(&pod, &host_namespaces) {
                Some(e) => state.insert(id(&pod), e.clone()) != Some(e),
                None => state.remove(&id(&pod)).is_some(),
            },
            Ok(Event::Delete(pod)) => state.remove(&id(&pod)).is_some(),
            Err(error) => {
                metrics.source_errors.inc();
                tracing::warn!(%error, "virtual clusters' pod watch failed; retrying with backoff");
                false
            }
        };
        if changed {
            store.publish_virtual_pods(by_node(&state));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(namespace: &str, cluster: &str, node: Option<&str>, annotated: bool) -> Pod {
        let mut pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-1-x-shop-x-k8s1", "namespace": namespace, "uid": "h-1",
                         "labels": {MANAGED_BY: cluster}},
            "spec": {"containers": []}
        }))
        .unwrap();
        pod.spec.as_mut().unwrap().node_name = node.map(str::to_owned);
        if annotated {
            pod.metadata.annotations = Some(BTreeMap::from([
                (OBJECT_NAME.to_owned(), "web-1".to_owned()),
                (OBJECT_NAMESPACE.to_owned(), "shop".to_owned()),
                (OBJECT_UID.to_owned(), "v-1".to_owned()),
            ]));
        }
        pod
    }

    #[test]
    fn only_annotated_scheduled_pods_of_the_clusters_host_namespace_count() {
        let hosts = HashMap::from([("k8s1".to_owned(), "vcluster-k8s1".to_owned())]);
        let (node, key, vp) =
            entry(&pod("vcluster-k8s1", "k8s1", Some("n1"), true), &hosts).unwrap();
        assert_eq!(
            (node.as_str(), key.as_str()),
            ("n1", "vcluster-k8s1/web-1-x-shop-x-k8s1")
        );
        assert_eq!(
            (
                &*vp.cluster,
                &*vp.namespace,
                &*vp.name,
                &*vp.uid,
                &*vp.host_uid
            ),
            ("k8s1", "shop", "web-1", "v-1", "h-1")
        );
        // Labelled for k8s1 in another namespace: a forgery, not k8s1's.
        assert!(entry(&pod("default", "k8s1", Some("n1"), true), &hosts).is_none());
        // A cluster that is not configured, a pod not scheduled, one not annotated.
        assert!(entry(&pod("vcluster-k8s1", "k8s2", Some("n1"), true), &hosts).is_none());
        assert!(entry(&pod("vcluster-k8s1", "k8s1", None, true), &hosts).is_none());
        assert!(entry(&pod("vcluster-k8s1", "k8s1", Some("n1"), false), &hosts).is_none());
    }
}
