//! Fuzzes the tenant filter for the kubelet's JSON (`kubelet_scope_filter::json`).
//!
//! Run (only the stable toolchain is installed; `RUSTC_BOOTSTRAP=1` lets cargo-fuzz
//! pass its nightly-only sanitizer flags):
//!
//! ```sh
//! cargo install cargo-fuzz
//! cd fuzz
//! RUSTC_BOOTSTRAP=1 cargo fuzz run json_filter corpus/json_filter seeds/json_filter \
//!     -- -dict=json.dict -max_total_time=60
//! ```
//!
//! Input: one control byte (endpoint, element cap, split point), then the body.
//! Invariants checked, in tenant mode for tenant `acme` (owning `shop`, `db` and
//! `sh"op`):
//! - no panic;
//! - the result is the same for the whole body, for a split point derived from the
//!   input, and (for small bodies) byte by byte;
//! - on `Ok`, the output is UTF-8 and valid JSON, every element it contains belongs
//!   to the tenant, and, if the input parses with serde_json, the output is exactly
//!   the input's value with the other tenants' elements removed;
//! - the bytes written after any prefix are a prefix of the final output.
#![no_main]

use std::rc::Rc;

use kubelet_scope_filter::snapshot::catalog::{Catalog, RequestScope};
use kubelet_scope_filter::config::Config;
use kubelet_scope_filter::policy::endpoint::JsonEndpoint;
use kubelet_scope_filter::json::JsonFilter;
use libfuzzer_sys::fuzz_target;
use serde::Deserialize;
use serde_json::Value;

const OWNED: &[&str] = &["shop", "db", "sh\"op"];

thread_local! {
    static SCOPE: RequestScope = {
        let config = Config::parse(
            br#"{"tenancy": {"tenant": {"header": "x-tenant"},
                 "staticNamespaces": {"acme": ["shop", "db", "sh\"op"], "globex": ["bank"]}}}"#,
        )
        .unwrap();
        RequestScope::new(Rc::new(Catalog::new(&config, None)), Some("acme"))
    };
}

#[derive(Deserialize)]
struct PodList {
    #[serde(default)]
    items: Option<Vec<Item>>,
}

#[derive(Deserialize)]
struct Item {
    metadata: Reference,
}

#[derive(Deserialize)]
struct Summary {
    #[serde(default)]
    pods: Option<Vec<Pod>>,
}

#[derive(Deserialize)]
struct Pod {
    #[serde(rename = "podRef")]
    pod_ref: Reference,
}

#[derive(Deserialize)]
struct Reference {
    namespace: String,
}

/// The output, or `Err` (which error may depend on the chunking: a body that is
/// both too big and malformed fails on whichever is seen first).
fn filter(
    endpoint: JsonEndpoint,
    scope: &RequestScope,
    cap: usize,
    chunks: &mut dyn Iterator<Item = &[u8]>,
) -> Result<Vec<u8>, ()> {
    let mut f = JsonFilter::new(endpoint, scope.clone(), cap);
    let mut out = Vec::new();
    for chunk in chunks {
        f.feed(chunk, &mut out).map_err(|_| ())?;
    }
    f.finish(&mut out).map_err(|_| ())?;
    Ok(out)
}

fn element_namespace(endpoint: JsonEndpoint, element: &Value) -> Option<&str> {
    let reference = match endpoint {
        JsonEndpoint::PodList => "metadata",
        JsonEndpoint::StatsSummary => "podRef",
    };
    element.get(reference)?.get("namespace")?.as_str()
}

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, body)) = data.split_first() else {
        return;
    };
    let endpoint = if ctl & 1 == 0 {
        JsonEndpoint::PodList
    } else {
        JsonEndpoint::StatsSummary
    };
    let cap = if ctl & 2 == 0 {
        1 << 20
    } else {
        16 + body.len() / 4
    };
    let split = (usize::from(ctl >> 2) * 97 + body.len() / 2) % (body.len() + 1);
    SCOPE.with(|scope| {
        let whole = filter(endpoint, scope, cap, &mut std::iter::once(body));
        let halves = filter(
            endpoint,
            scope,
            cap,
            &mut [&body[..split], &body[split..]].into_iter(),
        );
        assert_eq!(whole, halves, "split at {split}");
        if body.len() <= 2048 {
            let bytewise = filter(endpoint, scope, cap, &mut body.chunks(1));
            assert_eq!(whole, bytewise, "byte by byte");
        }
        let Ok(out) = whole else {
            return;
        };

        // What was written after a prefix is a prefix of the output.
        let mut f = JsonFilter::new(endpoint, scope.clone(), cap);
        let mut early = Vec::new();
        f.feed(&body[..split], &mut early).unwrap();
        assert!(out.starts_with(&early));

        // Valid JSON, and only the tenant's elements.
        assert!(std::str::from_utf8(&out).is_ok());
        serde_json::from_slice::<serde::de::IgnoredAny>(&out).unwrap();
        let namespaces: Vec<String> = match endpoint {
            JsonEndpoint::PodList => serde_json::from_slice::<PodList>(&out)
                .unwrap()
                .items
                .unwrap_or_default()
                .into_iter()
                .map(|i| i.metadata.namespace)
                .collect(),
            JsonEndpoint::StatsSummary => serde_json::from_slice::<Summary>(&out)
                .unwrap()
                .pods
                .unwrap_or_default()
                .into_iter()
                .map(|p| p.pod_ref.namespace)
                .collect(),
        };
        for ns in &namespaces {
            assert!(
                OWNED.contains(&ns.as_str()),
                "foreign namespace {ns:?} in the output"
            );
        }

        // Exactly the input minus the foreign elements, when serde_json reads it
        // (it refuses numbers beyond f64, which JSON and the filter allow).
        match serde_json::from_slice::<Value>(body) {
            Ok(mut expected) => {
                let key = match endpoint {
                    JsonEndpoint::PodList => "items",
                    JsonEndpoint::StatsSummary => "pods",
                };
                if let Some(Value::Array(items)) = expected.get_mut(key) {
                    items.retain(|e| {
                        element_namespace(endpoint, e).is_some_and(|ns| OWNED.contains(&ns))
                    });
                }
                let got: Value = serde_json::from_slice(&out).unwrap();
                assert_eq!(got, expected);
            }
            Err(e) => assert!(
                e.to_string().contains("number out of range"),
                "the filter accepted what serde_json refuses: {e}"
            ),
        }
    });
});
