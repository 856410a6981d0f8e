//! Dialogs (RFC 3261 §12), sans-I/O: creation by the UAC from a 1xx/2xx to its INVITE
//! (§12.1.2) and by the UAS from the INVITE it answers (§12.1.1), the dialog id (Call-ID,
//! local tag, remote tag), local and remote CSeq, the remote target (Contact) and the route set
//! (Record-Route, reversed for the UAC, as received for the UAS), in-dialog requests with their
//! Route headers for loose and strict next hops (§12.2.1.1), and matching of in-dialog requests
//! and responses (§12.2.2).
//!
//! Also the small things every user agent needs next to a dialog: fresh tags, branches and
//! Call-IDs, the Contact values of a message and the next-hop target of a URI.

use std::sync::atomic::{AtomicU64, Ordering};

use aws_lc_rs::rand::{SecureRandom, SystemRandom};

use crate::grammar::{self, NameAddr};
use crate::message::{HeaderKind, SipMessage, StartLine};

/// Why a message cannot create, or does not fit, a dialog.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DialogError {
    #[error("missing or malformed {0}")]
    MissingHeader(&'static str),
    #[error("response {0} cannot create a dialog (needs 101-299 with a To tag)")]
    NotDialogCreating(u16),
    #[error("request CSeq {got} is lower than the dialog's remote CSeq {last}")]
    CSeqOutOfOrder { got: u32, last: u32 },
    #[error("the message does not belong to this dialog")]
    Mismatch,
    #[error("the dialog is terminated")]
    Terminated,
    #[error("malformed URI")]
    BadUri,
}

/// RFC 3261 §12: the states a dialog goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialogState {
    Early,
    Confirmed,
    Terminated,
}

/// The dialog id (RFC 3261 §12): Call-ID, local tag, remote tag.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DialogId {
    pub call_id: String,
    pub local_tag: String,
    pub remote_tag: String,
}

impl DialogId {
    /// The id of the dialog an incoming request belongs to (the UAS's view: the local tag is
    /// the To tag). `None` for a request outside any dialog (no To tag).
    pub fn of_request(req: &SipMessage<'_>) -> Option<DialogId> {
        Some(DialogId {
            call_id: text(req.call_id()?),
            local_tag: text(req.to()?.param("tag")?),
            remote_tag: text(req.from()?.param("tag")?),
        })
    }

    /// The id of the dialog a response to one of our requests belongs to (the local tag is the
    /// From tag).
    pub fn of_response(resp: &SipMessage<'_>) -> Option<DialogId> {
        Some(DialogId {
            call_id: text(resp.call_id()?),
            local_tag: text(resp.from()?.param("tag")?),
            remote_tag: text(resp.to()?.param("tag")?),
        })
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A dialog, from either side.
#[derive(Debug, Clone)]
pub struct Dialog {
    id: DialogId,
    state: DialogState,
    /// The last CSeq we used (0: none yet, the UAS's "empty" local sequence number).
    local_seq: u32,
    remote_seq: Option<u32>,
    /// `<URI>` of our From (UAC) or the request's To (UAS).
    local_uri: String,
    remote_uri: String,
    remote_target: String,
    /// Route set entries (`<sip:proxy;lr>` name-addrs), in the order requests carry them.
    route_set: Vec<String>,
    secure: bool,
    uac: bool,
}

/// Every element of every header of `kind`, in order.
fn elements<'m>(msg: &'m SipMessage<'_>, kind: HeaderKind) -> Vec<&'m [u8]> {
    msg.headers
        .iter()
        .filter(|h| h.kind == kind)
        .filter_map(|h| grammar::split_list(&h.value).ok())
        .flatten()
        .collect()
}

fn first_contact(msg: &SipMessage<'_>) -> Option<String> {
    elements(msg, HeaderKind::Contact)
        .first()
        .and_then(|e| grammar::name_addr(e).ok())
        .map(|na| text(na.uri.raw))
}

fn record_route(msg: &SipMessage<'_>) -> Result<Vec<String>, DialogError> {
    elements(msg, HeaderKind::RecordRoute)
        .into_iter()
        .map(|e| {
            grammar::name_addr(e)
                .map(|_| text(e))
                .map_err(|_| DialogError::MissingHeader("Record-Route"))
        })
        .collect()
}

fn request_uri<'a>(msg: &SipMessage<'a>) -> Option<&'a [u8]> {
    match msg.start {
        StartLine::Request { uri, .. } => Some(uri),
        StartLine::Response { .. } => None,
    }
}

fn is_sips(uri: &[u8]) -> bool {
    uri.len() > 5 && uri[..5].eq_ignore_ascii_case(b"sips:")
}

/// A URI parameter (`;lr`, `;transport=tls`) of a SIP URI: `Some(None)` for a parameter
/// without a value.
pub fn uri_param<'a>(uri: &'a [u8], name: &str) -> Option<Option<&'a [u8]>> {
    // Parameters follow the host (after the last '@' of the userinfo) and precede '?headers'.
    let after_user = match uri.iter().rposition(|b| *b == b'@') {
        Some(at) => &uri[at + 1..],
        None => uri,
    };
    let end = after_user
        .iter()
        .position(|b| *b == b'?')
        .unwrap_or(after_user.len());
    after_user[..end]
        .split(|b| *b == b';')
        .skip(1)
        .find_map(|p| {
            let (n, v) = match p.iter().position(|b| *b == b'=') {
                Some(eq) => (&p[..eq], Some(&p[eq + 1..])),
                None => (p, None),
            };
            n.eq_ignore_ascii_case(name.as_bytes()).then_some(v)
        })
}

fn uri_of_name_addr(s: &str) -> Option<String> {
    grammar::name_addr(s.as_bytes())
        .ok()
        .map(|na: NameAddr<'_>| text(na.uri.raw))
}

impl Dialog {
    /// RFC 3261 §12.1.2: the UAC's dialog from its INVITE (`request`) and a 101-299 response
    /// with a To tag. 1xx makes an early dialog, 2xx a confirmed one.
    pub fn uac(request: &SipMessage<'_>, response: &SipMessage<'_>) -> Result<Dialog, DialogError> {
        let code = match response.start {
            StartLine::Response { code, .. } => code,
            StartLine::Request { .. } => return Err(DialogError::NotDialogCreating(0)),
        };
        let to = response.to().ok_or(DialogError::MissingHeader("To"))?;
        let remote_tag = match (code, to.param("tag")) {
            (101..=299, Some(t)) => text(t),
            _ => return Err(DialogError::NotDialogCreating(code)),
        };
        let from = request.from().ok_or(DialogError::MissingHeader("From"))?;
        let local_tag = text(
            from.param("tag")
                .ok_or(DialogError::MissingHeader("From tag"))?,
        );
        let call_id = text(
            request
                .call_id()
                .ok_or(DialogError::MissingHeader("Call-ID"))?,
        );
        let local_seq = request
            .cseq()
            .ok_or(DialogError::MissingHeader("CSeq"))?
            .number;
        let remote_target = first_contact(response).ok_or(DialogError::MissingHeader("Contact"))?;
        let mut route_set = record_route(response)?;
        route_set.reverse();
        let ruri = request_uri(request).ok_or(DialogError::MissingHeader("Request-URI"))?;
        Ok(Dialog {
            id: DialogId {
                call_id,
                local_tag,
                remote_tag,
            },
            state: if code < 200 {
                DialogState::Early
            } else {
                DialogState::Confirmed
            },
            local_seq,
            remote_seq: None,
            local_uri: format!("<{}>", text(from.uri.raw)),
            remote_uri: format!("<{}>", text(to.uri.raw)),
            remote_target,
            route_set,
            secure: is_sips(ruri),
            uac: true,
        })
    }

    /// RFC 3261 §12.1.1: the UAS's dialog from the INVITE it answers with `local_tag` in To.
    /// The dialog is early until [`Dialog::confirm`] (when the 2xx is sent).
    pub fn uas(request: &SipMessage<'_>, local_tag: &str) -> Result<Dialog, DialogError> {
        let from = request.from().ok_or(DialogError::MissingHeader("From"))?;
        let to = request.to().ok_or(DialogError::MissingHeader("To"))?;
        let remote_tag = text(
            from.param("tag")
                .ok_or(DialogError::MissingHeader("From tag"))?,
        );
        let call_id = text(
            request
                .call_id()
                .ok_or(DialogError::MissingHeader("Call-ID"))?,
        );
        let remote_seq = request
            .cseq()
            .ok_or(DialogError::MissingHeader("CSeq"))?
            .number;
        let remote_target = first_contact(request).ok_or(DialogError::MissingHeader("Contact"))?;
        let ruri = request_uri(request).ok_or(DialogError::MissingHeader("Request-URI"))?;
        Ok(Dialog {
            id: DialogId {
                call_id,
                local_tag: local_tag.to_string(),
                remote_tag,
            },
            state: DialogState::Early,
            local_seq: 0,
            remote_seq: Some(remote_seq),
            local_uri: format!("<{}>", text(to.uri.raw)),
            remote_uri: format!("<{}>", text(from.uri.raw)),
            remote_target,
            route_set: record_route(request)?,
            secure: is_sips(ruri),
            uac: false,
        })
    }

    pub fn id(&self) -> &DialogId {
        &self.id
    }

    pub fn state(&self) -> DialogState {
        self.state
    }

    pub fn is_uac(&self) -> bool {
        self.uac
    }

    pub fn secure(&self) -> bool {
        self.secure
    }

    pub fn local_seq(&self) -> u32 {
        self.local_seq
    }

    pub fn remote_seq(&self) -> Option<u32> {
        self.remote_seq
    }

    pub fn remote_target(&self) -> &str {
        &self.remote_target
    }

    pub fn route_set(&self) -> &[String] {
        &self.route_set
    }

    /// The UAS sent its 2xx: the dialog is confirmed.
    pub fn confirm(&mut self) {
        if self.state == DialogState::Early {
            self.state = DialogState::Confirmed;
        }
    }

    /// The dialog ends (BYE sent or received, or the early dialog's INVITE failed).
    pub fn terminate(&mut self) {
        self.state = DialogState::Terminated;
    }

    /// Whether an incoming request belongs to this dialog (RFC 3261 §12.2.2).
    pub fn matches_request(&self, req: &SipMessage<'_>) -> bool {
        DialogId::of_request(req).as_ref() == Some(&self.id)
    }

    /// Whether a response belongs to this dialog.
    pub fn matches_response(&self, resp: &SipMessage<'_>) -> bool {
        DialogId::of_response(resp).as_ref() == Some(&self.id)
    }

    /// RFC 3261 §12.1.2 / §13.2.2.4: a response to our INVITE within this (UAC) dialog. A 2xx
    /// confirms an early dialog and fixes its route set; 1xx/2xx with Contact refresh the
    /// remote target; a final non-2xx ends an early dialog.
    pub fn handle_response(&mut self, resp: &SipMessage<'_>) -> Result<(), DialogError> {
        if !self.matches_response(resp) {
            return Err(DialogError::Mismatch);
        }
        let StartLine::Response { code, .. } = resp.start else {
            return Err(DialogError::Mismatch);
        };
        let invite = resp.cseq().is_some_and(|c| c.method == b"INVITE");
        match code {
            101..=299 if invite => {
                if let Some(t) = first_contact(resp) {
                    self.remote_target = t;
                }
                if code >= 200 && self.state == DialogState::Early {
                    if self.uac {
                        let mut rs = record_route(resp)?;
                        rs.reverse();
                        self.route_set = rs;
                    }
                    self.state = DialogState::Confirmed;
                }
            }
            300..=699 if invite && self.state == DialogState::Early => {
                self.state = DialogState::Terminated;
            }
            // RFC 3261 §12.2.1.2: 481 and 408 to an in-dialog request end the dialog.
            408 | 481 => self.state = DialogState::Terminated,
            _ => {}
        }
        Ok(())
    }

    /// RFC 3261 §12.2.2: an incoming request within this dialog. A CSeq lower than the last
    /// one is refused (answer 500); a target refresh (INVITE with Contact) updates the remote
    /// target; BYE terminates the dialog.
    pub fn handle_request(&mut self, req: &SipMessage<'_>) -> Result<(), DialogError> {
        if !self.matches_request(req) {
            return Err(DialogError::Mismatch);
        }
        if self.state == DialogState::Terminated {
            return Err(DialogError::Terminated);
        }
        let method = req.method().unwrap_or_default();
        let cseq = req.cseq().ok_or(DialogError::MissingHeader("CSeq"))?.number;
        // ACK and CANCEL carry the CSeq of the INVITE they belong to.
        if method != "ACK" && method != "CANCEL" {
            if let Some(last) = self.remote_seq {
                if cseq <= last {
                    return Err(DialogError::CSeqOutOfOrder { got: cseq, last });
                }
            }
            self.remote_seq = Some(cseq);
        }
        match method {
            "INVITE" | "UPDATE" => {
                if let Some(t) = first_contact(req) {
                    self.remote_target = t;
                }
            }
            "BYE" => self.state = DialogState::Terminated,
            _ => {}
        }
        Ok(())
    }

    /// RFC 3261 §12.2.1.1: the Request-URI and Route header values of an in-dialog request.
    /// With a loose-routing first hop (`;lr`) the Request-URI is the remote target and the
    /// route set goes in Route; with a strict router, its URI becomes the Request-URI and the
    /// remote target goes last in Route.
    pub fn request_target(&self) -> (String, Vec<String>) {
        let Some(first) = self.route_set.first() else {
            return (self.remote_target.clone(), Vec::new());
        };
        let first_uri = uri_of_name_addr(first).unwrap_or_default();
        if uri_param(first_uri.as_bytes(), "lr").is_some() {
            (self.remote_target.clone(), self.route_set.clone())
        } else {
            let mut routes: Vec<String> = self.route_set[1..].to_vec();
            routes.push(format!("<{}>", self.remote_target));
            (first_uri, routes)
        }
    }

    /// The URI a request in this dialog is sent to: the first route, or the remote target.
    pub fn next_hop(&self) -> String {
        self.route_set
            .first()
            .and_then(|r| uri_of_name_addr(r))
            .unwrap_or_else(|| self.remote_target.clone())
    }

    /// Builds an in-dialog request (BYE, re-INVITE, INFO...) with the next local CSeq. `via` is
    /// the whole Via value (with its branch); `extra` header fields go before the body.
    pub fn request(
        &mut self,
        method: &str,
        via: &str,
        extra: &[(&str, String)],
        body: Option<(&str, &[u8])>,
    ) -> Vec<u8> {
        // RFC 3261 §8.1.1.5: CSeq stays below 2^31.
        self.local_seq = (self.local_seq % 0x7fff_fff0) + 1;
        if method == "BYE" {
            self.state = DialogState::Terminated;
        }
        self.build(method, self.local_seq, via, extra, body)
    }

    /// RFC 3261 §13.2.2.4: the ACK for a 2xx to the INVITE with CSeq `invite_cseq` (a new
    /// transaction: its own branch, the dialog's route set).
    pub fn ack(&self, invite_cseq: u32, via: &str, extra: &[(&str, String)]) -> Vec<u8> {
        self.build("ACK", invite_cseq, via, extra, None)
    }

    fn build(
        &self,
        method: &str,
        cseq: u32,
        via: &str,
        extra: &[(&str, String)],
        body: Option<(&str, &[u8])>,
    ) -> Vec<u8> {
        let (ruri, routes) = self.request_target();
        let mut r = format!("{method} {ruri} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\n");
        for route in &routes {
            r.push_str(&format!("Route: {route}\r\n"));
        }
        r.push_str(&format!(
            "From: {};tag={}\r\nTo: {};tag={}\r\nCall-ID: {}\r\nCSeq: {cseq} {method}\r\n",
            self.local_uri, self.id.local_tag, self.remote_uri, self.id.remote_tag, self.id.call_id
        ));
        for (name, value) in extra {
            r.push_str(&format!("{name}: {value}\r\n"));
        }
        let mut out = r.into_bytes();
        match body {
            Some((ctype, b)) => {
                out.extend_from_slice(
                    format!(
                        "Content-Type: {ctype}\r\nContent-Length: {}\r\n\r\n",
                        b.len()
                    )
                    .as_bytes(),
                );
                out.extend_from_slice(b);
            }
            None => out.extend_from_slice(b"Content-Length: 0\r\n\r\n"),
        }
        out
    }
}

/// One Contact value: its URI and `expires` parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contact {
    pub uri: String,
    pub expires: Option<u32>,
}

/// The Contact values of a message (a REGISTER's 200 lists the bindings), `*` excluded.
pub fn contacts(msg: &SipMessage<'_>) -> Vec<Contact> {
    elements(msg, HeaderKind::Contact)
        .into_iter()
        .filter_map(|e| grammar::name_addr(e).ok())
        .map(|na| Contact {
            uri: text(na.uri.raw),
            expires: na
                .param("expires")
                .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok()),
        })
        .collect()
}

/// Where a SIP URI says to send a request (RFC 3263 without DNS: host, port, transport).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `sips:` (TLS required).
    pub secure: bool,
    pub user: Option<String>,
    /// The host as written (an IPv6 reference keeps its brackets).
    pub host: String,
    pub port: Option<u16>,
    /// The `transport` parameter, lower case.
    pub transport: Option<String>,
}

/// Parses a SIP/SIPS URI into its next-hop [`Target`].
pub fn parse_target(uri: &str) -> Result<Target, DialogError> {
    let u = grammar::uri(uri.as_bytes()).map_err(|_| DialogError::BadUri)?;
    if !u.is_sip() {
        return Err(DialogError::BadUri);
    }
    Ok(Target {
        secure: u.scheme.eq_ignore_ascii_case("sips"),
        user: u.user.map(text),
        host: text(u.host),
        port: u.port,
        transport: uri_param(u.raw, "transport")
            .flatten()
            .map(|t| text(t).to_ascii_lowercase()),
    })
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// `n` random bytes as lower-case hex. Should the system RNG ever fail, a process-wide counter
/// still keeps the values unique (tags and branches need uniqueness, not secrecy).
fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    if SystemRandom::new().fill(&mut b).is_err() {
        let c = COUNTER.fetch_add(1, Ordering::Relaxed).to_be_bytes();
        for (i, x) in b.iter_mut().enumerate() {
            *x ^= c[i % 8];
        }
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A fresh From/To tag (RFC 3261 §19.3: at least 32 random bits).
pub fn new_tag() -> String {
    random_hex(8)
}

/// A fresh Via branch with the RFC 3261 magic cookie.
pub fn new_branch() -> String {
    format!("z9hG4bK{}", random_hex(12))
}

/// A fresh Call-ID (`random@host`).
pub fn new_call_id(host: &str) -> String {
    let host: String = host
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(*c))
        .collect();
    if host.is_empty() {
        random_hex(16)
    } else {
        format!("{}@{host}", random_hex(16))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Framing, ParseLimits};

    fn parse(b: &[u8]) -> SipMessage<'_> {
        SipMessage::parse(b, Framing::Datagram, &ParseLimits::default()).unwrap()
    }

    const INVITE: &[u8] = b"INVITE sip:bob@b.example SIP/2.0\r\n\
Via: SIP/2.0/TLS 192.0.2.1:5061;branch=z9hG4bKa1\r\n\
Max-Forwards: 70\r\n\
Record-Route: <sip:p2.b.example;lr>\r\n\
Record-Route: <sip:p1.a.example;lr>\r\n\
From: <sip:alice@a.example>;tag=alicetag\r\n\
To: <sip:bob@b.example>\r\n\
Call-ID: call1@a.example\r\n\
CSeq: 7 INVITE\r\n\
Contact: <sip:alice@192.0.2.1:5061;transport=tls>\r\n\
Content-Length: 0\r\n\r\n";

    const OK: &[u8] = b"SIP/2.0 200 OK\r\n\
Via: SIP/2.0/TLS 192.0.2.1:5061;branch=z9hG4bKa1\r\n\
Record-Route: <sip:p2.b.example;lr>, <sip:p1.a.example;lr>\r\n\
From: <sip:alice@a.example>;tag=alicetag\r\n\
To: <sip:bob@b.example>;tag=bobtag\r\n\
Call-ID: call1@a.example\r\n\
CSeq: 7 INVITE\r\n\
Contact: <sip:bob@198.51.100.2:5061;transport=tls>\r\n\
Content-Length: 0\r\n\r\n";

    #[test]
    fn uac_dialog_reverses_the_route_set_and_builds_ack_and_bye() {
        let mut d = Dialog::uac(&parse(INVITE), &parse(OK)).unwrap();
        assert_eq!(d.state(), DialogState::Confirmed);
        assert_eq!(
            d.id(),
            &DialogId {
                call_id: "call1@a.example".into(),
                local_tag: "alicetag".into(),
                remote_tag: "bobtag".into()
            }
        );
        assert_eq!(
            d.route_set(),
            ["<sip:p1.a.example;lr>", "<sip:p2.b.example;lr>"]
        );
        assert_eq!(d.remote_target(), "sip:bob@198.51.100.2:5061;transport=tls");
        assert_eq!(d.next_hop(), "sip:p1.a.example;lr");
        assert!(d.matches_response(&parse(OK)));

        let ack = d.ack(7, "SIP/2.0/TLS 192.0.2.1:5061;branch=z9hG4bKack", &[]);
        let m = parse(&ack);
        assert_eq!(
            m.start,
            StartLine::Request {
                method: "ACK",
                uri: b"sip:bob@198.51.100.2:5061;transport=tls"
            }
        );
        let routes: Vec<&[u8]> = m
            .headers
            .iter()
            .filter(|h| h.kind == HeaderKind::Route)
            .map(|h| h.raw_value)
            .collect();
        assert_eq!(
            routes,
            [&b"<sip:p1.a.example;lr>"[..], b"<sip:p2.b.example;lr>"]
        );
        assert_eq!(m.cseq().unwrap().number, 7);
        assert_eq!(m.cseq().unwrap().method, b"ACK");
        assert_eq!(m.to().unwrap().param("tag").unwrap(), b"bobtag");
        assert_eq!(m.from().unwrap().param("tag").unwrap(), b"alicetag");

        let bye = d.request(
            "BYE",
            "SIP/2.0/TLS 192.0.2.1:5061;branch=z9hG4bKbye",
            &[],
            None,
        );
        let m = parse(&bye);
        assert_eq!(m.method(), Some("BYE"));
        assert_eq!(m.cseq().unwrap().number, 8, "next local CSeq");
        assert_eq!(d.state(), DialogState::Terminated);
    }

    #[test]
    fn uas_dialog_keeps_the_route_set_order_and_checks_cseq() {
        let inv = parse(INVITE);
        let mut d = Dialog::uas(&inv, "bobtag").unwrap();
        assert_eq!(d.state(), DialogState::Early);
        d.confirm();
        assert_eq!(d.state(), DialogState::Confirmed);
        assert_eq!(
            d.route_set(),
            ["<sip:p2.b.example;lr>", "<sip:p1.a.example;lr>"]
        );
        assert_eq!(d.remote_target(), "sip:alice@192.0.2.1:5061;transport=tls");
        assert_eq!(d.remote_seq(), Some(7));

        // The ACK for our 2xx, then a BYE from the caller.
        let ack = b"ACK sip:bob@198.51.100.2:5061;transport=tls SIP/2.0\r\n\
Via: SIP/2.0/TLS 192.0.2.1:5061;branch=z9hG4bKa2\r\n\
From: <sip:alice@a.example>;tag=alicetag\r\n\
To: <sip:bob@b.example>;tag=bobtag\r\n\
Call-ID: call1@a.example\r\n\
CSeq: 7 ACK\r\n\
Content-Length: 0\r\n\r\n";
        assert!(d.matches_request(&parse(ack)));
        d.handle_request(&parse(ack)).unwrap();
        let old = String::from_utf8(ack.to_vec())
            .unwrap()
            .replace("ACK sip", "INFO sip")
            .replace("7 ACK", "6 INFO");
        assert_eq!(
            d.handle_request(&parse(old.as_bytes())),
            Err(DialogError::CSeqOutOfOrder { got: 6, last: 7 })
        );
        let bye = String::from_utf8(ack.to_vec())
            .unwrap()
            .replace("ACK sip", "BYE sip")
            .replace("7 ACK", "8 BYE");
        d.handle_request(&parse(bye.as_bytes())).unwrap();
        assert_eq!(d.state(), DialogState::Terminated);

        // Our own requests in the dialog start the local CSeq at 1 and go out From our To.
        let mut d = Dialog::uas(&inv, "bobtag").unwrap();
        let bye = d.request("BYE", "SIP/2.0/TLS h;branch=z9hG4bKx", &[], None);
        let m = parse(&bye);
        assert_eq!(m.cseq().unwrap().number, 1);
        assert_eq!(m.from().unwrap().uri.raw, b"sip:bob@b.example");
        assert_eq!(m.from().unwrap().param("tag").unwrap(), b"bobtag");
        assert_eq!(m.to().unwrap().param("tag").unwrap(), b"alicetag");
        assert_eq!(
            m.start,
            StartLine::Request {
                method: "BYE",
                uri: b"sip:alice@192.0.2.1:5061;transport=tls"
            }
        );
    }

    #[test]
    fn strict_router_goes_in_the_request_uri() {
        let ok = String::from_utf8(OK.to_vec()).unwrap().replace(
            "<sip:p2.b.example;lr>, <sip:p1.a.example;lr>",
            "<sip:p2.b.example;lr>, <sip:p1.a.example>",
        );
        let mut d = Dialog::uac(&parse(INVITE), &parse(ok.as_bytes())).unwrap();
        let (ruri, routes) = d.request_target();
        assert_eq!(ruri, "sip:p1.a.example");
        assert_eq!(
            routes,
            [
                "<sip:p2.b.example;lr>",
                "<sip:bob@198.51.100.2:5061;transport=tls>"
            ]
        );
        let bye = d.request("BYE", "SIP/2.0/TLS h;branch=z9hG4bKx", &[], None);
        assert_eq!(parse(&bye).method(), Some("BYE"));
    }

    #[test]
    fn early_dialog_is_confirmed_by_the_2xx_and_its_route_set() {
        let ringing = String::from_utf8(OK.to_vec())
            .unwrap()
            .replace("200 OK", "180 Ringing")
            .replace(
                "Record-Route: <sip:p2.b.example;lr>, <sip:p1.a.example;lr>\r\n",
                "",
            );
        let mut d = Dialog::uac(&parse(INVITE), &parse(ringing.as_bytes())).unwrap();
        assert_eq!(d.state(), DialogState::Early);
        assert!(d.route_set().is_empty());
        d.handle_response(&parse(OK)).unwrap();
        assert_eq!(d.state(), DialogState::Confirmed);
        assert_eq!(d.route_set().len(), 2);
        // A 2xx of another dialog (forking) does not match.
        let other = String::from_utf8(OK.to_vec())
            .unwrap()
            .replace("bobtag", "other");
        assert_eq!(
            d.handle_response(&parse(other.as_bytes())),
            Err(DialogError::Mismatch)
        );
        // A final failure ends an early dialog.
        let mut d = Dialog::uac(&parse(INVITE), &parse(ringing.as_bytes())).unwrap();
        let busy = ringing.replace("180 Ringing", "486 Busy Here");
        d.handle_response(&parse(busy.as_bytes())).unwrap();
        assert_eq!(d.state(), DialogState::Terminated);
    }

    #[test]
    fn responses_that_cannot_create_a_dialog() {
        let no_tag = String::from_utf8(OK.to_vec())
            .unwrap()
            .replace(";tag=bobtag", "");
        assert_eq!(
            Dialog::uac(&parse(INVITE), &parse(no_tag.as_bytes())).unwrap_err(),
            DialogError::NotDialogCreating(200)
        );
        let no_contact = String::from_utf8(OK.to_vec())
            .unwrap()
            .replace("Contact: <sip:bob@198.51.100.2:5061;transport=tls>\r\n", "");
        assert_eq!(
            Dialog::uac(&parse(INVITE), &parse(no_contact.as_bytes())).unwrap_err(),
            DialogError::MissingHeader("Contact")
        );
        let no_from_tag = String::from_utf8(INVITE.to_vec())
            .unwrap()
            .replace(";tag=alicetag", "");
        assert!(Dialog::uas(&parse(no_from_tag.as_bytes()), "t").is_err());
    }

    #[test]
    fn targets_contacts_and_fresh_identifiers() {
        let t = parse_target("sip:bob@127.0.0.1:5061;transport=TLS").unwrap();
        assert_eq!(t.host, "127.0.0.1");
        assert_eq!(t.port, Some(5061));
        assert_eq!(t.transport.as_deref(), Some("tls"));
        assert_eq!(t.user.as_deref(), Some("bob"));
        let t = parse_target("sips:[::1]").unwrap();
        assert!(t.secure);
        assert_eq!(t.host, "[::1]");
        assert!(parse_target("tel:+1234").is_err());
        assert!(parse_target("sip:").is_err());
        assert_eq!(uri_param(b"sip:a;b@h;lr", "lr"), Some(None));
        assert_eq!(uri_param(b"sip:a;lr@h", "lr"), None);

        let ok = String::from_utf8(OK.to_vec()).unwrap().replace(
            "Contact: <sip:bob@198.51.100.2:5061;transport=tls>",
            "Contact: <sip:bob@198.51.100.2>;expires=600, <sip:bob@h2>",
        );
        let c = contacts(&parse(ok.as_bytes()));
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].expires, Some(600));
        assert_eq!(c[1].uri, "sip:bob@h2");

        assert_ne!(new_tag(), new_tag());
        let b = new_branch();
        assert!(b.starts_with("z9hG4bK") && b.len() > 20);
        let id = new_call_id("127.0.0.1");
        assert!(id.ends_with("@127.0.0.1"));
        let req = format!(
            "OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch={b}\r\nFrom: <sip:x@y>;tag={}\r\nTo: <sip:a@b>\r\nCall-ID: {id}\r\nCSeq: 1 OPTIONS\r\n\r\n",
            new_tag()
        );
        assert!(
            SipMessage::parse(req.as_bytes(), Framing::Datagram, &ParseLimits::default()).is_ok()
        );
    }
}
