//! JSON strings: the fast path over string content that lies in the chunk, and the
//! byte states that resume a string the fast path leaves (an escape or a UTF-8
//! sequence the chunk cuts, a surrogate pair).
//!
//! Everything here validates (escapes, surrogate pairs, UTF-8, control
//! characters) and nothing decides: what a key or the namespace says is
//! `capture`'s, which [`JsonFilter::string`] hands the closing quote to.

use super::capture::Capture;
use super::scanner::{Cursor, State};
use super::tokens::skip_ws;
use super::{err, JsonFilter};
use crate::body::BodyError;
use crate::scan::{HI, LO};

impl JsonFilter {
    /// `Str`: string content up to the closing quote and, after a key, its `:`.
    /// Escapes and UTF-8 sequences that lie inside the chunk are checked here;
    /// anything else goes through the byte states ([`JsonFilter::string_byte`]).
    #[inline(always)]
    pub(super) fn string(&mut self, b: &[u8], cur: &mut Cursor) -> Result<(), BodyError> {
        loop {
            cur.i = skip_plain(b, cur.i);
            let Some(&c) = b.get(cur.i) else {
                return Ok(());
            };
            if c == b'"' {
                break;
            }
            if c == b'\\' {
                // Anything but a whole, non-surrogate escape is the
                // states' (they pair surrogates and report bad escapes).
                let Some(len) = escape_len(b, cur.i) else {
                    cur.st = State::Escape;
                    cur.i += 1;
                    return Ok(());
                };
                cur.i += len;
            } else if c < 0x20 {
                return Err(err("control character in a string"));
            } else {
                let len = utf8_len(c);
                match b.get(cur.i..cur.i + len) {
                    Some(seq) if len > 0 && std::str::from_utf8(seq).is_ok() => cur.i += len,
                    _ => {
                        self.utf8_lead(c)?;
                        cur.st = State::Utf8;
                        cur.i += 1;
                        return Ok(());
                    }
                }
            }
        }
        // The closing quote is at `cur.i`.
        if self.capture != Capture::None {
            self.end_capture(b, cur.i, cur.depth)?;
        }
        cur.i += 1;
        if cur.str_key {
            // The colon usually follows at once: no trip through the states.
            cur.i = skip_ws(b, cur.i);
            match b.get(cur.i) {
                Some(b':') => {
                    cur.st = State::Value;
                    cur.i += 1;
                }
                Some(_) => return Err(err("expected `:` after an object key")),
                None => cur.st = State::Colon,
            }
        } else {
            cur.st = State::After;
        }
        Ok(())
    }

    /// `Escape`, `Hex`, `LowBackslash`, `LowU` and `Utf8`: one byte of an escape or
    /// of a UTF-8 sequence that [`JsonFilter::string`] left to the states.
    #[inline(always)]
    pub(super) fn string_byte(&mut self, b: &[u8], cur: &mut Cursor) -> Result<(), BodyError> {
        match cur.st {
            State::Escape => match b[cur.i] {
                e if simple_escape(e) => cur.st = State::Str,
                b'u' => {
                    cur.st = State::Hex;
                    self.hex_n = 0;
                    self.hex_val = 0;
                    self.hex_low = false;
                }
                _ => return Err(err("invalid escape in a string")),
            },
            State::Hex => {
                let Some(d) = hex_digit(b[cur.i]) else {
                    return Err(err("invalid \\u escape in a string"));
                };
                self.hex_val = self.hex_val * 16 + d;
                self.hex_n += 1;
                if self.hex_n == 4 {
                    cur.st = self.escape_end()?;
                }
            }
            State::LowBackslash => {
                if b[cur.i] != b'\\' {
                    return Err(err("unpaired surrogate in a string"));
                }
                cur.st = State::LowU;
            }
            State::LowU => {
                if b[cur.i] != b'u' {
                    return Err(err("unpaired surrogate in a string"));
                }
                cur.st = State::Hex;
                self.hex_n = 0;
                self.hex_val = 0;
                self.hex_low = true;
            }
            // `Utf8`.
            _ => {
                let c = b[cur.i];
                if c < self.utf8_lo || c > self.utf8_hi {
                    return Err(err("invalid UTF-8 in a string"));
                }
                self.utf8_lo = 0x80;
                self.utf8_hi = 0xBF;
                self.utf8_left -= 1;
                if self.utf8_left == 0 {
                    cur.st = State::Str;
                }
            }
        }
        cur.i += 1;
        Ok(())
    }

    /// The state after the fourth hex digit of a `\u` escape: the string again, or
    /// for a high surrogate the `\` of its low one.
    #[inline(always)]
    fn escape_end(&self) -> Result<State, BodyError> {
        let v = self.hex_val;
        let low = (0xDC00..=0xDFFF).contains(&v);
        Ok(if self.hex_low {
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
        })
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
///
/// [`skip_deep`]: super::deep::skip_deep
#[inline(always)]
pub(super) fn scan_string(b: &[u8], mut i: usize) -> Result<usize, usize> {
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
pub(super) fn hex4_quick(digits: &[u8]) -> Option<u32> {
    digits
        .iter()
        .try_fold(0u32, |v, &d| Some(v * 16 + hex_digit(d)?))
}

#[cfg(test)]
mod tests {
    use super::super::testing::{every_split, run, run_split};
    use crate::policy::endpoint::JsonEndpoint::PodList;

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
}
