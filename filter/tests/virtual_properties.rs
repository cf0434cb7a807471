//! Property tests of a virtual cluster's view (`tenancy.virtualClusterHeader`):
//! generated Prometheus text and `/pods` bodies with pods of two virtual clusters
//! (both have a `shop/web-1`), pods the control plane has not mapped, host
//! tenants' pods and node series, in random label and key orders with hostile
//! values, fed whole and split at generated points.
//!
//! The generator knows every pod, so the exact expected output is rendered from the
//! model (translated names, the host namespace's `team`, the rebuilt label set),
//! not from the rewriter.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::rc::Rc;

use kubelet_scope_filter::config::Config;
use kubelet_scope_filter::policy::endpoint::BodyKind;
use kubelet_scope_filter::policy::endpoint::JsonEndpoint;
use kubelet_scope_filter::rewrite::BodyFilter;
use kubelet_scope_filter::snapshot::catalog::{Catalog, RequestScope};
use kubelet_scope_filter::snapshot::Snapshot;
use proptest::prelude::*;

const CONFIG: &str = r#"{"inject":{"labels":{"team":"team"}},
    "tenancy":{"tenant":{"namespaceOf":{"header":"n"}},"namespaceLabel":"tenant",
               "virtualClusterHeader":"v"},
    "snapshot":{"cluster":"cp","perNode":true}}"#;

/// A host pod: host namespace, host name, host UID, and what a cluster's view
/// makes of it (cluster, virtual namespace, name, UID), if it is mapped.
struct Pod {
    host_ns: &'static str,
    host_name: &'static str,
    host_uid: &'static str,
    virt: Option<(&'static str, &'static str, &'static str, &'static str)>,
}

const PODS: [Pod; 5] = [
    Pod {
        host_ns: "vcluster-k8s1",
        host_name: "web-1-x-shop-x-k8s1",
        host_uid: "h1-aaaa",
        virt: Some(("k8s1", "shop", "web-1", "v1-aaaa")),
    },
    Pod {
        host_ns: "vcluster-k8s1",
        host_name: "db-0-x-data-x-k8s1",
        host_uid: "h2-bbbb",
        virt: Some(("k8s1", "data", "db-0", "v2-bbbb")),
    },
    Pod {
        host_ns: "vcluster-k8s2",
        host_name: "web-1-x-shop-x-k8s2",
        host_uid: "h3-cccc",
        virt: Some(("k8s2", "shop", "web-1", "v3-cccc")),
    },
    // Synced, but not in the control plane's map yet.
    Pod {
        host_ns: "vcluster-k8s1",
        host_name: "new-x-shop-x-k8s1",
        host_uid: "h4-dddd",
        virt: None,
    },
    // A host tenant's pod.
    Pod {
        host_ns: "shop",
        host_name: "web-1",
        host_uid: "h5-eeee",
        virt: None,
    },
];

fn team(host_ns: &str) -> &'static str {
    match host_ns {
        "vcluster-k8s1" => "one",
        "vcluster-k8s2" => "two",
        _ => "web",
    }
}

fn snapshot() -> String {
    let pods: Vec<String> = PODS
        .iter()
        .filter_map(|p| {
            let (cluster, ns, name, uid) = p.virt?;
            Some(format!(
                r#""{}/{}":{{"cluster":"{cluster}","namespace":"{ns}","name":"{name}","uid":"{uid}","hostUid":"{}"}}"#,
                p.host_ns, p.host_name, p.host_uid
            ))
        })
        .collect();
    format!(
        r#"{{"version":"1","generatedAt":"t","namespaces":{{
            "vcluster-k8s1":{{"labels":{{"team":"one","tenant":"hosting"}}}},
            "vcluster-k8s2":{{"labels":{{"team":"two","tenant":"hosting"}}}},
            "shop":{{"labels":{{"team":"web","tenant":"acme"}}}}}},
          "virtualPods":{{{}}}}}"#,
        pods.join(",")
    )
}

fn scope(cluster: &str) -> RequestScope {
    let config = Config::parse(CONFIG.as_bytes()).unwrap();
    let snapshot = Snapshot::parse(snapshot().as_bytes()).unwrap();
    RequestScope::of_request(
        Rc::new(Catalog::new(&config, Some(&snapshot))),
        None,
        Some(cluster),
    )
}

fn run(kind: BodyKind, cluster: &str, body: &[u8], splits: &[usize]) -> Result<Vec<u8>, String> {
    let mut filter = BodyFilter::new(kind, scope(cluster), 1 << 20);
    let mut out = Vec::new();
    let mut at = 0;
    let mut cuts: Vec<usize> = splits.iter().map(|s| s % (body.len() + 1)).collect();
    cuts.sort_unstable();
    for cut in cuts.into_iter().chain([body.len()]) {
        filter.feed(&body[at..cut], &mut out).map_err(|e| e.0)?;
        at = cut;
    }
    filter.finish(&mut out).map_err(|e| e.0)?;
    Ok(out)
}

// --- text ----------------------------------------------------------------------

/// One series: a pod (index into PODS) or none (a node series), the order of its
/// items, an extra hostile label, blanks, and an exemplar.
#[derive(Debug, Clone)]
struct Series {
    pod: Option<usize>,
    /// A permutation of the item kinds 0..5 (namespace, pod, uid, id, extra).
    order: Vec<usize>,
    extra: String,
    blanks: bool,
    exemplar: bool,
}

fn series() -> impl Strategy<Value = Series> {
    (
        prop::option::of(0..PODS.len()),
        Just((0..5).collect::<Vec<_>>()).prop_shuffle(),
        prop_oneof![
            Just(r#"pod=\"web-1-x-shop-x-k8s1\" namespace=\"x\""#.to_owned()),
            Just(r"a\\b".to_owned()),
            "[a-z,{}= ]{0,6}",
        ],
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(pod, order, extra, blanks, exemplar)| Series {
            pod,
            order,
            extra,
            blanks,
            exemplar,
        })
}

/// The series' line as the kubelet writes it, and as `cluster` is to see it.
fn render(s: &Series, cluster: &str) -> (String, Option<String>) {
    let sep = if s.blanks { " , " } else { "," };
    let pod = s.pod.map(|i| &PODS[i]);
    let item = |k: usize, virt: Option<(&str, &str, &str, &str)>| -> Option<String> {
        let p = pod?;
        Some(match (k, virt) {
            (0, None) => format!(r#"namespace="{}""#, p.host_ns),
            (0, Some((_, ns, _, _))) => format!(r#"namespace="{ns}""#),
            (1, None) => format!(r#"pod="{}""#, p.host_name),
            (1, Some((_, _, name, _))) => format!(r#"pod="{name}""#),
            (2, None) => format!(r#"pod_uid="{}""#, p.host_uid),
            (2, Some((_, _, _, uid))) => format!(r#"pod_uid="{uid}""#),
            (3, None) => format!(r#"id="/kubepods/pod{}/c1""#, p.host_uid),
            (3, Some((_, _, _, uid))) => format!(r#"id="/kubepods/pod{uid}/c1""#),
            _ => return None,
        })
    };
    let extra = format!(r#"extra="{}""#, s.extra);
    let items = |virt| -> Vec<String> {
        s.order
            .iter()
            .filter_map(|&k| {
                if k == 4 {
                    Some(extra.clone())
                } else {
                    item(k, virt)
                }
            })
            .collect()
    };
    let tail = if s.exemplar { " 1 # {a=\"b\"} 2" } else { " 1" };
    let input = format!("m{{{}}}{tail}\n", items(None).join(sep));
    let visible = match pod {
        None => Some(format!("m{{{}}} 1\n", items(None).join(sep))),
        Some(p) => p.virt.filter(|v| v.0 == cluster).map(|v| {
            let translated = items(Some(v)).join(",");
            format!("m{{{translated},team=\"{}\"}} 1\n", team(p.host_ns))
        }),
    };
    // A node series passes as it is (its exemplar names no namespace).
    let visible = match (pod, visible) {
        (None, _) => Some(input.clone()),
        (_, v) => v,
    };
    (input, visible)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn text_shows_a_cluster_its_pods_translated_for_every_split(
        lines in prop::collection::vec(series(), 1..12),
        cluster in prop_oneof![Just("k8s1"), Just("k8s2"), Just("k8s9")],
        splits in prop::collection::vec(any::<usize>(), 0..4),
    ) {
        let mut body = String::new();
        let mut want = String::new();
        for s in &lines {
            let (input, visible) = render(s, cluster);
            body.push_str(&input);
            want.push_str(visible.as_deref().unwrap_or(""));
        }
        let out = run(BodyKind::Exposition, cluster, body.as_bytes(), &splits).unwrap();
        prop_assert_eq!(String::from_utf8(out).unwrap(), want);
    }
}

// --- JSON ----------------------------------------------------------------------

/// One `/pods` item: a pod (index into PODS), its metadata keys' order, the
/// indentation, whether it has owner references.
#[derive(Debug, Clone)]
struct Item {
    pod: usize,
    order: Vec<usize>,
    pretty: bool,
    owners: bool,
}

fn item() -> impl Strategy<Value = Item> {
    (
        0..PODS.len(),
        Just((0..5).collect::<Vec<_>>()).prop_shuffle(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(pod, order, pretty, owners)| Item {
            pod,
            order,
            pretty,
            owners,
        })
}

fn render_item(it: &Item, cluster: &str) -> (String, Option<String>) {
    let p = &PODS[it.pod];
    let sep = if it.pretty { ",\n      " } else { "," };
    let members = |virt: Option<(&str, &str, &str, &str)>| -> Vec<String> {
        it.order
            .iter()
            .filter_map(|&k| {
                Some(match (k, virt) {
                    (0, None) => format!(r#""name":"{}""#, p.host_name),
                    (0, Some(v)) => format!(r#""name":"{}""#, v.2),
                    (1, None) => format!(r#""namespace":"{}""#, p.host_ns),
                    (1, Some(v)) => format!(r#""namespace":"{}""#, v.1),
                    (2, None) => format!(r#""uid":"{}""#, p.host_uid),
                    (2, Some(v)) => format!(r#""uid":"{}""#, v.3),
                    (3, _) if !it.owners => return None,
                    (3, None) => r#""ownerReferences":[{"name":"x]\"","uid":"o"}]"#.to_owned(),
                    (3, Some(_)) => r#""ownerReferences":[]"#.to_owned(),
                    (_, _) => format!(r#""labels":{{"namespace":"{}"}}"#, p.host_ns),
                })
            })
            .collect()
    };
    let wrap = |m: Vec<String>| {
        format!(
            r#"{{"metadata":{{{}}},"spec":{{"nodeName":"n"}}}}"#,
            m.join(sep)
        )
    };
    let visible = p
        .virt
        .filter(|v| v.0 == cluster)
        .map(|v| wrap(members(Some(v))));
    (wrap(members(None)), visible)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn pods_show_a_cluster_its_pods_translated_for_every_split(
        items in prop::collection::vec(item(), 0..8),
        cluster in prop_oneof![Just("k8s1"), Just("k8s2"), Just("k8s9")],
        splits in prop::collection::vec(any::<usize>(), 0..4),
    ) {
        let (inputs, visible): (Vec<String>, Vec<Option<String>>) =
            items.iter().map(|it| render_item(it, cluster)).unzip();
        let body = format!(r#"{{"kind":"PodList","apiVersion":"v1","metadata":{{}},"items":[{}]}}"#, inputs.join(","));
        let kept: Vec<String> = visible.into_iter().flatten().collect();
        let want = format!(r#"{{"kind":"PodList","apiVersion":"v1","metadata":{{}},"items":[{}]}}"#, kept.join(","));
        let out = run(BodyKind::Json(JsonEndpoint::PodList), cluster, body.as_bytes(), &splits).unwrap();
        prop_assert_eq!(String::from_utf8(out).unwrap(), want);
    }
}
