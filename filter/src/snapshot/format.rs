//! The namespace snapshot: what the control plane serves on `/v1/snapshot` and the
//! filter keeps in proxy-wasm shared data.
//!
//! ```json
//! {"version": "<opaque>", "generatedAt": "<RFC 3339>",
//!  "namespaces": {"<name>": {"labels": {"<key>": "<value>"}}}}
//! ```
//!
//! Unknown fields are ignored so that a newer control plane can add fields without
//! breaking older filters; the three fields above are required.

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
}
