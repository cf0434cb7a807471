//! What is done to one series line: find its metric name and label set, check in
//! tenant mode that it is a series a scraper reads as we did, look up its
//! namespace, then drop it, keep it, insert its namespace's labels, or [`rebuild`]
//! a label set whose names collide with them.
//!
//! It does not parse the label-set grammar (`labelset`), hold metadata
//! (`metadata`), or find lines and copy runs (`mod.rs`); apart from [`rebuild`] it
//! writes no output, it only returns the line's [`Edit`].

use memchr::memchr3;

use super::labelset::{for_each_item, parse_label_set, skip_whitespace, LabelSet};
use super::metadata::FamilyState;
use super::{Edit, State};
use crate::body::BodyError;
use crate::config::OnConflict;
use crate::scan::{is_sample_byte, same_bytes, skip_label_name, skip_sample_bytes};
use crate::snapshot::catalog::{EntryId, NamespaceEntry, RequestScope, Visibility};

impl State {
    /// Decides what to do with the series `line` whose name starts at
    /// `name_start`.
    ///
    /// This is the per-line hot path. The parts split out of it are
    /// `#[inline(always)]` and compile as they did inline; the name scan and the
    /// injection at the end stay here because, split out, they did not (the
    /// name's end tests came out reordered, the label set was moved through an
    /// argument).
    pub(super) fn series<'s>(
        &mut self,
        scope: &'s RequestScope,
        line: &[u8],
        name_start: usize,
    ) -> Result<Edit<'s>, BodyError> {
        self.counters.seen += 1;
        // A name ends at its label set or at the blank before the value. Nearly
        // every name is classic (`[a-zA-Z_:][a-zA-Z0-9_:]*`), so one table scan
        // both finds its end and validates it; any other byte (a `-`, UTF-8, …)
        // sends the line to the search a lenient parser would do.
        let scanned = skip_label_name(line, name_start);
        let classic_end = matches!(line.get(scanned), None | Some(b'{' | b' ' | b'\t'));
        let name_end = if classic_end {
            scanned
        } else {
            name_start
                + memchr3(b'{', b' ', b'\t', &line[name_start..]).unwrap_or(line.len() - name_start)
        };
        let brace = skip_whitespace(line, name_end);
        let injection = scope.catalog().injection();
        let set = if line.get(brace) == Some(&b'{') {
            let injected = injection.map_or(&[][..], |i| &i.names[..]);
            match parse_label_set(line, brace, injected) {
                Ok(set) => Some(set),
                Err(why) => return self.unparsable(why),
            }
        } else {
            None
        };
        let mut exemplar = None;
        if self.filtering {
            match sample_tail(line, name_start, name_end, classic_end, brace, set.as_ref()) {
                Ok(hash) => exemplar = hash,
                Err(why) => return Err(self.cannot_parse(why)),
            }
        }

        let namespace = set
            .as_ref()
            .and_then(|s| s.namespace.clone())
            .map(|r| &line[r]);
        let (visibility, entry) = self.lookup(scope, namespace);
        if visibility == Visibility::Hidden {
            // A virtual cluster sees no namespace as such: its pods' series are
            // hidden here and translated there (off the path of every other scope).
            if scope.is_virtual() {
                let name = match set.as_ref().and_then(|s| s.quoted_name.clone()) {
                    Some(quoted) => &line[quoted],
                    None => &line[name_start..name_end],
                };
                return self.virtual_series(scope, line, set.as_ref(), exemplar, name);
            }
            self.counters.dropped += 1;
            return Ok(Edit::Drop);
        }
        self.counters.kept += 1;
        if self.family_state == FamilyState::Held {
            let name = match set.as_ref().and_then(|s| s.quoted_name.clone()) {
                Some(quoted) => &line[quoted],
                None => &line[name_start..name_end],
            };
            self.family_kept(name);
        }
        let entry = entry.and_then(|id| scope.catalog().entry(id));
        if let Some(hash) = exemplar {
            if let Some(cut) = self.foreign_exemplar(scope, line, hash)? {
                let out = &mut self.replacement;
                return Ok(without_exemplar(
                    line,
                    cut,
                    set.as_ref(),
                    entry,
                    injection,
                    out,
                ));
            }
        }
        let (Some(set), Some(entry), Some(injection)) = (set, entry, injection) else {
            return Ok(Edit::Keep);
        };
        if entry.suffix.is_empty() {
            return Ok(Edit::Keep);
        }
        self.counters.injected += 1;
        if set.conflict {
            return Ok(Edit::Rebuild(set, entry, injection.on_conflict));
        }
        Ok(Edit::Insert(set.insert_at, &entry.suffix))
    }

    /// A label set that does not parse (`why` says how).
    #[inline(always)]
    fn unparsable(&mut self, why: &str) -> Result<Edit<'static>, BodyError> {
        if self.filtering {
            return Err(self.cannot_parse(why));
        }
        // Injection-only fails open: an unparsable line passes unchanged.
        self.counters.kept += 1;
        Ok(Edit::Keep)
    }

    /// Tenant mode's error for a line that is not a series it can read.
    #[inline(always)]
    fn cannot_parse(&self, why: &str) -> BodyError {
        BodyError(format!(
            "line {}: cannot parse series: {why}",
            self.line_number
        ))
    }

    /// Tenant mode: where to cut `line` (before the blanks ahead of its `#`)
    /// when its OpenMetrics exemplar, at `hash`, names a namespace the tenant may
    /// not see; the sample stays. An exemplar without `namespace` stays.
    /// Out of line: exemplars are rare in kubelet bodies, and inlined this would
    /// weigh on every series.
    #[cold]
    #[inline(never)]
    fn foreign_exemplar(
        &self,
        scope: &RequestScope,
        line: &[u8],
        hash: usize,
    ) -> Result<Option<usize>, BodyError> {
        let brace = skip_whitespace(line, hash + 1);
        if line.get(brace) != Some(&b'{') {
            return Err(self.cannot_parse("an exemplar must start with '{'"));
        }
        let labels = match parse_label_set(line, brace, &[]) {
            Ok(labels) => labels,
            Err(why) => return Err(self.cannot_parse(why)),
        };
        let foreign = labels
            .namespace
            .is_some_and(|ns| scope.visibility(Some(&line[ns])) == Visibility::Hidden);
        if !foreign {
            return Ok(None);
        }
        let mut cut = hash;
        while cut > 0 && matches!(line[cut - 1], b' ' | b'\t') {
            cut -= 1;
        }
        Ok(Some(cut))
    }

    /// [`RequestScope::lookup`], answered from the last lookup when the series
    /// names the same namespace.
    fn lookup(
        &mut self,
        scope: &RequestScope,
        namespace: Option<&[u8]>,
    ) -> (Visibility, Option<EntryId>) {
        let Some(namespace) = namespace else {
            return scope.lookup(None);
        };
        if let Some(last) = self.last_lookup {
            if same_bytes(namespace, &self.last_namespace) {
                return last;
            }
        }
        let found = scope.lookup(Some(namespace));
        self.last_namespace.clear();
        self.last_namespace.extend_from_slice(namespace);
        self.last_lookup = Some(found);
        found
    }
}

/// Tenant mode: why `line` is not a series a scraper reads as we did (`Err`), or
/// where its exemplar's `#` is, if it has one. What is kept must be such a series:
/// a line that is not (say, a stray byte before a tab, so its label set was never
/// parsed) could show another tenant's labels to a lenient parser.
#[inline(always)]
fn sample_tail(
    line: &[u8],
    name_start: usize,
    name_end: usize,
    classic_end: bool,
    brace: usize,
    set: Option<&LabelSet>,
) -> Result<Option<usize>, &'static str> {
    let tail = set.map_or(name_end, |s| s.close + 1);
    let named = (classic_end && is_metric_name_start(line, name_start, name_end))
        || (name_start == brace && set.is_some_and(|s| s.quoted_name.is_some()));
    match is_sample_tail(line, tail, set.is_some()) {
        Some(end) if named => Ok((end < line.len()).then_some(end)),
        _ if named => Err("unexpected bytes after the labels"),
        _ => Err("invalid metric name"),
    }
}

/// The line cut at `cut` (its exemplar removed), with `entry`'s labels injected
/// as [`State::series`] would have; the line's `\r`, if any, stays.
#[cold]
fn without_exemplar<'e>(
    line: &[u8],
    cut: usize,
    set: Option<&LabelSet>,
    entry: Option<&NamespaceEntry>,
    injection: Option<&crate::snapshot::catalog::InjectionRules>,
    out: &mut Vec<u8>,
) -> Edit<'e> {
    let end = line.len() - usize::from(line.ends_with(b"\r"));
    out.clear();
    match (set, entry.filter(|e| !e.suffix.is_empty()), injection) {
        (Some(set), Some(entry), Some(injection)) if set.conflict => {
            rebuild(&line[..cut], set, entry, injection.on_conflict, out);
        }
        (Some(set), Some(entry), Some(_)) => {
            out.extend_from_slice(&line[..set.insert_at]);
            out.extend_from_slice(&entry.suffix);
            out.extend_from_slice(&line[set.insert_at..cut]);
        }
        _ => out.extend_from_slice(&line[..cut]),
    }
    Edit::Replace(end)
}

/// Whether the label-name bytes `line[start..end]` (as [`skip_label_name`] found
/// them) are a classic metric name: not empty, not starting with a digit.
fn is_metric_name_start(line: &[u8], start: usize, end: usize) -> bool {
    end > start && !line[start].is_ascii_digit()
}

/// What may follow a series' name and labels: blanks, then a value and an optional
/// timestamp, then optionally an OpenMetrics exemplar from ` # ` on. (`#` is not a
/// sample byte, so the first byte that is not must be the exemplar's.) After a
/// label set the blank is optional, as in Prometheus' parser (`m{a="b"}-Inf`);
/// after a bare name it separates the name from the value.
///
/// Returns the end of the value and timestamp (the exemplar's `#`, or the line's
/// end), or `None` when the tail is not a sample's.
fn is_sample_tail(line: &[u8], tail: usize, after_labels: bool) -> Option<usize> {
    let starts = match line.get(tail) {
        Some(b' ' | b'\t') => true,
        Some(&b) => after_labels && is_sample_byte(b) && b != b'\r',
        None => false,
    };
    let end = skip_sample_bytes(line, tail);
    (starts && line.get(end).is_none_or(|&b| b == b'#')).then_some(end)
}

/// Writes `line` (with its newline, if any) with the label set rebuilt so that no
/// label name appears twice after injecting `entry`'s labels. Only series whose
/// scraped labels collide with injected ones come here; their items are rejoined
/// with plain `,` (blanks around items are not kept).
pub(super) fn rebuild(
    line: &[u8],
    set: &LabelSet,
    entry: &NamespaceEntry,
    on_conflict: OnConflict,
    out: &mut Vec<u8>,
) {
    let mut items = Vec::new();
    // The label set parsed once already, so this cannot fail.
    let _ = for_each_item(line, set.open, |item| {
        items.push(item);
        Ok(())
    });
    let existing = |name: &[u8]| {
        items
            .iter()
            .any(|i| i.value.is_some() && &line[i.name.clone()] == name)
    };
    let mut skipped = Vec::new();
    out.extend_from_slice(&line[..=set.open]);
    let mut written = 0;
    for item in &items {
        let name = &line[item.name.clone()];
        let injected = item.value.is_some() && entry.labels.iter().any(|l| *l.name == *name);
        if injected && on_conflict == OnConflict::Overwrite {
            continue;
        }
        if written > 0 {
            out.push(b',');
        }
        written += 1;
        if !injected {
            out.extend_from_slice(&line[item.whole.clone()]);
            continue;
        }
        match on_conflict {
            OnConflict::Keep => {
                skipped.push(name);
                out.extend_from_slice(&line[item.whole.clone()]);
            }
            // Prometheus' rule: prefix `exported_` until the name is free.
            _ => {
                let mut renamed = name.to_vec();
                while existing(&renamed) {
                    renamed.splice(0..0, b"exported_".iter().copied());
                }
                out.extend_from_slice(&line[item.whole.start..item.name.start]);
                out.extend_from_slice(&renamed);
                out.extend_from_slice(&line[item.name.end..item.whole.end]);
            }
        }
    }
    for label in entry.labels.iter().filter(|l| !skipped.contains(&&*l.name)) {
        if written > 0 {
            out.push(b',');
        }
        written += 1;
        out.extend_from_slice(&label.rendered);
    }
    out.extend_from_slice(&line[set.close..]);
}

#[cfg(test)]
mod tests {
    use crate::prometheus::testing::{inject, rewrite, scope, tenant};
    use crate::prometheus::Rewriter;

    #[test]
    fn injects_after_the_last_label() {
        let s = inject("exported");
        assert_eq!(
            rewrite(&s, "m{namespace=\"shop\",pod=\"a\"} 1\n").unwrap(),
            "m{namespace=\"shop\",pod=\"a\",team=\"front\\\"end\"} 1\n"
        );
        // Unknown namespace, no namespace, empty label set: untouched.
        for line in [
            "m{namespace=\"nope\"} 1\n",
            "m 1\n",
            "m{} 1\n",
            "m{a=\"b\"} 1 123\n",
        ] {
            assert_eq!(rewrite(&s, line).unwrap(), line);
        }
        // Namespaces mapped but without the label are not touched either.
        assert_eq!(
            rewrite(&s, "m{namespace=\"db\"} 1\n").unwrap(),
            "m{namespace=\"db\"} 1\n"
        );
    }

    #[test]
    fn conflicts_never_duplicate_a_label() {
        let line = "m{team=\"old\",namespace=\"bank\",exported_team=\"x\"} 1\n";
        assert_eq!(
            rewrite(&inject("exported"), line).unwrap(),
            "m{exported_exported_team=\"old\",namespace=\"bank\",exported_team=\"x\",team=\"money\"} 1\n"
        );
        let line = "m{team=\"old\",namespace=\"bank\"} 1\n";
        assert_eq!(
            rewrite(&inject("exported"), line).unwrap(),
            "m{exported_team=\"old\",namespace=\"bank\",team=\"money\"} 1\n"
        );
        assert_eq!(rewrite(&inject("keep"), line).unwrap(), line);
        assert_eq!(
            rewrite(&inject("overwrite"), line).unwrap(),
            "m{namespace=\"bank\",team=\"money\"} 1\n"
        );
        // Quoted conflicting name keeps its quotes.
        assert_eq!(
            rewrite(
                &inject("exported"),
                "m{\"team\"=\"old\",namespace=\"bank\"} 1\n"
            )
            .unwrap(),
            "m{\"exported_team\"=\"old\",namespace=\"bank\",team=\"money\"} 1\n"
        );
        // A conflicting name on a series of a namespace without labels: untouched.
        let line = "m{team=\"old\",namespace=\"db\"} 1\n";
        assert_eq!(rewrite(&inject("exported"), line).unwrap(), line);
    }

    #[test]
    fn tenant_sees_only_its_namespaces() {
        let body =
            "# HELP a A.\n# TYPE a gauge\na{namespace=\"shop\"} 1\na{namespace=\"bank\"} 2\n\
                    a{namespace=\"\"} 3\na 4\n\
                    # HELP b B.\n# TYPE b counter\nb_total{namespace=\"bank\"} 5\n\
                    # HELP c C.\n# TYPE c histogram\nc_bucket{namespace=\"bank\",le=\"1\"} 1\n\
                    c_bucket{namespace=\"db\",le=\"1\"} 1\nc_sum{namespace=\"db\"} 1\n# EOF\n";
        assert_eq!(
            rewrite(&tenant(""), body).unwrap(),
            "# HELP a A.\n# TYPE a gauge\na{namespace=\"shop\"} 1\na 4\n\
             # HELP c C.\n# TYPE c histogram\nc_bucket{namespace=\"db\",le=\"1\"} 1\nc_sum{namespace=\"db\"} 1\n# EOF\n"
        );
        let strict = tenant(r#","nonNamespacedSeries":"drop","emptyNamespaceSeries":"keep""#);
        assert_eq!(
            rewrite(&strict, "a{namespace=\"\"} 3\na 4\nb{namespace=\"x\"} 1\n").unwrap(),
            "a{namespace=\"\"} 3\n"
        );
    }

    #[test]
    fn filtering_and_injection_together() {
        let s = scope(
            r#"{"inject":{"labels":{"team":"team"}},
                "tenancy":{"tenant":{"static":"acme"},"namespaceLabel":"tenant"},
                "snapshot":{"cluster":"cp"}}"#,
            Some("acme"),
        );
        assert_eq!(
            rewrite(&s, "m{namespace=\"shop\"} 1\nm{namespace=\"bank\"} 1\n").unwrap(),
            "m{namespace=\"shop\",team=\"front\\\"end\"} 1\n"
        );
        let mut r = Rewriter::new(s);
        let mut out = Vec::new();
        r.feed(
            b"m{namespace=\"shop\"} 1\nm{namespace=\"bank\"} 1\nm 1\n",
            &mut out,
        )
        .unwrap();
        let c = r.counters();
        assert_eq!((c.seen, c.kept, c.dropped, c.injected), (3, 2, 1, 1));
    }

    #[test]
    fn malformed_series_fail_closed_when_filtering_and_pass_when_injecting() {
        for bad in [
            "m{namespace=\"shop\" 1\n",
            "m{namespace=shop} 1\n",
            "m{namespace=\"sh\\\"} 1\n",
            "m{=\"x\"} 1\n",
            "m{namespace=\"shop\",namespace=\"bank\"} 1\n",
            "m{a=\"b\" c=\"d\"} 1\n",
            "m{\"x\",\"y\"} 1\n",
        ] {
            let err = rewrite(&tenant(""), bad).unwrap_err();
            assert!(
                err.0.starts_with("line 1: cannot parse series"),
                "{bad}: {err}"
            );
            assert_eq!(rewrite(&inject("exported"), bad).unwrap(), bad);
        }
        let err = rewrite(&tenant(""), "ok 1\nm{a=\"b\"\n").unwrap_err();
        assert!(err.0.starts_with("line 2:"), "{err}");
    }

    #[test]
    fn lines_that_are_not_series_fail_closed_when_filtering() {
        for bad in [
            "\0\tm{exported_namespace=\"bank\",namespace=\"bank\"} 2 1700000000\n",
            "m x{namespace=\"bank\"} 1\n",
            "m{namespace=\"shop\"} 1 {namespace=\"bank\"}\n",
            "{namespace=\"shop\"} 1\n",
            "9m 1\n",
            "m{namespace=\"shop\"}\n",
            "m{namespace=\"shop\"}#1\n",
            "m-x{namespace=\"shop\"} 1\n",
            "m\u{e9}{namespace=\"shop\"} 1\n",
            "m{namespace=\"shop\"} 1 x\u{e9}\n",
        ] {
            let err = rewrite(&tenant(""), bad).unwrap_err();
            assert!(
                err.0.starts_with("line 1: cannot parse series"),
                "{bad:?}: {err}"
            );
            // Injection-only does not validate what it does not rewrite.
            assert!(rewrite(&inject("exported"), bad).is_ok());
        }
        // A name outside the classic syntax still ends at its label set when only
        // injecting, as a lenient scraper reads it.
        assert_eq!(
            rewrite(&inject("exported"), "m-x{namespace=\"shop\"} 1\n").unwrap(),
            rewrite(&inject("exported"), "mx{namespace=\"shop\"} 1\n")
                .unwrap()
                .replacen("mx", "m-x", 1),
        );
        for good in [
            "m 1\n",
            "m{namespace=\"shop\"}1\n",
            "m_total{namespace=\"shop\"} -1.5e-3 17\r\n",
            "m NaN\n",
            "m{} +Inf\n",
            "m:x_1{namespace=\"shop\"} 1 # {trace_id=\"\u{e9}\"} 2\n",
            "m\t1\n",
        ] {
            assert_eq!(rewrite(&tenant(""), good).unwrap(), good);
        }
    }
}
