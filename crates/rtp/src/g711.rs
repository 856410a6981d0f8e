//! ITU-T G.711 mu-law (PCMU, RTP payload type 0) and A-law (PCMA, 8) for 16-bit linear PCM,
//! as in the ITU-T G.191 reference code: mu-law on 14 bits with a bias of 33, A-law on 13 bits,
//! negative samples by their one's complement; decoders return the middle of each
//! quantization interval.

const SEG_UEND: [i32; 8] = [0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF];
const SEG_AEND: [i32; 8] = [0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF];

fn segment(v: i32, table: &[i32; 8]) -> usize {
    table.iter().position(|end| v <= *end).unwrap_or(8)
}

/// Linear 16-bit PCM to mu-law.
pub fn ulaw_encode(sample: i16) -> u8 {
    const BIAS: i32 = 0x84 >> 2;
    const CLIP: i32 = 8159;
    // ITU-T G.191 (the G.711 reference code): negative samples by their one's complement,
    // so that x and -1-x quantize symmetrically.
    let (mut v, mask): (i32, u8) = if sample < 0 {
        (!i32::from(sample) >> 2, 0x7F)
    } else {
        (i32::from(sample) >> 2, 0xFF)
    };
    v = v.min(CLIP) + BIAS;
    let seg = segment(v, &SEG_UEND);
    if seg >= 8 {
        return 0x7F ^ mask;
    }
    let u = ((seg as i32) << 4) | ((v >> (seg + 1)) & 0xF);
    (u as u8) ^ mask
}

/// Mu-law to linear 16-bit PCM.
pub fn ulaw_decode(code: u8) -> i16 {
    let u = !code;
    let mut t = (i32::from(u & 0x0F) << 3) + 0x84;
    t <<= (u & 0x70) >> 4;
    (if u & 0x80 != 0 { 0x84 - t } else { t - 0x84 }) as i16
}

/// Linear 16-bit PCM to A-law.
pub fn alaw_encode(sample: i16) -> u8 {
    let mut v = i32::from(sample) >> 3;
    let mask: u8 = if v >= 0 {
        0xD5
    } else {
        v = -v - 1;
        0x55
    };
    let seg = segment(v, &SEG_AEND);
    if seg >= 8 {
        return 0x7F ^ mask;
    }
    let mut a = (seg as i32) << 4;
    a |= if seg < 2 {
        (v >> 1) & 0xF
    } else {
        (v >> seg) & 0xF
    };
    (a as u8) ^ mask
}

/// A-law to linear 16-bit PCM.
pub fn alaw_decode(code: u8) -> i16 {
    let a = code ^ 0x55;
    let mut t = i32::from(a & 0x0F) << 4;
    let seg = (a & 0x70) >> 4;
    match seg {
        0 => t += 8,
        1 => t += 0x108,
        _ => {
            t += 0x108;
            t <<= seg - 1;
        }
    }
    (if a & 0x80 != 0 { t } else { -t }) as i16
}

/// The two G.711 laws by RTP payload type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Law {
    /// PCMU, payload type 0.
    Mu,
    /// PCMA, payload type 8.
    A,
}

impl Law {
    pub fn from_payload_type(pt: u8) -> Option<Law> {
        match pt {
            0 => Some(Law::Mu),
            8 => Some(Law::A),
            _ => None,
        }
    }

    pub fn payload_type(self) -> u8 {
        match self {
            Law::Mu => 0,
            Law::A => 8,
        }
    }

    pub fn encode(self, s: i16) -> u8 {
        match self {
            Law::Mu => ulaw_encode(s),
            Law::A => alaw_encode(s),
        }
    }

    pub fn decode(self, c: u8) -> i16 {
        match self {
            Law::Mu => ulaw_decode(c),
            Law::A => alaw_decode(c),
        }
    }

    /// What a sample sounds like after G.711: decode(encode(s)).
    pub fn quantize(self, s: i16) -> i16 {
        self.decode(self.encode(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_except_mu_law_negative_zero() {
        for c in 0..=255u8 {
            if c == 0x7F {
                // Mu-law has two zeros (0xFF and 0x7F); zero encodes as 0xFF.
                assert_eq!(ulaw_decode(c), 0);
                assert_eq!(ulaw_encode(0), 0xFF);
            } else {
                assert_eq!(ulaw_encode(ulaw_decode(c)), c, "mu-law code {c:#04x}");
            }
            assert_eq!(alaw_encode(alaw_decode(c)), c, "A-law code {c:#04x}");
        }
    }

    /// decode(encode(x)) is the reconstruction level of the interval x falls in: the nearest
    /// level of the 256 (ties aside), never further than half a step, and quantizing is
    /// idempotent and monotonic.
    #[test]
    fn decode_encode_is_the_g711_quantization() {
        for law in [Law::Mu, Law::A] {
            let mut levels: Vec<i32> = (0..=255u8).map(|c| i32::from(law.decode(c))).collect();
            levels.sort_unstable();
            levels.dedup();
            assert_eq!(levels.len(), if law == Law::Mu { 255 } else { 256 });
            let mut prev = i32::MIN;
            for x in i16::MIN..=i16::MAX {
                let y = i32::from(law.quantize(x));
                assert!(levels.binary_search(&y).is_ok());
                assert!(y >= prev, "{law:?} not monotonic at {x}");
                prev = y;
                assert_eq!(
                    law.quantize(y as i16) as i32,
                    y,
                    "{law:?} idempotent at {x}"
                );
                let nearest = levels
                    .iter()
                    .map(|l| (l - i32::from(x)).abs())
                    .min()
                    .unwrap_or(0);
                let err = (y - i32::from(x)).abs();
                // Within the top segment's range the error is at most half a step (plus the
                // bits dropped before encoding); beyond it the signal clips to the top level.
                let top = *levels.last().unwrap_or(&0);
                if i32::from(x).abs() <= top {
                    // The step of the segment the chosen code is in.
                    let c = law.encode(x);
                    let step = match law {
                        Law::Mu => 8 << ((!c & 0x70) >> 4),
                        Law::A => 8 << (((c ^ 0x55) & 0x70) >> 4).max(1),
                    };
                    assert!(
                        err <= step / 2 + 3 && err <= nearest + step / 2,
                        "{law:?} x={x} y={y} err={err} step={step}"
                    );
                }
            }
        }
        // Known points.
        assert_eq!(ulaw_encode(0), 0xFF);
        assert_eq!(alaw_encode(0), 0xD5);
        assert_eq!(ulaw_decode(0x00), -32124);
        assert_eq!(ulaw_decode(0x80), 32124);
        assert_eq!(alaw_decode(0xAA), 32256);
        assert_eq!(alaw_decode(0x2A), -32256);
    }
}
