//! The shared backend: the `session_key` table in PostgreSQL, one table for several SPG nodes.
//! Synchronous client without TLS (loopback or a Unix socket).

use postgres::{Client, NoTls, Row};

use crate::{
    check_record, id_to_db, ms_to_db, schema_sql, KeyStore, RawRow, StoreError, StoredSession,
    COLUMNS, MAX_MS, SCHEMA_VERSION,
};

/// Serialises schema creation between nodes starting at once (`pg_advisory_xact_lock` key).
const MIGRATION_LOCK: i64 = 0x766f_7867_6b73_0001; // "voxgks" 1

/// The `session_key` table in PostgreSQL.
pub struct PgStore {
    client: Client,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").finish_non_exhaustive()
    }
}

/// One line for a PostgreSQL error: the server's message when there is one.
pub(crate) fn describe(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = format!("{}: {} ({})", db.severity(), db.message(), db.code().code());
            if let Some(d) = db.detail() {
                s.push_str(": ");
                s.push_str(d);
            }
            s
        }
        None => match std::error::Error::source(e) {
            Some(src) => format!("{e}: {src}"),
            None => e.to_string(),
        },
    }
}

fn valid_schema_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !s.as_bytes()[0].is_ascii_digit()
}

impl PgStore {
    /// Connects (`host=/var/run/postgresql user=postgres dbname=voxgate`, or a
    /// `postgresql://` URL) and creates the schema in the default search path if needed.
    pub fn connect(conn_str: &str) -> Result<Self, StoreError> {
        Self::connect_inner(conn_str, None)
    }

    /// As [`connect`](Self::connect), with the tables in the PostgreSQL schema `schema`
    /// (created if missing): separate stores in one database, e.g. one per test or per SPG
    /// cluster.
    pub fn connect_in_schema(conn_str: &str, schema: &str) -> Result<Self, StoreError> {
        if !valid_schema_name(schema) {
            return Err(StoreError::InvalidSchemaName(schema.to_string()));
        }
        Self::connect_inner(conn_str, Some(schema))
    }

    fn connect_inner(conn_str: &str, schema: Option<&str>) -> Result<Self, StoreError> {
        let client = Client::connect(conn_str, NoTls)?;
        let mut store = PgStore { client };
        store.migrate(schema)?;
        Ok(store)
    }

    fn migrate(&mut self, schema: Option<&str>) -> Result<(), StoreError> {
        let mut tx = self.client.transaction()?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
        if let Some(schema) = schema {
            // The name was checked to be a plain lowercase identifier.
            tx.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))?;
        }
        tx.commit()?;
        if let Some(schema) = schema {
            self.client
                .batch_execute(&format!("SET search_path TO {schema}"))?;
        }
        let mut tx = self.client.transaction()?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
        tx.batch_execute(&schema_sql("BYTEA"))?;
        let found: Option<i64> = tx
            .query_one("SELECT max(version) FROM keystore_schema", &[])?
            .get(0);
        match found {
            None => {
                tx.execute(
                    "INSERT INTO keystore_schema (version) VALUES ($1)",
                    &[&SCHEMA_VERSION],
                )?;
            }
            Some(v) if v == SCHEMA_VERSION => {}
            Some(found) => {
                return Err(StoreError::SchemaVersion {
                    found,
                    supported: SCHEMA_VERSION,
                })
            }
        }
        tx.commit()?;
        Ok(())
    }
}

fn raw_row(r: &Row) -> Result<RawRow, StoreError> {
    Ok(RawRow {
        session_id: r.try_get(0)?,
        generation: r.try_get(1)?,
        gateway: r.try_get(2)?,
        call_id: r.try_get(3)?,
        created_ms: r.try_get(4)?,
        ended_ms: r.try_get(5)?,
        sealed: r.try_get(6)?,
        tuples: r.try_get(7)?,
    })
}

fn sessions(rows: Vec<Row>) -> Result<Vec<StoredSession>, StoreError> {
    rows.iter()
        .map(|r| raw_row(r).and_then(RawRow::into_session))
        .collect()
}

impl KeyStore for PgStore {
    fn put(&mut self, rec: &StoredSession) -> Result<(), StoreError> {
        let (created, ended) = check_record(rec)?;
        let id = id_to_db(rec.session_id);
        let generation = i64::from(rec.generation);
        let mut tx = self.client.transaction()?;
        // Locks the session's rows so that a concurrent mark_ended on another node is ordered.
        let rows = tx.query(
            "SELECT gateway, call_id, ended_ms FROM session_key WHERE session_id = $1 FOR UPDATE",
            &[&id],
        )?;
        let mut stored_end: Option<i64> = None;
        for r in &rows {
            let gateway: String = r.try_get(0)?;
            let call_id: String = r.try_get(1)?;
            if gateway != rec.gateway || call_id != rec.call_id {
                return Err(StoreError::IdentityConflict {
                    session_id: rec.session_id,
                });
            }
            if let Some(e) = r.try_get::<_, Option<i64>>(2)? {
                stored_end = Some(stored_end.map_or(e, |s| s.min(e)));
            }
        }
        let ended = match (stored_end, ended) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        tx.execute(
            "INSERT INTO session_key (session_id, generation, gateway, call_id, created_ms, \
             ended_ms, sealed, tuples) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (session_id, generation) DO UPDATE SET created_ms = EXCLUDED.created_ms, \
             ended_ms = EXCLUDED.ended_ms, sealed = EXCLUDED.sealed, tuples = EXCLUDED.tuples",
            &[
                &id,
                &generation,
                &rec.gateway,
                &rec.call_id,
                &created,
                &ended,
                &rec.sealed,
                &rec.tuples,
            ],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn get(&mut self, session_id: u64) -> Result<Option<StoredSession>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM session_key WHERE session_id = $1 \
             ORDER BY generation DESC LIMIT 1"
        );
        let rows = self.client.query(&sql, &[&id_to_db(session_id)])?;
        Ok(sessions(rows)?.into_iter().next())
    }

    fn generations(&mut self, session_id: u64) -> Result<Vec<StoredSession>, StoreError> {
        let sql =
            format!("SELECT {COLUMNS} FROM session_key WHERE session_id = $1 ORDER BY generation");
        sessions(self.client.query(&sql, &[&id_to_db(session_id)])?)
    }

    fn list_live(&mut self) -> Result<Vec<StoredSession>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM session_key s WHERE ended_ms IS NULL AND generation = \
             (SELECT max(generation) FROM session_key g WHERE g.session_id = s.session_id) \
             ORDER BY session_id"
        );
        sessions(self.client.query(&sql, &[])?)
    }

    fn mark_ended(&mut self, session_id: u64, ended_ms: u64) -> Result<bool, StoreError> {
        let ended = ms_to_db("ended_ms", ended_ms)?;
        let id = id_to_db(session_id);
        let mut tx = self.client.transaction()?;
        let exists = tx
            .query_opt(
                "SELECT 1 FROM session_key WHERE session_id = $1 LIMIT 1",
                &[&id],
            )?
            .is_some();
        tx.execute(
            "UPDATE session_key SET ended_ms = $2 WHERE session_id = $1 \
             AND (ended_ms IS NULL OR ended_ms > $2)",
            &[&id, &ended],
        )?;
        tx.commit()?;
        Ok(exists)
    }

    fn purge_ended_before(
        &mut self,
        ms: u64,
        keep: &dyn Fn(&StoredSession) -> bool,
    ) -> Result<usize, StoreError> {
        let before = i64::try_from(ms.min(MAX_MS)).unwrap_or(i64::MAX);
        let mut tx = self.client.transaction()?;
        let sql = format!(
            "SELECT {COLUMNS} FROM session_key s WHERE ended_ms IS NOT NULL AND ended_ms < $1 \
             AND generation = \
             (SELECT max(generation) FROM session_key g WHERE g.session_id = s.session_id)"
        );
        let candidates = sessions(tx.query(&sql, &[&before])?)?;
        let doomed: Vec<i64> = candidates
            .iter()
            .filter(|s| !keep(s))
            .map(|s| id_to_db(s.session_id))
            .collect();
        if !doomed.is_empty() {
            tx.execute(
                "DELETE FROM session_key WHERE session_id = ANY($1)",
                &[&doomed],
            )?;
        }
        tx.commit()?;
        Ok(doomed.len())
    }

    fn count(&mut self) -> Result<u64, StoreError> {
        let n: i64 = self
            .client
            .query_one("SELECT count(DISTINCT session_id) FROM session_key", &[])?
            .try_get(0)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_plain_identifiers() {
        assert!(valid_schema_name("kt_put_get_123"));
        assert!(!valid_schema_name(""));
        assert!(!valid_schema_name("1abc"));
        assert!(!valid_schema_name("a; DROP TABLE x"));
        assert!(!valid_schema_name("Upper"));
        assert!(!valid_schema_name(&"a".repeat(64)));
    }
}
