//! The push-down automaton's structural states and the loop over a chunk.
//!
//! [`JsonFilter::run`] reads a chunk in a [`Cursor`] (index, state, nesting) held
//! in locals, and dispatches on the state: the structural states (a key, `:`, a
//! value, what follows a value) are here, with the fast path for a whole object
//! member ([`JsonFilter::member`]); strings, numbers and literals are read by
//! `strings` and `tokens`, quiet values by `deep`'s `skip_deep`. At the chunk's end
//! the cursor goes back into the filter, and what is held back or being captured
//! is carried over.
//!
//! This module calls the hooks (`shape`) and the capture (`capture`) where the
//! grammar meets them, and must not decide anything about the document itself.
//! Every function here that takes the cursor is `#[inline(always)]`: the cursor
//! must stay in registers, and a call that takes its address would send it (and
//! the loop's other variables) to the stack once compiled from wasm.

use super::capture::{may_be, Capture, KEY_CAPTURE_LIMIT};
use super::deep::skip_deep;
use super::shape::NAMESPACE;
use super::strings::scan_string;
use super::tokens::{literal, literal_end, number_byte, scan_number, skip_ws};
use super::{err, JsonFilter, MAX_DEPTH};
use crate::body::BodyError;

/// The scanner's state: what the next byte may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum State {
    /// Before the top-level value.
    Start,
    /// After `{`: a key or `}`.
    ObjFirst,
    /// After `,` in an object: a key.
    Key,
    /// After a key: `:`.
    Colon,
    /// After `:`, or after `,` in an array: a value.
    Value,
    /// After `[`: a value or `]`.
    ArrFirst,
    /// After a value: `,` or the closer of the container.
    After,
    Str,
    /// After `\` in a string.
    Escape,
    /// In the hex digits of `\uXXXX`.
    Hex,
    /// After a high-surrogate escape: the `\` of its low surrogate.
    LowBackslash,
    /// The `u` of the low surrogate.
    LowU,
    /// In a multi-byte UTF-8 sequence.
    Utf8,
    NumMinus,
    NumZero,
    NumInt,
    NumDot,
    NumFrac,
    NumExp,
    NumExpSign,
    NumExpDigits,
    /// In `true`, `false` or `null`.
    Lit,
    /// After the top-level value: only whitespace.
    Done,
}

impl State {
    /// Between two tokens, where [`skip_deep`] can take over.
    #[inline]
    fn between_tokens(self) -> bool {
        matches!(
            self,
            State::ObjFirst | State::Key | State::Value | State::ArrFirst | State::After
        )
    }
}

/// Where the scanner is: the index in the chunk, the state there and the nesting.
/// [`JsonFilter::run`] keeps it in a local while it reads a chunk and writes it
/// back to the filter at the end (an error poisons the filter, so it need not be
/// then); [`skip_deep`] takes it apart and returns where it stopped.
#[derive(Debug, Clone, Copy)]
pub(super) struct Cursor {
    pub(super) i: usize,
    pub(super) st: State,
    pub(super) depth: usize,
    /// Container kinds, one bit per level (1 = object), `depth` levels.
    pub(super) stack: u64,
    /// The string being scanned is a key.
    pub(super) str_key: bool,
}

impl Cursor {
    /// Opens a container at `at`.
    #[inline(always)]
    fn open(&mut self, at: usize, object: bool) -> Result<(), BodyError> {
        if self.depth >= MAX_DEPTH {
            return Err(err(format_args!("nesting deeper than {MAX_DEPTH}")));
        }
        self.stack = (self.stack & !(1 << self.depth)) | (u64::from(object) << self.depth);
        self.depth += 1;
        self.st = if object {
            State::ObjFirst
        } else {
            State::ArrFirst
        };
        self.i = at + 1;
        Ok(())
    }

    /// Applies the outcome of the member fast path (`st` is `After` before).
    #[inline(always)]
    fn step(&mut self, step: Step) -> Result<(), BodyError> {
        match step {
            Step::Member(end) => self.i = end,
            Step::Open(at, object) => self.open(at, object)?,
            Step::Resume(at, state, key) => {
                self.i = at;
                self.st = state;
                self.str_key = key;
            }
        }
        Ok(())
    }
}

/// The outcome of [`JsonFilter::member`].
enum Step {
    /// The member ended (a scalar value) just before this index.
    Member(usize),
    /// Its value is a container opening at this index (object or not).
    Open(usize, bool),
    /// The fast path stops at this index (chunk end, escape, non-ASCII): carry on
    /// in this state (and this `str_key`).
    Resume(usize, State, bool),
}

impl JsonFilter {
    /// Scans and filters one chunk (see [`JsonFilter::feed`]).
    pub(super) fn run(&mut self, b: &[u8], out: &mut Vec<u8>) -> Result<(), BodyError> {
        let n = b.len();
        self.mark = 0;
        self.cap_from = 0;
        // The hot scanner state lives in a local and is written back at the end (an
        // error poisons the filter, so it need not be).
        let mut cur = Cursor {
            i: 0,
            st: self.state,
            depth: self.depth,
            stack: self.stack,
            str_key: self.str_key,
        };
        while cur.i < n {
            // Inside a value no hook looks at, the tight validating loop of
            // `skip_deep` runs instead of the states (see `quiet_floor`).
            if cur.depth > self.quiet_floor()
                && self.capture == Capture::None
                && cur.st.between_tokens()
            {
                cur = skip_deep(b, cur.i, cur.st, cur.depth, cur.stack, self.quiet_floor());
                if cur.i >= n {
                    break;
                }
            }
            match cur.st {
                State::Str => self.string(b, &mut cur)?,
                State::ObjFirst | State::Key => self.key(b, &mut cur, out)?,
                State::Colon => {
                    cur.i = skip_ws(b, cur.i);
                    let Some(&c) = b.get(cur.i) else {
                        break;
                    };
                    if c != b':' {
                        return Err(err("expected `:` after an object key"));
                    }
                    cur.st = State::Value;
                    cur.i += 1;
                }
                State::After => self.after(b, &mut cur, out)?,
                State::Value | State::ArrFirst | State::Start => self.value(b, &mut cur, out)?,
                State::Escape | State::Hex | State::LowBackslash | State::LowU | State::Utf8 => {
                    self.string_byte(b, &mut cur)?
                }
                State::NumMinus
                | State::NumZero
                | State::NumInt
                | State::NumDot
                | State::NumFrac
                | State::NumExp
                | State::NumExpSign
                | State::NumExpDigits => number_byte(b, &mut cur)?,
                State::Lit => self.literal_byte(b, &mut cur)?,
                State::Done => {
                    cur.i = skip_ws(b, cur.i);
                    if cur.i < n {
                        return Err(err("data after the JSON value"));
                    }
                }
            }
        }
        self.state = cur.st;
        self.depth = cur.depth;
        self.stack = cur.stack;
        self.str_key = cur.str_key;
        self.chunk_end(b, out)
    }

    /// The end of the chunk: carry what is held back or being captured.
    #[inline(always)]
    fn chunk_end(&mut self, b: &[u8], out: &mut Vec<u8>) -> Result<(), BodyError> {
        let n = b.len();
        if self.capture != Capture::None {
            self.cap_append(&b[self.cap_from..n]);
        }
        if self.holding {
            self.pending.extend_from_slice(&b[self.mark..n]);
            if self.pending.len() > self.max_body_bytes {
                return Err(self.too_big());
            }
        } else {
            out.extend_from_slice(&b[self.mark..n]);
        }
        Ok(())
    }

    /// `ObjFirst` and `Key`: a key (its member through the fast path), or after `{`
    /// the object's `}`.
    #[inline(always)]
    fn key(&mut self, b: &[u8], cur: &mut Cursor, out: &mut Vec<u8>) -> Result<(), BodyError> {
        cur.i = skip_ws(b, cur.i);
        let Some(&c) = b.get(cur.i) else {
            return Ok(());
        };
        if c == b'"' {
            cur.st = State::After;
            cur.step(self.member(b, cur.i, cur.depth, out)?)
        } else if c == b'}' && cur.st == State::ObjFirst {
            self.close(b, cur, out)
        } else {
            Err(err("expected an object key"))
        }
    }

    /// `After`: `,` or the closer of the container. Members of an object are read
    /// here one after the other (the common case) without a trip through the
    /// states.
    #[inline(always)]
    fn after(&mut self, b: &[u8], cur: &mut Cursor, out: &mut Vec<u8>) -> Result<(), BodyError> {
        loop {
            cur.i = skip_ws(b, cur.i);
            let Some(&c) = b.get(cur.i) else {
                return Ok(());
            };
            let object = (cur.stack >> cur.depth.saturating_sub(1)) & 1 == 1;
            match c {
                b',' => {
                    if cur.depth == 2 && self.in_target {
                        self.comma_in_target(cur.i)?;
                    }
                    if !object {
                        cur.st = State::Value;
                        cur.i += 1;
                        return Ok(());
                    }
                    cur.i = skip_ws(b, cur.i + 1);
                    match b.get(cur.i) {
                        Some(b'"') => cur.step(self.member(b, cur.i, cur.depth, out)?)?,
                        Some(_) => return Err(err("expected an object key")),
                        None => {
                            cur.st = State::Key;
                            return Ok(());
                        }
                    }
                    if cur.st != State::After {
                        return Ok(());
                    }
                }
                b'}' | b']' => {
                    if (c == b'}') != object {
                        return Err(err("mismatched bracket"));
                    }
                    self.close(b, cur, out)?;
                    if cur.st == State::Done {
                        return Ok(());
                    }
                }
                _ => return Err(err("expected `,` or the end of a container")),
            }
        }
    }

    /// `Value`, `ArrFirst` and `Start`: a value, or after `[` the array's `]`.
    #[inline(always)]
    fn value(&mut self, b: &[u8], cur: &mut Cursor, out: &mut Vec<u8>) -> Result<(), BodyError> {
        cur.i = skip_ws(b, cur.i);
        let Some(&c) = b.get(cur.i) else {
            return Ok(());
        };
        if cur.st == State::ArrFirst && c == b']' {
            return self.close(b, cur, out);
        }
        if cur.st == State::Start && c != b'{' {
            return Err(err("the top-level value is not an object"));
        }
        if self.hooks_value(cur.depth) {
            self.value_hook(b, cur.i, c, cur.depth, out)?;
        }
        match c {
            b'"' => {
                cur.st = State::Str;
                cur.str_key = false;
                cur.i += 1;
            }
            b'{' | b'[' => cur.open(cur.i, c == b'{')?,
            b'-' | b'0'..=b'9' => match scan_number(b, cur.i, c) {
                Some(Ok(end)) => {
                    cur.st = State::After;
                    cur.i = end;
                }
                Some(Err(())) => return Err(err("invalid number")),
                None => {
                    // The chunk ends inside the number.
                    cur.st = match c {
                        b'-' => State::NumMinus,
                        b'0' => State::NumZero,
                        _ => State::NumInt,
                    };
                    cur.i += 1;
                }
            },
            b't' | b'f' | b'n' => {
                if let Some(end) = literal_end(b, cur.i, c) {
                    cur.st = State::After;
                    cur.i = end;
                } else {
                    self.lit = literal(c);
                    self.lit_pos = 1;
                    cur.st = State::Lit;
                    cur.i += 1;
                }
            }
            _ => return Err(err("expected a value")),
        }
        Ok(())
    }

    /// The (matching) closer at `cur.i` of the container at `cur.depth`: the hooks
    /// see it, then the state is `After` (or `Done` for the top-level object).
    #[inline(always)]
    fn close(&mut self, b: &[u8], cur: &mut Cursor, out: &mut Vec<u8>) -> Result<(), BodyError> {
        if cur.depth <= 4 {
            self.close_hook(b, cur.i, cur.depth, out)?;
        }
        cur.depth -= 1;
        cur.st = if cur.depth == 0 {
            State::Done
        } else {
            State::After
        };
        cur.i += 1;
        Ok(())
    }

    /// The fast path for one object member `"key": value` whose key opens at `i`, in
    /// an object at `depth`: plain keys, strings without escapes, numbers and
    /// literals that lie in the chunk.
    #[inline(always)]
    fn member(
        &mut self,
        b: &[u8],
        mut i: usize,
        depth: usize,
        out: &mut Vec<u8>,
    ) -> Result<Step, BodyError> {
        let capture = depth == 1 || (depth == 3 && self.in_target) || (depth == 4 && self.in_ref);
        let j = match scan_string(b, i + 1) {
            Ok(j) => j,
            Err(at) => {
                if capture {
                    self.start_capture(Capture::Key, i + 1);
                }
                return Ok(Step::Resume(at, State::Str, true));
            }
        };
        if capture {
            // The key lies in the chunk: no capture, it is looked at in place.
            let raw = &b[i + 1..j];
            // Most keys are ruled out here, without a call.
            match depth {
                3 if !may_be(raw, self.shape.ref_key) => self.next_is_ref = false,
                4 if !self.virtual_names && !may_be(raw, NAMESPACE) => self.next_is_ns = false,
                _ => self.key_hook(
                    Some(raw).filter(|raw| raw.len() <= KEY_CAPTURE_LIMIT),
                    depth,
                )?,
            }
        }
        i = skip_ws(b, j + 1);
        match b.get(i) {
            Some(b':') => {}
            Some(_) => return Err(err("expected `:` after an object key")),
            None => return Ok(Step::Resume(i, State::Colon, true)),
        }
        i = skip_ws(b, i + 1);
        let Some(&c) = b.get(i) else {
            return Ok(Step::Resume(i, State::Value, true));
        };
        if self.hooks_value(depth) {
            self.value_hook(b, i, c, depth, out)?;
        }
        match c {
            b'"' => {
                let j = match scan_string(b, i + 1) {
                    Ok(j) => j,
                    Err(at) => return Ok(Step::Resume(at, State::Str, false)),
                };
                if self.capture != Capture::None {
                    self.end_capture(b, j, depth)?;
                }
                Ok(Step::Member(j + 1))
            }
            b'{' | b'[' => Ok(Step::Open(i, c == b'{')),
            b'-' | b'0'..=b'9' => match scan_number(b, i, c) {
                Some(Ok(end)) => Ok(Step::Member(end)),
                Some(Err(())) => Err(err("invalid number")),
                None => {
                    let state = match c {
                        b'-' => State::NumMinus,
                        b'0' => State::NumZero,
                        _ => State::NumInt,
                    };
                    Ok(Step::Resume(i + 1, state, false))
                }
            },
            b't' | b'f' | b'n' => {
                if let Some(end) = literal_end(b, i, c) {
                    Ok(Step::Member(end))
                } else {
                    self.lit = literal(c);
                    self.lit_pos = 1;
                    Ok(Step::Resume(i + 1, State::Lit, false))
                }
            }
            _ => Err(err("expected a value")),
        }
    }

    /// The depth down to which every token is quiet: no hook acts on anything inside
    /// a container deeper than this (nothing is captured there, no value or closer
    /// is looked at), so [`skip_deep`] may validate it alone.
    ///
    /// Outside the filtered array that is everything below the top-level object;
    /// inside it, everything below an element's members (depth 3), except the
    /// reference object (depth 4), whose members are looked at too.
    #[inline]
    fn quiet_floor(&self) -> usize {
        if !self.in_target {
            1
        } else if self.in_ref {
            4
        } else {
            3
        }
    }
}
