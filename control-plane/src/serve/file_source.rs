//! Namespaces from a file, for local use and the demo: what
//! `kubectl get namespaces -o yaml` (or `-o json`) prints.
//!
//! The file is polled (metadata every interval, contents only when the modification
//! time or size changed), which also works for ConfigMap volumes whose contents are
//! swapped through symlinks. A file that cannot be read or parsed is logged and
//! counted, and the last good content stays served.
//!
//! Owns reading and validating that file. It must not watch the apiserver, nor
//! publish anything but a whole, valid file: a half-written or unreadable one never
//! replaces the last good content.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Deserialize;

use super::metrics::Metrics;
use super::select::LabelSelection;
use super::store::{Namespaces, Store};

/// How often the file's metadata is checked.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct List {
    api_version: String,
    kind: String,
    items: Vec<Item>,
}

#[derive(Deserialize)]
struct Item {
    kind: Option<String>,
    metadata: Metadata,
}

#[derive(Deserialize)]
struct Metadata {
    name: String,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
}

/// Parses a `v1` `List`/`NamespaceList` of Namespaces (YAML or JSON).
pub fn parse(text: &[u8], selection: &LabelSelection) -> Result<Namespaces, String> {
    let list: List = serde_norway::from_slice(text).map_err(|e| e.to_string())?;
    if list.api_version != "v1" || !matches!(list.kind.as_str(), "List" | "NamespaceList") {
        return Err(format!(
            "expected apiVersion v1, kind List or NamespaceList, got {} {}",
            list.api_version, list.kind
        ));
    }
    let mut out = Namespaces::new();
    for (i, item) in list.items.into_iter().enumerate() {
        if item.kind.as_deref().is_some_and(|k| k != "Namespace") {
            return Err(format!("items[{i}]: kind must be Namespace"));
        }
        if item.metadata.name.is_empty() {
            return Err(format!("items[{i}]: metadata.name must not be empty"));
        }
        let labels = selection.exported(item.metadata.labels.as_ref());
        out.insert(item.metadata.name, labels);
    }
    Ok(out)
}

pub async fn run(
    path: PathBuf,
    interval: Duration,
    selection: LabelSelection,
    store: Store,
    metrics: Arc<Metrics>,
) {
    let mut seen: Option<(SystemTime, u64)> = None;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let stamp = match tokio::fs::metadata(&path).await {
            Ok(m) => (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()),
            Err(error) => {
                if seen.is_some() || store.current().is_none() {
                    metrics.source_errors.inc();
                    tracing::warn!(path = %path.display(), %error, "cannot read the namespaces file; keeping the last good content");
                }
                // Retried, but logged again only after the file came back.
                seen = None;
                continue;
            }
        };
        if seen == Some(stamp) {
            continue;
        }
        seen = Some(stamp);
        let result = match tokio::fs::read(&path).await {
            Ok(text) => parse(&text, &selection),
            Err(e) => Err(e.to_string()),
        };
        match result {
            Ok(namespaces) => {
                tracing::info!(path = %path.display(), namespaces = namespaces.len(), "namespaces file loaded");
                store.publish(namespaces);
            }
            Err(error) => {
                metrics.source_errors.inc();
                tracing::warn!(path = %path.display(), %error, "invalid namespaces file; keeping the last good content");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = r#"
apiVersion: v1
items:
- apiVersion: v1
  kind: Namespace
  metadata:
    creationTimestamp: "2024-01-01T00:00:00Z"
    labels:
      kubernetes.io/metadata.name: shop
      team: frontend
      tenant: acme
    name: shop
  spec:
    finalizers: [kubernetes]
  status:
    phase: Active
- apiVersion: v1
  kind: Namespace
  metadata:
    name: bare
kind: List
metadata:
  resourceVersion: ""
"#;

    fn selection() -> LabelSelection {
        LabelSelection::new(&["team".into(), "tenant".into()], &[]).unwrap()
    }

    #[test]
    fn parses_kubectl_yaml_and_json() {
        let ns = parse(YAML.as_bytes(), &selection()).unwrap();
        assert_eq!(ns.len(), 2);
        assert_eq!(ns["shop"].labels.len(), 2);
        assert_eq!(ns["shop"].labels["tenant"], "acme");
        assert!(ns["bare"].labels.is_empty());
        let json = r#"{"apiVersion":"v1","kind":"NamespaceList","metadata":{"resourceVersion":"9"},
            "items":[{"metadata":{"name":"a","labels":{"team":"x"}}}]}"#;
        let ns = parse(json.as_bytes(), &selection()).unwrap();
        assert_eq!(ns["a"].labels["team"], "x");
    }

    #[test]
    fn rejects_other_documents() {
        for bad in [
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n",
            "apiVersion: v1\nkind: List\nitems: [{kind: Pod, metadata: {name: a}}]\n",
            "apiVersion: v1\nkind: List\nitems: [{metadata: {name: ''}}]\n",
            "apiVersion: v1\nkind: List\nitems: [{metadata: {labels: {}}}]\n",
            "{not yaml",
        ] {
            assert!(parse(bad.as_bytes(), &selection()).is_err(), "{bad}");
        }
    }

    /// Polls `f` every 10 ms until it holds or 5 s pass.
    async fn eventually(what: &str, f: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !f() {
            assert!(std::time::Instant::now() < deadline, "timed out: {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn reloads_on_change_and_keeps_last_good_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("namespaces.yaml");
        std::fs::write(&path, YAML).unwrap();
        let store = Store::default();
        let metrics = Arc::new(Metrics::default());
        let task = tokio::spawn(run(
            path.clone(),
            Duration::from_millis(20),
            selection(),
            store.clone(),
            metrics.clone(),
        ));
        eventually("first load", || store.current().is_some()).await;
        let v1 = store.current().unwrap().version.clone();

        std::fs::write(&path, YAML.replace("frontend", "checkout")).unwrap();
        eventually("reload", || {
            store
                .current()
                .is_some_and(|p| p.namespaces["shop"].labels["team"] == "checkout")
        })
        .await;
        let v2 = store.current().unwrap().version.clone();
        assert_ne!(v1, v2);

        // An invalid file is counted and the last good content stays.
        let errors_counted = |n: u32| {
            metrics
                .encode(&store)
                .contains(&format!("kubelet_scope_watch_errors_total {n}\n"))
        };
        std::fs::write(&path, "kind: List\nitems: [oops").unwrap();
        eventually("error counted", || errors_counted(1)).await;
        assert_eq!(store.current().unwrap().version, v2);
        std::fs::remove_file(&path).unwrap();
        eventually("missing file counted", || errors_counted(2)).await;
        assert_eq!(store.current().unwrap().version, v2);

        // The file comes back with only an unexported label changed: it loads
        // without error and the version stays.
        let unexported = YAML.replace("frontend", "checkout").replace(
            "kubernetes.io/metadata.name: shop",
            "kubernetes.io/metadata.name: shop\n      owner: bob",
        );
        std::fs::write(&path, unexported).unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let m = metrics.encode(&store);
        assert!(m.contains("kubelet_scope_watch_errors_total 2\n"), "{m}");
        assert_eq!(store.current().unwrap().version, v2);
        task.abort();
    }
}
