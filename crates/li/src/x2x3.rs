//! ETSI TS 103 221-2 X2/X3 PDUs: the one layout that carries both intercept related information
//! (X2) and content of communication (X3) from voxgate's mediation function to the agency, over
//! TCP/TLS, plus the keepalive PDUs of that connection.
//!
//! Sans-I/O: [`Pdu::encode_into`] writes bytes, [`Pdu::decode`] reads one PDU from a slice, and
//! [`Decoder`] cuts whole PDUs out of a byte stream. Byte-level documentation, the code points
//! and where each was checked: `docs/li-handover.md` (its worked examples are golden vectors of
//! `crates/li/tests/x2x3_vectors.rs`).
//!
//! ```text
//!  0               1               2               3
//! +---------------+---------------+---------------+---------------+
//! |            Version            |           PDU Type            |
//! +---------------+---------------+---------------+---------------+
//! |                         Header Length                         |
//! +---------------+---------------+---------------+---------------+
//! |                        Payload Length                         |
//! +---------------+---------------+---------------+---------------+
//! |        Payload Format         |       Payload Direction       |
//! +---------------+---------------+---------------+---------------+
//! |                         XID (16 bytes)                        |
//! +---------------+---------------+---------------+---------------+
//! |                    Correlation ID (8 bytes)                   |
//! +---------------+---------------+---------------+---------------+
//! | Conditional attributes: TLVs (type u16, length u16, value)    |
//! +---------------+---------------+---------------+---------------+
//! | Payload (Payload Length bytes)                                |
//! +---------------+---------------+---------------+---------------+
//! ```
//!
//! All integers are big-endian. Header Length counts the 40-byte fixed header and the
//! conditional attributes; Payload Length counts the payload only.
//!
//! Input is untrusted: decoding never panics, never allocates on the word of a length field
//! (a length is only believed once the bytes are there, and [`Decoder`] refuses a PDU longer
//! than its limit as soon as the first 12 bytes name its length), and refuses what it cannot
//! read exactly rather than guessing.

use std::net::{Ipv4Addr, Ipv6Addr};

/// The Version field this codec writes: major version 0 (high byte), minor version 5 (low
/// byte), i.e. the bytes `00 05`.
pub const VERSION: u16 = 0x0005;
/// The lowest minor version [`Pdu::decode`] reads (with major version 0). A higher minor version
/// is read too: a minor increment only adds code points, which this codec keeps as `Other` /
/// [`Attribute::Unknown`].
pub const MIN_MINOR_VERSION: u8 = 5;
/// Length of the fixed header: version, PDU type, header length, payload length, payload
/// format, payload direction, XID, correlation ID.
pub const FIXED_HEADER_LEN: usize = 40;
/// Length of a conditional attribute's type and length fields.
pub const TLV_HEADER_LEN: usize = 4;
/// The bytes that say how long a PDU is: version, PDU type, header length, payload length.
const PREFIX_LEN: usize = 12;
/// A valid Timestamp's nanoseconds are below this.
const NANOS_PER_SEC: u32 = 1_000_000_000;

/// Conditional attribute types (the TLV "type" field).
pub mod tag {
    /// ETSI TS 102 232-1 defined attribute (kept as [`super::Attribute::Unknown`]).
    pub const ETSI_102_232_1: u16 = 1;
    /// 3GPP TS 33.128 defined attribute (kept as [`super::Attribute::Unknown`]).
    pub const TS_33_128: u16 = 2;
    /// 3GPP TS 33.108 defined attribute (kept as [`super::Attribute::Unknown`]).
    pub const TS_33_108: u16 = 3;
    /// Proprietary attribute (kept as [`super::Attribute::Unknown`]).
    pub const PROPRIETARY: u16 = 4;
    /// Domain ID (kept as [`super::Attribute::Unknown`]: its value format is not verified).
    pub const DOMAIN_ID: u16 = 5;
    /// Network Function ID (UTF-8).
    pub const NETWORK_FUNCTION_ID: u16 = 6;
    /// Interception Point ID (UTF-8).
    pub const INTERCEPTION_POINT_ID: u16 = 7;
    /// Sequence number, 4 bytes.
    pub const SEQUENCE_NUMBER: u16 = 8;
    /// Timestamp: POSIX seconds (4 bytes) then nanoseconds (4 bytes).
    pub const TIMESTAMP: u16 = 9;
    /// Source IPv4 address, 4 bytes.
    pub const SOURCE_IPV4: u16 = 10;
    /// Destination IPv4 address, 4 bytes.
    pub const DEST_IPV4: u16 = 11;
    /// Source IPv6 address, 16 bytes.
    pub const SOURCE_IPV6: u16 = 12;
    /// Destination IPv6 address, 16 bytes.
    pub const DEST_IPV6: u16 = 13;
    /// Source port, 2 bytes.
    pub const SOURCE_PORT: u16 = 14;
    /// Destination port, 2 bytes.
    pub const DEST_PORT: u16 = 15;
    /// IP protocol number, 1 byte.
    pub const IP_PROTOCOL: u16 = 16;
    /// Matched target identifier (UTF-8).
    pub const MATCHED_TARGET_ID: u16 = 17;
    /// Other target identifier (UTF-8).
    pub const OTHER_TARGET_ID: u16 = 18;
    /// MIME content type (UTF-8), with the MIME payload format.
    pub const MIME_CONTENT_TYPE: u16 = 19;
    /// MIME content transfer encoding (UTF-8), with the MIME payload format.
    pub const MIME_CONTENT_TRANSFER_ENCODING: u16 = 20;
    /// Additional XID related information (kept as [`super::Attribute::Unknown`]: its value
    /// format is not verified).
    pub const ADDITIONAL_XID_RELATED_INFO: u16 = 21;
    /// SDP session description (UTF-8).
    pub const SDP_SESSION_DESCRIPTION: u16 = 22;
}

/// PDU Type: which interface a PDU belongs to, or the keepalive exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PduType {
    /// 1: X2, intercept related information.
    X2,
    /// 2: X3, content of communication.
    X3,
    /// 3: keepalive.
    Keepalive,
    /// 4: keepalive acknowledgement.
    KeepaliveAck,
}

impl PduType {
    /// The code on the wire.
    pub const fn code(self) -> u16 {
        match self {
            PduType::X2 => 1,
            PduType::X3 => 2,
            PduType::Keepalive => 3,
            PduType::KeepaliveAck => 4,
        }
    }

    /// The type of a code, if it is one.
    pub const fn from_code(code: u16) -> Option<PduType> {
        match code {
            1 => Some(PduType::X2),
            2 => Some(PduType::X3),
            3 => Some(PduType::Keepalive),
            4 => Some(PduType::KeepaliveAck),
            _ => None,
        }
    }

    /// Keepalive or keepalive acknowledgement.
    pub const fn is_keepalive(self) -> bool {
        matches!(self, PduType::Keepalive | PduType::KeepaliveAck)
    }
}

/// Payload Format: how the payload is to be read. `Other` holds only codes without a variant
/// of their own ([`PayloadFormat::from_code`] never makes `Other(8)`, say).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PayloadFormat {
    /// 0: reserved for the keepalive mechanism (no payload).
    Keepalive,
    /// 1: ETSI TS 102 232-1 defined payload.
    Etsi102232,
    /// 2: 3GPP TS 33.128 defined payload.
    Ts33128,
    /// 3: 3GPP TS 33.108 defined payload.
    Ts33108,
    /// 4: proprietary payload.
    Proprietary,
    /// 5: IPv4 packet.
    Ipv4Packet,
    /// 6: IPv6 packet.
    Ipv6Packet,
    /// 7: Ethernet frame (X3 only).
    EthernetFrame,
    /// 8: RTP packet (X3 only).
    RtpPacket,
    /// 9: SIP message (X2 only).
    SipMessage,
    /// 10: DHCP message (X2 only).
    DhcpMessage,
    /// 11: RADIUS packet (X2 only).
    RadiusPacket,
    /// 12: GTP-U message (X3 only).
    GtpUMessage,
    /// 13: MSRP message (X3 only).
    MsrpMessage,
    /// 14: 3GPP TS 33.108 EpsIRIContent (X2 only).
    EpsIriContent,
    /// 15: MIME message; its type goes in [`Attribute::MimeContentType`].
    Mime,
    /// 16: 3GPP unstructured PDU (X3 only).
    UnstructuredPdu,
    /// Any other code.
    Other(u16),
}

impl PayloadFormat {
    /// The code on the wire.
    pub const fn code(self) -> u16 {
        match self {
            PayloadFormat::Keepalive => 0,
            PayloadFormat::Etsi102232 => 1,
            PayloadFormat::Ts33128 => 2,
            PayloadFormat::Ts33108 => 3,
            PayloadFormat::Proprietary => 4,
            PayloadFormat::Ipv4Packet => 5,
            PayloadFormat::Ipv6Packet => 6,
            PayloadFormat::EthernetFrame => 7,
            PayloadFormat::RtpPacket => 8,
            PayloadFormat::SipMessage => 9,
            PayloadFormat::DhcpMessage => 10,
            PayloadFormat::RadiusPacket => 11,
            PayloadFormat::GtpUMessage => 12,
            PayloadFormat::MsrpMessage => 13,
            PayloadFormat::EpsIriContent => 14,
            PayloadFormat::Mime => 15,
            PayloadFormat::UnstructuredPdu => 16,
            PayloadFormat::Other(code) => code,
        }
    }

    /// The format of a code (`Other` for a code without a variant).
    pub const fn from_code(code: u16) -> PayloadFormat {
        match code {
            0 => PayloadFormat::Keepalive,
            1 => PayloadFormat::Etsi102232,
            2 => PayloadFormat::Ts33128,
            3 => PayloadFormat::Ts33108,
            4 => PayloadFormat::Proprietary,
            5 => PayloadFormat::Ipv4Packet,
            6 => PayloadFormat::Ipv6Packet,
            7 => PayloadFormat::EthernetFrame,
            8 => PayloadFormat::RtpPacket,
            9 => PayloadFormat::SipMessage,
            10 => PayloadFormat::DhcpMessage,
            11 => PayloadFormat::RadiusPacket,
            12 => PayloadFormat::GtpUMessage,
            13 => PayloadFormat::MsrpMessage,
            14 => PayloadFormat::EpsIriContent,
            15 => PayloadFormat::Mime,
            16 => PayloadFormat::UnstructuredPdu,
            other => PayloadFormat::Other(other),
        }
    }

    /// Whether the payload format table lets this format travel in a PDU of that type. Formats
    /// this codec does not know (`Other`) are let through, and so is anything in a keepalive
    /// (whose payload must be empty anyway); [`PayloadFormat::Keepalive`] is refused in X2 and
    /// X3 PDUs.
    pub const fn allowed_in(self, pdu_type: PduType) -> bool {
        use PayloadFormat as F;
        match pdu_type {
            PduType::Keepalive | PduType::KeepaliveAck => true,
            PduType::X2 => !matches!(
                self,
                F::Keepalive
                    | F::EthernetFrame
                    | F::RtpPacket
                    | F::GtpUMessage
                    | F::MsrpMessage
                    | F::UnstructuredPdu
            ),
            PduType::X3 => !matches!(
                self,
                F::Keepalive | F::SipMessage | F::DhcpMessage | F::RadiusPacket | F::EpsIriContent
            ),
        }
    }
}

/// Payload Direction, relative to the target (not to a call leg). `Other` holds only codes
/// without a variant of their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PayloadDirection {
    /// 0: reserved for the keepalive mechanism.
    Keepalive,
    /// 1: the direction is not known.
    Unknown,
    /// 2: sent to (received by) the target.
    ToTarget,
    /// 3: sent from the target.
    FromTarget,
    /// 4: the result of data or events in more than one direction (e.g. both directions
    /// combined).
    MultipleDirections,
    /// 5: direction does not apply to this data or event.
    NotApplicable,
    /// Any other code.
    Other(u16),
}

impl PayloadDirection {
    /// The code on the wire.
    pub const fn code(self) -> u16 {
        match self {
            PayloadDirection::Keepalive => 0,
            PayloadDirection::Unknown => 1,
            PayloadDirection::ToTarget => 2,
            PayloadDirection::FromTarget => 3,
            PayloadDirection::MultipleDirections => 4,
            PayloadDirection::NotApplicable => 5,
            PayloadDirection::Other(code) => code,
        }
    }

    /// The direction of a code (`Other` for a code without a variant).
    pub const fn from_code(code: u16) -> PayloadDirection {
        match code {
            0 => PayloadDirection::Keepalive,
            1 => PayloadDirection::Unknown,
            2 => PayloadDirection::ToTarget,
            3 => PayloadDirection::FromTarget,
            4 => PayloadDirection::MultipleDirections,
            5 => PayloadDirection::NotApplicable,
            other => PayloadDirection::Other(other),
        }
    }
}

/// A conditional attribute. Types whose value this codec does not interpret (or whose value
/// format is not verified) are kept as they came in `Unknown`, so that they survive a decode
/// and re-encode; `Unknown` is not meant for a type that has a variant of its own (decoding its
/// encoding gives that variant, or an error).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Attribute {
    /// 8: sequence number.
    SequenceNumber(u32),
    /// 9: timestamp, POSIX time: seconds and nanoseconds (below 1,000,000,000).
    Timestamp { secs: u32, nanos: u32 },
    /// 10: source IPv4 address.
    SourceIpv4(Ipv4Addr),
    /// 11: destination IPv4 address.
    DestIpv4(Ipv4Addr),
    /// 12: source IPv6 address.
    SourceIpv6(Ipv6Addr),
    /// 13: destination IPv6 address.
    DestIpv6(Ipv6Addr),
    /// 14: source port.
    SourcePort(u16),
    /// 15: destination port.
    DestPort(u16),
    /// 16: IP protocol number (17 for UDP).
    IpProtocol(u8),
    /// 17: the target identifier that matched.
    MatchedTargetId(String),
    /// 18: another identifier of the target.
    OtherTargetId(String),
    /// 6: network function ID.
    NetworkFunctionId(String),
    /// 7: interception point ID.
    InterceptionPointId(String),
    /// 19: MIME content type of a [`PayloadFormat::Mime`] payload.
    MimeContentType(String),
    /// 20: MIME content transfer encoding of a [`PayloadFormat::Mime`] payload.
    MimeContentTransferEncoding(String),
    /// 22: SDP session description.
    SdpSessionDescription(String),
    /// Any other type, value as it came.
    Unknown { tag: u16, value: Vec<u8> },
}

impl Attribute {
    /// A timestamp attribute for a Unix time in milliseconds (seconds saturate in 2106).
    pub fn timestamp_ms(time_ms: u64) -> Attribute {
        Attribute::Timestamp {
            secs: u32::try_from(time_ms / 1000).unwrap_or(u32::MAX),
            nanos: ((time_ms % 1000) * 1_000_000) as u32,
        }
    }

    /// The attribute's type code.
    pub fn tag(&self) -> u16 {
        match self {
            Attribute::SequenceNumber(_) => tag::SEQUENCE_NUMBER,
            Attribute::Timestamp { .. } => tag::TIMESTAMP,
            Attribute::SourceIpv4(_) => tag::SOURCE_IPV4,
            Attribute::DestIpv4(_) => tag::DEST_IPV4,
            Attribute::SourceIpv6(_) => tag::SOURCE_IPV6,
            Attribute::DestIpv6(_) => tag::DEST_IPV6,
            Attribute::SourcePort(_) => tag::SOURCE_PORT,
            Attribute::DestPort(_) => tag::DEST_PORT,
            Attribute::IpProtocol(_) => tag::IP_PROTOCOL,
            Attribute::MatchedTargetId(_) => tag::MATCHED_TARGET_ID,
            Attribute::OtherTargetId(_) => tag::OTHER_TARGET_ID,
            Attribute::NetworkFunctionId(_) => tag::NETWORK_FUNCTION_ID,
            Attribute::InterceptionPointId(_) => tag::INTERCEPTION_POINT_ID,
            Attribute::MimeContentType(_) => tag::MIME_CONTENT_TYPE,
            Attribute::MimeContentTransferEncoding(_) => tag::MIME_CONTENT_TRANSFER_ENCODING,
            Attribute::SdpSessionDescription(_) => tag::SDP_SESSION_DESCRIPTION,
            Attribute::Unknown { tag, .. } => *tag,
        }
    }

    /// Length of the value (without the 4 bytes of type and length).
    pub fn value_len(&self) -> usize {
        match self {
            Attribute::SequenceNumber(_) => 4,
            Attribute::Timestamp { .. } => 8,
            Attribute::SourceIpv4(_) | Attribute::DestIpv4(_) => 4,
            Attribute::SourceIpv6(_) | Attribute::DestIpv6(_) => 16,
            Attribute::SourcePort(_) | Attribute::DestPort(_) => 2,
            Attribute::IpProtocol(_) => 1,
            Attribute::MatchedTargetId(s)
            | Attribute::OtherTargetId(s)
            | Attribute::NetworkFunctionId(s)
            | Attribute::InterceptionPointId(s)
            | Attribute::MimeContentType(s)
            | Attribute::MimeContentTransferEncoding(s)
            | Attribute::SdpSessionDescription(s) => s.len(),
            Attribute::Unknown { value, .. } => value.len(),
        }
    }

    /// What encoding refuses: a value too long for the 16-bit length, a timestamp whose
    /// nanoseconds are not below one second.
    fn check(&self) -> Result<(), X2x3Error> {
        let len = self.value_len();
        if len > usize::from(u16::MAX) {
            return Err(X2x3Error::AttributeTooLong {
                tag: self.tag(),
                length: len,
            });
        }
        if let Attribute::Timestamp { nanos, .. } = self {
            if *nanos >= NANOS_PER_SEC {
                return Err(X2x3Error::BadAttribute {
                    tag: tag::TIMESTAMP,
                    reason: "nanoseconds not below 1,000,000,000",
                });
            }
        }
        Ok(())
    }

    /// Appends type, length and value (after [`Attribute::check`]).
    fn write(&self, out: &mut Vec<u8>) {
        let len = u16::try_from(self.value_len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&self.tag().to_be_bytes());
        out.extend_from_slice(&len.to_be_bytes());
        match self {
            Attribute::SequenceNumber(n) => out.extend_from_slice(&n.to_be_bytes()),
            Attribute::Timestamp { secs, nanos } => {
                out.extend_from_slice(&secs.to_be_bytes());
                out.extend_from_slice(&nanos.to_be_bytes());
            }
            Attribute::SourceIpv4(a) | Attribute::DestIpv4(a) => out.extend_from_slice(&a.octets()),
            Attribute::SourceIpv6(a) | Attribute::DestIpv6(a) => out.extend_from_slice(&a.octets()),
            Attribute::SourcePort(p) | Attribute::DestPort(p) => {
                out.extend_from_slice(&p.to_be_bytes())
            }
            Attribute::IpProtocol(p) => out.push(*p),
            Attribute::MatchedTargetId(s)
            | Attribute::OtherTargetId(s)
            | Attribute::NetworkFunctionId(s)
            | Attribute::InterceptionPointId(s)
            | Attribute::MimeContentType(s)
            | Attribute::MimeContentTransferEncoding(s)
            | Attribute::SdpSessionDescription(s) => out.extend_from_slice(s.as_bytes()),
            Attribute::Unknown { value, .. } => out.extend_from_slice(value),
        }
    }

    /// The attribute of a type and value read from the wire.
    fn read(tag: u16, value: &[u8]) -> Result<Attribute, X2x3Error> {
        let bad = |reason| X2x3Error::BadAttribute { tag, reason };
        let text = |value: &[u8]| {
            std::str::from_utf8(value)
                .map(str::to_owned)
                .map_err(|_| bad("value is not UTF-8"))
        };
        Ok(match tag {
            tag::SEQUENCE_NUMBER => Attribute::SequenceNumber(u32::from_be_bytes(
                fixed(value).ok_or(bad("a sequence number is 4 bytes"))?,
            )),
            tag::TIMESTAMP => {
                let v: [u8; 8] = fixed(value).ok_or(bad("a timestamp is 8 bytes"))?;
                let (secs, nanos) = v.split_at(4);
                let secs = u32::from_be_bytes(fixed(secs).ok_or(bad("a timestamp is 8 bytes"))?);
                let nanos = u32::from_be_bytes(fixed(nanos).ok_or(bad("a timestamp is 8 bytes"))?);
                if nanos >= NANOS_PER_SEC {
                    return Err(bad("nanoseconds not below 1,000,000,000"));
                }
                Attribute::Timestamp { secs, nanos }
            }
            tag::SOURCE_IPV4 | tag::DEST_IPV4 => {
                let a = Ipv4Addr::from(fixed::<4>(value).ok_or(bad("an IPv4 address is 4 bytes"))?);
                if tag == tag::SOURCE_IPV4 {
                    Attribute::SourceIpv4(a)
                } else {
                    Attribute::DestIpv4(a)
                }
            }
            tag::SOURCE_IPV6 | tag::DEST_IPV6 => {
                let a =
                    Ipv6Addr::from(fixed::<16>(value).ok_or(bad("an IPv6 address is 16 bytes"))?);
                if tag == tag::SOURCE_IPV6 {
                    Attribute::SourceIpv6(a)
                } else {
                    Attribute::DestIpv6(a)
                }
            }
            tag::SOURCE_PORT | tag::DEST_PORT => {
                let p = u16::from_be_bytes(fixed(value).ok_or(bad("a port is 2 bytes"))?);
                if tag == tag::SOURCE_PORT {
                    Attribute::SourcePort(p)
                } else {
                    Attribute::DestPort(p)
                }
            }
            tag::IP_PROTOCOL => {
                let [p] = fixed::<1>(value).ok_or(bad("an IP protocol is 1 byte"))?;
                Attribute::IpProtocol(p)
            }
            tag::MATCHED_TARGET_ID => Attribute::MatchedTargetId(text(value)?),
            tag::OTHER_TARGET_ID => Attribute::OtherTargetId(text(value)?),
            tag::NETWORK_FUNCTION_ID => Attribute::NetworkFunctionId(text(value)?),
            tag::INTERCEPTION_POINT_ID => Attribute::InterceptionPointId(text(value)?),
            tag::MIME_CONTENT_TYPE => Attribute::MimeContentType(text(value)?),
            tag::MIME_CONTENT_TRANSFER_ENCODING => {
                Attribute::MimeContentTransferEncoding(text(value)?)
            }
            tag::SDP_SESSION_DESCRIPTION => Attribute::SdpSessionDescription(text(value)?),
            _ => Attribute::Unknown {
                tag,
                value: value.to_vec(),
            },
        })
    }
}

/// One X2, X3, keepalive or keepalive acknowledgement PDU. The version, header length and
/// payload length fields are not kept: encoding writes [`VERSION`] and the lengths of what is
/// there.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Pdu {
    pub pdu_type: PduType,
    pub format: PayloadFormat,
    pub direction: PayloadDirection,
    /// The task's XID, a UUID in its usual (RFC 9562) byte order; all zero in keepalives.
    pub xid: [u8; 16],
    /// Ties the PDUs of one communication together (a call's IRI and content); zero in
    /// keepalives.
    pub correlation_id: u64,
    /// The conditional attributes, in wire order (a type may appear more than once).
    pub attributes: Vec<Attribute>,
    pub payload: Vec<u8>,
}

/// A keepalive: nil XID, correlation ID 0, payload format and direction 0, no payload, and the
/// keepalive's sequence number as its only attribute.
pub fn keepalive(sequence_number: u32) -> Pdu {
    keepalive_pdu(PduType::Keepalive, sequence_number)
}

/// The acknowledgement of a keepalive: as [`keepalive`], with PDU type 4 and the sequence
/// number of the keepalive it answers.
pub fn keepalive_ack(sequence_number: u32) -> Pdu {
    keepalive_pdu(PduType::KeepaliveAck, sequence_number)
}

fn keepalive_pdu(pdu_type: PduType, sequence_number: u32) -> Pdu {
    Pdu {
        pdu_type,
        format: PayloadFormat::Keepalive,
        direction: PayloadDirection::Keepalive,
        xid: [0; 16],
        correlation_id: 0,
        attributes: vec![Attribute::SequenceNumber(sequence_number)],
        payload: Vec::new(),
    }
}

impl Pdu {
    /// The first sequence number attribute, if any.
    pub fn sequence_number(&self) -> Option<u32> {
        self.attributes.iter().find_map(|a| match a {
            Attribute::SequenceNumber(n) => Some(*n),
            _ => None,
        })
    }

    /// The first timestamp attribute, if any, as (seconds, nanoseconds).
    pub fn timestamp(&self) -> Option<(u32, u32)> {
        self.attributes.iter().find_map(|a| match a {
            Attribute::Timestamp { secs, nanos } => Some((*secs, *nanos)),
            _ => None,
        })
    }

    /// The acknowledgement to send for this PDU: `Some` for a keepalive that carries a sequence
    /// number (the acknowledgement carries the same number), `None` otherwise.
    pub fn keepalive_ack(&self) -> Option<Pdu> {
        if self.pdu_type != PduType::Keepalive {
            return None;
        }
        self.sequence_number().map(keepalive_ack)
    }

    /// Header length (fixed header and attributes), checking what encoding checks.
    fn header_len(&self) -> Result<usize, X2x3Error> {
        check_semantics(self.pdu_type, self.format, self.payload.len())?;
        let mut len = FIXED_HEADER_LEN;
        for a in &self.attributes {
            a.check()?;
            len = len.saturating_add(TLV_HEADER_LEN + a.value_len());
        }
        if u32::try_from(len).is_err() {
            return Err(X2x3Error::HeaderTooLong { length: len });
        }
        if u32::try_from(self.payload.len()).is_err() {
            return Err(X2x3Error::PayloadTooLong {
                length: self.payload.len(),
            });
        }
        Ok(len)
    }

    /// The length of the encoding.
    pub fn encoded_len(&self) -> Result<usize, X2x3Error> {
        Ok(self.header_len()?.saturating_add(self.payload.len()))
    }

    /// The PDU's bytes.
    pub fn encode(&self) -> Result<Vec<u8>, X2x3Error> {
        let mut out = Vec::new();
        self.encode_into(&mut out)?;
        Ok(out)
    }

    /// Appends the PDU's bytes to `out` and returns how many were appended. Refused (and `out`
    /// left as it was): a value longer than 65,535 bytes, a timestamp whose nanoseconds are not
    /// below one second, a payload format the PDU type does not allow
    /// ([`PayloadFormat::allowed_in`]), a keepalive with a payload, a header or payload too
    /// long for its 32-bit length field. Whatever [`Pdu::decode`] returns encodes.
    pub fn encode_into(&self, out: &mut Vec<u8>) -> Result<usize, X2x3Error> {
        let header_len = self.header_len()?;
        let total = header_len.saturating_add(self.payload.len());
        // header_len() checked that both fit in 32 bits.
        let hl = u32::try_from(header_len).unwrap_or(u32::MAX);
        let pl = u32::try_from(self.payload.len()).unwrap_or(u32::MAX);
        let start = out.len();
        out.reserve(total);
        out.extend_from_slice(&VERSION.to_be_bytes());
        out.extend_from_slice(&self.pdu_type.code().to_be_bytes());
        out.extend_from_slice(&hl.to_be_bytes());
        out.extend_from_slice(&pl.to_be_bytes());
        out.extend_from_slice(&self.format.code().to_be_bytes());
        out.extend_from_slice(&self.direction.code().to_be_bytes());
        out.extend_from_slice(&self.xid);
        out.extend_from_slice(&self.correlation_id.to_be_bytes());
        for a in &self.attributes {
            a.write(out);
        }
        out.extend_from_slice(&self.payload);
        debug_assert_eq!(out.len() - start, total);
        Ok(total)
    }

    /// Reads the PDU at the start of `bytes`; returns it and the number of bytes it took
    /// (bytes after it are left alone). A PDU not wholly in `bytes` is
    /// [`X2x3Error::Truncated`] (unless the bytes there are already wrong); see [`X2x3Error`]
    /// for the rest.
    pub fn decode(bytes: &[u8]) -> Result<(Pdu, usize), X2x3Error> {
        let Some(total) = check_prefix(bytes)? else {
            return Err(X2x3Error::Truncated {
                needed: PREFIX_LEN,
                available: bytes.len(),
            });
        };
        let total = usize::try_from(total).map_err(|_| X2x3Error::TooLarge {
            length: total,
            max: usize::MAX,
        })?;
        let frame = bytes.get(..total).ok_or(X2x3Error::Truncated {
            needed: total,
            available: bytes.len(),
        })?;
        Ok((decode_frame(frame)?, total))
    }
}

/// `N` bytes as an array, if `value` is exactly that long.
fn fixed<const N: usize>(value: &[u8]) -> Option<[u8; N]> {
    value.try_into().ok()
}

/// The big-endian u16 at `at`.
fn be16(bytes: &[u8], at: usize) -> Option<u16> {
    bytes
        .get(at..at.checked_add(2)?)
        .and_then(fixed)
        .map(u16::from_be_bytes)
}

/// The big-endian u32 at `at`.
fn be32(bytes: &[u8], at: usize) -> Option<u32> {
    bytes
        .get(at..at.checked_add(4)?)
        .and_then(fixed)
        .map(u32::from_be_bytes)
}

/// Checks what there is of the first 12 bytes, field by field as far as they go (version, PDU
/// type, header length); returns the PDU's total length once all 12 are there.
fn check_prefix(bytes: &[u8]) -> Result<Option<u64>, X2x3Error> {
    if let Some(version) = be16(bytes, 0) {
        let [major, minor] = version.to_be_bytes();
        if major != 0 || minor < MIN_MINOR_VERSION {
            return Err(X2x3Error::UnsupportedVersion(version));
        }
    }
    if let Some(code) = be16(bytes, 2) {
        if PduType::from_code(code).is_none() {
            return Err(X2x3Error::UnknownPduType(code));
        }
    }
    let Some(header_length) = be32(bytes, 4) else {
        return Ok(None);
    };
    if (header_length as usize) < FIXED_HEADER_LEN {
        return Err(X2x3Error::HeaderTooShort { header_length });
    }
    Ok(be32(bytes, 8).map(|payload_length| u64::from(header_length) + u64::from(payload_length)))
}

/// What the PDU type asks of the rest: no payload in a keepalive, a format the type allows.
fn check_semantics(
    pdu_type: PduType,
    format: PayloadFormat,
    payload_len: usize,
) -> Result<(), X2x3Error> {
    if pdu_type.is_keepalive() && payload_len != 0 {
        return Err(X2x3Error::KeepaliveWithPayload {
            pdu_type,
            payload_length: payload_len,
        });
    }
    if !format.allowed_in(pdu_type) {
        return Err(X2x3Error::FormatNotAllowed { pdu_type, format });
    }
    Ok(())
}

/// Decodes one whole PDU: `frame` is exactly header length + payload length bytes, and
/// [`check_prefix`] accepted it.
fn decode_frame(frame: &[u8]) -> Result<Pdu, X2x3Error> {
    let short = || X2x3Error::Truncated {
        needed: FIXED_HEADER_LEN,
        available: frame.len(),
    };
    let code = be16(frame, 2).ok_or_else(short)?;
    let pdu_type = PduType::from_code(code).ok_or(X2x3Error::UnknownPduType(code))?;
    let header_len = be32(frame, 4).ok_or_else(short)? as usize;
    let format = PayloadFormat::from_code(be16(frame, 12).ok_or_else(short)?);
    let direction = PayloadDirection::from_code(be16(frame, 14).ok_or_else(short)?);
    let xid: [u8; 16] = frame.get(16..32).and_then(fixed).ok_or_else(short)?;
    let correlation_id = frame
        .get(32..40)
        .and_then(fixed)
        .map(u64::from_be_bytes)
        .ok_or_else(short)?;
    let header = frame.get(..header_len).ok_or(X2x3Error::Truncated {
        needed: header_len,
        available: frame.len(),
    })?;
    let payload = frame.get(header_len..).unwrap_or_default();
    check_semantics(pdu_type, format, payload.len())?;

    let mut attributes = Vec::new();
    let mut at = FIXED_HEADER_LEN;
    while at < header.len() {
        let available = header.len() - at;
        let overrun = |needed| X2x3Error::AttributeOverrun {
            offset: at,
            needed,
            available,
        };
        let (Some(tag), Some(len)) = (be16(header, at), be16(header, at + 2)) else {
            return Err(overrun(TLV_HEADER_LEN));
        };
        let end = at + TLV_HEADER_LEN + usize::from(len);
        let value = header
            .get(at + TLV_HEADER_LEN..end)
            .ok_or_else(|| overrun(TLV_HEADER_LEN + usize::from(len)))?;
        attributes.push(Attribute::read(tag, value)?);
        at = end;
    }
    Ok(Pdu {
        pdu_type,
        format,
        direction,
        xid,
        correlation_id,
        attributes,
        payload: payload.to_vec(),
    })
}

/// Cuts whole PDUs out of a TCP/TLS byte stream: [`Decoder::push`] the bytes as they come, then
/// call [`Decoder::next_pdu`] until it returns `Ok(None)`.
///
/// A PDU whose header and payload lengths add up to more than `max_pdu` is refused with
/// [`X2x3Error::TooLarge`] as soon as its first 12 bytes are in, before its body is buffered;
/// a wrong version, PDU type or header length is refused as soon as its bytes are in. After an
/// error the stream is out of step (nothing says where the next PDU starts), so the decoder
/// stays failed: it drops what it had, ignores what is pushed and returns the same error from
/// every call; the connection is to be closed. Buffered bytes stay below `max_pdu` plus the
/// last push as long as `next_pdu` is drained after every push.
#[derive(Debug)]
pub struct Decoder {
    buf: Vec<u8>,
    /// Where the next PDU starts in `buf`.
    start: usize,
    max_pdu: usize,
    failed: Option<X2x3Error>,
}

impl Decoder {
    /// A decoder refusing PDUs longer than `max_pdu` bytes (header and payload).
    pub fn new(max_pdu: usize) -> Self {
        Decoder {
            buf: Vec::new(),
            start: 0,
            max_pdu,
            failed: None,
        }
    }

    /// Appends bytes from the stream (ignored once the decoder has failed).
    pub fn push(&mut self, bytes: &[u8]) {
        if self.failed.is_some() {
            return;
        }
        self.buf.extend_from_slice(bytes);
        // Refuse a bad or oversized next PDU now, not once its body has been buffered.
        if let Err(e) = self.pending_len() {
            self.fail(e);
        }
    }

    /// The next whole PDU, `Ok(None)` until one is in; an error is final (see [`Decoder`]).
    pub fn next_pdu(&mut self) -> Result<Option<Pdu>, X2x3Error> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let total = match self.pending_len() {
            Ok(Some(total)) => total,
            Ok(None) => return Ok(None),
            Err(e) => return Err(self.fail(e)),
        };
        let end = self.start.saturating_add(total);
        let Some(frame) = self.buf.get(self.start..end) else {
            return Ok(None);
        };
        match decode_frame(frame) {
            Ok(pdu) => {
                self.start = end;
                self.compact();
                Ok(Some(pdu))
            }
            Err(e) => Err(self.fail(e)),
        }
    }

    /// Bytes pushed and not yet taken as PDUs.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The error the decoder failed with, if it did.
    pub fn error(&self) -> Option<&X2x3Error> {
        self.failed.as_ref()
    }

    /// The next PDU's total length once its first 12 bytes are in, checked against the limit.
    fn pending_len(&self) -> Result<Option<usize>, X2x3Error> {
        let pending = self.buf.get(self.start..).unwrap_or_default();
        let Some(total) = check_prefix(pending)? else {
            return Ok(None);
        };
        match usize::try_from(total) {
            Ok(t) if t <= self.max_pdu => Ok(Some(t)),
            _ => Err(X2x3Error::TooLarge {
                length: total,
                max: self.max_pdu,
            }),
        }
    }

    fn fail(&mut self, e: X2x3Error) -> X2x3Error {
        self.failed = Some(e.clone());
        self.buf = Vec::new();
        self.start = 0;
        e
    }

    /// Drops the bytes of PDUs already taken when they are most of the buffer.
    fn compact(&mut self) {
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start >= 4096 && self.start * 2 >= self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }
}

/// Why bytes are not a PDU (decoding) or a [`Pdu`] cannot be sent (encoding).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum X2x3Error {
    /// The bytes end before the PDU does (only [`Pdu::decode`]; [`Decoder`] waits instead).
    #[error("truncated PDU: {needed} bytes needed, {available} available")]
    Truncated { needed: usize, available: usize },
    /// A version other than major 0, minor 5 or later.
    #[error("unsupported X2/X3 version {0:#06x} (major 0, minor 5 or later is read)")]
    UnsupportedVersion(u16),
    #[error("unknown X2/X3 PDU type {0}")]
    UnknownPduType(u16),
    /// A header length below the 40 bytes of the fixed header.
    #[error("header length {header_length} is shorter than the 40-byte fixed header")]
    HeaderTooShort { header_length: u32 },
    /// Header and payload lengths add up to more than the [`Decoder`]'s limit.
    #[error("PDU of {length} bytes is over the limit of {max}")]
    TooLarge { length: u64, max: usize },
    /// A conditional attribute's type and length, or its value, run past the header length.
    #[error("conditional attribute at offset {offset} overruns the header: {needed} bytes needed, {available} left")]
    AttributeOverrun {
        offset: usize,
        needed: usize,
        available: usize,
    },
    /// An attribute of a known type whose value is not what that type holds.
    #[error("conditional attribute {tag}: {reason}")]
    BadAttribute { tag: u16, reason: &'static str },
    #[error("{pdu_type:?} PDU with a payload of {payload_length} bytes (keepalives carry none)")]
    KeepaliveWithPayload {
        pdu_type: PduType,
        payload_length: usize,
    },
    /// A payload format the payload format table does not allow in this PDU type.
    #[error("payload format {format:?} is not allowed in a {pdu_type:?} PDU")]
    FormatNotAllowed {
        pdu_type: PduType,
        format: PayloadFormat,
    },
    /// Encoding: a value longer than the 16-bit attribute length allows.
    #[error("conditional attribute {tag}: value of {length} bytes is over 65,535")]
    AttributeTooLong { tag: u16, length: usize },
    /// Encoding: a header longer than the 32-bit header length allows.
    #[error("header of {length} bytes does not fit the 32-bit header length")]
    HeaderTooLong { length: usize },
    /// Encoding: a payload longer than the 32-bit payload length allows.
    #[error("payload of {length} bytes does not fit the 32-bit payload length")]
    PayloadTooLong { length: usize },
}
