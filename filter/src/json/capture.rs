//! The strings the filter reads: the keys at the depths it looks at and the
//! element's namespace. A string that lies in one chunk is looked at in place,
//! raw; one that the chunk cuts is gathered here, up to a limit (a longer key
//! cannot be one we look for; a longer namespace is refused). Keys are compared
//! after unescaping, so this module also decodes a raw string.
//!
//! It hands what it read to the hooks (`shape`), which decide; it must not
//! validate (the scanner has, by the time a string is handed over).

use super::strings::hex4_quick;
use super::{err, JsonFilter};
use crate::body::BodyError;

/// Raw (escaped) length beyond which a key cannot be one we look for: every decoded
/// byte takes at most 6 raw bytes, and the longest key we match has 9.
pub(super) const KEY_CAPTURE_LIMIT: usize = 64;
/// Raw length of a `namespace` value beyond which it is refused (namespace names are
/// at most 63 characters).
const NAMESPACE_CAPTURE_LIMIT: usize = 1024;

/// What the string being scanned is captured as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Capture {
    None,
    Key,
    Namespace,
    /// A virtual cluster's request: the reference object's `name` and `uid`.
    Name,
    Uid,
}

impl Capture {
    /// Raw length beyond which the string is not kept.
    fn limit(self) -> usize {
        if self == Capture::Key {
            KEY_CAPTURE_LIMIT
        } else {
            NAMESPACE_CAPTURE_LIMIT
        }
    }
}

impl JsonFilter {
    pub(super) fn start_capture(&mut self, kind: Capture, from: usize) {
        self.capture = kind;
        self.cap_from = from;
        self.cap_buf.clear();
        self.cap_overflow = false;
    }

    pub(super) fn cap_append(&mut self, bytes: &[u8]) {
        if self.cap_overflow || self.cap_buf.len() + bytes.len() > self.capture.limit() {
            self.cap_overflow = true;
        } else {
            self.cap_buf.extend_from_slice(bytes);
        }
    }

    /// The closing quote, at `i`, of a string being captured.
    pub(super) fn end_capture(
        &mut self,
        b: &[u8],
        i: usize,
        depth: usize,
    ) -> Result<(), BodyError> {
        let piece = &b[self.cap_from..i];
        let capture = self.capture;
        let end = self.held_offset(i);
        if self.cap_buf.is_empty() && !self.cap_overflow {
            // All of the string is in this chunk: it is looked at in place.
            self.capture = Capture::None;
            let raw = Some(piece).filter(|raw| raw.len() <= capture.limit());
            return self.captured(capture, raw, depth, end);
        }
        self.cap_append(piece);
        self.capture = Capture::None;
        let held = std::mem::take(&mut self.cap_buf);
        let raw = (!self.cap_overflow).then_some(&held[..]);
        let result = self.captured(capture, raw, depth, end);
        self.cap_buf = held;
        result
    }

    /// A captured string, raw (still escaped; `None` if longer than its limit), in
    /// an object at `depth`, ending at offset `end` of the held element.
    fn captured(
        &mut self,
        capture: Capture,
        raw: Option<&[u8]>,
        depth: usize,
        end: usize,
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
                self.fields.namespace = Some(self.fields.from..end);
                Ok(())
            }
            Capture::Name | Capture::Uid => {
                let Some(raw) = raw else {
                    return Err(err("a pod's name or uid is too long"));
                };
                if capture == Capture::Name {
                    let name = decode(raw, &mut self.scratch)?;
                    self.pod_name.clear();
                    self.pod_name.extend_from_slice(name);
                    self.fields.name = Some(self.fields.from..end);
                } else {
                    self.fields.uid = Some(self.fields.from..end);
                }
                Ok(())
            }
            Capture::None => Ok(()),
        }
    }
}

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
pub(super) fn key_is(raw: &[u8], want: &[u8], scratch: &mut Vec<u8>) -> Result<bool, BodyError> {
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
pub(super) fn may_be(raw: &[u8], want: &[u8]) -> bool {
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
    use super::super::testing::every_split;
    use crate::policy::endpoint::JsonEndpoint::PodList;

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
}
