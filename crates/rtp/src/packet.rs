//! RTP (RFC 3550 §5.1) and RTCP (RFC 3550 §6.4) views over byte buffers, and RFC 8285 header
//! extension elements (one-byte and two-byte forms).
//!
//! Parsing only looks at the header, never at the padding byte: in an SRTP packet the padding
//! count is encrypted and an authentication tag trails the payload, so a view that validated
//! padding (as `rtp-types` does) could not be used on protected packets.

use crate::error::{Error, Result};

/// Fixed RTP header size (RFC 3550 §5.1).
pub const RTP_FIXED_HEADER_LEN: usize = 12;
/// Fixed part of every RTCP packet: V/P/RC, PT, length, SSRC of sender (RFC 3550 §6.4).
pub const RTCP_HEADER_LEN: usize = 8;

#[inline]
fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}
#[inline]
fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// The parsed RTP header fields. `header_len` covers the fixed header, the CSRC list and the
/// header extension: the part SRTP authenticates but never encrypts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpHeader {
    pub padding: bool,
    pub extension: bool,
    pub csrc_count: u8,
    pub marker: bool,
    pub payload_type: u8,
    pub sequence_number: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    pub header_len: usize,
}

impl RtpHeader {
    /// Parses the header of an RTP (or SRTP) packet. Checks the version and that the CSRC list
    /// and extension fit in `buf`; does not look at the payload or padding.
    #[inline]
    pub fn parse(buf: &[u8]) -> Result<Self> {
        if buf.len() < RTP_FIXED_HEADER_LEN {
            return Err(Error::Truncated {
                len: buf.len(),
                need: RTP_FIXED_HEADER_LEN,
            });
        }
        let b0 = buf[0];
        let version = b0 >> 6;
        if version != 2 {
            return Err(Error::BadVersion { version });
        }
        let csrc_count = b0 & 0x0f;
        let extension = b0 & 0x10 != 0;
        let mut header_len = RTP_FIXED_HEADER_LEN + 4 * csrc_count as usize;
        if extension {
            if buf.len() < header_len + 4 {
                return Err(Error::Truncated {
                    len: buf.len(),
                    need: header_len + 4,
                });
            }
            header_len += 4 + 4 * be16(buf, header_len + 2) as usize;
        }
        if buf.len() < header_len {
            return Err(Error::Truncated {
                len: buf.len(),
                need: header_len,
            });
        }
        Ok(RtpHeader {
            padding: b0 & 0x20 != 0,
            extension,
            csrc_count,
            marker: buf[1] & 0x80 != 0,
            payload_type: buf[1] & 0x7f,
            sequence_number: be16(buf, 2),
            timestamp: be32(buf, 4),
            ssrc: be32(buf, 8),
            header_len,
        })
    }
}

/// A view of a whole (plain) RTP packet.
#[derive(Debug, Clone, Copy)]
pub struct RtpPacket<'a> {
    buf: &'a [u8],
    header: RtpHeader,
}

impl<'a> RtpPacket<'a> {
    /// Parses a plain RTP packet, including the padding count when the P bit is set.
    pub fn parse(buf: &'a [u8]) -> Result<Self> {
        let header = RtpHeader::parse(buf)?;
        if header.padding {
            let pad = *buf.last().unwrap_or(&0) as usize;
            if pad == 0 || header.header_len + pad > buf.len() {
                return Err(Error::BadPadding { pad });
            }
        }
        Ok(RtpPacket { buf, header })
    }
    pub fn header(&self) -> &RtpHeader {
        &self.header
    }
    pub fn ssrc(&self) -> u32 {
        self.header.ssrc
    }
    pub fn sequence_number(&self) -> u16 {
        self.header.sequence_number
    }
    pub fn timestamp(&self) -> u32 {
        self.header.timestamp
    }
    pub fn payload_type(&self) -> u8 {
        self.header.payload_type
    }
    pub fn marker(&self) -> bool {
        self.header.marker
    }
    /// The contributing sources (RFC 3550 §5.1 CSRC list).
    pub fn csrcs(&self) -> impl Iterator<Item = u32> + 'a {
        let buf = self.buf;
        (0..self.header.csrc_count as usize).map(move |i| be32(buf, RTP_FIXED_HEADER_LEN + 4 * i))
    }
    /// The header extension, if the X bit is set.
    pub fn extension(&self) -> Option<HeaderExtension<'a>> {
        if !self.header.extension {
            return None;
        }
        let at = RTP_FIXED_HEADER_LEN + 4 * self.header.csrc_count as usize;
        Some(HeaderExtension {
            profile: be16(self.buf, at),
            data: &self.buf[at + 4..self.header.header_len],
        })
    }
    /// The payload without padding.
    pub fn payload(&self) -> &'a [u8] {
        let end = if self.header.padding {
            self.buf.len() - *self.buf.last().unwrap_or(&0) as usize
        } else {
            self.buf.len()
        };
        &self.buf[self.header.header_len..end]
    }
    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }
}

/// The RFC 8285 form of a header extension block, from its 16-bit "defined by profile" field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtensionForm {
    /// 0xBEDE: 4-bit ID, 4-bit length-1, IDs 1..=14.
    OneByte,
    /// 0x100X: 8-bit ID, 8-bit length, IDs 1..=255; X are 4 "appbits".
    TwoByte { appbits: u8 },
    /// Any other profile value: an RFC 3550 extension this crate does not interpret.
    Other(u16),
}

/// One RFC 8285 extension element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtensionElement<'a> {
    pub id: u8,
    pub data: &'a [u8],
}

/// The header extension block of an RTP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderExtension<'a> {
    pub profile: u16,
    pub data: &'a [u8],
}

impl<'a> HeaderExtension<'a> {
    pub fn form(&self) -> ExtensionForm {
        match self.profile {
            0xBEDE => ExtensionForm::OneByte,
            p if p & 0xfff0 == 0x1000 => ExtensionForm::TwoByte {
                appbits: (p & 0x0f) as u8,
            },
            p => ExtensionForm::Other(p),
        }
    }

    /// Iterates the RFC 8285 elements. Yields an error (and then stops) on a malformed element;
    /// yields nothing for `ExtensionForm::Other`.
    pub fn elements(&self) -> ExtensionElements<'a> {
        ExtensionElements {
            data: self.data,
            pos: 0,
            form: self.form(),
            done: false,
        }
    }

    /// The first element with this ID.
    pub fn find(&self, id: u8) -> Option<&'a [u8]> {
        self.elements()
            .filter_map(|e| e.ok())
            .find(|e| e.id == id)
            .map(|e| e.data)
    }
}

/// Iterator over RFC 8285 elements; see [`HeaderExtension::elements`].
#[derive(Debug, Clone)]
pub struct ExtensionElements<'a> {
    data: &'a [u8],
    pos: usize,
    form: ExtensionForm,
    done: bool,
}

impl<'a> Iterator for ExtensionElements<'a> {
    type Item = Result<ExtensionElement<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        loop {
            if self.pos >= self.data.len() {
                self.done = true;
                return None;
            }
            let b = self.data[self.pos];
            match self.form {
                ExtensionForm::Other(_) => {
                    self.done = true;
                    return None;
                }
                ExtensionForm::OneByte => {
                    if b >> 4 == 0 {
                        // RFC 8285 §4.2: ID 0 is padding, a single byte whatever its length
                        // field says (as libwebrtc reads it); never an element.
                        self.pos += 1;
                        continue;
                    }
                    let id = b >> 4;
                    if id == 15 {
                        // RFC 8285 §4.2: ID 15 is reserved; stop processing.
                        self.done = true;
                        return None;
                    }
                    let len = (b & 0x0f) as usize + 1;
                    let start = self.pos + 1;
                    if start + len > self.data.len() {
                        self.done = true;
                        return Some(Err(Error::BadExtension { offset: self.pos }));
                    }
                    self.pos = start + len;
                    return Some(Ok(ExtensionElement {
                        id,
                        data: &self.data[start..start + len],
                    }));
                }
                ExtensionForm::TwoByte { .. } => {
                    if b == 0 {
                        self.pos += 1;
                        continue;
                    }
                    if self.pos + 2 > self.data.len() {
                        self.done = true;
                        return Some(Err(Error::BadExtension { offset: self.pos }));
                    }
                    let len = self.data[self.pos + 1] as usize;
                    let start = self.pos + 2;
                    if start + len > self.data.len() {
                        self.done = true;
                        return Some(Err(Error::BadExtension { offset: self.pos }));
                    }
                    self.pos = start + len;
                    return Some(Ok(ExtensionElement {
                        id: b,
                        data: &self.data[start..start + len],
                    }));
                }
            }
        }
    }
}

/// Writes an RFC 8285 header extension block (profile word, length word, elements, zero padding
/// to a 32-bit boundary) into `out`, returning the bytes written. Chooses the one-byte form when
/// every element fits it (ID 1..=14, 1..=16 bytes), else the two-byte form.
pub fn write_header_extension(elements: &[ExtensionElement<'_>], out: &mut [u8]) -> Result<usize> {
    let one_byte = elements
        .iter()
        .all(|e| (1..=14).contains(&e.id) && (1..=16).contains(&e.data.len()));
    if elements
        .iter()
        .any(|e| e.id == 0 || (!one_byte && e.data.len() > 255))
    {
        return Err(Error::BadExtension { offset: 0 });
    }
    let body: usize = elements
        .iter()
        .map(|e| e.data.len() + if one_byte { 1 } else { 2 })
        .sum();
    let padded = body.div_ceil(4) * 4;
    let need = 4 + padded;
    if out.len() < need {
        return Err(Error::BufferTooSmall {
            need,
            have: out.len(),
        });
    }
    let words = u16::try_from(padded / 4).map_err(|_| Error::BadExtension { offset: 0 })?;
    let profile: u16 = if one_byte { 0xBEDE } else { 0x1000 };
    out[0..2].copy_from_slice(&profile.to_be_bytes());
    out[2..4].copy_from_slice(&words.to_be_bytes());
    let mut pos = 4;
    for e in elements {
        if one_byte {
            out[pos] = (e.id << 4) | (e.data.len() as u8 - 1);
            pos += 1;
        } else {
            out[pos] = e.id;
            out[pos + 1] = e.data.len() as u8;
            pos += 2;
        }
        out[pos..pos + e.data.len()].copy_from_slice(e.data);
        pos += e.data.len();
    }
    out[pos..need].fill(0);
    Ok(need)
}

/// The common header of one RTCP packet (RFC 3550 §6.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtcpHeader {
    pub padding: bool,
    /// Reception report count / subtype / source count, depending on the packet type.
    pub count: u8,
    pub packet_type: u8,
    /// Length of this packet in bytes (from the 32-bit-word length field, plus the header word).
    pub packet_len: usize,
    /// The SSRC of the sender (first word after the header), as SRTCP uses it.
    pub ssrc: u32,
}

impl RtcpHeader {
    /// Parses the first RTCP packet header of a (compound) RTCP packet.
    #[inline]
    pub fn parse(buf: &[u8]) -> Result<Self> {
        if buf.len() < RTCP_HEADER_LEN {
            return Err(Error::Truncated {
                len: buf.len(),
                need: RTCP_HEADER_LEN,
            });
        }
        let version = buf[0] >> 6;
        if version != 2 {
            return Err(Error::BadVersion { version });
        }
        Ok(RtcpHeader {
            padding: buf[0] & 0x20 != 0,
            count: buf[0] & 0x1f,
            packet_type: buf[1],
            packet_len: (be16(buf, 2) as usize + 1) * 4,
            ssrc: be32(buf, 4),
        })
    }
}

/// Iterates the packets of a compound RTCP packet, checking each length against the buffer.
pub fn rtcp_compound(buf: &[u8]) -> impl Iterator<Item = Result<(RtcpHeader, &[u8])>> {
    let mut pos = 0usize;
    let mut failed = false;
    core::iter::from_fn(move || {
        if failed || pos >= buf.len() {
            return None;
        }
        let rest = &buf[pos..];
        let hdr = match RtcpHeader::parse(rest) {
            Ok(h) => h,
            Err(e) => {
                failed = true;
                return Some(Err(e));
            }
        };
        if hdr.packet_len > rest.len() {
            failed = true;
            return Some(Err(Error::Truncated {
                len: rest.len(),
                need: hdr.packet_len,
            }));
        }
        pos += hdr.packet_len;
        Some(Ok((hdr, &rest[..hdr.packet_len])))
    })
}

/// Whether a datagram looks like RTCP rather than RTP when both share a port (RFC 5761 §4:
/// RTCP packet types 192..=223 occupy the second byte).
pub fn is_rtcp(buf: &[u8]) -> bool {
    buf.len() >= 2 && buf[0] >> 6 == 2 && (192..=223).contains(&buf[1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_header_with_csrc_and_one_byte_extension() {
        let mut p = vec![0x92, 0xe0, 0x12, 0x34, 0, 0, 0, 1, 0xde, 0xad, 0xbe, 0xef];
        p.extend_from_slice(&[0, 0, 0, 7, 0, 0, 0, 8]); // 2 CSRCs
        p.extend_from_slice(&[0xbe, 0xde, 0, 1, 0x11, 0xaa, 0xbb, 0]); // id 1 len 2, pad
        p.extend_from_slice(b"payload");
        let pkt = RtpPacket::parse(&p).unwrap();
        assert_eq!(pkt.sequence_number(), 0x1234);
        assert_eq!(pkt.ssrc(), 0xdeadbeef);
        assert!(pkt.marker());
        assert_eq!(pkt.payload_type(), 0x60);
        assert_eq!(pkt.csrcs().collect::<Vec<_>>(), vec![7, 8]);
        let ext = pkt.extension().unwrap();
        assert_eq!(ext.form(), ExtensionForm::OneByte);
        let els: Vec<_> = ext.elements().collect::<Result<_>>().unwrap();
        assert_eq!(
            els,
            vec![ExtensionElement {
                id: 1,
                data: &[0xaa, 0xbb]
            }]
        );
        assert_eq!(pkt.payload(), b"payload");
        assert_eq!(pkt.header().header_len, 28);
    }

    #[test]
    fn two_byte_extension_round_trip() {
        let long = [7u8; 20];
        let els = [
            ExtensionElement {
                id: 200,
                data: &long,
            },
            ExtensionElement { id: 3, data: &[] },
        ];
        let mut out = [0u8; 64];
        let n = write_header_extension(&els, &mut out).unwrap();
        assert_eq!(n % 4, 0);
        let ext = HeaderExtension {
            profile: u16::from_be_bytes([out[0], out[1]]),
            data: &out[4..n],
        };
        assert_eq!(ext.form(), ExtensionForm::TwoByte { appbits: 0 });
        let got: Vec<_> = ext.elements().collect::<Result<_>>().unwrap();
        assert_eq!(got, els);
    }

    #[test]
    fn one_byte_extension_write_parse() {
        let els = [
            ExtensionElement {
                id: 1,
                data: &[1, 2, 3],
            },
            ExtensionElement {
                id: 14,
                data: &[9; 16],
            },
        ];
        let mut out = [0u8; 64];
        let n = write_header_extension(&els, &mut out).unwrap();
        let ext = HeaderExtension {
            profile: 0xBEDE,
            data: &out[4..n],
        };
        assert_eq!(ext.elements().collect::<Result<Vec<_>>>().unwrap(), els);
        assert_eq!(ext.find(14), Some(&[9u8; 16][..]));
    }

    #[test]
    fn malformed_inputs_are_errors() {
        assert!(matches!(
            RtpHeader::parse(&[0x80; 5]),
            Err(Error::Truncated { .. })
        ));
        assert!(matches!(
            RtpHeader::parse(&[0x40; 12]),
            Err(Error::BadVersion { version: 1 })
        ));
        // 15 CSRCs announced, none present.
        assert!(matches!(
            RtpHeader::parse(&[0x8f; 12]),
            Err(Error::Truncated { .. })
        ));
        // extension length beyond the end
        let p = [
            0x90, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xbe, 0xde, 0xff, 0xff,
        ];
        assert!(matches!(RtpHeader::parse(&p), Err(Error::Truncated { .. })));
        // element longer than the block
        let ext = HeaderExtension {
            profile: 0xBEDE,
            data: &[0x1f, 0, 0, 0],
        };
        assert!(ext.elements().any(|e| e.is_err()));
        // padding count larger than the packet
        let mut p = vec![0xa0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 200];
        assert!(matches!(
            RtpPacket::parse(&p),
            Err(Error::BadPadding { pad: 200 })
        ));
        p[15] = 2;
        assert_eq!(RtpPacket::parse(&p).unwrap().payload(), &[1, 2]);
    }

    #[test]
    fn rtcp_compound_walks_and_checks_lengths() {
        let mut c = vec![0x80, 200, 0, 6];
        c.extend_from_slice(&[0, 0, 0, 9]);
        c.extend_from_slice(&[0; 20]);
        c.extend_from_slice(&[0x81, 202, 0, 1, 0, 0, 0, 9]);
        let pkts: Vec<_> = rtcp_compound(&c).collect::<Result<_>>().unwrap();
        assert_eq!(pkts.len(), 2);
        assert_eq!(pkts[0].0.packet_type, 200);
        assert_eq!(pkts[1].0.packet_type, 202);
        assert!(is_rtcp(&c));
        c[3] = 50;
        assert!(rtcp_compound(&c).any(|r| r.is_err()));
    }
}
