//! The same tests against both backends: `sqlite::NAME` and `postgres::NAME`.
//!
//! PostgreSQL: `VOXGATE_TEST_PG` (default `host=/var/run/postgresql
//! dbname=voxgate_test`, as the OS user running the tests); each test works in its own PostgreSQL schema, dropped at the end. If
//! the server is not reachable the PostgreSQL tests fail (`.ci/run` installs and starts it).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use voxgate_escrow::seal::{AuthorityKeyPair, SealError};
use voxgate_escrow::server::Session;
use voxgate_escrow::wire::{Addr, Direction, Secret, StreamKey};
use voxgate_keystore::{
    decode_tuples, open_session, seal_session, KeyStore, PgStore, SqliteStore, StoreError,
    StoredSession,
};
use zeroize::Zeroizing;

/// The user defaults to the one running the tests (`.ci/run` creates that role).
const PG_DEFAULT: &str = "host=/var/run/postgresql dbname=voxgate_test";
const CHILD_ENV: &str = "VOXGATE_KEYSTORE_CHILD";
const T0: u64 = 1_764_000_000_000;

fn pg_conn_str() -> String {
    std::env::var("VOXGATE_TEST_PG").unwrap_or_else(|_| PG_DEFAULT.to_string())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Sqlite,
    Postgres,
}

/// One store location for one test; removed when dropped.
struct Backend {
    kind: Kind,
    /// SQLite: the directory holding `keys.db`. PostgreSQL: the schema name.
    dir: PathBuf,
    schema: String,
}

impl Backend {
    fn new(kind: Kind, test: &str) -> Self {
        let tag = format!("kt_{test}_{}", std::process::id());
        let b = Backend {
            kind,
            dir: std::env::temp_dir().join(format!("voxgate-keystore-{tag}")),
            schema: tag,
        };
        match kind {
            Kind::Sqlite => {
                let _ = std::fs::remove_dir_all(&b.dir);
                std::fs::create_dir_all(&b.dir).expect("temp dir");
            }
            Kind::Postgres => b.pg_raw(&format!("DROP SCHEMA IF EXISTS {} CASCADE", b.schema)),
        }
        b
    }

    /// From the child's environment variable (`sqlite:<dir>` or `postgres:<schema>`).
    fn from_child_env(v: &str) -> Self {
        let (kind, loc) = v.split_once(':').expect("kind:location");
        Backend {
            kind: if kind == "sqlite" {
                Kind::Sqlite
            } else {
                Kind::Postgres
            },
            dir: PathBuf::from(loc),
            schema: loc.to_string(),
        }
    }

    fn child_env(&self) -> String {
        match self.kind {
            Kind::Sqlite => format!("sqlite:{}", self.dir.display()),
            Kind::Postgres => format!("postgres:{}", self.schema),
        }
    }

    fn db_path(&self) -> PathBuf {
        self.dir.join("keys.db")
    }

    /// A new connection to the same store.
    fn open(&self) -> Box<dyn KeyStore> {
        match self.kind {
            Kind::Sqlite => Box::new(SqliteStore::open(self.db_path()).expect("open sqlite store")),
            Kind::Postgres => {
                let conn = pg_conn_str();
                match PgStore::connect_in_schema(&conn, &self.schema) {
                    Ok(s) => Box::new(s),
                    Err(e) => panic!("{}", pg_unreachable(&conn, &e.to_string())),
                }
            }
        }
    }

    fn pg_client(&self) -> ::postgres::Client {
        let conn = pg_conn_str();
        ::postgres::Client::connect(&conn, ::postgres::NoTls)
            .unwrap_or_else(|e| panic!("{}", pg_unreachable(&conn, &format!("{e:?}"))))
    }

    fn pg_raw(&self, sql: &str) {
        self.pg_client().batch_execute(sql).expect("raw SQL");
    }

    /// Raw SQL on the store's table, bypassing the API (`{blob:HEX}` is a blob literal).
    fn raw(&self, sql: &str) {
        match self.kind {
            Kind::Sqlite => {
                let sql = blob_literals(sql, |h| format!("x'{h}'"));
                let c = rusqlite::Connection::open(self.db_path()).expect("raw open");
                c.busy_timeout(Duration::from_secs(10)).expect("busy");
                c.execute_batch(&sql).expect("raw SQL");
            }
            Kind::Postgres => {
                let sql = blob_literals(sql, |h| format!("'\\x{h}'::bytea"));
                self.pg_raw(&format!("SET search_path TO {}; {sql}", self.schema));
            }
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        match self.kind {
            Kind::Sqlite => {
                let _ = std::fs::remove_dir_all(&self.dir);
            }
            Kind::Postgres => {
                if let Ok(mut c) = ::postgres::Client::connect(&pg_conn_str(), ::postgres::NoTls) {
                    let _ =
                        c.batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema));
                }
            }
        }
    }
}

fn pg_unreachable(conn: &str, err: &str) -> String {
    format!(
        "PostgreSQL is not reachable with VOXGATE_TEST_PG={conn:?}: {err}\n\
         The keystore tests need a running PostgreSQL with a voxgate_test database: `.ci/run` \
         installs and starts it (apt-get install postgresql; pg_ctlcluster <ver> main start; \
         createuser $USER; createdb voxgate_test), or point VOXGATE_TEST_PG at another server."
    )
}

fn blob_literals(sql: &str, lit: impl Fn(&str) -> String) -> String {
    let mut out = String::new();
    let mut rest = sql;
    while let Some(i) = rest.find("{blob:") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 6..];
        let j = after.find('}').expect("closing brace");
        out.push_str(&lit(&after[..j]));
        rest = &after[j + 1..];
    }
    out.push_str(rest);
    out
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

// ---------------------------------------------------------------------------------------------
// Fixtures

fn stream(direction: Direction, key: &[u8], ssrc: u32) -> StreamKey {
    StreamKey {
        direction,
        src: Addr("192.0.2.10:40000".parse().unwrap()),
        dst: Addr("198.51.100.20:50000".parse().unwrap()),
        ssrc: Some(ssrc),
        suite: "AES_CM_128_HMAC_SHA1_80".into(),
        master: Secret(Zeroizing::new(key.to_vec())),
        mki: None,
    }
}

/// A key no encoding would produce by chance.
fn distinctive_key(seed: u8) -> Vec<u8> {
    (0..30u8)
        .map(|i| i.wrapping_mul(37).wrapping_add(seed) ^ 0xa5)
        .collect()
}

fn session(id: u64, gateway: &str, call_id: &str, generation: u32, seed: u8) -> Session {
    Session {
        id,
        gateway: gateway.into(),
        call_id: call_id.into(),
        streams: vec![
            stream(
                Direction::Send,
                &distinctive_key(seed),
                0x1111_0000 + u32::from(seed),
            ),
            stream(
                Direction::Receive,
                &distinctive_key(seed.wrapping_add(100)),
                0x2222_0000 + u32::from(seed),
            ),
        ],
        generation,
        created_ms: T0 + u64::from(seed),
    }
}

fn sealed(kp: &AuthorityKeyPair, s: &Session) -> StoredSession {
    seal_session(kp.public(), s).expect("seal")
}

// ---------------------------------------------------------------------------------------------
// The tests, generic over the backend

fn put_get_list_end_purge(b: &Backend) {
    let kp = AuthorityKeyPair::generate().unwrap();
    let mut st = b.open();
    assert_eq!(st.count().unwrap(), 0);
    assert!(st.get(1).unwrap().is_none());
    // An id with the top bit set: stored as a negative BIGINT, read back the same.
    let ids = [3u64, 0x8000_0000_0000_0001, u64::MAX];
    for (i, id) in ids.iter().enumerate() {
        st.put(&sealed(
            &kp,
            &session(*id, "gw1", &format!("call-{i}"), 0, i as u8),
        ))
        .unwrap();
    }
    assert_eq!(st.count().unwrap(), 3);
    let got = st.get(u64::MAX).unwrap().expect("stored");
    assert_eq!(got.call_id, "call-2");
    assert_eq!(got.ended_ms, None);
    let live: Vec<u64> = st
        .list_live()
        .unwrap()
        .iter()
        .map(|s| s.session_id)
        .collect();
    assert_eq!(live.len(), 3);
    for id in ids {
        assert!(live.contains(&id));
    }

    assert!(st.mark_ended(3, T0 + 1_000).unwrap());
    assert!(!st.mark_ended(42, T0).unwrap(), "unknown session");
    // A later end does not move the first one.
    assert!(st.mark_ended(3, T0 + 9_000).unwrap());
    assert_eq!(st.get(3).unwrap().unwrap().ended_ms, Some(T0 + 1_000));
    assert!(st.mark_ended(0x8000_0000_0000_0001, T0 + 2_000).unwrap());
    assert!(st.mark_ended(u64::MAX, T0 + 5_000).unwrap());
    let live = st.list_live().unwrap();
    assert!(live.is_empty(), "{live:?}");
    assert_eq!(st.count().unwrap(), 3, "ended sessions stay until purged");

    // Retention: before T0+3000, keep the one a warrant matched (call-0).
    let purged = st
        .purge_ended_before(T0 + 3_000, &|s: &StoredSession| s.call_id == "call-0")
        .unwrap();
    assert_eq!(purged, 1);
    assert!(st.get(3).unwrap().is_some(), "kept by the callback");
    assert!(st.get(0x8000_0000_0000_0001).unwrap().is_none(), "purged");
    assert!(
        st.get(u64::MAX).unwrap().is_some(),
        "ended after the cut-off"
    );
    assert_eq!(st.count().unwrap(), 2);
    // A live session is never purged.
    st.put(&sealed(&kp, &session(7, "gw2", "live", 0, 7)))
        .unwrap();
    let purged = st.purge_ended_before(u64::MAX, &|_| false).unwrap();
    assert_eq!(purged, 2);
    assert_eq!(st.count().unwrap(), 1);
    assert_eq!(st.list_live().unwrap()[0].session_id, 7);
}

fn put_is_idempotent(b: &Backend) {
    let kp = AuthorityKeyPair::generate().unwrap();
    let mut st = b.open();
    let rec = sealed(&kp, &session(10, "gw1", "c1", 0, 1));
    st.put(&rec).unwrap();
    st.put(&rec).unwrap();
    assert_eq!(st.count().unwrap(), 1);
    assert_eq!(st.generations(10).unwrap(), vec![rec.clone()]);
    // A re-seal of the same generation (new ciphertext) replaces the row.
    let again = sealed(&kp, &session(10, "gw1", "c1", 0, 1));
    assert_ne!(again.sealed, rec.sealed);
    st.put(&again).unwrap();
    assert_eq!(st.generations(10).unwrap(), vec![again.clone()]);
    // A retried put after the end does not revive the session.
    st.mark_ended(10, T0 + 50).unwrap();
    st.put(&again).unwrap();
    assert_eq!(st.get(10).unwrap().unwrap().ended_ms, Some(T0 + 50));
    assert!(st.list_live().unwrap().is_empty());
    // The same session_ID for another gateway or call is refused.
    for (gw, call) in [("gw2", "c1"), ("gw1", "c2")] {
        let other = sealed(&kp, &session(10, gw, call, 1, 2));
        assert!(matches!(
            st.put(&other),
            Err(StoreError::IdentityConflict { session_id: 10 })
        ));
    }
    // Times past i64 are refused, not wrapped.
    let mut bad = sealed(&kp, &session(11, "gw1", "c3", 0, 3));
    bad.created_ms = u64::MAX;
    assert!(matches!(st.put(&bad), Err(StoreError::OutOfRange { .. })));
    assert_eq!(st.count().unwrap(), 1);
}

/// Decision: every generation is kept (LI needs the keys of media sent before a rekey); the
/// live view shows the highest.
fn rekey_keeps_generations(b: &Backend) {
    let kp = AuthorityKeyPair::generate().unwrap();
    let mut st = b.open();
    let g0 = session(20, "gw1", "c1", 0, 1);
    let g1 = session(20, "gw1", "c1", 1, 2);
    st.put(&sealed(&kp, &g0)).unwrap();
    st.put(&sealed(&kp, &g1)).unwrap();
    assert_eq!(st.count().unwrap(), 1);
    assert_eq!(st.get(20).unwrap().unwrap().generation, 1);
    let live = st.list_live().unwrap();
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].generation, 1);
    let gens = st.generations(20).unwrap();
    assert_eq!(
        gens.iter().map(|g| g.generation).collect::<Vec<_>>(),
        [0, 1]
    );
    assert_eq!(open_session(&kp, &gens[0]).unwrap(), g0.streams);
    assert_eq!(open_session(&kp, &gens[1]).unwrap(), g1.streams);
    // A late retry of generation 0 does not hide generation 1.
    st.put(&sealed(&kp, &g0)).unwrap();
    assert_eq!(st.get(20).unwrap().unwrap().generation, 1);
    // Ending ends every generation; purging removes them all.
    st.mark_ended(20, T0 + 10).unwrap();
    assert!(st
        .generations(20)
        .unwrap()
        .iter()
        .all(|g| g.ended_ms == Some(T0 + 10)));
    assert!(st.list_live().unwrap().is_empty());
    assert_eq!(st.purge_ended_before(T0 + 11, &|_| false).unwrap(), 1);
    assert!(st.generations(20).unwrap().is_empty());
}

fn sealed_round_trip_and_row_move_refused(b: &Backend) {
    let kp = AuthorityKeyPair::generate().unwrap();
    let s = session(30, "gw1", "call-a", 3, 9);
    let rec = sealed(&kp, &s);
    let mut st = b.open();
    st.put(&rec).unwrap();
    let got = st.get(30).unwrap().unwrap();
    assert_eq!(got, rec);
    assert_eq!(open_session(&kp, &got).unwrap(), s.streams);
    let tuples = decode_tuples(&got.tuples).unwrap();
    assert_eq!(tuples.len(), 2);
    assert_eq!(tuples[0].ssrc, Some(0x1111_0009));
    assert_eq!(tuples[1].direction, Direction::Receive);
    assert_eq!(tuples[0].src, s.streams[0].src);

    // The sealed bytes moved to another row (id, gateway, call, generation): refused.
    type Move = fn(&mut StoredSession);
    let moves: [(&str, Move); 4] = [
        ("session_id", |r| r.session_id = 31),
        ("gateway", |r| {
            r.session_id = 32;
            r.gateway = "gw2".into()
        }),
        ("call_id", |r| r.call_id = "call-b".into()),
        ("generation", |r| r.generation = 4),
    ];
    for (what, mv) in moves {
        let mut moved = got.clone();
        mv(&mut moved);
        if what == "session_id" || what == "gateway" {
            // Really stored in another row, then read back.
            st.put(&moved).unwrap();
            moved = st.get(moved.session_id).unwrap().unwrap();
        }
        assert!(
            matches!(
                open_session(&kp, &moved),
                Err(StoreError::Seal(SealError::OpenFailed))
            ),
            "moved {what}: must not open"
        );
    }
    // Another authority's key does not open it; a flipped byte neither.
    let other = AuthorityKeyPair::generate().unwrap();
    assert!(open_session(&other, &got).is_err());
    let mut flipped = got.clone();
    let last = flipped.sealed.len() - 1;
    flipped.sealed[last] ^= 1;
    assert!(open_session(&kp, &flipped).is_err());
}

fn nothing_secret_in_clear(b: &Backend) {
    let kp = AuthorityKeyPair::generate().unwrap();
    let s = session(40, "gw1", "secret-test", 0, 77);
    let keys: Vec<Vec<u8>> = s.streams.iter().map(|k| k.master.0.to_vec()).collect();
    let mut st = b.open();
    st.put(&sealed(&kp, &s)).unwrap();
    st.mark_ended(40, T0 + 1).unwrap();
    let got = st.get(40).unwrap().unwrap();
    let contains = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
    for k in &keys {
        assert!(!contains(&got.sealed, k));
        assert!(!contains(&got.tuples, k));
        // A 16-byte piece (the AES key alone) is not there either.
        assert!(!contains(&got.sealed, &k[..16]));
    }
    drop(st);
    match b.kind {
        Kind::Sqlite => {
            // Every byte SQLite wrote: the main file, the WAL, the shared-memory index.
            let mut files = vec![];
            for ext in ["", "-wal", "-shm"] {
                let p = PathBuf::from(format!("{}{ext}", b.db_path().display()));
                if let Ok(bytes) = std::fs::read(&p) {
                    files.push((p, bytes));
                }
            }
            assert!(files.iter().map(|(_, f)| f.len()).sum::<usize>() > 0);
            assert!(
                files.iter().any(|(_, f)| contains(f, b"secret-test")),
                "the test must see the rows it looks through"
            );
            for (p, f) in &files {
                for k in &keys {
                    assert!(
                        !contains(f, &k[..16]),
                        "key bytes in clear in {}",
                        p.display()
                    );
                }
            }
            // And after a checkpoint into the main file.
            SqliteStore::open(b.db_path())
                .unwrap()
                .checkpoint()
                .unwrap();
            let f = std::fs::read(b.db_path()).unwrap();
            assert!(contains(&f, b"secret-test"));
            for k in &keys {
                assert!(!contains(&f, &k[..16]));
            }
        }
        Kind::Postgres => {
            // Every column of every row as PostgreSQL renders it (bytea as hex).
            let mut c = b.pg_client();
            let rows = c
                .query(
                    &format!("SELECT t::text FROM {}.session_key t", b.schema),
                    &[],
                )
                .unwrap();
            let dump: String = rows.iter().map(|r| r.get::<_, String>(0)).collect();
            assert!(dump.contains("secret-test"));
            for k in &keys {
                assert!(!dump.contains(&hex(&k[..16])), "key in clear in the table");
            }
        }
    }
}

fn two_connections_share_the_table(b: &Backend) {
    let kp = AuthorityKeyPair::generate().unwrap();
    let mut node_a = b.open();
    let mut node_b = b.open();
    node_a
        .put(&sealed(&kp, &session(50, "gw1", "c1", 0, 1)))
        .unwrap();
    node_b
        .put(&sealed(&kp, &session(51, "gw2", "c2", 0, 2)))
        .unwrap();
    assert_eq!(node_a.count().unwrap(), 2);
    assert_eq!(node_b.get(50).unwrap().unwrap().gateway, "gw1");
    assert_eq!(node_a.get(51).unwrap().unwrap().gateway, "gw2");
    // A rekey on one node is the live view on the other.
    node_b
        .put(&sealed(&kp, &session(50, "gw1", "c1", 1, 3)))
        .unwrap();
    assert_eq!(node_a.get(50).unwrap().unwrap().generation, 1);
    assert!(node_a.mark_ended(51, T0).unwrap());
    let live = node_b.list_live().unwrap();
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].session_id, 50);
    // Reopening (a restart) finds the same.
    drop(node_a);
    let mut again = b.open();
    assert_eq!(again.count().unwrap(), 2);
    assert_eq!(again.list_live().unwrap(), live);
}

fn corrupt_rows_give_typed_errors(b: &Backend) {
    let kp = AuthorityKeyPair::generate().unwrap();
    let mut st = b.open();
    let good = sealed(&kp, &session(60, "gw1", "c1", 0, 1));
    st.put(&good).unwrap();
    let sealed_hex = hex(&good.sealed);
    // Generation out of the u32 range.
    b.raw(&format!(
        "INSERT INTO session_key VALUES (61, -1, 'gw1', 'c61', 0, NULL, {{blob:{sealed_hex}}}, {{blob:}});"
    ));
    // Negative creation time.
    b.raw(&format!(
        "INSERT INTO session_key VALUES (62, 0, 'gw1', 'c62', -5, NULL, {{blob:{sealed_hex}}}, {{blob:}});"
    ));
    // A sealed column that is not a sealed record.
    b.raw(
        "INSERT INTO session_key VALUES (63, 0, 'gw1', 'c63', 0, NULL, {blob:0102}, {blob:ff00});",
    );
    for id in [61, 62, 63] {
        match st.get(id) {
            Err(StoreError::CorruptRow { session_id, reason }) => {
                assert_eq!(session_id, id);
                assert!(!reason.is_empty());
            }
            other => panic!("row {id}: expected CorruptRow, got {other:?}"),
        }
    }
    assert!(matches!(st.list_live(), Err(StoreError::CorruptRow { .. })));
    // The good row still reads; garbage tuples and a garbage sealed record are typed errors.
    assert_eq!(st.get(60).unwrap().unwrap(), good);
    assert!(matches!(
        decode_tuples(&[0xff, 0x00]),
        Err(StoreError::Cbor { .. })
    ));
    let mut bad = good.clone();
    bad.sealed.truncate(10);
    assert!(matches!(
        open_session(&kp, &bad),
        Err(StoreError::Seal(SealError::Truncated { .. }))
    ));
    // A sealed record whose plaintext is not the streams' CBOR.
    let aad = voxgate_keystore::session_aad(64, "gw1", "c64", 0);
    let junk = voxgate_escrow::seal::seal(
        kp.public(),
        voxgate_escrow::seal::SESSION_KEY_INFO,
        &aad,
        b"\xff\xff not cbor",
    )
    .unwrap();
    let mut rec = good.clone();
    rec.session_id = 64;
    rec.call_id = "c64".into();
    rec.sealed = junk.to_bytes();
    assert!(matches!(
        open_session(&kp, &rec),
        Err(StoreError::Cbor { .. })
    ));
}

/// A child process puts sessions one after another and is SIGKILLed in the middle; every put
/// it reported as done is found after reopening, and the store is intact.
fn durability_after_sigkill(b: &Backend) {
    // Create the store (and schema) first so that the child only writes.
    drop(b.open());
    let exe = std::env::current_exe().expect("test binary");
    let mut child = Command::new(exe)
        .args([
            "--exact",
            "durability_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, b.child_env())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child");
    let out = child.stdout.take().expect("stdout");
    let mut done = vec![];
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut lines = BufReader::new(out).lines();
    while done.len() < 25 && Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else { break };
        if let Some(id) = line.strip_prefix("put ") {
            done.push(id.trim().parse::<u64>().expect("id"));
        }
    }
    // SIGKILL while it is still putting.
    child.kill().expect("kill");
    let status = child.wait().expect("wait");
    assert!(!status.success(), "child was killed, not finished");
    assert!(done.len() >= 25, "child reported {} puts", done.len());

    let kp = child_key();
    let mut st = b.open();
    for id in &done {
        let rec = st
            .get(*id)
            .unwrap()
            .unwrap_or_else(|| panic!("session {id} lost after SIGKILL"));
        assert_eq!(open_session(&kp, &rec).unwrap(), child_session(*id).streams);
    }
    assert!(st.count().unwrap() >= done.len() as u64);
    if b.kind == Kind::Sqlite {
        let c = rusqlite::Connection::open(b.db_path()).unwrap();
        let check: String = c
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok");
    }
}

fn child_key() -> AuthorityKeyPair {
    AuthorityKeyPair::from_secret_bytes(&[0x42; 32])
}

fn child_session(id: u64) -> Session {
    session(id, "gw-child", &format!("child-{id}"), 0, (id % 200) as u8)
}

/// The child of `durability_after_sigkill`: puts until killed. Only runs with the variable set.
#[test]
#[ignore = "helper: run in a child process by durability_after_sigkill"]
fn durability_child() {
    let Ok(v) = std::env::var(CHILD_ENV) else {
        return;
    };
    let b = Backend::from_child_env(&v);
    let mut st = b.open();
    let kp = child_key();
    for id in 1..=100_000u64 {
        st.put(&seal_session(kp.public(), &child_session(id)).unwrap())
            .unwrap();
        // Reported only once put returned.
        println!("put {id}");
    }
    std::mem::forget(b); // the parent owns the location
}

macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[test]
                fn $name() {
                    super::$name(&super::Backend::new(super::Kind::Sqlite, stringify!($name)));
                }
            )*
        }
        mod postgres {
            $(
                #[test]
                fn $name() {
                    super::$name(&super::Backend::new(super::Kind::Postgres, stringify!($name)));
                }
            )*
        }
    };
}

both_backends!(
    put_get_list_end_purge,
    put_is_idempotent,
    rekey_keeps_generations,
    sealed_round_trip_and_row_move_refused,
    nothing_secret_in_clear,
    two_connections_share_the_table,
    corrupt_rows_give_typed_errors,
    durability_after_sigkill,
);
