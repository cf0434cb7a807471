//! The label set of a series line, `{name="value",…}`: the grammar, and what the
//! rewriter needs to know of it ([`LabelSet`]): where it opens and closes, where
//! injected labels go, the raw value of `namespace`, the quoted metric name of the
//! UTF-8 form, and whether a scraped name is one an injection may write.
//!
//! It only reads the line: it writes no output and decides nothing about the
//! series (that is `series`). Values are left escaped.

use std::ops::Range;

use crate::scan::{find_quote_or_backslash, skip_label_name};

/// Where the parts of a label set are, as offsets into the line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct LabelSet {
    /// The `{`.
    pub(super) open: usize,
    /// The `}`.
    pub(super) close: usize,
    /// Just after the last item: where injected labels go (a trailing comma and
    /// blanks stay after them).
    pub(super) insert_at: usize,
    /// The raw value of the `namespace` label.
    pub(super) namespace: Option<Range<usize>>,
    /// The metric name of the UTF-8 form `{"metric.name", …}`.
    pub(super) quoted_name: Option<Range<usize>>,
    /// Some scraped label has a name an injection may write.
    pub(super) conflict: bool,
}

pub(super) fn skip_whitespace(line: &[u8], mut i: usize) -> usize {
    while matches!(line.get(i), Some(b' ' | b'\t')) {
        i += 1;
    }
    i
}

/// Index of the closing quote of a quoted string whose content starts at `from`,
/// honouring `\` escapes.
pub(super) fn end_of_quoted(bytes: &[u8], mut from: usize) -> Option<usize> {
    loop {
        let at = find_quote_or_backslash(bytes, from);
        if *bytes.get(at)? == b'"' {
            return Some(at);
        }
        from = at + 2;
    }
}

/// One item of a label set.
pub(super) struct Item {
    /// The name, without quotes.
    pub(super) name: Range<usize>,
    /// From the first byte of the name (or its opening quote) to the end of the
    /// value's closing quote (or of the quoted metric name).
    pub(super) whole: Range<usize>,
    /// The raw (still escaped) value; `None` for the quoted metric name of the
    /// UTF-8 form `{"metric.name", …}`.
    pub(super) value: Option<Range<usize>>,
}

/// Walks the items of the label set whose `{` is at `open`, calling `visit` for
/// each; returns the offset of the closing `}`.
///
/// Grammar (Prometheus text 0.0.4, OpenMetrics 1.0, and the quoted names of the
/// UTF-8 extension): `{ [ item { , item } [ , ] ] }` (EBNF) with optional blanks
/// around tokens, where item is `name = "value"` and name is either bare
/// `[a-zA-Z0-9_:]+` or a quoted string; one item, anywhere in the set, may be a
/// lone quoted metric name (Prometheus' parser takes `{a="b","m.x"}` as well as
/// `{"m.x",a="b"}`).
pub(super) fn for_each_item(
    line: &[u8],
    open: usize,
    mut visit: impl FnMut(Item) -> Result<(), &'static str>,
) -> Result<usize, &'static str> {
    let mut i = open + 1;
    let mut named = false;
    loop {
        i = skip_whitespace(line, i);
        let start = i;
        let (name, after_name, quoted) = match line.get(i) {
            Some(b'}') => return Ok(i),
            None => return Err("unterminated label set"),
            Some(b'"') => {
                let end = end_of_quoted(line, i + 1).ok_or("unterminated quoted label name")?;
                (i + 1..end, end + 1, true)
            }
            Some(_) => {
                i = skip_label_name(line, i);
                if i == start {
                    return Err("expected a label name");
                }
                (start..i, i, false)
            }
        };
        i = skip_whitespace(line, after_name);
        let item = if line.get(i) == Some(&b'=') {
            i = skip_whitespace(line, i + 1);
            if line.get(i) != Some(&b'"') {
                return Err("expected '\"' after '='");
            }
            let end = end_of_quoted(line, i + 1).ok_or("unterminated label value")?;
            let value = i + 1..end;
            i = end + 1;
            Item {
                name,
                whole: start..i,
                value: Some(value),
            }
        } else if quoted && !named {
            named = true;
            Item {
                name,
                whole: start..after_name,
                value: None,
            }
        } else {
            return Err("expected '=' after a label name");
        };
        visit(item)?;
        i = skip_whitespace(line, i);
        match line.get(i) {
            Some(b',') => i += 1,
            Some(b'}') => return Ok(i),
            _ => return Err("expected ',' or '}' after a label"),
        }
    }
}

/// Parses the label set whose `{` is at `open`. `injected` are the label names an
/// injection may write: a scraped label with one of these names is a conflict.
///
/// Nearly every kubelet line has the shape `{name="value",name="value"}`: bare
/// names, no blanks, no backslash. That shape is parsed by
/// [`parse_plain_label_set`] with the inlined scans of `scan.rs`; anything else (and any
/// error) goes through the full grammar of [`for_each_item`].
pub(super) fn parse_label_set(
    line: &[u8],
    open: usize,
    injected: &[Box<[u8]>],
) -> Result<LabelSet, &'static str> {
    match parse_plain_label_set(line, open, injected) {
        Some(set) => Ok(set),
        None => parse_any_label_set(line, open, injected),
    }
}

/// The fast path: a label set of bare names and values without backslashes,
/// with no blanks, where every `"` delimits a value. Returns `None` as soon as
/// the line leaves that shape, so that the result, when there is one, is exactly
/// what the full grammar gives.
#[inline(never)]
fn parse_plain_label_set(line: &[u8], open: usize, injected: &[Box<[u8]>]) -> Option<LabelSet> {
    let base = open + 1;
    let mut set = LabelSet {
        open,
        close: base,
        insert_at: base,
        namespace: None,
        quoted_name: None,
        conflict: false,
    };
    if line.get(base) == Some(&b'}') {
        return Some(set);
    }
    let mut name_start = base;
    loop {
        // A bare name, then `="`: the name holds no `"`, so that quote is the
        // first one after `name_start`, as the full grammar also finds it.
        let name_end = skip_label_name(line, name_start);
        if name_end == name_start && line.get(name_start) == Some(&b'}') {
            // A trailing comma (`{}` was handled above).
            set.close = name_start;
            return Some(set);
        }
        if name_end == name_start || line.get(name_end..name_end + 2) != Some(b"=\"") {
            return None;
        }
        let value_open = name_end + 1;
        // The value ends at the next `"`; a backslash leaves the fast path.
        let value_close = find_quote_or_backslash(line, value_open + 1);
        if line.get(value_close) != Some(&b'"') {
            return None;
        }
        let name = &line[name_start..name_end];
        if name == b"namespace" {
            if set.namespace.is_some() {
                return None;
            }
            set.namespace = Some(value_open + 1..value_close);
        } else if injected.iter().any(|n| **n == *name) {
            set.conflict = true;
        }
        set.insert_at = value_close + 1;
        match line.get(value_close + 1) {
            Some(b'}') => {
                set.close = value_close + 1;
                return Some(set);
            }
            Some(b',') => name_start = value_close + 2,
            _ => return None,
        }
    }
}

/// The full grammar: quoted names, blanks, escapes, and precise errors.
fn parse_any_label_set(
    line: &[u8],
    open: usize,
    injected: &[Box<[u8]>],
) -> Result<LabelSet, &'static str> {
    let mut namespace = None;
    let mut quoted_name = None;
    let mut conflict = false;
    let mut insert_at = open + 1;
    let close = for_each_item(line, open, |item| {
        insert_at = item.whole.end;
        let name = &line[item.name.clone()];
        match item.value {
            None => quoted_name = Some(item.name),
            Some(value) if name == b"namespace" => {
                if namespace.replace(value).is_some() {
                    return Err("duplicate namespace label");
                }
            }
            Some(_) => conflict |= injected.iter().any(|n| **n == *name),
        }
        Ok(())
    })?;
    Ok(LabelSet {
        open,
        close,
        insert_at,
        namespace,
        quoted_name,
        conflict,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prometheus::testing::{inject, rewrite};

    #[test]
    fn label_syntax_variants() {
        let s = inject("exported");
        let cases = [
            // trailing comma and blanks stay after the injected label
            ("m{namespace=\"bank\",} 1\n", "m{namespace=\"bank\",team=\"money\",} 1\n"),
            ("m{ namespace = \"bank\" , } 1\n", "m{ namespace = \"bank\",team=\"money\" , } 1\n"),
            ("m {namespace=\"bank\"} 1\n", "m {namespace=\"bank\",team=\"money\"} 1\n"),
            // timestamps, CRLF, no final newline
            ("m{namespace=\"bank\"} 1 1700000000000\r\n", "m{namespace=\"bank\",team=\"money\"} 1 1700000000000\r\n"),
            ("m{namespace=\"bank\"} 1", "m{namespace=\"bank\",team=\"money\"} 1"),
            // braces, commas, escapes and look-alikes inside values
            (
                "m{id=\"/a{b},c\\\"namespace=\\\"shop\\\"\\\\\",namespace=\"bank\"} 1\n",
                "m{id=\"/a{b},c\\\"namespace=\\\"shop\\\"\\\\\",namespace=\"bank\",team=\"money\"} 1\n",
            ),
            // OpenMetrics exemplar: its label set is not the series'
            (
                "m_total{namespace=\"bank\"} 1 # {trace_id=\"x\",namespace=\"shop\"} 1 1.5\n",
                "m_total{namespace=\"bank\",team=\"money\"} 1 # {trace_id=\"x\",namespace=\"shop\"} 1 1.5\n",
            ),
            // UTF-8 form: quoted metric name and quoted label names
            ("{\"m.x\",namespace=\"bank\"} 1\n", "{\"m.x\",namespace=\"bank\",team=\"money\"} 1\n"),
            // the quoted metric name anywhere in the set, as Prometheus accepts it
            ("{namespace=\"bank\",\"m.x\"} 1\n", "{namespace=\"bank\",\"m.x\",team=\"money\"} 1\n"),
            ("{q=\"0.9\",\"m.x\",namespace=\"bank\"} 1\n", "{q=\"0.9\",\"m.x\",namespace=\"bank\",team=\"money\"} 1\n"),
            // no blank between the label set and the value
            ("m{namespace=\"bank\"}-Inf\n", "m{namespace=\"bank\",team=\"money\"}-Inf\n"),
            ("m{namespace=\"bank\"}1 17\n", "m{namespace=\"bank\",team=\"money\"}1 17\n"),
            ("{\"m.x\",\"namespace\"=\"bank\"} 1\n", "{\"m.x\",\"namespace\"=\"bank\",team=\"money\"} 1\n"),
        ];
        for (input, want) in cases {
            assert_eq!(rewrite(&s, input).unwrap(), want, "{input}");
        }
        // Look-alike label names are not the namespace label.
        for line in [
            "m{exported_namespace=\"bank\"} 1\n",
            "m{k8s_namespace=\"bank\"} 1\n",
            "m{namespaces=\"bank\"} 1\n",
            "m{a=\"namespace=\\\"bank\\\"\"} 1\n",
        ] {
            assert_eq!(rewrite(&s, line).unwrap(), line);
        }
    }

    proptest::proptest! {
        /// Whenever the fast path answers, it answers exactly what the full grammar
        /// does; and it answers for the plain shape kubelets write.
        #[test]
        fn fast_path_agrees_with_the_full_grammar(
            set in "\\{([a-z_]{1,4}|namespace|team)=\"[a-z\\\\\"{},= ]{0,4}\"(,([a-z_]{1,4}|namespace|team)=\"[a-z{},= ]{0,4}\"){0,3},?\\}",
            noise in "[ ,=\"\\\\a{}]{0,2}",
            at in 0usize..40,
        ) {
            let injected: Vec<Box<[u8]>> = vec![b"team".to_vec().into()];
            let mut line = format!("m{set} 1").into_bytes();
            let plain = parse_plain_label_set(&line, 1, &injected);
            // Plain: valid, and no lone quoted metric name (an unescaped `","` in a
            // generated value can make one, anywhere in the set).
            let valid = parse_any_label_set(&line, 1, &injected)
                .is_ok_and(|set| set.quoted_name.is_none());
            if valid && !set.contains(['\\', ' ']) && set.matches("namespace=").count() <= 1 {
                proptest::prop_assert!(plain.is_some(), "plain shape not recognised: {}", set);
            }
            if let Some(fast) = plain {
                proptest::prop_assert_eq!(Ok(fast), parse_any_label_set(&line, 1, &injected));
            }
            let at = 1 + at % (line.len() - 1);
            line.splice(at..at, noise.bytes());
            if let Some(fast) = parse_plain_label_set(&line, 1, &injected) {
                proptest::prop_assert_eq!(Ok(fast), parse_any_label_set(&line, 1, &injected));
            }
        }
    }
}
