//! voxgate-keystore: the SPG's `session_key` table at rest.
//!
//! Every escrowed session is stored as a [`StoredSession`]: its identity (session_ID, gateway,
//! Call-ID, generation), times, the non-secret stream tuples the SPG needs to re-arm its checks
//! after a restart, and the key material **only** as an HPKE record sealed to the
//! lawful-intercept authority ([`seal_session`], [`open_session`]). Neither a stolen disk nor the
//! SPG's operator can read the keys.
//!
//! Storage is behind [`KeyStore`], with two backends that pass the same tests:
//! - [`SqliteStore`]: embedded, the default (WAL, `synchronous=FULL`, file mode 0600);
//! - [`PgStore`]: PostgreSQL, one table shared by several SPG nodes.
//!
//! # Rekeys
//!
//! Rows are keyed by (session_ID, generation) and **all generations are kept** until the
//! session is purged: media recorded before a rekey can only be decrypted with the keys of its
//! generation. The live view ([`KeyStore::get`], [`KeyStore::list_live`]) shows the highest
//! generation of each session; [`KeyStore::generations`] returns them all.
//!
//! # Schema (both backends; `BLOB` is `BYTEA` in PostgreSQL)
//!
//! ```sql
//! CREATE TABLE keystore_schema (version BIGINT NOT NULL);        -- one row: SCHEMA_VERSION
//! CREATE TABLE session_key (
//!     session_id BIGINT NOT NULL,   -- the u64 session_ID's bit pattern as i64
//!     generation BIGINT NOT NULL,   -- u32
//!     gateway    TEXT   NOT NULL,
//!     call_id    TEXT   NOT NULL,
//!     created_ms BIGINT NOT NULL,   -- ms since the Unix epoch, 0..=i64::MAX
//!     ended_ms   BIGINT,            -- NULL while live; set on every generation
//!     sealed     BLOB   NOT NULL,   -- SealedRecord::to_bytes() of the CBOR streams
//!     tuples     BLOB   NOT NULL,   -- CBOR of the StreamTuples (non-secret), may be empty
//!     PRIMARY KEY (session_id, generation)
//! );
//! CREATE INDEX session_key_ended ON session_key (ended_ms);
//! ```
#![forbid(unsafe_code)]

mod pg;
mod sealing;
mod sqlite;

pub use pg::PgStore;
pub use sealing::{decode_tuples, open_session, seal_session, session_aad, StreamTuple};
pub use sqlite::SqliteStore;

use voxgate_escrow::seal::SealError;

/// Version of the schema this build writes and reads.
pub const SCHEMA_VERSION: i64 = 1;

/// The columns of `session_key`, in the order the backends read them.
pub(crate) const COLUMNS: &str =
    "session_id, generation, gateway, call_id, created_ms, ended_ms, sealed, tuples";

/// The schema, the same for both backends but for the name of the byte-string type
/// (`BLOB` in SQLite, `BYTEA` in PostgreSQL).
pub(crate) fn schema_sql(bytes_type: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS keystore_schema (version BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS session_key (
    session_id BIGINT NOT NULL,
    generation BIGINT NOT NULL,
    gateway    TEXT   NOT NULL,
    call_id    TEXT   NOT NULL,
    created_ms BIGINT NOT NULL,
    ended_ms   BIGINT,
    sealed     {bytes_type} NOT NULL,
    tuples     {bytes_type} NOT NULL,
    PRIMARY KEY (session_id, generation)
);
CREATE INDEX IF NOT EXISTS session_key_ended ON session_key (ended_ms);
"
    )
}

/// One generation of one escrowed session, as stored. Nothing secret in clear: the key
/// material is only inside `sealed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSession {
    pub session_id: u64,
    pub gateway: String,
    pub call_id: String,
    /// 0 for the first key_update, +1 per rekey.
    pub generation: u32,
    pub created_ms: u64,
    /// When the session ended (`None` while live).
    pub ended_ms: Option<u64>,
    /// [`SealedRecord::to_bytes`](voxgate_escrow::seal::SealedRecord::to_bytes) of the
    /// CBOR-encoded `Vec<StreamKey>`, sealed with the aad of [`session_aad`].
    pub sealed: Vec<u8>,
    /// Non-secret: CBOR of the [`StreamTuple`]s (addresses, SSRCs, suites); may be empty.
    pub tuples: Vec<u8>,
}

/// Errors of the key store. A row that cannot be decoded gives [`StoreError::CorruptRow`],
/// never a panic.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("keystore {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("keystore sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("keystore postgresql: {}", pg::describe(.0))]
    Postgres(#[from] postgres::Error),
    #[error(
        "keystore schema version {found} is not supported by this build (supports {supported})"
    )]
    SchemaVersion { found: i64, supported: i64 },
    #[error("corrupt session_key row (session_id {session_id:#018x}): {reason}")]
    CorruptRow { session_id: u64, reason: String },
    #[error(
        "session_id {session_id:#018x} is already stored for another gateway or Call-ID: refused"
    )]
    IdentityConflict { session_id: u64 },
    #[error("{field} = {value} is out of range (at most {max})")]
    OutOfRange {
        field: &'static str,
        value: u64,
        max: u64,
    },
    #[error(
        "invalid PostgreSQL schema name {0:?}: use 1-63 of [a-z0-9_], not starting with a digit"
    )]
    InvalidSchemaName(String),
    #[error("sealed session keys: {0}")]
    Seal(#[from] SealError),
    #[error("CBOR {what}: {reason}")]
    Cbor { what: &'static str, reason: String },
}

/// The SPG's persistent `session_key` table. Synchronous: the SPG calls it off the packet path.
///
/// `purge_ended_before` takes `&dyn Fn` rather than `impl Fn` so that the trait stays usable as
/// `Box<dyn KeyStore>`.
pub trait KeyStore: Send {
    /// Inserts or replaces the row (`session_id`, `generation`). Idempotent: putting the same
    /// record again leaves one row. A record whose `ended_ms` is `None` does not revive an
    /// ended session (the stored end stays). A session_ID already stored under another gateway
    /// or Call-ID is refused ([`StoreError::IdentityConflict`]). Returns once the row is
    /// durable (committed; SQLite: fsynced).
    fn put(&mut self, rec: &StoredSession) -> Result<(), StoreError>;

    /// The highest generation of the session, ended or not.
    fn get(&mut self, session_id: u64) -> Result<Option<StoredSession>, StoreError>;

    /// Every stored generation of the session, lowest first.
    fn generations(&mut self, session_id: u64) -> Result<Vec<StoredSession>, StoreError>;

    /// The highest generation of every session that has not ended, by session_ID.
    fn list_live(&mut self) -> Result<Vec<StoredSession>, StoreError>;

    /// Marks every generation of the session ended at `ended_ms` (an earlier end is kept).
    /// Returns whether the session is stored.
    fn mark_ended(&mut self, session_id: u64, ended_ms: u64) -> Result<bool, StoreError>;

    /// Retention: deletes every generation of each session that ended before `ms`, unless
    /// `keep` (called with the session's highest generation) returns true, as for a session
    /// that matched a warrant. Returns the number of sessions deleted.
    fn purge_ended_before(
        &mut self,
        ms: u64,
        keep: &dyn Fn(&StoredSession) -> bool,
    ) -> Result<usize, StoreError>;

    /// Number of sessions stored (ended or not; not counting generations).
    fn count(&mut self) -> Result<u64, StoreError>;
}

// ---------------------------------------------------------------------------------------------
// Shared between the backends

pub(crate) const MAX_MS: u64 = i64::MAX as u64;

/// A u64 session_ID as the i64 with the same bits (the column is a signed BIGINT).
pub(crate) fn id_to_db(id: u64) -> i64 {
    i64::from_ne_bytes(id.to_ne_bytes())
}

pub(crate) fn id_from_db(v: i64) -> u64 {
    u64::from_ne_bytes(v.to_ne_bytes())
}

pub(crate) fn ms_to_db(field: &'static str, ms: u64) -> Result<i64, StoreError> {
    i64::try_from(ms).map_err(|_| StoreError::OutOfRange {
        field,
        value: ms,
        max: MAX_MS,
    })
}

/// Checks a record before writing it.
pub(crate) fn check_record(rec: &StoredSession) -> Result<(i64, Option<i64>), StoreError> {
    let created = ms_to_db("created_ms", rec.created_ms)?;
    let ended = rec.ended_ms.map(|e| ms_to_db("ended_ms", e)).transpose()?;
    Ok((created, ended))
}

/// The columns of a row as read, before validation.
pub(crate) struct RawRow {
    pub session_id: i64,
    pub generation: i64,
    pub gateway: String,
    pub call_id: String,
    pub created_ms: i64,
    pub ended_ms: Option<i64>,
    pub sealed: Vec<u8>,
    pub tuples: Vec<u8>,
}

impl RawRow {
    pub(crate) fn into_session(self) -> Result<StoredSession, StoreError> {
        let session_id = id_from_db(self.session_id);
        let corrupt = |reason: String| StoreError::CorruptRow { session_id, reason };
        let generation = u32::try_from(self.generation)
            .map_err(|_| corrupt(format!("generation {} out of range", self.generation)))?;
        let created_ms = u64::try_from(self.created_ms)
            .map_err(|_| corrupt(format!("created_ms {} is negative", self.created_ms)))?;
        let ended_ms = self
            .ended_ms
            .map(|e| u64::try_from(e).map_err(|_| corrupt(format!("ended_ms {e} is negative"))))
            .transpose()?;
        if let Err(e) = voxgate_escrow::seal::SealedRecord::from_bytes(&self.sealed) {
            return Err(corrupt(format!("sealed column: {e}")));
        }
        Ok(StoredSession {
            session_id,
            gateway: self.gateway,
            call_id: self.call_id,
            generation,
            created_ms,
            ended_ms,
            sealed: self.sealed,
            tuples: self.tuples,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_keep_their_bits() {
        for id in [0, 1, u64::MAX, 1 << 63, 0x8000_0000_0000_0001] {
            assert_eq!(id_from_db(id_to_db(id)), id);
        }
        assert_eq!(id_to_db(u64::MAX), -1);
    }

    #[test]
    fn times_past_i64_are_refused() {
        assert!(matches!(
            ms_to_db("created_ms", u64::MAX),
            Err(StoreError::OutOfRange { .. })
        ));
        assert_eq!(ms_to_db("created_ms", MAX_MS).unwrap(), i64::MAX);
    }
}
