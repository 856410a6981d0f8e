//! The audit log of a lawful-interception node (SPG or mediation): one JSON line per event
//! (key_update, warrant change, approval, key unseal, delivery), chained and signed so that no
//! entry can be edited, removed, inserted or moved without [`verify`] saying where.
//!
//! Each entry carries its sequence number, the previous entry's hash and its own:
//!
//! ```text
//! hash = SHA-256("voxgate-audit-v1" 0x00 || seq (u64 BE) || time_ms (u64 BE)
//!                || len(node) (u32 BE) || node || len(event) (u32 BE) || event
//!                || len(fields) (u32 BE) || fields (compact JSON, keys sorted) || prev)
//! sig  = Ed25519(node key, hash)
//! ```
//!
//! The first entry's `prev` is 32 zero bytes. A verifier holding the node's public key checks,
//! line by line, that the sequence numbers follow, that `prev` is the previous hash (an entry
//! removed or inserted breaks it), that the hash is the hash of the entry (an edit breaks it)
//! and that the signature is the node's (a rewritten chain breaks it). Dropping the last
//! entries keeps a valid chain: the node also keeps a signed **head** (the last sequence number
//! and hash, [`Head`]), to be kept or shipped elsewhere, against which the tail is checked.

use std::collections::BTreeMap;

use aws_lc_rs::digest;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};

const DOMAIN: &[u8] = b"voxgate-audit-v1\0";
const HEAD_DOMAIN: &[u8] = b"voxgate-audit-head-v1\0";

/// One entry, as written (one JSON line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub seq: u64,
    pub time_ms: u64,
    pub node: String,
    pub event: String,
    /// What happened (never key material).
    pub fields: BTreeMap<String, serde_json::Value>,
    /// Hex of the previous entry's hash.
    pub prev: String,
    /// Hex of this entry's hash.
    pub hash: String,
    /// Base64 of the node's Ed25519 signature over the hash.
    pub sig: String,
}

/// The last entry of a log, signed: what a verifier checks the tail against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Head {
    pub node: String,
    /// Entries in the log (the last one's seq + 1).
    pub count: u64,
    pub hash: String,
    pub sig: String,
}

/// Why a log does not verify, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    #[error("line {line}: not an audit entry ({reason})")]
    Malformed { line: usize, reason: String },
    #[error("line {line}: entry {got} where entry {expected} should be (removed, inserted or reordered entries)")]
    Sequence {
        line: usize,
        expected: u64,
        got: u64,
    },
    #[error("line {line} (entry {seq}): does not follow the entry before it (an entry was removed, inserted or replaced)")]
    BrokenChain { line: usize, seq: u64 },
    #[error("line {line} (entry {seq}): its content does not match its hash (edited)")]
    Edited { line: usize, seq: u64 },
    #[error("line {line} (entry {seq}): the signature is not the node's")]
    BadSignature { line: usize, seq: u64 },
    #[error("the head is not signed by the node")]
    BadHead,
    #[error(
        "the log ends at {count} entries but its signed head says {head} (entries cut off the end)"
    )]
    Truncated { count: u64, head: u64 },
    #[error("the log's last hash differs from its signed head")]
    HeadMismatch,
    #[error("the node's key: {0}")]
    Key(String),
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn entry_hash(
    seq: u64,
    time_ms: u64,
    node: &str,
    event: &str,
    fields: &BTreeMap<String, serde_json::Value>,
    prev: &[u8; 32],
) -> [u8; 32] {
    let f = serde_json::to_vec(fields).unwrap_or_default();
    let mut c = digest::Context::new(&digest::SHA256);
    c.update(DOMAIN);
    c.update(&seq.to_be_bytes());
    c.update(&time_ms.to_be_bytes());
    for part in [node.as_bytes(), event.as_bytes(), &f] {
        c.update(&(part.len() as u32).to_be_bytes());
        c.update(part);
    }
    c.update(prev);
    let mut out = [0u8; 32];
    out.copy_from_slice(c.finish().as_ref());
    out
}

fn head_message(node: &str, count: u64, hash: &str) -> Vec<u8> {
    let mut m = HEAD_DOMAIN.to_vec();
    m.extend_from_slice(&(node.len() as u32).to_be_bytes());
    m.extend_from_slice(node.as_bytes());
    m.extend_from_slice(&count.to_be_bytes());
    m.extend_from_slice(hash.as_bytes());
    m
}

fn unhex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The node's signing key (Ed25519, PKCS#8).
pub struct NodeKey(Ed25519KeyPair);

impl std::fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NodeKey({})", self.public_hex())
    }
}

impl NodeKey {
    /// A fresh key, and its PKCS#8 encoding (to store, mode 0600).
    pub fn generate() -> Result<(NodeKey, Vec<u8>), AuditError> {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let doc =
            Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| AuditError::Key("generate".into()))?;
        let key = Self::from_pkcs8(doc.as_ref())?;
        Ok((key, doc.as_ref().to_vec()))
    }

    pub fn from_pkcs8(der: &[u8]) -> Result<NodeKey, AuditError> {
        Ed25519KeyPair::from_pkcs8(der)
            .map(NodeKey)
            .map_err(|e| AuditError::Key(e.to_string()))
    }

    /// The public key, hex (what a verifier is given).
    pub fn public_hex(&self) -> String {
        hex(self.0.public_key().as_ref())
    }
}

/// Appends entries to a log: keeps the chain's state (next seq, last hash).
#[derive(Debug)]
pub struct AuditLog {
    node: String,
    key: NodeKey,
    seq: u64,
    prev: [u8; 32],
}

impl AuditLog {
    /// A new, empty log.
    pub fn new(node: &str, key: NodeKey) -> AuditLog {
        AuditLog {
            node: node.to_string(),
            key,
            seq: 0,
            prev: [0; 32],
        }
    }

    /// Continues an existing log (its lines verified with the node's own key first).
    pub fn resume(node: &str, key: NodeKey, text: &str) -> Result<AuditLog, AuditError> {
        let public = key.public_hex();
        let summary = verify(text, &public, None)?;
        let prev = summary
            .last_hash
            .as_deref()
            .and_then(unhex32)
            .unwrap_or([0; 32]);
        Ok(AuditLog {
            node: node.to_string(),
            key,
            seq: summary.count,
            prev,
        })
    }

    /// Entries written so far.
    pub fn count(&self) -> u64 {
        self.seq
    }

    /// A new entry (to append to the log file as one line, with a newline).
    pub fn append(
        &mut self,
        time_ms: u64,
        event: &str,
        fields: BTreeMap<String, serde_json::Value>,
    ) -> Entry {
        let hash = entry_hash(self.seq, time_ms, &self.node, event, &fields, &self.prev);
        let sig = self.key.0.sign(&hash);
        let e = Entry {
            seq: self.seq,
            time_ms,
            node: self.node.clone(),
            event: event.to_string(),
            fields,
            prev: hex(&self.prev),
            hash: hex(&hash),
            sig: B64.encode(sig.as_ref()),
        };
        self.seq += 1;
        self.prev = hash;
        e
    }

    /// The signed head of the log as it is now.
    pub fn head(&self) -> Head {
        let hash = hex(&self.prev);
        let sig = self.key.0.sign(&head_message(&self.node, self.seq, &hash));
        Head {
            node: self.node.clone(),
            count: self.seq,
            hash,
            sig: B64.encode(sig.as_ref()),
        }
    }
}

/// What a verified log holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub count: u64,
    pub last_hash: Option<String>,
    /// Entries per event name.
    pub events: BTreeMap<String, u64>,
}

fn verify_sig(public: &[u8], msg: &[u8], sig_b64: &str) -> bool {
    let Ok(sig) = B64.decode(sig_b64) else {
        return false;
    };
    UnparsedPublicKey::new(&ED25519, public)
        .verify(msg, &sig)
        .is_ok()
}

fn public_bytes(public_hex: &str) -> Result<Vec<u8>, AuditError> {
    let b: Option<Vec<u8>> = (0..public_hex.len() / 2)
        .map(|i| u8::from_str_radix(public_hex.get(2 * i..2 * i + 2)?, 16).ok())
        .collect();
    match b {
        Some(b) if b.len() == 32 => Ok(b),
        _ => Err(AuditError::Key(
            "the public key must be 64 hex digits".into(),
        )),
    }
}

/// Verifies a whole log (JSON lines) against the node's public key (hex), and its tail
/// against `head` when given.
pub fn verify(text: &str, public_hex: &str, head: Option<&Head>) -> Result<Summary, AuditError> {
    let public = public_bytes(public_hex)?;
    let mut prev = [0u8; 32];
    let mut count = 0u64;
    let mut events = BTreeMap::new();
    let mut last_hash = None;
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let e: Entry = serde_json::from_str(line).map_err(|err| AuditError::Malformed {
            line: n,
            reason: err.to_string(),
        })?;
        if e.seq != count {
            return Err(AuditError::Sequence {
                line: n,
                expected: count,
                got: e.seq,
            });
        }
        if unhex32(&e.prev) != Some(prev) {
            return Err(AuditError::BrokenChain {
                line: n,
                seq: e.seq,
            });
        }
        let hash = entry_hash(e.seq, e.time_ms, &e.node, &e.event, &e.fields, &prev);
        if unhex32(&e.hash) != Some(hash) {
            return Err(AuditError::Edited {
                line: n,
                seq: e.seq,
            });
        }
        if !verify_sig(&public, &hash, &e.sig) {
            return Err(AuditError::BadSignature {
                line: n,
                seq: e.seq,
            });
        }
        *events.entry(e.event.clone()).or_default() += 1;
        prev = hash;
        last_hash = Some(e.hash);
        count += 1;
    }
    if let Some(h) = head {
        if !verify_sig(&public, &head_message(&h.node, h.count, &h.hash), &h.sig) {
            return Err(AuditError::BadHead);
        }
        if count < h.count {
            return Err(AuditError::Truncated {
                count,
                head: h.count,
            });
        }
        if count == h.count && h.count > 0 && last_hash.as_deref() != Some(h.hash.as_str()) {
            return Err(AuditError::HeadMismatch);
        }
    }
    Ok(Summary {
        count,
        last_hash,
        events,
    })
}

/// Builds the fields of an entry from pairs.
pub fn fields<const N: usize>(
    pairs: [(&str, serde_json::Value); N],
) -> BTreeMap<String, serde_json::Value> {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn log(n: u64) -> (String, String, Head) {
        let (key, _) = NodeKey::generate().unwrap();
        let public = key.public_hex();
        let mut l = AuditLog::new("spg.a.example", key);
        let mut text = String::new();
        for i in 0..n {
            let e = l.append(
                1_000 + i,
                if i % 2 == 0 { "key_update" } else { "warrant" },
                fields([("session_id", json!(format!("{i:#x}"))), ("n", json!(i))]),
            );
            text.push_str(&serde_json::to_string(&e).unwrap());
            text.push('\n');
        }
        (text, public, l.head())
    }

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(str::to_string).collect()
    }

    #[test]
    fn an_intact_log_verifies_and_counts() {
        let (text, public, head) = log(6);
        let s = verify(&text, &public, Some(&head)).unwrap();
        assert_eq!(s.count, 6);
        assert_eq!(s.events["key_update"], 3);
    }

    #[test]
    fn every_tampering_is_found_and_located() {
        let (text, public, head) = log(6);
        let l = lines(&text);
        // An edited field.
        let edited = text.replace("\"n\":3", "\"n\":30");
        assert!(matches!(
            verify(&edited, &public, None),
            Err(AuditError::Edited { seq: 3, .. })
        ));
        // A removed entry.
        let removed = [&l[..2], &l[3..]].concat().join("\n");
        assert!(matches!(
            verify(&removed, &public, None),
            Err(AuditError::Sequence {
                expected: 2,
                got: 3,
                ..
            })
        ));
        // Two entries swapped.
        let mut swapped = l.clone();
        swapped.swap(1, 2);
        assert!(matches!(
            verify(&swapped.join("\n"), &public, None),
            Err(AuditError::Sequence {
                expected: 1,
                got: 2,
                ..
            })
        ));
        // An entry inserted after entry 1, chained correctly by someone without the node's
        // key: its signature fails; the entry that followed it no longer follows.
        let first: Entry = serde_json::from_str(&l[1]).unwrap();
        let (rogue_key, _) = NodeKey::generate().unwrap();
        let mut rogue_log = AuditLog {
            node: "spg.a.example".into(),
            key: rogue_key,
            seq: 2,
            prev: unhex32(&first.hash).unwrap(),
        };
        let forged = rogue_log.append(1_001, "key_update", fields([("n", json!(99))]));
        let mut inserted = l[..2].to_vec();
        inserted.push(serde_json::to_string(&forged).unwrap());
        inserted.extend_from_slice(&l[2..]);
        assert!(matches!(
            verify(&inserted.join("\n"), &public, None),
            Err(AuditError::BadSignature { seq: 2, .. })
        ));
        let mut renumbered: Entry = serde_json::from_str(&l[2]).unwrap();
        renumbered.seq = 3;
        let mut after = l[..2].to_vec();
        after.push(serde_json::to_string(&forged).unwrap());
        after.push(serde_json::to_string(&renumbered).unwrap());
        assert!(matches!(
            verify(&after.join("\n"), &public, None),
            Err(AuditError::BadSignature { seq: 2, .. })
        ));
        // A chain rewritten from entry 4 on by someone without the node's key.
        let (key2, _) = NodeKey::generate().unwrap();
        let mut rogue = AuditLog::new("spg.a.example", key2);
        let mut fake = Vec::new();
        for i in 0..5u64 {
            let e = rogue.append(1_000 + i, "key_update", fields([("n", json!(i))]));
            fake.push(serde_json::to_string(&e).unwrap());
        }
        assert!(matches!(
            verify(&fake.join("\n"), &public, None),
            Err(AuditError::BadSignature { seq: 0, .. })
        ));
        // The tail cut off: the chain still holds, the signed head does not.
        let cut = l[..4].join("\n");
        assert!(verify(&cut, &public, None).is_ok());
        assert_eq!(
            verify(&cut, &public, Some(&head)),
            Err(AuditError::Truncated { count: 4, head: 6 })
        );
        // A head not from the node.
        let mut bad = head.clone();
        bad.count = 4;
        assert_eq!(verify(&cut, &public, Some(&bad)), Err(AuditError::BadHead));
        // Garbage.
        assert!(matches!(
            verify("{\"seq\":", &public, None),
            Err(AuditError::Malformed { line: 1, .. })
        ));
    }

    #[test]
    fn a_log_is_resumed_where_it_ended() {
        let (key, der) = NodeKey::generate().unwrap();
        let public = key.public_hex();
        let mut l = AuditLog::new("li", key);
        let mut text = String::new();
        for i in 0..3 {
            text.push_str(&serde_json::to_string(&l.append(i, "approval", fields([]))).unwrap());
            text.push('\n');
        }
        let mut l2 = AuditLog::resume("li", NodeKey::from_pkcs8(&der).unwrap(), &text).unwrap();
        assert_eq!(l2.count(), 3);
        text.push_str(&serde_json::to_string(&l2.append(9, "unseal", fields([]))).unwrap());
        assert_eq!(verify(&text, &public, Some(&l2.head())).unwrap().count, 4);
    }
}
