//! A virtual cluster's view of a series: only the series of the host pods its
//! syncer made, under the names the virtual cluster knows them by.
//!
//! A series is kept when its `namespace` and `pod` (`pod_name` on kubelets before
//! 1.16) name a host pod of the scope's virtual cluster
//! ([`RequestScope::virtual_pod`]); then its label set is written anew:
//!
//! | label | becomes |
//! |---|---|
//! | `namespace` | the virtual namespace |
//! | `pod`, `pod_name` | the virtual pod name |
//! | `uid`, `pod_uid` | the virtual UID, where it is the host pod's UID |
//! | `id` (the cgroup path) | the host UID in it, as `…pod<uid>…` (cgroupfs) or with `_` for `-` (systemd), replaced by the virtual UID |
//! | `name` (the runtime's container name) | dockershim's `k8s_<container>_<pod>_<namespace>_<uid>_<n>` with the virtual pod, namespace and UID; a containerd ID stays |
//!
//! and the host namespace's labels are injected, as for a host tenant (a virtual
//! namespace's own labels are not known here). Any other namespaced series (a pod
//! of another cluster, of the host, one not in the map yet, or a series that names
//! a namespace but no pod, such as a PVC's volume stats) is dropped: nothing is
//! shown that cannot be translated. Series without a namespace follow
//! `nonNamespacedSeries` / `emptyNamespaceSeries` as for any tenant, untouched
//! (an exemplar of theirs that names a namespace goes, as for any tenant). A
//! translated series loses its exemplar (it would hold host names too).
//!
//! This path is out of line: `series` comes here only for what a virtual cluster's
//! scope hides as a namespace (every namespaced series), so no other scope pays
//! for it; the label set is rebuilt whole, items rejoined with plain `,`.

use super::labelset::{for_each_item, LabelSet};
use super::metadata::FamilyState;
use super::{Edit, State};
use crate::body::BodyError;
use crate::config::OnConflict;
use crate::snapshot::catalog::{NamespaceEntry, Needle, RequestScope, VirtualPodEntry, Visibility};

impl State {
    /// A virtual cluster's decision for the series `line` (checked already); `set`
    /// its label set, `exemplar` where its exemplar starts, `name` its metric name.
    #[cold]
    #[inline(never)]
    pub(super) fn virtual_series<'s>(
        &mut self,
        scope: &'s RequestScope,
        line: &[u8],
        set: Option<&LabelSet>,
        exemplar: Option<usize>,
        name: &[u8],
    ) -> Result<Edit<'s>, BodyError> {
        let namespace = set.and_then(|s| s.namespace.clone()).map(|r| &line[r]);
        let pod = set.and_then(|s| pod_of(line, s));
        let kept = match (namespace, pod, set) {
            (Some(ns), Some(pod), Some(set)) if !ns.is_empty() => {
                scope.virtual_pod(ns, pod).map(|vp| (set, (ns, pod), vp))
            }
            // No pod to translate: only a series of no namespace may stay, untouched.
            (Some(ns), None, _) if !ns.is_empty() => None,
            (ns, None, _) => {
                if scope.visibility(ns) == Visibility::Hidden {
                    None
                } else {
                    self.keep_virtual(name);
                    return Ok(self.without_exemplar_of(line, exemplar));
                }
            }
            _ => None,
        };
        let Some((set, host, vp)) = kept else {
            self.counters.dropped += 1;
            return Ok(Edit::Drop);
        };
        self.keep_virtual(name);
        let entry = scope.catalog().namespace(host.0);
        let injection = scope.catalog().injection().filter(|_| entry.is_some());
        let on_conflict = injection.map_or(OnConflict::Keep, |i| i.on_conflict);
        let entry = entry.filter(|_| injection.is_some());
        if entry.is_some_and(|e| !e.suffix.is_empty()) {
            self.counters.injected += 1;
        }
        let end = line.len() - usize::from(line.ends_with(b"\r"));
        let out = &mut self.replacement;
        out.clear();
        translate(line, set, vp, entry, on_conflict, out);
        out.extend_from_slice(&line[set.close + 1..exemplar.map_or(end, |e| trim_end(line, e))]);
        Ok(Edit::Replace(end))
    }

    fn keep_virtual(&mut self, name: &[u8]) {
        self.counters.kept += 1;
        if self.family_state == FamilyState::Held {
            self.family_kept(name);
        }
    }

    /// A kept line as it is, but for its exemplar.
    fn without_exemplar_of<'s>(&mut self, line: &[u8], exemplar: Option<usize>) -> Edit<'s> {
        let Some(hash) = exemplar else {
            return Edit::Keep;
        };
        let end = line.len() - usize::from(line.ends_with(b"\r"));
        self.replacement.clear();
        self.replacement
            .extend_from_slice(&line[..trim_end(line, hash)]);
        Edit::Replace(end)
    }
}

/// `at`, moved back over the blanks before it.
fn trim_end(line: &[u8], mut at: usize) -> usize {
    while at > 0 && matches!(line[at - 1], b' ' | b'\t') {
        at -= 1;
    }
    at
}

/// The raw value of the series' `pod` label, else of its `pod_name`.
fn pod_of<'l>(line: &'l [u8], set: &LabelSet) -> Option<&'l [u8]> {
    let mut pod = None;
    let mut pod_name = None;
    // The label set parsed once already, so this cannot fail.
    let _ = for_each_item(line, set.open, |item| {
        if let Some(value) = item.value {
            match &line[item.name] {
                b"pod" => pod = Some(value),
                b"pod_name" => pod_name = Some(value),
                _ => {}
            }
        }
        Ok(())
    });
    pod.or(pod_name).map(|r| &line[r])
}

/// Writes `line` up to and with its label set, the labels of the host pod
/// translated for `vp` and `entry`'s labels injected
/// (`on_conflict` as for a host tenant). One walk over the items, written as they
/// come; only a label set with a name an injection writes (`set.conflict`, rare)
/// collects its names first, to rename as Prometheus does.
fn translate(
    line: &[u8],
    set: &LabelSet,
    vp: &VirtualPodEntry,
    entry: Option<&NamespaceEntry>,
    on_conflict: OnConflict,
    out: &mut Vec<u8>,
) {
    let injected = entry.map_or(&[][..], |e| &e.labels[..]);
    let mut names: Vec<&[u8]> = Vec::new();
    if set.conflict && !injected.is_empty() {
        let _ = for_each_item(line, set.open, |item| {
            if item.value.is_some() {
                names.push(&line[item.name]);
            }
            Ok(())
        });
    }
    let mut skipped: Vec<&[u8]> = Vec::new();
    out.extend_from_slice(&line[..=set.open]);
    let mut written = 0;
    // The label set parsed once already, so this cannot fail.
    let _ = for_each_item(line, set.open, |item| {
        let name = &line[item.name.clone()];
        let Some(value) = item.value else {
            comma(out, &mut written);
            out.extend_from_slice(&line[item.whole]);
            return Ok(());
        };
        let mut prefix = 0;
        if set.conflict && injected.iter().any(|l| *l.name == *name) {
            match on_conflict {
                OnConflict::Overwrite => return Ok(()),
                OnConflict::Keep => skipped.push(name),
                OnConflict::Exported => {
                    let mut renamed = name.to_vec();
                    while names.contains(&&renamed[..]) {
                        renamed.splice(0..0, b"exported_".iter().copied());
                        prefix += 1;
                    }
                }
            }
        }
        comma(out, &mut written);
        // A quoted name (UTF-8 form) keeps its quotes and blanks around `=`.
        let quoted = item.name.start > item.whole.start;
        if quoted {
            out.extend_from_slice(&line[item.whole.start..item.name.start]);
        }
        for _ in 0..prefix {
            out.extend_from_slice(b"exported_");
        }
        out.extend_from_slice(name);
        if quoted {
            out.extend_from_slice(&line[item.name.end..value.start - 1]);
        } else {
            out.push(b'=');
        }
        out.push(b'"');
        translated_value(name, &line[value], vp, out);
        out.push(b'"');
        Ok(())
    });
    for label in injected.iter().filter(|l| !skipped.contains(&&*l.name)) {
        comma(out, &mut written);
        out.extend_from_slice(&label.rendered);
    }
    out.push(b'}');
}

fn comma(out: &mut Vec<u8>, written: &mut usize) {
    if *written > 0 {
        out.push(b',');
    }
    *written += 1;
}

/// The raw (escaped) value of label `name`, as the virtual cluster is to see it.
fn translated_value(name: &[u8], raw: &[u8], vp: &VirtualPodEntry, out: &mut Vec<u8>) {
    match name {
        b"namespace" => out.extend_from_slice(&vp.label_namespace),
        b"pod" | b"pod_name" => out.extend_from_slice(&vp.label_name),
        b"uid" | b"pod_uid" if raw == &*vp.host_uid => out.extend_from_slice(&vp.label_uid),
        b"id" if vp.host_uid_needle.finder.find(raw).is_some() => {
            replace_into(raw, &vp.host_uid_needle, &vp.uid, out);
        }
        b"id" => replace_into(raw, &vp.uid_systemd_needle, &vp.uid_systemd, out),
        // dockershim: k8s_<container>_<pod>_<namespace>_<uid>_<attempt>
        b"name" if raw.starts_with(b"k8s_") => {
            replace_into(raw, &vp.docker_needle, &vp.docker_virtual, out);
        }
        _ => out.extend_from_slice(raw),
    }
}

/// `haystack` with every `needle` replaced by `to`, into `out`.
fn replace_into(haystack: &[u8], needle: &Needle, to: &[u8], out: &mut Vec<u8>) {
    let len = needle.finder.needle().len();
    let mut from = 0;
    for at in needle.finder.find_iter(haystack) {
        if at < from || len == 0 {
            continue;
        }
        out.extend_from_slice(&haystack[from..at]);
        out.extend_from_slice(to);
        from = at + len;
    }
    out.extend_from_slice(&haystack[from..]);
}

#[cfg(test)]
mod tests {
    use crate::prometheus::testing::{rewrite, virtual_scope};

    const TENANCY: &str = r#"{"tenancy":{"tenant":{"header":"t"},"namespaceLabel":"tenant"},
        "inject":{"labels":{"team":"team"}},"snapshot":{"cluster":"cp"}}"#;
    const H1: &str = "9999eeee-0000-0000-0000-00000000h001";
    const V1: &str = "1111aaaa-0000-0000-0000-00000000v001";

    #[test]
    fn a_virtual_cluster_sees_its_pods_under_their_virtual_names() {
        let body = format!(
            "# HELP container_cpu_usage_seconds_total Cumulative cpu time consumed\n\
             # TYPE container_cpu_usage_seconds_total counter\n\
             container_cpu_usage_seconds_total{{container=\"web\",id=\"/kubepods/burstable/pod{H1}/abc\",image=\"busybox\",name=\"abc\",namespace=\"vcluster-k8s1\",pod=\"web-1-x-shop-x-k8s1\"}} 1.5 1700000000000\n\
             container_cpu_usage_seconds_total{{container=\"web\",namespace=\"vcluster-k8s2\",pod=\"web-1-x-shop-x-k8s2\"}} 2\n\
             container_cpu_usage_seconds_total{{container=\"web\",namespace=\"shop\",pod=\"web-1-x-shop-x-k8s1\"}} 3\n\
             container_cpu_usage_seconds_total{{container=\"x\",namespace=\"vcluster-k8s1\",pod=\"not-synced-yet\"}} 4\n\
             container_cpu_usage_seconds_total{{id=\"/\"}} 5\n\
             # HELP kubelet_volume_stats_used_bytes Number of used bytes in the volume\n\
             # TYPE kubelet_volume_stats_used_bytes gauge\n\
             kubelet_volume_stats_used_bytes{{namespace=\"vcluster-k8s1\",persistentvolumeclaim=\"data-x-data-x-k8s1\"}} 6\n"
        );
        let out = rewrite(&virtual_scope(TENANCY, "k8s1"), &body).unwrap();
        assert_eq!(
            out,
            format!(
                "# HELP container_cpu_usage_seconds_total Cumulative cpu time consumed\n\
                 # TYPE container_cpu_usage_seconds_total counter\n\
                 container_cpu_usage_seconds_total{{container=\"web\",id=\"/kubepods/burstable/pod{V1}/abc\",image=\"busybox\",name=\"abc\",namespace=\"shop\",pod=\"web-1\",team=\"vc-one\"}} 1.5 1700000000000\n\
                 container_cpu_usage_seconds_total{{id=\"/\"}} 5\n"
            )
        );
        // The other virtual cluster sees its own pod only.
        let out = rewrite(&virtual_scope(TENANCY, "k8s2"), &body).unwrap();
        assert!(
            out.contains(r#"namespace="shop",pod="web-1",team="vc-two"} 2"#),
            "{out}"
        );
        assert_eq!(
            out.matches("container_cpu_usage_seconds_total{").count(),
            2,
            "{out}"
        );
        assert!(!out.contains("k8s1") && !out.contains("vcluster-"), "{out}");
        // A cluster with no pod here sees no pod's series.
        let out = rewrite(&virtual_scope(TENANCY, "k8s9"), &body).unwrap();
        assert!(!out.contains("namespace="), "{out}");
    }

    #[test]
    fn every_label_that_names_the_host_pod_is_translated() {
        let systemd_host = H1.replace('-', "_");
        let systemd_virtual = V1.replace('-', "_");
        let body = format!(
            "m{{pod_name=\"web-1-x-shop-x-k8s1\",namespace=\"vcluster-k8s1\",pod_uid=\"{H1}\",uid=\"other\",\
             id=\"/kubepods.slice/kubepods-pod{systemd_host}.slice/cri-containerd-1.scope\",\
             name=\"k8s_web_web-1-x-shop-x-k8s1_vcluster-k8s1_{H1}_0\"}} 1\n"
        );
        let out = rewrite(&virtual_scope(TENANCY, "k8s1"), &body).unwrap();
        assert_eq!(
            out,
            format!(
                "m{{pod_name=\"web-1\",namespace=\"shop\",pod_uid=\"{V1}\",uid=\"other\",\
                 id=\"/kubepods.slice/kubepods-pod{systemd_virtual}.slice/cri-containerd-1.scope\",\
                 name=\"k8s_web_web-1_shop_{V1}_0\",team=\"vc-one\"}} 1\n"
            )
        );
    }

    #[test]
    fn conflicts_exemplars_and_odd_spellings() {
        let scope = virtual_scope(TENANCY, "k8s1");
        // A scraped `team` is renamed as for a host tenant; blanks and a trailing
        // comma go; the exemplar goes; a `\r` stays. A node series keeps an exemplar
        // that names no namespace, and loses one that does.
        let body = "m{ team=\"x\" , namespace=\"vcluster-k8s1\", pod=\"web-1-x-shop-x-k8s1\", } 1 # {namespace=\"vcluster-k8s1\"} 1\r\nn 2 # {a=\"b\"} 1\nn 3 # {namespace=\"shop\"} 1\n";
        assert_eq!(
            rewrite(&scope, body).unwrap(),
            "m{exported_team=\"x\",namespace=\"shop\",pod=\"web-1\",team=\"vc-one\"} 1\r\nn 2 # {a=\"b\"} 1\nn 3\n"
        );
        // The UTF-8 form's quoted names.
        let body = "{\"m.x\",\"namespace\"=\"vcluster-k8s1\",\"pod\"=\"db-0-x-data-x-k8s1\"} 1\n";
        assert_eq!(
            rewrite(&scope, body).unwrap(),
            "{\"m.x\",\"namespace\"=\"data\",\"pod\"=\"db-0\",team=\"vc-one\"} 1\n"
        );
        // An empty namespace (a system cgroup) follows emptyNamespaceSeries: dropped.
        assert_eq!(
            rewrite(&scope, "m{namespace=\"\",id=\"/system.slice\"} 1\n").unwrap(),
            ""
        );
    }
}
