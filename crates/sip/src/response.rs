//! Responses to requests (RFC 3261 §8.2.6): the status line, the request's Via, From, Call-ID
//! and CSeq copied byte-exact, To copied with a tag added when the request's To has none.

use crate::message::{HeaderKind, SipMessage};

/// The reason phrase RFC 3261 §21 gives a status code.
pub fn reason(code: u16) -> &'static str {
    match code {
        100 => "Trying",
        180 => "Ringing",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        413 => "Request Entity Too Large",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        423 => "Interval Too Brief",
        429 => "Too Many Requests",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "Version Not Supported",
        513 => "Message Too Large",
        _ => "Unknown",
    }
}

/// Builds a response to `req`. `to_tag` is added to To if it has no tag yet (required for
/// every response but 100). `extra` headers go after the copied ones; `body` with its
/// Content-Type, if any.
pub fn build_response(
    req: &SipMessage<'_>,
    code: u16,
    to_tag: Option<&str>,
    extra: &[(&str, String)],
    body: Option<(&str, &[u8])>,
) -> Vec<u8> {
    let mut r = Vec::with_capacity(512);
    r.extend_from_slice(format!("SIP/2.0 {code} {}\r\n", reason(code)).as_bytes());
    for h in &req.headers {
        let copy = matches!(
            h.kind,
            HeaderKind::Via | HeaderKind::From | HeaderKind::CallId | HeaderKind::CSeq
        ) || (h.kind == HeaderKind::RecordRoute && (101..300).contains(&code));
        if copy {
            r.extend_from_slice(h.name);
            r.extend_from_slice(b": ");
            r.extend_from_slice(h.raw_value);
            r.extend_from_slice(b"\r\n");
        }
        if h.kind == HeaderKind::To {
            r.extend_from_slice(b"To: ");
            r.extend_from_slice(h.raw_value);
            // Any tag parameter, even a valueless one, counts: a second would not parse.
            let has_tag = req
                .to()
                .is_some_and(|t| t.params.iter().any(|(n, _)| n.eq_ignore_ascii_case(b"tag")));
            if let (Some(tag), false, true) = (to_tag, has_tag, code > 100) {
                r.extend_from_slice(format!(";tag={tag}").as_bytes());
            }
            r.extend_from_slice(b"\r\n");
        }
    }
    for (name, value) in extra {
        r.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    match body {
        Some((ctype, b)) => {
            r.extend_from_slice(
                format!(
                    "Content-Type: {ctype}\r\nContent-Length: {}\r\n\r\n",
                    b.len()
                )
                .as_bytes(),
            );
            r.extend_from_slice(b);
        }
        None => r.extend_from_slice(b"Content-Length: 0\r\n\r\n"),
    }
    r
}
