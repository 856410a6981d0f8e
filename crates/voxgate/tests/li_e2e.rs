//! Lawful interception end to end with the real binary on loopback.
//!
//! - `voxgate demo`: two SPGs, two voice gateways, the mediation, an agency; a warrant on
//!   alice approved by two officers; alice's call to bob intercepted while carol's call to dave
//!   (not a target) runs in parallel. Checked here independently of the demo's own summary: the
//!   recovered audio equals the source samples (G.711, no loss), the IRI names only alice's call
//!   and comes in order, the audit logs verify with `voxgate li audit verify`, and every kind
//!   of tampering with them (edit, removal, insertion, reordering, truncation) is reported.
//! - `voxgate li serve` alone: the warrant API refuses what it must (destination not on the
//!   allow-list, expired window, unknown LIID, one approver twice, the creator approving,
//!   approving a deactivated warrant, a client without a certificate), every refusal is
//!   audited, the book and the audit log survive a restart, and a tampered audit log stops
//!   the node from starting.
//!
//! Needs root for the demo's loopback capture (CI runs as root).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

fn verify(dir: &Path, log: &str, public: &str) -> (bool, String) {
    let out = Command::new(common::voxgate())
        .args(["li", "audit", "verify", log, "--public", public])
        .current_dir(dir)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn the_demo_intercepts_only_the_target_and_its_audit_detects_tampering() {
    let dir = common::scratch("li_e2e_demo");
    let out = dir.join("out");
    let run = Command::new(common::voxgate())
        .args(["demo", "--out"])
        .arg(&out)
        .args(["--seconds", "5", "--json"])
        .current_dir(&dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    let summary: Value = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or(Value::Null);
    assert!(
        run.status.success() && summary["ok"] == json!(true),
        "the demo failed: {}\nstdout:\n{stdout}\nstderr:\n{}",
        run.status,
        String::from_utf8_lossy(&run.stderr)
    );
    // The recovered audio, against the source (alice plays the speech, bob it reversed).
    let speech = common::read_wav(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/audio/speech-8k.wav"
    )));
    let reversed: Vec<i16> = speech.iter().rev().copied().collect();
    let from = common::match_share(
        &common::read_wav(&out.join("intercepted/from-target.wav")),
        &speech,
    )
    .0;
    let to = common::match_share(
        &common::read_wav(&out.join("intercepted/to-target.wav")),
        &reversed,
    )
    .0;
    assert!(from > 0.98 && to > 0.98, "from {from}, to {to}");
    // The agency got the same content over the handover.
    let agency_dir = out.join("work/agency-out/DEMO-ALICE-1");
    let agency_from = std::fs::read_dir(&agency_dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with("-from-target.wav"))
        .expect("the agency's copy of the content");
    assert!(common::match_share(&common::read_wav(&agency_from), &speech).0 > 0.98);
    // IRI: only alice's call, in order, one correlation ID.
    let all: Vec<Value> = std::fs::read_to_string(out.join("iri.json"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // alice's registration at gw1.a.example: a REPORT; carol's is not reported.
    let reports: Vec<&Value> = all
        .iter()
        .filter(|r| r["type"] == json!("REPORT"))
        .collect();
    assert!(!reports.is_empty(), "{all:?}");
    assert_eq!(reports[0]["event"], json!("registration"));
    for r in &reports {
        assert!(
            r["event"] == json!("registration") || r["event"] == json!("deregistration"),
            "{r}"
        );
        assert!(
            r["caller"].as_str().unwrap().contains("alice@a.example"),
            "{r}"
        );
        assert_eq!(r["poi"], json!("gw1.a.example"));
    }
    let iri: Vec<Value> = all
        .into_iter()
        .filter(|r| r["type"] != json!("REPORT"))
        .collect();
    let kinds: Vec<String> = iri
        .iter()
        .map(|r| {
            format!(
                "{} {}",
                r["type"].as_str().unwrap(),
                r["event"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(kinds.first().map(String::as_str), Some("BEGIN attempt"));
    assert_eq!(kinds.last().map(String::as_str), Some("END release"));
    assert!(kinds.contains(&"CONTINUE answer".to_string()), "{kinds:?}");
    assert!(
        kinds.contains(&"CONTINUE key_update".to_string()),
        "{kinds:?}"
    );
    for (i, r) in iri.iter().enumerate() {
        assert_eq!(r["seq"], json!(i));
        assert_eq!(r["liid"], json!("DEMO-ALICE-1"));
        assert!(
            r["caller"].as_str().unwrap().contains("alice@a.example"),
            "{r}"
        );
        assert_eq!(r["correlation_id"], iri[0]["correlation_id"]);
        assert_eq!(r["matched_as"], json!("caller"));
    }
    // carol's call left no trace at the mediation.
    let li_log = std::fs::read_to_string(out.join("audit.log")).unwrap();
    assert!(!li_log.contains("carol") && !li_log.contains("dave"));
    let unseals = li_log.matches("\"key_unseal\"").count();
    assert_eq!(unseals, 1, "one session unsealed (alice's gateway's)");
    // The audit logs verify, and every kind of tampering is caught.
    let (ok, msg) = verify(&out, "audit.log", "@audit.pub");
    assert!(ok, "{msg}");
    let (ok, msg) = verify(&out, "spg-a-audit.log", "@spg-a-audit.pub");
    assert!(ok && msg.contains("key_update: 2"), "{msg}");
    let lines: Vec<&str> = li_log.lines().collect();
    assert!(lines.len() >= 6);
    let tampered: Vec<(&str, Vec<String>)> = vec![
        (
            "edited",
            lines
                .iter()
                .enumerate()
                .map(|(i, l)| {
                    if i == 2 {
                        l.replacen("officer-", "officer-9", 1)
                    } else {
                        l.to_string()
                    }
                })
                .collect(),
        ),
        (
            "removed",
            lines
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != 3)
                .map(|(_, l)| l.to_string())
                .collect(),
        ),
        ("inserted", {
            let mut v: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
            v.insert(3, lines[2].to_string());
            v
        }),
        ("reordered", {
            let mut v: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
            v.swap(2, 3);
            v
        }),
        (
            "truncated",
            lines[..lines.len() - 1]
                .iter()
                .map(|l| l.to_string())
                .collect(),
        ),
    ];
    for (what, v) in tampered {
        let name = format!("audit-{what}.log");
        std::fs::write(out.join(&name), v.join("\n") + "\n").unwrap();
        std::fs::copy(out.join("audit.log.head"), out.join(format!("{name}.head"))).unwrap();
        let (ok, msg) = verify(&out, &name, "@audit.pub");
        assert!(!ok && msg.contains("TAMPERED"), "{what}: {msg}");
    }
    // The wire capture exists (root).
    assert!(std::fs::metadata(out.join("wire.pcap")).unwrap().len() > 10_000);
}

// ---------------------------------------------------------------------------------------------
// The warrant API alone

struct Li {
    child: Child,
    log: std::path::PathBuf,
}

impl Li {
    fn start(dir: &Path) -> Li {
        let log = dir.join("li.log");
        let mut child = Command::new(common::voxgate())
            .args(["li", "serve", "--config", "li.toml"])
            .current_dir(dir)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let mut lines = BufReader::new(out).lines();
        loop {
            match lines.next() {
                Some(Ok(l)) if l == "ready" => break,
                Some(Ok(_)) => {}
                _ => panic!(
                    "li serve did not start:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                ),
            }
        }
        Li { child, log }
    }

    fn stop(mut self) {
        // SAFETY: kill(2) on our child.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "li serve did not stop; log:\n{}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }
}

impl Drop for Li {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const API: &str = "127.0.46.5:7443";

fn tls_config(dir: &Path, officer: Option<&str>) -> rustls::ClientConfig {
    let pem = |p: &str| std::fs::read(dir.join(p)).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut &pem("certs/ca.pem")[..]) {
        roots.add(c.unwrap()).unwrap();
    }
    let b = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    match officer {
        Some(o) => {
            let chain: Vec<_> = rustls_pemfile::certs(&mut &pem(&format!("certs/{o}.pem"))[..])
                .map(|c| c.unwrap())
                .collect();
            let key = rustls_pemfile::private_key(&mut &pem(&format!("certs/{o}.key"))[..])
                .unwrap()
                .unwrap();
            b.with_client_auth_cert(chain, key).unwrap()
        }
        None => b.with_no_client_auth(),
    }
}

/// One API request as `officer`; (status, JSON body).
fn api(
    dir: &Path,
    officer: Option<&str>,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> std::io::Result<(u16, Value)> {
    let tcp = TcpStream::connect(API)?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let conn = rustls::ClientConnection::new(
        Arc::new(tls_config(dir, officer)),
        rustls::pki_types::ServerName::try_from("li.example").unwrap(),
    )
    .unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let ct = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/json\r\n"
    };
    write!(
        tls,
        "{method} {path} HTTP/1.1\r\nHost: li.example\r\n{ct}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    tls.flush()?;
    let mut resp = Vec::new();
    tls.read_to_end(&mut resp)?;
    let text = String::from_utf8_lossy(&resp).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let json = text
        .split_once("\r\n\r\n")
        .and_then(|(_, b)| serde_json::from_str(b).ok())
        .unwrap_or(Value::Null);
    Ok((status, json))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[test]
fn the_warrant_api_refuses_abuse_audits_it_and_survives_a_restart() {
    let dir = common::scratch("li_e2e_api");
    common::run_ok(&dir, &["cert", "ca", "--out", "certs"]);
    for (name, ip, client) in [
        ("li.example", Some("127.0.46.5"), false),
        ("officer-1", None, true),
        ("officer-2", None, true),
        ("officer-3", None, true),
    ] {
        let mut args = vec![
            "cert",
            "issue",
            "--ca-cert",
            "certs/ca.pem",
            "--ca-key",
            "certs/ca.key",
            "--name",
            name,
        ];
        let (c, k) = (format!("certs/{name}.pem"), format!("certs/{name}.key"));
        args.extend(["--out-cert", &c, "--out-key", &k]);
        if let Some(ip) = ip {
            args.extend(["--ip", ip]);
        }
        if client {
            args.push("--client-only");
        }
        common::run_ok(&dir, &args);
    }
    common::run_ok(&dir, &["li", "keygen", "--out", "keys"]);
    std::fs::write(
        dir.join("li.toml"),
        r#"node = "li-test"
[api]
listen = "127.0.46.5:7443"
cert = "certs/li.example.pem"
key = "certs/li.example.key"
client_ca = "certs/ca.pem"
[x2x3]
listen = "127.0.46.5:7444"
cert = "certs/li.example.pem"
key = "certs/li.example.key"
client_ca = "certs/ca.pem"
pois = ["spg-a"]
[authority]
secret_file = "keys/authority.key"
[audit]
path = "audit.log"
key = "keys/audit.key"
[warrants]
path = "warrants.json"
[[destination]]
name = "agency-1"
address = "127.0.46.6:7700"
server_name = "agency.example"
ca = "certs/ca.pem"
[output]
dir = "out"
"#,
    )
    .unwrap();
    let li = Li::start(&dir);
    let now = now_ms();
    let req = |liid: &str, target: &str, start: u64, end: u64, dest: &str| {
        json!({"liid": liid, "targets": [target], "start_ms": start, "end_ms": end,
               "delivery": "iri_and_content", "destination": dest})
    };
    let post = |who: &str, path: &str, body: Option<Value>| {
        api(&dir, Some(who), "POST", path, body).unwrap()
    };
    // A destination not on the allow-list.
    let (s, b) = post(
        "officer-1",
        "/v1/warrants",
        Some(req(
            "W-1",
            "sip:alice@a.example",
            now,
            now + 60_000,
            "elsewhere",
        )),
    );
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (422, Some("destination_not_allowed")),
        "{b}"
    );
    // An expired window.
    let (s, b) = post(
        "officer-1",
        "/v1/warrants",
        Some(req(
            "W-1",
            "sip:alice@a.example",
            now - 120_000,
            now - 60_000,
            "agency-1",
        )),
    );
    assert_eq!(s, 422, "{b}");
    // Created; approvals: unknown LIID, the creator, one approver twice.
    let (s, b) = post(
        "officer-1",
        "/v1/warrants",
        Some(req(
            "W-1",
            "sip:alice@a.example",
            now,
            now + 600_000,
            "agency-1",
        )),
    );
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["status"], json!("pending_approval"), "{b}");
    let (s, b) = post("officer-2", "/v1/warrants/NOPE/approve", None);
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (404, Some("unknown_liid")),
        "{b}"
    );
    let (s, _) = post("officer-1", "/v1/warrants/W-1/approve", None);
    assert_eq!(s, 403);
    let (s, _) = post("officer-2", "/v1/warrants/W-1/approve", None);
    assert_eq!(s, 200);
    let (s, b) = post("officer-2", "/v1/warrants/W-1/approve", None);
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (403, Some("same_approver_twice")),
        "{b}"
    );
    let (s, b) = api(&dir, Some("officer-3"), "GET", "/v1/warrants/W-1", None).unwrap();
    assert_eq!(
        (s, b["status"].as_str()),
        (200, Some("pending_approval")),
        "one approval is not enough: {b}"
    );
    let (s, b) = post("officer-3", "/v1/warrants/W-1/approve", None);
    assert_eq!((s, b["status"].as_str()), (200, Some("active")), "{b}");
    // A target with no calls: active, nothing happens.
    let (s, _) = post(
        "officer-1",
        "/v1/warrants",
        Some(req(
            "W-2",
            "sip:nobody@a.example",
            now,
            now + 600_000,
            "agency-1",
        )),
    );
    assert_eq!(s, 201);
    // Deactivated: approving it afterwards is refused.
    let (s, b) = api(
        &dir,
        Some("officer-2"),
        "POST",
        "/v1/warrants/W-2/deactivate",
        Some(json!({"reason": "withdrawn"})),
    )
    .unwrap();
    assert_eq!((s, b["status"].as_str()), (200, Some("deactivated")), "{b}");
    let (s, _) = post("officer-3", "/v1/warrants/W-2/approve", None);
    assert_eq!(s, 409);
    // No client certificate: no API.
    assert!(
        !matches!(api(&dir, None, "GET", "/v1/warrants", None), Ok((200, _))),
        "the API answered a client without a certificate"
    );
    li.stop();
    // Every refusal and change is in the audit log, which verifies.
    let log = std::fs::read_to_string(dir.join("audit.log")).unwrap();
    assert!(log.matches("\"warrant_refused\"").count() >= 6, "{log}");
    let (ok, msg) = verify(&dir, "audit.log", "@keys/audit.pub");
    assert!(ok, "{msg}");
    let entries = log.lines().count();
    // Restart: the book and the log go on.
    let li = Li::start(&dir);
    let (s, b) = api(&dir, Some("officer-3"), "GET", "/v1/warrants/W-1", None).unwrap();
    assert_eq!((s, b["status"].as_str()), (200, Some("active")), "{b}");
    let (s, b) = api(&dir, Some("officer-3"), "GET", "/v1/warrants/W-2", None).unwrap();
    assert_eq!((s, b["status"].as_str()), (200, Some("deactivated")), "{b}");
    li.stop();
    let log2 = std::fs::read_to_string(dir.join("audit.log")).unwrap();
    assert!(log2.lines().count() > entries);
    let (ok, msg) = verify(&dir, "audit.log", "@keys/audit.pub");
    assert!(ok, "{msg}");
    // A tampered log: the node refuses to extend it.
    let edited = log2.replacen("officer-2", "officer-7", 1);
    std::fs::write(dir.join("audit.log"), edited).unwrap();
    let out = Command::new(common::voxgate())
        .args(["li", "serve", "--config", "li.toml"])
        .current_dir(&dir)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("refusing to extend"),
        "{err}"
    );
}
