//! Validating quiet JSON: the values inside the body that no hook looks at (see
//! [`JsonFilter::quiet_floor`]), which are most of a kubelet body, read one token
//! after the other without the states' bookkeeping.
//!
//! [`skip_deep`] validates; it must not report errors (it stops before what it
//! does not handle, and the states read that again and report it), nor look at
//! anything the hooks need.
//!
//! [`JsonFilter::quiet_floor`]: super::JsonFilter::quiet_floor

use super::scanner::{Cursor, State};
use super::strings::scan_string;
use super::tokens::{literal_end, next_token, scan_number, skip_ws};
use super::MAX_DEPTH;

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
///
/// It is one function of some 200 lines, in three parts named by their comments
/// (the members' path; a key or a value; what follows a value), because it is
/// the loop most bytes of a body go through: split into `#[inline(always)]`
/// methods that return `ControlFlow` (tried, with the loop shape kept), it
/// executed 0.8 % more instructions per byte on `/stats/summary` and 0.4 % more
/// on `/pods` (`make bench-instructions`).
///
/// [`JsonFilter::quiet_floor`]: super::JsonFilter::quiet_floor
/// [`State::between_tokens`]: super::scanner::State::between_tokens
#[inline(never)]
pub(super) fn skip_deep(
    b: &[u8],
    mut i: usize,
    st: State,
    mut depth: usize,
    mut stack: u64,
    floor: usize,
) -> Cursor {
    macro_rules! stop {
        ($st:expr) => {
            stop!($st, false)
        };
        ($st:expr, $key:expr) => {
            return Cursor {
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

#[cfg(test)]
mod tests {
    use super::super::testing::run_split;
    use crate::policy::endpoint::JsonEndpoint::{self, PodList, StatsSummary};

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
}
