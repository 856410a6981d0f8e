//! SIP message parsing (RFC 3261 §7): start line, header fields (folding, compact forms),
//! body framing by Content-Length, and the checks a proxy needs before it trusts a message.
//!
//! The parser borrows the input and keeps every header field as the bytes it arrived as, so a
//! proxy can forward unknown headers and bodies byte-exact. Headers whose grammar matters to
//! routing and transactions (Via, From, To, Contact, Route, Record-Route, CSeq, Call-ID,
//! Max-Forwards, Content-Length) are checked at parse time.

use crate::error::{ErrorKind, ParseError};
use crate::grammar::{self, NameAddr, Via};

/// How the message arrived: one datagram (UDP), or a byte stream (TCP/TLS) where
/// Content-Length frames the body and must be present.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Datagram,
    Stream,
}

/// Size limits; a message over any of them is refused before it costs more work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseLimits {
    pub max_message: usize,
    pub max_headers: usize,
    pub max_line: usize,
    pub max_body: usize,
}

impl Default for ParseLimits {
    fn default() -> Self {
        ParseLimits {
            max_message: 65_535,
            max_headers: 256,
            max_line: 8_192,
            max_body: 65_535,
        }
    }
}

/// Header fields voxgate knows by name (long and compact forms, case-insensitive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HeaderKind {
    Via,
    From,
    To,
    CallId,
    CSeq,
    MaxForwards,
    ContentLength,
    ContentType,
    Contact,
    Route,
    RecordRoute,
    Other,
}

impl HeaderKind {
    pub fn from_name(name: &[u8]) -> Self {
        let eq = |s: &str| name.eq_ignore_ascii_case(s.as_bytes());
        if eq("via") || eq("v") {
            HeaderKind::Via
        } else if eq("from") || eq("f") {
            HeaderKind::From
        } else if eq("to") || eq("t") {
            HeaderKind::To
        } else if eq("call-id") || eq("i") {
            HeaderKind::CallId
        } else if eq("cseq") {
            HeaderKind::CSeq
        } else if eq("max-forwards") {
            HeaderKind::MaxForwards
        } else if eq("content-length") || eq("l") {
            HeaderKind::ContentLength
        } else if eq("content-type") || eq("c") {
            HeaderKind::ContentType
        } else if eq("contact") || eq("m") {
            HeaderKind::Contact
        } else if eq("route") {
            HeaderKind::Route
        } else if eq("record-route") {
            HeaderKind::RecordRoute
        } else {
            HeaderKind::Other
        }
    }

    /// Header fields that may appear only once (RFC 3261 §7.3.1, §20).
    pub fn single_instance(self) -> bool {
        matches!(
            self,
            HeaderKind::From
                | HeaderKind::To
                | HeaderKind::CallId
                | HeaderKind::CSeq
                | HeaderKind::MaxForwards
                | HeaderKind::ContentLength
                | HeaderKind::ContentType
        )
    }
}

/// One header field as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header<'a> {
    pub kind: HeaderKind,
    /// The name as sent.
    pub name: &'a [u8],
    /// The value as sent (folded lines included), without leading and trailing LWS.
    pub raw_value: &'a [u8],
    /// The value with folds replaced by single spaces.
    pub value: std::borrow::Cow<'a, [u8]>,
    /// Offset of the header line in the message.
    pub offset: usize,
}

/// The first line of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine<'a> {
    Request { method: &'a str, uri: &'a [u8] },
    Response { code: u16, reason: &'a [u8] },
}

/// `CSeq: number method`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CSeq<'a> {
    pub number: u32,
    pub method: &'a [u8],
}

/// A parsed SIP message borrowing its input.
#[derive(Debug, Clone)]
pub struct SipMessage<'a> {
    pub raw: &'a [u8],
    pub start: StartLine<'a>,
    pub headers: Vec<Header<'a>>,
    pub body: &'a [u8],
    /// Total bytes of this message in the input (a stream may hold more after it).
    pub len: usize,
}

/// Methods of RFC 3261 and its common extensions; others are "unknown" (501 from endpoints).
pub const KNOWN_METHODS: &[&str] = &[
    "INVITE",
    "ACK",
    "BYE",
    "CANCEL",
    "OPTIONS",
    "REGISTER",
    "PRACK",
    "SUBSCRIBE",
    "NOTIFY",
    "PUBLISH",
    "INFO",
    "REFER",
    "MESSAGE",
    "UPDATE",
];

fn find_header_end(buf: &[u8]) -> Option<(usize, usize)> {
    // Returns (end of the last header line, start of the body).
    let mut i = 0;
    while i < buf.len() {
        if buf[i] == b'\n' {
            let next = &buf[i + 1..];
            if next.starts_with(b"\r\n") {
                return Some((i + 1, i + 3));
            }
            if next.starts_with(b"\n") {
                return Some((i + 1, i + 2));
            }
        }
        i += 1;
    }
    None
}

/// Splits the header section into lines (CRLF or LF), keeping each line's offset.
fn lines(section: &[u8]) -> Vec<(usize, &[u8])> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, b) in section.iter().enumerate() {
        if *b == b'\n' {
            let mut end = i;
            if end > start && section[end - 1] == b'\r' {
                end -= 1;
            }
            out.push((start, &section[start..end]));
            start = i + 1;
        }
    }
    if start < section.len() {
        out.push((start, &section[start..]));
    }
    out
}

fn parse_start_line(line: &[u8], off: usize) -> Result<StartLine<'_>, ParseError> {
    let err = |k| ParseError::new(k, off);
    if line.len() >= 4 && line[..4].eq_ignore_ascii_case(b"SIP/") {
        // Status-Line = SIP-Version SP Status-Code SP Reason-Phrase
        let mut it = line.splitn(3, |b| *b == b' ');
        let version = it.next().unwrap_or_default();
        let code = it.next().ok_or(err(ErrorKind::BadStartLine))?;
        let reason = it.next().ok_or(err(ErrorKind::BadStartLine))?;
        check_version(version, off)?;
        if code.len() != 3 || !code.iter().all(u8::is_ascii_digit) {
            return Err(err(ErrorKind::BadStatusCode));
        }
        let code: u16 = std::str::from_utf8(code)
            .ok()
            .and_then(|c| c.parse().ok())
            .ok_or(err(ErrorKind::BadStatusCode))?;
        if !(100..=699).contains(&code) {
            return Err(err(ErrorKind::BadStatusCode));
        }
        if reason.iter().any(|b| b.is_ascii_control() && *b != b'\t') {
            return Err(err(ErrorKind::ControlCharacter));
        }
        return Ok(StartLine::Response { code, reason });
    }
    // Request-Line = Method SP Request-URI SP SIP-Version: exactly two single spaces.
    let parts: Vec<&[u8]> = line.split(|b| *b == b' ').collect();
    if parts.len() != 3 || parts.iter().any(|p| p.is_empty()) {
        return Err(err(ErrorKind::BadStartLine));
    }
    let (method, uri, version) = (parts[0], parts[1], parts[2]);
    if !grammar::all_token(method) {
        return Err(err(ErrorKind::BadStartLine));
    }
    check_version(version, off + method.len() + uri.len() + 2)?;
    let parsed = grammar::uri(uri).map_err(|_| err(ErrorKind::BadRequestUri))?;
    // A Request-URI must not carry URI headers (RFC 3261 §19.1.1, RFC 4475 §3.1.2.11).
    if parsed.is_sip() && parsed.has_headers {
        return Err(err(ErrorKind::BadRequestUri));
    }
    let method = std::str::from_utf8(method).map_err(|_| err(ErrorKind::BadStartLine))?;
    Ok(StartLine::Request { method, uri })
}

fn check_version(v: &[u8], off: usize) -> Result<(), ParseError> {
    // SIP-Version = "SIP" "/" 1*DIGIT "." 1*DIGIT ("SIP" case-insensitive).
    let ok_shape = v.len() > 4
        && v[..4].eq_ignore_ascii_case(b"SIP/")
        && v[4..].split(|b| *b == b'.').count() == 2
        && v[4..]
            .split(|b| *b == b'.')
            .all(|d| !d.is_empty() && d.iter().all(u8::is_ascii_digit));
    if !ok_shape {
        return Err(ParseError::new(ErrorKind::BadStartLine, off));
    }
    if &v[4..] != b"2.0" {
        return Err(ParseError::new(ErrorKind::BadVersion, off));
    }
    Ok(())
}

/// A control character (other than HTAB) that is not escaped as a quoted-pair (RFC 3261 §25.1
/// allows `\` followed by any octet but CR and LF inside quoted strings, so a display name may
/// carry an escaped BEL or NUL; a bare one is refused).
fn has_bare_control(line: &[u8]) -> bool {
    let mut i = 0;
    let mut quoted = false;
    while i < line.len() {
        let b = line[i];
        if quoted
            && b == b'\\'
            && i + 1 < line.len()
            && line[i + 1] != b'\r'
            && line[i + 1] != b'\n'
        {
            i += 2;
            continue;
        }
        if b == b'"' {
            quoted = !quoted;
        }
        if (b.is_ascii_control() && b != b'\t') || b == 0x7f {
            return true;
        }
        i += 1;
    }
    false
}

fn unfold(raw: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if !raw.contains(&b'\n') {
        return std::borrow::Cow::Borrowed(raw);
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'\r' | b'\n' => {
                // CRLF followed by whitespace: one space.
                while i < raw.len()
                    && (raw[i] == b'\r' || raw[i] == b'\n' || grammar::is_lws(raw[i]))
                {
                    i += 1;
                }
                out.push(b' ');
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    std::borrow::Cow::Owned(out)
}

fn parse_number(s: &[u8], max_digits: usize) -> Option<u64> {
    if s.is_empty() || s.len() > max_digits || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(s).ok()?.parse().ok()
}

pub(crate) fn parse_cseq(v: &[u8]) -> Option<CSeq<'_>> {
    let v = grammar::trim(v);
    let n = v.iter().take_while(|b| b.is_ascii_digit()).count();
    let number = parse_number(&v[..n], 10)?;
    // RFC 3261 §8.1.1.5: less than 2**31.
    if number >= 1 << 31 {
        return None;
    }
    let rest = &v[n..];
    if rest.is_empty() || !grammar::is_lws(rest[0]) {
        return None;
    }
    let method = grammar::trim(rest);
    if !grammar::all_token(method) {
        return None;
    }
    Some(CSeq {
        number: number as u32,
        method,
    })
}

impl<'a> SipMessage<'a> {
    /// Parses one message from `buf`.
    pub fn parse(
        buf: &'a [u8],
        framing: Framing,
        limits: &ParseLimits,
    ) -> Result<SipMessage<'a>, ParseError> {
        if framing == Framing::Datagram && buf.len() > limits.max_message {
            return Err(ParseError::new(ErrorKind::TooLarge, limits.max_message));
        }
        // RFC 3261 §7.5 / RFC 5626: on a stream, CRLFs before a message are keep-alives.
        let skip = match framing {
            Framing::Stream => buf
                .iter()
                .take_while(|b| **b == b'\r' || **b == b'\n')
                .count(),
            Framing::Datagram => 0,
        };
        if skip > 0 {
            let mut m = SipMessage::parse(&buf[skip..], framing, limits)?;
            m.raw = buf;
            m.len += skip;
            return Ok(m);
        }
        let scan = &buf[..buf.len().min(limits.max_message.saturating_add(4))];
        let (head_end, body_start) = match find_header_end(scan) {
            Some(x) => x,
            None if buf.len() > limits.max_message => {
                return Err(ParseError::new(ErrorKind::TooLarge, limits.max_message))
            }
            None if framing == Framing::Stream => {
                return Err(ParseError::new(ErrorKind::Incomplete, buf.len()))
            }
            None => return Err(ParseError::new(ErrorKind::NoHeaderEnd, buf.len())),
        };
        if body_start > limits.max_message {
            return Err(ParseError::new(ErrorKind::TooLarge, limits.max_message));
        }
        // Lines end with CRLF: a bare CR or LF would be framed differently by the next hop.
        let head = &buf[..head_end];
        for (i, b) in head.iter().enumerate() {
            let bare = match b {
                b'\n' => i == 0 || head[i - 1] != b'\r',
                b'\r' => head.get(i + 1) != Some(&b'\n'),
                _ => false,
            };
            if bare {
                return Err(ParseError::new(ErrorKind::BareLineEnding, i));
            }
        }
        if buf[head_end..body_start] != *b"\r\n" {
            return Err(ParseError::new(ErrorKind::BareLineEnding, head_end));
        }
        let ls = lines(&buf[..head_end]);
        let (first_off, first) = *ls
            .first()
            .ok_or(ParseError::new(ErrorKind::BadStartLine, 0))?;
        if first.len() > limits.max_line {
            return Err(ParseError::new(ErrorKind::LineTooLong, first_off));
        }
        let start = parse_start_line(first, first_off)?;

        // Header fields, with continuation lines folded into the previous one.
        let mut headers: Vec<Header<'a>> = Vec::new();
        let mut raw_spans: Vec<(usize, usize, usize)> = Vec::new(); // (line off, value start, end)
        let mut names: Vec<&'a [u8]> = Vec::new();
        for &(off, line) in &ls[1..] {
            if line.len() > limits.max_line {
                return Err(ParseError::new(ErrorKind::LineTooLong, off));
            }
            let continuation = line.first().is_some_and(|b| grammar::is_lws(*b));
            if has_bare_control(line) {
                let name: &[u8] = if continuation {
                    names.last().copied().unwrap_or_default()
                } else {
                    line.split(|c| *c == b':').next().unwrap_or_default()
                };
                return Err(ParseError::in_header(
                    ErrorKind::ControlCharacter,
                    off,
                    name,
                ));
            }
            if continuation {
                let last = raw_spans
                    .last_mut()
                    .ok_or(ParseError::new(ErrorKind::BadHeaderName, off))?;
                last.2 = off + line.len();
                // A folded header is still one line for the limit.
                if last.2 - last.0 > limits.max_line {
                    return Err(ParseError::new(ErrorKind::LineTooLong, off));
                }
                continue;
            }
            if raw_spans.len() >= limits.max_headers {
                return Err(ParseError::new(ErrorKind::TooManyHeaders, off));
            }
            let colon = line
                .iter()
                .position(|b| *b == b':')
                .ok_or_else(|| ParseError::in_header(ErrorKind::BadHeaderName, off, line))?;
            let name = grammar::trim(&line[..colon]);
            // header-name HCOLON: a token, then only whitespace before the colon.
            if !grammar::all_token(name) || grammar::is_lws(line[0]) {
                return Err(ParseError::in_header(ErrorKind::BadHeaderName, off, name));
            }
            names.push(&buf[off..off + name.len()]);
            raw_spans.push((off, off + colon + 1, off + line.len()));
        }
        for (i, (off, vstart, vend)) in raw_spans.into_iter().enumerate() {
            let raw_value = grammar::trim_all(&buf[vstart..vend]);
            let name = names[i];
            headers.push(Header {
                kind: HeaderKind::from_name(name),
                name,
                raw_value,
                value: unfold(raw_value),
                offset: off,
            });
        }

        let mut msg = SipMessage {
            raw: buf,
            start,
            headers,
            body: &buf[body_start..],
            len: buf.len(),
        };
        msg.check_headers()?;
        msg.frame_body(body_start, framing, limits)?;
        Ok(msg)
    }

    fn header_error(&self, kind: ErrorKind, h: &Header<'_>) -> ParseError {
        ParseError::in_header(kind, h.offset, h.name)
    }

    /// Grammar of the headers that matter, and single-instance rules.
    fn check_headers(&self) -> Result<(), ParseError> {
        for (i, h) in self.headers.iter().enumerate() {
            if h.kind.single_instance() && self.headers[..i].iter().any(|p| p.kind == h.kind) {
                return Err(self.header_error(ErrorKind::DuplicateHeader, h));
            }
            let bad = |_| self.header_error(ErrorKind::BadHeaderValue, h);
            let v = &h.value[..];
            match h.kind {
                HeaderKind::Via => {
                    for el in grammar::split_list(v).map_err(bad)? {
                        grammar::via(el).map_err(bad)?;
                    }
                }
                HeaderKind::From | HeaderKind::To => {
                    grammar::name_addr(v).map_err(bad)?;
                }
                HeaderKind::Contact => {
                    // "Contact: *" stands alone: not in a list, not beside other Contacts.
                    if grammar::trim(v) == b"*" {
                        let contacts = self
                            .headers
                            .iter()
                            .filter(|x| x.kind == HeaderKind::Contact)
                            .count();
                        if contacts > 1 {
                            return Err(bad(()));
                        }
                    } else {
                        for el in grammar::split_list(v).map_err(bad)? {
                            if el == b"*" {
                                return Err(bad(()));
                            }
                            grammar::name_addr(el).map_err(bad)?;
                        }
                    }
                }
                HeaderKind::Route | HeaderKind::RecordRoute => {
                    for el in grammar::split_list(v).map_err(bad)? {
                        let na = grammar::name_addr(el).map_err(bad)?;
                        if na.display.is_none() && !el.starts_with(b"<") {
                            return Err(bad(()));
                        }
                    }
                }
                HeaderKind::CSeq => {
                    let cseq = parse_cseq(v).ok_or_else(|| bad(()))?;
                    if let StartLine::Request { method, .. } = self.start {
                        if cseq.method != method.as_bytes() {
                            let kind = if KNOWN_METHODS.contains(&method) {
                                ErrorKind::CSeqMethodMismatch
                            } else {
                                ErrorKind::UnknownMethodMismatch
                            };
                            return Err(self.header_error(kind, h));
                        }
                    }
                }
                HeaderKind::CallId => {
                    if !grammar::call_id_ok(grammar::trim(v)) {
                        return Err(bad(()));
                    }
                }
                HeaderKind::MaxForwards => {
                    let n = parse_number(grammar::trim(v), 10).ok_or_else(|| bad(()))?;
                    if n > 255 {
                        return Err(bad(()));
                    }
                }
                HeaderKind::ContentLength => {
                    parse_number(grammar::trim(v), 10).ok_or_else(|| bad(()))?;
                }
                HeaderKind::ContentType | HeaderKind::Other => {}
            }
        }
        Ok(())
    }

    fn frame_body(
        &mut self,
        body_start: usize,
        framing: Framing,
        limits: &ParseLimits,
    ) -> Result<(), ParseError> {
        let available = self.raw.len() - body_start;
        let cl = match self.header(HeaderKind::ContentLength) {
            Some(h) => Some(
                parse_number(grammar::trim(&h.value), 10)
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or(ParseError::new(ErrorKind::BodyTooLarge, body_start))?,
            ),
            None => None,
        };
        let body_len = match (cl, framing) {
            (Some(n), _) if n > limits.max_body => {
                return Err(ParseError::new(ErrorKind::BodyTooLarge, body_start))
            }
            (Some(n), Framing::Datagram) if n > available => {
                return Err(ParseError::new(
                    ErrorKind::ContentLengthTooLarge,
                    body_start,
                ))
            }
            (Some(n), Framing::Stream) if n > available => {
                return Err(ParseError::new(ErrorKind::Incomplete, body_start + n))
            }
            // RFC 3261 §18.3: bytes past Content-Length in a datagram are discarded; on a
            // stream they belong to the next message.
            (Some(n), _) => n,
            (None, Framing::Datagram) => available,
            (None, Framing::Stream) => {
                return Err(ParseError::new(ErrorKind::MissingContentLength, body_start))
            }
        };
        if body_len > limits.max_body {
            return Err(ParseError::new(ErrorKind::BodyTooLarge, body_start));
        }
        self.body = &self.raw[body_start..body_start + body_len];
        self.len = body_start + body_len;
        Ok(())
    }

    /// The first header field of a kind.
    pub fn header(&self, kind: HeaderKind) -> Option<&Header<'a>> {
        self.headers.iter().find(|h| h.kind == kind)
    }

    /// The first header field with this name (case-insensitive; compact forms are not mapped).
    pub fn header_named(&self, name: &str) -> Option<&Header<'a>> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name.as_bytes()))
    }

    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }

    pub fn method(&self) -> Option<&'a str> {
        match self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }

    pub fn cseq(&self) -> Option<CSeq<'_>> {
        parse_cseq(&self.header(HeaderKind::CSeq)?.value)
    }

    pub fn call_id(&self) -> Option<&[u8]> {
        self.header(HeaderKind::CallId)
            .map(|h| grammar::trim(&h.value))
    }

    /// Every Via value, topmost first.
    pub fn vias(&self) -> Vec<Via<'_>> {
        self.headers
            .iter()
            .filter(|h| h.kind == HeaderKind::Via)
            .filter_map(|h| grammar::split_list(&h.value).ok())
            .flatten()
            .filter_map(|el| grammar::via(el).ok())
            .collect()
    }

    pub fn from(&self) -> Option<NameAddr<'_>> {
        grammar::name_addr(&self.header(HeaderKind::From)?.value).ok()
    }

    pub fn to(&self) -> Option<NameAddr<'_>> {
        grammar::name_addr(&self.header(HeaderKind::To)?.value).ok()
    }

    pub fn max_forwards(&self) -> Option<u8> {
        parse_number(
            grammar::trim(&self.header(HeaderKind::MaxForwards)?.value),
            10,
        )
        .and_then(|n| u8::try_from(n).ok())
    }

    /// RFC 3261 §8.1.1: the header fields every request must carry (To, From, CSeq, Call-ID,
    /// Via). `Err(400)` names what a server answers when one is missing.
    pub fn validate_request(&self) -> Result<(), u16> {
        if !self.is_request() {
            return Ok(());
        }
        for k in [
            HeaderKind::To,
            HeaderKind::From,
            HeaderKind::CSeq,
            HeaderKind::CallId,
            HeaderKind::Via,
        ] {
            if self.header(k).is_none() {
                return Err(400);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQ: &[u8] = b"OPTIONS sip:bob@b.example SIP/2.0\r\n\
Via: SIP/2.0/TLS 192.0.2.1:5061;branch=z9hG4bK776asdhds\r\n\
Max-Forwards: 70\r\n\
To: <sip:bob@b.example>\r\n\
From: \"Alice\" <sip:alice@a.example>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.a.example\r\n\
CSeq: 63104 OPTIONS\r\n\
X-Unknown:   keep  this \t exactly\r\n\
l: 4\r\n\
\r\n\
bodyNEXT";

    fn parse(b: &[u8], f: Framing) -> Result<SipMessage<'_>, ParseError> {
        SipMessage::parse(b, f, &ParseLimits::default())
    }

    #[test]
    fn parses_a_request_and_keeps_unknown_headers_byte_exact() {
        let m = parse(REQ, Framing::Stream).unwrap();
        assert_eq!(m.method(), Some("OPTIONS"));
        assert_eq!(m.body, b"body");
        assert_eq!(
            m.len,
            REQ.len() - 4,
            "a stream's next message starts after the body"
        );
        let x = m.header_named("x-unknown").unwrap();
        assert_eq!(x.raw_value, b"keep  this \t exactly");
        assert_eq!(m.cseq().unwrap().number, 63104);
        assert_eq!(m.call_id().unwrap(), b"a84b4c76e66710@pc33.a.example");
        assert_eq!(m.vias()[0].branch().unwrap(), b"z9hG4bK776asdhds");
        assert_eq!(m.vias()[0].port, Some(5061));
        assert_eq!(m.from().unwrap().param("tag").unwrap(), b"1928301774");
        assert_eq!(m.to().unwrap().uri.host, b"b.example");
        assert_eq!(m.max_forwards(), Some(70));
        assert_eq!(m.header(HeaderKind::ContentLength).unwrap().name, b"l");
        assert!(m.validate_request().is_ok());
    }

    #[test]
    fn stream_framing_needs_content_length_and_waits_for_the_body() {
        let no_cl =
            b"OPTIONS sip:b@b.example SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\n\r\n";
        assert_eq!(
            parse(no_cl, Framing::Stream).unwrap_err().kind,
            ErrorKind::MissingContentLength
        );
        assert!(parse(no_cl, Framing::Datagram).is_ok());
        let short = &REQ[..REQ.len() - 6];
        let e = parse(short, Framing::Stream).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Incomplete, "a stream waits for the body");
        assert_eq!(
            e.offset,
            REQ.len() - 4,
            "the offset says how many bytes are needed"
        );
        let e = parse(b"OPTIONS sip:b", Framing::Stream).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Incomplete);
        let e = parse(b"OPTIONS sip:b", Framing::Datagram).unwrap_err();
        assert_eq!(e.kind, ErrorKind::NoHeaderEnd);
        // Keep-alive CRLFs before a message on a stream are skipped and counted.
        let ka = [b"\r\n\r\n".as_slice(), REQ].concat();
        let m = parse(&ka, Framing::Stream).unwrap();
        assert_eq!(m.len, REQ.len() - 4 + 4);
        // Two messages back to back.
        let two = [&REQ[..REQ.len() - 4], &REQ[..REQ.len() - 4]].concat();
        let first = parse(&two, Framing::Stream).unwrap();
        let second = parse(&two[first.len..], Framing::Stream).unwrap();
        assert_eq!(second.len, first.len);
    }

    #[test]
    fn hostile_input_is_refused_with_a_reason() {
        let with = |extra: &[u8]| {
            let mut v = b"OPTIONS sip:b@b.example SIP/2.0\r\n".to_vec();
            v.extend_from_slice(extra);
            v.extend_from_slice(b"\r\n");
            v
        };
        // A control character in a header name (read by some stacks as "To:").
        let e = parse(&with(b"T\x00o: <sip:x@y>\r\n"), Framing::Datagram).unwrap_err();
        assert_eq!(e.kind, ErrorKind::ControlCharacter);
        let e = parse(&with(b"To\x01: <sip:x@y>\r\n"), Framing::Datagram).unwrap_err();
        assert_eq!(e.kind, ErrorKind::ControlCharacter);
        let e = parse(&with(b"Bad Name: x\r\n"), Framing::Datagram).unwrap_err();
        assert_eq!(e.kind, ErrorKind::BadHeaderName);
        for dup in [
            &b"To: <sip:a@b>\r\nTo: <sip:c@d>\r\n"[..],
            b"Call-ID: a\r\ni: b\r\n",
            b"Max-Forwards: 1\r\nMax-Forwards: 2\r\n",
            b"Content-Length: 0\r\nl: 0\r\n",
        ] {
            let e = parse(&with(dup), Framing::Datagram).unwrap_err();
            assert_eq!(
                e.kind,
                ErrorKind::DuplicateHeader,
                "{}",
                String::from_utf8_lossy(dup)
            );
            assert_eq!(e.status(), 400);
            assert!(e.header.is_some());
        }
        let many: Vec<u8> = (0..300)
            .flat_map(|i| format!("X-{i}: y\r\n").into_bytes())
            .collect();
        assert_eq!(
            parse(&with(&many), Framing::Datagram).unwrap_err().kind,
            ErrorKind::TooManyHeaders
        );
        let long = [b"X-Long: ".as_slice(), &vec![b'a'; 9000], b"\r\n"].concat();
        assert_eq!(
            parse(&with(&long), Framing::Datagram).unwrap_err().kind,
            ErrorKind::LineTooLong
        );
        let huge = vec![b'a'; 70_000];
        assert_eq!(parse(&huge, Framing::Datagram).unwrap_err().status(), 513);
        let e = parse(&with(b"Max-Forwards: 256\r\n"), Framing::Datagram).unwrap_err();
        assert_eq!(e.kind, ErrorKind::BadHeaderValue);
        let e = parse(&with(b"CSeq: 2147483648 OPTIONS\r\n"), Framing::Datagram).unwrap_err();
        assert_eq!(e.kind, ErrorKind::BadHeaderValue);
        let e = parse(&with(b"Content-Length: 5\r\n"), Framing::Datagram).unwrap_err();
        assert_eq!(e.kind, ErrorKind::ContentLengthTooLarge);
        // A whitespace-only continuation line must not leave CRLF in the value.
        let ws = with(b"X: a\r\n \r\n");
        let m = parse(&ws, Framing::Datagram).unwrap();
        assert_eq!(m.header_named("X").unwrap().raw_value, b"a");
        // Folding cannot get around the line limit.
        let folded: Vec<u8> = [b"X: a\r\n".as_slice(), &b" bbbbbbb\r\n".repeat(2000)].concat();
        let e = parse(&with(&folded), Framing::Datagram).unwrap_err();
        assert_eq!(e.kind, ErrorKind::LineTooLong);
        // Bare LF in the header section.
        let e = parse(b"OPTIONS sip:b@b SIP/2.0\nX: a\r\n\r\n", Framing::Datagram).unwrap_err();
        assert_eq!(e.kind, ErrorKind::BareLineEnding);
        // Escapes outside quotes do not hide control characters; Call-ID is word[@word].
        let e = parse(&with(b"Call-ID: abc\\\x00def\r\n"), Framing::Datagram).unwrap_err();
        assert_eq!(e.kind, ErrorKind::ControlCharacter);
        assert!(parse(&with(b"Call-ID: a b\r\n"), Framing::Datagram).is_err());
        assert!(parse(&with(b"Call-ID: a@b@c\r\n"), Framing::Datagram).is_err());
        // Two tags, two branches.
        assert!(parse(&with(b"From: <sip:a@b>;tag=1;tag=2\r\n"), Framing::Datagram).is_err());
        let v2 = b"Via: SIP/2.0/UDP h;branch=z9hG4bK1;branch=z9hG4bK2\r\n";
        assert!(parse(&with(v2), Framing::Datagram).is_err());
        // Error header names are escaped.
        let e = parse(&with(b"T\x1b]0;x\x07o: y\r\n"), Framing::Datagram).unwrap_err();
        assert!(!e.header.unwrap().contains('\x1b'));
    }

    #[test]
    fn uri_and_contact_edge_cases() {
        let with =
            |extra: &str| format!("OPTIONS sip:b@b.example SIP/2.0\r\n{extra}\r\n").into_bytes();
        let ok = |e: &str| parse(&with(e), Framing::Datagram).is_ok();
        assert!(ok("Contact: *\r\n"));
        assert!(!ok("Contact: *\r\nContact: <sip:a@b>\r\n"));
        assert!(!ok("Contact: <sip:a@b>, *\r\n"));
        assert!(ok("To: <sip:a@[2001:db8::1]:5061>\r\n"));
        assert!(!ok("To: <sip:a@[:]>\r\n"));
        assert!(!ok("To: <sip:a@[...]>\r\n"));
        assert!(!ok("To: <sip:a@host-.example>\r\n"));
        assert!(ok("To: <sip:a@host.example.>\r\n"));
        assert!(!ok("To: <sip:a@h:0>\r\n"));
        assert!(!ok("To: <sip:a@h;=x>\r\n"));
        assert!(ok("To: <sip:a@h;lr;transport=tls>\r\n"));
    }

    #[test]
    fn responses_and_versions() {
        let r = parse(
            b"SIP/2.0 180 Ringing\r\nCSeq: 1 INVITE\r\n\r\n",
            Framing::Datagram,
        )
        .unwrap();
        assert_eq!(
            r.start,
            StartLine::Response {
                code: 180,
                reason: b"Ringing"
            }
        );
        assert!(parse(b"SIP/2.0 99 Low\r\n\r\n", Framing::Datagram).is_err());
        assert!(parse(b"SIP/2.0 1800 Ringing\r\n\r\n", Framing::Datagram).is_err());
        let e = parse(b"OPTIONS sip:a@b SIP/3.0\r\n\r\n", Framing::Datagram).unwrap_err();
        assert_eq!(e.status(), 505);
        assert!(parse(b"OPTIONS sip:a@b sip/2.0\r\n\r\n", Framing::Datagram).is_ok());
    }
}
