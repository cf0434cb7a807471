//! Which namespace labels leave the control plane.
//!
//! Namespace labels can carry anything (internal owners, ticket numbers, secrets
//! people should not have put there), and every Envoy in the cluster receives the
//! snapshot, so nothing is exported unless an operator names it: exact keys with
//! `--label` and key prefixes with `--label-prefix`.
//!
//! Owns that choice for both sources; it must not export a key nobody named, and
//! knows nothing of where the labels come from.

use std::collections::{BTreeMap, BTreeSet};

use kubelet_scope_filter::snapshot::NamespaceLabels;

#[derive(Debug, Clone, Default)]
pub struct LabelSelection {
    keys: BTreeSet<String>,
    prefixes: Vec<String>,
}

impl LabelSelection {
    pub fn new(keys: &[String], prefixes: &[String]) -> Result<Self, String> {
        if keys.iter().chain(prefixes).any(String::is_empty) {
            return Err("--label and --label-prefix must not be empty".into());
        }
        Ok(LabelSelection {
            keys: keys.iter().cloned().collect(),
            prefixes: prefixes.to_vec(),
        })
    }

    pub fn exports(&self, key: &str) -> bool {
        self.keys.contains(key) || self.prefixes.iter().any(|p| key.starts_with(p.as_str()))
    }

    /// The subset of a namespace's labels that is exported.
    pub fn exported(&self, labels: Option<&BTreeMap<String, String>>) -> NamespaceLabels {
        let labels = labels
            .into_iter()
            .flatten()
            .filter(|(k, _)| self.exports(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        NamespaceLabels { labels }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exports_only_named_keys_and_prefixes() {
        let s = LabelSelection::new(&["team".into()], &["acme.io/".into()]).unwrap();
        let labels: BTreeMap<String, String> = [
            ("team", "a"),
            ("teams", "b"),
            ("acme.io/tenant", "c"),
            ("kubernetes.io/metadata.name", "d"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let out = s.exported(Some(&labels)).labels;
        assert_eq!(
            out.keys().map(String::as_str).collect::<Vec<_>>(),
            ["acme.io/tenant", "team"]
        );
        assert!(LabelSelection::default()
            .exported(Some(&labels))
            .labels
            .is_empty());
        assert!(s.exported(None).labels.is_empty());
    }

    #[test]
    fn empty_selectors_are_rejected() {
        assert!(LabelSelection::new(&[String::new()], &[]).is_err());
        assert!(LabelSelection::new(&[], &[String::new()]).is_err());
    }
}
