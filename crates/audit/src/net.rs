//! Link, IP and transport decoding for captured frames, with IPv4/IPv6 fragment reassembly.
//!
//! Frames are decoded in place (no copy) unless they are fragments: those are gathered in a
//! bounded [`Reassembler`] until complete (RFC 791 §3.2, RFC 8200 §4.5).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Link-layer header types (the pcap `LINKTYPE_*` numbers) this module decodes.
pub mod link {
    pub const NULL: u32 = 0;
    pub const ETHERNET: u32 = 1;
    pub const RAW: u32 = 101;
    pub const LOOP: u32 = 108;
    pub const LINUX_SLL: u32 = 113;
    pub const IPV4: u32 = 228;
    pub const IPV6: u32 = 229;
    pub const LINUX_SLL2: u32 = 276;
    /// Some systems write DLT_RAW as 12 or 14.
    pub const RAW_ALT12: u32 = 12;
    pub const RAW_ALT14: u32 = 14;
}

/// Why a frame was skipped (a key of the report's `skipped` table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Skip {
    UnsupportedLink,
    TruncatedLink,
    NotIp,
    TruncatedIp,
    BadIpHeader,
    OtherTransport,
    TruncatedTransport,
    BadUdpLength,
    FragmentDropped,
    CapturedPartially,
}

impl Skip {
    pub fn as_str(self) -> &'static str {
        match self {
            Skip::UnsupportedLink => "unsupported link type",
            Skip::TruncatedLink => "truncated link header",
            Skip::NotIp => "not IP (ARP, LLDP, ...)",
            Skip::TruncatedIp => "truncated IP header",
            Skip::BadIpHeader => "bad IP header (version, length)",
            Skip::OtherTransport => "neither UDP nor TCP",
            Skip::TruncatedTransport => "truncated UDP/TCP header",
            Skip::BadUdpLength => "UDP length beyond the packet",
            Skip::FragmentDropped => "IP fragment dropped (limits, overlap or timeout)",
            Skip::CapturedPartially => "frame cut at the snap length",
        }
    }
}

/// The transport of a decoded packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp {
        seq: u32,
        syn: bool,
        fin: bool,
        rst: bool,
    },
}

/// A decoded transport packet: addresses and the payload (borrowed from the frame or from the
/// reassembly buffer).
#[derive(Debug, Clone, Copy)]
pub struct Packet<'a> {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub transport: Transport,
    pub payload: &'a [u8],
    /// IPv6 (for the per-packet overhead Wireshark adds to bandwidth figures).
    pub v6: bool,
}

/// The IP layer of a frame, before the transport is looked at.
struct IpPacket<'a> {
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    /// The IP payload (possibly one fragment of it).
    payload: &'a [u8],
    frag: Option<FragInfo>,
}

#[derive(Debug, Clone, Copy)]
struct FragInfo {
    id: u32,
    offset: usize,
    more: bool,
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Strips the link header: returns the EtherType-like protocol and the network-layer bytes.
fn strip_link(link_type: u32, data: &[u8]) -> Result<(u16, &[u8]), Skip> {
    let (mut et, mut rest) = match link_type {
        link::ETHERNET => {
            if data.len() < 14 {
                return Err(Skip::TruncatedLink);
            }
            (be16(data, 12), &data[14..])
        }
        link::LINUX_SLL => {
            if data.len() < 16 {
                return Err(Skip::TruncatedLink);
            }
            (be16(data, 14), &data[16..])
        }
        link::LINUX_SLL2 => {
            if data.len() < 20 {
                return Err(Skip::TruncatedLink);
            }
            (be16(data, 0), &data[20..])
        }
        link::RAW | link::RAW_ALT12 | link::RAW_ALT14 | link::IPV4 | link::IPV6 => {
            match data.first().map(|b| b >> 4) {
                Some(4) => (0x0800, data),
                Some(6) => (0x86dd, data),
                Some(_) => return Err(Skip::BadIpHeader),
                None => return Err(Skip::TruncatedLink),
            }
        }
        link::NULL | link::LOOP => {
            if data.len() < 4 {
                return Err(Skip::TruncatedLink);
            }
            let rest = &data[4..];
            match rest.first().map(|b| b >> 4) {
                Some(4) => (0x0800, rest),
                Some(6) => (0x86dd, rest),
                _ => return Err(Skip::NotIp),
            }
        }
        _ => return Err(Skip::UnsupportedLink),
    };
    // 802.1Q / 802.1ad tags, at most two deep (QinQ).
    for _ in 0..2 {
        if et == 0x8100 || et == 0x88a8 {
            if rest.len() < 4 {
                return Err(Skip::TruncatedLink);
            }
            et = be16(rest, 2);
            rest = &rest[4..];
        }
    }
    Ok((et, rest))
}

fn parse_ipv4(b: &[u8]) -> Result<IpPacket<'_>, Skip> {
    if b.len() < 20 {
        return Err(Skip::TruncatedIp);
    }
    if b[0] >> 4 != 4 {
        return Err(Skip::BadIpHeader);
    }
    let ihl = ((b[0] & 0x0f) as usize) * 4;
    let total = be16(b, 2) as usize;
    if ihl < 20 || total < ihl {
        return Err(Skip::BadIpHeader);
    }
    if b.len() < ihl {
        return Err(Skip::TruncatedIp);
    }
    // Ethernet pads short frames: the IP total length says where the packet ends. A frame
    // shorter than the total length was cut (snap length): decode what is there.
    let end = total.min(b.len());
    let flags_off = be16(b, 6);
    let more = flags_off & 0x2000 != 0;
    let offset = ((flags_off & 0x1fff) as usize) * 8;
    let src = IpAddr::V4(Ipv4Addr::new(b[12], b[13], b[14], b[15]));
    let dst = IpAddr::V4(Ipv4Addr::new(b[16], b[17], b[18], b[19]));
    Ok(IpPacket {
        src,
        dst,
        proto: b[9],
        payload: &b[ihl..end],
        frag: (more || offset > 0).then_some(FragInfo {
            id: be16(b, 4) as u32,
            offset,
            more,
        }),
    })
}

fn parse_ipv6(b: &[u8]) -> Result<IpPacket<'_>, Skip> {
    if b.len() < 40 {
        return Err(Skip::TruncatedIp);
    }
    if b[0] >> 4 != 6 {
        return Err(Skip::BadIpHeader);
    }
    let plen = be16(b, 4) as usize;
    let end = (40 + plen).min(b.len());
    let mut src = [0u8; 16];
    src.copy_from_slice(&b[8..24]);
    let mut dst = [0u8; 16];
    dst.copy_from_slice(&b[24..40]);
    let mut next = b[6];
    let mut at = 40;
    let mut frag = None;
    // Extension headers (RFC 8200 §4): hop-by-hop, routing, fragment, destination options.
    for _ in 0..8 {
        match next {
            0 | 43 | 60 => {
                if end < at + 8 {
                    return Err(Skip::TruncatedIp);
                }
                let len = (b[at + 1] as usize + 1) * 8;
                next = b[at];
                at += len;
                if at > end {
                    return Err(Skip::TruncatedIp);
                }
            }
            44 => {
                if end < at + 8 {
                    return Err(Skip::TruncatedIp);
                }
                let off_m = be16(b, at + 2);
                frag = Some(FragInfo {
                    id: be32(b, at + 4),
                    offset: ((off_m >> 3) as usize) * 8,
                    more: off_m & 1 != 0,
                });
                next = b[at];
                at += 8;
            }
            _ => break,
        }
    }
    // An atomic fragment (offset 0, no more) is a whole packet (RFC 6946).
    if let Some(f) = frag {
        if f.offset == 0 && !f.more {
            frag = None;
        }
    }
    Ok(IpPacket {
        src: IpAddr::V6(Ipv6Addr::from(src)),
        dst: IpAddr::V6(Ipv6Addr::from(dst)),
        proto: next,
        payload: &b[at..end],
        frag,
    })
}

fn parse_transport<'a>(
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    b: &'a [u8],
) -> Result<Packet<'a>, Skip> {
    let v6 = src.is_ipv6();
    match proto {
        17 => {
            if b.len() < 8 {
                return Err(Skip::TruncatedTransport);
            }
            let ulen = be16(b, 4) as usize;
            if ulen < 8 {
                return Err(Skip::BadUdpLength);
            }
            // A UDP length beyond what was captured: the frame was cut; use what is there.
            let end = ulen.min(b.len());
            Ok(Packet {
                src: SocketAddr::new(src, be16(b, 0)),
                dst: SocketAddr::new(dst, be16(b, 2)),
                transport: Transport::Udp,
                payload: &b[8..end],
                v6,
            })
        }
        6 => {
            if b.len() < 20 {
                return Err(Skip::TruncatedTransport);
            }
            let off = ((b[12] >> 4) as usize) * 4;
            if off < 20 || off > b.len() {
                return Err(Skip::TruncatedTransport);
            }
            let flags = b[13];
            Ok(Packet {
                src: SocketAddr::new(src, be16(b, 0)),
                dst: SocketAddr::new(dst, be16(b, 2)),
                transport: Transport::Tcp {
                    seq: be32(b, 4),
                    syn: flags & 0x02 != 0,
                    fin: flags & 0x01 != 0,
                    rst: flags & 0x04 != 0,
                },
                payload: &b[off..],
                v6,
            })
        }
        _ => Err(Skip::OtherTransport),
    }
}

/// Limits of the fragment reassembler.
#[derive(Debug, Clone, Copy)]
pub struct FragLimits {
    /// Datagrams being reassembled at once; a new one beyond this evicts the oldest.
    pub max_pending: usize,
    /// Largest reassembled datagram (the IP maximum is 65535).
    pub max_datagram: usize,
    /// Capture-time seconds after which an incomplete datagram is dropped.
    pub timeout_secs: f64,
}

impl Default for FragLimits {
    fn default() -> Self {
        FragLimits {
            max_pending: 256,
            max_datagram: 65_535,
            timeout_secs: 30.0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct FragKey {
    src: IpAddr,
    dst: IpAddr,
    id: u32,
    proto: u8,
}

#[derive(Debug)]
struct Pending {
    data: Vec<u8>,
    /// Received byte ranges, kept sorted and merged.
    have: Vec<(usize, usize)>,
    /// Total length, known once the last fragment arrived.
    total: Option<usize>,
    first_seen: f64,
}

/// IPv4/IPv6 fragment reassembly with bounded memory and capture-time timeouts.
#[derive(Debug, Default)]
pub struct Reassembler {
    limits: FragLimits,
    pending: HashMap<FragKey, Pending>,
    /// The last reassembled datagram (the packet returned borrows it).
    done: Vec<u8>,
    pub reassembled: u64,
    pub dropped: u64,
}

impl Reassembler {
    pub fn new(limits: FragLimits) -> Self {
        Reassembler {
            limits,
            ..Default::default()
        }
    }

    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Adds one fragment; returns the whole IP payload when it completes a datagram.
    fn add(&mut self, key: FragKey, f: FragInfo, bytes: &[u8], now: f64) -> Option<&[u8]> {
        let limits = self.limits;
        // Expire old datagrams (scan only when the table is large or on a completed one).
        if self.pending.len() >= limits.max_pending {
            let before = self.pending.len();
            self.pending
                .retain(|_, p| now - p.first_seen <= limits.timeout_secs);
            self.dropped += (before - self.pending.len()) as u64;
            if self.pending.len() >= limits.max_pending {
                // Still full: evict the oldest.
                if let Some(k) = self
                    .pending
                    .iter()
                    .min_by(|a, b| a.1.first_seen.total_cmp(&b.1.first_seen))
                    .map(|(k, _)| *k)
                {
                    self.pending.remove(&k);
                    self.dropped += 1;
                }
            }
        }
        let end = f.offset.checked_add(bytes.len())?;
        if end > limits.max_datagram || (f.more && !bytes.len().is_multiple_of(8)) {
            if self.pending.remove(&key).is_some() {
                self.dropped += 1;
            }
            self.dropped += 1;
            return None;
        }
        let p = self.pending.entry(key).or_insert_with(|| Pending {
            data: Vec::new(),
            have: Vec::new(),
            total: None,
            first_seen: now,
        });
        if now - p.first_seen > limits.timeout_secs {
            *p = Pending {
                data: Vec::new(),
                have: Vec::new(),
                total: None,
                first_seen: now,
            };
            self.dropped += 1;
        }
        if !f.more {
            if p.total.is_some_and(|t| t != end) || p.have.iter().any(|r| r.1 > end) {
                self.pending.remove(&key);
                self.dropped += 1;
                return None;
            }
            p.total = Some(end);
        } else if p.total.is_some_and(|t| end > t) {
            self.pending.remove(&key);
            self.dropped += 1;
            return None;
        }
        if p.data.len() < end {
            p.data.resize(end, 0);
        }
        p.data[f.offset..end].copy_from_slice(bytes);
        // Insert and merge the range.
        p.have.push((f.offset, end));
        p.have.sort_unstable();
        let mut merged: Vec<(usize, usize)> = Vec::with_capacity(p.have.len());
        for r in p.have.drain(..) {
            match merged.last_mut() {
                Some(last) if r.0 <= last.1 => last.1 = last.1.max(r.1),
                _ => merged.push(r),
            }
        }
        p.have = merged;
        let complete = matches!((p.total, p.have.as_slice()), (Some(t), [(0, e)]) if *e == t);
        if complete {
            let p = self.pending.remove(&key)?;
            self.done = p.data;
            self.reassembled += 1;
            return Some(&self.done);
        }
        None
    }
}

/// Decodes a frame down to its UDP or TCP payload. `now` is the capture time in seconds (for
/// fragment timeouts). `Ok(None)` means a fragment was stored and the datagram is incomplete.
pub fn decode<'a>(
    link_type: u32,
    data: &'a [u8],
    now: f64,
    frags: &'a mut Reassembler,
) -> Result<Option<Packet<'a>>, Skip> {
    let (et, net) = strip_link(link_type, data)?;
    let ip = match et {
        0x0800 => parse_ipv4(net)?,
        0x86dd => parse_ipv6(net)?,
        _ => return Err(Skip::NotIp),
    };
    match ip.frag {
        None => parse_transport(ip.src, ip.dst, ip.proto, ip.payload).map(Some),
        Some(f) => {
            let key = FragKey {
                src: ip.src,
                dst: ip.dst,
                id: f.id,
                proto: ip.proto,
            };
            let (src, dst, proto) = (ip.src, ip.dst, ip.proto);
            match frags.add(key, f, ip.payload, now) {
                Some(whole) => parse_transport(src, dst, proto, whole).map(Some),
                None => Ok(None),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipv4_udp(payload: &[u8], id: u16, frag_off: u16, more: bool, udp: bool) -> Vec<u8> {
        let mut ip = vec![
            0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ];
        let mut body = Vec::new();
        if udp {
            let ulen = (8 + payload.len()) as u16;
            body.extend_from_slice(&4000u16.to_be_bytes());
            body.extend_from_slice(&5000u16.to_be_bytes());
            body.extend_from_slice(&ulen.to_be_bytes());
            body.extend_from_slice(&[0, 0]);
        }
        body.extend_from_slice(payload);
        let total = (20 + body.len()) as u16;
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        ip[4..6].copy_from_slice(&id.to_be_bytes());
        let fo = (frag_off / 8) | if more { 0x2000 } else { 0 };
        ip[6..8].copy_from_slice(&fo.to_be_bytes());
        ip.extend_from_slice(&body);
        ip
    }

    #[test]
    fn raw_ipv4_udp() {
        let f = ipv4_udp(b"hello", 1, 0, false, true);
        let mut r = Reassembler::default();
        let p = decode(link::RAW, &f, 0.0, &mut r).unwrap().unwrap();
        assert_eq!(p.payload, b"hello");
        assert_eq!(p.src, "10.0.0.1:4000".parse().unwrap());
        assert_eq!(p.transport, Transport::Udp);
    }

    #[test]
    fn fragments_out_of_order_reassemble() {
        // A UDP datagram of 8 + 40 bytes split in three fragments.
        let payload: Vec<u8> = (0..40).collect();
        let whole = ipv4_udp(&payload, 7, 0, false, true);
        let ip_payload = &whole[20..];
        let a = ipv4_udp(&ip_payload[..16], 7, 0, true, false);
        let b = ipv4_udp(&ip_payload[16..32], 7, 16, true, false);
        let c = ipv4_udp(&ip_payload[32..], 7, 32, false, false);
        let mut r = Reassembler::default();
        assert!(decode(link::RAW, &c, 0.0, &mut r).unwrap().is_none());
        assert!(decode(link::RAW, &a, 0.1, &mut r).unwrap().is_none());
        let p = decode(link::RAW, &b, 0.2, &mut r).unwrap().unwrap();
        assert_eq!(p.payload, &payload[..]);
        assert_eq!(r.pending(), 0);
    }

    #[test]
    fn fragment_limits_and_timeouts() {
        let mut r = Reassembler::new(FragLimits {
            max_pending: 4,
            max_datagram: 65_535,
            timeout_secs: 1.0,
        });
        for id in 0..100u16 {
            let f = ipv4_udp(&[0u8; 16], id, 0, true, false);
            assert!(decode(link::RAW, &f, id as f64 * 0.01, &mut r)
                .unwrap()
                .is_none());
            assert!(r.pending() <= 4);
        }
        // A fragment far beyond 64 KiB is refused.
        let f = ipv4_udp(&[0u8; 16], 999, 65528, false, false);
        assert!(decode(link::RAW, &f, 5.0, &mut r).unwrap().is_none());
        assert!(r.dropped > 0);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut r = Reassembler::default();
        for len in 0..64 {
            let junk = vec![0x45u8; len];
            let _ = decode(link::ETHERNET, &junk, 0.0, &mut r);
            let _ = decode(link::RAW, &junk, 0.0, &mut r);
            let _ = decode(link::LINUX_SLL2, &junk, 0.0, &mut r);
            let _ = decode(link::NULL, &junk, 0.0, &mut r);
        }
        assert_eq!(
            decode(9999, &[0; 40], 0.0, &mut r).unwrap_err(),
            Skip::UnsupportedLink
        );
    }
}
