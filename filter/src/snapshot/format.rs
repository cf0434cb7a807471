//! The namespace snapshot: what the control plane serves on `/v1/snapshot` and the
//! filter keeps in proxy-wasm shared data.
//!
//! ```json
//! {"version": "<opaque>", "generatedAt": "<RFC 3339>",
//!  "namespaces": {"<name>": {"labels": {"<key>": "<value>"}}},
//!  "virtualPods": {"<host namespace>/<host name>":
//!      {"cluster": "<virtual cluster>", "namespace": "<virtual namespace>",
//!       "name": "<virtual name>", "uid": "<virtual UID>", "hostUid": "<host UID>"}}}
//! ```
//!
//! `virtualPods` are the host pods a virtual cluster's syncer (vcluster) made, on the
//! node that asked (`/v1/snapshot?node=`), with the names the virtual cluster knows
//! them by: what a virtual cluster's tenant sees instead of the host's names. It is
//! optional (absent: none).
//!
//! Unknown fields are ignored so that a newer control plane can add fields without
//! breaking older filters; the first three fields above are required.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    /// Opaque; changes exactly when the exported content changes.
    pub version: String,
    pub generated_at: String,
    pub namespaces: BTreeMap<String, NamespaceLabels>,
    /// `<host namespace>/<host pod name>` → the pod as its virtual cluster knows it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub virtual_pods: BTreeMap<String, VirtualPod>,
}

/// A host pod that a virtual cluster's syncer made: the virtual cluster's name for
/// it (read from the syncer's annotations, never recomputed from the host name).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualPod {
    /// The virtual cluster (its `vcluster.loft.sh/managed-by` label).
    pub cluster: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// The host pod's own UID (it appears in cgroup paths).
    pub host_uid: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceLabels {
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotError(pub String);

impl fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid snapshot: {}", self.0)
    }
}

impl std::error::Error for SnapshotError {}

impl Snapshot {
    pub fn parse(json: &[u8]) -> Result<Snapshot, SnapshotError> {
        if json.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(SnapshotError("a snapshot must be a JSON object".into()));
        }
        let de = &mut serde_json::Deserializer::from_slice(json);
        let snapshot: Snapshot = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            SnapshotError(format!("{path}: {}", e.into_inner()))
        })?;
        if snapshot.version.is_empty() {
            return Err(SnapshotError("version: must not be empty".into()));
        }
        // The version travels in `ETag`/`If-None-Match` and in a shared-data key.
        if !snapshot
            .version
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"')
        {
            return Err(SnapshotError(
                "version: must be printable ASCII without '\"'".into(),
            ));
        }
        for (key, pod) in &snapshot.virtual_pods {
            let valid = key.split_once('/').is_some_and(|(ns, name)| {
                !ns.is_empty() && !name.is_empty() && !name.contains('/')
            });
            if !valid {
                return Err(SnapshotError(format!(
                    "virtualPods.{key}: the key must be <host namespace>/<host name>"
                )));
            }
            let fields = [
                &pod.cluster,
                &pod.namespace,
                &pod.name,
                &pod.uid,
                &pod.host_uid,
            ];
            if fields.iter().any(|f| f.is_empty()) {
                return Err(SnapshotError(format!(
                    "virtualPods.{key}: cluster, namespace, name, uid and hostUid must not be empty"
                )));
            }
        }
        Ok(snapshot)
    }

    pub fn to_json(&self) -> Vec<u8> {
        // Serializing maps of strings cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_ignores_unknown_fields() {
        let s = Snapshot::parse(
            br#"{"version":"7","generatedAt":"2026-01-01T00:00:00Z","extra":1,
                 "namespaces":{"a":{"labels":{"team":"x"}},"b":{}}}"#,
        )
        .unwrap();
        assert_eq!(s.namespaces["a"].labels["team"], "x");
        assert!(s.namespaces["b"].labels.is_empty());
        assert_eq!(Snapshot::parse(&s.to_json()).unwrap(), s);
    }

    #[test]
    fn missing_or_bad_fields_are_errors() {
        let e = Snapshot::parse(br#"{"version":"1","namespaces":{}}"#).unwrap_err();
        assert!(e.to_string().contains("generatedAt"), "{e}");
        let e = Snapshot::parse(
            br#"{"version":"1","generatedAt":"t","namespaces":{"a":{"labels":{"k":1}}}}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("namespaces.a.labels.k"), "{e}");
        assert!(Snapshot::parse(br#"{"version":"","generatedAt":"t","namespaces":{}}"#).is_err());
        assert!(
            Snapshot::parse(br#"{"version":"a\"b","generatedAt":"t","namespaces":{}}"#).is_err()
        );
        assert!(Snapshot::parse(b"not json").is_err());
    }

    #[test]
    fn virtual_pods_are_optional_and_checked() {
        let s = Snapshot::parse(
            br#"{"version":"1","generatedAt":"t","namespaces":{},"virtualPods":{
                "vcluster-k8s1/web-1-x-shop-x-k8s1":{"cluster":"k8s1","namespace":"shop",
                "name":"web-1","uid":"v-1","hostUid":"h-1"}}}"#,
        )
        .unwrap();
        let pod = &s.virtual_pods["vcluster-k8s1/web-1-x-shop-x-k8s1"];
        assert_eq!(
            (&*pod.cluster, &*pod.name, &*pod.host_uid),
            ("k8s1", "web-1", "h-1")
        );
        assert_eq!(Snapshot::parse(&s.to_json()).unwrap(), s);
        let none = Snapshot::parse(br#"{"version":"1","generatedAt":"t","namespaces":{}}"#);
        assert!(none.unwrap().virtual_pods.is_empty());
        assert!(!String::from_utf8(none_json())
            .unwrap()
            .contains("virtualPods"));
        for bad in [
            r#""nons":{"cluster":"c","namespace":"n","name":"p","uid":"u","hostUid":"h"}"#,
            r#""a/b/c":{"cluster":"c","namespace":"n","name":"p","uid":"u","hostUid":"h"}"#,
            r#""a/b":{"cluster":"","namespace":"n","name":"p","uid":"u","hostUid":"h"}"#,
            r#""a/b":{"cluster":"c","namespace":"n","name":"p","uid":"u"}"#,
        ] {
            let doc = format!(
                r#"{{"version":"1","generatedAt":"t","namespaces":{{}},"virtualPods":{{{bad}}}}}"#
            );
            assert!(Snapshot::parse(doc.as_bytes()).is_err(), "{bad}");
        }
    }

    fn none_json() -> Vec<u8> {
        Snapshot {
            version: "1".into(),
            generated_at: "t".into(),
            namespaces: BTreeMap::new(),
            virtual_pods: BTreeMap::new(),
        }
        .to_json()
    }
}
