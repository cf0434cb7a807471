//! The snapshot currently served, and the channel that wakes every waiting
//! long-poll when it changes.
//!
//! The version is a hash of the exported content only (not of resource versions or
//! timestamps), so a label edit that touches no exported key, a relist that finds
//! the same namespaces or a control-plane restart keeps the version — and thousands
//! of Envoys keep their cached snapshot instead of re-downloading it.
//!
//! A snapshot also carries the host pods of virtual clusters, by node: a node asks
//! for its own (`?node=`), and its [`View`] (version and body) changes only when
//! the namespaces or *its* virtual pods do, so a pod starting on one node does not
//! send a new snapshot to every other node. Views are serialized once per
//! published content, when it is published.
//!
//! Owns the version, the serialized bodies and the wake-up. It must not know where
//! namespaces or pods come from or how they are served: sources call
//! [`Store::publish`] and [`Store::publish_virtual_pods`], the HTTP layer reads and
//! subscribes.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Bytes;
use kubelet_scope_filter::snapshot::{NamespaceLabels, Snapshot, VirtualPod};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

/// Exported labels by namespace name.
pub type Namespaces = BTreeMap<String, NamespaceLabels>;

/// The virtual pods of one node, by `<host namespace>/<host name>`.
pub type NodePods = BTreeMap<String, VirtualPod>;

/// Host pods of virtual clusters, by node name.
pub type VirtualPods = BTreeMap<String, NodePods>;

/// What one client is served: a version and its body.
#[derive(Debug)]
pub struct View {
    pub version: String,
    pub body: Bytes,
}

impl View {
    fn new(namespaces: &Namespaces, pods: &NodePods, generated_at: &str) -> View {
        let version = if pods.is_empty() {
            version_of(namespaces)
        } else {
            version_of(&(namespaces, pods))
        };
        let snapshot = Snapshot {
            version: version.clone(),
            generated_at: generated_at.to_owned(),
            namespaces: namespaces.clone(),
            virtual_pods: pods.clone(),
        };
        View {
            body: Bytes::from(snapshot.to_json()),
            version,
        }
    }
}

/// One published content, serialized once per view and shared by every response.
#[derive(Debug)]
pub struct Published {
    /// The view without `node`: every node's virtual pods.
    pub version: String,
    pub body: Bytes,
    pub namespaces: Namespaces,
    pub virtual_pods: VirtualPods,
    /// The view of each node that has virtual pods.
    by_node: HashMap<String, Arc<View>>,
    /// The view of a node without virtual pods.
    no_pods: View,
    /// When this version was first published (for the version-age metric).
    pub since: Instant,
}

impl Published {
    /// With the same namespaces as `previous`, a node whose pods did not change
    /// keeps its view as it was (not serialized again; its version stays).
    fn new(
        namespaces: Namespaces,
        virtual_pods: VirtualPods,
        previous: Option<&Published>,
    ) -> Published {
        let previous = previous.filter(|p| p.namespaces == namespaces);
        let at = jiff::Timestamp::now().to_string();
        let all: NodePods = virtual_pods
            .values()
            .flatten()
            .map(|(k, p)| (k.clone(), p.clone()))
            .collect();
        let everything = View::new(&namespaces, &all, &at);
        let no_pods = View::new(&namespaces, &NodePods::new(), &at);
        let by_node = virtual_pods
            .iter()
            .map(|(node, pods)| {
                let kept = previous
                    .filter(|p| p.virtual_pods.get(node) == Some(pods))
                    .and_then(|p| p.by_node.get(node).cloned());
                let view = kept.unwrap_or_else(|| Arc::new(View::new(&namespaces, pods, &at)));
                (node.clone(), view)
            })
            .collect();
        Published {
            version: everything.version,
            body: everything.body,
            namespaces,
            virtual_pods,
            by_node,
            no_pods,
            since: Instant::now(),
        }
    }

    /// What node `node` is served (`None`: the view of every node).
    pub fn view(&self, node: Option<&str>) -> (&str, &Bytes) {
        match node {
            None => (&self.version, &self.body),
            Some(node) => {
                let v = self.by_node.get(node).map_or(&self.no_pods, |v| &**v);
                (&v.version, &v.body)
            }
        }
    }
}

/// The first 128 bits of the SHA-256 of the canonical JSON of `content` (maps are
/// `BTreeMap`s: they serialize in key order), as hex.
pub fn version_of(content: &impl serde::Serialize) -> String {
    let json = serde_json::to_vec(content).unwrap_or_default();
    Sha256::digest(&json)
        .iter()
        .take(16)
        .fold(String::with_capacity(32), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// `None` until the first complete list (or the first valid file).
pub type Current = Option<Arc<Published>>;

#[derive(Clone)]
pub struct Store {
    tx: Arc<watch::Sender<Current>>,
    /// The latest of each source, so that either can publish alone.
    inputs: Arc<Mutex<Inputs>>,
}

#[derive(Default)]
struct Inputs {
    /// `None` until the first complete namespace list: no snapshot before.
    namespaces: Option<Namespaces>,
    virtual_pods: VirtualPods,
}

impl Default for Store {
    fn default() -> Self {
        Store {
            tx: Arc::new(watch::Sender::new(None)),
            inputs: Arc::default(),
        }
    }
}

impl Store {
    pub fn current(&self) -> Current {
        self.tx.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<Current> {
        self.tx.subscribe()
    }

    /// Serves `namespaces` unless it equals what is already served; wakes the
    /// waiting long-polls only when the content (and so the version) changed.
    pub fn publish(&self, namespaces: Namespaces) -> bool {
        let mut inputs = self.inputs.lock().unwrap_or_else(|e| e.into_inner());
        inputs.namespaces = Some(namespaces);
        self.republish(&inputs)
    }

    /// Serves `virtual_pods` with the namespaces (once there are any), as
    /// [`Store::publish`].
    pub fn publish_virtual_pods(&self, virtual_pods: VirtualPods) -> bool {
        let mut inputs = self.inputs.lock().unwrap_or_else(|e| e.into_inner());
        inputs.virtual_pods = virtual_pods;
        self.republish(&inputs)
    }

    fn republish(&self, inputs: &Inputs) -> bool {
        let Some(namespaces) = &inputs.namespaces else {
            return false;
        };
        let pods = &inputs.virtual_pods;
        self.tx.send_if_modified(|current| {
            if current
                .as_ref()
                .is_some_and(|p| p.namespaces == *namespaces && p.virtual_pods == *pods)
            {
                return false;
            }
            let published = Published::new(namespaces.clone(), pods.clone(), current.as_deref());
            tracing::info!(
                version = %published.version,
                namespaces = published.namespaces.len(),
                virtual_pods = published.virtual_pods.values().map(BTreeMap::len).sum::<usize>(),
                "snapshot version published"
            );
            *current = Some(Arc::new(published));
            true
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(entries: &[(&str, &[(&str, &str)])]) -> Namespaces {
        entries
            .iter()
            .map(|(name, labels)| {
                let labels = labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                (name.to_string(), NamespaceLabels { labels })
            })
            .collect()
    }

    #[test]
    fn version_follows_content_only() {
        let store = Store::default();
        let mut rx = store.subscribe();
        assert!(store.current().is_none());
        assert!(store.publish(ns(&[("a", &[("team", "x")])])));
        let v1 = store.current().unwrap().version.clone();
        assert!(rx.has_changed().unwrap());
        rx.borrow_and_update();
        assert!(!store.publish(ns(&[("a", &[("team", "x")])])));
        assert!(
            !rx.has_changed().unwrap(),
            "same content must not wake clients"
        );
        assert!(store.publish(ns(&[("a", &[("team", "y")])])));
        let v2 = store.current().unwrap().version.clone();
        assert_ne!(v1, v2);
        assert!(store.publish(ns(&[("a", &[("team", "x")])])));
        assert_eq!(store.current().unwrap().version, v1, "content-addressed");
        assert_eq!(v1.len(), 32);
    }

    fn pod(cluster: &str, name: &str) -> VirtualPod {
        VirtualPod {
            cluster: cluster.into(),
            namespace: "shop".into(),
            name: name.into(),
            uid: format!("v-{name}"),
            host_uid: format!("h-{name}"),
        }
    }

    fn on(node: &str, pods: &[(&str, VirtualPod)]) -> VirtualPods {
        let pods = pods
            .iter()
            .map(|(k, p)| (k.to_string(), p.clone()))
            .collect();
        BTreeMap::from([(node.to_string(), pods)])
    }

    #[test]
    fn each_node_has_a_view_of_its_own_virtual_pods() {
        let store = Store::default();
        // Pods before the first namespace list: nothing is served yet.
        assert!(!store.publish_virtual_pods(on("n1", &[("vc/a-x-shop-x-k8s1", pod("k8s1", "a"))])));
        assert!(store.current().is_none());
        assert!(store.publish(ns(&[("vc", &[("team", "x")])])));
        let p = store.current().unwrap();
        let (v1, body) = p.view(Some("n1"));
        let s = Snapshot::parse(body).unwrap();
        assert_eq!((s.version.as_str(), s.virtual_pods.len()), (v1, 1));
        let (v2, body) = p.view(Some("n2"));
        assert!(Snapshot::parse(body).unwrap().virtual_pods.is_empty());
        assert_eq!(
            v2,
            version_of(&p.namespaces),
            "no pods: the namespaces' version"
        );
        assert_eq!(p.view(None).0, v1, "all pods are n1's");
        // A pod on n2: n2's view changes, n1's does not.
        let mut both = on("n1", &[("vc/a-x-shop-x-k8s1", pod("k8s1", "a"))]);
        both.extend(on("n2", &[("vc/b-x-shop-x-k8s1", pod("k8s1", "b"))]));
        assert!(store.publish_virtual_pods(both.clone()));
        let q = store.current().unwrap();
        assert_eq!(q.view(Some("n1")).0, v1);
        assert!(
            Arc::ptr_eq(&p.by_node["n1"], &q.by_node["n1"]),
            "n1's view is reused, not serialized again"
        );
        assert_ne!(q.view(Some("n2")).0, v2);
        assert_eq!(
            Snapshot::parse(q.view(None).1).unwrap().virtual_pods.len(),
            2
        );
        assert!(
            !store.publish_virtual_pods(both),
            "same content must not wake clients"
        );
    }

    #[test]
    fn body_is_a_snapshot_the_filter_accepts() {
        let store = Store::default();
        store.publish(ns(&[("a", &[("team", "x")]), ("b", &[])]));
        let p = store.current().unwrap();
        let s = Snapshot::parse(&p.body).unwrap();
        assert_eq!(s.version, p.version);
        assert_eq!(s.namespaces, p.namespaces);
        assert!(s.generated_at.parse::<jiff::Timestamp>().is_ok());
    }
}
