//! Per-stream RTP statistics computed exactly as Wireshark's RTP stream analysis
//! (`ui/tap-rtp-analysis.c`, `rtppacket_analyse`) and its `rtp,streams` table compute them, so
//! that `voxgate audit` and `tshark -q -z rtp,streams` agree on packets, lost, max delta, max
//! jitter and mean jitter.
//!
//! Jitter is RFC 3550 §6.4.1's interarrival jitter J += (|D| - J)/16, in milliseconds, where D
//! compares the arrival time difference with the RTP timestamp difference of the previous
//! in-order packet. Wireshark's "Mean Jitter" is the running mean of J over the regular packets
//! (not the first, not marker-bit packets, not comfort noise, not packets whose timestamp goes
//! back), divided by the count of packets before the current one; "Max Jitter" is the largest J
//! over the same packets. "Lost" is expected − received with
//! expected = last seq + 65536·cycles − first seq + 1 (negative with duplicates).

/// RTP payload type of comfort noise (RFC 3389), and the old value (RFC 1890).
const PT_CN: u8 = 13;
const PT_CN_OLD: u8 = 19;

/// The clock rate of a static payload type (RFC 3551 table 4/5), as Wireshark's
/// `get_clock_rate` has it; 0 for unknown and dynamic types.
pub fn static_clock_rate(pt: u8) -> u32 {
    match pt {
        0 | 3 | 4 | 5 | 7 | 8 | 9 | 12 | 13 | 15 | 18 => 8000,
        6 => 16000,
        10 | 11 => 44100,
        16 => 11025,
        17 => 22050,
        14 | 25 | 26 | 28 | 31 | 32 | 33 | 34 => 90000,
        _ => 0,
    }
}

/// The encoding name of a static payload type (RFC 3551).
pub fn static_codec_name(pt: u8) -> Option<&'static str> {
    Some(match pt {
        0 => "PCMU",
        3 => "GSM",
        4 => "G723",
        5 | 6 => "DVI4",
        7 => "LPC",
        8 => "PCMA",
        9 => "G722",
        10 | 11 => "L16",
        12 => "QCELP",
        13 => "CN",
        14 => "MPA",
        15 => "G728",
        16 | 17 => "DVI4",
        18 => "G729",
        26 => "JPEG",
        31 => "H261",
        32 => "MPV",
        33 => "MP2T",
        34 => "H263",
        _ => return None,
    })
}

/// The state Wireshark keeps per stream (`tap_rtp_stat_t`), reduced to what the table uses.
#[derive(Debug, Clone, Default)]
pub struct WiresharkStats {
    first_packet_done: bool,
    pub start_seq_nr: u16,
    pub stop_seq_nr: u16,
    seq_num: u16,
    pub seq_cycles: u32,
    under: bool,
    /// Extended timestamp of the last in-order packet.
    seq_timestamp: i64,
    /// Extended timestamp of the first packet.
    first_timestamp: i64,
    /// Arrival time (ms) of the last in-order packet.
    time: f64,
    pt: u8,
    pub delta: f64,
    pub max_delta: f64,
    pub jitter: f64,
    pub max_jitter: f64,
    pub mean_jitter: f64,
    pub diff: f64,
    /// Packets analysed (Wireshark's `total_nr`).
    pub total_nr: u32,
    /// Sequence errors: lost, late or duplicated (Wireshark's `sequence`).
    pub sequence: u32,
    pub clock_rate: u32,
    /// Timestamp went back relative to the last in-order packet.
    pub wrong_timestamp: u32,
}

/// The flags of one analysed packet.
#[derive(Debug, Clone, Copy, Default)]
pub struct PacketVerdict {
    pub regular: bool,
    pub wrong_seq: bool,
    pub in_time_sequence: bool,
}

impl WiresharkStats {
    /// Analyses one packet. `now_ms` is the arrival time in milliseconds (any fixed origin),
    /// `ext_ts` the extended (unwrapped) RTP timestamp, `clock_rate` 0 when unknown.
    // The branches mirror Wireshark's one for one, duplicates included.
    #[allow(clippy::if_same_then_else)]
    pub fn analyse(
        &mut self,
        now_ms: f64,
        seq: u16,
        ext_ts: i64,
        pt: u8,
        marker: bool,
        clock_rate: u32,
    ) -> PacketVerdict {
        if !self.first_packet_done {
            self.first_packet_done = true;
            self.start_seq_nr = seq;
            self.stop_seq_nr = seq;
            self.seq_num = seq;
            self.seq_timestamp = ext_ts;
            self.first_timestamp = ext_ts;
            self.time = now_ms;
            self.pt = pt;
            self.total_nr = 1;
            self.clock_rate = clock_rate;
            return PacketVerdict {
                regular: false,
                wrong_seq: false,
                in_time_sequence: true,
            };
        }
        // Wireshark 4.0 (the Debian 12 tshark): "in time sequence" is relative to the first
        // packet of the stream (later versions compare with the last in-order packet).
        let in_time_sequence = self.first_timestamp <= ext_ts;
        if !in_time_sequence {
            self.wrong_timestamp += 1;
        }
        // Sequence cycles (the same heuristic as Wireshark, including its limits).
        if seq < self.start_seq_nr && in_time_sequence && !self.under {
            self.seq_cycles += 1;
            self.under = true;
        } else if seq == 0 && self.stop_seq_nr == 65535 && in_time_sequence && !self.under {
            self.seq_cycles += 1;
            self.under = true;
        } else if seq > self.start_seq_nr && in_time_sequence && self.under {
            self.under = false;
        }
        // Wireshark does this arithmetic in unsigned int (promoted from guint16).
        let last = self.seq_num as u32;
        let cur = seq as u32;
        let mut wrong_seq = false;
        if in_time_sequence && last + 1 == cur {
            self.seq_num = seq;
        } else if in_time_sequence && last == 65535 && cur == 0 {
            self.seq_num = seq;
        } else if in_time_sequence && (last + 1 < cur || last.wrapping_sub(cur) > 0xFF00) {
            self.seq_num = seq;
            self.sequence += 1;
            wrong_seq = true;
        } else if last + 1 > cur {
            self.sequence += 1;
            wrong_seq = true;
        }
        let is_cn = pt == PT_CN || pt == PT_CN_OLD;
        let follow_cn = self.pt == PT_CN || self.pt == PT_CN_OLD;
        self.pt = pt;
        let mut current_jitter = 0.0;
        if clock_rate != 0 {
            self.clock_rate = clock_rate;
            // (clock_rate/1000) is an integer division in Wireshark's C.
            let per_ms = (clock_rate / 1000) as f64;
            let nominal_diff = (ext_ts - self.seq_timestamp) as f64 / per_ms;
            let expected_time = self.time + nominal_diff;
            let current_diff = (now_ms - expected_time).abs();
            current_jitter = (15.0 * self.jitter + current_diff) / 16.0;
            self.delta = now_ms - self.time;
            self.jitter = current_jitter;
            self.diff = current_diff;
        } else {
            self.delta = now_ms - self.time;
        }
        let regular = !marker && !is_cn && in_time_sequence && !follow_cn;
        if regular {
            if self.delta > self.max_delta {
                self.max_delta = self.delta;
            }
            if clock_rate != 0 {
                if self.jitter > self.max_jitter {
                    self.max_jitter = self.jitter;
                }
                let n = self.total_nr as f64;
                self.mean_jitter = (self.mean_jitter * (n - 1.0) + current_jitter) / n;
            }
        }
        if in_time_sequence {
            self.time = now_ms;
            self.seq_timestamp = ext_ts;
        }
        self.stop_seq_nr = seq;
        self.total_nr += 1;
        PacketVerdict {
            regular,
            wrong_seq,
            in_time_sequence,
        }
    }

    /// Expected packets, as Wireshark's `rtp,streams` computes them.
    pub fn expected(&self) -> i64 {
        if !self.first_packet_done {
            return 0;
        }
        self.stop_seq_nr as i64 + self.seq_cycles as i64 * 65536 - self.start_seq_nr as i64 + 1
    }

    /// Lost packets: expected − received (negative when packets were duplicated).
    pub fn lost(&self) -> i64 {
        self.expected() - self.total_nr as i64
    }
}

/// Unwraps 32-bit RTP timestamps into a monotonic-ish 64-bit value, as Wireshark's RTP
/// dissector does for `info_extended_timestamp`.
#[derive(Debug, Clone, Copy, Default)]
pub struct TimestampUnwrap {
    last: Option<i64>,
}

impl TimestampUnwrap {
    pub fn extend(&mut self, ts: u32) -> i64 {
        let ext = match self.last {
            None => ts as i64,
            Some(last) => last + (ts.wrapping_sub(last as u32) as i32) as i64,
        };
        // Keep the highest as reference so that a late packet does not move it back.
        self.last = Some(match self.last {
            Some(l) if l > ext => l,
            _ => ext,
        });
        ext
    }
}

/// Byte-value histogram of payloads: plaintext G.711 speech has a skewed distribution, an
/// encrypted payload a flat one (about 8 bits per byte).
#[derive(Debug, Clone)]
pub struct ByteEntropy {
    counts: Box<[u32; 256]>,
    total: u32,
}

impl Default for ByteEntropy {
    fn default() -> Self {
        ByteEntropy {
            counts: Box::new([0; 256]),
            total: 0,
        }
    }
}

/// Bytes looked at before the entropy verdict is taken.
pub const ENTROPY_SAMPLE: u32 = 16_000;

impl ByteEntropy {
    pub fn add(&mut self, bytes: &[u8]) {
        if self.total >= ENTROPY_SAMPLE {
            return;
        }
        for b in bytes {
            self.counts[*b as usize] += 1;
        }
        self.total += bytes.len() as u32;
    }

    pub fn total(&self) -> u32 {
        self.total
    }

    /// Shannon entropy in bits per byte.
    pub fn bits(&self) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        let n = self.total as f64;
        self.counts
            .iter()
            .filter(|c| **c > 0)
            .map(|c| {
                let p = *c as f64 / n;
                -p * p.log2()
            })
            .sum()
    }

    /// Whether the payloads look encrypted (or compressed beyond G.711).
    pub fn looks_random(&self) -> bool {
        // 2000+ bytes of uniform data give > 7.8 bits; G.711 speech rarely exceeds 7.
        self.total >= 2000 && self.bits() > 7.5
    }
}

/// Lag-1 autocorrelation of decoded G.711 samples: speech and tones are strongly correlated
/// from one sample to the next, decrypted-as-if-plain random bytes are not. A surer test than
/// byte entropy (loud speech in mu-law reaches 7+ bits per byte).
#[derive(Debug, Clone, Copy, Default)]
pub struct SampleCorrelation {
    n: u64,
    sum: f64,
    sum2: f64,
    sum_lag: f64,
    prev: Option<f64>,
}

/// Samples looked at before the plain/encrypted verdict.
pub const CORRELATION_SAMPLES: u64 = 2000;

impl SampleCorrelation {
    pub fn add(&mut self, samples: impl Iterator<Item = i16>) {
        for x in samples {
            let x = x as f64;
            if let Some(p) = self.prev {
                self.sum_lag += p * x;
            }
            self.prev = Some(x);
            self.sum += x;
            self.sum2 += x * x;
            self.n += 1;
        }
    }

    pub fn samples(&self) -> u64 {
        self.n
    }

    /// Whether the samples look like plaintext audio (correlated, or near silence).
    pub fn looks_plain(&self) -> bool {
        if self.n < 2 {
            return true;
        }
        let n = self.n as f64;
        let mean = self.sum / n;
        let var = self.sum2 / n - mean * mean;
        if var < 1e4 {
            // Quiet (|x| around 100 or less): random bytes decode to |x| up to 32124.
            return true;
        }
        let cov = self.sum_lag / (n - 1.0) - mean * mean;
        cov / var > 0.3
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds packets (seq, ts, arrival ms) at 8 kHz.
    fn run(pkts: &[(u16, u32, f64)]) -> WiresharkStats {
        let mut s = WiresharkStats::default();
        let mut u = TimestampUnwrap::default();
        for (seq, ts, t) in pkts {
            s.analyse(*t, *seq, u.extend(*ts), 0, false, 8000);
        }
        s
    }

    #[test]
    fn perfect_stream_has_no_jitter_or_loss() {
        let pkts: Vec<_> = (0..100u16)
            .map(|i| (i, i as u32 * 160, i as f64 * 20.0))
            .collect();
        let s = run(&pkts);
        assert_eq!(s.lost(), 0);
        assert_eq!(s.sequence, 0);
        assert_eq!(s.max_jitter, 0.0);
        assert!((s.max_delta - 20.0).abs() < 1e-9);
    }

    #[test]
    fn loss_and_wrap_are_counted_as_wireshark_does() {
        // Sequence numbers wrap at 65535; two packets lost.
        let pkts: Vec<_> = (0..20u32)
            .filter(|i| *i != 5 && *i != 12)
            .map(|i| ((65530 + i) as u16, i * 160, i as f64 * 20.0))
            .collect();
        let s = run(&pkts);
        assert_eq!(s.expected(), 20);
        assert_eq!(s.lost(), 2);
        assert_eq!(s.sequence, 2);
        assert_eq!(s.seq_cycles, 1);
    }

    #[test]
    fn one_late_packet_gives_rfc3550_jitter() {
        // The third packet is 8 ms late: D = 8, J = 8/16 = 0.5; the next is on time again
        // relative to its own timestamp: D = 8 (20 - 12 ms since the late one... measured
        // against the late arrival), J = (15*0.5 + 8)/16.
        let s = run(&[(0, 0, 0.0), (1, 160, 20.0), (2, 320, 48.0), (3, 480, 60.0)]);
        assert!((s.max_jitter - (15.0 * 0.5 + 8.0) / 16.0).abs() < 1e-9);
        // Mean over packets 2..4: (0 + 0.5 + 0.96875) / 3.
        assert!((s.mean_jitter - (0.0 + 0.5 + 0.96875) / 3.0).abs() < 1e-9);
    }

    #[test]
    fn a_late_packet_moves_the_reference_as_in_wireshark_4_0() {
        // Packet 3 arrives before packet 2: Wireshark 4.0 takes every packet whose timestamp
        // is not before the stream's first as "in time sequence", so the late one becomes
        // the reference of the next delta (70 ms here, not 60).
        let s = run(&[
            (0, 0, 0.0),
            (1, 160, 20.0),
            (3, 480, 60.0),
            (2, 320, 50.0),
            (4, 640, 120.0),
        ]);
        assert!((s.max_delta - 70.0).abs() < 1e-9, "{}", s.max_delta);
        assert_eq!(s.lost(), 0);
        assert_eq!(s.sequence, 2);
    }

    #[test]
    fn entropy_separates_random_from_speech_like_bytes() {
        let mut r = ByteEntropy::default();
        let mut x = 0x12345678u32;
        let rnd: Vec<u8> = (0..4000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        r.add(&rnd);
        assert!(r.looks_random());
        let mut g = ByteEntropy::default();
        let speech: Vec<u8> = (0..4000)
            .map(|i| voxgate_rtp::g711::ulaw_encode(((i as f64 * 0.05).sin() * 3000.0) as i16))
            .collect();
        g.add(&speech);
        assert!(!g.looks_random(), "{}", g.bits());
        let law = voxgate_rtp::g711::Law::Mu;
        let mut c = SampleCorrelation::default();
        c.add(rnd.iter().map(|b| law.decode(*b)));
        assert!(!c.looks_plain());
        let mut c = SampleCorrelation::default();
        c.add(speech.iter().map(|b| law.decode(*b)));
        assert!(c.looks_plain());
        let mut c = SampleCorrelation::default();
        c.add([0xffu8; 3000].iter().map(|b| law.decode(*b)));
        assert!(c.looks_plain());
    }
}
