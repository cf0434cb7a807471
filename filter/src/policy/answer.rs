//! The filter's own answers, shaped as a kubelet (a Go `net/http` server) shapes
//! its own: a denied path is answered as an absent one (`404`,
//! `text/plain; charset=utf-8`, `404 page not found`), a wrong method as
//! go-restful answers it, an unavailable snapshot or an unreadable kubelet answer
//! with the plain status text of Go's `http.Error`.
//!
//! Agents probe optional endpoints and parse what they get: the reason for an
//! answer never goes into its body (an agent would read it as data) but into the
//! `x-kubelet-scope-denied` header, the log and the metrics. The same fixed bodies
//! replace the kubelet's own error bodies in tenant mode, which can name other
//! tenants' pods.

use crate::snapshot::fetch::RETRY_AFTER_SECONDS;

/// The header that carries the reason of a local answer.
pub const REASON_HEADER: &str = "x-kubelet-scope-denied";

/// A complete local answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: &'static str,
}

/// The answer for `status`, with `reason` in [`REASON_HEADER`] (made a valid
/// header value; cut at 200 bytes). An empty reason adds no header.
pub fn answer(status: u16, reason: &str) -> Answer {
    let mut headers = vec![
        ("content-type", "text/plain; charset=utf-8".to_owned()),
        ("x-content-type-options", "nosniff".to_owned()),
    ];
    match status {
        405 => headers.push(("allow", "GET, HEAD".to_owned())),
        503 => headers.push(("retry-after", RETRY_AFTER_SECONDS.to_string())),
        _ => {}
    }
    if !reason.is_empty() {
        headers.push((REASON_HEADER, header_value(reason)));
    }
    Answer {
        status,
        headers,
        body: body(status),
    }
}

/// What a kubelet writes for `status` when it has nothing to say: Go's
/// `http.NotFound` for 404, go-restful's text for 405, `http.Error` with the
/// status text otherwise.
pub fn body(status: u16) -> &'static str {
    match status {
        400 => "Bad Request\n",
        401 => "Unauthorized\n",
        403 => "Forbidden\n",
        404 => "404 page not found\n",
        405 => "405: Method Not Allowed",
        406 => "Not Acceptable\n",
        409 => "Conflict\n",
        413 => "Request Entity Too Large\n",
        429 => "Too Many Requests\n",
        500 => "Internal Server Error\n",
        501 => "Not Implemented\n",
        502 => "Bad Gateway\n",
        503 => "Service Unavailable\n",
        504 => "Gateway Timeout\n",
        _ => "Error\n",
    }
}

/// `reason` as a header value: visible ASCII and spaces only, at most 200 bytes.
fn header_value(reason: &str) -> String {
    reason
        .chars()
        .take(200)
        .map(|c| {
            if c == ' ' || c.is_ascii_graphic() {
                c
            } else {
                '?'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denied_is_a_go_not_found_with_the_reason_in_a_header() {
        let a = answer(404, "kubelet-scope: not a kubelet path");
        assert_eq!(a.status, 404);
        assert_eq!(a.body, "404 page not found\n");
        assert!(a
            .headers
            .contains(&("content-type", "text/plain; charset=utf-8".into())));
        assert!(a
            .headers
            .contains(&(REASON_HEADER, "kubelet-scope: not a kubelet path".into())));
        assert!(!a.body.contains("kubelet-scope"));
    }

    #[test]
    fn status_specific_headers() {
        let has = |a: &Answer, name: &str| a.headers.iter().any(|(n, _)| *n == name);
        assert!(has(&answer(503, "x"), "retry-after"));
        assert!(has(&answer(405, "x"), "allow"));
        assert!(!has(&answer(404, ""), REASON_HEADER));
        for status in [400, 403, 500, 502, 503, 599] {
            let b = body(status);
            assert!(
                b.ends_with('\n') && !b.contains("kubelet-scope"),
                "{status}"
            );
        }
    }

    #[test]
    fn reasons_become_valid_header_values() {
        let a = answer(502, "type \"te\u{1f600}xt\"\r\nx-evil: 1");
        let (_, v) = a.headers.iter().find(|(n, _)| *n == REASON_HEADER).unwrap();
        assert!(
            v.bytes().all(|b| b == b' ' || b.is_ascii_graphic()),
            "{v:?}"
        );
        assert_eq!(
            answer(404, &"x".repeat(500))
                .headers
                .last()
                .unwrap()
                .1
                .len(),
            200
        );
    }
}
