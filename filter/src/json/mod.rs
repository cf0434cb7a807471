//! Tenant filtering of the kubelet's JSON bodies: `/stats/summary` (keep `node`, keep
//! the `pods[]` whose `podRef.namespace` the tenant may see) and `/pods`,
//! `/runningpods` (a `PodList`: keep the `items[]` whose `metadata.namespace` it may
//! see).
//!
//! # Streaming, not buffering
//!
//! The filter is a resumable, validating JSON scanner (a push-down automaton over
//! bytes, no recursion) that streams: everything outside the filtered array is
//! written out as soon as it has been read, and each array element is held back only
//! until its closing brace, when its namespace is known (the namespace may come after
//! megabytes of `status`, so an element cannot be decided earlier). Memory is
//! therefore bounded by the largest element, not the body, and `max_body_bytes`
//! (`maxJsonBodyBytes`) caps what is held back: one element with the whitespace
//! before it. A bigger element is refused, whatever the chunking; the body as a
//! whole is not capped, since it is never held.
//! An element that lies inside one chunk is not copied at all: it is decided and
//! copied straight from the chunk to the output.
//!
//! Kept bytes are the input bytes: no re-serialization. The filter removes elements
//! and fixes the commas; the whitespace before each kept element is kept with it, and
//! the whitespace before the closing `]` is kept, so a pretty-printed body stays
//! pretty-printed.
//!
//! # Fail closed
//!
//! In tenant mode anything the filter cannot filter safely is an error, never passed
//! through: malformed JSON (checked fully: grammar, string escapes, surrogate pairs,
//! UTF-8, control characters, so the output is valid JSON whenever the result is
//! `Ok`), a top-level value that is not an object, an unknown or repeated top-level
//! key (the kubelet writes `node`/`pods`, resp. `kind`/`apiVersion`/`metadata`/
//! `items`, and a key we do not know could carry pods), a missing `pods`/`items`, an
//! element that is not an object, an element without exactly one `podRef`/`metadata`
//! object holding exactly one string `namespace`, nesting deeper than
//! [`MAX_DEPTH`], an element over the cap, and a body that ends early. Keys are
//! compared after unescaping (`"n\u0061mespace"` is `namespace`), and only the
//! `namespace` directly in the element's `metadata`/`podRef` counts: a `namespace`
//! in an owner reference, an annotation or the element itself is just data.
//!
//! Streaming means output may have been written before an error is found (the
//! kubelet sends a body that turns malformed halfway). The caller then aborts the
//! response; no byte of an element the tenant may not see is ever written, because an
//! element is written only once it is complete and decided. A `feed` that fails
//! writes nothing, and once failed the filter keeps failing.
//!
//! Without tenancy (`scope.filtering()` false) the body passes through unchanged.

use crate::body::{BodyError, Counters};
use crate::policy::endpoint::JsonEndpoint;
use crate::scan::{non_space_in_16, skip_spaces, HI, LO};
use crate::snapshot::catalog::RequestScope;

/// Deepest nesting accepted. The kubelet's bodies nest about 15 deep (managed
/// fields of a pod); `serde_json`, which agents often parse with, stops at 128.
pub const MAX_DEPTH: usize = 64;

/// Raw (escaped) length beyond which a key cannot be one we look for: every decoded
/// byte takes at most 6 raw bytes, and the longest key we match has 9.
const KEY_CAPTURE_LIMIT: usize = 64;
/// The key, in an element's reference object, of the namespace.
const NAMESPACE: &[u8] = b"namespace";
/// Raw length of a `namespace` value beyond which it is refused (namespace names are
/// at most 63 characters).
const NAMESPACE_CAPTURE_LIMIT: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Capture {
    None,
    Key,
    Namespace,
}

impl Capture {
    /// Raw length beyond which the string is not kept.
    fn limit(self) -> usize {
        if self == Capture::Namespace {
            NAMESPACE_CAPTURE_LIMIT
        } else {
            KEY_CAPTURE_LIMIT
        }
    }
}

/// What the filter needs to know of an endpoint's shape.
struct Shape {
    /// Top-level keys the kubelet writes; anything else is refused.
    top_keys: &'static [&'static [u8]],
    /// Index in `top_keys` of the filtered array.
    target: usize,
    /// Key, in each element, of the object holding `namespace`.
    ref_key: &'static [u8],
}

const SUMMARY: Shape = Shape {
    top_keys: &[b"node", b"pods"],
    target: 1,
    ref_key: b"podRef",
};

const POD_LIST: Shape = Shape {
    top_keys: &[b"kind", b"apiVersion", b"metadata", b"items"],
    target: 3,
    ref_key: b"metadata",
};

impl Shape {
    fn of(endpoint: JsonEndpoint) -> &'static Shape {
        match endpoint {
            JsonEndpoint::StatsSummary => &SUMMARY,
            JsonEndpoint::PodList => &POD_LIST,
        }
    }

    fn target_name(&self) -> &'static str {
        std::str::from_utf8(self.top_keys[self.target]).unwrap_or("array")
    }

    fn ref_name(&self) -> &'static str {
        std::str::from_utf8(self.ref_key).unwrap_or("reference")
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

/// Streaming tenant filter for one kubelet JSON response body.
pub struct JsonFilter {
    shape: &'static Shape,
    scope: RequestScope,
    max_body_bytes: usize,
    filtering: bool,
    counters: Counters,
    failed: Option<BodyError>,

    // Scanner.
    state: State,
    /// Container kinds, one bit per level (1 = object), `depth` levels.
    stack: u64,
    depth: usize,
    /// The string being scanned is a key.
    str_key: bool,
    hex_n: u8,
    hex_val: u32,
    hex_low: bool,
    utf8_left: u8,
    utf8_lo: u8,
    utf8_hi: u8,
    lit: &'static [u8],
    lit_pos: usize,

    // String capture (the keys and the namespace value we look at).
    capture: Capture,
    cap_from: usize,
    cap_buf: Vec<u8>,
    cap_overflow: bool,
    scratch: Vec<u8>,

    // Structure.
    /// Top-level keys seen (bit per `shape.top_keys` index).
    top_seen: u32,
    /// The current top-level value is the filtered array.
    top_is_target: bool,
    /// Inside the filtered array (depth >= 2).
    in_target: bool,
    /// Inside the element's `podRef`/`metadata` object (depth 4).
    in_ref: bool,
    next_is_ref: bool,
    next_is_ns: bool,
    ref_seen: bool,
    ns_key_seen: bool,
    ns_seen: bool,
    namespace: Vec<u8>,

    // Output.
    /// Bytes from `mark` in the current chunk are held back (part of an element or
    /// of the whitespace after one), with `pending` holding those of earlier chunks.
    holding: bool,
    mark: usize,
    pending: Vec<u8>,
    kept_any: bool,
}

#[cold]
#[inline(never)]
fn err(msg: impl std::fmt::Display) -> BodyError {
    BodyError(format!("kubelet-scope: cannot filter the JSON body: {msg}"))
}

impl JsonFilter {
    pub fn new(endpoint: JsonEndpoint, scope: RequestScope, max_body_bytes: usize) -> JsonFilter {
        let filtering = scope.filtering();
        JsonFilter {
            shape: Shape::of(endpoint),
            scope,
            max_body_bytes,
            filtering,
            counters: Counters::default(),
            failed: None,
            state: State::Start,
            stack: 0,
            depth: 0,
            str_key: false,
            hex_n: 0,
            hex_val: 0,
            hex_low: false,
            utf8_left: 0,
            utf8_lo: 0,
            utf8_hi: 0,
            lit: b"",
            lit_pos: 0,
            capture: Capture::None,
            cap_from: 0,
            cap_buf: Vec::new(),
            cap_overflow: false,
            scratch: Vec::new(),
            top_seen: 0,
            top_is_target: false,
            in_target: false,
            in_ref: false,
            next_is_ref: false,
            next_is_ns: false,
            ref_seen: false,
            ns_key_seen: false,
            ns_seen: false,
            namespace: Vec::new(),
            holding: false,
            mark: 0,
            pending: Vec::new(),
            kept_any: false,
        }
    }

    /// Filters the next chunk of the body into `out`. Any chunking gives the same
    /// output. On error nothing of this chunk is written.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> Result<(), BodyError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        self.counters.bytes_in += chunk.len() as u64;
        let start = out.len();
        if !self.filtering {
            out.extend_from_slice(chunk);
        } else if let Err(e) = self.run(chunk, out) {
            out.truncate(start);
            self.failed = Some(e.clone());
            return Err(e);
        }
        self.counters.bytes_out += (out.len() - start) as u64;
        Ok(())
    }

    /// Ends the body. In tenant mode a body that is not complete is an error.
    pub fn finish(&mut self, _out: &mut Vec<u8>) -> Result<(), BodyError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if self.filtering && self.state != State::Done {
            let e = if self.state == State::Start {
                err("empty body")
            } else {
                err("the body ends before the JSON value does (truncated)")
            };
            self.failed = Some(e.clone());
            return Err(e);
        }
        Ok(())
    }

    pub fn counters(&self) -> Counters {
        self.counters
    }

    fn run(&mut self, b: &[u8], out: &mut Vec<u8>) -> Result<(), BodyError> {
        let n = b.len();
        let mut i = 0;
        self.mark = 0;
        self.cap_from = 0;
        // The hot scanner state lives in locals and is written back at the end (an
        // error poisons the filter, so it need not be).
        let mut st = self.state;
        let mut depth = self.depth;
        let mut stack = self.stack;
        let mut str_key = self.str_key;
        // Opens a container at `$at`.
        macro_rules! open {
            ($at:expr, $object:expr) => {{
                if depth >= MAX_DEPTH {
                    return Err(err(format_args!("nesting deeper than {MAX_DEPTH}")));
                }
                let object: bool = $object;
                stack = (stack & !(1 << depth)) | (u64::from(object) << depth);
                depth += 1;
                st = if object {
                    State::ObjFirst
                } else {
                    State::ArrFirst
                };
                i = $at + 1;
            }};
        }
        // Applies the outcome of the member fast path (`st` is `After` before).
        macro_rules! step {
            ($step:expr) => {
                match $step {
                    Step::Member(end) => i = end,
                    Step::Open(at, object) => open!(at, object),
                    Step::Resume(at, state, key) => {
                        i = at;
                        st = state;
                        str_key = key;
                    }
                }
            };
        }
        'run: while i < n {
            // Inside a value no hook looks at, the tight validating loop of
            // `skip_deep` runs instead of the states (see `quiet_floor`).
            if depth > self.quiet_floor() && self.capture == Capture::None && st.between_tokens() {
                let deep = skip_deep(b, i, st, depth, stack, self.quiet_floor());
                i = deep.i;
                st = deep.st;
                depth = deep.depth;
                stack = deep.stack;
                str_key = deep.str_key;
                if i >= n {
                    break;
                }
            }
            match st {
                State::Str => {
                    // Fast path: escapes and UTF-8 sequences that lie inside the chunk
                    // are checked here; anything else goes through the states below.
                    loop {
                        i = skip_plain(b, i);
                        let Some(&c) = b.get(i) else {
                            break 'run;
                        };
                        if c == b'"' {
                            break;
                        }
                        if c == b'\\' {
                            // Anything but a whole, non-surrogate escape is the
                            // states' (they pair surrogates and report bad escapes).
                            let Some(len) = escape_len(b, i) else {
                                st = State::Escape;
                                i += 1;
                                continue 'run;
                            };
                            i += len;
                        } else if c < 0x20 {
                            return Err(err("control character in a string"));
                        } else {
                            let len = utf8_len(c);
                            match b.get(i..i + len) {
                                Some(seq) if len > 0 && std::str::from_utf8(seq).is_ok() => {
                                    i += len
                                }
                                _ => {
                                    self.utf8_lead(c)?;
                                    st = State::Utf8;
                                    i += 1;
                                    continue 'run;
                                }
                            }
                        }
                    }
                    // The closing quote is at `i`.
                    if self.capture != Capture::None {
                        self.end_capture(b, i, depth)?;
                    }
                    i += 1;
                    if str_key {
                        // The colon usually follows at once: no trip through the states.
                        i = skip_ws(b, i);
                        match b.get(i) {
                            Some(b':') => {
                                st = State::Value;
                                i += 1;
                            }
                            Some(_) => return Err(err("expected `:` after an object key")),
                            None => st = State::Colon,
                        }
                    } else {
                        st = State::After;
                    }
                }
                State::ObjFirst | State::Key => {
                    i = skip_ws(b, i);
                    let Some(&c) = b.get(i) else {
                        break;
                    };
                    if c == b'"' {
                        st = State::After;
                        step!(self.member(b, i, depth, out)?);
                    } else if c == b'}' && st == State::ObjFirst {
                        if depth <= 4 {
                            self.close_hook(b, i, depth, out)?;
                        }
                        depth -= 1;
                        st = if depth == 0 {
                            State::Done
                        } else {
                            State::After
                        };
                        i += 1;
                    } else {
                        return Err(err("expected an object key"));
                    }
                }
                State::Colon => {
                    i = skip_ws(b, i);
                    let Some(&c) = b.get(i) else {
                        break;
                    };
                    if c != b':' {
                        return Err(err("expected `:` after an object key"));
                    }
                    st = State::Value;
                    i += 1;
                }
                State::After => loop {
                    // Members of an object are read here one after the other (the
                    // common case) without a trip through the states.
                    i = skip_ws(b, i);
                    let Some(&c) = b.get(i) else {
                        break 'run;
                    };
                    let object = (stack >> depth.saturating_sub(1)) & 1 == 1;
                    match c {
                        b',' => {
                            if depth == 2 && self.in_target {
                                self.comma_in_target(i)?;
                            }
                            if !object {
                                st = State::Value;
                                i += 1;
                                break;
                            }
                            i = skip_ws(b, i + 1);
                            match b.get(i) {
                                Some(b'"') => step!(self.member(b, i, depth, out)?),
                                Some(_) => return Err(err("expected an object key")),
                                None => {
                                    st = State::Key;
                                    break;
                                }
                            }
                            if st != State::After {
                                break;
                            }
                        }
                        b'}' | b']' => {
                            if (c == b'}') != object {
                                return Err(err("mismatched bracket"));
                            }
                            if depth <= 4 {
                                self.close_hook(b, i, depth, out)?;
                            }
                            depth -= 1;
                            i += 1;
                            if depth == 0 {
                                st = State::Done;
                                break;
                            }
                        }
                        _ => return Err(err("expected `,` or the end of a container")),
                    }
                },
                State::Value | State::ArrFirst | State::Start => {
                    i = skip_ws(b, i);
                    let Some(&c) = b.get(i) else {
                        break;
                    };
                    if st == State::ArrFirst && c == b']' {
                        if depth <= 4 {
                            self.close_hook(b, i, depth, out)?;
                        }
                        depth -= 1;
                        st = State::After;
                        i += 1;
                        continue;
                    }
                    if st == State::Start && c != b'{' {
                        return Err(err("the top-level value is not an object"));
                    }
                    if self.hooks_value(depth) {
                        self.value_hook(b, i, c, depth, out)?;
                    }
                    match c {
                        b'"' => {
                            st = State::Str;
                            str_key = false;
                            i += 1;
                        }
                        b'{' | b'[' => open!(i, c == b'{'),
                        b'-' | b'0'..=b'9' => match scan_number(b, i, c) {
                            Some(Ok(end)) => {
                                st = State::After;
                                i = end;
                            }
                            Some(Err(())) => return Err(err("invalid number")),
                            None => {
                                // The chunk ends inside the number.
                                st = match c {
                                    b'-' => State::NumMinus,
                                    b'0' => State::NumZero,
                                    _ => State::NumInt,
                                };
                                i += 1;
                            }
                        },
                        b't' | b'f' | b'n' => {
                            if let Some(end) = literal_end(b, i, c) {
                                st = State::After;
                                i = end;
                            } else {
                                self.lit = literal(c);
                                self.lit_pos = 1;
                                st = State::Lit;
                                i += 1;
                            }
                        }
                        _ => return Err(err("expected a value")),
                    }
                }
                State::Escape => {
                    match b[i] {
                        e if simple_escape(e) => st = State::Str,
                        b'u' => {
                            st = State::Hex;
                            self.hex_n = 0;
                            self.hex_val = 0;
                            self.hex_low = false;
                        }
                        _ => return Err(err("invalid escape in a string")),
                    }
                    i += 1;
                }
                State::Hex => {
                    let Some(d) = hex_digit(b[i]) else {
                        return Err(err("invalid \\u escape in a string"));
                    };
                    self.hex_val = self.hex_val * 16 + d;
                    self.hex_n += 1;
                    if self.hex_n == 4 {
                        let v = self.hex_val;
                        let low = (0xDC00..=0xDFFF).contains(&v);
                        st = if self.hex_low {
                            if !low {
                                return Err(err("unpaired surrogate in a string"));
                            }
                            State::Str
                        } else if (0xD800..=0xDBFF).contains(&v) {
                            State::LowBackslash
                        } else if low {
                            return Err(err("unpaired surrogate in a string"));
                        } else {
                            State::Str
                        };
                    }
                    i += 1;
                }
                State::LowBackslash => {
                    if b[i] != b'\\' {
                        return Err(err("unpaired surrogate in a string"));
                    }
                    st = State::LowU;
                    i += 1;
                }
                State::LowU => {
                    if b[i] != b'u' {
                        return Err(err("unpaired surrogate in a string"));
                    }
                    st = State::Hex;
                    self.hex_n = 0;
                    self.hex_val = 0;
                    self.hex_low = true;
                    i += 1;
                }
                State::Utf8 => {
                    let c = b[i];
                    if c < self.utf8_lo || c > self.utf8_hi {
                        return Err(err("invalid UTF-8 in a string"));
                    }
                    self.utf8_lo = 0x80;
                    self.utf8_hi = 0xBF;
                    self.utf8_left -= 1;
                    if self.utf8_left == 0 {
                        st = State::Str;
                    }
                    i += 1;
                }
                State::NumMinus => {
                    st = match b[i] {
                        b'0' => State::NumZero,
                        b'1'..=b'9' => State::NumInt,
                        _ => return Err(err("invalid number")),
                    };
                    i += 1;
                }
                State::NumInt | State::NumFrac | State::NumExpDigits => {
                    while i < n && b[i].is_ascii_digit() {
                        i += 1;
                    }
                    if i >= n {
                        break;
                    }
                    st = match (st, b[i]) {
                        (State::NumInt, b'.') => State::NumDot,
                        (State::NumInt | State::NumFrac, b'e' | b'E') => State::NumExp,
                        _ => {
                            // The number ends here; this byte is read again.
                            st = State::After;
                            continue;
                        }
                    };
                    i += 1;
                }
                State::NumZero => {
                    st = match b[i] {
                        b'.' => State::NumDot,
                        b'e' | b'E' => State::NumExp,
                        _ => {
                            st = State::After;
                            continue;
                        }
                    };
                    i += 1;
                }
                State::NumDot => {
                    if !b[i].is_ascii_digit() {
                        return Err(err("invalid number"));
                    }
                    st = State::NumFrac;
                    i += 1;
                }
                State::NumExp | State::NumExpSign => {
                    st = match b[i] {
                        b'0'..=b'9' => State::NumExpDigits,
                        b'+' | b'-' if st == State::NumExp => State::NumExpSign,
                        _ => return Err(err("invalid number")),
                    };
                    i += 1;
                }
                State::Lit => {
                    if b[i] != self.lit[self.lit_pos] {
                        return Err(err("invalid literal"));
                    }
                    self.lit_pos += 1;
                    if self.lit_pos == self.lit.len() {
                        st = State::After;
                    }
                    i += 1;
                }
                State::Done => {
                    i = skip_ws(b, i);
                    if i < n {
                        return Err(err("data after the JSON value"));
                    }
                }
            }
        }
        self.state = st;
        self.depth = depth;
        self.stack = stack;
        self.str_key = str_key;
        // End of the chunk: carry what is held back or being captured.
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
                4 if !may_be(raw, NAMESPACE) => self.next_is_ns = false,
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

    fn too_big(&self) -> BodyError {
        err(format_args!(
            "an element of `{}` is larger than maxJsonBodyBytes ({} bytes)",
            self.shape.target_name(),
            self.max_body_bytes
        ))
    }

    /// The lead byte of a UTF-8 sequence that the fast path could not check.
    fn utf8_lead(&mut self, c: u8) -> Result<(), BodyError> {
        let (left, lo, hi) = match c {
            0xC2..=0xDF => (1, 0x80, 0xBF),
            0xE0 => (2, 0xA0, 0xBF),
            0xE1..=0xEC | 0xEE..=0xEF => (2, 0x80, 0xBF),
            0xED => (2, 0x80, 0x9F),
            0xF0 => (3, 0x90, 0xBF),
            0xF1..=0xF3 => (3, 0x80, 0xBF),
            0xF4 => (3, 0x80, 0x8F),
            _ => return Err(err("invalid UTF-8 in a string")),
        };
        self.utf8_left = left;
        self.utf8_lo = lo;
        self.utf8_hi = hi;
        Ok(())
    }

    fn start_capture(&mut self, kind: Capture, from: usize) {
        self.capture = kind;
        self.cap_from = from;
        self.cap_buf.clear();
        self.cap_overflow = false;
    }

    fn cap_append(&mut self, bytes: &[u8]) {
        if self.cap_overflow || self.cap_buf.len() + bytes.len() > self.capture.limit() {
            self.cap_overflow = true;
        } else {
            self.cap_buf.extend_from_slice(bytes);
        }
    }

    /// The closing quote, at `i`, of a string being captured.
    fn end_capture(&mut self, b: &[u8], i: usize, depth: usize) -> Result<(), BodyError> {
        let piece = &b[self.cap_from..i];
        let capture = self.capture;
        if self.cap_buf.is_empty() && !self.cap_overflow {
            // All of the string is in this chunk: it is looked at in place.
            self.capture = Capture::None;
            let raw = Some(piece).filter(|raw| raw.len() <= capture.limit());
            return self.captured(capture, raw, depth);
        }
        self.cap_append(piece);
        self.capture = Capture::None;
        let held = std::mem::take(&mut self.cap_buf);
        let result = self.captured(capture, (!self.cap_overflow).then_some(&held[..]), depth);
        self.cap_buf = held;
        result
    }

    /// A captured string, raw (still escaped; `None` if longer than its limit), in
    /// an object at `depth`.
    fn captured(
        &mut self,
        capture: Capture,
        raw: Option<&[u8]>,
        depth: usize,
    ) -> Result<(), BodyError> {
        match capture {
            Capture::Key => self.key_hook(raw, depth),
            Capture::Namespace => {
                let Some(raw) = raw else {
                    return Err(err("a namespace value is too long"));
                };
                let ns = decode(raw, &mut self.scratch)?;
                self.namespace.clear();
                self.namespace.extend_from_slice(ns);
                self.ns_seen = true;
                Ok(())
            }
            Capture::None => Ok(()),
        }
    }

    /// A key at a depth we look at (in an object at `depth`), raw as in
    /// [`JsonFilter::captured`].
    fn key_hook(&mut self, raw: Option<&[u8]>, depth: usize) -> Result<(), BodyError> {
        let is = |want: &[u8], scratch: &mut Vec<u8>| match raw {
            Some(raw) => key_is(raw, want, scratch),
            None => Ok(false),
        };
        match depth {
            1 => {
                let shape = self.shape;
                let mut found = None;
                for (idx, want) in shape.top_keys.iter().enumerate() {
                    if is(want, &mut self.scratch)? {
                        found = Some(idx);
                        break;
                    }
                }
                let Some(idx) = found else {
                    let Some(raw) = raw else {
                        return Err(err("unexpected (long) top-level key"));
                    };
                    let shown = String::from_utf8_lossy(raw);
                    return Err(err(format_args!(
                        "unexpected top-level key \"{}\"",
                        shown.chars().take(40).collect::<String>()
                    )));
                };
                if self.top_seen & (1 << idx) != 0 {
                    return Err(err(format_args!(
                        "top-level key \"{}\" appears twice",
                        String::from_utf8_lossy(shape.top_keys[idx])
                    )));
                }
                self.top_seen |= 1 << idx;
                self.top_is_target = idx == shape.target;
            }
            3 => {
                let is_ref = is(self.shape.ref_key, &mut self.scratch)?;
                if is_ref {
                    if self.ref_seen {
                        return Err(err(format_args!(
                            "an element of `{}` has `{}` twice",
                            self.shape.target_name(),
                            self.shape.ref_name()
                        )));
                    }
                    self.ref_seen = true;
                }
                self.next_is_ref = is_ref;
            }
            _ => {
                let is_ns = is(NAMESPACE, &mut self.scratch)?;
                if is_ns {
                    if self.ns_key_seen {
                        return Err(err(format_args!(
                            "an element of `{}` has `{}.namespace` twice",
                            self.shape.target_name(),
                            self.shape.ref_name()
                        )));
                    }
                    self.ns_key_seen = true;
                }
                self.next_is_ns = is_ns;
            }
        }
        Ok(())
    }

    /// Whether [`JsonFilter::value_hook`] acts on a value in a container at `depth`
    /// (asked first, so that most values cost no call).
    #[inline(always)]
    fn hooks_value(&self, depth: usize) -> bool {
        match depth {
            1 => self.top_is_target,
            2 => self.in_target,
            3 => self.in_target && self.next_is_ref,
            4 => self.in_ref && self.next_is_ns,
            _ => false,
        }
    }

    /// The first byte `c` (at `i`) of a value in a container at `depth`, where
    /// [`JsonFilter::hooks_value`].
    fn value_hook(
        &mut self,
        b: &[u8],
        i: usize,
        c: u8,
        depth: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), BodyError> {
        match depth {
            1 if self.top_is_target => match c {
                b'[' => {
                    // Everything after `[` is held back until decided.
                    out.extend_from_slice(&b[self.mark..=i]);
                    self.mark = i + 1;
                    self.holding = true;
                    self.in_target = true;
                }
                b'n' => {}
                _ => {
                    return Err(err(format_args!(
                        "`{}` is not an array",
                        self.shape.target_name()
                    )))
                }
            },
            2 if self.in_target => {
                if c != b'{' {
                    return Err(err(format_args!(
                        "an element of `{}` is not an object",
                        self.shape.target_name()
                    )));
                }
                self.counters.seen += 1;
                self.ref_seen = false;
                self.ns_key_seen = false;
                self.ns_seen = false;
                self.next_is_ref = false;
                self.next_is_ns = false;
            }
            3 if self.in_target && self.next_is_ref => {
                if c != b'{' {
                    return Err(err(format_args!(
                        "`{}` of an element of `{}` is not an object",
                        self.shape.ref_name(),
                        self.shape.target_name()
                    )));
                }
                self.in_ref = true;
            }
            4 if self.in_ref && self.next_is_ns => {
                if c != b'"' {
                    return Err(err(format_args!(
                        "`{}.namespace` of an element of `{}` is not a string",
                        self.shape.ref_name(),
                        self.shape.target_name()
                    )));
                }
                self.start_capture(Capture::Namespace, i + 1);
            }
            _ => {}
        }
        Ok(())
    }

    /// A `,` at `i` between elements of the filtered array.
    fn comma_in_target(&mut self, i: usize) -> Result<(), BodyError> {
        // Drop the whitespace after the previous element and the comma: the next
        // element brings its own comma if it is kept.
        self.check_region(i)?;
        self.pending.clear();
        self.mark = i + 1;
        Ok(())
    }

    /// The held-back region (up to `end` in this chunk) must fit the cap.
    fn check_region(&self, end: usize) -> Result<(), BodyError> {
        if self.pending.len() + (end - self.mark) > self.max_body_bytes {
            return Err(self.too_big());
        }
        Ok(())
    }

    /// The (matching) closer at `i` of a container at `depth` (<= 4).
    fn close_hook(
        &mut self,
        b: &[u8],
        i: usize,
        depth: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), BodyError> {
        match depth {
            4 if self.in_ref => self.in_ref = false,
            3 if self.in_target => self.element_end(b, i, out)?,
            2 if self.in_target => {
                // The end of the array: write the whitespace before `]`, then pass on.
                self.check_region(i)?;
                out.extend_from_slice(&self.pending);
                self.pending.clear();
                out.extend_from_slice(&b[self.mark..i]);
                self.mark = i;
                self.holding = false;
                self.in_target = false;
            }
            1 if self.top_seen & (1 << self.shape.target) == 0 => {
                return Err(err(format_args!(
                    "the body has no `{}`",
                    self.shape.target_name()
                )));
            }
            _ => {}
        }
        Ok(())
    }

    /// The closing brace of an element at `i`: decide it.
    fn element_end(&mut self, b: &[u8], i: usize, out: &mut Vec<u8>) -> Result<(), BodyError> {
        if !self.ref_seen {
            return Err(err(format_args!(
                "an element of `{}` has no `{}`",
                self.shape.target_name(),
                self.shape.ref_name()
            )));
        }
        if !self.ns_seen {
            return Err(err(format_args!(
                "an element of `{}` has no `{}.namespace`",
                self.shape.target_name(),
                self.shape.ref_name()
            )));
        }
        self.check_region(i + 1)?;
        if self.scope.namespace_visible(&self.namespace) {
            if self.kept_any {
                out.push(b',');
            }
            out.extend_from_slice(&self.pending);
            out.extend_from_slice(&b[self.mark..=i]);
            self.kept_any = true;
            self.counters.kept += 1;
        } else {
            self.counters.dropped += 1;
        }
        self.pending.clear();
        self.mark = i + 1;
        Ok(())
    }
}

/// Where [`skip_deep`] stopped, and the scanner's state there.
struct Deep {
    i: usize,
    st: State,
    depth: usize,
    stack: u64,
    str_key: bool,
}

/// Validates quiet JSON (see [`JsonFilter::quiet_floor`]) from `i`, in state `st`
/// (one of [`State::between_tokens`]) at `depth` > `floor`, without the states'
/// bookkeeping: one token after the other, strings and numbers scanned whole.
///
/// It stops at the closer that brings the depth back to `floor` (just after it, in
/// `After`), at the end of the chunk, and at anything it does not handle itself:
/// a token that continues past the chunk, an escape or byte the string fast path
/// leaves to the states, too deep a nesting, or invalid JSON. It stops *before*
/// such a token, in the state the states would be in there, so that they take
/// over as if they had read everything themselves: they report the errors, with
/// their messages. (A string is an exception: it stops inside it, where
/// `scan_string` stopped, in `Str`, after content that `scan_string` checked.)
///
/// Most of a kubelet body is objects whose members hold strings, numbers and more
/// objects, so those have a path of their own at the top of the loop: compiled
/// from wasm, the general steps cost about half as much again per member (the
/// depth, the nesting and `next` live on the stack there; this path rarely
/// touches them and reads each byte between tokens once).
#[inline(never)]
fn skip_deep(
    b: &[u8],
    mut i: usize,
    st: State,
    mut depth: usize,
    mut stack: u64,
    floor: usize,
) -> Deep {
    macro_rules! stop {
        ($st:expr) => {
            stop!($st, false)
        };
        ($st:expr, $key:expr) => {
            return Deep {
                i,
                st: $st,
                depth,
                stack,
                str_key: $key,
            }
        };
    }
    // Closes the container at `depth` with the byte at `i`: stops on reaching `floor`.
    macro_rules! close {
        () => {{
            depth -= 1;
            i += 1;
            if depth == floor {
                stop!(State::After);
            }
        }};
    }
    // What comes next: a key (its string, then `:` and a value), a value, or what
    // follows a value. One loop, so that the string scan is inlined once.
    #[derive(PartialEq)]
    enum Next {
        Key,
        Value,
        After,
    }
    let mut next = match st {
        State::After => Next::After,
        State::Key => Next::Key,
        State::ObjFirst => {
            i = skip_ws(b, i);
            match b.get(i) {
                Some(b'"') => Next::Key,
                Some(b'}') => {
                    close!();
                    Next::After
                }
                _ => stop!(st),
            }
        }
        State::ArrFirst => {
            i = skip_ws(b, i);
            match b.get(i) {
                Some(b']') => {
                    close!();
                    Next::After
                }
                Some(_) => Next::Value,
                None => stop!(st),
            }
        }
        _ => Next::Value,
    };
    loop {
        if next == Next::Key {
            // The hot path: an object's members, one after the other, as long as
            // their values are strings, numbers, literals or objects (entered and
            // left here too) and the whitespace has a usual shape (see
            // `next_token`). Anything else is left, where it is, to the steps
            // below: a key they read as usual, a value, or what follows a value.
            // The innermost container is an object throughout.
            (i, next) = 'members: {
                let (mut at, c) = next_token(b, i);
                if c != b'"' {
                    break 'members (i, Next::Key);
                }
                loop {
                    // A key's quote is at `at`.
                    let Ok(j) = scan_string(b, at + 1) else {
                        break 'members (at, Next::Key);
                    };
                    let (colon, c) = next_token(b, j + 1);
                    if c != b':' {
                        break 'members (at, Next::Key);
                    }
                    let (v, c) = next_token(b, colon + 1);
                    let value_end = if c == b'"' {
                        scan_string(b, v + 1).map(|j| j + 1).ok()
                    } else if c.is_ascii_digit() || c == b'-' {
                        scan_number(b, v, c).and_then(Result::ok)
                    } else if c == b'{' {
                        let (k, c) = next_token(b, v + 1);
                        if c == b'"' && depth < MAX_DEPTH {
                            stack |= 1 << depth;
                            depth += 1;
                            at = k;
                            continue;
                        }
                        (c == b'}').then_some(k + 1)
                    } else if matches!(c, b't' | b'f' | b'n') {
                        literal_end(b, v, c)
                    } else {
                        None
                    };
                    let Some(mut end) = value_end else {
                        break 'members (v, Next::Value);
                    };
                    // After a value: `,` and the next key, or closers.
                    loop {
                        let (k, c) = next_token(b, end);
                        if c == b',' {
                            let (key, c) = next_token(b, k + 1);
                            if c != b'"' {
                                break 'members (end, Next::After);
                            }
                            at = key;
                            break;
                        }
                        if c != b'}' {
                            break 'members (end, Next::After);
                        }
                        i = k;
                        close!();
                        end = i;
                        // Closed into an array: its elements are the steps' below.
                        if (stack >> (depth - 1)) & 1 == 0 {
                            break 'members (end, Next::After);
                        }
                    }
                }
            };
        }
        if next != Next::After {
            let key = next == Next::Key;
            i = skip_ws(b, i);
            let Some(&c) = b.get(i) else {
                stop!(if key { State::Key } else { State::Value });
            };
            if key && c != b'"' {
                stop!(State::Key);
            }
            // Tested by likelihood, one after the other: a `match` became jump tables.
            if c == b'"' {
                let j = match scan_string(b, i + 1) {
                    Ok(j) => j,
                    Err(at) => {
                        i = at;
                        stop!(State::Str, key);
                    }
                };
                i = j + 1;
                if key {
                    i = skip_ws(b, i);
                    if b.get(i) != Some(&b':') {
                        stop!(State::Colon);
                    }
                    i += 1;
                    next = Next::Value;
                    continue;
                }
            } else if c.is_ascii_digit() || c == b'-' {
                match scan_number(b, i, c) {
                    Some(Ok(end)) => i = end,
                    _ => stop!(State::Value),
                }
            } else if c == b'{' || c == b'[' {
                if depth >= MAX_DEPTH {
                    stop!(State::Value);
                }
                let object = c == b'{';
                stack = (stack & !(1 << depth)) | (u64::from(object) << depth);
                depth += 1;
                i = skip_ws(b, i + 1);
                match (object, b.get(i)) {
                    (true, Some(b'"')) => {
                        next = Next::Key;
                        continue;
                    }
                    (true, Some(b'}')) | (false, Some(b']')) => close!(),
                    (false, Some(_)) => continue,
                    (true, _) => stop!(State::ObjFirst),
                    (false, None) => stop!(State::ArrFirst),
                }
            } else if matches!(c, b't' | b'f' | b'n') {
                let Some(end) = literal_end(b, i, c) else {
                    stop!(State::Value);
                };
                i = end;
            } else {
                stop!(State::Value);
            }
        }
        // After a value: `,` or closers.
        loop {
            i = skip_ws(b, i);
            let Some(&c) = b.get(i) else {
                stop!(State::After);
            };
            let object = (stack >> (depth - 1)) & 1 == 1;
            // `,` first; `c | 0x20` is `}` for `}` and `]` only.
            if c == b',' {
                i += 1;
                next = if object { Next::Key } else { Next::Value };
                break;
            } else if c | 0x20 == b'}' && (c == b'}') == object {
                close!();
            } else {
                stop!(State::After);
            }
        }
    }
}

/// Bytes that end a run of plain string content: `"`, `\`, control characters and
/// non-ASCII (checked as UTF-8).
#[inline]
fn special(c: u8) -> bool {
    c == b'"' || c == b'\\' || !(0x20..0x80).contains(&c)
}

/// Scans string content from `i` up to its closing quote, checking the escapes that
/// lie in the chunk: `Ok(index of the quote)`, or `Err(index)` where the states have
/// to take over (chunk end, surrogate escape, non-ASCII, anything invalid).
///
/// Non-ASCII is left to the states (which check its UTF-8) because checking it here
/// takes a call, and a call in [`skip_deep`]'s loop sends the loop's variables to
/// the stack once compiled from wasm; kubelet bodies are ASCII (names are DNS
/// labels), so the states see a few annotations at most.
#[inline(always)]
fn scan_string(b: &[u8], mut i: usize) -> Result<usize, usize> {
    loop {
        i = skip_plain_inline(b, i);
        match b.get(i) {
            Some(b'"') => return Ok(i),
            Some(b'\\') => i = step_escapes(b, i)?,
            _ => return Err(i),
        }
    }
}

/// The length of the escape whose `\` is at `i`, if it is whole in `b` and not a
/// surrogate (those go to the states, which pair them).
#[inline(always)]
fn escape_len(b: &[u8], i: usize) -> Option<usize> {
    match b.get(i + 1) {
        Some(&e) if simple_escape(e) => Some(2),
        Some(b'u') => match b.get(i + 2..i + 6).and_then(hex4_quick) {
            Some(v) if !(0xD800..=0xDFFF).contains(&v) => Some(6),
            _ => None,
        },
        _ => None,
    }
}

/// Steps over the escape at `i` and over those that follow it in the next
/// sixteen-byte blocks, keeping each block's mask of [`special`] bytes: a string
/// with one escape tends to have many (`/pods` carries JSON in its
/// `last-applied-configuration` annotations, a `\"` every few bytes), and going
/// back to [`skip_plain_inline`] after each costs a block load and a branch that
/// depends on the distance to the next. `Ok(index)` where plain content or
/// another special byte resumes; `Err(index)` of an escape the states have to
/// read. (Measured: `/pods` 4–16 % faster in wasmtime, although callgrind counts
/// more instructions.)
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[inline(always)]
fn step_escapes(b: &[u8], i: usize) -> Result<usize, usize> {
    let mut at = i + escape_len(b, i).ok_or(i)?;
    while let Some(block) = b.get(at..at + 16) {
        let mut mask = u32::from(special_lanes(block));
        loop {
            if mask == 0 {
                at += 16;
                break;
            }
            let p = at + mask.trailing_zeros() as usize;
            if b.get(p) != Some(&b'\\') {
                return Ok(p);
            }
            let next = p + escape_len(b, p).ok_or(p)?;
            if next >= at + 16 {
                at = next;
                break;
            }
            // Bits of bytes before `next` (the escape's own included) are done.
            mask &= u32::MAX << (next - at);
        }
    }
    Ok(at)
}

/// Steps over the escape at `i`: `Ok(index after it)`, or `Err(i)` when the states
/// have to read it.
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
#[inline(always)]
fn step_escapes(b: &[u8], i: usize) -> Result<usize, usize> {
    Ok(i + escape_len(b, i).ok_or(i)?)
}

/// [`skip_plain_inline`] for the scanner's main loop, which has no registers to
/// spare.
#[inline(never)]
fn skip_plain(b: &[u8], i: usize) -> usize {
    skip_plain_inline(b, i)
}

/// The index of the first byte at or after `i` that is [`special`] (or `b.len()`):
/// with wasm SIMD (the release module is built with `simd128`) sixteen bytes at a
/// time, then as below.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[inline(always)]
fn skip_plain_inline(b: &[u8], mut i: usize) -> usize {
    while let Some(block) = b.get(i..i + 16) {
        let mask = special_lanes(block);
        if mask != 0 {
            return i + mask.trailing_zeros() as usize;
        }
        i += 16;
    }
    skip_plain_swar(b, i)
}

/// The [`special`] bytes of a sixteen-byte `block`: bit `k` for byte `k`.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[inline(always)]
fn special_lanes(block: &[u8]) -> u16 {
    use core::arch::wasm32::{
        u64x2, u8x16_bitmask, u8x16_eq, u8x16_ge, u8x16_splat, u8x16_sub, v128_or,
    };
    let (lo, hi) = block.split_at(8);
    let word = |half: &[u8]| <[u8; 8]>::try_from(half).map_or(0, u64::from_le_bytes);
    let v = u64x2(word(lo), word(hi));
    let quote = u8x16_eq(v, u8x16_splat(b'"'));
    let backslash = u8x16_eq(v, u8x16_splat(b'\\'));
    // Below 0x20 or from 0x80: outside 0x20..0x80 after subtracting 0x20.
    let other = u8x16_ge(u8x16_sub(v, u8x16_splat(0x20)), u8x16_splat(0x60));
    u8x16_bitmask(v128_or(v128_or(quote, backslash), other))
}

#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
#[inline(always)]
fn skip_plain_inline(b: &[u8], i: usize) -> usize {
    skip_plain_swar(b, i)
}

/// The index of the first byte at or after `i` that is [`special`] (or `b.len()`),
/// eight bytes at a time.
#[inline(always)]
fn skip_plain_swar(b: &[u8], mut i: usize) -> usize {
    while let Some(Ok(word)) = b.get(i..i + 8).map(<[u8; 8]>::try_from) {
        let w = u64::from_le_bytes(word);
        // `w ^ 0x02` is below 0x21 exactly for control characters and `"`;
        // `w ^ 0x5C` is zero for `\`; the high bit marks non-ASCII. (Bits 7 of the
        // xored words are those of `w`, so one `!w` serves all three tests.)
        let x = (w ^ (LO * 0x02)).wrapping_sub(LO * 0x21);
        let s = (w ^ (LO * u64::from(b'\\'))).wrapping_sub(LO);
        let hit = (((x | s) & !w) | w) & HI;
        if hit != 0 {
            // Borrows only propagate upwards from a real hit, so the lowest flagged
            // byte is the first special one.
            return i + (hit.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < b.len() && !special(b[i]) {
        i += 1;
    }
    i
}

/// Whether `\` and `e` are a whole escape (`\"`, `\\`, `\/`, `\b`, `\f`, `\n`, `\r`,
/// `\t`): a bit of one of two words, where a `match` became a jump table.
#[inline(always)]
fn simple_escape(e: u8) -> bool {
    const BELOW_64: u64 = 1 << b'"' | 1 << b'/';
    const FROM_64: u64 = 1 << (b'\\' - 64)
        | 1 << (b'b' - 64)
        | 1 << (b'f' - 64)
        | 1 << (b'n' - 64)
        | 1 << (b'r' - 64)
        | 1 << (b't' - 64);
    let bits = if e < 64 { BELOW_64 } else { FROM_64 };
    e < 128 && (bits >> (e & 63)) & 1 == 1
}

/// The length of the UTF-8 sequence a lead byte starts (0: not a lead byte).
#[inline]
fn utf8_len(c: u8) -> usize {
    match c {
        0xC2..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF4 => 4,
        _ => 0,
    }
}

#[inline]
fn hex_digit(d: u8) -> Option<u32> {
    match d {
        b'0'..=b'9' => Some(u32::from(d - b'0')),
        b'a'..=b'f' => Some(u32::from(d - b'a' + 10)),
        b'A'..=b'F' => Some(u32::from(d - b'A' + 10)),
        _ => None,
    }
}

#[inline]
fn hex4_quick(digits: &[u8]) -> Option<u32> {
    digits
        .iter()
        .try_fold(0u32, |v, &d| Some(v * 16 + hex_digit(d)?))
}

/// A number starting with `c` at `i` that ends inside `b`: `Some(Ok(end))`;
/// `Some(Err(()))` when it is malformed, `None` when the chunk ends first. (The
/// callers have read `c` already: reading it again costs a bounds check.)
#[inline(always)]
fn scan_number(b: &[u8], mut i: usize, c: u8) -> Option<Result<usize, ()>> {
    let first = if c == b'-' {
        i += 1;
        *b.get(i)?
    } else {
        c
    };
    match first {
        b'0' => i += 1,
        b'1'..=b'9' => i = skip_digits(b, i + 1),
        _ => return Some(Err(())),
    }
    // The byte after the digits, read once. (Each `?` on a read is where the chunk
    // ends, and the number may go on in the next one.)
    let mut c = *b.get(i)?;
    if c == b'.' {
        i += 1;
        if !b.get(i)?.is_ascii_digit() {
            return Some(Err(()));
        }
        i = skip_digits(b, i + 1);
        c = *b.get(i)?;
    }
    if c | 0x20 == b'e' {
        i += 1;
        if matches!(*b.get(i)?, b'+' | b'-') {
            i += 1;
        }
        if !b.get(i)?.is_ascii_digit() {
            return Some(Err(()));
        }
        i = skip_digits(b, i + 1);
        b.get(i)?;
    }
    Some(Ok(i))
}

/// The index of the first byte at or after `i` that is not an ASCII digit (or
/// `b.len()`), eight bytes at a time.
#[inline(always)]
fn skip_digits(b: &[u8], mut i: usize) -> usize {
    while let Some(Ok(word)) = b.get(i..i + 8).map(<[u8; 8]>::try_from) {
        let w = u64::from_le_bytes(word);
        // Per byte, with the high bit cleared (so that no carry crosses a byte):
        // the high bit of `+ 0x46` is set from `:` on, that of `+ 0x50` from `0` on.
        let low = w & !HI;
        let above = (low + LO * 0x46) & HI;
        let from_zero = (low + LO * 0x50) & HI;
        let other = (w | above | !from_zero) & HI;
        if other != 0 {
            return i + (other.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while b.get(i).is_some_and(u8::is_ascii_digit) {
        i += 1;
    }
    i
}

/// The literal that starts with `c` (`t`, `f` or `n`).
fn literal(c: u8) -> &'static [u8] {
    match c {
        b't' => b"true",
        b'f' => b"false",
        _ => b"null",
    }
}

/// The end of the [`literal`] that starts with `c`, at `i`, if all of it is in `b`.
/// Its last four bytes are compared as one word (a slice comparison is a `memcmp`
/// call in wasm); the first byte of `false` is `c`.
#[inline(always)]
fn literal_end(b: &[u8], i: usize, c: u8) -> Option<usize> {
    let (tail, end) = match c {
        b't' => (*b"true", i + 4),
        b'f' => (*b"alse", i + 5),
        _ => (*b"null", i + 4),
    };
    let got: [u8; 4] = b.get(end - 4..end)?.try_into().ok()?;
    (got == tail).then_some(end)
}

/// The index of the first byte at or after `i` that is not JSON whitespace.
/// Pretty-printed JSON has one space after each `:` and a line break plus
/// indentation before each member, so those are tried first ([`next_token`]):
/// the general loop costs dozens of instructions per call once compiled from wasm.
#[inline(always)]
fn skip_ws(b: &[u8], i: usize) -> usize {
    match next_token(b, i) {
        (j, c) if c != 0 => j,
        _ => skip_ws_run(b, i),
    }
}

/// The index of the first byte at or after `i` that is not JSON whitespace, and
/// that byte, for the usual shapes of whitespace (none, one space, a line break
/// and up to fifteen spaces of indentation), without a call. Otherwise, and at
/// the end of `b`, the byte is 0 (which starts no token).
#[inline(always)]
fn next_token(b: &[u8], i: usize) -> (usize, u8) {
    let token = |j: usize| match b.get(j) {
        Some(&c) if c > b' ' => (j, c),
        _ => (i, 0),
    };
    match b.get(i) {
        Some(&c) if c > b' ' => (i, c),
        Some(b' ') => token(i + 1),
        Some(b'\n') => match non_space_in_16(b, i + 1) {
            Some(j) => token(j),
            None => (i, 0),
        },
        _ => (i, 0),
    }
}

/// [`skip_ws`] for any mix of whitespace.
#[inline(never)]
fn skip_ws_run(b: &[u8], mut i: usize) -> usize {
    while let Some(&c) = b.get(i) {
        match c {
            b' ' => i = skip_spaces(b, i),
            _ if c < b' ' && (OTHER_WS >> c) & 1 == 1 => i += 1,
            _ => break,
        }
    }
    i
}

/// `\n`, `\r` and `\t` as bits of a word (a shift and a test, where a `match`
/// became a jump table).
const OTHER_WS: u32 = 1 << b'\n' | 1 << b'\r' | 1 << b'\t';

/// The bytes of a JSON string's raw (already validated) content, unescaped. Borrows
/// `raw` when there is nothing to unescape.
fn decode<'a>(raw: &'a [u8], scratch: &'a mut Vec<u8>) -> Result<&'a [u8], BodyError> {
    let Some(first) = memchr::memchr(b'\\', raw) else {
        return Ok(raw);
    };
    scratch.clear();
    scratch.extend_from_slice(&raw[..first]);
    let mut i = first;
    while i < raw.len() {
        let c = raw[i];
        if c != b'\\' {
            scratch.push(c);
            i += 1;
            continue;
        }
        let e = raw.get(i + 1).copied().unwrap_or(0);
        i += 2;
        let byte = match e {
            b'"' => b'"',
            b'\\' => b'\\',
            b'/' => b'/',
            b'b' => 0x08,
            b'f' => 0x0C,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'u' => {
                let mut cp = hex4(raw, i)?;
                i += 4;
                if (0xD800..=0xDBFF).contains(&cp) {
                    let low = hex4(raw, i + 2)?;
                    i += 6;
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (low.wrapping_sub(0xDC00) & 0x3FF);
                }
                let ch = char::from_u32(cp).ok_or_else(|| err("invalid \\u escape"))?;
                let mut buf = [0u8; 4];
                scratch.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                continue;
            }
            _ => return Err(err("invalid escape in a string")),
        };
        scratch.push(byte);
    }
    Ok(scratch)
}

/// Whether a raw (escaped, validated) key is `want` (ASCII, not empty) once
/// unescaped: equal if no longer, else decoded if it [`may_be`] it.
fn key_is(raw: &[u8], want: &[u8], scratch: &mut Vec<u8>) -> Result<bool, BodyError> {
    if raw.len() <= want.len() {
        return Ok(raw == want);
    }
    if !may_be(raw, want) {
        return Ok(false);
    }
    Ok(decode(raw, scratch)? == want)
}

/// Whether a raw key may be `want` (ASCII, not empty) once unescaped. An escape
/// takes two to six raw bytes per decoded byte, so it is no shorter than `want`, at
/// most six times as long, and starts as `want` does or with `\`.
#[inline(always)]
fn may_be(raw: &[u8], want: &[u8]) -> bool {
    raw.len() >= want.len()
        && raw.len() <= 6 * want.len()
        && (raw.first() == want.first() || raw.first() == Some(&b'\\'))
}

fn hex4(raw: &[u8], at: usize) -> Result<u32, BodyError> {
    raw.get(at..at + 4)
        .and_then(hex4_quick)
        .ok_or_else(|| err("invalid \\u escape"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::snapshot::catalog::Catalog;
    use crate::snapshot::Snapshot;
    use std::rc::Rc;

    fn scope(tenant: Option<&str>, tenancy: bool) -> RequestScope {
        let config = if tenancy {
            r#"{"tenancy": {"tenant": {"header": "x-tenant"}, "namespaceLabel": "tenant"},
                "snapshot": {"cluster": "cp"}}"#
        } else {
            r#"{"snapshot": {"cluster": "cp"}}"#
        };
        let config = Config::parse(config.as_bytes()).unwrap();
        let snapshot = Snapshot::parse(
            br#"{"version":"1","generatedAt":"t","namespaces":{
                "shop":{"labels":{"tenant":"acme"}},"db":{"labels":{"tenant":"acme"}},
                "bank":{"labels":{"tenant":"globex"}}}}"#,
        )
        .unwrap();
        RequestScope::new(Rc::new(Catalog::new(&config, Some(&snapshot))), tenant)
    }

    fn run(endpoint: JsonEndpoint, body: &str) -> Result<String, BodyError> {
        run_split(endpoint, body.as_bytes(), &[])
    }

    fn run_split(
        endpoint: JsonEndpoint,
        body: &[u8],
        splits: &[usize],
    ) -> Result<String, BodyError> {
        let mut f = JsonFilter::new(endpoint, scope(Some("acme"), true), 1 << 20);
        let mut out = Vec::new();
        let mut at = 0;
        for &s in splits.iter().chain(std::iter::once(&body.len())) {
            f.feed(&body[at..s], &mut out)?;
            at = s;
        }
        f.finish(&mut out)?;
        Ok(String::from_utf8(out).unwrap())
    }

    fn every_split(endpoint: JsonEndpoint, body: &str) -> Result<String, BodyError> {
        let whole = run(endpoint, body);
        for s in 0..=body.len() {
            let split = run_split(endpoint, body.as_bytes(), &[s]);
            match (&whole, &split) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "split at {s}"),
                (Err(_), Err(_)) => {}
                _ => panic!("split at {s}: {whole:?} vs {split:?}"),
            }
        }
        let bytes: Vec<usize> = (1..body.len()).collect();
        let bytewise = run_split(endpoint, body.as_bytes(), &bytes);
        assert_eq!(whole.is_ok(), bytewise.is_ok());
        if let (Ok(a), Ok(b)) = (&whole, &bytewise) {
            assert_eq!(a, b);
        }
        whole
    }

    use JsonEndpoint::{PodList, StatsSummary};

    #[test]
    fn runs_of_escapes_from_every_offset_of_a_block() {
        // What `/pods` carries in its annotations: escapes every few bytes, here
        // starting at every offset of a sixteen-byte block and crossing blocks,
        // with `\u` escapes, then one invalid escape at each place of the run.
        let run_of_escapes = r#"\"a\\b\/\u00e9\n\"\"\t\u0041z"#.repeat(3);
        for pad in 0..20 {
            let value = format!("{}{run_of_escapes}", "x".repeat(pad));
            let body = format!(
                r#"{{"items":[{{"metadata":{{"namespace":"shop","annotations":{{"a":"{value}"}}}}}}]}}"#
            );
            assert_eq!(every_split(PodList, &body).unwrap(), body);
            // Each escape of the run in turn made invalid (`\q`).
            let run_start = body.find(&value).unwrap() + pad;
            let mut at = run_start;
            while at < run_start + run_of_escapes.len() {
                let mut bad = body.clone();
                bad.replace_range(at + 1..at + 2, "q");
                let refused = run(PodList, &bad).unwrap_err();
                assert!(refused.0.contains("escape"), "{bad}: {refused:?}");
                at += if body[at..].starts_with(r"\u") { 6 } else { 2 };
                at += usize::from(body.as_bytes()[at] != b'\\');
            }
        }
    }

    #[test]
    fn filters_pod_list_items_and_fixes_commas() {
        let body = r#"{"kind":"PodList","apiVersion":"v1","metadata":{},"items":[
  {"metadata":{"name":"a","namespace":"bank"}},
  {"metadata":{"name":"b","namespace":"shop"}},
  {"metadata":{"name":"c","namespace":"bank"}},
  {"metadata":{"name":"d","namespace":"db"}}
]}"#;
        assert_eq!(
            every_split(PodList, body).unwrap(),
            r#"{"kind":"PodList","apiVersion":"v1","metadata":{},"items":[
  {"metadata":{"name":"b","namespace":"shop"}},
  {"metadata":{"name":"d","namespace":"db"}}
]}"#
        );
        let all_foreign =
            r#"{"items": [ {"metadata":{"namespace":"bank"}} , {"metadata":{"namespace":"x"}} ] }"#;
        assert_eq!(
            every_split(PodList, all_foreign).unwrap(),
            r#"{"items": [ ] }"#
        );
        assert_eq!(
            every_split(PodList, r#"{"items":null}"#).unwrap(),
            r#"{"items":null}"#
        );
        assert_eq!(
            every_split(PodList, r#"{"items":[]}"#).unwrap(),
            r#"{"items":[]}"#
        );
    }

    #[test]
    fn filters_summary_pods_and_keeps_node() {
        let body = "{\r\n \"node\": {\"nodeName\":\"n\",\"systemContainers\":[{\"name\":\"kubelet\"}]},\r\n \"pods\": [\r\n  {\"podRef\": {\"name\":\"x\",\"namespace\":\"bank\"}, \"cpu\": {\"usageNanoCores\": 1.5e3}},\r\n  {\"containers\":[{\"namespace\":\"bank\"}],\"podRef\": {\"namespace\":\"s\\u0068op\",\"name\":\"y\"}}\r\n ]\r\n}\r\n";
        let out = every_split(StatsSummary, body).unwrap();
        assert_eq!(
            out,
            "{\r\n \"node\": {\"nodeName\":\"n\",\"systemContainers\":[{\"name\":\"kubelet\"}]},\r\n \"pods\": [\r\n  {\"containers\":[{\"namespace\":\"bank\"}],\"podRef\": {\"namespace\":\"s\\u0068op\",\"name\":\"y\"}}\r\n ]\r\n}\r\n"
        );
    }

    #[test]
    fn only_the_reference_namespace_counts() {
        // `namespace` on the element, in an owner reference, in an annotation, in a
        // nested `metadata`: none of them is the element's namespace.
        let body = r#"{"items":[{"namespace":"shop","spec":{"metadata":{"namespace":"shop"}},
            "metadata":{"ownerReferences":[{"namespace":"shop"}],"annotations":{"namespace":"shop"},
            "namespace":"bank"}}]}"#;
        assert_eq!(every_split(PodList, body).unwrap(), r#"{"items":[]}"#);
        // Without a namespace of its own the element is refused.
        let body = r#"{"items":[{"namespace":"shop","metadata":{"labels":{"namespace":"shop"}}}]}"#;
        assert!(every_split(PodList, body)
            .unwrap_err()
            .0
            .contains("metadata.namespace"));
        let body = r#"{"pods":[{"ref":{"namespace":"shop"}}]}"#;
        assert!(every_split(StatsSummary, body)
            .unwrap_err()
            .0
            .contains("podRef"));
    }

    #[test]
    fn escaped_keys_are_compared_unescaped() {
        let body = r#"{"it\u0065ms":[{"m\u0065tadata":{"n\u0061mespace":"b\u0061nk"}},{"metadata":{"namespace":"shop"}}]}"#;
        assert_eq!(
            every_split(PodList, body).unwrap(),
            r#"{"it\u0065ms":[{"metadata":{"namespace":"shop"}}]}"#
        );
        // An escape first, or a whole key escaped.
        let body = r#"{"items":[{"\u006detadata":{"\u006eamespace":"bank"}},{"metadata":{"\u006e\u0061\u006d\u0065\u0073\u0070\u0061\u0063\u0065":"shop"}}]}"#;
        assert_eq!(
            every_split(PodList, body).unwrap(),
            r#"{"items":[{"metadata":{"\u006e\u0061\u006d\u0065\u0073\u0070\u0061\u0063\u0065":"shop"}}]}"#
        );
        // A duplicate spelled differently is still a duplicate.
        let body = r#"{"items":[{"metadata":{"namespace":"shop","n\u0061mespace":"bank"}}]}"#;
        assert!(every_split(PodList, body).unwrap_err().0.contains("twice"));
    }

    #[test]
    fn refuses_what_it_cannot_filter() {
        for (endpoint, body, why) in [
            (PodList, "", "empty"),
            (PodList, "[]", "not an object"),
            (PodList, r#"{"kind":"PodList"}"#, "no `items`"),
            (PodList, r#"{"items":[],"items":[]}"#, "twice"),
            (
                PodList,
                r#"{"items":[],"extra":1}"#,
                "unexpected top-level key",
            ),
            (PodList, r#"{"items":{}}"#, "not an array"),
            (PodList, r#"{"items":[1]}"#, "not an object"),
            (
                PodList,
                r#"{"items":[{"metadata":{"namespace":"shop"},"metadata":{"namespace":"shop"}}]}"#,
                "twice",
            ),
            (
                PodList,
                r#"{"items":[{"metadata":{"namespace":"shop","namespace":"shop"}}]}"#,
                "twice",
            ),
            (
                PodList,
                r#"{"items":[{"metadata":{"namespace":1}}]}"#,
                "not a string",
            ),
            (
                PodList,
                r#"{"items":[{"metadata":{"namespace":null}}]}"#,
                "not a string",
            ),
            (
                PodList,
                r#"{"items":[{"metadata":"shop"}]}"#,
                "not an object",
            ),
            (
                PodList,
                r#"{"items":[{"metadata":{"namespace":"shop"}}]"#,
                "truncated",
            ),
            (
                PodList,
                r#"{"items":[{"metadata":{"namespace":"shop"}}]} x"#,
                "after",
            ),
            (
                PodList,
                r#"{"items":[{"metadata":{"namespace":"shop"}},]}"#,
                "not an object",
            ),
            (PodList, r#"{"kind":"PodList",}"#, "key"),
            (PodList, r#"{"kind":,"items":[]}"#, "expected a value"),
            (
                PodList,
                r#"{"items":[{"metadata":{"namespace":"shop"}}}]"#,
                "mismatched",
            ),
            (
                PodList,
                r#"{"items":[{"metadata":{"namespace":"sh\op"}}]}"#,
                "escape",
            ),
            (
                PodList,
                r#"{"items":[{"metadata":{"namespace":"\ud800"}}]}"#,
                "surrogate",
            ),
            (
                PodList,
                r#"{"items":[{"metadata":{"namespace":"\udc00\ud800"}}]}"#,
                "surrogate",
            ),
            (
                PodList,
                "{\"items\":[{\"metadata\":{\"namespace\":\"a\tb\"}}]}",
                "control",
            ),
            (
                PodList,
                r#"{"items":[{"metadata":{"namespace":"shop"},"x":01}]}"#,
                "expected `,`",
            ),
            (
                PodList,
                r#"{"items":[{"metadata":{"namespace":"shop"},"x":-}]}"#,
                "number",
            ),
            (
                PodList,
                r#"{"items":[{"metadata":{"namespace":"shop"},"x":1.}]}"#,
                "number",
            ),
            (
                PodList,
                r#"{"items":[{"metadata":{"namespace":"shop"},"x":1e}]}"#,
                "number",
            ),
            (
                PodList,
                r#"{"items":[{"metadata":{"namespace":"shop"},"x":tru}]}"#,
                "literal",
            ),
            (
                StatsSummary,
                r#"{"node":{},"pods":[{"podRef":{}}]}"#,
                "podRef.namespace",
            ),
        ] {
            let e = every_split(endpoint, body).unwrap_err();
            assert!(e.0.contains(why), "{body}: {e}");
        }
        let deep = format!(
            r#"{{"node":{}{}{},"pods":[]}}"#,
            "[".repeat(150),
            "1",
            "]".repeat(150)
        );
        assert!(run(StatsSummary, &deep).unwrap_err().0.contains("nesting"));
        let ok = format!(
            r#"{{"node":{}{}{},"pods":[]}}"#,
            "[".repeat(60),
            "1",
            "]".repeat(60)
        );
        assert_eq!(run(StatsSummary, &ok).unwrap(), ok);
    }

    #[test]
    fn deep_values_are_validated_like_shallow_ones() {
        // Values deep inside an element, and inside `node`, are read by `skip_deep`,
        // which leaves anything wrong to the states: same errors, every split.
        let bad: &[(&[u8], &str)] = &[
            (b"01", "expected `,`"),
            (b"-", "number"),
            (b"1.", "number"),
            (b"1e", "number"),
            (b"1e+", "number"),
            (b"tru", "literal"),
            (b"nul", "literal"),
            (br#""sh\op""#, "escape"),
            (br#""\ud800""#, "surrogate"),
            (br#""\ud800\u0041""#, "surrogate"),
            (br#""\udc00""#, "surrogate"),
            (br#""\u12G4""#, "\\u escape"),
            (b"\"a\tb\"", "control"),
            (b"\"\xC0\x80\"", "UTF-8"),
            (b"\"\xE2\x82\"", "UTF-8"),
            (br#"{"k" 1}"#, "expected `:`"),
            (br#"{"k":1,}"#, "object key"),
            (br#"{,}"#, "object key"),
            (br#"{"k":}"#, "expected a value"),
            (b"[1,]", "expected a value"),
            (b"[,]", "expected a value"),
            (b"[1}", "mismatched"),
            (br#"{"k":1]"#, "mismatched"),
            (b"[1 2]", "expected `,`"),
            (b"x", "expected a value"),
        ];
        let deep = |prefix: &[u8], value: &[u8], suffix: &[u8]| {
            let mut body = prefix.to_vec();
            body.extend_from_slice(value);
            body.extend_from_slice(suffix);
            body
        };
        let contexts: [(JsonEndpoint, &[u8], &[u8]); 3] = [
            (
                PodList,
                br#"{"items":[{"metadata":{"namespace":"shop"},"spec":{"a":[{"b":"#,
                b"}]}}]}",
            ),
            (
                PodList,
                br#"{"items":[{"metadata":{"namespace":"shop","x":{"y":[1, "#,
                b"]}}}]}",
            ),
            (
                StatsSummary,
                br#"{"node":{"a":[[{"b": "#,
                br#"}]]},"pods":[]}"#,
            ),
        ];
        for (endpoint, prefix, suffix) in contexts {
            for (value, why) in bad {
                let body = deep(prefix, value, suffix);
                let whole = run_split(endpoint, &body, &[]).unwrap_err();
                assert!(
                    whole.0.contains(why),
                    "{}: {whole}",
                    String::from_utf8_lossy(&body)
                );
                for s in 0..=body.len() {
                    let e = run_split(endpoint, &body, &[s]).unwrap_err();
                    assert_eq!(e, whole, "split at {s}");
                }
            }
            let good = deep(
                prefix,
                r#"{"k":[true,false,null,-0.5e+3,"\u00e9\ud83d\ude00é"]}"#.as_bytes(),
                suffix,
            );
            let whole = run_split(endpoint, &good, &[]).unwrap();
            for s in 0..=good.len() {
                assert_eq!(run_split(endpoint, &good, &[s]).unwrap(), whole);
            }
            let nested = deep(
                prefix,
                format!("{}1{}", "[".repeat(70), "]".repeat(70)).as_bytes(),
                suffix,
            );
            assert!(run_split(endpoint, &nested, &[])
                .unwrap_err()
                .0
                .contains("nesting"));
        }
    }

    #[test]
    fn utf8_is_validated() {
        let good = "{\"items\":[{\"metadata\":{\"namespace\":\"shop\",\"x\":\"é€𝄞\"}}]}";
        assert_eq!(every_split(PodList, good).unwrap(), good);
        for bad in [
            &b"\xC0\x80"[..],
            b"\xED\xA0\x80",
            b"\xF4\x90\x80\x80",
            b"\xE2\x82",
            b"\x80",
        ] {
            let mut body = br#"{"items":[{"metadata":{"namespace":"shop","x":""#.to_vec();
            body.extend_from_slice(bad);
            body.extend_from_slice(br#""}}]}"#);
            assert!(run_split(PodList, &body, &[]).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn element_over_the_cap_is_refused_for_every_split() {
        let body = format!(
            r#"{{"items":[{{"metadata":{{"namespace":"shop"}},"x":"{}"}}]}}"#,
            "a".repeat(200)
        );
        for cap in [100, 232, 233, 1000] {
            let expect_ok = body.len() - r#"{"items":[]}"#.len() <= cap;
            for s in 0..=body.len() {
                let mut f = JsonFilter::new(PodList, scope(Some("acme"), true), cap);
                let mut out = Vec::new();
                let r = f
                    .feed(&body.as_bytes()[..s], &mut out)
                    .and_then(|()| f.feed(&body.as_bytes()[s..], &mut out))
                    .and_then(|()| f.finish(&mut out));
                assert_eq!(r.is_ok(), expect_ok, "cap {cap} split {s}");
            }
        }
    }

    #[test]
    fn failures_write_nothing_and_stick() {
        let mut f = JsonFilter::new(PodList, scope(Some("acme"), true), 1 << 20);
        let mut out = Vec::new();
        f.feed(br#"{"items":[{"metadata":{"namespace":"shop"}}"#, &mut out)
            .unwrap();
        let before = out.clone();
        assert!(f
            .feed(br#",{"metadata":{"namespace":"shop"}} oops"#, &mut out)
            .is_err());
        assert_eq!(out, before);
        assert!(f.feed(b"]}", &mut out).is_err());
        assert!(f.finish(&mut out).is_err());
    }

    #[test]
    fn passes_through_without_tenancy() {
        let body = b"not json at all { [";
        let mut f = JsonFilter::new(PodList, scope(None, false), 4);
        let mut out = Vec::new();
        f.feed(body, &mut out).unwrap();
        f.finish(&mut out).unwrap();
        assert_eq!(out, body);
        assert_eq!(f.counters().bytes_in, body.len() as u64);
        assert_eq!(f.counters().bytes_out, body.len() as u64);
    }

    #[test]
    fn tenant_mode_without_a_tenant_sees_nothing() {
        let body = br#"{"items":[{"metadata":{"namespace":"shop"}}]}"#;
        let mut f = JsonFilter::new(PodList, scope(None, true), 1 << 20);
        let mut out = Vec::new();
        f.feed(body, &mut out).unwrap();
        f.finish(&mut out).unwrap();
        assert_eq!(out, br#"{"items":[]}"#);
        let c = f.counters();
        assert_eq!((c.seen, c.kept, c.dropped), (1, 0, 1));
    }
}
