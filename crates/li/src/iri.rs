//! What a point of interception (the SPG) reports about an intercepted call, and the
//! interception-related information (IRI) records the mediation delivers to an agency.
//!
//! [`PoiEvent`]s travel from the SPG to the mediation as the JSON payload of X2 PDUs
//! ([`crate::x2x3`], MIME type [`POI_EVENT_MIME`]). The mediation turns them into [`IriRecord`]s
//! (X2 PDUs to the agency, MIME type [`IRI_MIME`], and lines of `iri.json`) after checking
//! them against its own warrants.
//!
//! Record types follow 3GPP TS 33.108 / ETSI TS 102 232-5: **BEGIN** opens the record
//! transaction of a call at its first event (the attempt); **CONTINUE** carries what follows
//! while it lasts (alerting, answer, re-INVITE, each key_update: first escrow and rekey);
//! **END** closes it (release, or the failure of the attempt); **REPORT** is an event outside a
//! call (a registration).

use serde::{Deserialize, Serialize};

/// MIME type of a [`PoiEvent`] in an X2 PDU from the SPG.
pub const POI_EVENT_MIME: &str = "application/vnd.voxgate.poi-event+json";
/// MIME type of an [`IriRecord`] in an X2 PDU to the agency.
pub const IRI_MIME: &str = "application/vnd.voxgate.iri+json";

/// One event of an intercepted call at the SPG, with the SPG's wall-clock time (Unix ms).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case", deny_unknown_fields)]
pub enum PoiEvent {
    /// A dialog-creating INVITE: who calls whom, through which of the SPG's trusted peers.
    Attempt {
        call_id: String,
        time_ms: u64,
        from_uri: String,
        to_uri: String,
        request_uri: String,
        /// The trusted peer (voice gateway, peer SPG) on the caller's side.
        caller_peer: Option<String>,
        /// The trusted peer on the callee's side.
        callee_peer: Option<String>,
    },
    Alerting {
        call_id: String,
        time_ms: u64,
        status: u16,
    },
    Answered {
        call_id: String,
        time_ms: u64,
    },
    Failed {
        call_id: String,
        time_ms: u64,
        status: u16,
    },
    Modified {
        call_id: String,
        time_ms: u64,
        method: String,
    },
    Ended {
        call_id: String,
        time_ms: u64,
    },
    /// A registration accepted by a voice gateway's registrar (outside any call): the address
    /// of record, its contacts, the Expires asked for (0: removal), the source address.
    Registration {
        time_ms: u64,
        aor: String,
        contacts: String,
        expires: Option<u32>,
        source: String,
    },
    /// A key_update the SPG accepted and stored: the stored row as is, keys sealed to the
    /// authority (the SPG cannot read them; only the mediation, for a warranted call, opens them).
    KeyUpdate {
        call_id: String,
        time_ms: u64,
        /// Hex, 16 digits.
        session_id: String,
        gateway: String,
        generation: u32,
        created_ms: u64,
        /// Base64 of the sealed record (`StoredSession::sealed`).
        sealed: String,
    },
}

impl PoiEvent {
    /// The call's Call-ID (empty for a registration).
    pub fn call_id(&self) -> &str {
        match self {
            PoiEvent::Registration { .. } => "",
            PoiEvent::Attempt { call_id, .. }
            | PoiEvent::Alerting { call_id, .. }
            | PoiEvent::Answered { call_id, .. }
            | PoiEvent::Failed { call_id, .. }
            | PoiEvent::Modified { call_id, .. }
            | PoiEvent::Ended { call_id, .. }
            | PoiEvent::KeyUpdate { call_id, .. } => call_id,
        }
    }

    pub fn time_ms(&self) -> u64 {
        match self {
            PoiEvent::Registration { time_ms, .. } => *time_ms,
            PoiEvent::Attempt { time_ms, .. }
            | PoiEvent::Alerting { time_ms, .. }
            | PoiEvent::Answered { time_ms, .. }
            | PoiEvent::Failed { time_ms, .. }
            | PoiEvent::Modified { time_ms, .. }
            | PoiEvent::Ended { time_ms, .. }
            | PoiEvent::KeyUpdate { time_ms, .. } => *time_ms,
        }
    }
}

/// IRI record type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum IriType {
    Begin,
    Continue,
    End,
    Report,
}

/// One IRI record as delivered to the agency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IriRecord {
    pub liid: String,
    /// Links the IRI and the content of one call (hex of the X2/X3 correlation ID).
    pub correlation_id: String,
    /// Per LIID and call: 0 for BEGIN, +1 per record.
    pub seq: u64,
    #[serde(rename = "type")]
    pub iri_type: IriType,
    /// attempt, alerting, answer, modify, key_update, rekey, release, failed.
    pub event: String,
    pub time_ms: u64,
    /// The SPG that observed it.
    pub poi: String,
    pub caller: String,
    pub callee: String,
    /// The trusted peers on each side (voice gateways, peer SPGs).
    pub caller_peer: Option<String>,
    pub callee_peer: Option<String>,
    /// The warrant's target identifier that matched, and as whom (caller, callee, gateway).
    pub target: String,
    pub matched_as: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub session_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub gateway: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub generation: Option<u32>,
    /// REPORT of a registration: the contacts, the Expires asked for, the source address.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub contacts: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub expires: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub source: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poi_event_json_is_tagged_and_strict() {
        let e = PoiEvent::Failed {
            call_id: "c1".into(),
            time_ms: 5,
            status: 486,
        };
        let j = serde_json::to_string(&e).unwrap();
        assert_eq!(
            j,
            r#"{"event":"failed","call_id":"c1","time_ms":5,"status":486}"#
        );
        assert_eq!(serde_json::from_str::<PoiEvent>(&j).unwrap(), e);
        assert!(serde_json::from_str::<PoiEvent>(
            r#"{"event":"failed","call_id":"c1","time_ms":5,"status":486,"x":1}"#
        )
        .is_err());
    }
}
