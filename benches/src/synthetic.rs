//! A busy node, built from real captures: every pod-level series, `/pods` item
//! and `/stats/summary` pod of the capture is cloned until there are `pods` pods,
//! spread over [`NAMESPACES`] namespaces, with pod names made unique.

use std::collections::BTreeMap;

use regex_lite::Regex;
use serde_json::{json, Value};

use crate::capture;

/// Namespaces of the synthetic node.
pub const NAMESPACES: usize = 20;

/// Name of synthetic namespace `i`.
pub fn namespace(i: usize) -> String {
    format!("ns-{:02}", i % NAMESPACES)
}

/// Namespaces of the real captures the benchmarks read.
const CAPTURED: [&str; 7] = [
    "datadog-agent-helm",
    "default",
    "kube-system",
    "scraper",
    "workload-dogstatsd",
    "workload-stress-ng",
    "workload-stress-test-ad",
];

/// The snapshot for the synthetic namespaces and those of the captures: five
/// teams, and tenants `acme` and `globex` owning every other namespace; every pod
/// of the benchmark bodies in acme's namespaces is also a pod of the virtual
/// cluster [`crate::VIRTUAL_CLUSTER`] (`v-` before its namespace, name and UID), so
/// its view keeps what acme's does. Built once.
pub fn snapshot() -> Vec<u8> {
    static SNAPSHOT: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    SNAPSHOT.get_or_init(build_snapshot).clone()
}

fn build_snapshot() -> Vec<u8> {
    let names = (0..NAMESPACES)
        .map(namespace)
        .chain(CAPTURED.map(str::to_owned));
    let mut acme = Vec::new();
    let namespaces: BTreeMap<String, Value> = names
        .enumerate()
        .map(|(i, name)| {
            let tenant = if i % 2 == 0 { "acme" } else { "globex" };
            if tenant == "acme" {
                acme.push(name.clone());
            }
            let labels = json!({"team": format!("team-{}", i % 5), "tenant": tenant});
            (name, json!({ "labels": labels }))
        })
        .collect();
    let mut virtual_pods = BTreeMap::new();
    for body in crate::bodies() {
        for (ns, pod, uid) in pods_of(&body.bytes) {
            if acme.contains(&ns) {
                let v = json!({"cluster": crate::VIRTUAL_CLUSTER, "namespace": format!("v-{ns}"),
                    "name": format!("v-{pod}"), "uid": format!("v-{uid}"), "hostUid": uid});
                virtual_pods.insert(format!("{ns}/{pod}"), v);
            }
        }
    }
    let snapshot = json!({"version": "bench", "generatedAt": "2026-11-21T00:00:00Z",
        "namespaces": namespaces, "virtualPods": virtual_pods});
    serde_json::to_vec(&snapshot).expect("snapshot serializes")
}

/// (namespace, pod, UID) of every pod a body names: JSON elements' references,
/// or series' `namespace` and `pod` labels with the UID from the cgroup path.
fn pods_of(body: &[u8]) -> Vec<(String, String, String)> {
    if let Ok(doc) = serde_json::from_slice::<Value>(body) {
        let refs = doc["items"]
            .as_array()
            .map(|a| a.iter().map(|i| &i["metadata"]).collect::<Vec<_>>());
        let refs = refs.or_else(|| {
            doc["pods"]
                .as_array()
                .map(|a| a.iter().map(|p| &p["podRef"]).collect())
        });
        return refs
            .unwrap_or_default()
            .into_iter()
            .map(|r| {
                let s = |k: &str| r[k].as_str().unwrap_or_default().to_owned();
                (s("namespace"), s("name"), s("uid"))
            })
            .collect();
    }
    let label = |name: &str| Regex::new(&format!(r#"[{{,]{name}="([^"]+)""#)).expect("regex");
    let (ns, pod) = (label("namespace"), label("pod"));
    let uid = Regex::new(
        r"pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})",
    )
    .expect("regex");
    String::from_utf8_lossy(body)
        .lines()
        .filter_map(|line| {
            let get = |re: &Regex| re.captures(line).map(|c| c[1].to_owned());
            Some((
                get(&ns)?,
                get(&pod)?,
                get(&uid).unwrap_or_default().replace('_', "-"),
            ))
        })
        .filter(|(_, _, uid)| !uid.is_empty())
        .collect()
}

/// A `/metrics/cadvisor` body for `pods` pods (110 give 8.3 MB, 133 about 10 MB), from the
/// Kubernetes 1.35 capture.
pub fn cadvisor(pods: usize) -> Vec<u8> {
    let source = capture("cadvisor-k8s1.35-minikube-containerd2.2-nri.txt");
    let source = String::from_utf8(source).expect("capture is UTF-8");
    let pod_label = Regex::new(r#"[{,]pod="([^"]+)""#).expect("regex");
    let namespace_label = Regex::new(r#"namespace="[^"]*""#).expect("regex");

    // Real pods, in order of first appearance.
    let mut real: Vec<&str> = Vec::new();
    for c in pod_label.captures_iter(&source) {
        let pod = c.get(1).map_or("", |m| m.as_str());
        if !real.contains(&pod) {
            real.push(pod);
        }
    }
    assert!(!real.is_empty(), "capture has no pod series");

    let mut out = String::with_capacity(source.len() * pods / real.len() + source.len());
    let mut family: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let flush = |family: &mut BTreeMap<&str, Vec<&str>>, out: &mut String| {
        for i in 0..pods {
            let template = real[i % real.len()];
            for line in family.get(template).into_iter().flatten() {
                let line = namespace_label
                    .replace(line, format!("namespace=\"{}\"", namespace(i)).as_str());
                out.push_str(&line.replace(
                    &format!("pod=\"{template}\""),
                    &format!("pod=\"{template}-{i}\""),
                ));
            }
        }
        family.clear();
    };
    for line in source.split_inclusive('\n') {
        if line.starts_with('#') {
            flush(&mut family, &mut out);
            out.push_str(line);
        } else if let Some(pod) = pod_label.captures(line).and_then(|c| c.get(1)) {
            family.entry(pod.as_str()).or_default().push(line);
        } else {
            out.push_str(line);
        }
    }
    flush(&mut family, &mut out);
    out.into_bytes()
}

/// A `/pods` PodList with `pods` items (single-line JSON, as the kubelet writes
/// it), cloned from every `/pods` capture.
pub fn pod_list(pods: usize) -> Vec<u8> {
    let mut templates = Vec::new();
    for name in [
        "pods-k8s1.35-minikube-containerd2.2-nri.json",
        "pods-k8s1.31-minikube-containerd1.7-nri.json",
        "pods-k8s1.10-gke-containerd-datadog.json",
        "pods-windows-eks-2020-datadog.json",
    ] {
        let list: Value = serde_json::from_slice(&capture(name)).expect("capture parses");
        templates.extend(list["items"].as_array().cloned().unwrap_or_default());
    }
    let items: Vec<Value> = (0..pods)
        .map(|i| {
            let mut item = clone_pod(&templates, i, "metadata");
            // What `kubectl apply` leaves on most workloads: the applied spec again.
            let applied =
                serde_json::to_string(&json!({"metadata": item["metadata"], "spec": item["spec"]}))
                    .expect("serializes");
            item["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] =
                json!(applied);
            item
        })
        .collect();
    serde_json::to_vec(
        &json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items}),
    )
    .expect("serializes")
}

/// A `/stats/summary` with `pods` pods (indented, as the kubelet writes it), from
/// the Kubernetes 1.35 capture.
pub fn stats_summary(pods: usize) -> Vec<u8> {
    let mut summary: Value = serde_json::from_slice(&capture(
        "stats-summary-k8s1.35-minikube-containerd2.2-nri.json",
    ))
    .expect("parses");
    let templates = summary["pods"].as_array().cloned().unwrap_or_default();
    let scaled: Vec<Value> = (0..pods)
        .map(|i| clone_pod(&templates, i, "podRef"))
        .collect();
    summary["pods"] = json!(scaled);
    serde_json::to_vec_pretty(&summary).expect("serializes")
}

/// Pod `i` of a synthetic node: template `i` (cycling), its name made unique and
/// its namespace set to [`namespace`]`(i)`, both under `reference` (`metadata` of a
/// `/pods` item, `podRef` of a `/stats/summary` pod).
fn clone_pod(templates: &[Value], i: usize, reference: &str) -> Value {
    let mut pod = templates[i % templates.len()].clone();
    let name = format!("{}-{i}", pod[reference]["name"].as_str().unwrap_or("pod"));
    pod[reference]["name"] = json!(name);
    pod[reference]["namespace"] = json!(namespace(i));
    pod
}
