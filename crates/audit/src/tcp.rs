//! SIP over TCP: per-flow byte-stream reassembly and message framing by Content-Length
//! (RFC 3261 §18.3), with bounded buffers and a bounded flow table.

use std::collections::HashMap;
use std::net::SocketAddr;

/// Limits of the TCP reassembler.
#[derive(Debug, Clone, Copy)]
pub struct TcpLimits {
    pub max_flows: usize,
    /// Bytes buffered per flow while a message is incomplete.
    pub max_buffer: usize,
}

impl Default for TcpLimits {
    fn default() -> Self {
        TcpLimits {
            max_flows: 4096,
            max_buffer: 256 * 1024,
        }
    }
}

#[derive(Debug)]
struct Flow {
    next_seq: Option<u32>,
    buf: Vec<u8>,
    last_seen: f64,
}

/// Counters of what the reassembler dropped.
#[derive(Debug, Default, Clone, Copy)]
pub struct TcpCounters {
    pub segments: u64,
    pub gaps: u64,
    pub overflows: u64,
    pub flows_evicted: u64,
}

/// Reassembles the byte stream of each TCP flow and cuts it into SIP messages.
#[derive(Debug, Default)]
pub struct SipStreams {
    limits: TcpLimits,
    flows: HashMap<(SocketAddr, SocketAddr), Flow>,
    pub counters: TcpCounters,
}

/// Whether `b` starts like a SIP message (a request line or a status line).
pub fn looks_like_sip(b: &[u8]) -> bool {
    const STARTS: [&[u8]; 14] = [
        b"SIP/2.0 ",
        b"INVITE ",
        b"ACK ",
        b"BYE ",
        b"CANCEL ",
        b"REGISTER ",
        b"OPTIONS ",
        b"PRACK ",
        b"SUBSCRIBE ",
        b"NOTIFY ",
        b"PUBLISH ",
        b"INFO ",
        b"REFER ",
        b"MESSAGE ",
    ];
    STARTS.iter().any(|s| b.starts_with(s)) || b.starts_with(b"UPDATE ")
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The Content-Length of a header block (long or compact form), if any.
fn content_length(head: &[u8]) -> Option<usize> {
    for line in head.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let name = line[..colon].trim_ascii();
        if name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"l") {
            let v = std::str::from_utf8(line[colon + 1..].trim_ascii()).ok()?;
            return v.parse().ok();
        }
    }
    None
}

/// Splits the complete messages off the front of `buf`; calls `f` for each. Returns the
/// number of bytes consumed, or `None` when the buffer is not SIP at all.
fn cut_messages(buf: &[u8], max: usize, f: &mut impl FnMut(&[u8])) -> Option<usize> {
    let mut at = 0;
    loop {
        // Keep-alive CRLFs between messages (RFC 5626 §3.5.1).
        while at < buf.len() && (buf[at] == b'\r' || buf[at] == b'\n') {
            at += 1;
        }
        let rest = &buf[at..];
        if rest.is_empty() {
            return Some(at);
        }
        if rest.len() >= 8 && !looks_like_sip(rest) {
            return None;
        }
        let Some(hdr_end) = find(&rest[..rest.len().min(max)], b"\r\n\r\n") else {
            return Some(at);
        };
        let body_len = content_length(&rest[..hdr_end]).unwrap_or(0);
        let total = hdr_end + 4 + body_len;
        if total > max {
            return None;
        }
        if rest.len() < total {
            return Some(at);
        }
        f(&rest[..total]);
        at += total;
    }
}

impl SipStreams {
    pub fn new(limits: TcpLimits) -> Self {
        SipStreams {
            limits,
            ..Default::default()
        }
    }

    pub fn flows(&self) -> usize {
        self.flows.len()
    }

    /// Feeds one TCP segment; `f` receives each complete SIP message. Out-of-order segments
    /// are not buffered: a gap resynchronises the flow on the next segment that starts a
    /// message.
    #[allow(clippy::too_many_arguments)]
    pub fn segment(
        &mut self,
        src: SocketAddr,
        dst: SocketAddr,
        seq: u32,
        syn: bool,
        fin_or_rst: bool,
        payload: &[u8],
        now: f64,
        f: &mut impl FnMut(&[u8]),
    ) {
        self.counters.segments += 1;
        let key = (src, dst);
        if syn {
            self.flows.insert(
                key,
                Flow {
                    next_seq: Some(seq.wrapping_add(1)),
                    buf: Vec::new(),
                    last_seen: now,
                },
            );
            return;
        }
        if payload.is_empty() {
            if fin_or_rst {
                self.flows.remove(&key);
            }
            return;
        }
        if !self.flows.contains_key(&key) {
            // Only start following a flow that begins a SIP message.
            if !looks_like_sip(payload) {
                return;
            }
            if self.flows.len() >= self.limits.max_flows {
                if let Some(k) = self
                    .flows
                    .iter()
                    .min_by(|a, b| a.1.last_seen.total_cmp(&b.1.last_seen))
                    .map(|(k, _)| *k)
                {
                    self.flows.remove(&k);
                    self.counters.flows_evicted += 1;
                }
            }
            self.flows.insert(
                key,
                Flow {
                    next_seq: None,
                    buf: Vec::new(),
                    last_seen: now,
                },
            );
        }
        let max = self.limits.max_buffer;
        let Some(flow) = self.flows.get_mut(&key) else {
            return;
        };
        flow.last_seen = now;
        let mut data = payload;
        if let Some(next) = flow.next_seq {
            let ahead = seq.wrapping_sub(next) as i32;
            if ahead < 0 {
                // Retransmission: keep only the new bytes.
                let old = (-(ahead as i64)) as usize;
                if old >= data.len() {
                    return;
                }
                data = &data[old..];
            } else if ahead > 0 {
                self.counters.gaps += 1;
                flow.buf.clear();
                if !looks_like_sip(data) {
                    flow.next_seq = Some(seq.wrapping_add(payload.len() as u32));
                    return;
                }
            }
        }
        flow.next_seq = Some(seq.wrapping_add(payload.len() as u32));
        if flow.buf.is_empty() {
            // Fast path: cut messages straight from the segment, buffer the remainder.
            match cut_messages(data, max, f) {
                Some(used) => flow.buf.extend_from_slice(&data[used..]),
                None => self.counters.gaps += 1,
            }
        } else {
            flow.buf.extend_from_slice(data);
            match cut_messages(&flow.buf, max, f) {
                Some(used) => {
                    flow.buf.drain(..used);
                }
                None => {
                    self.counters.gaps += 1;
                    flow.buf.clear();
                }
            }
        }
        if flow.buf.len() > max {
            self.counters.overflows += 1;
            flow.buf.clear();
        }
        if fin_or_rst {
            self.flows.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(body: &str) -> String {
        format!(
            "INVITE sip:b@x SIP/2.0\r\nCall-ID: 1\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    #[test]
    fn messages_split_across_segments_and_glued_together() {
        let a: SocketAddr = "10.0.0.1:5060".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:5060".parse().unwrap();
        let stream = format!("{}{}\r\n\r\n{}", msg("v=0\r\n"), msg("hello"), msg(""));
        let bytes = stream.as_bytes();
        let mut s = SipStreams::default();
        let mut got: Vec<Vec<u8>> = Vec::new();
        let mut seq = 1000u32;
        s.segment(a, b, seq - 1, true, false, &[], 0.0, &mut |m| {
            got.push(m.to_vec())
        });
        for chunk in bytes.chunks(7) {
            s.segment(a, b, seq, false, false, chunk, 0.0, &mut |m| {
                got.push(m.to_vec())
            });
            // A retransmission of the same segment changes nothing.
            s.segment(a, b, seq, false, false, chunk, 0.0, &mut |m| {
                got.push(m.to_vec())
            });
            seq = seq.wrapping_add(chunk.len() as u32);
        }
        assert_eq!(got.len(), 3);
        assert_eq!(got[1], msg("hello").as_bytes());
    }

    #[test]
    fn absurd_content_length_is_bounded() {
        let a: SocketAddr = "10.0.0.1:5060".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:5060".parse().unwrap();
        let mut s = SipStreams::default();
        let m = b"INVITE sip:b@x SIP/2.0\r\nContent-Length: 99999999999\r\n\r\n";
        let mut n = 0;
        for i in 0..100u32 {
            s.segment(a, b, i * m.len() as u32, false, false, m, 0.0, &mut |_| {
                n += 1
            });
        }
        assert_eq!(n, 0);
        assert!(s.flows.values().all(|f| f.buf.len() <= 256 * 1024));
    }
}
