//! Tenant filtering of the kubelet's JSON bodies: `/stats/summary` (keep `node`, keep
//! the `pods[]` whose `podRef.namespace` the tenant may see) and `/pods`,
//! `/runningpods` (a `PodList`: keep the `items[]` whose `metadata.namespace` it may
//! see).
//!
//! # Streaming, not buffering
//!
//! The filter is a resumable, validating JSON scanner (a push-down automaton over
//! bytes, no recursion) that streams: everything outside the filtered array is
//! written out as soon as it has been read, and each array element is held back only
//! until its closing brace, when its namespace is known (the namespace may come after
//! megabytes of `status`, so an element cannot be decided earlier). Memory is
//! therefore bounded by the largest element, not the body, and `max_body_bytes`
//! (`maxJsonBodyBytes`) caps what is held back: one element with the whitespace
//! before it. A bigger element is refused, whatever the chunking; the body as a
//! whole is not capped, since it is never held.
//! An element that lies inside one chunk is not copied at all: it is decided and
//! copied straight from the chunk to the output.
//!
//! Kept bytes are the input bytes: no re-serialization. The filter removes elements
//! and fixes the commas; the whitespace before each kept element is kept with it, and
//! the whitespace before the closing `]` is kept, so a pretty-printed body stays
//! pretty-printed.
//!
//! # Fail closed
//!
//! In tenant mode anything the filter cannot filter safely is an error, never passed
//! through: malformed JSON (checked fully: grammar, string escapes, surrogate pairs,
//! UTF-8, control characters, so the output is valid JSON whenever the result is
//! `Ok`), a top-level value that is not an object, an unknown or repeated top-level
//! key (the kubelet writes `node`/`pods`, resp. `kind`/`apiVersion`/`metadata`/
//! `items`, and a key we do not know could carry pods), a missing `pods`/`items`, an
//! element that is not an object, an element without exactly one `podRef`/`metadata`
//! object holding exactly one string `namespace`, nesting deeper than
//! [`MAX_DEPTH`], an element over the cap, and a body that ends early. Keys are
//! compared after unescaping (`"n\u0061mespace"` is `namespace`), and only the
//! `namespace` directly in the element's `metadata`/`podRef` counts: a `namespace`
//! in an owner reference, an annotation or the element itself is just data.
//!
//! Streaming means output may have been written before an error is found (the
//! kubelet sends a body that turns malformed halfway). The caller then aborts the
//! response; no byte of an element the tenant may not see is ever written, because an
//! element is written only once it is complete and decided. A `feed` that fails
//! writes nothing, and once failed the filter keeps failing.
//!
//! Without tenancy (`scope.filtering()` false) the body passes through unchanged.
//!
//! # Modules
//!
//! The filter is one [`JsonFilter`] whose `impl` is spread over the modules by
//! concern; none of them decides anything another one owns:
//!
//! * `scanner`: the push-down automaton's structural states (keys, values, `,`,
//!   closers) and the main loop over a chunk, which hands everything else out;
//! * `strings`, `tokens`: JSON's lexical grammar (strings; numbers, literals,
//!   whitespace), each as a fast path over a whole token in the chunk and as the
//!   byte states that resume a token the chunk cut;
//! * `deep`: validating what no hook looks at, without the states' bookkeeping;
//! * `capture`: the strings the filter reads (keys, the namespace), raw or
//!   unescaped;
//! * `shape`: the two document shapes and the hooks that apply them: which keys
//!   are allowed, where the filtered array and its elements' namespaces are, and
//!   what is held back, written or dropped;
//! * `translate`: a virtual cluster's view, its elements' names translated back.
//!
//! The hot path (everything a byte of a kubelet body goes through) crosses these
//! modules only through `#[inline(always)]` functions, so that the scanner's state
//! stays in locals (registers, once compiled from wasm) as in one function.

mod capture;
mod deep;
mod scanner;
mod shape;
mod strings;
#[cfg(test)]
mod testing;
mod tokens;
mod translate;

use crate::body::{BodyError, Counters};
use crate::policy::endpoint::JsonEndpoint;
use crate::snapshot::catalog::RequestScope;
use capture::Capture;
use scanner::State;
use shape::Shape;
use translate::{Field, Fields};

/// Deepest nesting accepted. The kubelet's bodies nest about 15 deep (managed
/// fields of a pod); `serde_json`, which agents often parse with, stops at 128.
pub const MAX_DEPTH: usize = 64;

/// Streaming tenant filter for one kubelet JSON response body.
pub struct JsonFilter {
    shape: &'static Shape,
    scope: RequestScope,
    max_body_bytes: usize,
    filtering: bool,
    counters: Counters,
    failed: Option<BodyError>,

    // Scanner.
    state: State,
    /// Container kinds, one bit per level (1 = object), `depth` levels.
    stack: u64,
    depth: usize,
    /// The string being scanned is a key.
    str_key: bool,
    hex_n: u8,
    hex_val: u32,
    hex_low: bool,
    utf8_left: u8,
    utf8_lo: u8,
    utf8_hi: u8,
    lit: &'static [u8],
    lit_pos: usize,

    // String capture (the keys and the namespace value we look at).
    capture: Capture,
    cap_from: usize,
    cap_buf: Vec<u8>,
    cap_overflow: bool,
    scratch: Vec<u8>,

    // Structure.
    /// Top-level keys seen (bit per `shape.top_keys` index).
    top_seen: u32,
    /// The current top-level value is the filtered array.
    top_is_target: bool,
    /// Inside the filtered array (depth >= 2).
    in_target: bool,
    /// Inside the element's `podRef`/`metadata` object (depth 4).
    in_ref: bool,
    next_is_ref: bool,
    next_is_ns: bool,
    ref_seen: bool,
    ns_key_seen: bool,
    ns_seen: bool,
    namespace: Vec<u8>,

    // A virtual cluster's request (`translate`).
    /// The scope translates names: the reference object's `name`, `uid` and
    /// `ownerReferences` are looked at too.
    virtual_names: bool,
    next_field: Field,
    fields: Fields,
    /// The element's `name`, unescaped.
    pod_name: Vec<u8>,

    // Output.
    /// Bytes from `mark` in the current chunk are held back (part of an element or
    /// of the whitespace after one), with `pending` holding those of earlier chunks.
    holding: bool,
    mark: usize,
    pending: Vec<u8>,
    kept_any: bool,
}

#[cold]
#[inline(never)]
fn err(msg: impl std::fmt::Display) -> BodyError {
    BodyError(format!("kubelet-scope: cannot filter the JSON body: {msg}"))
}

impl JsonFilter {
    pub fn new(endpoint: JsonEndpoint, scope: RequestScope, max_body_bytes: usize) -> JsonFilter {
        let filtering = scope.filtering();
        let virtual_names = scope.is_virtual();
        JsonFilter {
            shape: Shape::of(endpoint),
            scope,
            max_body_bytes,
            filtering,
            counters: Counters::default(),
            failed: None,
            state: State::Start,
            stack: 0,
            depth: 0,
            str_key: false,
            hex_n: 0,
            hex_val: 0,
            hex_low: false,
            utf8_left: 0,
            utf8_lo: 0,
            utf8_hi: 0,
            lit: b"",
            lit_pos: 0,
            capture: Capture::None,
            cap_from: 0,
            cap_buf: Vec::new(),
            cap_overflow: false,
            scratch: Vec::new(),
            top_seen: 0,
            top_is_target: false,
            in_target: false,
            in_ref: false,
            next_is_ref: false,
            next_is_ns: false,
            ref_seen: false,
            ns_key_seen: false,
            ns_seen: false,
            namespace: Vec::new(),
            virtual_names,
            next_field: Field::None,
            fields: Fields::default(),
            pod_name: Vec::new(),
            holding: false,
            mark: 0,
            pending: Vec::new(),
            kept_any: false,
        }
    }

    /// Filters the next chunk of the body into `out`. Any chunking gives the same
    /// output. On error nothing of this chunk is written.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> Result<(), BodyError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        self.counters.bytes_in += chunk.len() as u64;
        let start = out.len();
        if !self.filtering {
            out.extend_from_slice(chunk);
        } else if let Err(e) = self.run(chunk, out) {
            out.truncate(start);
            self.failed = Some(e.clone());
            return Err(e);
        }
        self.counters.bytes_out += (out.len() - start) as u64;
        Ok(())
    }

    /// Ends the body. In tenant mode a body that is not complete is an error.
    pub fn finish(&mut self, _out: &mut Vec<u8>) -> Result<(), BodyError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if self.filtering && self.state != State::Done {
            let e = if self.state == State::Start {
                err("empty body")
            } else {
                err("the body ends before the JSON value does (truncated)")
            };
            self.failed = Some(e.clone());
            return Err(e);
        }
        Ok(())
    }

    pub fn counters(&self) -> Counters {
        self.counters
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{every_split, run, scope};
    use super::JsonFilter;
    use crate::policy::endpoint::JsonEndpoint::{PodList, StatsSummary};

    #[test]
    fn refuses_what_it_cannot_filter() {
        for (endpoint, body, why) in [
            (PodList, "", "empty"),
            (PodList, "[]", "not an object"),
            (PodList, r#"{"kind":"PodList"}"#, "no `items`"),
            (PodList, r#"{"items":[],"items":[]}"#, "twice"),
            (
                PodList,
                r#"{"items":[],"extra":1}"#,
                "unexpected top-level key",
            ),
            (PodList, r#"{"items":{}}"#, "not an array"),
            (PodList, r#"{"items":[1]}"#, "not an object"),
            (
                PodList,
                r#"{"items":[{"metadata":{"namespace":"shop"},"metadata":{"namespace":"shop"}}]}"#,
                "twice",
            ),
            (
                PodList,
                r#"{"items":[{"metadata":{"namespace":"shop","namespace":"shop"}}]}"#,
                "twice",
            ),
            (
                PodList,
                r#"{"items":[{"metadata":{"namespace":1}}]}"#,
                "not a string",
            ),
            (
                PodList,
                r#"{"items":[{"metadata":{"namespace":null}}]}"#,
                "not a string",
            ),
            (
                PodList,
                r#"{"items":[{"metadata":"shop"}]}"#,
                "not an object",
            ),
            (
                PodList,
                r#"{"items":[{"metadata":{"namespace":"shop"}}]"#,
                "truncated",
            ),
            (
                PodList,
                r#"{"items":[{"metadata":{"namespace":"shop"}}]} x"#,
                "after",
            ),
            (
                PodList,
                r#"{"items":[{"metadata":{"namespace":"shop"}},]}"#,
                "not an object",
            ),
            (PodList, r#"{"kind":"PodList",}"#, "key"),
            (PodList, r#"{"kind":,"items":[]}"#, "expected a value"),
            (
                PodList,
                r#"{"items":[{"metadata":{"namespace":"shop"}}}]"#,
                "mismatched",
            ),
            (
                PodList,
                r#"{"items":[{"metadata":{"namespace":"sh\op"}}]}"#,
                "escape",
            ),
            (
                PodList,
                r#"{"items":[{"metadata":{"namespace":"\ud800"}}]}"#,
                "surrogate",
            ),
            (
                PodList,
                r#"{"items":[{"metadata":{"namespace":"\udc00\ud800"}}]}"#,
                "surrogate",
            ),
            (
                PodList,
                "{\"items\":[{\"metadata\":{\"namespace\":\"a\tb\"}}]}",
                "control",
            ),
            (
                PodList,
                r#"{"items":[{"metadata":{"namespace":"shop"},"x":01}]}"#,
                "expected `,`",
            ),
            (
                PodList,
                r#"{"items":[{"metadata":{"namespace":"shop"},"x":-}]}"#,
                "number",
            ),
            (
                PodList,
                r#"{"items":[{"metadata":{"namespace":"shop"},"x":1.}]}"#,
                "number",
            ),
            (
                PodList,
                r#"{"items":[{"metadata":{"namespace":"shop"},"x":1e}]}"#,
                "number",
            ),
            (
                PodList,
                r#"{"items":[{"metadata":{"namespace":"shop"},"x":tru}]}"#,
                "literal",
            ),
            (
                StatsSummary,
                r#"{"node":{},"pods":[{"podRef":{}}]}"#,
                "podRef.namespace",
            ),
        ] {
            let e = every_split(endpoint, body).unwrap_err();
            assert!(e.0.contains(why), "{body}: {e}");
        }
        let deep = format!(
            r#"{{"node":{}{}{},"pods":[]}}"#,
            "[".repeat(150),
            "1",
            "]".repeat(150)
        );
        assert!(run(StatsSummary, &deep).unwrap_err().0.contains("nesting"));
        let ok = format!(
            r#"{{"node":{}{}{},"pods":[]}}"#,
            "[".repeat(60),
            "1",
            "]".repeat(60)
        );
        assert_eq!(run(StatsSummary, &ok).unwrap(), ok);
    }

    #[test]
    fn failures_write_nothing_and_stick() {
        let mut f = JsonFilter::new(PodList, scope(Some("acme"), true), 1 << 20);
        let mut out = Vec::new();
        f.feed(br#"{"items":[{"metadata":{"namespace":"shop"}}"#, &mut out)
            .unwrap();
        let before = out.clone();
        assert!(f
            .feed(br#",{"metadata":{"namespace":"shop"}} oops"#, &mut out)
            .is_err());
        assert_eq!(out, before);
        assert!(f.feed(b"]}", &mut out).is_err());
        assert!(f.finish(&mut out).is_err());
    }

    #[test]
    fn passes_through_without_tenancy() {
        let body = b"not json at all { [";
        let mut f = JsonFilter::new(PodList, scope(None, false), 4);
        let mut out = Vec::new();
        f.feed(body, &mut out).unwrap();
        f.finish(&mut out).unwrap();
        assert_eq!(out, body);
        assert_eq!(f.counters().bytes_in, body.len() as u64);
        assert_eq!(f.counters().bytes_out, body.len() as u64);
    }

    #[test]
    fn tenant_mode_without_a_tenant_sees_nothing() {
        let body = br#"{"items":[{"metadata":{"namespace":"shop"}}]}"#;
        let mut f = JsonFilter::new(PodList, scope(None, true), 1 << 20);
        let mut out = Vec::new();
        f.feed(body, &mut out).unwrap();
        f.finish(&mut out).unwrap();
        assert_eq!(out, br#"{"items":[]}"#);
        let c = f.counters();
        assert_eq!((c.seen, c.kept, c.dropped), (1, 0, 1));
    }
}
