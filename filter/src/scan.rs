//! Byte scans for the Prometheus text rewriter's hot path, inlined so that a
//! search costs a few instructions per hit instead of a library call.
//!
//! Label values are short (a quote every ten to twenty bytes on kubelet lines),
//! so what matters is the cost per search, not the throughput of a long one.

/// Whether `b` may appear in a bare label name: `[a-zA-Z0-9_:]`.
pub const fn is_label_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b':'
}

/// [`is_label_name_byte`] as a table, one load per byte.
static LABEL_NAME_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = is_label_name_byte(b as u8);
        b += 1;
    }
    table
};

/// The index of the first byte at or after `i` that is not a label name byte
/// (or `b.len()`).
#[inline(always)]
pub fn skip_label_name(b: &[u8], mut i: usize) -> usize {
    while let Some(&c) = b.get(i) {
        if !LABEL_NAME_BYTES[usize::from(c)] {
            break;
        }
        i += 1;
    }
    i
}

/// The index of the first `"` or `\` at or after `i` (or `b.len()`, or `i` when
/// `i > b.len()`): with wasm SIMD sixteen bytes at a time, then as below.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[inline(always)]
pub fn find_quote_or_backslash(b: &[u8], mut i: usize) -> usize {
    use core::arch::wasm32::{u64x2, u8x16_bitmask, u8x16_eq, u8x16_splat, v128_or};
    while let (Some(Ok(lo)), Some(Ok(hi))) = (
        b.get(i..i + 8).map(<[u8; 8]>::try_from),
        b.get(i + 8..i + 16).map(<[u8; 8]>::try_from),
    ) {
        let v = u64x2(u64::from_le_bytes(lo), u64::from_le_bytes(hi));
        let hits = v128_or(
            u8x16_eq(v, u8x16_splat(b'"')),
            u8x16_eq(v, u8x16_splat(b'\\')),
        );
        let mask = u8x16_bitmask(hits);
        if mask != 0 {
            return i + mask.trailing_zeros() as usize;
        }
        i += 16;
    }
    find_quote_or_backslash_swar(b, i)
}

/// The index of the first `"` or `\` at or after `i` (or `b.len()`, or `i` when
/// `i > b.len()`). (x86_64 has SSE2, but its intrinsics cannot be called
/// without `unsafe`; eight bytes at a time in a `u64` is close.)
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
#[inline(always)]
pub fn find_quote_or_backslash(b: &[u8], i: usize) -> usize {
    find_quote_or_backslash_swar(b, i)
}

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// [`find_quote_or_backslash`] eight bytes at a time, then byte by byte.
#[inline(always)]
fn find_quote_or_backslash_swar(b: &[u8], mut i: usize) -> usize {
    while let Some(Ok(word)) = b.get(i..i + 8).map(<[u8; 8]>::try_from) {
        let w = u64::from_le_bytes(word);
        let q = w ^ (LO * u64::from(b'"'));
        let s = w ^ (LO * u64::from(b'\\'));
        // A zero byte of `q` or `s` flags its high bit. Bytes above a real hit
        // may be flagged by the borrow, never bytes below one, so the lowest
        // flagged byte is the first `"` or `\`.
        let hit = ((q.wrapping_sub(LO) & !q) | (s.wrapping_sub(LO) & !s)) & HI;
        if hit != 0 {
            return i + (hit.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while let Some(&c) = b.get(i) {
        if c == b'"' || c == b'\\' {
            break;
        }
        i += 1;
    }
    i
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
        /// (`!`, `#`, `[`, `]`) that a borrow could mistake for them.
        #[test]
        fn scans_agree_with_a_byte_loop(
            bytes in proptest::collection::vec(
                proptest::sample::select(&b"aa\"\\!#[]\0\x80\xff_:=,"[..]), 0..64),
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
