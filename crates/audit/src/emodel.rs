//! Listening-quality estimate by the ITU-T G.107 E-model, with the default values of G.107
//! Table 3 and the equipment impairment factors of ITU-T G.113 Appendix I.
//!
//! R = R0 − Is − Id − Ie,eff + A, where with all defaults R0 − Is = 93.2 and A = 0 (wired).
//!
//! - Id (delay impairment), with echo perfectly cancelled (TELR at its default 65 dB), reduces
//!   to the Idd term of G.107 §7.3: for Ta ≤ 100 ms Idd = 0, otherwise
//!   Idd = 25·((1 + X⁶)^(1/6) − 3·(1 + (X/3)⁶)^(1/6) + 2) with X = log2(Ta/100).
//! - Ie,eff = Ie + (95 − Ie)·Ppl / (Ppl/BurstR + Bpl) (G.107 §7.5), with Ppl the packet loss in
//!   percent and BurstR = 1 (random loss).
//! - MOS = 1 + 0.035·R + R·(R − 60)·(100 − R)·7·10⁻⁶ for 0 < R < 100 (G.107 Annex B).
//!
//! Ta, the absolute one-way delay, is what the capture shows of the mouth-to-ear path: the
//! measured one-way network delay when the stream was captured at two points (0 otherwise),
//! plus the packetisation time, plus a jitter buffer of twice the mean jitter.

use serde::Serialize;

/// Codec parameters for the E-model (G.113 Appendix I, Table I.1 and I.3).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CodecImpairment {
    /// Equipment impairment factor without loss.
    pub ie: f64,
    /// Packet-loss robustness factor.
    pub bpl: f64,
}

/// Ie and Bpl for a codec name. G.711 without packet loss concealment: Ie = 0, Bpl = 4.3
/// (G.113 Appendix I, I.3); G.729A with VAD: Ie = 11, Bpl = 19; GSM-FR: Ie = 20, Bpl = 10
/// (G.113 has no Bpl for GSM-FR: an assumption); unknown codecs are scored as G.711.
pub fn codec_impairment(codec: &str) -> CodecImpairment {
    match codec.to_ascii_uppercase().as_str() {
        "PCMU" | "PCMA" => CodecImpairment { ie: 0.0, bpl: 4.3 },
        "G729" => CodecImpairment {
            ie: 11.0,
            bpl: 19.0,
        },
        "GSM" => CodecImpairment {
            ie: 20.0,
            bpl: 10.0,
        },
        "G723" => CodecImpairment {
            ie: 15.0,
            bpl: 16.1,
        },
        _ => CodecImpairment { ie: 0.0, bpl: 4.3 },
    }
}

/// R0 − Is with the default parameters of G.107 Table 3.
pub const R0_MINUS_IS: f64 = 93.2;

/// The delay impairment Idd of G.107 §7.3 for an absolute delay `ta_ms` (echo cancelled).
pub fn delay_impairment(ta_ms: f64) -> f64 {
    if ta_ms <= 100.0 {
        return 0.0;
    }
    let x = (ta_ms / 100.0).log2();
    25.0 * ((1.0 + x.powi(6)).powf(1.0 / 6.0) - 3.0 * (1.0 + (x / 3.0).powi(6)).powf(1.0 / 6.0)
        + 2.0)
}

/// The effective equipment impairment for `loss_pct` percent of random packet loss.
pub fn effective_equipment_impairment(c: CodecImpairment, loss_pct: f64) -> f64 {
    let ppl = loss_pct.clamp(0.0, 100.0);
    c.ie + (95.0 - c.ie) * ppl / (ppl + c.bpl)
}

/// The transmission rating factor R.
pub fn r_factor(c: CodecImpairment, loss_pct: f64, ta_ms: f64) -> f64 {
    R0_MINUS_IS - delay_impairment(ta_ms) - effective_equipment_impairment(c, loss_pct)
}

/// MOS-CQE from R (G.107 Annex B).
pub fn mos_from_r(r: f64) -> f64 {
    if r <= 0.0 {
        1.0
    } else if r >= 100.0 {
        4.5
    } else {
        1.0 + 0.035 * r + r * (r - 60.0) * (100.0 - r) * 7e-6
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn g711_without_impairment_is_the_g107_default() {
        let g711 = codec_impairment("PCMU");
        let r = r_factor(g711, 0.0, 0.0);
        assert!((r - 93.2).abs() < 1e-9);
        // G.107 Annex B: R = 93.2 gives MOS ≈ 4.41.
        assert!((mos_from_r(r) - 4.41).abs() < 0.01, "{}", mos_from_r(r));
    }

    #[test]
    fn loss_and_delay_lower_the_score_monotonically() {
        let g711 = codec_impairment("PCMA");
        let mut last = f64::MAX;
        for loss in [0.0, 1.0, 2.0, 5.0, 10.0, 20.0] {
            let m = mos_from_r(r_factor(g711, loss, 50.0));
            assert!(m < last);
            last = m;
        }
        // 1% loss without PLC already costs about 15 R points (0.5 MOS).
        assert!(effective_equipment_impairment(g711, 1.0) > 15.0);
        assert_eq!(delay_impairment(100.0), 0.0);
        assert!(delay_impairment(150.0) > 0.0 && delay_impairment(150.0) < 5.0);
        assert!(delay_impairment(400.0) > 20.0);
    }
}
