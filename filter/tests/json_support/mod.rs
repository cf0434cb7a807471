//! Shared by the JSON filter's integration tests: scopes, a driver that feeds a body
//! in given chunks, and an independent reference for the expected output.
//!
//! The reference is deliberately a different implementation from the filter: a
//! recursive-descent parser over a complete body that finds the byte spans of the
//! filtered array's elements (it trusts `serde_json` for validity and for decoding
//! keys), and `serde_json::Value` to read each element's namespace.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

use kubelet_scope_filter::body::BodyError;
use kubelet_scope_filter::config::Config;
use kubelet_scope_filter::json::JsonFilter;
use kubelet_scope_filter::policy::endpoint::JsonEndpoint;
use kubelet_scope_filter::snapshot::catalog::{Catalog, RequestScope};
use serde_json::Value;

/// A tenant-mode scope in which `tenant` owns exactly `owned` (static namespaces).
pub fn scope_owning(tenant: &str, owned: &[&str]) -> RequestScope {
    let mut map = BTreeMap::new();
    map.insert(tenant.to_owned(), owned.to_vec());
    // Another tenant owns other namespaces, so that they are known but foreign.
    map.insert("other-tenant".to_owned(), vec!["bank", "kube-system-other"]);
    let config = serde_json::json!({
        "tenancy": {"tenant": {"header": "x-tenant"}, "staticNamespaces": map}
    });
    let config = Config::parse(config.to_string().as_bytes()).unwrap();
    RequestScope::new(Rc::new(Catalog::new(&config, None)), Some(tenant))
}

/// Runs the filter over `body` cut at `splits` (sorted, within the body).
pub fn run(
    endpoint: JsonEndpoint,
    scope: &RequestScope,
    max: usize,
    body: &[u8],
    splits: &[usize],
) -> Result<Vec<u8>, BodyError> {
    let mut f = JsonFilter::new(endpoint, scope.clone(), max);
    let mut out = Vec::new();
    let mut at = 0;
    for &s in splits.iter().chain(std::iter::once(&body.len())) {
        f.feed(&body[at..s], &mut out)?;
        at = s;
    }
    f.finish(&mut out)?;
    let c = f.counters();
    assert_eq!(c.bytes_in, body.len() as u64);
    assert_eq!(c.bytes_out, out.len() as u64);
    assert_eq!(c.seen, c.kept + c.dropped);
    Ok(out)
}

/// Runs the filter feeding one byte at a time.
pub fn run_bytewise(
    endpoint: JsonEndpoint,
    scope: &RequestScope,
    max: usize,
    body: &[u8],
) -> Result<Vec<u8>, BodyError> {
    let mut f = JsonFilter::new(endpoint, scope.clone(), max);
    let mut out = Vec::new();
    for b in body.chunks(1) {
        f.feed(b, &mut out)?;
    }
    f.finish(&mut out)?;
    Ok(out)
}

pub fn target_key(endpoint: JsonEndpoint) -> &'static str {
    match endpoint {
        JsonEndpoint::StatsSummary => "pods",
        JsonEndpoint::PodList => "items",
    }
}

pub fn ref_key(endpoint: JsonEndpoint) -> &'static str {
    match endpoint {
        JsonEndpoint::StatsSummary => "podRef",
        JsonEndpoint::PodList => "metadata",
    }
}

/// The element's namespace, read with `serde_json`.
pub fn element_namespace(endpoint: JsonEndpoint, element: &Value) -> Option<String> {
    element
        .get(ref_key(endpoint))?
        .get("namespace")?
        .as_str()
        .map(str::to_owned)
}

/// The namespaces of all elements of a body.
pub fn namespaces(endpoint: JsonEndpoint, body: &[u8]) -> BTreeSet<String> {
    let v: Value = serde_json::from_slice(body).unwrap();
    v.get(target_key(endpoint))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|e| element_namespace(endpoint, e))
                .collect()
        })
        .unwrap_or_default()
}

/// The body as a value with every element the tenant may not see removed.
pub fn expected_value(
    endpoint: JsonEndpoint,
    body: &[u8],
    visible: &dyn Fn(&str) -> bool,
) -> Value {
    let mut v: Value = serde_json::from_slice(body).unwrap();
    if let Some(Value::Array(items)) = v.get_mut(target_key(endpoint)) {
        items.retain(|e| element_namespace(endpoint, e).is_some_and(|ns| visible(&ns)));
    }
    v
}

/// Byte spans of the filtered array: the `[`, the `]`, and per element
/// `(after the preceding '[' or ',', start, end)`.
#[derive(Debug, Clone)]
pub struct Spans {
    pub open: usize,
    pub close: usize,
    pub elements: Vec<(usize, usize, usize)>,
}

struct Ref<'a> {
    b: &'a [u8],
    i: usize,
}

impl Ref<'_> {
    fn ws(&mut self) {
        while self.i < self.b.len() && matches!(self.b[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }

    fn peek(&self) -> u8 {
        self.b[self.i]
    }

    fn string(&mut self) -> (usize, usize) {
        let start = self.i;
        assert_eq!(self.peek(), b'"');
        self.i += 1;
        loop {
            match self.peek() {
                b'\\' => self.i += 2,
                b'"' => {
                    self.i += 1;
                    return (start, self.i);
                }
                _ => self.i += 1,
            }
        }
    }

    fn value(&mut self) {
        self.ws();
        match self.peek() {
            b'"' => {
                self.string();
            }
            b'{' => {
                self.i += 1;
                self.ws();
                if self.peek() == b'}' {
                    self.i += 1;
                    return;
                }
                loop {
                    self.ws();
                    self.string();
                    self.ws();
                    assert_eq!(self.peek(), b':');
                    self.i += 1;
                    self.value();
                    self.ws();
                    let c = self.peek();
                    self.i += 1;
                    if c == b'}' {
                        return;
                    }
                }
            }
            b'[' => {
                self.i += 1;
                self.ws();
                if self.peek() == b']' {
                    self.i += 1;
                    return;
                }
                loop {
                    self.value();
                    self.ws();
                    let c = self.peek();
                    self.i += 1;
                    if c == b']' {
                        return;
                    }
                }
            }
            _ => {
                while self.i < self.b.len()
                    && !matches!(
                        self.peek(),
                        b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'
                    )
                {
                    self.i += 1;
                }
            }
        }
    }
}

/// Finds the spans of the filtered array in a valid body (`None` when it is `null`).
pub fn reference_spans(endpoint: JsonEndpoint, body: &[u8]) -> Option<Spans> {
    let mut p = Ref { b: body, i: 0 };
    p.ws();
    assert_eq!(p.peek(), b'{');
    p.i += 1;
    let mut found = None;
    loop {
        p.ws();
        if p.peek() == b'}' {
            break;
        }
        let (ks, ke) = p.string();
        let key: String = serde_json::from_slice(&body[ks..ke]).unwrap();
        p.ws();
        p.i += 1; // ':'
        p.ws();
        if key == target_key(endpoint) && p.peek() == b'[' {
            let open = p.i;
            p.i += 1;
            let mut elements = Vec::new();
            let mut lead = p.i;
            p.ws();
            let close = if p.peek() == b']' {
                p.i
            } else {
                loop {
                    p.ws();
                    let start = p.i;
                    p.value();
                    elements.push((lead, start, p.i));
                    p.ws();
                    if p.peek() == b']' {
                        break p.i;
                    }
                    p.i += 1; // ','
                    lead = p.i;
                }
            };
            p.i = close + 1;
            found = Some(Spans {
                open,
                close,
                elements,
            });
        } else {
            p.value();
        }
        p.ws();
        if p.peek() == b',' {
            p.i += 1;
        }
    }
    found
}

/// The exact output the filter must produce: the body with the dropped elements
/// (with the whitespace before them) and the separators removed, a `,` before every
/// kept element but the first, and the whitespace before `]` kept.
pub fn expected_bytes(body: &[u8], spans: &Spans, keep: &[bool]) -> Vec<u8> {
    let mut out = body[..=spans.open].to_vec();
    let mut first = true;
    for (&(lead, _, end), &k) in spans.elements.iter().zip(keep) {
        if k {
            if !first {
                out.push(b',');
            }
            first = false;
            out.extend_from_slice(&body[lead..end]);
        }
    }
    let tail = spans.elements.last().map_or(spans.open + 1, |e| e.2);
    out.extend_from_slice(&body[tail..]);
    out
}

/// Checks one filtered body against the reference, for a tenant given by `visible`.
/// Returns the kept count.
pub fn check_output(
    endpoint: JsonEndpoint,
    body: &[u8],
    out: &[u8],
    visible: &dyn Fn(&str) -> bool,
) -> usize {
    let got: Value = serde_json::from_slice(out).unwrap_or_else(|e| {
        panic!(
            "output does not parse: {e}\n{}",
            String::from_utf8_lossy(&out[..out.len().min(2000)])
        )
    });
    assert_eq!(got, expected_value(endpoint, body, visible));
    let all: Value = serde_json::from_slice(body).unwrap();
    let Some(spans) = reference_spans(endpoint, body) else {
        assert_eq!(out, body);
        return 0;
    };
    let elements = all[target_key(endpoint)].as_array().unwrap();
    assert_eq!(elements.len(), spans.elements.len());
    let keep: Vec<bool> = elements
        .iter()
        .map(|e| visible(&element_namespace(endpoint, e).unwrap()))
        .collect();
    // Every kept element is byte for byte in the output.
    let mut from = 0;
    for (&(_, start, end), &k) in spans.elements.iter().zip(&keep) {
        if k {
            let raw = &body[start..end];
            let at = memchr::memmem::find(&out[from..], raw)
                .unwrap_or_else(|| panic!("kept element not found verbatim"));
            from += at + raw.len();
        }
    }
    let expected = expected_bytes(body, &spans, &keep);
    if out != expected {
        panic!(
            "output differs from the reference:\n--- got\n{}\n--- expected\n{}",
            String::from_utf8_lossy(out),
            String::from_utf8_lossy(&expected)
        );
    }
    keep.iter().filter(|k| **k).count()
}
