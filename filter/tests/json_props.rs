//! Property tests of the JSON filter: generated `PodList`s and `/stats/summary`
//! bodies with hostile strings (quotes, backslashes, brackets, unicode escapes,
//! control characters, astral characters), decoy `namespace`/`metadata`/`podRef`
//! keys nested everywhere, random key order, random whitespace (CRLF included) and
//! random string escaping, fed in random chunks. Expectations come from
//! `json_support` (serde_json and an independent span finder).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod json_support;

use json_support::*;
use kubelet_scope_filter::json::{JsonFilter, MAX_DEPTH};
use kubelet_scope_filter::policy::endpoint::JsonEndpoint;
use proptest::prelude::*;

const MAX: usize = 1 << 20;

/// Namespaces the tenant owns (one needs escaping).
const OWNED: &[&str] = &["shop", "db", "sh\"op{}\\"];

fn visible(ns: &str) -> bool {
    OWNED.contains(&ns)
}

fn scope() -> kubelet_scope_filter::snapshot::catalog::RequestScope {
    scope_owning("acme", OWNED)
}

#[derive(Debug, Clone)]
enum J {
    Null,
    Bool(bool),
    Num(String),
    Str(String),
    Arr(Vec<J>),
    Obj(Vec<(String, J)>),
}

fn hostile_string() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z-]{0,8}",
        prop::collection::vec(
            prop_oneof![
                Just('"'),
                Just('\\'),
                Just('/'),
                Just('{'),
                Just('}'),
                Just('['),
                Just(']'),
                Just(','),
                Just(':'),
                Just('\n'),
                Just('\r'),
                Just('\t'),
                Just('\u{0}'),
                Just('\u{1f}'),
                Just('é'),
                Just('€'),
                Just('\u{2028}'),
                Just('\u{fffd}'),
                Just('𝄞'),
                Just('😀'),
                prop::char::range('a', 'z'),
            ],
            0..12
        )
        .prop_map(String::from_iter),
        Just("namespace".to_owned()),
        Just("metadata".to_owned()),
        Just("podRef".to_owned()),
        Just("items".to_owned()),
        Just("pods".to_owned()),
        Just("shop".to_owned()),
    ]
}

fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("0".to_owned()),
        Just("-0".to_owned()),
        "-?[1-9][0-9]{0,15}",
        "-?(0|[1-9][0-9]{0,3})\\.[0-9]{1,8}",
        "-?(0|[1-9][0-9]{0,3})(\\.[0-9]{1,3})?[eE][+-]?[0-9]{1,2}",
    ]
}

fn value() -> impl Strategy<Value = J> {
    let leaf = prop_oneof![
        Just(J::Null),
        any::<bool>().prop_map(J::Bool),
        number().prop_map(J::Num),
        hostile_string().prop_map(J::Str),
    ];
    leaf.prop_recursive(4, 48, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(J::Arr),
            prop::collection::vec((hostile_string(), inner), 0..5).prop_map(J::Obj),
        ]
    })
}

fn namespace() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec!["shop", "db", "sh\"op{}\\", "bank", "other", "", "Shop", "shop "])
            .prop_map(str::to_owned),
        1 => hostile_string(),
    ]
}

/// Inserts `entry` among `others` at `at` (modulo the length).
fn insert_at(mut others: Vec<(String, J)>, at: usize, entry: (String, J)) -> Vec<(String, J)> {
    let at = at % (others.len() + 1);
    others.insert(at, entry);
    others
}

/// One element: its namespace in `ref_key` (`metadata`/`podRef`), decoys elsewhere.
fn element(ref_key: &'static str) -> impl Strategy<Value = J> {
    (
        namespace(),
        prop::collection::vec(
            (
                hostile_string().prop_filter("not the namespace", |k| k != "namespace"),
                value(),
            ),
            0..4,
        ),
        any::<usize>(),
        prop::collection::vec(
            (
                hostile_string().prop_filter("not the reference", move |k| k != ref_key),
                value(),
            ),
            0..4,
        ),
        any::<usize>(),
    )
        .prop_map(move |(ns, meta, at_ns, rest, at_ref)| {
            let meta = insert_at(meta, at_ns, ("namespace".to_owned(), J::Str(ns)));
            J::Obj(insert_at(rest, at_ref, (ref_key.to_owned(), J::Obj(meta))))
        })
}

fn shuffle(entries: Vec<(String, J)>, keys: &[u8]) -> Vec<(String, J)> {
    let mut keyed: Vec<(u8, (String, J))> = keys.iter().copied().zip(entries).collect();
    keyed.sort_by_key(|e| e.0);
    keyed.into_iter().map(|e| e.1).collect()
}

fn elements(ref_key: &'static str) -> impl Strategy<Value = J> {
    prop_oneof![
        8 => prop::collection::vec(element(ref_key), 0..8).prop_map(J::Arr),
        1 => Just(J::Null),
    ]
}

fn pod_list() -> impl Strategy<Value = J> {
    (
        elements("metadata"),
        value(),
        prop::collection::vec(any::<u8>(), 4),
        prop::collection::vec(any::<bool>(), 3),
    )
        .prop_map(|(items, meta, order, present)| {
            let all = vec![
                ("kind".to_owned(), J::Str("PodList".to_owned())),
                ("apiVersion".to_owned(), J::Str("v1".to_owned())),
                ("metadata".to_owned(), meta),
                ("items".to_owned(), items),
            ];
            let kept = all
                .into_iter()
                .enumerate()
                .filter(|(i, _)| *i == 3 || present[*i])
                .map(|(_, e)| e)
                .collect();
            J::Obj(shuffle(kept, &order))
        })
}

fn summary() -> impl Strategy<Value = J> {
    (elements("podRef"), value(), any::<bool>(), any::<bool>()).prop_map(
        |(pods, node, with_node, node_first)| {
            let mut entries = vec![("pods".to_owned(), pods)];
            if with_node {
                let at = if node_first { 0 } else { 1 };
                entries.insert(at, ("node".to_owned(), node));
            }
            J::Obj(entries)
        },
    )
}

fn body() -> impl Strategy<Value = (JsonEndpoint, J)> {
    prop_oneof![
        pod_list().prop_map(|j| (JsonEndpoint::PodList, j)),
        summary().prop_map(|j| (JsonEndpoint::StatsSummary, j)),
    ]
}

/// Renders with random whitespace and random (valid) string escaping.
struct Render {
    rng: u64,
    out: String,
}

impl Render {
    fn next(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    fn ws(&mut self) {
        // Indentation of up to fifteen spaces is the filter's fast path; more, or
        // any other mix, its general one.
        const WS: &[&str] = &[
            "",
            "",
            "",
            "",
            " ",
            "\n",
            "\r\n",
            "\t",
            "\n    ",
            "\n               ",
            "\n                ",
            "\n  \t",
            "\r\n  \t",
        ];
        let w = WS[(self.next() % WS.len() as u64) as usize];
        self.out.push_str(w);
    }

    fn string(&mut self, s: &str) {
        self.out.push('"');
        for c in s.chars() {
            let r = self.next() % 8;
            match c {
                '"' => self.out.push_str("\\\""),
                '\\' => self.out.push_str("\\\\"),
                '\n' if r < 4 => self.out.push_str("\\n"),
                '\r' if r < 4 => self.out.push_str("\\r"),
                '\t' if r < 4 => self.out.push_str("\\t"),
                '/' if r < 4 => self.out.push_str("\\/"),
                c if (c as u32) < 0x20 || r == 0 => {
                    let mut units = [0u16; 2];
                    for u in c.encode_utf16(&mut units) {
                        if self.next().is_multiple_of(2) {
                            self.out.push_str(&format!("\\u{:04x}", u));
                        } else {
                            self.out.push_str(&format!("\\u{:04X}", u));
                        }
                    }
                }
                c => self.out.push(c),
            }
        }
        self.out.push('"');
    }

    fn value(&mut self, j: &J) {
        match j {
            J::Null => self.out.push_str("null"),
            J::Bool(b) => self.out.push_str(if *b { "true" } else { "false" }),
            J::Num(n) => self.out.push_str(n),
            J::Str(s) => self.string(s),
            J::Arr(items) => {
                self.out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        self.ws();
                        self.out.push(',');
                    }
                    self.ws();
                    self.value(item);
                }
                self.ws();
                self.out.push(']');
            }
            J::Obj(entries) => {
                self.out.push('{');
                for (i, (k, v)) in entries.iter().enumerate() {
                    if i > 0 {
                        self.ws();
                        self.out.push(',');
                    }
                    self.ws();
                    self.string(k);
                    self.ws();
                    self.out.push(':');
                    self.ws();
                    self.value(v);
                }
                self.ws();
                self.out.push('}');
            }
        }
    }
}

fn render(j: &J, seed: u64) -> Vec<u8> {
    let mut r = Render {
        rng: seed | 1,
        out: String::new(),
    };
    r.ws();
    r.value(j);
    r.ws();
    r.out.into_bytes()
}

fn cuts(len: usize, raw: &[usize]) -> Vec<usize> {
    let mut v: Vec<usize> = raw.iter().map(|c| c % (len + 1)).collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// Where the top-level value ends (after its closing brace).
fn value_end(body: &[u8]) -> usize {
    body.iter().rposition(|&c| c == b'}').unwrap() + 1
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// The output is the reference (value and bytes) for every chunking.
    #[test]
    fn filters_like_the_reference(
        (endpoint, doc) in body(),
        seed in any::<u64>(),
        raw_cuts in prop::collection::vec(any::<usize>(), 0..6),
    ) {
        let body = render(&doc, seed);
        let scope = scope();
        let whole = run(endpoint, &scope, MAX, &body, &[])
            .unwrap_or_else(|e| panic!("{e}\n{}", String::from_utf8_lossy(&body)));
        check_output(endpoint, &body, &whole, &visible);
        prop_assert_eq!(&run(endpoint, &scope, MAX, &body, &cuts(body.len(), &raw_cuts)).unwrap(), &whole);
        prop_assert_eq!(&run_bytewise(endpoint, &scope, MAX, &body).unwrap(), &whole);
    }

    /// What has been written after any prefix is a prefix of the final output: no
    /// byte is written early that a later decision would have dropped.
    #[test]
    fn output_only_grows_by_final_bytes(
        (endpoint, doc) in body(),
        seed in any::<u64>(),
        cut in any::<usize>(),
    ) {
        let body = render(&doc, seed);
        let scope = scope();
        let whole = run(endpoint, &scope, MAX, &body, &[]).unwrap();
        let cut = cut % (body.len() + 1);
        let mut f = JsonFilter::new(endpoint, scope, MAX);
        let mut out = Vec::new();
        f.feed(&body[..cut], &mut out).unwrap();
        prop_assert!(whole.starts_with(&out));
    }

    /// A body that ends before its top-level value does is refused at `finish`.
    #[test]
    fn truncated_bodies_are_refused(
        (endpoint, doc) in body(),
        seed in any::<u64>(),
        cut in any::<usize>(),
        raw_cuts in prop::collection::vec(any::<usize>(), 0..3),
    ) {
        let body = render(&doc, seed);
        let cut = cut % value_end(&body);
        let body = &body[..cut];
        prop_assert!(run(endpoint, &scope(), MAX, body, &cuts(body.len(), &raw_cuts)).is_err());
    }

    /// Corrupting one byte never yields an unparsable output or a foreign element;
    /// whatever serde_json rejects, the filter rejects.
    #[test]
    fn corrupted_bodies_are_refused_or_filtered(
        (endpoint, doc) in body(),
        seed in any::<u64>(),
        at in any::<usize>(),
        byte in prop_oneof![
            prop::sample::select(b"\"\\{}[],: \nu0aeE-+.tfn\x00\x1f\x80\xc3\xed\xff".to_vec()),
            any::<u8>(),
        ],
        raw_cuts in prop::collection::vec(any::<usize>(), 0..3),
    ) {
        let mut body = render(&doc, seed);
        let at = at % body.len();
        body[at] = byte;
        let scope = scope();
        let got = run(endpoint, &scope, MAX, &body, &[]);
        let split = run(endpoint, &scope, MAX, &body, &cuts(body.len(), &raw_cuts));
        prop_assert_eq!(got.is_ok(), split.is_ok());
        // A number beyond f64 (`-0.26E647`) is valid JSON that serde_json will not
        // hold: the filter checks the grammar only and copies numbers verbatim
        // (RFC 8259 §6 leaves their range to implementations), and serde_json
        // cannot be the oracle of such a body.
        let parsed = serde_json::from_slice::<serde_json::Value>(&body);
        let out_of_range = parsed
            .as_ref()
            .is_err_and(|e| e.to_string().starts_with("number out of range"));
        if parsed.is_err() && !out_of_range {
            prop_assert!(got.is_err(), "accepted what serde_json rejects");
        }
        if let Ok(out) = got {
            prop_assert_eq!(&split.unwrap(), &out);
            // Accepted: it must be a body we understand, filtered exactly.
            if !out_of_range {
                check_output(endpoint, &body, &out, &visible);
            }
        }
    }

    /// A second `metadata`/`podRef` in an element, or a second `namespace` in it
    /// (however spelled), is refused.
    #[test]
    fn duplicate_reference_or_namespace_is_refused(
        (endpoint, doc) in body(),
        seed in any::<u64>(),
        which in any::<usize>(),
        dup_ref in any::<bool>(),
        ns in namespace(),
        at in any::<usize>(),
    ) {
        let J::Obj(mut top) = doc else { unreachable!() };
        let target = target_key(endpoint);
        let ref_key = ref_key(endpoint);
        let Some((_, J::Arr(items))) = top.iter_mut().find(|(k, _)| k == target) else {
            return Ok(());
        };
        if items.is_empty() {
            return Ok(());
        }
        let n = items.len();
        let J::Obj(element) = &mut items[which % n] else { unreachable!() };
        if dup_ref {
            let entry = (ref_key.to_owned(), J::Obj(vec![("namespace".to_owned(), J::Str(ns))]));
            let at = at % (element.len() + 1);
            element.insert(at, entry);
        } else {
            let (_, J::Obj(meta)) = element.iter_mut().find(|(k, _)| k == ref_key).unwrap() else {
                unreachable!()
            };
            let at = at % (meta.len() + 1);
            meta.insert(at, ("namespace".to_owned(), J::Str(ns)));
        }
        let body = render(&J::Obj(top), seed);
        let e = run(endpoint, &scope(), MAX, &body, &[]).unwrap_err();
        prop_assert!(e.0.contains("twice"), "{}", e);
    }

    /// Nesting is accepted exactly up to MAX_DEPTH, without recursion.
    #[test]
    fn nesting_is_capped(extra in 0usize..140, objects in any::<bool>(), cut in any::<usize>()) {
        let (open, close) = if objects {
            (r#"{"a":"#, "}")
        } else {
            ("[", "]")
        };
        let nested = format!("{}1{}", open.repeat(extra), close.repeat(extra));
        let body = format!(
            r#"{{"items":[{{"metadata":{{"namespace":"shop"}},"spec":{nested}}}]}}"#
        );
        let cut = cut % (body.len() + 1);
        let got = run(JsonEndpoint::PodList, &scope(), MAX, body.as_bytes(), &[cut]);
        // The element's object is at depth 3; `extra` containers go below it.
        prop_assert_eq!(got.is_ok(), 3 + extra <= MAX_DEPTH);
    }
}
