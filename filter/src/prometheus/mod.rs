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
//!
//! # Layout
//!
//! This module owns the streaming: the chunks, the carried partial line, the
//! over-long-line rule, the dispatch of each line on its first byte, and the
//! carrying out of what was decided for it (copying runs, inserting, holding).
//! It does not look inside a line; what a line becomes is decided by:
//!
//! - `series`: one sample line: checked, looked up, then dropped, kept, given
//!   the injected labels, or rebuilt when its label names collide with them;
//! - `labelset`: the label-set grammar, with a fast path for the plain shape;
//! - `metadata`: `# HELP`, `# TYPE` and `# UNIT` held with their family in
//!   tenant mode;
//! - `translate`: a virtual cluster's series, its host names translated back;
//! - [`labels`]: label names and values as the format writes them (also used by
//!   the config and the catalog).

pub mod labels;
mod labelset;
mod metadata;
mod series;
#[cfg(test)]
mod testing;
mod translate;

use memchr::memchr_iter;

use crate::body::{BodyError, Counters};
use crate::config::OnConflict;
use crate::snapshot::catalog::{EntryId, NamespaceEntry, RequestScope, Visibility};

use labelset::LabelSet;
use metadata::FamilyState;

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
    /// The bytes of an [`Edit::Replace`] (kept here, not in the edit, so that no
    /// edit owns memory: the per-line path then has no drop glue).
    replacement: Vec<u8>,
    counters: Counters,
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
    /// Write `State::replacement` instead of the line's first `n` bytes (a series
    /// whose exemplar is removed).
    Replace(usize),
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
                replacement: Vec::new(),
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
                series::rebuild(&src[start..next], &set, entry, on_conflict, out);
                *run = next;
            }
            Edit::Hold => {
                out.extend_from_slice(&src[*run..start]);
                self.held_meta.extend_from_slice(&src[start..next]);
                *run = next;
            }
            Edit::Replace(n) => {
                out.extend_from_slice(&src[*run..start]);
                out.extend_from_slice(&self.replacement);
                *run = start + n;
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
            // Blank: nothing, or only a CRLF's `\r`, after the blanks. A `\r` with
            // more after it is no blank line (the fuzzer's find: such a line was
            // kept whole, whatever series followed the `\r`).
            None => Ok(self.between_metadata_and_series()),
            Some(b'\r') if first + 1 == line.len() => Ok(self.between_metadata_and_series()),
            Some(b'#') => Ok(self.comment(line, first)),
            Some(_) => self.series(scope, line, first),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prometheus::testing::{inject, rewrite, run, scope, tenant};

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

    #[test]
    fn a_carriage_return_before_a_series_is_no_blank_line() {
        // Found by fuzzing (virtual_view): a line whose first non-blank byte is a
        // `\r` with a series after it was taken for a blank line and kept whole.
        let body = "\t\r\tm{namespace=\"bank\"} 1\nm{namespace=\"shop\"} 2\n";
        assert!(rewrite(&tenant(""), body).is_err());
        // A CRLF blank line stays one.
        let body = "a 1\r\n \r\nm{namespace=\"shop\"} 2\r\n";
        assert_eq!(rewrite(&tenant(""), body).unwrap(), body);
    }

    #[test]
    fn pass_through_without_features_is_identity() {
        let s = scope(r#"{"passThrough": true}"#, None);
        let body = "# HELP a x\na{namespace=\"bank\"} 1\nbroken{ line\n";
        assert_eq!(rewrite(&s, body).unwrap(), body);
    }
}
