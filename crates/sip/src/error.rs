//! The crate's error type: what is wrong, where, and the response a server should send.

/// Why a message was refused. `offset` is the byte offset in the message where the problem
/// was found; `header` the header field's name when it is in one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} at byte {offset}{}", .header.as_ref().map(|h| format!(" (header {h})")).unwrap_or_default())]
pub struct ParseError {
    pub kind: ErrorKind,
    pub offset: usize,
    pub header: Option<String>,
}

/// The kinds of fault, each with the status code a server answers a request with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    #[error("message larger than the limit")]
    TooLarge,
    #[error("no empty line ends the header section")]
    NoHeaderEnd,
    /// Stream framing only: the message is not complete yet; read more and parse again.
    #[error("incomplete message (stream): more bytes needed")]
    Incomplete,
    #[error("bare CR or LF in the header section (lines end with CRLF)")]
    BareLineEnding,
    #[error("malformed start line")]
    BadStartLine,
    #[error("unsupported SIP version")]
    BadVersion,
    #[error("malformed status code")]
    BadStatusCode,
    #[error("malformed Request-URI")]
    BadRequestUri,
    #[error("line too long")]
    LineTooLong,
    #[error("too many header fields")]
    TooManyHeaders,
    #[error("malformed header field name")]
    BadHeaderName,
    #[error("control character in a header field")]
    ControlCharacter,
    #[error("malformed header field value")]
    BadHeaderValue,
    #[error("header field that may appear only once appears again")]
    DuplicateHeader,
    #[error("Content-Length missing on a stream transport")]
    MissingContentLength,
    #[error("Content-Length larger than the body")]
    ContentLengthTooLarge,
    #[error("body larger than the limit")]
    BodyTooLarge,
    #[error("CSeq method does not match the request method")]
    CSeqMethodMismatch,
    #[error("CSeq method does not match the request's unknown method")]
    UnknownMethodMismatch,
}

impl ErrorKind {
    /// The status code a server sends back for a request with this fault (RFC 3261 §21;
    /// 505 for the version, 513 for size, 501 for an unknown method).
    pub fn status(self) -> u16 {
        match self {
            ErrorKind::TooLarge
            | ErrorKind::BodyTooLarge
            | ErrorKind::LineTooLong
            | ErrorKind::TooManyHeaders => 513,
            ErrorKind::BadVersion => 505,
            ErrorKind::UnknownMethodMismatch => 501,
            _ => 400,
        }
    }
}

impl ParseError {
    pub(crate) fn new(kind: ErrorKind, offset: usize) -> Self {
        ParseError {
            kind,
            offset,
            header: None,
        }
    }

    pub(crate) fn in_header(kind: ErrorKind, offset: usize, name: &[u8]) -> Self {
        // Attacker bytes go into logs: at most 32, escaped (no control characters).
        ParseError {
            kind,
            offset,
            header: Some(name[..name.len().min(32)].escape_ascii().to_string()),
        }
    }

    /// The status code to answer a request with.
    pub fn status(&self) -> u16 {
        self.kind.status()
    }
}
