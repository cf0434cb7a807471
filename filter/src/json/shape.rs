//! The two document shapes and the hooks that apply them: which top-level keys are
//! allowed, where the filtered array is, which key of its elements holds the
//! reference object and its `namespace`; then, as the scanner reaches the depths
//! that matter (1 to 4), what is held back, decided, written or dropped.
//!
//! `/stats/summary` (`pods[].podRef.namespace`) and `/pods` (`items[].metadata.
//! namespace`) differ only in their names, so each is a [`Shape`] (data) and both
//! go through the same hooks: a module per shape would hold ten lines and copy
//! the hooks. This is the only module that decides what the tenant sees; it must
//! not scan (the scanner calls it with validated tokens).

use super::capture::{key_is, Capture};
use super::translate::{Field, Fields};
use super::{err, JsonFilter};
use crate::body::BodyError;
use crate::policy::endpoint::JsonEndpoint;

/// The key, in an element's reference object, of the namespace.
pub(super) const NAMESPACE: &[u8] = b"namespace";

/// What the filter needs to know of an endpoint's shape.
pub(super) struct Shape {
    /// Top-level keys the kubelet writes; anything else is refused.
    top_keys: &'static [&'static [u8]],
    /// Index in `top_keys` of the filtered array.
    target: usize,
    /// Key, in each element, of the object holding `namespace`.
    pub(super) ref_key: &'static [u8],
}

const SUMMARY: Shape = Shape {
    top_keys: &[b"node", b"pods"],
    target: 1,
    ref_key: b"podRef",
};

const POD_LIST: Shape = Shape {
    top_keys: &[b"kind", b"apiVersion", b"metadata", b"items"],
    target: 3,
    ref_key: b"metadata",
};

impl Shape {
    pub(super) fn of(endpoint: JsonEndpoint) -> &'static Shape {
        match endpoint {
            JsonEndpoint::StatsSummary => &SUMMARY,
            JsonEndpoint::PodList => &POD_LIST,
        }
    }

    fn target_name(&self) -> &'static str {
        std::str::from_utf8(self.top_keys[self.target]).unwrap_or("array")
    }

    fn ref_name(&self) -> &'static str {
        std::str::from_utf8(self.ref_key).unwrap_or("reference")
    }
}

impl JsonFilter {
    pub(super) fn too_big(&self) -> BodyError {
        err(format_args!(
            "an element of `{}` is larger than maxJsonBodyBytes ({} bytes)",
            self.shape.target_name(),
            self.max_body_bytes
        ))
    }

    /// A key at a depth we look at (in an object at `depth`), raw as in
    /// [`JsonFilter::captured`].
    pub(super) fn key_hook(&mut self, raw: Option<&[u8]>, depth: usize) -> Result<(), BodyError> {
        let is = |want: &[u8], scratch: &mut Vec<u8>| match raw {
            Some(raw) => key_is(raw, want, scratch),
            None => Ok(false),
        };
        match depth {
            1 => {
                let shape = self.shape;
                let mut found = None;
                for (idx, want) in shape.top_keys.iter().enumerate() {
                    if is(want, &mut self.scratch)? {
                        found = Some(idx);
                        break;
                    }
                }
                let Some(idx) = found else {
                    let Some(raw) = raw else {
                        return Err(err("unexpected (long) top-level key"));
                    };
                    let shown = String::from_utf8_lossy(raw);
                    return Err(err(format_args!(
                        "unexpected top-level key \"{}\"",
                        shown.chars().take(40).collect::<String>()
                    )));
                };
                if self.top_seen & (1 << idx) != 0 {
                    return Err(err(format_args!(
                        "top-level key \"{}\" appears twice",
                        String::from_utf8_lossy(shape.top_keys[idx])
                    )));
                }
                self.top_seen |= 1 << idx;
                self.top_is_target = idx == shape.target;
            }
            3 => {
                let is_ref = is(self.shape.ref_key, &mut self.scratch)?;
                if is_ref {
                    if self.ref_seen {
                        return Err(err(format_args!(
                            "an element of `{}` has `{}` twice",
                            self.shape.target_name(),
                            self.shape.ref_name()
                        )));
                    }
                    self.ref_seen = true;
                }
                self.next_is_ref = is_ref;
            }
            _ => {
                if self.virtual_names {
                    self.virtual_key(raw)?;
                }
                let is_ns = is(NAMESPACE, &mut self.scratch)?;
                if is_ns {
                    if self.ns_key_seen {
                        return Err(err(format_args!(
                            "an element of `{}` has `{}.namespace` twice",
                            self.shape.target_name(),
                            self.shape.ref_name()
                        )));
                    }
                    self.ns_key_seen = true;
                }
                self.next_is_ns = is_ns;
            }
        }
        Ok(())
    }

    /// Whether [`JsonFilter::value_hook`] acts on a value in a container at `depth`
    /// (asked first, so that most values cost no call).
    #[inline(always)]
    pub(super) fn hooks_value(&self, depth: usize) -> bool {
        match depth {
            1 => self.top_is_target,
            2 => self.in_target,
            3 => self.in_target && self.next_is_ref,
            4 => self.in_ref && (self.next_is_ns || self.next_field != Field::None),
            _ => false,
        }
    }

    /// The first byte `c` (at `i`) of a value in a container at `depth`, where
    /// [`JsonFilter::hooks_value`].
    pub(super) fn value_hook(
        &mut self,
        b: &[u8],
        i: usize,
        c: u8,
        depth: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), BodyError> {
        match depth {
            1 if self.top_is_target => match c {
                b'[' => {
                    // Everything after `[` is held back until decided.
                    out.extend_from_slice(&b[self.mark..=i]);
                    self.mark = i + 1;
                    self.holding = true;
                    self.in_target = true;
                }
                b'n' => {}
                _ => {
                    return Err(err(format_args!(
                        "`{}` is not an array",
                        self.shape.target_name()
                    )))
                }
            },
            2 if self.in_target => {
                if c != b'{' {
                    return Err(err(format_args!(
                        "an element of `{}` is not an object",
                        self.shape.target_name()
                    )));
                }
                self.counters.seen += 1;
                self.ref_seen = false;
                self.ns_key_seen = false;
                self.ns_seen = false;
                self.next_is_ref = false;
                self.next_is_ns = false;
                self.next_field = Field::None;
                self.fields = Fields::default();
                self.pod_name.clear();
            }
            3 if self.in_target && self.next_is_ref => {
                if c != b'{' {
                    return Err(err(format_args!(
                        "`{}` of an element of `{}` is not an object",
                        self.shape.ref_name(),
                        self.shape.target_name()
                    )));
                }
                self.in_ref = true;
            }
            4 if self.in_ref && self.next_field != Field::None => self.virtual_value(i, c)?,
            4 if self.in_ref && self.next_is_ns => {
                if c != b'"' {
                    return Err(err(format_args!(
                        "`{}.namespace` of an element of `{}` is not a string",
                        self.shape.ref_name(),
                        self.shape.target_name()
                    )));
                }
                self.fields.from = self.held_offset(i + 1);
                self.start_capture(Capture::Namespace, i + 1);
            }
            _ => {}
        }
        Ok(())
    }

    /// A `,` at `i` between elements of the filtered array.
    pub(super) fn comma_in_target(&mut self, i: usize) -> Result<(), BodyError> {
        // Drop the whitespace after the previous element and the comma: the next
        // element brings its own comma if it is kept.
        self.check_region(i)?;
        self.pending.clear();
        self.mark = i + 1;
        Ok(())
    }

    /// The held-back region (up to `end` in this chunk) must fit the cap.
    fn check_region(&self, end: usize) -> Result<(), BodyError> {
        if self.pending.len() + (end - self.mark) > self.max_body_bytes {
            return Err(self.too_big());
        }
        Ok(())
    }

    /// The (matching) closer at `i` of a container at `depth` (<= 4).
    pub(super) fn close_hook(
        &mut self,
        b: &[u8],
        i: usize,
        depth: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), BodyError> {
        match depth {
            4 if self.in_ref => self.in_ref = false,
            3 if self.in_target => self.element_end(b, i, out)?,
            2 if self.in_target => {
                // The end of the array: write the whitespace before `]`, then pass on.
                self.check_region(i)?;
                out.extend_from_slice(&self.pending);
                self.pending.clear();
                out.extend_from_slice(&b[self.mark..i]);
                self.mark = i;
                self.holding = false;
                self.in_target = false;
            }
            1 if self.top_seen & (1 << self.shape.target) == 0 => {
                return Err(err(format_args!(
                    "the body has no `{}`",
                    self.shape.target_name()
                )));
            }
            _ => {}
        }
        Ok(())
    }

    /// The closing brace of an element at `i`: decide it.
    fn element_end(&mut self, b: &[u8], i: usize, out: &mut Vec<u8>) -> Result<(), BodyError> {
        if !self.ref_seen {
            return Err(err(format_args!(
                "an element of `{}` has no `{}`",
                self.shape.target_name(),
                self.shape.ref_name()
            )));
        }
        if !self.ns_seen {
            return Err(err(format_args!(
                "an element of `{}` has no `{}.namespace`",
                self.shape.target_name(),
                self.shape.ref_name()
            )));
        }
        self.check_region(i + 1)?;
        if self.virtual_names {
            return self.virtual_element_end(b, i, out);
        }
        if self.scope.namespace_visible(&self.namespace) {
            if self.kept_any {
                out.push(b',');
            }
            out.extend_from_slice(&self.pending);
            out.extend_from_slice(&b[self.mark..=i]);
            self.kept_any = true;
            self.counters.kept += 1;
        } else {
            self.counters.dropped += 1;
        }
        self.pending.clear();
        self.mark = i + 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{every_split, scope};
    use super::super::JsonFilter;
    use crate::policy::endpoint::JsonEndpoint::{PodList, StatsSummary};

    #[test]
    fn filters_pod_list_items_and_fixes_commas() {
        let body = r#"{"kind":"PodList","apiVersion":"v1","metadata":{},"items":[
  {"metadata":{"name":"a","namespace":"bank"}},
  {"metadata":{"name":"b","namespace":"shop"}},
  {"metadata":{"name":"c","namespace":"bank"}},
  {"metadata":{"name":"d","namespace":"db"}}
]}"#;
        assert_eq!(
            every_split(PodList, body).unwrap(),
            r#"{"kind":"PodList","apiVersion":"v1","metadata":{},"items":[
  {"metadata":{"name":"b","namespace":"shop"}},
  {"metadata":{"name":"d","namespace":"db"}}
]}"#
        );
        let all_foreign =
            r#"{"items": [ {"metadata":{"namespace":"bank"}} , {"metadata":{"namespace":"x"}} ] }"#;
        assert_eq!(
            every_split(PodList, all_foreign).unwrap(),
            r#"{"items": [ ] }"#
        );
        assert_eq!(
            every_split(PodList, r#"{"items":null}"#).unwrap(),
            r#"{"items":null}"#
        );
        assert_eq!(
            every_split(PodList, r#"{"items":[]}"#).unwrap(),
            r#"{"items":[]}"#
        );
    }

    #[test]
    fn filters_summary_pods_and_keeps_node() {
        let body = "{\r\n \"node\": {\"nodeName\":\"n\",\"systemContainers\":[{\"name\":\"kubelet\"}]},\r\n \"pods\": [\r\n  {\"podRef\": {\"name\":\"x\",\"namespace\":\"bank\"}, \"cpu\": {\"usageNanoCores\": 1.5e3}},\r\n  {\"containers\":[{\"namespace\":\"bank\"}],\"podRef\": {\"namespace\":\"s\\u0068op\",\"name\":\"y\"}}\r\n ]\r\n}\r\n";
        let out = every_split(StatsSummary, body).unwrap();
        assert_eq!(
            out,
            "{\r\n \"node\": {\"nodeName\":\"n\",\"systemContainers\":[{\"name\":\"kubelet\"}]},\r\n \"pods\": [\r\n  {\"containers\":[{\"namespace\":\"bank\"}],\"podRef\": {\"namespace\":\"s\\u0068op\",\"name\":\"y\"}}\r\n ]\r\n}\r\n"
        );
    }

    #[test]
    fn only_the_reference_namespace_counts() {
        // `namespace` on the element, in an owner reference, in an annotation, in a
        // nested `metadata`: none of them is the element's namespace.
        let body = r#"{"items":[{"namespace":"shop","spec":{"metadata":{"namespace":"shop"}},
            "metadata":{"ownerReferences":[{"namespace":"shop"}],"annotations":{"namespace":"shop"},
            "namespace":"bank"}}]}"#;
        assert_eq!(every_split(PodList, body).unwrap(), r#"{"items":[]}"#);
        // Without a namespace of its own the element is refused.
        let body = r#"{"items":[{"namespace":"shop","metadata":{"labels":{"namespace":"shop"}}}]}"#;
        assert!(every_split(PodList, body)
            .unwrap_err()
            .0
            .contains("metadata.namespace"));
        let body = r#"{"pods":[{"ref":{"namespace":"shop"}}]}"#;
        assert!(every_split(StatsSummary, body)
            .unwrap_err()
            .0
            .contains("podRef"));
    }

    #[test]
    fn element_over_the_cap_is_refused_for_every_split() {
        let body = format!(
            r#"{{"items":[{{"metadata":{{"namespace":"shop"}},"x":"{}"}}]}}"#,
            "a".repeat(200)
        );
        for cap in [100, 232, 233, 1000] {
            let expect_ok = body.len() - r#"{"items":[]}"#.len() <= cap;
            for s in 0..=body.len() {
                let mut f = JsonFilter::new(PodList, scope(Some("acme"), true), cap);
                let mut out = Vec::new();
                let r = f
                    .feed(&body.as_bytes()[..s], &mut out)
                    .and_then(|()| f.feed(&body.as_bytes()[s..], &mut out))
                    .and_then(|()| f.finish(&mut out));
                assert_eq!(r.is_ok(), expect_ok, "cap {cap} split {s}");
            }
        }
    }
}
