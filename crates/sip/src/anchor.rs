//! Media anchoring: the hook through which a proxy hands every SDP body it forwards to a media
//! component that may rewrite it (as Kamailio hands them to rtpengine). The service-provider
//! gateway anchors media in its relay (it rewrites the connection address and ports, keeps the
//! keys); a voice gateway terminates SRTP (it rewrites addresses and keys, and re-encrypts).
//!
//! The proxy core calls [`MediaAnchor::sdp`] synchronously, with no I/O: an implementation
//! decides port numbers and keys and queues whatever its data plane must learn.

use std::net::SocketAddr;
use std::time::Instant;

/// Which party of a call wrote an SDP body: the caller (who sent the initial INVITE, known by
/// its From tag) or the callee.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    Caller,
    Callee,
}

impl Side {
    pub fn other(self) -> Side {
        match self {
            Side::Caller => Side::Callee,
            Side::Callee => Side::Caller,
        }
    }
}

/// RFC 3264: an offer, or the answer to the last offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SdpKind {
    Offer,
    Answer,
}

/// Where an SDP body is going, for the anchor.
#[derive(Debug, Clone)]
pub struct SdpContext<'a> {
    pub call_id: &'a str,
    /// Who wrote the body.
    pub side: Side,
    pub kind: SdpKind,
    /// The request method, or for a response the method it answers.
    pub method: &'a str,
    /// The response status, for a response.
    pub status: Option<u16>,
    /// The previous hop (the body arrived from there) and the next one (it goes there).
    pub from_addr: SocketAddr,
    pub to_addr: SocketAddr,
    /// The names of the trusted peers (trunks) these hops are, if they are.
    pub from_trusted: Option<&'a str>,
    pub to_trusted: Option<&'a str>,
    /// Whether the next hop is reached over TLS (where SDES keys may travel).
    pub to_tls: bool,
}

/// An anchor refused a body: the request is answered with `status`, or a response is not
/// forwarded (the caller gets `status` instead when no final response was sent yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub reason: String,
}

impl Refusal {
    pub fn new(status: u16, reason: impl Into<String>) -> Self {
        Refusal {
            status,
            reason: reason.into(),
        }
    }
}

/// A media component behind the proxy.
pub trait MediaAnchor {
    /// An SDP body crossing the proxy. `Ok(None)`: forward it unchanged; `Ok(Some(b))`: forward
    /// `b` instead.
    fn sdp(
        &mut self,
        now: Instant,
        ctx: &SdpContext<'_>,
        body: &[u8],
    ) -> Result<Option<Vec<u8>>, Refusal>;

    /// The call is over (BYE, CANCEL, an INVITE that failed, expiry): release its media.
    fn call_ended(&mut self, now: Instant, call_id: &str);

    /// The ACK of a 2xx crossed the proxy (`side` sent it): the dialog is confirmed, and every
    /// proxy on the path has seen the answer it acknowledges.
    fn acked(&mut self, _now: Instant, _call_id: &str, _side: Side) {}

    /// A signalling event of a call the proxy forwards (for interception-related information:
    /// who called whom, when it was answered or failed, when it was modified). The end of a
    /// call is [`MediaAnchor::call_ended`].
    fn call_event(&mut self, _now: Instant, _ev: &CallEvent<'_>) {}
}

/// Replaces the body of a SIP message (request or response), fixing Content-Length. The
/// header section is kept byte for byte, except for the Content-Length header (long or compact
/// form), written as `Content-Length: n`. `None` if the message has no header/body separator.
/// What [`MediaAnchor::call_event`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallEvent<'a> {
    /// A dialog-creating INVITE is forwarded: the From URI, the Request-URI as it arrived, the
    /// To URI, and the trusted peers (voice gateways, peer SPGs) it came from and goes to.
    Attempt {
        call_id: &'a str,
        from_uri: &'a str,
        request_uri: &'a str,
        to_uri: &'a str,
        from_trusted: Option<&'a str>,
        to_trusted: Option<&'a str>,
    },
    /// A provisional response (180/183) to the initial INVITE is forwarded.
    Alerting { call_id: &'a str, status: u16 },
    /// A 2xx to the initial INVITE is forwarded.
    Answered { call_id: &'a str },
    /// The initial INVITE got a final error response (or timed out: 408).
    Failed { call_id: &'a str, status: u16 },
    /// A re-INVITE or UPDATE inside the call is forwarded.
    Modified { call_id: &'a str, method: &'a str },
    /// A REGISTER was accepted (200) by this node's registrar: the address of record (To URI),
    /// the contacts it named (comma-separated, as sent; `*` for all), the Expires header if
    /// any (0: removal), and where it came from.
    Registered {
        aor: &'a str,
        contacts: &'a str,
        expires: Option<u32>,
        source: SocketAddr,
    },
}

pub fn replace_body(message: &[u8], body: &[u8]) -> Option<Vec<u8>> {
    let sep = message.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = &message[..sep + 2];
    let mut out = Vec::with_capacity(head.len() + body.len() + 24);
    let mut wrote = false;
    let mut lines = head.split_inclusive(|b| *b == b'\n').peekable();
    while let Some(line) = lines.next() {
        let name_end = line.iter().position(|b| *b == b':');
        let is_cl = name_end.is_some_and(|i| {
            let n = crate::grammar::trim(&line[..i]);
            n.eq_ignore_ascii_case(b"content-length") || n.eq_ignore_ascii_case(b"l")
        });
        if is_cl {
            // Skip folded continuation lines of the old value too.
            while lines
                .peek()
                .is_some_and(|l| matches!(l.first(), Some(b' ' | b'\t')))
            {
                lines.next();
            }
            if !wrote {
                out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
                wrote = true;
            }
        } else {
            out.extend_from_slice(line);
        }
    }
    if !wrote {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Framing, ParseLimits, SipMessage};

    #[test]
    fn replace_body_fixes_the_length_in_either_form() {
        let m =
            b"SIP/2.0 200 OK\r\nVia: SIP/2.0/TLS a;branch=z9hG4bK1\r\nl: 3\r\nX-A: b\r\n\r\nabc";
        let r = replace_body(m, b"hello").unwrap();
        assert_eq!(
            r,
            b"SIP/2.0 200 OK\r\nVia: SIP/2.0/TLS a;branch=z9hG4bK1\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello"
        );
        let m = b"INVITE sip:b@x SIP/2.0\r\nContent-Length:\r\n 3\r\n\r\nabc";
        let r = replace_body(m, b"").unwrap();
        assert_eq!(r, b"INVITE sip:b@x SIP/2.0\r\nContent-Length: 0\r\n\r\n");
        // Without a Content-Length, one is added.
        let r = replace_body(b"SIP/2.0 180 Ringing\r\nA: b\r\n\r\n", b"xy").unwrap();
        assert_eq!(
            r,
            b"SIP/2.0 180 Ringing\r\nA: b\r\nContent-Length: 2\r\n\r\nxy"
        );
        assert!(replace_body(b"no separator", b"").is_none());
        let full = b"INVITE sip:b@192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.2;branch=z9hG4bKx\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@x>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 1\r\n\r\nx";
        let r = replace_body(full, b"v=0\r\n").unwrap();
        let p = SipMessage::parse(&r, Framing::Stream, &ParseLimits::default()).unwrap();
        assert_eq!(p.body, b"v=0\r\n");
    }
}
