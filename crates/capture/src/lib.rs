//! Captures for voxgate's offline tools (`voxgate srtp`, later `voxgate audit`).
//!
//! - [`CaptureReader`] streams frames from pcap or pcapng (format detected from the magic), one at
//!   a time, so captures of any size run in bounded memory.
//! - [`CaptureWriter`] writes frames back in the input's format, keeping every other pcapng block.
//! - [`locate_udp`] finds the UDP datagram inside a frame (Ethernet with VLANs, Linux cooked
//!   SLL/SLL2, raw IP, BSD loopback; IPv4 and IPv6); [`replace_udp_payload`] swaps its payload and
//!   fixes the IP and UDP lengths and checksums.
//!
//! The reader and writer take any `Read`/`Write`: the caller owns the files.
#![forbid(unsafe_code)]

use std::borrow::Cow;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use etherparse::{EtherType, NetSlice, SlicedPacket, TransportSlice, UdpHeader};
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapReader, PcapWriter};
use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
use pcap_file::pcapng::{Block, PcapNgReader, PcapNgWriter};
use pcap_file::DataLink;

/// Errors reading or writing a capture, or decoding a frame.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaptureError {
    #[error("not a pcap or pcapng capture (magic {magic:02x?})")]
    UnknownFormat { magic: Vec<u8> },
    #[error("capture I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("corrupt capture after {frames} frames: {source}")]
    Corrupt {
        frames: u64,
        #[source]
        source: pcap_file::PcapError,
    },
    #[error("writing capture: {0}")]
    Write(pcap_file::PcapError),
    #[error("pcapng packet refers to unknown interface {0}")]
    UnknownInterface(u32),
    #[error("new UDP payload of {0} bytes does not fit in the IP packet")]
    PayloadTooLarge(usize),
}

/// The file format of a capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Pcap,
    PcapNg,
}

/// One captured frame.
#[derive(Debug, Clone)]
pub struct Frame<'a> {
    /// 0-based position among the capture's packets.
    pub index: u64,
    pub link: DataLink,
    /// pcapng interface id within its section (0 for pcap).
    pub interface_id: u32,
    pub timestamp: Duration,
    /// Length on the wire; larger than `data.len()` when the capture was cut at a snap length.
    pub orig_len: u32,
    pub data: Cow<'a, [u8]>,
}

impl Frame<'_> {
    /// Whether the capture holds less than the whole frame.
    pub fn is_truncated(&self) -> bool {
        (self.orig_len as usize) > self.data.len()
    }
}

enum Inner<R: Read> {
    Pcap(PcapReader<BufReader<R>>),
    PcapNg(Box<PcapNgReader<BufReader<R>>>),
}

/// One item of a capture: a frame, or (pcapng only) another block to pass through unchanged.
#[derive(Debug)]
pub enum Item<'a> {
    Frame(Frame<'a>),
    /// A pcapng block that is not a packet (interfaces, statistics, name resolution...).
    Other(Block<'a>),
}

/// Streams frames from a pcap or pcapng capture.
pub struct CaptureReader<R: Read> {
    inner: Inner<R>,
    /// Link types of the current pcapng section's interfaces, by interface id.
    links: Vec<DataLink>,
    frames: u64,
    failed: bool,
}

impl<R: Read> std::fmt::Debug for CaptureReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaptureReader")
            .field("format", &self.format())
            .field("frames", &self.frames)
            .finish()
    }
}

impl<R: Read> CaptureReader<R> {
    /// Opens a capture, detecting pcap or pcapng from its first bytes.
    pub fn new(reader: R) -> Result<Self, CaptureError> {
        let mut br = BufReader::with_capacity(1 << 16, reader);
        let magic = br
            .fill_buf()?
            .get(..4)
            .map(<[u8]>::to_vec)
            .unwrap_or_default();
        let corrupt = |source| CaptureError::Corrupt { frames: 0, source };
        let inner = match magic.as_slice() {
            [0x0a, 0x0d, 0x0d, 0x0a] => {
                Inner::PcapNg(Box::new(PcapNgReader::new(br).map_err(corrupt)?))
            }
            [0xa1, 0xb2, 0xc3, 0xd4]
            | [0xd4, 0xc3, 0xb2, 0xa1]
            | [0xa1, 0xb2, 0x3c, 0x4d]
            | [0x4d, 0x3c, 0xb2, 0xa1] => Inner::Pcap(PcapReader::new(br).map_err(corrupt)?),
            _ => return Err(CaptureError::UnknownFormat { magic }),
        };
        Ok(CaptureReader {
            inner,
            links: Vec::new(),
            frames: 0,
            failed: false,
        })
    }

    pub fn format(&self) -> Format {
        match self.inner {
            Inner::Pcap(_) => Format::Pcap,
            Inner::PcapNg(_) => Format::PcapNg,
        }
    }

    /// The pcap global header (pcap captures only).
    pub fn pcap_header(&self) -> Option<PcapHeader> {
        match &self.inner {
            Inner::Pcap(r) => Some(r.header()),
            Inner::PcapNg(_) => None,
        }
    }

    /// The next frame or block; `None` at the end. After an error (a corrupt or truncated
    /// capture) the reader stops: everything before the error was delivered.
    pub fn next_item(&mut self) -> Option<Result<Item<'_>, CaptureError>> {
        if self.failed {
            return None;
        }
        let CaptureReader {
            inner,
            links,
            frames,
            failed,
        } = self;
        let n = *frames;
        let res = match inner {
            Inner::Pcap(r) => {
                let link = r.header().datalink;
                match r.next_packet()? {
                    Ok(p) => Ok(Item::Frame(Frame {
                        index: n,
                        link,
                        interface_id: 0,
                        timestamp: p.timestamp,
                        orig_len: p.orig_len,
                        data: p.data,
                    })),
                    Err(source) => Err(CaptureError::Corrupt { frames: n, source }),
                }
            }
            Inner::PcapNg(r) => match r.next_block()? {
                Ok(Block::EnhancedPacket(p)) => match links.get(p.interface_id as usize) {
                    Some(link) => Ok(Item::Frame(Frame {
                        index: n,
                        link: *link,
                        interface_id: p.interface_id,
                        timestamp: p.timestamp,
                        orig_len: p.original_len,
                        data: p.data,
                    })),
                    None => Err(CaptureError::UnknownInterface(p.interface_id)),
                },
                Ok(Block::SimplePacket(p)) => match links.first() {
                    Some(link) => Ok(Item::Frame(Frame {
                        index: n,
                        link: *link,
                        interface_id: 0,
                        timestamp: Duration::ZERO,
                        orig_len: p.original_len,
                        data: p.data,
                    })),
                    None => Err(CaptureError::UnknownInterface(0)),
                },
                Ok(other) => {
                    match &other {
                        Block::SectionHeader(_) => links.clear(),
                        Block::InterfaceDescription(i) => links.push(i.linktype),
                        _ => {}
                    }
                    Ok(Item::Other(other))
                }
                Err(source) => Err(CaptureError::Corrupt { frames: n, source }),
            },
        };
        match &res {
            Ok(Item::Frame(_)) => *frames += 1,
            Ok(Item::Other(_)) => {}
            Err(_) => *failed = true,
        }
        Some(res)
    }
}

/// Writes frames in the format of the capture they came from.
pub struct CaptureWriter<W: Write> {
    inner: WInner<W>,
}

impl<W: Write> std::fmt::Debug for CaptureWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CaptureWriter")
    }
}

enum WInner<W: Write> {
    Pcap(PcapWriter<W>),
    PcapNg {
        w: Box<PcapNgWriter<W>>,
        /// Interfaces written so far, and the first output id of the current input section:
        /// several input sections are merged into one output section.
        interfaces: u32,
        section_base: u32,
        sections: u32,
    },
}

impl<W: Write> CaptureWriter<W> {
    /// A writer mirroring `reader`'s format (and pcap header).
    pub fn like<R: Read>(reader: &CaptureReader<R>, out: W) -> Result<Self, CaptureError> {
        let inner = match reader.pcap_header() {
            Some(h) => WInner::Pcap(PcapWriter::with_header(out, h).map_err(CaptureError::Write)?),
            None => WInner::PcapNg {
                w: Box::new(PcapNgWriter::new(out).map_err(CaptureError::Write)?),
                interfaces: 0,
                section_base: 0,
                sections: 0,
            },
        };
        Ok(CaptureWriter { inner })
    }

    /// Writes a non-packet pcapng block (ignored for pcap output). Section headers are not
    /// copied: the output is one section, and interface ids are renumbered to match.
    pub fn write_other(&mut self, block: &Block<'_>) -> Result<(), CaptureError> {
        if let WInner::PcapNg {
            w,
            interfaces,
            section_base,
            sections,
        } = &mut self.inner
        {
            match block {
                Block::SectionHeader(_) => {
                    *sections += 1;
                    *section_base = *interfaces;
                }
                Block::InterfaceDescription(_) => {
                    w.write_block(block).map_err(CaptureError::Write)?;
                    *interfaces += 1;
                }
                // Statistics blocks name an interface id too; they are dropped rather than
                // risk pointing at the wrong interface after renumbering.
                Block::InterfaceStatistics(_) if *sections > 1 => {}
                _ => {
                    w.write_block(block).map_err(CaptureError::Write)?;
                }
            }
        }
        Ok(())
    }

    /// Writes a frame, with `data` (possibly rewritten) and `orig_len`.
    pub fn write_frame(
        &mut self,
        frame: &Frame<'_>,
        data: &[u8],
        orig_len: u32,
    ) -> Result<(), CaptureError> {
        match &mut self.inner {
            WInner::Pcap(w) => w
                .write_packet(&PcapPacket::new(frame.timestamp, orig_len, data))
                .map(|_| ())
                .map_err(CaptureError::Write),
            WInner::PcapNg {
                w, section_base, ..
            } => {
                let epb = EnhancedPacketBlock {
                    interface_id: *section_base + frame.interface_id,
                    timestamp: frame.timestamp,
                    original_len: orig_len,
                    data: Cow::Borrowed(data),
                    options: vec![],
                };
                w.write_pcapng_block(epb)
                    .map(|_| ())
                    .map_err(CaptureError::Write)
            }
        }
    }

    /// Flushes and returns the underlying writer.
    pub fn finish(self) -> Result<W, CaptureError> {
        let mut w = match self.inner {
            WInner::Pcap(w) => w.into_writer(),
            WInner::PcapNg { w, .. } => w.into_inner(),
        };
        w.flush()?;
        Ok(w)
    }
}

/// Where a UDP datagram sits inside a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpLocation {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    /// Offset of the IP header.
    pub ip_offset: usize,
    /// Offset of the UDP header.
    pub udp_offset: usize,
    /// Offset and length of the UDP payload (as the UDP length field gives it).
    pub payload_offset: usize,
    pub payload_len: usize,
}

fn offset_in(base: &[u8], part: &[u8]) -> usize {
    part.as_ptr() as usize - base.as_ptr() as usize
}

/// Why a frame holds no usable UDP datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotUdp {
    /// A link type this crate does not decode.
    UnsupportedLink,
    /// Not IP, or not UDP.
    OtherProtocol,
    /// An IP fragment (UDP inside fragments is not reassembled here).
    Fragment,
    /// Headers that do not parse.
    Malformed,
}

/// Finds the UDP datagram in a frame of the given link type.
pub fn locate_udp(link: DataLink, data: &[u8]) -> Result<UdpLocation, NotUdp> {
    let sliced = match link {
        DataLink::ETHERNET => SlicedPacket::from_ethernet(data),
        DataLink::RAW | DataLink::IPV4 | DataLink::IPV6 => SlicedPacket::from_ip(data),
        DataLink::LINUX_SLL => {
            // 16-byte cooked header; protocol (an EtherType) in the last two bytes.
            let proto = data.get(14..16).ok_or(NotUdp::Malformed)?;
            let et = EtherType(u16::from_be_bytes([proto[0], proto[1]]));
            SlicedPacket::from_ether_type(et, data.get(16..).ok_or(NotUdp::Malformed)?)
        }
        DataLink::LINUX_SLL2 => {
            let proto = data.get(0..2).ok_or(NotUdp::Malformed)?;
            let et = EtherType(u16::from_be_bytes([proto[0], proto[1]]));
            SlicedPacket::from_ether_type(et, data.get(20..).ok_or(NotUdp::Malformed)?)
        }
        DataLink::NULL | DataLink::LOOP => {
            // 4-byte address family, host byte order for NULL, network order for LOOP.
            data.get(..4).ok_or(NotUdp::Malformed)?;
            SlicedPacket::from_ip(&data[4..])
        }
        _ => return Err(NotUdp::UnsupportedLink),
    }
    .map_err(|_| NotUdp::Malformed)?;
    let (src_ip, dst_ip, ip_offset) = match &sliced.net {
        Some(NetSlice::Ipv4(v4)) => {
            if v4.is_payload_fragmented() {
                return Err(NotUdp::Fragment);
            }
            let h = v4.header();
            (
                IpAddr::V4(Ipv4Addr::from(h.source())),
                IpAddr::V4(Ipv4Addr::from(h.destination())),
                offset_in(data, h.slice()),
            )
        }
        Some(NetSlice::Ipv6(v6)) => {
            if v6.is_payload_fragmented() {
                return Err(NotUdp::Fragment);
            }
            let h = v6.header();
            (
                IpAddr::V6(Ipv6Addr::from(h.source())),
                IpAddr::V6(Ipv6Addr::from(h.destination())),
                offset_in(data, h.slice()),
            )
        }
        _ => return Err(NotUdp::OtherProtocol),
    };
    match &sliced.transport {
        Some(TransportSlice::Udp(u)) => {
            let payload = u.payload();
            Ok(UdpLocation {
                src: SocketAddr::new(src_ip, u.source_port()),
                dst: SocketAddr::new(dst_ip, u.destination_port()),
                ip_offset,
                udp_offset: offset_in(data, u.slice()),
                payload_offset: offset_in(data, payload),
                payload_len: payload.len(),
            })
        }
        _ => Err(NotUdp::OtherProtocol),
    }
}

fn ones_complement_fix(hdr: &mut [u8]) {
    // IPv4 header checksum (RFC 791): zero the field, sum 16-bit words, complement.
    hdr[10] = 0;
    hdr[11] = 0;
    let mut sum: u32 = hdr
        .chunks(2)
        .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32)
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let ck = !(sum as u16);
    hdr[10..12].copy_from_slice(&ck.to_be_bytes());
}

/// Builds into `out` a copy of `frame` whose UDP payload is `payload`, with the IPv4 total
/// length and header checksum, the IPv6 payload length, the UDP length and the UDP checksum
/// fixed. Bytes after the old payload (e.g. Ethernet padding) are dropped. Returns the
/// difference in length (new - old) for adjusting the frame's original length.
pub fn replace_udp_payload(
    frame: &[u8],
    loc: &UdpLocation,
    payload: &[u8],
    out: &mut Vec<u8>,
) -> Result<isize, CaptureError> {
    out.clear();
    out.extend_from_slice(&frame[..loc.payload_offset]);
    out.extend_from_slice(payload);
    let delta = payload.len() as isize - loc.payload_len as isize;
    let udp_len = 8 + payload.len();
    let too_big = || CaptureError::PayloadTooLarge(payload.len());
    // Lengths from what is written (headers up to the UDP payload, then the new payload): any
    // bytes the IP packet carried after the UDP datagram are not copied.
    let ip_len = loc.payload_offset - loc.ip_offset + payload.len();
    match loc.src.ip() {
        IpAddr::V4(_) => {
            let ip = &mut out[loc.ip_offset..];
            let ihl = ((ip[0] & 0x0f) as usize) * 4;
            let total = u16::try_from(ip_len).map_err(|_| too_big())?;
            ip[2..4].copy_from_slice(&total.to_be_bytes());
            ones_complement_fix(&mut ip[..ihl]);
        }
        IpAddr::V6(_) => {
            let ip = &mut out[loc.ip_offset..];
            let plen = u16::try_from(ip_len - 40).map_err(|_| too_big())?;
            ip[4..6].copy_from_slice(&plen.to_be_bytes());
        }
    }
    let udp_len16 = u16::try_from(udp_len).map_err(|_| too_big())?;
    let u = loc.udp_offset;
    out[u + 4..u + 6].copy_from_slice(&udp_len16.to_be_bytes());
    let header = UdpHeader {
        source_port: loc.src.port(),
        destination_port: loc.dst.port(),
        length: udp_len16,
        checksum: 0,
    };
    let ck = match (loc.src.ip(), loc.dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            header.calc_checksum_ipv4_raw(s.octets(), d.octets(), payload)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            header.calc_checksum_ipv6_raw(s.octets(), d.octets(), payload)
        }
        _ => return Err(too_big()),
    }
    .map_err(|_| too_big())?;
    out[u + 6..u + 8].copy_from_slice(&ck.to_be_bytes());
    Ok(delta)
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    fn udp_frame(payload: &[u8], v6: bool) -> Vec<u8> {
        let b = PacketBuilder::ethernet2([1; 6], [2; 6]);
        let b = if v6 {
            b.ipv6([1; 16], [2; 16], 64).udp(4000, 5000)
        } else {
            b.ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64).udp(4000, 5000)
        };
        let mut out = Vec::new();
        b.write(&mut out, payload).unwrap();
        out
    }

    #[test]
    fn locate_and_replace_keeps_headers_valid() {
        for v6 in [false, true] {
            let f = udp_frame(b"hello srtp world", v6);
            let loc = locate_udp(DataLink::ETHERNET, &f).unwrap();
            assert_eq!(
                &f[loc.payload_offset..][..loc.payload_len],
                b"hello srtp world"
            );
            assert_eq!(loc.src.port(), 4000);
            let mut out = Vec::new();
            let d = replace_udp_payload(&f, &loc, b"short", &mut out).unwrap();
            assert_eq!(d, -11);
            // The result must equal what a builder makes for the new payload.
            assert_eq!(out, udp_frame(b"short", v6));
            let d = replace_udp_payload(&f, &loc, &[7u8; 300], &mut out).unwrap();
            assert_eq!(d, 300 - 16);
            assert_eq!(out, udp_frame(&[7u8; 300], v6));
        }
    }

    #[test]
    fn trailing_bytes_after_the_udp_datagram_are_dropped_and_lengths_stay_consistent() {
        // An IPv4 packet whose UDP length is shorter than its IP payload (10 stray bytes).
        let mut f = udp_frame(b"0123456789", false);
        f.extend_from_slice(&[0xee; 10]);
        let total = u16::from_be_bytes([f[16], f[17]]) + 10;
        f[16..18].copy_from_slice(&total.to_be_bytes());
        let loc = locate_udp(DataLink::ETHERNET, &f).unwrap();
        assert_eq!(loc.payload_len, 10);
        let mut out = Vec::new();
        replace_udp_payload(&f, &loc, b"abc", &mut out).unwrap();
        assert_eq!(out, udp_frame(b"abc", false));
    }

    #[test]
    fn other_links_and_garbage() {
        let f = udp_frame(b"x", false);
        // raw IP
        let loc = locate_udp(DataLink::RAW, &f[14..]).unwrap();
        assert_eq!(loc.payload_len, 1);
        // Linux SLL: 16-byte header with EtherType 0x0800 at 14..16
        let mut sll = vec![0u8; 14];
        sll.extend_from_slice(&[0x08, 0x00]);
        sll.extend_from_slice(&f[14..]);
        assert_eq!(
            locate_udp(DataLink::LINUX_SLL, &sll)
                .unwrap()
                .payload_offset,
            16 + 28
        );
        assert_eq!(
            locate_udp(DataLink::ETHERNET, &[0u8; 5]),
            Err(NotUdp::Malformed)
        );
        assert_eq!(
            locate_udp(DataLink::USB_LINUX, &f),
            Err(NotUdp::UnsupportedLink)
        );
    }

    #[test]
    fn unknown_format_is_an_error() {
        let r = CaptureReader::new(&b"not a capture at all"[..]);
        assert!(matches!(r, Err(CaptureError::UnknownFormat { .. })));
        let r = CaptureReader::new(&b""[..]);
        assert!(matches!(r, Err(CaptureError::UnknownFormat { .. })));
    }
}
