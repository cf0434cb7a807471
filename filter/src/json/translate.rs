//! A virtual cluster's view of the JSON bodies: only the elements (`/stats/summary`
//! pods, `/pods` items) of the host pods its syncer made, their reference object
//! (`podRef`, `metadata`) under the names the virtual cluster knows:
//!
//! | member of `podRef` / `metadata` | becomes |
//! |---|---|
//! | `namespace` | the virtual namespace |
//! | `name` | the virtual pod name |
//! | `uid` | the virtual UID |
//! | `ownerReferences` (`/pods`) | `[]`: they name host objects (the syncer's), which the virtual cluster does not have |
//!
//! Everything else is the kubelet's bytes. An element is kept only when its
//! `namespace` and `name` name a host pod of the scope's virtual cluster
//! ([`RequestScope::virtual_pod`](crate::snapshot::catalog::RequestScope::virtual_pod));
//! a `name` or `uid` that is not a string, or given twice, is refused as the
//! `namespace` is.
//!
//! The scanner records where these values are in the held element (offsets from
//! the start of what is held back, which spans chunks); the element is written with
//! them replaced once it is complete. Only a virtual cluster's requests look at
//! these members: the path of every other request is unchanged.

use std::ops::Range;

use super::capture::{key_is, Capture};
use super::{err, JsonFilter};
use crate::body::BodyError;

/// Which member of the reference object the next value is, for a virtual cluster.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) enum Field {
    #[default]
    None,
    Name,
    Uid,
    Owners,
}

/// Where the values to translate are in the held element.
#[derive(Debug, Clone, Default)]
pub(super) struct Fields {
    pub(super) namespace: Option<Range<usize>>,
    pub(super) name: Option<Range<usize>>,
    pub(super) uid: Option<Range<usize>>,
    /// The first byte of `ownerReferences`' value.
    pub(super) owners: Option<usize>,
    /// Keys seen (bit per [`Field`]), to refuse one given twice.
    seen: u8,
    /// Where the string being captured starts.
    pub(super) from: usize,
}

const KEYS: [(&[u8], Field); 3] = [
    (b"name", Field::Name),
    (b"uid", Field::Uid),
    (b"ownerReferences", Field::Owners),
];

impl JsonFilter {
    /// The offset, in what is held back of the element, of index `i` of the chunk.
    #[inline(always)]
    pub(super) fn held_offset(&self, i: usize) -> usize {
        (self.pending.len() + i).saturating_sub(self.mark)
    }

    /// A key of the reference object, for a virtual cluster: which [`Field`] its
    /// value is.
    pub(super) fn virtual_key(&mut self, raw: Option<&[u8]>) -> Result<(), BodyError> {
        self.next_field = Field::None;
        let Some(raw) = raw else {
            return Ok(());
        };
        for (key, field) in KEYS {
            if key_is(raw, key, &mut self.scratch)? {
                let bit = 1 << field as u8;
                if self.fields.seen & bit != 0 {
                    return Err(err(format_args!(
                        "an element has `{}.{}` twice",
                        String::from_utf8_lossy(self.shape.ref_key),
                        String::from_utf8_lossy(key)
                    )));
                }
                self.fields.seen |= bit;
                self.next_field = field;
            }
        }
        Ok(())
    }

    /// The first byte `c`, at `i`, of the value of [`Field`] `self.next_field`.
    pub(super) fn virtual_value(&mut self, i: usize, c: u8) -> Result<(), BodyError> {
        match self.next_field {
            Field::Owners => self.fields.owners = Some(self.held_offset(i)),
            Field::Name | Field::Uid if c != b'"' => {
                return Err(err("`name` or `uid` of a reference object is not a string"))
            }
            Field::Name | Field::Uid => {
                self.fields.from = self.held_offset(i + 1);
                let kind = if self.next_field == Field::Name {
                    Capture::Name
                } else {
                    Capture::Uid
                };
                self.start_capture(kind, i + 1);
            }
            Field::None => {}
        }
        self.next_field = Field::None;
        Ok(())
    }

    /// The closing brace, at `i`, of an element, for a virtual cluster: written
    /// translated, or dropped.
    pub(super) fn virtual_element_end(
        &mut self,
        b: &[u8],
        i: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), BodyError> {
        let fields = std::mem::take(&mut self.fields);
        // The virtual values as JSON string content, where the element has them.
        let pod = match (&fields.namespace, &fields.name) {
            (Some(_), Some(_)) => self.scope.virtual_pod(&self.namespace, &self.pod_name),
            _ => None,
        };
        let Some(mut edits) = pod.map(|pod| {
            [
                (fields.namespace.clone(), &pod.namespace),
                (fields.name.clone(), &pod.name),
                (fields.uid.clone(), &pod.uid),
            ]
            .into_iter()
            .filter_map(|(range, value)| Some((range?, json_string_content(value))))
            .collect::<Vec<(Range<usize>, Vec<u8>)>>()
        }) else {
            self.counters.dropped += 1;
            self.pending.clear();
            self.mark = i + 1;
            return Ok(());
        };
        let mut element = std::mem::take(&mut self.pending);
        element.extend_from_slice(&b[self.mark..=i]);
        if let Some(start) = fields.owners {
            let end = value_end(&element, start)
                .ok_or_else(|| err("cannot find the end of `ownerReferences`"))?;
            edits.push((start..end, b"[]".to_vec()));
        }
        edits.sort_by_key(|(range, _)| range.start);
        if self.kept_any {
            out.push(b',');
        }
        let mut at = 0;
        for (range, bytes) in edits {
            out.extend_from_slice(&element[at..range.start]);
            out.extend_from_slice(&bytes);
            at = range.end;
        }
        out.extend_from_slice(&element[at..]);
        self.kept_any = true;
        self.counters.kept += 1;
        element.clear();
        self.pending = element;
        self.mark = i + 1;
        Ok(())
    }
}

/// `value` as the content of a JSON string (quotes, backslashes and control
/// characters escaped).
fn json_string_content(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len());
    for &c in value {
        match c {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0..=0x1f => out.extend_from_slice(format!("\\u{c:04x}").as_bytes()),
            _ => out.push(c),
        }
    }
    out
}

/// The end (exclusive) of the JSON value that starts at `start` of `bytes`, which
/// the scanner has validated: past the matching closer of a container, or before
/// the `,`, `}` or `]` after a scalar.
fn value_end(bytes: &[u8], start: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = start;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                i += 1;
                while *bytes.get(i)? != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'[' | b'{' => depth += 1,
            b']' | b'}' if depth == 0 => return Some(i),
            b']' | b'}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            b',' if depth == 0 => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::super::testing::{every_split_in, virtual_scope};
    use super::value_end;
    use crate::policy::endpoint::JsonEndpoint::{PodList, StatsSummary};

    const PODS: &str = r#"{"kind":"PodList","apiVersion":"v1","metadata":{},"items":[
  {"metadata":{"name":"web-1-x-shop-x-k8s1","generateName":"web-","namespace":"vcluster-k8s1","uid":"h-uid-1",
    "ownerReferences":[{"kind":"Service","name":"k8s1","uid":"x","namespace":"]"}],
    "annotations":{"vcluster.loft.sh/object-name":"web-1"}},"spec":{"nodeName":"n"}},
  {"metadata":{"namespace":"vcluster-k8s2","name":"web-1-x-shop-x-k8s2","uid":"h-uid-3"}},
  {"metadata":{"name":"web-1-x-shop-x-k8s1","namespace":"shop","uid":"u"}},
  {"metadata":{"name":"new-x-shop-x-k8s1","namespace":"vcluster-k8s1","uid":"u"}},
  {"metadata":{"n\u0061me":"db-0-x-data-x-k8s1","namespace":"vcluster-k8s1","ownerReferences":null}}
]}"#;

    #[test]
    fn a_virtual_cluster_sees_its_pods_under_their_virtual_names() {
        let out = every_split_in(&virtual_scope("k8s1"), PodList, PODS).unwrap();
        assert_eq!(
            out,
            r#"{"kind":"PodList","apiVersion":"v1","metadata":{},"items":[
  {"metadata":{"name":"web-1","generateName":"web-","namespace":"shop","uid":"v-uid-1",
    "ownerReferences":[],
    "annotations":{"vcluster.loft.sh/object-name":"web-1"}},"spec":{"nodeName":"n"}},
  {"metadata":{"n\u0061me":"db-0","namespace":"data","ownerReferences":[]}}
]}"#
        );
        let out = every_split_in(&virtual_scope("k8s2"), PodList, PODS).unwrap();
        assert!(
            out.contains(r#"{"namespace":"shop","name":"web-1","uid":"v-uid-3"}"#),
            "{out}"
        );
        assert!(!out.contains("k8s1") && !out.contains("h-uid"), "{out}");
        assert_eq!(out.matches(r#""name""#).count(), 1, "{out}");
        let out = every_split_in(&virtual_scope("k8s9"), PodList, PODS).unwrap();
        assert!(out.ends_with("\"items\":[\n]}"), "{out}");
    }

    #[test]
    fn summary_pod_refs_are_translated() {
        let body = r#"{"node":{"nodeName":"n"},"pods":[
 {"podRef":{"name":"web-1-x-shop-x-k8s1","namespace":"vcluster-k8s1","uid":"h-uid-1"},"cpu":{"usageNanoCores":1}},
 {"podRef":{"name":"other","namespace":"shop","uid":"u"}},
 {"containers":[{"name":"c"}],"podRef":{"uid":"h-uid-2","namespace":"vcluster-k8s1","name":"db-0-x-data-x-k8s1"}}]}"#;
        assert_eq!(
            every_split_in(&virtual_scope("k8s1"), StatsSummary, body).unwrap(),
            r#"{"node":{"nodeName":"n"},"pods":[
 {"podRef":{"name":"web-1","namespace":"shop","uid":"v-uid-1"},"cpu":{"usageNanoCores":1}},
 {"containers":[{"name":"c"}],"podRef":{"uid":"v-uid-2","namespace":"data","name":"db-0"}}]}"#
        );
    }

    #[test]
    fn what_cannot_be_translated_is_refused_or_dropped() {
        let scope = virtual_scope("k8s1");
        for (body, why) in [
            (
                r#"{"items":[{"metadata":{"name":1,"namespace":"vcluster-k8s1"}}]}"#,
                "not a string",
            ),
            (
                r#"{"items":[{"metadata":{"name":"a","name":"b","namespace":"vcluster-k8s1"}}]}"#,
                "twice",
            ),
            (
                r#"{"items":[{"metadata":{"uid":"a","uid":"b","namespace":"x"}}]}"#,
                "twice",
            ),
        ] {
            let e = every_split_in(&scope, PodList, body).unwrap_err();
            assert!(e.0.contains(why), "{body}: {e}");
        }
        // No name: nothing to translate, so not shown.
        let body = r#"{"items":[{"metadata":{"namespace":"vcluster-k8s1"}}]}"#;
        assert_eq!(
            every_split_in(&scope, PodList, body).unwrap(),
            r#"{"items":[]}"#
        );
    }

    #[test]
    fn value_ends() {
        let doc = br#"{"a":[{"x":"]\""},[]],"b":null,"c":{"d":"}"}}"#;
        let at = |s: &str| {
            doc.windows(s.len())
                .position(|w| w == s.as_bytes())
                .unwrap()
        };
        assert_eq!(value_end(doc, at("[{")), Some(at(r#","b""#)));
        assert_eq!(value_end(doc, at("null")), Some(at(r#","c""#)));
        assert_eq!(value_end(doc, at(r#"{"d""#)), Some(doc.len() - 1));
        assert_eq!(value_end(br#"["x"#, 0), None);
    }
}
