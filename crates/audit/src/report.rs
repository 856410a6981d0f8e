//! The audit report (serialised as report.json, rendered as report.html).

use serde::Serialize;
use std::collections::BTreeMap;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Critical,
    High,
    Medium,
    Low,
    Info,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::High => "high",
            Severity::Medium => "medium",
            Severity::Low => "low",
            Severity::Info => "info",
        }
    }
}

/// One thing the capture exposes.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub severity: Severity,
    /// Stable identifier: `unencrypted_rtp`, `sdes_keys_in_clear`, `sip_digest_md5`,
    /// `sip_basic_auth`, `sip_without_tls`, `srtp_null_cipher`, `poor_quality`,
    /// `capture_damaged`.
    pub kind: &'static str,
    pub title: String,
    pub detail: String,
    /// Streams (by id) the finding is about.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub streams: Vec<usize>,
    /// Files in the output directory that prove it (recovered audio).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<String>,
    /// Extra facts (counts, user names, suites; never key material or passwords).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub evidence: BTreeMap<String, serde_json::Value>,
}

/// One second of a stream.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SecondStats {
    /// Seconds since the start of the capture.
    pub t: u32,
    pub packets: u32,
    pub lost: i64,
    pub max_jitter_ms: f64,
    pub mean_jitter_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct DelayStats {
    /// The stream (same SSRC, captured at another point) the delay is measured from.
    pub reference_stream: usize,
    pub samples: u64,
    pub min_ms: f64,
    pub mean_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct MosEstimate {
    pub r_factor: f64,
    pub mos: f64,
    /// The inputs: absolute delay Ta, loss, and the codec's Ie and Bpl.
    pub ta_ms: f64,
    pub loss_pct: f64,
    pub ie: f64,
    pub bpl: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct SrtpStats {
    /// Packets that authenticated with a key taken from the capture.
    pub authenticated: u64,
    pub auth_failures: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct AudioInfo {
    pub file: String,
    pub samples: u64,
    pub seconds: f64,
    /// Samples of silence inserted for lost packets and gaps.
    pub concealed_samples: u64,
}

/// One RTP stream (one SSRC in one direction between two transport addresses).
#[derive(Debug, Clone, Serialize)]
pub struct StreamReport {
    pub id: usize,
    pub src: String,
    pub dst: String,
    pub ssrc: String,
    pub payload_type: u8,
    pub codec: String,
    pub clock_rate: u32,
    /// `sdp` when SIP/SDP announced it, `heuristic` when found without signalling.
    pub found_by: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call_id: Option<String>,
    /// `plain`, `srtp`, `srtp-decrypted` (with keys from the capture), `srtp-null-cipher`.
    pub encryption: &'static str,
    pub packets: u64,
    pub expected: i64,
    pub lost: i64,
    pub lost_pct: f64,
    pub sequence_errors: u32,
    pub max_delta_ms: f64,
    pub max_jitter_ms: f64,
    pub mean_jitter_ms: f64,
    pub first_seen_s: f64,
    pub last_seen_s: f64,
    pub payload_entropy_bits: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub one_way_delay: Option<DelayStats>,
    pub mos: MosEstimate,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub srtp: Option<SrtpStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audio: Option<AudioInfo>,
    pub per_second: Vec<SecondStats>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct CaptureSummary {
    pub frames: u64,
    pub bytes: u64,
    pub duration_s: f64,
    pub udp_datagrams: u64,
    pub tcp_segments: u64,
    pub rtp_packets: u64,
    pub rtcp_packets: u64,
    pub other_udp: u64,
    pub ip_fragments_reassembled: u64,
    pub frames_cut_at_snaplen: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct SipSummary {
    pub messages_udp: u64,
    pub messages_tcp: u64,
    pub parse_errors: u64,
    pub calls: Vec<CallReport>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CallReport {
    pub call_id: String,
    pub from: String,
    pub to: String,
    pub transport: &'static str,
    pub sdes_keys: usize,
    pub streams: Vec<usize>,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub tool: &'static str,
    pub version: &'static str,
    pub capture: CaptureSummary,
    /// Frames skipped, by reason.
    pub skipped: BTreeMap<&'static str, u64>,
    /// Why reading stopped early (truncated or corrupt capture), if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capture_error: Option<String>,
    pub sip: SipSummary,
    pub streams: Vec<StreamReport>,
    pub findings: Vec<Finding>,
    /// Limits that were reached (streams not tracked, audio dropped...).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub limits_reached: BTreeMap<&'static str, u64>,
    pub mos_model: &'static str,
}
