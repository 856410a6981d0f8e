//! `voxgate spg`, escrow side, the real binary on loopback: a gateway with a client
//! certificate escrows a call's keys over mutual TLS (EscrowClient), the sealed record in the
//! SQLite store opens with the authority's key; certificates of unconfigured gateways and
//! clients without certificates are refused; a malformed frame gets 400 and a foreign version
//! 505, then the connection closes; after a kill -9 the restarted SPG still has the session,
//! takes a rekey of it (stored as generation 1) and its session_end.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use voxgate_escrow::client::{ClientEvent, EscrowClient, RetryPolicy};
use voxgate_escrow::seal::AuthorityKeyPair;
use voxgate_escrow::wire::{Addr, Direction, Message, Secret, StreamKey};
use voxgate_keystore::{open_session, KeyStore, SqliteStore};
use zeroize::Zeroizing;

fn cert_cmd(args: &[&str], dir: &Path) {
    let st = Command::new(common::voxgate())
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .status()
        .expect("voxgate cert");
    assert!(st.success(), "voxgate {args:?}");
}

/// A CA, the SPG's server certificate, and client certificates for gw1 (configured) and gw9
/// (not configured).
fn make_certs(dir: &Path) {
    cert_cmd(&["cert", "dev", "--out", "certs"], dir);
    for gw in ["gw1", "gw9"] {
        let name = format!("{gw}.a.example");
        let cert = format!("certs/{gw}.pem");
        let key = format!("certs/{gw}.key");
        cert_cmd(
            &[
                "cert",
                "issue",
                "--ca-cert",
                "certs/ca.pem",
                "--ca-key",
                "certs/ca.key",
                "--name",
                &name,
                "--client-only",
                "--out-cert",
                &cert,
                "--out-key",
                &key,
            ],
            dir,
        );
    }
}

fn write_config(dir: &Path, authority: &AuthorityKeyPair) -> PathBuf {
    let text = format!(
        r#"[escrow]
listen = "127.0.0.1:0"
# These tests drive the escrow protocol alone, with Call-IDs of no real call.
party_check = "none"
[tls]
cert = "certs/server.pem"
key = "certs/server.key"
client_ca = "certs/ca.pem"
[[gateway]]
name = "gw1.a.example"
addresses = ["127.0.0.1"]
[authority]
public_key = "{}"
[store]
sqlite = "spg-keys.db"
[metrics]
address = "127.0.0.1:0"
"#,
        authority.public()
    );
    let p = dir.join("spg.toml");
    std::fs::write(&p, text).unwrap();
    p
}

struct Spg {
    child: Child,
    addr: SocketAddr,
    metrics: Option<SocketAddr>,
}

impl Spg {
    fn start(dir: &Path, log: &str) -> Spg {
        let stderr = std::fs::File::create(dir.join(log)).unwrap();
        let mut child = Command::new(common::voxgate())
            .args(["spg", "--config"])
            .arg(dir.join("spg.toml"))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start voxgate spg");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut addr = None;
        let mut metrics = None;
        loop {
            let line = rx
                .recv_timeout(Duration::from_secs(30))
                .expect("spg did not become ready (see its log)");
            if line == "ready" {
                break;
            }
            if let Some(a) = line.strip_prefix("listening escrow ") {
                addr = Some(a.parse().unwrap());
            }
            if let Some(a) = line.strip_prefix("listening metrics ") {
                metrics = Some(a.parse().unwrap());
            }
        }
        Spg {
            child,
            addr: addr.expect("a listening escrow line"),
            metrics,
        }
    }

    fn kill9(&mut self) {
        let _ = Command::new("kill")
            .args(["-9", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for Spg {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pem_certs(p: &Path) -> Vec<CertificateDer<'static>> {
    let pem = std::fs::read(p).unwrap();
    rustls_pemfile::certs(&mut &pem[..])
        .map(|c| c.unwrap())
        .collect()
}

/// A TLS client trusting the dev CA, with the client certificate `gw` ("gw1", "gw9") or none.
fn connector(dir: &Path, gw: Option<&str>) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for c in pem_certs(&dir.join("certs/ca.pem")) {
        roots.add(c).unwrap();
    }
    let b = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let cfg = match gw {
        Some(gw) => {
            let chain = pem_certs(&dir.join(format!("certs/{gw}.pem")));
            let key_pem = std::fs::read(dir.join(format!("certs/{gw}.key"))).unwrap();
            let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut &key_pem[..])
                .unwrap()
                .unwrap();
            b.with_client_auth_cert(chain, key).unwrap()
        }
        None => b.with_no_client_auth(),
    };
    TlsConnector::from(Arc::new(cfg))
}

async fn connect(c: &TlsConnector, addr: SocketAddr) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    c.connect(ServerName::IpAddress(addr.ip().into()), tcp)
        .await
}

/// Reads until EOF/error or `d`; returns what came and whether the connection ended.
async fn read_until_closed(s: &mut TlsStream<TcpStream>, d: Duration) -> (Vec<u8>, bool) {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + d;
    loop {
        let mut tmp = [0u8; 4096];
        match tokio::time::timeout_at(deadline, s.read(&mut tmp)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (got, true),
            Ok(Ok(n)) => got.extend_from_slice(&tmp[..n]),
            Err(_) => return (got, false),
        }
    }
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn streams(key: u8) -> Vec<StreamKey> {
    vec![
        StreamKey {
            direction: Direction::Send,
            src: Addr("192.0.2.10:40000".parse().unwrap()),
            dst: Addr("198.51.100.7:50000".parse().unwrap()),
            ssrc: Some(0xdead_beef),
            suite: "AES_CM_128_HMAC_SHA1_80".into(),
            master: Secret(Zeroizing::new(vec![key; 30])),
            mki: None,
        },
        StreamKey {
            direction: Direction::Receive,
            src: Addr("198.51.100.7:50000".parse().unwrap()),
            dst: Addr("192.0.2.10:40000".parse().unwrap()),
            ssrc: None,
            suite: "AEAD_AES_128_GCM".into(),
            master: Secret(Zeroizing::new(vec![key ^ 0xff; 28])),
            mki: None,
        },
    ]
}

/// A gateway's escrow connection: EscrowClient over TLS.
struct Gateway {
    s: TlsStream<TcpStream>,
    c: EscrowClient,
}

impl Gateway {
    async fn connect(dir: &Path, addr: SocketAddr, first_id: u64) -> Gateway {
        let s = connect(&connector(dir, Some("gw1")), addr)
            .await
            .expect("TLS handshake");
        Gateway {
            s,
            c: EscrowClient::new(first_id, RetryPolicy::default()),
        }
    }

    /// Sends what the client queued and waits for its next event.
    async fn exchange(&mut self) -> ClientEvent {
        while let Some(f) = self.c.poll_transmit() {
            self.s.write_all(&f).await.unwrap();
        }
        let fut = async {
            loop {
                if let Some(ev) = self.c.poll_event() {
                    return ev;
                }
                let mut tmp = [0u8; 4096];
                let n = self.s.read(&mut tmp).await.unwrap_or(0);
                assert!(n > 0, "the SPG closed the connection");
                self.c.handle_input(&tmp[..n]).unwrap();
            }
        };
        tokio::time::timeout(Duration::from_secs(10), fut)
            .await
            .expect("a reply within 10 s")
    }

    async fn key_update(&mut self, call: &str, session_id: Option<u64>, key: u8) -> ClientEvent {
        self.c
            .key_update(Instant::now(), wall_ms(), call, session_id, streams(key));
        self.exchange().await
    }

    async fn session_end(&mut self, session_id: u64) -> ClientEvent {
        self.c.session_end(Instant::now(), wall_ms(), session_id);
        self.exchange().await
    }
}

fn setup(name: &str) -> (PathBuf, AuthorityKeyPair) {
    let dir = common::scratch(name);
    make_certs(&dir);
    let kp = AuthorityKeyPair::generate().unwrap();
    write_config(&dir, &kp);
    (dir, kp)
}

fn escrowed(ev: ClientEvent) -> u64 {
    match ev {
        ClientEvent::Escrowed { session_id, .. } => session_id,
        other => panic!("not escrowed: {other:?}"),
    }
}

fn assert_keys(kp: &AuthorityKeyPair, db: &Path, session_id: u64, generation: u32, key: u8) {
    let mut store = SqliteStore::open(db).unwrap();
    let gens = store.generations(session_id).unwrap();
    let rec = gens
        .iter()
        .find(|r| r.generation == generation)
        .unwrap_or_else(|| panic!("generation {generation} stored: {gens:?}"));
    assert_eq!(rec.gateway, "gw1.a.example");
    let keys = open_session(kp, rec).expect("the authority opens the record");
    let want = streams(key);
    assert_eq!(keys.len(), want.len());
    for (a, b) in keys.iter().zip(&want) {
        assert_eq!(*a.master.0, *b.master.0);
        assert_eq!((a.src, a.dst, a.ssrc), (b.src, b.dst, b.ssrc));
    }
}

#[tokio::test]
async fn escrows_a_key_update_and_stores_it_sealed() {
    let (dir, kp) = setup("spg_escrow_basic");
    let spg = Spg::start(&dir, "spg.log");
    let mut gw = Gateway::connect(&dir, spg.addr, wall_ms()).await;
    let id = escrowed(gw.key_update("c1@gw1.a.example", None, 0x11).await);
    assert_ne!(id, 0);
    // The reply means the keys are stored: look right away.
    assert_keys(&kp, &dir.join("spg-keys.db"), id, 0, 0x11);
    // Rekey: the next generation, the first one kept.
    assert_eq!(
        escrowed(gw.key_update("c1@gw1.a.example", Some(id), 0x22).await),
        id
    );
    assert_keys(&kp, &dir.join("spg-keys.db"), id, 1, 0x22);
    assert_keys(&kp, &dir.join("spg-keys.db"), id, 0, 0x11);
    // A second key_update for the call without its session_ID: 409.
    assert!(matches!(
        gw.key_update("c1@gw1.a.example", None, 0x33).await,
        ClientEvent::Refused { code: 409, .. }
    ));
    assert!(matches!(
        gw.session_end(id).await,
        ClientEvent::Ended { session_id, .. } if session_id == id
    ));
    let mut store = SqliteStore::open(dir.join("spg-keys.db")).unwrap();
    assert!(store.get(id).unwrap().unwrap().ended_ms.is_some());
    assert!(store.list_live().unwrap().is_empty());
    // The counters.
    let m = {
        let mut c = tokio::net::TcpStream::connect(spg.metrics.expect("metrics listener"))
            .await
            .unwrap();
        c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut c, &mut out)
            .await
            .unwrap();
        out
    };
    for want in [
        "voxgate_escrow_sessions_escrowed_total 1\n",
        "voxgate_escrow_rekeys_total 1\n",
        "voxgate_escrow_sessions_ended_total 1\n",
        "voxgate_escrow_requests_refused_total{code=\"409\"} 1\n",
        "voxgate_escrow_sessions_live 0\n",
    ] {
        assert!(m.contains(want), "{want:?} not in\n{m}");
    }
    // No key material in the log.
    let log = std::fs::read_to_string(dir.join("spg.log")).unwrap();
    assert!(log.contains("escrowed"), "{log}");
    for k in [0x11u8, 0x22] {
        let hex: String = std::iter::repeat_n(format!("{k:02x}"), 8).collect();
        assert!(!log.contains(&hex));
        assert!(!log.contains(&format!("{k}, {k}, {k}")));
    }
}

#[tokio::test]
async fn refuses_unconfigured_gateways_and_clients_without_certificates() {
    let (dir, _kp) = setup("spg_escrow_refusals");
    let spg = Spg::start(&dir, "spg.log");
    // gw9 has a valid certificate from the CA but is not configured.
    let mut refused = false;
    match connect(&connector(&dir, Some("gw9")), spg.addr).await {
        Err(_) => refused = true,
        Ok(mut s) => {
            let f = Message::SessionEnd(voxgate_escrow::wire::SessionEnd {
                request_id: 1,
                time_ms: wall_ms(),
                session_id: 5,
            })
            .encode();
            let _ = s.write_all(&f).await;
            let (got, closed) = read_until_closed(&mut s, Duration::from_secs(5)).await;
            assert!(got.is_empty(), "gw9 got an answer: {got:02x?}");
            refused |= closed;
        }
    }
    assert!(refused, "gw9's connection was not closed");
    // No client certificate at all.
    let mut refused = false;
    match connect(&connector(&dir, None), spg.addr).await {
        Err(_) => refused = true,
        Ok(mut s) => {
            let _ = s.write_all(&[1, 3, 0, 0, 0, 0]).await;
            let (got, closed) = read_until_closed(&mut s, Duration::from_secs(5)).await;
            assert!(got.is_empty());
            refused |= closed;
        }
    }
    assert!(refused, "an unauthenticated client was not refused");
    // The refusal is logged with the certificate's name.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = std::fs::read_to_string(dir.join("spg.log")).unwrap();
    assert!(
        log.contains("escrow connection refused") && log.contains("gw9.a.example"),
        "{log}"
    );
    // gw1 still works.
    let mut gw = Gateway::connect(&dir, spg.addr, wall_ms()).await;
    escrowed(gw.key_update("c2@gw1.a.example", None, 1).await);
}

async fn error_then_close(dir: &Path, addr: SocketAddr, bytes: &[u8]) -> (u16, u8) {
    let mut s = connect(&connector(dir, Some("gw1")), addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let (got, closed) = read_until_closed(&mut s, Duration::from_secs(10)).await;
    assert!(closed, "the connection stays open after {bytes:02x?}");
    let (m, n) = Message::decode(&got).expect("an error frame");
    assert_eq!(n, got.len(), "only the error frame");
    let Message::Error(e) = m else {
        panic!("not an error frame: {m:?}")
    };
    (e.code, got[0])
}

#[tokio::test]
async fn malformed_frames_get_400_and_unknown_versions_505_then_close() {
    let (dir, _kp) = setup("spg_escrow_malformed");
    let spg = Spg::start(&dir, "spg.log");
    // A key_update whose payload is not CBOR.
    let (code, _) = error_then_close(&dir, spg.addr, &[1, 1, 0, 0, 0, 3, 0xff, 0xff, 0xff]).await;
    assert_eq!(code, 400);
    // An unknown frame type.
    let (code, _) = error_then_close(&dir, spg.addr, &[1, 0x55, 0, 0, 0, 0]).await;
    assert_eq!(code, 400);
    // Version 2: 505, answered in version 1.
    let (code, version) = error_then_close(&dir, spg.addr, &[2, 1, 0, 0, 0, 0]).await;
    assert_eq!((code, version), (505, 1));
    // Too large a payload: 413.
    let (code, _) = error_then_close(&dir, spg.addr, &[1, 1, 0, 1, 0, 0]).await;
    assert_eq!(code, 413);
}

#[tokio::test]
async fn survives_kill_9_and_answers_rekeys_of_restored_sessions() {
    let (dir, kp) = setup("spg_escrow_restart");
    let db = dir.join("spg-keys.db");
    let mut spg = Spg::start(&dir, "spg-1.log");
    let mut gw = Gateway::connect(&dir, spg.addr, wall_ms()).await;
    let id = escrowed(gw.key_update("c3@gw1.a.example", None, 0x44).await);
    let other = escrowed(gw.key_update("c4@gw1.a.example", None, 0x55).await);
    spg.kill9();
    drop(gw);
    // The stored sessions survive and open.
    assert_keys(&kp, &db, id, 0, 0x44);
    assert_keys(&kp, &db, other, 0, 0x55);

    let spg = Spg::start(&dir, "spg-2.log");
    let log = std::fs::read_to_string(dir.join("spg-2.log")).unwrap();
    assert!(log.contains("must rekey"), "{log}");
    // A new connection; request ids keep increasing (the client starts from the clock).
    let mut gw = Gateway::connect(&dir, spg.addr, wall_ms() + 1_000).await;
    // The restored session cannot be escrowed again without its session_ID (409) ...
    assert!(matches!(
        gw.key_update("c3@gw1.a.example", None, 0x44).await,
        ClientEvent::Refused { code: 409, .. }
    ));
    // ... but is rekeyed under it: generation 1, stored next to generation 0.
    assert_eq!(
        escrowed(gw.key_update("c3@gw1.a.example", Some(id), 0x66).await),
        id
    );
    assert_keys(&kp, &db, id, 1, 0x66);
    assert_keys(&kp, &db, id, 0, 0x44);
    // The other restored session ends normally; an unknown one is 404.
    assert!(matches!(
        gw.session_end(other).await,
        ClientEvent::Ended { session_id, .. } if session_id == other
    ));
    assert!(matches!(
        gw.session_end(other ^ 1).await,
        ClientEvent::Refused { code: 404, .. }
    ));
    let mut store = SqliteStore::open(&db).unwrap();
    assert!(store.get(other).unwrap().unwrap().ended_ms.is_some());
    let live: Vec<u64> = store
        .list_live()
        .unwrap()
        .iter()
        .map(|s| s.session_id)
        .collect();
    assert_eq!(live, vec![id]);
}

#[test]
fn check_config_loads_the_example_and_names_bad_keys() {
    let dir = common::scratch("spg_escrow_check_config");
    make_certs(&dir);
    let kp = AuthorityKeyPair::generate().unwrap();
    let cfg = write_config(&dir, &kp);
    let out = Command::new(common::voxgate())
        .args(["spg", "--check-config", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("configuration OK"));
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, text.replace("sqlite =", "sqlit =")).unwrap();
    let out = Command::new(common::voxgate())
        .args(["spg", "--check-config", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("sqlit"));
    // The example runs as is once examples/certs exists (it is made by `voxgate cert dev`).
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/spg.toml");
    let ex_dir = common::scratch("spg_escrow_example");
    std::fs::copy(&example, ex_dir.join("spg.toml")).unwrap();
    cert_cmd(&["cert", "dev", "--out", "certs"], &ex_dir);
    let out = Command::new(common::voxgate())
        .args(["spg", "--check-config", "--config"])
        .arg(ex_dir.join("spg.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
