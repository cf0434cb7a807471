//! JSON's other tokens: numbers, the literals `true`, `false`, `null`, and
//! whitespace; each as a fast path over a whole token in the chunk, and (numbers,
//! literals) as the byte states that resume a token the chunk cut.
//!
//! Validation only: nothing here looks at what a value says.

use super::scanner::{Cursor, State};
use super::{err, JsonFilter};
use crate::body::BodyError;
use crate::scan::{non_space_in_16, skip_spaces, HI, LO};

/// The number states (`NumMinus` to `NumExpDigits`): the bytes of a number that the
/// chunk cut, from `cur.i`. At a byte that ends the number the state is `After`
/// and the byte is read again.
#[inline(always)]
pub(super) fn number_byte(b: &[u8], cur: &mut Cursor) -> Result<(), BodyError> {
    cur.st = match cur.st {
        State::NumMinus => match b[cur.i] {
            b'0' => State::NumZero,
            b'1'..=b'9' => State::NumInt,
            _ => return Err(err("invalid number")),
        },
        State::NumInt | State::NumFrac | State::NumExpDigits => {
            while cur.i < b.len() && b[cur.i].is_ascii_digit() {
                cur.i += 1;
            }
            let Some(&c) = b.get(cur.i) else {
                return Ok(());
            };
            match (cur.st, c) {
                (State::NumInt, b'.') => State::NumDot,
                (State::NumInt | State::NumFrac, b'e' | b'E') => State::NumExp,
                _ => {
                    // The number ends here; this byte is read again.
                    cur.st = State::After;
                    return Ok(());
                }
            }
        }
        State::NumZero => match b[cur.i] {
            b'.' => State::NumDot,
            b'e' | b'E' => State::NumExp,
            _ => {
                cur.st = State::After;
                return Ok(());
            }
        },
        State::NumDot => {
            if !b[cur.i].is_ascii_digit() {
                return Err(err("invalid number"));
            }
            State::NumFrac
        }
        // `NumExp` and `NumExpSign`.
        st => match b[cur.i] {
            b'0'..=b'9' => State::NumExpDigits,
            b'+' | b'-' if st == State::NumExp => State::NumExpSign,
            _ => return Err(err("invalid number")),
        },
    };
    cur.i += 1;
    Ok(())
}

impl JsonFilter {
    /// `Lit`: the next byte of the [`literal`] that the chunk cut.
    #[inline(always)]
    pub(super) fn literal_byte(&mut self, b: &[u8], cur: &mut Cursor) -> Result<(), BodyError> {
        if b[cur.i] != self.lit[self.lit_pos] {
            return Err(err("invalid literal"));
        }
        self.lit_pos += 1;
        if self.lit_pos == self.lit.len() {
            cur.st = State::After;
        }
        cur.i += 1;
        Ok(())
    }
}

/// A number starting with `c` at `i` that ends inside `b`: `Some(Ok(end))`;
/// `Some(Err(()))` when it is malformed, `None` when the chunk ends first. (The
/// callers have read `c` already: reading it again costs a bounds check.)
#[inline(always)]
pub(super) fn scan_number(b: &[u8], mut i: usize, c: u8) -> Option<Result<usize, ()>> {
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
pub(super) fn literal(c: u8) -> &'static [u8] {
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
pub(super) fn literal_end(b: &[u8], i: usize, c: u8) -> Option<usize> {
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
pub(super) fn skip_ws(b: &[u8], i: usize) -> usize {
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
pub(super) fn next_token(b: &[u8], i: usize) -> (usize, u8) {
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
