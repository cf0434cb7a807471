//! Streaming rewriter for the Prometheus text format (0.0.4) and OpenMetrics 1.0 text.
//!
//! [`Rewriter::feed`] takes the body in chunks split anywhere (inside a label value,
//! an escape, a UTF-8 sequence, a `\r\n`) and writes every complete line; the trailing
//! partial line is carried to the next chunk, so memory is bounded by the longest
//! line, not the body. The output is byte-identical for every split.
//!
//! Lines are found with `memchr` in one pass. A line that is not changed is not copied
//! on its own: the rewriter keeps a *run* of unchanged input and copies it in one
//! `extend_from_slice` when a line needs to change (an injected suffix, a dropped
//! series) or the chunk ends.
//!
//! Sample lines are parsed, not grepped: the label set is walked item by item,
//! skipping each quoted value to its next `"` or `\` (the inlined scans of
//! `scan.rs`), so `exported_namespace`, a value that contains `namespace="x"`,
//! and `{`, `}` or `,` inside values never confuse it. Everything after the label set (value, timestamp, OpenMetrics
//! exemplar `# {…} v`) is copied untouched.

pub mod labels;

use std::ops::Range;

use memchr::{memchr3, memchr_iter};

use crate::body::{BodyError, Counters};
use crate::config::OnConflict;
use crate::scan::{find_quote_or_backslash, same_bytes, skip_label_name, skip_sample_bytes};
use crate::snapshot::catalog::{EntryId, NamespaceEntry, RequestScope, Visibility};

/// Longest line accepted. A longer one fails closed in tenant mode; in
/// injection-only mode the rest of the body passes through unchanged.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// Rewrites one response body for one request.
pub struct Rewriter {
    scope: RequestScope,
    state: State,
    /// The trailing partial line of the previous chunk.
    carry: Vec<u8>,
    /// Injection-only mode gave up on an over-long line: copy the rest verbatim.
    bypass: bool,
    counters: Counters,
}

/// Everything about the body so far that decides the next line. Kept apart from
/// the scope so a line's [`Edit`] can borrow the scope's catalog while the state
/// changes.
struct State {
    filtering: bool,
    /// Tenant mode: `# HELP`/`# TYPE`/`# UNIT` lines of the current family, held
    /// until the family's first kept series (and dropped if none is kept).
    held_meta: Vec<u8>,
    family: Vec<u8>,
    family_state: FamilyState,
    /// The line being applied is its family's first kept series: write
    /// `held_meta` before it.
    release_held: bool,
    /// Line number of the next line (1-based), for error messages.
    line_number: u64,
    /// The raw namespace of the last series looked up, and what the scope said of
    /// it. Consecutive series are mostly of one pod (three in four in a cadvisor
    /// capture), and comparing a few bytes is much cheaper than hashing them,
    /// above all in wasm.
    last_namespace: Vec<u8>,
    last_lookup: Option<(Visibility, Option<EntryId>)>,
    counters: Counters,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FamilyState {
    /// No metadata seen for the current family.
    None,
    /// `family`'s metadata is in `held_meta`, not yet written.
    Held,
    /// `family`'s metadata was written.
    Written,
}

/// What happens to one line.
enum Edit<'e> {
    Keep,
    Drop,
    /// Insert `bytes` at this offset of the line.
    Insert(usize, &'e [u8]),
    /// A series whose labels conflict with the injected ones: rebuild its label set.
    Rebuild(LabelSet, &'e NamespaceEntry, OnConflict),
    /// Hold a metadata line until its family's first kept series.
    Hold,
}

/// Where the parts of a label set are, as offsets into the line.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LabelSet {
    /// The `{`.
    open: usize,
    /// The `}`.
    close: usize,
    /// Just after the last item: where injected labels go (a trailing comma and
    /// blanks stay after them).
    insert_at: usize,
    /// The raw value of the `namespace` label.
    namespace: Option<Range<usize>>,
    /// The metric name of the UTF-8 form `{"metric.name", …}`.
    quoted_name: Option<Range<usize>>,
    /// Some scraped label has a name an injection may write.
    conflict: bool,
}

impl Rewriter {
    pub fn new(scope: RequestScope) -> Rewriter {
        Rewriter {
            state: State {
                filtering: scope.filtering(),
                held_meta: Vec::new(),
                family: Vec::new(),
                family_state: FamilyState::None,
                release_held: false,
                line_number: 1,
                last_namespace: Vec::new(),
                last_lookup: None,
                counters: Counters::default(),
            },
            scope,
            carry: Vec::new(),
            bypass: false,
            counters: Counters::default(),
        }
    }

    /// Series and byte counts so far.
    pub fn counters(&self) -> Counters {
        Counters {
            bytes_in: self.counters.bytes_in,
            bytes_out: self.counters.bytes_out,
            ..self.state.counters
        }
    }

    /// Rewrites every line of `chunk` that is complete and appends it to `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> Result<(), BodyError> {
        self.counters.bytes_in += chunk.len() as u64;
        let before = out.len();
        let result = self.feed_inner(chunk, out);
        self.counters.bytes_out += (out.len() - before) as u64;
        result
    }

    /// Rewrites the last line (one without a final newline) and ends the body.
    pub fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), BodyError> {
        let before = out.len();
        let result = self.finish_inner(out);
        self.counters.bytes_out += (out.len() - before) as u64;
        result
    }

    fn feed_inner(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> Result<(), BodyError> {
        if self.bypass {
            out.extend_from_slice(chunk);
            return Ok(());
        }
        let mut rest = chunk;
        if !self.carry.is_empty() {
            let Some(newline) = memchr::memchr(b'\n', chunk) else {
                return self.extend_carry(chunk, out);
            };
            let (head, tail) = chunk.split_at(newline + 1);
            if self.carry.len() + head.len() - 1 > MAX_LINE_BYTES {
                return self.extend_carry(chunk, out);
            }
            self.carry.extend_from_slice(head);
            let consumed = self.state.rewrite_lines(&self.scope, &self.carry, out);
            self.carry.clear();
            consumed?;
            rest = tail;
        }
        let consumed = self.state.rewrite_lines(&self.scope, rest, out);
        match consumed {
            Ok(consumed) => self.extend_carry(&rest[consumed..], out),
            Err(LineError::TooLong(at)) => self.give_up(&rest[at..], out),
            Err(LineError::Refused(e)) => Err(e),
        }
    }

    fn extend_carry(&mut self, partial: &[u8], out: &mut Vec<u8>) -> Result<(), BodyError> {
        if self.carry.len() + partial.len() > MAX_LINE_BYTES {
            let carried = std::mem::take(&mut self.carry);
            self.give_up(&carried, out)?;
            out.extend_from_slice(partial);
            return Ok(());
        }
        self.carry.extend_from_slice(partial);
        Ok(())
    }

    /// A line is longer than [`MAX_LINE_BYTES`]: fail closed when filtering, else
    /// pass `rest` (from the start of that line) and all further input unchanged.
    fn give_up(&mut self, rest: &[u8], out: &mut Vec<u8>) -> Result<(), BodyError> {
        if self.state.filtering {
            return Err(BodyError(format!(
                "line {} is longer than {MAX_LINE_BYTES} bytes",
                self.state.line_number
            )));
        }
        self.bypass = true;
        out.extend_from_slice(rest);
        Ok(())
    }

    fn finish_inner(&mut self, out: &mut Vec<u8>) -> Result<(), BodyError> {
        if !self.carry.is_empty() && !self.bypass {
            let result = self.state.rewrite_last_line(&self.scope, &self.carry, out);
            self.carry.clear();
            result?;
        }
        // Metadata still held belongs to a family none of whose series was kept.
        self.state.held_meta.clear();
        self.state.family_state = FamilyState::None;
        Ok(())
    }
}

/// Why [`State::rewrite_lines`] stopped.
enum LineError {
    /// The line starting at this offset is too long.
    TooLong(usize),
    Refused(BodyError),
}

impl From<BodyError> for LineError {
    fn from(e: BodyError) -> LineError {
        LineError::Refused(e)
    }
}

impl From<LineError> for BodyError {
    fn from(e: LineError) -> BodyError {
        match e {
            LineError::TooLong(_) => {
                BodyError(format!("a line is longer than {MAX_LINE_BYTES} bytes"))
            }
            LineError::Refused(e) => e,
        }
    }
}

impl State {
    /// Rewrites the complete lines of `src` into `out`; returns how many bytes of
    /// `src` that was (the rest is a partial line). Unchanged lines are copied as
    /// one run.
    fn rewrite_lines(
        &mut self,
        scope: &RequestScope,
        src: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<usize, LineError> {
        let mut start = 0;
        let mut run = 0;
        for newline in memchr_iter(b'\n', src) {
            let line = &src[start..newline];
            if line.len() > MAX_LINE_BYTES {
                out.extend_from_slice(&src[run..start]);
                return Err(LineError::TooLong(start));
            }
            match self.edit(scope, line) {
                Ok(edit) => self.apply(edit, src, start, newline + 1, &mut run, out),
                Err(e) => {
                    out.extend_from_slice(&src[run..start]);
                    return Err(e.into());
                }
            }
            start = newline + 1;
        }
        out.extend_from_slice(&src[run..start]);
        Ok(start)
    }

    /// Rewrites the final line of a body, which has no newline.
    fn rewrite_last_line(
        &mut self,
        scope: &RequestScope,
        line: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), BodyError> {
        let edit = self.edit(scope, line)?;
        let mut run = 0;
        self.apply(edit, line, 0, line.len(), &mut run, out);
        out.extend_from_slice(&line[run..]);
        Ok(())
    }

    /// Carries out `edit` for the line `src[start..next]` (`next` is past its
    /// newline, if any). `run` is where the run of input not yet copied starts.
    fn apply(
        &mut self,
        edit: Edit<'_>,
        src: &[u8],
        start: usize,
        next: usize,
        run: &mut usize,
        out: &mut Vec<u8>,
    ) {
        self.line_number += 1;
        if std::mem::take(&mut self.release_held) {
            out.extend_from_slice(&src[*run..start]);
            *run = start;
            out.extend_from_slice(&self.held_meta);
            self.held_meta.clear();
        }
        match edit {
            Edit::Keep => {}
            Edit::Drop => {
                out.extend_from_slice(&src[*run..start]);
                *run = next;
            }
            Edit::Insert(at, bytes) => {
                out.extend_from_slice(&src[*run..start + at]);
                out.extend_from_slice(bytes);
                *run = start + at;
            }
            Edit::Rebuild(set, entry, on_conflict) => {
                out.extend_from_slice(&src[*run..start]);
                rebuild(&src[start..next], &set, entry, on_conflict, out);
                *run = next;
            }
            Edit::Hold => {
                out.extend_from_slice(&src[*run..start]);
                self.held_meta.extend_from_slice(&src[start..next]);
                *run = next;
            }
        }
    }

    /// Decides what to do with one line (without its `\n`).
    fn edit<'s>(&mut self, scope: &'s RequestScope, line: &[u8]) -> Result<Edit<'s>, BodyError> {
        let first = line
            .iter()
            .position(|&b| b != b' ' && b != b'\t')
            .unwrap_or(line.len());
        match line.get(first) {
            None | Some(b'\r') => Ok(self.between_metadata_and_series()),
            Some(b'#') => Ok(self.comment(line, first)),
            Some(_) => self.series(scope, line, first),
        }
    }

    fn comment(&mut self, line: &[u8], at: usize) -> Edit<'static> {
        if !self.filtering {
            return Edit::Keep;
        }
        let Some(family) = metadata_family(&line[at..]) else {
            // `# EOF` ends the body and is never held back.
            if line[at..].trim_ascii_end() == b"# EOF" {
                return Edit::Keep;
            }
            return self.between_metadata_and_series();
        };
        if self.family_state != FamilyState::None && family == self.family.as_slice() {
            // More metadata (`# TYPE` after `# HELP`) of the same family.
            return if self.family_state == FamilyState::Held {
                Edit::Hold
            } else {
                Edit::Keep
            };
        }
        self.held_meta.clear();
        self.family.clear();
        self.family.extend_from_slice(family);
        self.family_state = FamilyState::Held;
        Edit::Hold
    }

    /// A blank line or a plain comment. After held metadata it is held too, so
    /// that it keeps its place: written with the metadata before the family's
    /// first kept series, or dropped with it. (Written at once, it would come
    /// out before metadata that came before it.)
    fn between_metadata_and_series(&self) -> Edit<'static> {
        if self.family_state == FamilyState::Held {
            Edit::Hold
        } else {
            Edit::Keep
        }
    }

    fn series<'s>(
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
                Err(why) if self.filtering => {
                    return Err(BodyError(format!(
                        "line {}: cannot parse series: {why}",
                        self.line_number
                    )))
                }
                // Injection-only fails open: an unparsable line passes unchanged.
                Err(_) => {
                    self.counters.kept += 1;
                    return Ok(Edit::Keep);
                }
            }
        } else {
            None
        };
        if self.filtering {
            // What is kept must be a series a scraper reads as we did: a line that
            // is not (say, a stray byte before a tab, so its label set was never
            // parsed) could show another tenant's labels to a lenient parser.
            let tail = set.as_ref().map_or(name_end, |s| s.close + 1);
            let named = (classic_end && is_metric_name_start(line, name_start, name_end))
                || (name_start == brace && set.as_ref().is_some_and(|s| s.quoted_name.is_some()));
            if !named || !is_sample_tail(line, tail) {
                return Err(BodyError(format!(
                    "line {}: cannot parse series: {}",
                    self.line_number,
                    if named {
                        "unexpected bytes after the labels"
                    } else {
                        "invalid metric name"
                    }
                )));
            }
        }

        let namespace = set
            .as_ref()
            .and_then(|s| s.namespace.clone())
            .map(|r| &line[r]);
        let (visibility, entry) = self.lookup(scope, namespace);
        if visibility == Visibility::Hidden {
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

    /// A series named `name` is kept while metadata is held: release the metadata
    /// before it if it is the series' family, else forget metadata that belonged
    /// to a family with no series.
    fn family_kept(&mut self, name: &[u8]) {
        if belongs_to_family(name, &self.family) {
            self.family_state = FamilyState::Written;
            self.release_held = true;
        } else {
            self.held_meta.clear();
            self.family_state = FamilyState::None;
        }
    }
}

/// The family named by a `# HELP`, `# TYPE` or `# UNIT` line, or `None` for other
/// comments (including `# EOF`).
fn metadata_family(comment: &[u8]) -> Option<&[u8]> {
    let rest = comment
        .strip_prefix(b"# HELP ")
        .or_else(|| comment.strip_prefix(b"# TYPE "))
        .or_else(|| comment.strip_prefix(b"# UNIT "))?;
    let rest = trim_start(rest);
    if let Some(quoted) = rest.strip_prefix(b"\"") {
        let end = end_of_quoted(quoted, 0)?;
        return Some(&quoted[..end]);
    }
    let end = rest
        .iter()
        .position(|&b| matches!(b, b' ' | b'\t' | b'\r'))
        .unwrap_or(rest.len());
    Some(&rest[..end]).filter(|f| !f.is_empty())
}

/// Sample names a family's metadata covers: the family name itself and the
/// suffixes of histograms, summaries, counters and info metrics.
fn belongs_to_family(name: &[u8], family: &[u8]) -> bool {
    const SUFFIXES: [&[u8]; 8] = [
        b"_bucket",
        b"_sum",
        b"_count",
        b"_total",
        b"_created",
        b"_info",
        b"_gcount",
        b"_gsum",
    ];
    match name.strip_prefix(family) {
        Some([]) => true,
        Some(suffix) => SUFFIXES.contains(&suffix),
        None => false,
    }
}

fn trim_start(bytes: &[u8]) -> &[u8] {
    let skip = bytes
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(bytes.len());
    &bytes[skip..]
}

/// Whether the label-name bytes `line[start..end]` (as [`skip_label_name`] found
/// them) are a classic metric name: not empty, not starting with a digit.
fn is_metric_name_start(line: &[u8], start: usize, end: usize) -> bool {
    end > start && !line[start].is_ascii_digit()
}

/// What may follow a series' name and labels: blanks, then a value and an optional
/// timestamp, then optionally an OpenMetrics exemplar from ` # ` on. (`#` is not a
/// sample byte, so the first byte that is not must be the exemplar's.)
fn is_sample_tail(line: &[u8], tail: usize) -> bool {
    matches!(line.get(tail), Some(b' ' | b'\t'))
        && line
            .get(skip_sample_bytes(line, tail))
            .is_none_or(|&b| b == b'#')
}

fn skip_whitespace(line: &[u8], mut i: usize) -> usize {
    while matches!(line.get(i), Some(b' ' | b'\t')) {
        i += 1;
    }
    i
}

/// Index of the closing quote of a quoted string whose content starts at `from`,
/// honouring `\` escapes.
fn end_of_quoted(bytes: &[u8], mut from: usize) -> Option<usize> {
    loop {
        let at = find_quote_or_backslash(bytes, from);
        if *bytes.get(at)? == b'"' {
            return Some(at);
        }
        from = at + 2;
    }
}

/// One item of a label set.
struct Item {
    /// The name, without quotes.
    name: Range<usize>,
    /// From the first byte of the name (or its opening quote) to the end of the
    /// value's closing quote (or of the quoted metric name).
    whole: Range<usize>,
    /// The raw (still escaped) value; `None` for the quoted metric name of the
    /// UTF-8 form `{"metric.name", …}`.
    value: Option<Range<usize>>,
}

/// Walks the items of the label set whose `{` is at `open`, calling `visit` for
/// each; returns the offset of the closing `}`.
///
/// Grammar (Prometheus text 0.0.4, OpenMetrics 1.0, and the quoted names of the
/// UTF-8 extension): `{ [ item { , item } [ , ] ] }` (EBNF) with optional blanks
/// around tokens, where item is `name = "value"` and name is either bare
/// `[a-zA-Z0-9_:]+` or a quoted string; the first item may be a lone quoted metric
/// name.
fn for_each_item(
    line: &[u8],
    open: usize,
    mut visit: impl FnMut(Item) -> Result<(), &'static str>,
) -> Result<usize, &'static str> {
    let mut i = open + 1;
    let mut first = true;
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
        } else if quoted && first {
            Item {
                name,
                whole: start..after_name,
                value: None,
            }
        } else {
            return Err("expected '=' after a label name");
        };
        visit(item)?;
        first = false;
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
fn parse_label_set(
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

/// Writes `line` (with its newline, if any) with the label set rebuilt so that no
/// label name appears twice after injecting `entry`'s labels. Only series whose
/// scraped labels collide with injected ones come here; their items are rejoined
/// with plain `,` (blanks around items are not kept).
fn rebuild(
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
    use std::rc::Rc;

    use super::*;
    use crate::config::Config;
    use crate::snapshot::catalog::Catalog;
    use crate::snapshot::Snapshot;

    const SNAPSHOT: &str = r#"{"version":"1","generatedAt":"t","namespaces":{
        "shop":{"labels":{"team":"front\"end","tenant":"acme"}},
        "db":{"labels":{"tenant":"acme"}},
        "bank":{"labels":{"team":"money","tenant":"globex"}}}}"#;

    fn scope(config: &str, tenant: Option<&str>) -> RequestScope {
        let config = Config::parse(config.as_bytes()).unwrap();
        let snapshot = Snapshot::parse(SNAPSHOT.as_bytes()).unwrap();
        RequestScope::new(Rc::new(Catalog::new(&config, Some(&snapshot))), tenant)
    }

    fn inject(on_conflict: &str) -> RequestScope {
        scope(
            &format!(
                r#"{{"inject":{{"labels":{{"team":"team"}},"onConflict":"{on_conflict}"}},
                    "snapshot":{{"cluster":"cp"}}}}"#
            ),
            None,
        )
    }

    fn tenant(extra: &str) -> RequestScope {
        scope(
            &format!(
                r#"{{"tenancy":{{"tenant":{{"header":"t"}},"namespaceLabel":"tenant"{extra}}},
                    "snapshot":{{"cluster":"cp"}}}}"#
            ),
            Some("acme"),
        )
    }

    /// Rewrites `body` fed in one chunk and at every split point, asserts all
    /// agree, and returns the output.
    fn rewrite(scope: &RequestScope, body: &str) -> Result<String, BodyError> {
        let body = body.as_bytes();
        let whole = run(scope, &[body]);
        for split in 0..=body.len() {
            let (a, b) = body.split_at(split);
            assert_eq!(run(scope, &[a, b]), whole, "split at {split}");
        }
        let bytes: Vec<&[u8]> = body.chunks(1).collect();
        assert_eq!(run(scope, &bytes), whole, "byte by byte");
        whole.map(|out| String::from_utf8(out).unwrap())
    }

    fn run(scope: &RequestScope, chunks: &[&[u8]]) -> Result<Vec<u8>, BodyError> {
        let mut rewriter = Rewriter::new(scope.clone());
        let mut out = Vec::new();
        for chunk in chunks {
            rewriter.feed(chunk, &mut out)?;
        }
        rewriter.finish(&mut out)?;
        let counters = rewriter.counters();
        assert_eq!(
            counters.bytes_in,
            chunks.iter().map(|c| c.len() as u64).sum::<u64>()
        );
        assert_eq!(counters.bytes_out, out.len() as u64);
        Ok(out)
    }

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
    fn metadata_of_a_family_without_series_is_dropped() {
        let body = "# HELP a A.\n# TYPE a gauge\n# HELP b B.\n# TYPE b gauge\nb 1\n# HELP c C.\n";
        assert_eq!(
            rewrite(&tenant(""), body).unwrap(),
            "# HELP b B.\n# TYPE b gauge\nb 1\n"
        );
        // Metadata followed by another family's series is not attached to it.
        assert_eq!(
            rewrite(&tenant(""), "# TYPE a gauge\nz 1\n").unwrap(),
            "z 1\n"
        );
        // Quoted family names match quoted metric names.
        assert_eq!(
            rewrite(
                &tenant(""),
                "# TYPE \"a.b\" gauge\n{\"a.b\",namespace=\"shop\"} 1\n"
            )
            .unwrap(),
            "# TYPE \"a.b\" gauge\n{\"a.b\",namespace=\"shop\"} 1\n"
        );
    }

    #[test]
    fn lines_between_metadata_and_series_keep_their_place() {
        // Found by the fuzzer: a blank line or comment after held metadata was
        // written at once, before the metadata it followed.
        let body = "# TYPE a gauge\n\n# note\na 1\n# TYPE b gauge\n\n# EOF\n";
        assert_eq!(
            rewrite(&tenant(""), body).unwrap(),
            "# TYPE a gauge\n\n# note\na 1\n# EOF\n"
        );
        // Without held metadata they pass as before.
        assert_eq!(
            rewrite(&tenant(""), "\n# x\na 1\n").unwrap(),
            "\n# x\na 1\n"
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
            "m{namespace=\"shop\"}1\n",
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
            "m_total{namespace=\"shop\"} -1.5e-3 17\r\n",
            "m NaN\n",
            "m{} +Inf\n",
            "m:x_1{namespace=\"shop\"} 1 # {trace_id=\"\u{e9}\"} 2\n",
            "m\t1\n",
        ] {
            assert_eq!(rewrite(&tenant(""), good).unwrap(), good);
        }
    }

    #[test]
    fn over_long_lines_fail_closed_or_pass_through() {
        let long = format!(
            "m{{namespace=\"shop\",a=\"{}\"}} 1\n",
            "x".repeat(MAX_LINE_BYTES)
        );
        let body = format!("m{{namespace=\"bank\"}} 1\n{long}m{{namespace=\"bank\"}} 1\n");
        for chunk in [7, 4096, 1 << 16, body.len()] {
            let chunks: Vec<&[u8]> = body.as_bytes().chunks(chunk).collect();
            assert!(run(&tenant(""), &chunks).is_err(), "chunk {chunk}");
            let out = run(&inject("exported"), &chunks).unwrap();
            let want = format!(
                "m{{namespace=\"bank\",team=\"money\"}} 1\n{long}m{{namespace=\"bank\"}} 1\n"
            );
            assert!(out == want.as_bytes(), "chunk {chunk}");
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
            let valid = parse_any_label_set(&line, 1, &injected).is_ok();
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

    #[test]
    fn pass_through_without_features_is_identity() {
        let s = scope("{}", None);
        let body = "# HELP a x\na{namespace=\"bank\"} 1\nbroken{ line\n";
        assert_eq!(rewrite(&s, body).unwrap(), body);
    }
}
