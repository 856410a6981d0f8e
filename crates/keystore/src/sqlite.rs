//! The embedded backend: one SQLite file (bundled SQLite), WAL journal, `synchronous=FULL` so
//! that a `put` that returned survives a crash, file mode 0600.

use std::fs::OpenOptions;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};

use crate::{
    check_record, id_to_db, ms_to_db, schema_sql, KeyStore, RawRow, StoreError, StoredSession,
    COLUMNS, MAX_MS, SCHEMA_VERSION,
};

/// The `session_key` table in a SQLite file.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
}

impl SqliteStore {
    /// Opens the store at `path`, creating the file (mode 0600) and the schema if needed. An
    /// existing file readable by group or others is tightened to 0600. Several stores (in one
    /// or several processes) may open the same file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let io = |source| StoreError::Io {
            path: path.display().to_string(),
            source,
        };
        // Create it ourselves so that it never exists with the umask's permissions.
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io)?;
        let meta = std::fs::metadata(&path).map_err(io)?;
        if meta.permissions().mode() & 0o077 != 0 {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
        }
        let conn = Connection::open(&path)?;
        conn.busy_timeout(Duration::from_secs(10))?;
        // WAL: readers do not block the writer; FULL: the WAL is fsynced at every commit.
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Io {
                path: path.display().to_string(),
                source: std::io::Error::other(format!("journal_mode WAL refused ({mode})")),
            });
        }
        conn.pragma_update(None, "synchronous", "FULL")?;
        let mut store = SqliteStore { conn, path };
        store.migrate()?;
        Ok(store)
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Copies the WAL into the main file (as SQLite does by itself every 1000 pages).
    pub fn checkpoint(&mut self) -> Result<(), StoreError> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute_batch(&schema_sql("BLOB"))?;
        let found: Option<i64> = tx
            .query_row("SELECT max(version) FROM keystore_schema", [], |r| r.get(0))
            .optional()?
            .flatten();
        match found {
            None => {
                tx.execute(
                    "INSERT INTO keystore_schema (version) VALUES (?1)",
                    [SCHEMA_VERSION],
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

fn raw_row(r: &Row<'_>) -> rusqlite::Result<RawRow> {
    Ok(RawRow {
        session_id: r.get(0)?,
        generation: r.get(1)?,
        gateway: r.get(2)?,
        call_id: r.get(3)?,
        created_ms: r.get(4)?,
        ended_ms: r.get(5)?,
        sealed: r.get(6)?,
        tuples: r.get(7)?,
    })
}

/// Runs a query for rows and validates each.
fn query_rows(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<StoredSession>, StoreError> {
    let mut stmt = conn.prepare(sql)?;
    let raw = stmt
        .query_map(params, raw_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    raw.into_iter().map(RawRow::into_session).collect()
}

impl KeyStore for SqliteStore {
    fn put(&mut self, rec: &StoredSession) -> Result<(), StoreError> {
        let (created, ended) = check_record(rec)?;
        let id = id_to_db(rec.session_id);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let other: Option<i64> = tx
            .query_row(
                "SELECT 1 FROM session_key WHERE session_id = ?1 \
                 AND (gateway <> ?2 OR call_id <> ?3) LIMIT 1",
                params![id, rec.gateway, rec.call_id],
                |r| r.get(0),
            )
            .optional()?;
        if other.is_some() {
            return Err(StoreError::IdentityConflict {
                session_id: rec.session_id,
            });
        }
        // An end already stored for the session is kept (a retried put does not revive it).
        let stored_end: Option<i64> = tx
            .query_row(
                "SELECT min(ended_ms) FROM session_key WHERE session_id = ?1",
                [id],
                |r| r.get(0),
            )
            .optional()?
            .flatten();
        let ended = match (stored_end, ended) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        tx.execute(
            "INSERT INTO session_key (session_id, generation, gateway, call_id, created_ms, \
             ended_ms, sealed, tuples) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
             ON CONFLICT (session_id, generation) DO UPDATE SET created_ms = excluded.created_ms, \
             ended_ms = excluded.ended_ms, sealed = excluded.sealed, tuples = excluded.tuples",
            params![
                id,
                i64::from(rec.generation),
                rec.gateway,
                rec.call_id,
                created,
                ended,
                rec.sealed,
                rec.tuples
            ],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn get(&mut self, session_id: u64) -> Result<Option<StoredSession>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM session_key WHERE session_id = ?1 \
             ORDER BY generation DESC LIMIT 1"
        );
        Ok(query_rows(&self.conn, &sql, [id_to_db(session_id)])?
            .into_iter()
            .next())
    }

    fn generations(&mut self, session_id: u64) -> Result<Vec<StoredSession>, StoreError> {
        let sql =
            format!("SELECT {COLUMNS} FROM session_key WHERE session_id = ?1 ORDER BY generation");
        query_rows(&self.conn, &sql, [id_to_db(session_id)])
    }

    fn list_live(&mut self) -> Result<Vec<StoredSession>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM session_key s WHERE ended_ms IS NULL AND generation = \
             (SELECT max(generation) FROM session_key g WHERE g.session_id = s.session_id) \
             ORDER BY session_id"
        );
        query_rows(&self.conn, &sql, [])
    }

    fn mark_ended(&mut self, session_id: u64, ended_ms: u64) -> Result<bool, StoreError> {
        let ended = ms_to_db("ended_ms", ended_ms)?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let exists: Option<i64> = tx
            .query_row(
                "SELECT 1 FROM session_key WHERE session_id = ?1 LIMIT 1",
                [id_to_db(session_id)],
                |r| r.get(0),
            )
            .optional()?;
        tx.execute(
            "UPDATE session_key SET ended_ms = ?2 WHERE session_id = ?1 \
             AND (ended_ms IS NULL OR ended_ms > ?2)",
            params![id_to_db(session_id), ended],
        )?;
        tx.commit()?;
        Ok(exists.is_some())
    }

    fn purge_ended_before(
        &mut self,
        ms: u64,
        keep: &dyn Fn(&StoredSession) -> bool,
    ) -> Result<usize, StoreError> {
        let before = i64::try_from(ms.min(MAX_MS)).unwrap_or(i64::MAX);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let sql = format!(
            "SELECT {COLUMNS} FROM session_key s WHERE ended_ms IS NOT NULL AND ended_ms < ?1 \
             AND generation = \
             (SELECT max(generation) FROM session_key g WHERE g.session_id = s.session_id)"
        );
        let candidates = query_rows(&tx, &sql, [before])?;
        let mut purged = 0;
        for s in candidates.iter().filter(|s| !keep(s)) {
            tx.execute(
                "DELETE FROM session_key WHERE session_id = ?1",
                [id_to_db(s.session_id)],
            )?;
            purged += 1;
        }
        tx.commit()?;
        Ok(purged)
    }

    fn count(&mut self) -> Result<u64, StoreError> {
        let n: i64 = self.conn.query_row(
            "SELECT count(DISTINCT session_id) FROM session_key",
            [],
            |r| r.get(0),
        )?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wal_full_and_0600() {
        let dir = std::env::temp_dir().join(format!("vg-ks-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("k.db");
        let _ = std::fs::remove_file(&path);
        let s = SqliteStore::open(&path).unwrap();
        let mode: String = s
            .conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let sync: i64 = s
            .conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 2, "synchronous=FULL");
        let perm = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(perm, 0o600);
        drop(s);
        // A newer schema is refused, not misread.
        let c = Connection::open(&path).unwrap();
        c.execute("UPDATE keystore_schema SET version = 99", [])
            .unwrap();
        drop(c);
        assert!(matches!(
            SqliteStore::open(&path),
            Err(StoreError::SchemaVersion { found: 99, .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
