//! Golden vectors and error cases of the ETSI TS 103 221-2 X2/X3 codec (`voxgate_li::x2x3`).
//!
//! The worked examples of `docs/li-handover.md` are read from the document itself (the hex
//! dumps after each `<!-- x2x3-vector: NAME -->` marker), so the document cannot drift from the
//! codec: each must be exactly what the codec encodes for the PDU built here, and decode back to
//! it. To print the annotated dumps after changing an example:
//! `cargo test -p voxgate-li --test x2x3_vectors -- --ignored --nocapture print_doc_dumps`.
//!
//! The committed fuzz corpus (`fuzz/corpus/x2x3_decode/`) is replayed through the same round
//! trip check as the fuzz target.

use std::net::{Ipv4Addr, Ipv6Addr};

use voxgate_li::x2x3::{
    keepalive, keepalive_ack, tag, Attribute, Decoder, PayloadDirection, PayloadFormat, Pdu,
    PduType, X2x3Error, FIXED_HEADER_LEN, VERSION,
};

const DOC: &str = include_str!("../../../docs/li-handover.md");

/// The example task: XID and correlation ID shared by the X2 and X3 examples.
const XID: [u8; 16] = [
    0x2f, 0x1c, 0x3a, 0x4b, 0x5d, 0x6e, 0x8f, 0x70, 0x81, 0x92, 0xa3, 0xb4, 0xc5, 0xd6, 0xe7, 0xf8,
];
const CORRELATION: u64 = 0x5eed_cafe_0000_04d2;
/// 2026-01-01T00:00:00Z.
const JAN_1_2026: u32 = 1_767_225_600;

fn x2_iri() -> Pdu {
    Pdu {
        pdu_type: PduType::X2,
        format: PayloadFormat::Mime,
        direction: PayloadDirection::NotApplicable,
        xid: XID,
        correlation_id: CORRELATION,
        attributes: vec![
            Attribute::SequenceNumber(1),
            Attribute::Timestamp {
                secs: JAN_1_2026,
                nanos: 250_000_000,
            },
            Attribute::MimeContentType("application/vnd.voxgate.iri+json".into()),
        ],
        payload: br#"{"type":"BEGIN","event":"attempt","caller":"sip:alice@example.com"}"#.to_vec(),
    }
}

/// A PCMU RTP packet: 12-byte header (V=2, PT 0, sequence 1000, timestamp 160000, SSRC
/// 0x1a2b3c4d) and 160 bytes (20 ms) of mu-law silence.
fn rtp_packet() -> Vec<u8> {
    let mut p = vec![
        0x80, 0x00, 0x03, 0xe8, 0x00, 0x02, 0x71, 0x00, 0x1a, 0x2b, 0x3c, 0x4d,
    ];
    p.extend_from_slice(&[0xff; 160]);
    p
}

fn x3_rtp() -> Pdu {
    Pdu {
        pdu_type: PduType::X3,
        format: PayloadFormat::RtpPacket,
        direction: PayloadDirection::FromTarget,
        xid: XID,
        correlation_id: CORRELATION,
        attributes: vec![
            Attribute::SequenceNumber(1000),
            Attribute::Timestamp {
                secs: JAN_1_2026 + 1,
                nanos: 20_000_000,
            },
            Attribute::SourceIpv4(Ipv4Addr::new(192, 0, 2, 10)),
            Attribute::DestIpv4(Ipv4Addr::new(198, 51, 100, 20)),
            Attribute::SourcePort(40000),
            Attribute::DestPort(20002),
            Attribute::IpProtocol(17),
        ],
        payload: rtp_packet(),
    }
}

/// Every example of the document, by the name of its marker.
fn doc_examples() -> Vec<(&'static str, Pdu)> {
    vec![
        ("x2-iri", x2_iri()),
        ("x3-rtp", x3_rtp()),
        ("keepalive", keepalive(42)),
        ("keepalive-ack", keepalive_ack(42)),
    ]
}

/// The bytes of the hex dump after `<!-- x2x3-vector: NAME -->`: the lines of the next fenced
/// block that start with a 4-digit hex offset; the byte tokens up to `|` (the annotation).
/// Each line's offset must be the count of bytes before it.
fn doc_vector(name: &str) -> Vec<u8> {
    let marker = format!("<!-- x2x3-vector: {name} -->");
    let mut parts = DOC.split(&marker);
    let _ = parts.next();
    let rest = parts
        .next()
        .unwrap_or_else(|| panic!("docs/li-handover.md has no {marker}"));
    assert!(parts.next().is_none(), "{marker} appears twice");
    let block = rest
        .split("```")
        .nth(1)
        .unwrap_or_else(|| panic!("no fenced block after {marker}"));
    let mut out = Vec::new();
    for line in block.lines() {
        let hex = line.split('|').next().unwrap_or("");
        let mut tokens = hex.split_whitespace();
        let Some(offset) = tokens.next() else {
            continue;
        };
        if offset.len() != 4 || !offset.chars().all(|c| c.is_ascii_hexdigit()) {
            continue;
        }
        let offset = usize::from_str_radix(offset, 16).unwrap();
        assert_eq!(offset, out.len(), "{name}: wrong offset on line {line:?}");
        for t in tokens {
            assert_eq!(t.len(), 2, "{name}: not a byte: {t:?} in {line:?}");
            out.push(u8::from_str_radix(t, 16).unwrap_or_else(|_| panic!("{name}: {t:?}")));
        }
    }
    assert!(!out.is_empty(), "{name}: empty dump");
    out
}

#[test]
fn doc_examples_are_what_the_codec_encodes_and_decodes() {
    for (name, pdu) in doc_examples() {
        let bytes = doc_vector(name);
        assert_eq!(
            pdu.encode().unwrap(),
            bytes,
            "{name}: encoding differs from the doc"
        );
        assert_eq!(pdu.encoded_len().unwrap(), bytes.len());
        assert_eq!(
            Pdu::decode(&bytes).unwrap(),
            (pdu.clone(), bytes.len()),
            "{name}"
        );
        let mut d = Decoder::new(1 << 16);
        d.push(&bytes);
        assert_eq!(d.next_pdu().unwrap(), Some(pdu), "{name}");
        assert_eq!(d.next_pdu().unwrap(), None);
        assert_eq!(d.buffered(), 0);
    }
}

#[test]
fn doc_examples_have_the_documented_shape() {
    let x2 = doc_vector("x2-iri");
    assert_eq!(&x2[..2], &[0x00, 0x05], "version 5 = major 0, minor 5");
    let x3 = doc_vector("x3-rtp");
    // 40 fixed + seq 8 + timestamp 12 + 2 * IPv4 8 + 2 * port 6 + protocol 5 = 93.
    assert_eq!(u32::from_be_bytes(x3[4..8].try_into().unwrap()), 93);
    assert_eq!(u32::from_be_bytes(x3[8..12].try_into().unwrap()), 172);
    assert_eq!(x3.len(), 93 + 172);
    assert_eq!(&x3[93..], rtp_packet().as_slice());
    let ka = doc_vector("keepalive");
    assert_eq!(ka.len(), 48);
    assert_eq!(&ka[16..40], &[0; 24], "nil XID and correlation ID");
    let ack = doc_vector("keepalive-ack");
    assert_eq!(&ack[..2], &ka[..2]);
    assert_eq!(&ack[2..4], &[0, 4]);
    assert_eq!(
        &ack[4..],
        &ka[4..],
        "the acknowledgement echoes the sequence number"
    );
}

/// Prints the annotated hex dumps of the document's examples (run by hand, see the top).
#[test]
#[ignore = "prints the dumps for docs/li-handover.md"]
fn print_doc_dumps() {
    for (name, pdu) in doc_examples() {
        println!("<!-- x2x3-vector: {name} -->\n```text\n{}```\n", dump(&pdu));
    }
}

fn attribute_name(t: u16) -> &'static str {
    match t {
        tag::SEQUENCE_NUMBER => "sequence number",
        tag::TIMESTAMP => "timestamp",
        tag::SOURCE_IPV4 => "source IPv4 address",
        tag::DEST_IPV4 => "destination IPv4 address",
        tag::SOURCE_PORT => "source port",
        tag::DEST_PORT => "destination port",
        tag::IP_PROTOCOL => "IP protocol",
        tag::MIME_CONTENT_TYPE => "MIME content type",
        _ => "?",
    }
}

fn attribute_value(a: &Attribute) -> String {
    match a {
        Attribute::SequenceNumber(n) => n.to_string(),
        Attribute::Timestamp { secs, nanos } => format!("{secs} s + {nanos} ns"),
        Attribute::SourceIpv4(ip) | Attribute::DestIpv4(ip) => ip.to_string(),
        Attribute::SourcePort(p) | Attribute::DestPort(p) => p.to_string(),
        Attribute::IpProtocol(17) => "17 (UDP)".into(),
        Attribute::MimeContentType(s) => format!("\"{s}\""),
        other => format!("{other:?}"),
    }
}

/// The annotated dump of a PDU, in the format `doc_vector` reads.
fn dump(pdu: &Pdu) -> String {
    let bytes = pdu.encode().unwrap();
    let mut lines = String::new();
    let mut at = 0;
    let mut line = |chunk: &[u8], note: &str, at: &mut usize| {
        for (i, c) in chunk.chunks(16).enumerate() {
            let hex: Vec<String> = c.iter().map(|b| format!("{b:02x}")).collect();
            let note = if i == 0 {
                note.to_string()
            } else if c.iter().all(|b| (0x20..0x7f).contains(b)) {
                String::from_utf8_lossy(c).into_owned()
            } else {
                String::new()
            };
            let text = format!("{:04x}  {:<47}", *at, hex.join(" "));
            if note.is_empty() {
                lines.push_str(text.trim_end());
            } else {
                lines.push_str(&format!("{text} | {note}"));
            }
            lines.push('\n');
            *at += c.len();
        }
    };
    let hl = u32::from_be_bytes(bytes[4..8].try_into().unwrap());
    let pl = u32::from_be_bytes(bytes[8..12].try_into().unwrap());
    let f = |r: std::ops::Range<usize>| bytes[r].to_vec();
    line(&f(0..2), "version 5 (major 0, minor 5)", &mut at);
    line(
        &f(2..4),
        &format!("PDU type {}: {:?}", pdu.pdu_type.code(), pdu.pdu_type),
        &mut at,
    );
    line(
        &f(4..8),
        &format!(
            "header length {hl} = 40 + {} (attributes)",
            hl as usize - FIXED_HEADER_LEN
        ),
        &mut at,
    );
    line(&f(8..12), &format!("payload length {pl}"), &mut at);
    line(
        &f(12..14),
        &format!("payload format {}: {:?}", pdu.format.code(), pdu.format),
        &mut at,
    );
    line(
        &f(14..16),
        &format!(
            "payload direction {}: {:?}",
            pdu.direction.code(),
            pdu.direction
        ),
        &mut at,
    );
    line(&f(16..32), "XID", &mut at);
    line(
        &f(32..40),
        &format!("correlation ID {:#018x}", pdu.correlation_id),
        &mut at,
    );
    for a in &pdu.attributes {
        let len = 4 + a.value_len();
        let note = format!(
            "attribute {} ({}), length {}: {}",
            a.tag(),
            attribute_name(a.tag()),
            a.value_len(),
            attribute_value(a)
        );
        let chunk = f(at..at + len);
        if len <= 16 {
            line(&chunk, &note, &mut at);
        } else {
            line(&chunk[..4], &note, &mut at);
            let value = chunk[4..].to_vec();
            line(&value, &String::from_utf8_lossy(&value[..16]), &mut at);
        }
    }
    let payload = f(at..bytes.len());
    if pdu.format == PayloadFormat::RtpPacket {
        line(
            &payload[..12],
            "payload: RTP header: V=2, PT 0 (PCMU), seq 1000, ts 160000, SSRC 0x1a2b3c4d",
            &mut at,
        );
        line(
            &payload[12..],
            "RTP payload: 160 bytes of mu-law silence (0xff)",
            &mut at,
        );
    } else if !payload.is_empty() {
        let first = String::from_utf8_lossy(&payload[..16.min(payload.len())]).into_owned();
        line(&payload, &format!("payload: {first}"), &mut at);
    }
    lines
}

#[test]
fn code_points() {
    for (t, code) in [
        (PduType::X2, 1),
        (PduType::X3, 2),
        (PduType::Keepalive, 3),
        (PduType::KeepaliveAck, 4),
    ] {
        assert_eq!(t.code(), code);
        assert_eq!(PduType::from_code(code), Some(t));
    }
    assert_eq!(PduType::from_code(0), None);
    assert_eq!(PduType::from_code(5), None);
    for code in 0..=40u16 {
        let f = PayloadFormat::from_code(code);
        assert_eq!(f.code(), code);
        assert_eq!(matches!(f, PayloadFormat::Other(_)), code > 16, "{code}");
        let d = PayloadDirection::from_code(code);
        assert_eq!(d.code(), code);
        assert_eq!(matches!(d, PayloadDirection::Other(_)), code > 5, "{code}");
    }
    assert_eq!(PayloadFormat::RtpPacket.code(), 8);
    assert_eq!(PayloadFormat::Mime.code(), 15);
    assert_eq!(PayloadDirection::ToTarget.code(), 2);
    assert_eq!(PayloadDirection::FromTarget.code(), 3);
    // The X2/X3 columns of the payload format table (0..=16).
    let x2 = [
        false, true, true, true, true, true, true, false, false, true, true, true, false, false,
        true, true, false,
    ];
    let x3 = [
        false, true, true, true, true, true, true, true, true, false, false, false, true, true,
        false, true, true,
    ];
    for code in 0..=16u16 {
        let f = PayloadFormat::from_code(code);
        assert_eq!(f.allowed_in(PduType::X2), x2[code as usize], "X2 {code}");
        assert_eq!(f.allowed_in(PduType::X3), x3[code as usize], "X3 {code}");
        assert!(f.allowed_in(PduType::Keepalive));
    }
    assert!(PayloadFormat::Other(17).allowed_in(PduType::X2));
    assert!(PayloadFormat::Other(17).allowed_in(PduType::X3));
}

fn every_attribute() -> Vec<Attribute> {
    let mut v = vec![
        Attribute::SequenceNumber(0),
        Attribute::SequenceNumber(u32::MAX),
        Attribute::Timestamp { secs: 0, nanos: 0 },
        Attribute::Timestamp {
            secs: u32::MAX,
            nanos: 999_999_999,
        },
        Attribute::SourceIpv4(Ipv4Addr::new(203, 0, 113, 1)),
        Attribute::DestIpv4(Ipv4Addr::new(203, 0, 113, 2)),
        Attribute::SourceIpv6("2001:db8::1".parse::<Ipv6Addr>().unwrap()),
        Attribute::DestIpv6("2001:db8:ffff::2".parse::<Ipv6Addr>().unwrap()),
        Attribute::SourcePort(0),
        Attribute::DestPort(65535),
        Attribute::IpProtocol(17),
        Attribute::IpProtocol(6),
        Attribute::MatchedTargetId("sip:alice@example.com".into()),
        Attribute::OtherTargetId("tel:+15550100".into()),
        Attribute::OtherTargetId(String::new()),
        Attribute::NetworkFunctionId("spg-1".into()),
        Attribute::InterceptionPointId("spg-1/media".into()),
        Attribute::MimeContentType("application/vnd.voxgate.iri+json".into()),
        Attribute::MimeContentTransferEncoding("binary".into()),
        Attribute::SdpSessionDescription("v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\n".into()),
        Attribute::MatchedTargetId("Zoë 👋".into()),
    ];
    for t in [0, 1, 2, 3, 4, 5, 21, 23, 0x7fff, 0xffff] {
        v.push(Attribute::Unknown {
            tag: t,
            value: vec![t as u8, 0xa5, 0x00],
        });
    }
    v.push(Attribute::Unknown {
        tag: 21,
        value: Vec::new(),
    });
    v
}

#[test]
fn every_attribute_kind_round_trips() {
    let all = every_attribute();
    // One PDU with all of them, and one PDU per attribute.
    let mut pdus = vec![Pdu {
        attributes: all.clone(),
        ..x3_rtp()
    }];
    for a in &all {
        pdus.push(Pdu {
            attributes: vec![a.clone()],
            ..x2_iri()
        });
    }
    for pdu in pdus {
        let bytes = pdu.encode().unwrap();
        let (back, n) = Pdu::decode(&bytes).unwrap();
        assert_eq!(back, pdu);
        assert_eq!(n, bytes.len());
        assert_eq!(back.encode().unwrap(), bytes);
    }
    // The value lengths on the wire.
    for (a, len) in [
        (Attribute::SequenceNumber(1), 4),
        (Attribute::Timestamp { secs: 1, nanos: 1 }, 8),
        (Attribute::SourceIpv4(Ipv4Addr::LOCALHOST), 4),
        (Attribute::DestIpv6(Ipv6Addr::LOCALHOST), 16),
        (Attribute::SourcePort(1), 2),
        (Attribute::IpProtocol(1), 1),
    ] {
        let mut out = Vec::new();
        Pdu {
            attributes: vec![a.clone()],
            ..keepalive(0)
        }
        .encode_into(&mut out)
        .unwrap();
        assert_eq!(&out[40..42], &a.tag().to_be_bytes());
        assert_eq!(&out[42..44], &(len as u16).to_be_bytes());
        assert_eq!(out.len(), 44 + len);
    }
}

/// A PDU from a newer peer: minor version 6, payload format 17, direction 9, unknown
/// attribute types, odd-length values, no padding between attributes.
fn newer_peer_pdu() -> Vec<u8> {
    let mut b = vec![0x00, 0x06, 0x00, 0x02];
    let attrs: &[u8] = &[
        0x00, 0x10, 0x00, 0x01, 0x11, // IP protocol 17
        0x00, 0x15, 0x00, 0x03, 0xaa, 0xbb, 0xcc, // 21, 3 bytes
        0x12, 0x34, 0x00, 0x00, // 0x1234, empty
        0x00, 0x05, 0x00, 0x02, 0x44, 0x31, // domain ID "D1"
    ];
    b.extend_from_slice(&((40 + attrs.len()) as u32).to_be_bytes());
    b.extend_from_slice(&3u32.to_be_bytes());
    b.extend_from_slice(&[0x00, 0x11, 0x00, 0x09]);
    b.extend_from_slice(&XID);
    b.extend_from_slice(&7u64.to_be_bytes());
    b.extend_from_slice(attrs);
    b.extend_from_slice(b"abc");
    b
}

#[test]
fn unknown_attributes_and_formats_survive_byte_for_byte() {
    let b = newer_peer_pdu();
    let (pdu, n) = Pdu::decode(&b).unwrap();
    assert_eq!(n, b.len());
    assert_eq!(pdu.format, PayloadFormat::Other(17));
    assert_eq!(pdu.direction, PayloadDirection::Other(9));
    assert_eq!(
        pdu.attributes,
        vec![
            Attribute::IpProtocol(17),
            Attribute::Unknown {
                tag: 21,
                value: vec![0xaa, 0xbb, 0xcc]
            },
            Attribute::Unknown {
                tag: 0x1234,
                value: vec![]
            },
            Attribute::Unknown {
                tag: 5,
                value: b"D1".to_vec()
            },
        ]
    );
    let again = pdu.encode().unwrap();
    assert_eq!(&again[..2], &VERSION.to_be_bytes(), "written as version 5");
    assert_eq!(&again[2..], &b[2..], "everything else byte for byte");
}

#[test]
fn keepalive_helpers() {
    let ka = keepalive(7);
    assert_eq!(ka.pdu_type, PduType::Keepalive);
    assert_eq!(ka.sequence_number(), Some(7));
    assert_eq!(ka.keepalive_ack(), Some(keepalive_ack(7)));
    assert_eq!(keepalive_ack(7).keepalive_ack(), None);
    assert_eq!(x2_iri().keepalive_ack(), None);
    let no_seq = Pdu {
        attributes: vec![],
        ..keepalive(0)
    };
    assert_eq!(no_seq.keepalive_ack(), None);
    assert_eq!(x3_rtp().timestamp(), Some((JAN_1_2026 + 1, 20_000_000)));
    assert_eq!(ka.timestamp(), None);
}

fn all_vectors() -> Vec<(Pdu, Vec<u8>)> {
    doc_examples()
        .into_iter()
        .map(|(_, p)| {
            let b = p.encode().unwrap();
            (p, b)
        })
        .chain(std::iter::once({
            let p = Pdu {
                attributes: every_attribute(),
                ..x3_rtp()
            };
            let b = p.encode().unwrap();
            (p, b)
        }))
        .collect()
}

#[test]
fn truncated_at_every_offset() {
    for (pdu, bytes) in all_vectors() {
        for cut in 0..bytes.len() {
            match Pdu::decode(&bytes[..cut]) {
                Err(X2x3Error::Truncated { needed, available }) => {
                    assert_eq!(available, cut);
                    assert!(needed > cut);
                    assert!(needed == 12 || needed == bytes.len(), "{needed}");
                }
                other => panic!("cut at {cut}: {other:?}"),
            }
            let mut d = Decoder::new(bytes.len());
            d.push(&bytes[..cut]);
            assert_eq!(d.next_pdu(), Ok(None), "cut at {cut}");
            assert_eq!(d.buffered(), cut);
            d.push(&bytes[cut..]);
            assert_eq!(d.next_pdu(), Ok(Some(pdu.clone())));
            assert_eq!(d.next_pdu(), Ok(None));
        }
    }
}

#[test]
fn one_byte_at_a_time_and_back_to_back() {
    let vectors = all_vectors();
    let stream: Vec<u8> = vectors.iter().flat_map(|(_, b)| b.clone()).collect();
    let expected: Vec<Pdu> = vectors.iter().map(|(p, _)| p.clone()).collect();

    // All at once.
    let mut d = Decoder::new(4096);
    d.push(&stream);
    let mut all_at_once = Vec::new();
    while let Some(p) = d.next_pdu().unwrap() {
        all_at_once.push(p);
    }
    assert_eq!(all_at_once, expected);
    assert_eq!(d.buffered(), 0);

    // One byte at a time.
    let mut d = Decoder::new(4096);
    let mut one_by_one = Vec::new();
    for b in &stream {
        d.push(std::slice::from_ref(b));
        while let Some(p) = d.next_pdu().unwrap() {
            one_by_one.push(p);
        }
    }
    assert_eq!(one_by_one, expected);

    // Back to back in one slice: decode returns what it consumed.
    let mut rest = stream.as_slice();
    let mut from_slice = Vec::new();
    while !rest.is_empty() {
        let (p, n) = Pdu::decode(rest).unwrap();
        from_slice.push(p);
        rest = &rest[n..];
    }
    assert_eq!(from_slice, expected);

    // Two PDUs in one push, with the first half of a third.
    let (_, ka) = &vectors[2];
    let (x3, x3b) = &vectors[1];
    let mut d = Decoder::new(4096);
    let mut chunk = ka.clone();
    chunk.extend_from_slice(x3b);
    chunk.extend_from_slice(&ka[..20]);
    d.push(&chunk);
    assert_eq!(d.next_pdu().unwrap(), Some(keepalive(42)));
    assert_eq!(d.next_pdu().unwrap(), Some(x3.clone()));
    assert_eq!(d.next_pdu().unwrap(), None);
    assert_eq!(d.buffered(), 20);
    d.push(&ka[20..]);
    assert_eq!(d.next_pdu().unwrap(), Some(keepalive(42)));
}

/// `bytes` with the big-endian u16 at `at` replaced.
fn with_u16(bytes: &[u8], at: usize, v: u16) -> Vec<u8> {
    let mut b = bytes.to_vec();
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
    b
}

fn with_u32(bytes: &[u8], at: usize, v: u32) -> Vec<u8> {
    let mut b = bytes.to_vec();
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
    b
}

/// The error of `bytes` from `Pdu::decode` and from a decoder fed them one byte at a time
/// (which must agree, and fail at the first byte that shows it).
fn both_errors(bytes: &[u8]) -> X2x3Error {
    let e = Pdu::decode(bytes).unwrap_err();
    let mut d = Decoder::new(1 << 20);
    let mut got = None;
    for b in bytes {
        d.push(std::slice::from_ref(b));
        if let Err(e) = d.next_pdu() {
            got = Some(e);
            break;
        }
    }
    assert_eq!(got.as_ref(), Some(&e), "decoder and decode differ");
    e
}

#[test]
fn wrong_version() {
    let ka = keepalive(1).encode().unwrap();
    for v in [0x0000, 0x0001, 0x0004, 0x0105, 0x0500, 0xffff] {
        assert_eq!(
            both_errors(&with_u16(&ka, 0, v)),
            X2x3Error::UnsupportedVersion(v)
        );
        // Refused from its first two bytes.
        let mut d = Decoder::new(100);
        d.push(&with_u16(&ka, 0, v)[..2]);
        assert_eq!(d.next_pdu(), Err(X2x3Error::UnsupportedVersion(v)));
    }
    for v in [0x0005, 0x0006, 0x00ff] {
        let (p, _) = Pdu::decode(&with_u16(&ka, 0, v)).unwrap();
        assert_eq!(p, keepalive(1));
    }
}

#[test]
fn unknown_pdu_type() {
    let ka = keepalive(1).encode().unwrap();
    for t in [0, 5, 0xffff] {
        assert_eq!(
            both_errors(&with_u16(&ka, 2, t)),
            X2x3Error::UnknownPduType(t)
        );
    }
}

#[test]
fn header_length_shorter_than_the_fixed_header() {
    let ka = keepalive(1).encode().unwrap();
    for hl in [0, 1, 39] {
        assert_eq!(
            both_errors(&with_u32(&ka, 4, hl)),
            X2x3Error::HeaderTooShort { header_length: hl }
        );
    }
    // A header of exactly 40 bytes: no attributes.
    let bare = Pdu {
        attributes: vec![],
        ..keepalive(0)
    };
    assert_eq!(bare.encode().unwrap().len(), 40);
    let ka40 = with_u32(&ka, 4, 40);
    let e = Pdu::decode(&ka40[..40]).unwrap();
    assert_eq!(e, (bare, 40));
}

#[test]
fn header_length_beyond_the_data() {
    let x2 = x2_iri().encode().unwrap();
    let hl = u32::from_be_bytes(x2[4..8].try_into().unwrap());
    let longer = with_u32(&x2, 4, hl + 4);
    assert_eq!(
        Pdu::decode(&longer),
        Err(X2x3Error::Truncated {
            needed: x2.len() + 4,
            available: x2.len()
        })
    );
    let mut d = Decoder::new(1 << 16);
    d.push(&longer);
    assert_eq!(
        d.next_pdu(),
        Ok(None),
        "waits for the bytes it was promised"
    );
    // Huge lengths: refused by the decoder's limit at once, nothing buffered beyond 12 bytes.
    let huge = with_u32(&with_u32(&x2, 4, u32::MAX), 8, u32::MAX);
    let mut d = Decoder::new(1 << 16);
    d.push(&huge[..12]);
    let e = X2x3Error::TooLarge {
        length: 2 * u64::from(u32::MAX),
        max: 1 << 16,
    };
    assert_eq!(d.next_pdu(), Err(e.clone()));
    assert_eq!(d.buffered(), 0);
    assert!(matches!(
        Pdu::decode(&huge),
        Err(X2x3Error::Truncated { .. })
    ));
}

#[test]
fn attribute_overrunning_the_header() {
    let x3 = x3_rtp().encode().unwrap();
    let hl = u32::from_be_bytes(x3[4..8].try_into().unwrap());
    let pl = u32::from_be_bytes(x3[8..12].try_into().unwrap());
    // The last attribute (IP protocol, 5 bytes at hl - 5) loses its value byte to the payload.
    let b = with_u32(&with_u32(&x3, 4, hl - 1), 8, pl + 1);
    assert_eq!(
        both_errors(&b),
        X2x3Error::AttributeOverrun {
            offset: hl as usize - 5,
            needed: 5,
            available: 4
        }
    );
    // Only two bytes of a TLV header before the payload.
    let b = with_u32(&with_u32(&x3, 4, 42), 8, pl + hl - 42);
    assert_eq!(
        both_errors(&b),
        X2x3Error::AttributeOverrun {
            offset: 40,
            needed: 4,
            available: 2
        }
    );
    // A length field far past the header.
    let b = with_u16(&x3, 42, 0xffff);
    assert!(matches!(
        both_errors(&b),
        X2x3Error::AttributeOverrun {
            offset: 40,
            needed: 65539,
            ..
        }
    ));
}

#[test]
fn bad_attribute_values() {
    let base = keepalive(0);
    let raw = |t: u16, value: &[u8]| {
        // Encode as Unknown (no checks), then decode as the known type.
        Pdu {
            attributes: vec![Attribute::Unknown {
                tag: t,
                value: value.to_vec(),
            }],
            ..base.clone()
        }
        .encode()
        .unwrap()
    };
    for (t, good) in [
        (tag::SEQUENCE_NUMBER, 4),
        (tag::TIMESTAMP, 8),
        (tag::SOURCE_IPV4, 4),
        (tag::DEST_IPV4, 4),
        (tag::SOURCE_IPV6, 16),
        (tag::DEST_IPV6, 16),
        (tag::SOURCE_PORT, 2),
        (tag::DEST_PORT, 2),
        (tag::IP_PROTOCOL, 1),
    ] {
        for len in [0, good - 1, good + 1] {
            assert!(
                matches!(both_errors(&raw(t, &vec![0; len])), X2x3Error::BadAttribute { tag, .. } if tag == t),
                "type {t} length {len}"
            );
        }
        assert!(Pdu::decode(&raw(t, &vec![0; good])).is_ok());
    }
    for t in [
        tag::MATCHED_TARGET_ID,
        tag::OTHER_TARGET_ID,
        tag::NETWORK_FUNCTION_ID,
        tag::INTERCEPTION_POINT_ID,
        tag::MIME_CONTENT_TYPE,
        tag::MIME_CONTENT_TRANSFER_ENCODING,
        tag::SDP_SESSION_DESCRIPTION,
    ] {
        assert_eq!(
            both_errors(&raw(t, &[b'a', 0xff, b'b'])),
            X2x3Error::BadAttribute {
                tag: t,
                reason: "value is not UTF-8"
            }
        );
    }
    // Nanoseconds must be below one second, both ways.
    let mut ts = vec![0, 0, 0, 1];
    ts.extend_from_slice(&1_000_000_000u32.to_be_bytes());
    assert!(matches!(
        both_errors(&raw(tag::TIMESTAMP, &ts)),
        X2x3Error::BadAttribute { tag: 9, .. }
    ));
    let late = Pdu {
        attributes: vec![Attribute::Timestamp {
            secs: 1,
            nanos: 1_000_000_000,
        }],
        ..base
    };
    assert!(matches!(
        late.encode(),
        Err(X2x3Error::BadAttribute { tag: 9, .. })
    ));
}

#[test]
fn keepalive_with_a_payload() {
    let ka = Pdu {
        payload: vec![1],
        ..keepalive(1)
    };
    let e = X2x3Error::KeepaliveWithPayload {
        pdu_type: PduType::Keepalive,
        payload_length: 1,
    };
    assert_eq!(ka.encode(), Err(e.clone()));
    // Hand-made: a keepalive acknowledgement with 2 payload bytes.
    let mut b = keepalive_ack(1).encode().unwrap();
    b[8..12].copy_from_slice(&2u32.to_be_bytes());
    b.extend_from_slice(&[9, 9]);
    assert_eq!(
        both_errors(&b),
        X2x3Error::KeepaliveWithPayload {
            pdu_type: PduType::KeepaliveAck,
            payload_length: 2
        }
    );
}

#[test]
fn payload_format_not_allowed() {
    for (pdu_type, format) in [
        (PduType::X2, PayloadFormat::RtpPacket),
        (PduType::X2, PayloadFormat::Keepalive),
        (PduType::X3, PayloadFormat::SipMessage),
        (PduType::X3, PayloadFormat::Keepalive),
    ] {
        let p = Pdu {
            pdu_type,
            format,
            ..x2_iri()
        };
        let e = X2x3Error::FormatNotAllowed { pdu_type, format };
        assert_eq!(p.encode(), Err(e.clone()));
        let b = with_u16(&x2_iri().encode().unwrap(), 2, pdu_type.code());
        let b = with_u16(&b, 12, format.code());
        assert_eq!(both_errors(&b), e);
    }
}

#[test]
fn encode_refuses_values_too_long_and_leaves_the_buffer_alone() {
    let long = Pdu {
        attributes: vec![
            Attribute::SequenceNumber(1),
            Attribute::OtherTargetId("x".repeat(65536)),
        ],
        ..x2_iri()
    };
    let mut out = vec![1, 2, 3];
    assert_eq!(
        long.encode_into(&mut out),
        Err(X2x3Error::AttributeTooLong {
            tag: tag::OTHER_TARGET_ID,
            length: 65536
        })
    );
    assert_eq!(out, vec![1, 2, 3]);
    assert!(long.encoded_len().is_err());
    // 65,535 is the most a value holds.
    let max = Pdu {
        attributes: vec![Attribute::Unknown {
            tag: 4,
            value: vec![7; 65535],
        }],
        ..x2_iri()
    };
    let n = max.encode_into(&mut out).unwrap();
    assert_eq!(n, out.len() - 3, "appended after what was there");
    assert_eq!(Pdu::decode(&out[3..]).unwrap(), (max, n));
}

#[test]
fn decoder_limit_and_error_state() {
    let x3 = x3_rtp().encode().unwrap();
    let ka = keepalive(1).encode().unwrap();
    // A limit of exactly the PDU's length lets it through; one less refuses it.
    let mut d = Decoder::new(x3.len());
    d.push(&x3);
    assert_eq!(d.next_pdu(), Ok(Some(x3_rtp())));
    let mut d = Decoder::new(x3.len() - 1);
    d.push(&ka);
    assert_eq!(
        d.next_pdu(),
        Ok(Some(keepalive(1))),
        "small PDUs still pass"
    );
    d.push(&x3[..11]);
    assert_eq!(d.next_pdu(), Ok(None), "length not known yet");
    d.push(&x3[11..12]);
    let e = X2x3Error::TooLarge {
        length: x3.len() as u64,
        max: x3.len() - 1,
    };
    assert_eq!(d.error(), Some(&e), "refused as the 12th byte arrives");
    assert_eq!(d.next_pdu(), Err(e.clone()));
    assert_eq!(d.buffered(), 0);
    // Failed for good: more bytes, even a valid PDU, change nothing.
    d.push(&ka);
    assert_eq!(d.buffered(), 0);
    assert_eq!(d.next_pdu(), Err(e.clone()));
    assert_eq!(d.next_pdu(), Err(e));

    // An error in the body (bad attribute) also sticks.
    let mut bad = x3.clone();
    bad[40..42].copy_from_slice(&tag::SOURCE_IPV6.to_be_bytes()); // a 4-byte value
    let mut d = Decoder::new(1 << 16);
    d.push(&bad);
    d.push(&ka);
    let e = d.next_pdu().unwrap_err();
    assert!(matches!(e, X2x3Error::BadAttribute { tag: 12, .. }));
    assert_eq!(d.next_pdu(), Err(e));
}

/// The property the fuzz target checks, for the committed corpus: whatever decodes re-encodes
/// (version 5, every other byte as it came) and decodes to the same PDU; a decoder fed the
/// bytes one at a time yields the same PDUs and then the same verdict as `Pdu::decode`.
fn round_trip(stream: &[u8]) -> usize {
    let mut rest = stream;
    let mut pdus = Vec::new();
    let verdict = loop {
        if rest.is_empty() {
            break None;
        }
        match Pdu::decode(rest) {
            Ok((p, n)) => {
                let b = p.encode().expect("a decoded PDU encodes");
                assert_eq!(b.len(), n);
                assert_eq!(&b[..2], &VERSION.to_be_bytes());
                assert_eq!(&b[2..], &rest[2..n]);
                assert_eq!(Pdu::decode(&b), Ok((p.clone(), n)));
                pdus.push(p);
                rest = &rest[n..];
            }
            Err(e) => break Some(e),
        }
    };
    let mut d = Decoder::new(usize::MAX);
    let mut got = Vec::new();
    let mut error = None;
    for b in stream {
        d.push(std::slice::from_ref(b));
        loop {
            match d.next_pdu() {
                Ok(Some(p)) => got.push(p),
                Ok(None) => break,
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        if error.is_some() {
            break;
        }
    }
    assert_eq!(got, pdus);
    match verdict {
        None | Some(X2x3Error::Truncated { .. }) => assert_eq!(error, None),
        Some(e) => assert_eq!(error, Some(e)),
    }
    pdus.len()
}

#[test]
fn committed_fuzz_corpus_round_trips() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/x2x3_decode");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("fuzz/corpus/x2x3_decode")
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 5, "corpus missing: {}", dir.display());
    let mut decoded = 0;
    for f in files {
        let data = std::fs::read(&f).unwrap();
        // The fuzz target's first byte configures chunking and the limit; the rest is the stream.
        decoded += round_trip(data.get(1..).unwrap_or_default());
    }
    assert!(decoded >= 8, "the seeds decode: {decoded}");
}

fn corpus_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/x2x3_decode")
}

/// The generated seeds of the fuzz target: (file name, config byte + stream). Config bits 0-3
/// are the decoder's chunk size (0: all at once), bits 4-5 its limit (none, 48, 256, 4096).
fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let x2 = x2_iri().encode().unwrap();
    let x3 = x3_rtp().encode().unwrap();
    let ka = keepalive(42).encode().unwrap();
    let ack = keepalive_ack(42).encode().unwrap();
    let every = Pdu {
        attributes: every_attribute(),
        ..x3_rtp()
    }
    .encode()
    .unwrap();
    let ipv6 = Pdu {
        direction: PayloadDirection::ToTarget,
        attributes: vec![
            Attribute::SequenceNumber(7),
            Attribute::Timestamp {
                secs: JAN_1_2026,
                nanos: 999_999_999,
            },
            Attribute::SourceIpv6("2001:db8::10".parse().unwrap()),
            Attribute::DestIpv6("2001:db8::20".parse().unwrap()),
            Attribute::SourcePort(5004),
            Attribute::DestPort(5006),
            Attribute::IpProtocol(17),
        ],
        ..x3_rtp()
    }
    .encode()
    .unwrap();
    let all: Vec<u8> = [&x2, &x3, &ka, &ack, &every, &ipv6]
        .iter()
        .flat_map(|b| b.to_vec())
        .collect();
    let hl = |b: &[u8]| u32::from_be_bytes(b[4..8].try_into().unwrap());
    let pl = |b: &[u8]| u32::from_be_bytes(b[8..12].try_into().unwrap());
    let cat = |config: u8, parts: &[&[u8]]| {
        let mut v = vec![config];
        for p in parts {
            v.extend_from_slice(p);
        }
        v
    };
    let mut not_utf8 = x2.clone();
    let mime_value = 40 + 8 + 12 + 4;
    not_utf8[mime_value] = 0xff;
    vec![
        ("seed-x2-iri", cat(0x00, &[&x2])),
        ("seed-x3-rtp", cat(0x00, &[&x3])),
        ("seed-keepalive-and-ack", cat(0x00, &[&ka, &ack])),
        ("seed-every-attribute", cat(0x00, &[&every])),
        ("seed-ipv6", cat(0x00, &[&ipv6])),
        ("seed-newer-peer", cat(0x00, &[&newer_peer_pdu()])),
        ("seed-stream-bytewise", cat(0x01, &[&all])),
        ("seed-stream-chunks-of-7-limit-4096", cat(0x37, &[&all])),
        ("seed-limit-48", cat(0x10, &[&ka, &ack, &x2])),
        ("seed-limit-256", cat(0x25, &[&x2, &ka, &x3])),
        ("seed-truncated", cat(0x03, &[&x2, &x3[..100]])),
        (
            "seed-bad-version",
            cat(0x00, &[&ka, &with_u16(&ka, 0, 0x0500)]),
        ),
        ("seed-unknown-pdu-type", cat(0x00, &[&with_u16(&ka, 2, 5)])),
        ("seed-header-too-short", cat(0x02, &[&with_u32(&ka, 4, 39)])),
        (
            "seed-attribute-overrun",
            cat(
                0x00,
                &[&with_u32(&with_u32(&x3, 4, hl(&x3) - 1), 8, pl(&x3) + 1)],
            ),
        ),
        ("seed-attribute-not-utf8", cat(0x00, &[&not_utf8])),
        (
            "seed-hostile-length",
            cat(
                0x30,
                &[&ka, &with_u32(&with_u32(&x2, 4, u32::MAX), 8, u32::MAX)],
            ),
        ),
        (
            "seed-format-not-allowed",
            cat(0x00, &[&with_u16(&x2, 12, PayloadFormat::RtpPacket.code())]),
        ),
        (
            "seed-keepalive-with-payload",
            cat(0x00, &[&with_u32(&ack, 8, 2), &[1, 2]]),
        ),
    ]
}

#[test]
fn committed_corpus_holds_generated_seeds() {
    let mut stale = Vec::new();
    for (name, bytes) in seeds() {
        if std::fs::read(corpus_dir().join(name)).ok().as_deref() != Some(bytes.as_slice()) {
            stale.push(name);
        }
    }
    assert!(
        stale.is_empty(),
        "run `cargo test -p voxgate-li --test x2x3_vectors -- --ignored regenerate_seed_corpus`: {stale:?}"
    );
}

/// Writes the `seed-*` files of `fuzz/corpus/x2x3_decode/` (removing `seed-*` files no longer
/// made; other files are kept).
#[test]
#[ignore = "writes fuzz/corpus/x2x3_decode; run by hand to regenerate the seeds"]
fn regenerate_seed_corpus() {
    let dir = corpus_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let seeds = seeds();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("seed-") && !seeds.iter().any(|(n, _)| *n == name) {
            std::fs::remove_file(&path).unwrap();
        }
    }
    for (name, bytes) in seeds {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}
