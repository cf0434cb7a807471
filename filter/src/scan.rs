//! Byte scans for the rewriters' hot paths (Prometheus text, and the JSON
//! filter's indentation), inlined so that a search costs a few instructions per
//! hit instead of a library call.
//!
//! Label values are short (a quote every ten to twenty bytes on kubelet lines),
//! and so are indents, so what matters is the cost per search, not the
//! throughput of a long one.

/// Whether `b` may appear in a bare label name: `[a-zA-Z0-9_:]`.
pub const fn is_label_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b':'
}

/// A membership table of the bytes `$b` for which `$pred` holds, built at compile
/// time: a class test in the hot loops is then one load per byte.
macro_rules! byte_table {
    ($b:ident => $pred:expr) => {{
        let mut table = [false; 256];
        let mut i = 0;
        while i < 256 {
            let $b = i as u8;
            table[i] = $pred;
            i += 1;
        }
        table
    }};
}

/// [`is_label_name_byte`] as a table.
static LABEL_NAME_BYTES: [bool; 256] = byte_table!(b => is_label_name_byte(b));

/// The index of the first byte at or after `i` that is not a label name byte
/// (or `b.len()`, or `i` when `i > b.len()`): with wasm SIMD sixteen bytes at a
/// time, then as below. (Compiled from wasm, a byte loop costs several
/// instructions per byte; metric names are ten to forty bytes long.)
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[inline(always)]
pub fn skip_label_name(b: &[u8], i: usize) -> usize {
    use core::arch::wasm32::{u8x16_bitmask, u8x16_eq, u8x16_splat, v128_or};
    let not_name = |v| {
        // `0`..=`9` and `:` (0x3a) are one range; `| 0x20` folds `A`..=`Z` onto
        // `a`..=`z` and sends no other byte there.
        let digit_or_colon = in_range(v, b'0', b':');
        let letter = in_range(v128_or(v, u8x16_splat(0x20)), b'a', b'z');
        let underscore = u8x16_eq(v, u8x16_splat(b'_'));
        !u8x16_bitmask(v128_or(v128_or(digit_or_colon, letter), underscore))
    };
    find_in_blocks(b, i, not_name, |b, i| {
        skip_table_bytes(&LABEL_NAME_BYTES, b, i)
    })
}

/// The index of the first byte at or after `i` that is not a label name byte
/// (or `b.len()`, or `i` when `i > b.len()`).
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
#[inline(always)]
pub fn skip_label_name(b: &[u8], i: usize) -> usize {
    skip_table_bytes(&LABEL_NAME_BYTES, b, i)
}

/// The index of the first `"` or `\` at or after `i` (or `b.len()`, or `i` when
/// `i > b.len()`): with wasm SIMD sixteen bytes at a time, then as below.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[inline(always)]
pub fn find_quote_or_backslash(b: &[u8], i: usize) -> usize {
    use core::arch::wasm32::{u8x16_bitmask, u8x16_eq, u8x16_splat, v128_or};
    let quote_or_backslash = |v| {
        u8x16_bitmask(v128_or(
            u8x16_eq(v, u8x16_splat(b'"')),
            u8x16_eq(v, u8x16_splat(b'\\')),
        ))
    };
    find_in_blocks(b, i, quote_or_backslash, find_quote_or_backslash_swar)
}

/// The index of the first byte at or after `i` whose bit is set in the mask
/// `hits` makes of each sixteen bytes (bit `k` for byte `k`); the last fewer
/// than sixteen bytes go to `rest`, which answers the same question a byte at a
/// time. (Searching them as an overlapping last block measured slower.)
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[inline(always)]
fn find_in_blocks(
    b: &[u8],
    i: usize,
    hits: impl Fn(core::arch::wasm32::v128) -> u16,
    rest: impl Fn(&[u8], usize) -> usize,
) -> usize {
    let Some(tail) = b.get(i..) else {
        return i;
    };
    let mut at = i;
    for block in tail.chunks_exact(16) {
        let mask = hits(v128_of(block));
        if mask != 0 {
            return at + mask.trailing_zeros() as usize;
        }
        at += 16;
    }
    rest(b, at)
}

/// The lanes of `v` in `lo..=hi` (`lo <= hi`), as one signed compare: adding
/// `0x80 - lo` moves the range to start at `i8::MIN`. (x86 has no unsigned
/// byte compare: `u8x16_lt` or `u8x16_le` cost it three more instructions.)
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[inline(always)]
fn in_range(v: core::arch::wasm32::v128, lo: u8, hi: u8) -> core::arch::wasm32::v128 {
    use core::arch::wasm32::{i8x16_lt, i8x16_splat, u8x16_add, u8x16_splat};
    let shifted = u8x16_add(v, u8x16_splat(0x80u8.wrapping_sub(lo)));
    i8x16_lt(
        shifted,
        i8x16_splat(i8::MIN.wrapping_add((hi - lo + 1) as i8)),
    )
}

/// The sixteen bytes of `block` as a vector. (`v128_load` would need `unsafe`;
/// two little-endian words compile to two loads.)
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[inline(always)]
fn v128_of(block: &[u8]) -> core::arch::wasm32::v128 {
    let (lo, hi) = block.split_at(8);
    core::arch::wasm32::u64x2(
        u64::from_le_bytes(lo.try_into().unwrap_or([0; 8])),
        u64::from_le_bytes(hi.try_into().unwrap_or([0; 8])),
    )
}

/// The index of the first byte that is not a space among the sixteen from `i`,
/// if they lie in `b` and are not all spaces: the indentation of pretty-printed
/// JSON in one step, without the loop (and the call at its end) of
/// [`skip_spaces`].
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[inline(always)]
pub fn non_space_in_16(b: &[u8], i: usize) -> Option<usize> {
    use core::arch::wasm32::{u8x16_bitmask, u8x16_eq, u8x16_splat};
    let block = b.get(i..i + 16)?;
    let not_space = !u8x16_bitmask(u8x16_eq(v128_of(block), u8x16_splat(b' ')));
    (not_space != 0).then(|| i + not_space.trailing_zeros() as usize)
}

/// The index of the first byte that is not a space among the sixteen from `i`,
/// if they lie in `b` and are not all spaces.
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
#[inline(always)]
pub fn non_space_in_16(b: &[u8], i: usize) -> Option<usize> {
    let block: &[u8; 16] = b.get(i..i + 16)?.try_into().ok()?;
    let (lo, hi) = block.split_at(8);
    let spaces = LO * u64::from(b' ');
    let word = |half: &[u8]| half.try_into().map_or(0, u64::from_le_bytes) ^ spaces;
    match (word(lo), word(hi)) {
        (0, 0) => None,
        (0, x) => Some(i + 8 + (x.trailing_zeros() / 8) as usize),
        (x, _) => Some(i + (x.trailing_zeros() / 8) as usize),
    }
}

/// The index of the first byte at or after `i` that is not a space (or
/// `b.len()`, or `i` when `i > b.len()`): the indentation of pretty-printed
/// JSON, with wasm SIMD sixteen bytes at a time.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[inline(always)]
pub fn skip_spaces(b: &[u8], i: usize) -> usize {
    use core::arch::wasm32::{u8x16_bitmask, u8x16_eq, u8x16_splat};
    let not_space = |v| !u8x16_bitmask(u8x16_eq(v, u8x16_splat(b' ')));
    find_in_blocks(b, i, not_space, skip_spaces_swar)
}

/// The index of the first byte at or after `i` that is not a space (or
/// `b.len()`, or `i` when `i > b.len()`).
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
#[inline(always)]
pub fn skip_spaces(b: &[u8], i: usize) -> usize {
    skip_spaces_swar(b, i)
}

/// [`skip_spaces`] eight bytes at a time, then byte by byte.
#[inline(always)]
fn skip_spaces_swar(b: &[u8], mut i: usize) -> usize {
    while let Some(Ok(word)) = b.get(i..i + 8).map(<[u8; 8]>::try_from) {
        let x = u64::from_le_bytes(word) ^ (LO * u64::from(b' '));
        if x != 0 {
            return i + (x.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while b.get(i) == Some(&b' ') {
        i += 1;
    }
    i
}

/// Whether `b` may appear in a sample's value or timestamp (digits, `.`, `+`,
/// `-`, `e`, `NaN`, `Inf`…) or the blanks around them.
pub const fn is_sample_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'+' | b'-' | b' ' | b'\t' | b'\r')
}

/// [`is_sample_byte`] as a table.
static SAMPLE_BYTES: [bool; 256] = byte_table!(b => is_sample_byte(b));

/// The index of the first byte at or after `i` that is not a sample byte (or
/// `b.len()`, or `i` when `i > b.len()`): with wasm SIMD sixteen bytes at a time.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[inline(always)]
pub fn skip_sample_bytes(b: &[u8], i: usize) -> usize {
    use core::arch::wasm32::{u8x16_bitmask, u8x16_eq, u8x16_splat, v128_or};
    let not_sample = |v| {
        let digit = in_range(v, b'0', b'9');
        let letter = in_range(v128_or(v, u8x16_splat(0x20)), b'a', b'z');
        let mut sample = v128_or(digit, letter);
        for c in [b'.', b'+', b'-', b' ', b'\t', b'\r'] {
            sample = v128_or(sample, u8x16_eq(v, u8x16_splat(c)));
        }
        !u8x16_bitmask(sample)
    };
    find_in_blocks(b, i, not_sample, |b, i| {
        skip_table_bytes(&SAMPLE_BYTES, b, i)
    })
}

/// The index of the first byte at or after `i` that is not a sample byte (or
/// `b.len()`, or `i` when `i > b.len()`).
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
#[inline(always)]
pub fn skip_sample_bytes(b: &[u8], i: usize) -> usize {
    skip_table_bytes(&SAMPLE_BYTES, b, i)
}

/// The index of the first byte at or after `i` that is not in `table` (or
/// `b.len()`, or `i` when `i > b.len()`).
#[inline(always)]
fn skip_table_bytes(table: &[bool; 256], b: &[u8], mut i: usize) -> usize {
    while let Some(&c) = b.get(i) {
        if !table[usize::from(c)] {
            break;
        }
        i += 1;
    }
    i
}

/// The index of the first `"` or `\` at or after `i` (or `b.len()`, or `i` when
/// `i > b.len()`). (x86_64 has SSE2, but its intrinsics cannot be called
/// without `unsafe`; eight bytes at a time in a `u64` is close.)
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
#[inline(always)]
pub fn find_quote_or_backslash(b: &[u8], i: usize) -> usize {
    find_quote_or_backslash_swar(b, i)
}

/// `a == b`, inline and a word at a time. (A slice `==` calls `memcmp`, which
/// in wasm is a call to a byte loop; namespaces are ten to twenty bytes.)
#[inline(always)]
pub fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (mut a_words, mut b_words) = (a.chunks_exact(8), b.chunks_exact(8));
    let word = |w: &[u8]| u64::from_le_bytes(w.try_into().unwrap_or([0; 8]));
    (&mut a_words)
        .zip(&mut b_words)
        .all(|(x, y)| word(x) == word(y))
        && a_words
            .remainder()
            .iter()
            .zip(b_words.remainder())
            .all(|(x, y)| x == y)
}

/// SWAR masks: the lowest and the highest bit of every byte of a `u64`.
pub(crate) const LO: u64 = 0x0101_0101_0101_0101;
pub(crate) const HI: u64 = 0x8080_8080_8080_8080;

/// [`find_quote_or_backslash`] sixteen bytes (two words) at a time, then byte
/// by byte.
#[inline(always)]
fn find_quote_or_backslash_swar(b: &[u8], i: usize) -> usize {
    let Some(rest) = b.get(i..) else {
        return i;
    };
    let mut blocks = rest.chunks_exact(16);
    let mut at = i;
    for block in &mut blocks {
        let (lo, hi) = block.split_at(8);
        let lo = quote_or_backslash_bytes(u64::from_le_bytes(lo.try_into().unwrap_or([0; 8])));
        let hi = quote_or_backslash_bytes(u64::from_le_bytes(hi.try_into().unwrap_or([0; 8])));
        if lo | hi != 0 {
            let lo_first = (lo.trailing_zeros() / 8) as usize;
            let hi_first = 8 + (hi.trailing_zeros() / 8) as usize;
            return at + if lo != 0 { lo_first } else { hi_first };
        }
        at += 16;
    }
    for &c in blocks.remainder() {
        if c == b'"' || c == b'\\' {
            break;
        }
        at += 1;
    }
    at
}

/// The high bit of each byte of `w` that is `"` or `\`, and possibly of bytes
/// above such a byte, never below: the lowest flagged byte is the first hit.
///
/// `q` and `s` are zero at `"` and `\`. For an ASCII byte without a borrow
/// coming in, `q - 1` has its high bit set exactly when `q` is zero (and so for
/// `s`); a borrow only comes from a lower byte that was zero, a real hit.
/// Non-ASCII bytes (high bit set in `w`) are never hits, so `!w` clears them.
#[inline(always)]
fn quote_or_backslash_bytes(w: u64) -> u64 {
    let q = w ^ (LO * u64::from(b'"'));
    let s = w ^ (LO * u64::from(b'\\'));
    (q.wrapping_sub(LO) | s.wrapping_sub(LO)) & !w & HI
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(b: &[u8], i: usize) -> usize {
        (i..b.len())
            .find(|&j| b[j] == b'"' || b[j] == b'\\')
            .unwrap_or(b.len().max(i))
    }

    proptest::proptest! {
        /// The word-at-a-time (and, in wasm, SIMD) scans agree with a byte loop
        /// at every start and length, including bytes one off `"` and `\`
        /// (`!`, `#`, `[`, `]`) that a borrow could mistake for them and bytes
        /// just outside the classes' ranges (`/`, `;`, `@`, `` ` ``, `{`).
        #[test]
        fn scans_agree_with_a_byte_loop(
            bytes in proptest::collection::vec(
                proptest::sample::select(&b"aa\"\\!#[]\0\x80\xff_:=,09/;AZ@`{z.+- \t\re"[..]), 0..64),
            // Put the first hit at a random place in a longer prefix of filler.
            pad in 0usize..24,
        ) {
            let mut b = vec![b'x'; pad];
            b.extend_from_slice(&bytes);
            for i in 0..=b.len() + 1 {
                proptest::prop_assert_eq!(find_quote_or_backslash(&b, i), naive(&b, i));
                proptest::prop_assert_eq!(find_quote_or_backslash_swar(&b, i), naive(&b, i));
                let name = (i..b.len()).find(|&j| !is_label_name_byte(b[j])).unwrap_or(b.len().max(i));
                proptest::prop_assert_eq!(skip_label_name(&b, i), name);
                let sample = (i..b.len()).find(|&j| !is_sample_byte(b[j])).unwrap_or(b.len().max(i));
                proptest::prop_assert_eq!(skip_sample_bytes(&b, i), sample);
            }
        }
    }

    proptest::proptest! {
        /// Runs of spaces of every length up to forty, at any offset, ended by
        /// any byte or by the end; [`non_space_in_16`] finds the same byte when it
        /// is among the sixteen, and nothing when they are all spaces or do not
        /// lie in `b`.
        #[test]
        fn space_skips_agree_with_a_byte_loop(
            pad in 0usize..24,
            spaces in 0usize..40,
            end in proptest::option::of(proptest::prelude::any::<u8>()),
        ) {
            let mut b = vec![b'x'; pad];
            b.extend(std::iter::repeat_n(b' ', spaces));
            b.extend(end);
            for i in 0..=b.len() + 1 {
                let want = (i..b.len()).find(|&j| b[j] != b' ').unwrap_or(b.len().max(i));
                proptest::prop_assert_eq!(skip_spaces(&b, i), want);
                let in_16 = b.get(i..i + 16).and_then(|block| block.iter().position(|&c| c != b' '));
                proptest::prop_assert_eq!(non_space_in_16(&b, i), in_16.map(|k| i + k));
            }
        }
    }

    proptest::proptest! {
        /// Word-at-a-time equality agrees with `==`: the same bytes, one bit
        /// flipped anywhere (in a whole word or in the rest), one byte shorter.
        #[test]
        fn same_bytes_is_slice_equality(
            a in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40),
            at in proptest::prelude::any::<proptest::sample::Index>(),
        ) {
            let mut flipped = a.clone();
            if !a.is_empty() {
                flipped[at.index(a.len())] ^= 1;
            }
            let shorter = &a[..a.len().saturating_sub(1)];
            for b in [&a[..], &flipped[..], shorter] {
                proptest::prop_assert_eq!(same_bytes(&a, b), a == b);
            }
        }
    }

    #[test]
    fn label_name_bytes() {
        for b in 0..=255u8 {
            let want = b.is_ascii_alphanumeric() || b == b'_' || b == b':';
            assert_eq!(LABEL_NAME_BYTES[usize::from(b)], want, "{b}");
        }
    }
}
