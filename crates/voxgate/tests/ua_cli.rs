//! `voxgate ua`: real binaries calling each other over loopback. A direct TLS call carries the
//! caller's audio through SRTP bit-exact (after G.711), the encryption policies give 488 where
//! they must and report unencrypted calls, a registration with digest works against a
//! registrar built from `voxgate-sip`, and bad input is refused with a clear message.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("voxgate-ua-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn voxgate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_voxgate"))
}

fn certs(dir: &Path) -> PathBuf {
    let c = dir.join("certs");
    let out = voxgate()
        .args(["cert", "dev", "--out", c.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    c
}

/// A deterministic test signal: a 440 Hz tone plus noise, so that the alignment is unique.
fn test_signal(seconds: usize) -> Vec<i16> {
    let mut x: u32 = 0x1234_5678;
    (0..8000 * seconds)
        .map(|i| {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let noise = ((x >> 16) as i32 - 32768) / 16;
            let tone =
                (6000.0 * (2.0 * std::f64::consts::PI * 440.0 * i as f64 / 8000.0).sin()) as i32;
            (tone + noise) as i16
        })
        .collect()
}

fn write_wav(p: &Path, rate: u32, channels: u16, samples: &[i16]) {
    let spec = hound::WavSpec {
        channels,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(p, spec).unwrap();
    for s in samples {
        w.write_sample(*s).unwrap();
    }
    w.finalize().unwrap();
}

fn read_wav(p: &Path) -> Vec<i16> {
    let r = hound::WavReader::open(p).unwrap();
    let s = r.spec();
    assert_eq!(
        (s.sample_rate, s.channels, s.bits_per_sample),
        (8000, 1, 16)
    );
    r.into_samples::<i16>().map(|s| s.unwrap()).collect()
}

/// ITU-T G.711 reference quantization (decode(encode(x))), written independently of the
/// binary's codec: mu-law and A-law.
fn ulaw_quantize(x: i16) -> i16 {
    // ITU-T G.191: negative values by their one's complement.
    let neg = x < 0;
    let mut v = if neg { !i32::from(x) } else { i32::from(x) } >> 2;
    v = v.min(8159) + 33;
    let seg = (0..8).find(|s| v < (64 << s)).unwrap_or(7);
    let mant = (v >> (seg + 1)) & 0xF;
    let level = (((mant << 3) + 0x84) << seg) - 0x84;
    if neg {
        -(level as i16)
    } else {
        level as i16
    }
}

fn alaw_quantize(x: i16) -> i16 {
    let mut v = i32::from(x) >> 3;
    let neg = v < 0;
    if neg {
        v = -v - 1;
    }
    let seg = (0..8).find(|s| v < (32 << s)).unwrap_or(7);
    let mant = if seg < 2 {
        (v >> 1) & 0xF
    } else {
        (v >> seg) & 0xF
    };
    let level = if seg == 0 {
        (mant << 4) + 8
    } else {
        ((mant << 4) + 0x108) << (seg - 1)
    };
    if neg {
        -(level as i16)
    } else {
        level as i16
    }
}

/// A running `voxgate ua` whose stdout lines arrive on a channel.
struct Ua {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: PathBuf,
}

impl Ua {
    fn start(args: &[&str], dir: &Path, name: &str) -> Ua {
        Ua::start_subcommand("ua", args, dir, name)
    }

    fn start_subcommand(sub: &str, args: &[&str], dir: &Path, name: &str) -> Ua {
        let stderr = dir.join(format!("{name}.stderr"));
        let mut child = voxgate()
            .arg(sub)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines() {
                let Ok(l) = l else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Ua {
            child,
            lines,
            stderr,
        }
    }

    /// Waits for a stdout line starting with `prefix`.
    fn expect_line(&self, prefix: &str) -> String {
        loop {
            match self.lines.recv_timeout(Duration::from_secs(15)) {
                Ok(l) if l.starts_with(prefix) => return l,
                Ok(_) => {}
                Err(_) => panic!(
                    "no line {prefix:?}; stderr: {}",
                    std::fs::read_to_string(&self.stderr).unwrap_or_default()
                ),
            }
        }
    }

    fn listening(&self, transport: &str) -> String {
        let l = self.expect_line(&format!("listening {transport} "));
        l.rsplit(' ').next().unwrap().to_string()
    }

    /// Waits for the exit (at most 25 s); returns the status, the JSON summary and stderr.
    fn finish(mut self) -> Outcome {
        let mut code = None;
        for _ in 0..250 {
            if let Some(s) = self.child.try_wait().unwrap() {
                code = Some(s.code().unwrap_or(-1));
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let code = code.unwrap_or_else(|| {
            let _ = self.child.kill();
            panic!(
                "voxgate ua did not exit; stderr: {}",
                std::fs::read_to_string(&self.stderr).unwrap_or_default()
            )
        });
        let mut json = None;
        while let Ok(l) = self.lines.recv_timeout(Duration::from_millis(500)) {
            if l.starts_with('{') {
                json = Some(serde_json::from_str(&l).unwrap());
            }
        }
        (
            code,
            json,
            std::fs::read_to_string(&self.stderr).unwrap_or_default(),
        )
    }
}

impl Drop for Ua {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn direct_tls_call_carries_the_audio_through_srtp() {
    let dir = tmpdir("direct");
    let c = certs(&dir);
    let speech = dir.join("speech.wav");
    let source = test_signal(5);
    write_wav(&speech, 8000, 1, &source);
    let (bob_wav, alice_wav) = (dir.join("bob.wav"), dir.join("alice.wav"));
    let bob = Ua::start(
        &[
            "--user",
            "bob@b.example",
            "--answer",
            "--tls-cert",
            s(&c.join("server.pem")),
            "--tls-key",
            s(&c.join("server.key")),
            "--listen",
            "127.0.0.1:0",
            "--record",
            s(&bob_wav),
            "--encryption",
            "mandatory",
            "--json",
        ],
        &dir,
        "bob",
    );
    let addr = bob.listening("tls");
    bob.expect_line("ready");
    let alice = Ua::start(
        &[
            "--user",
            "alice@a.example",
            "--call",
            &format!("sip:bob@{addr};transport=tls"),
            "--ca",
            s(&c.join("ca.pem")),
            "--play",
            s(&speech),
            "--record",
            s(&alice_wav),
            "--duration",
            "3",
            "--json",
        ],
        &dir,
        "alice",
    );
    let (acode, ajson, aerr) = alice.finish();
    let (bcode, bjson, berr) = bob.finish();
    assert_eq!(acode, 0, "alice: {aerr}");
    assert_eq!(bcode, 0, "bob: {berr}");
    let (aj, bj) = (ajson.expect("alice JSON"), bjson.expect("bob JSON"));
    for (who, j) in [("alice", &aj), ("bob", &bj)] {
        assert_eq!(j["calls"], 1, "{who}: {j}");
        assert_eq!(j["encrypted"], true, "{who}: {j}");
        assert_eq!(j["final_status"], 200, "{who}: {j}");
        let suite = j["suite"].as_str().unwrap_or_default();
        assert!(
            suite == "AES_CM_128_HMAC_SHA1_80" || suite == "AEAD_AES_128_GCM",
            "{who}: {j}"
        );
        assert!(j["rtp_received"].as_u64().unwrap() > 100, "{who}: {j}");
        assert!(j["rtp_sent"].as_u64().unwrap() > 100, "{who}: {j}");
        assert_eq!(j["srtp_auth_failures"], 0, "{who}: {j}");
        let ms = j["duration_ms"].as_u64().unwrap();
        assert!(
            (2500..6000).contains(&ms),
            "{who}: a 3 s call lasted {ms} ms"
        );
    }
    // No key material on any output.
    for out in [&aerr, &berr] {
        assert!(!out.contains("inline:"), "{out}");
    }

    // Bob's recording is alice's WAV after G.711, sample for sample: find where it starts.
    let rec = read_wav(&bob_wav);
    assert!(rec.len() >= 8000 * 2, "bob recorded {} samples", rec.len());
    let first = rec
        .iter()
        .position(|x| *x != 0)
        .expect("bob recorded only silence");
    let window = &rec[first..first + 160];
    let (quantized, offset) = [ulaw_quantize as fn(i16) -> i16, alaw_quantize]
        .iter()
        .find_map(|q| {
            let qs: Vec<i16> = source.iter().map(|x| q(*x)).collect();
            let at = qs.windows(160).position(|w| w == window)?;
            Some((qs, at))
        })
        .expect("bob's audio is not the G.711 of alice's WAV");
    let n = (rec.len() - first).min(quantized.len() - offset);
    let same = rec[first..first + n]
        .iter()
        .zip(&quantized[offset..offset + n])
        .filter(|(a, b)| a == b)
        .count();
    assert!(n >= 8000 * 2, "only {n} aligned samples");
    assert!(
        same as f64 >= 0.98 * n as f64,
        "{same} of {n} samples match the quantized source"
    );
    // Alice got bob's silence.
    let a = read_wav(&alice_wav);
    assert!(a.len() >= 8000 * 2 && a.iter().all(|x| *x == 0));
}

/// Exit status, JSON summary, stderr.
type Outcome = (i32, Option<serde_json::Value>, String);

/// Runs a call between a callee and a caller with these policies; returns both outcomes.
fn call_with_policies(
    name: &str,
    caller: &str,
    callee: &str,
    transport: &str,
) -> (Outcome, Outcome) {
    let dir = tmpdir(name);
    let c = certs(&dir);
    let mut bob_args = vec![
        "--user",
        "bob@b.example",
        "--answer",
        "--encryption",
        callee,
        "--json",
        "--transport",
        transport,
    ];
    let (cert, key) = (c.join("server.pem"), c.join("server.key"));
    if transport == "tls" {
        bob_args.extend(["--tls-cert", s(&cert), "--tls-key", s(&key)]);
    }
    let bob = Ua::start(&bob_args, &dir, "bob");
    let addr = bob.listening(transport);
    bob.expect_line("ready");
    let target = format!("sip:bob@{addr};transport={transport}");
    let ca = c.join("ca.pem");
    let alice = Ua::start(
        &[
            "--user",
            "alice@a.example",
            "--call",
            &target,
            "--ca",
            s(&ca),
            "--encryption",
            caller,
            "--duration",
            "1",
            "--json",
            "--transport",
            transport,
        ],
        &dir,
        "alice",
    );
    let a = alice.finish();
    let b = bob.finish();
    (a, b)
}

#[test]
fn mandatory_caller_and_plain_callee_end_in_488() {
    let ((acode, ajson, aerr), (_, bjson, berr)) =
        call_with_policies("m-off", "mandatory", "off", "tls");
    assert_ne!(acode, 0);
    assert!(aerr.contains("488"), "the caller names the 488: {aerr}");
    let aj = ajson.expect("alice JSON");
    assert_eq!(aj["final_status"], 488);
    assert_eq!(aj["calls"], 0);
    assert_eq!(bjson.expect("bob JSON")["calls"], 0, "{berr}");
}

#[test]
fn plain_caller_and_mandatory_callee_end_in_488() {
    let ((acode, ajson, aerr), (_, _, berr)) =
        call_with_policies("off-m", "off", "mandatory", "tls");
    assert_ne!(acode, 0);
    assert!(aerr.contains("488"), "{aerr}");
    assert_eq!(ajson.expect("alice JSON")["final_status"], 488);
    assert!(
        berr.contains("488"),
        "the callee says why it refused: {berr}"
    );
}

#[test]
fn optional_caller_and_plain_callee_make_an_unencrypted_call_and_say_so() {
    let ((acode, ajson, aerr), (bcode, bjson, berr)) =
        call_with_policies("opt-off", "optional", "off", "tls");
    assert_eq!(acode, 0, "{aerr}");
    assert_eq!(bcode, 0, "{berr}");
    let aj = ajson.expect("alice JSON");
    assert_eq!(aj["encrypted"], false, "{aj}");
    assert_eq!(aj["suite"], serde_json::Value::Null);
    assert_eq!(aj["calls"], 1);
    assert!(aj["rtp_received"].as_u64().unwrap() > 20, "{aj}");
    assert!(aerr.contains("call unencrypted"), "{aerr}");
    assert_eq!(bjson.expect("bob JSON")["encrypted"], false);
}

#[test]
fn optional_policies_over_udp_negotiate_srtp() {
    let ((acode, ajson, aerr), (bcode, bjson, berr)) =
        call_with_policies("opt-opt-udp", "optional", "optional", "udp");
    assert_eq!(acode, 0, "{aerr}");
    assert_eq!(bcode, 0, "{berr}");
    for j in [ajson.expect("alice JSON"), bjson.expect("bob JSON")] {
        assert_eq!(j["encrypted"], true, "{j}");
        assert!(j["rtp_received"].as_u64().unwrap() > 20, "{j}");
    }
}

#[test]
fn a_44k_stereo_wav_is_refused_with_a_clear_error() {
    let dir = tmpdir("badwav");
    let wav = dir.join("cd.wav");
    write_wav(&wav, 44_100, 2, &[0i16; 4410]);
    let out = voxgate()
        .args([
            "ua",
            "--user",
            "alice@a.example",
            "--call",
            "sip:bob@127.0.0.1:9;transport=tls",
        ])
        .args(["--play", s(&wav)])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("44100 Hz") && err.contains("8000 Hz mono 16-bit"),
        "{err}"
    );
    assert!(
        out.stdout.is_empty(),
        "nothing starts: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn a_missing_password_file_is_a_clear_error() {
    let dir = tmpdir("nopw");
    let missing = dir.join("no-such-password");
    let out = voxgate()
        .args([
            "ua",
            "--user",
            "alice@a.example",
            "--register",
            "--proxy",
            "127.0.0.1:9",
        ])
        .args(["--password-file", s(&missing)])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot read the password file"), "{err}");
    assert!(err.contains("no-such-password"), "{err}");
    let out = voxgate()
        .args([
            "ua",
            "--user",
            "alice@a.example",
            "--register",
            "--proxy",
            "127.0.0.1:9",
        ])
        .args(["--password-env", "VOXGATE_TEST_SURELY_UNSET"])
        .env_remove("VOXGATE_TEST_SURELY_UNSET")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("VOXGATE_TEST_SURELY_UNSET"));
}

/// Both users register with the real `voxgate proxy` (digest), alice calls bob through it
/// (digest on the INVITE, Record-Route), SRTP flows both ways, and both de-register at the end.
#[test]
fn call_through_voxgate_proxy() {
    let dir = tmpdir("proxy");
    let _ = certs(&dir);
    let conf = dir.join("proxy.toml");
    std::fs::write(
        &conf,
        "[[listen]]\ntransport = \"tls\"\naddress = \"127.0.0.1:0\"\n\
[tls]\ncert = \"certs/server.pem\"\nkey = \"certs/server.key\"\n\
[[domain]]\nname = \"a.example\"\nencryption = \"mandatory\"\n\
[[domain.user]]\nname = \"alice\"\npassword = \"pw alice\"\n\
[[domain.user]]\nname = \"bob\"\npassword = \"pw bob\"\n",
    )
    .unwrap();
    let proxy = Ua::start_subcommand("proxy", &["--config", s(&conf)], &dir, "proxy");
    let addr = proxy.listening("tls");
    let ca = dir.join("certs/ca.pem");
    let (apw, bpw) = (dir.join("alice.pw"), dir.join("bob.pw"));
    std::fs::write(&apw, "pw alice\n").unwrap();
    std::fs::write(&bpw, "pw bob\n").unwrap();
    let speech = dir.join("speech.wav");
    write_wav(&speech, 8000, 1, &test_signal(3));
    let bob = Ua::start(
        &[
            "--user",
            "bob@a.example",
            "--password-file",
            s(&bpw),
            "--register",
            "--answer",
            "--proxy",
            &addr,
            "--ca",
            s(&ca),
            "--json",
        ],
        &dir,
        "bob",
    );
    bob.expect_line("ready");
    let alice = Ua::start(
        &[
            "--user",
            "alice@a.example",
            "--password-file",
            s(&apw),
            "--register",
            "--call",
            "sip:bob@a.example",
            "--proxy",
            &addr,
            "--ca",
            s(&ca),
            "--play",
            s(&speech),
            "--duration",
            "2",
            "--json",
        ],
        &dir,
        "alice",
    );
    let (acode, ajson, aerr) = alice.finish();
    let (bcode, bjson, berr) = bob.finish();
    assert_eq!(acode, 0, "alice: {aerr}");
    assert_eq!(bcode, 0, "bob: {berr}");
    for j in [ajson.expect("alice JSON"), bjson.expect("bob JSON")] {
        assert_eq!(j["calls"], 1, "{j}");
        assert_eq!(j["encrypted"], true, "{j}");
        assert!(j["rtp_received"].as_u64().unwrap() > 50, "{j}");
        assert_eq!(j["srtp_auth_failures"], 0, "{j}");
    }
    drop(proxy);
}

mod registrar_stand_in {
    //! A registrar and "proxy" stand-in over TLS built from `voxgate-sip`'s registrar and
    //! digest server, until `voxgate proxy` exists: it challenges the REGISTER, then sends an
    //! INVITE (with Record-Route) back over the UA's own connection, as a proxy reusing the
    //! registration's connection does.

    use super::*;
    use std::net::IpAddr;
    use std::sync::Arc;
    use std::time::Instant;

    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, UdpSocket};
    use voxgate_rtp::SrtpSession;
    use voxgate_sip::digest::ha1;
    use voxgate_sip::registrar::{Registrar, RegistrarConfig};
    use voxgate_sip::sdp::{self, EncryptionPolicy, LocalMedia, Security, SessionDescription};
    use voxgate_sip::{
        Algorithm, DigestAuth, DigestConfig, Framing, ParseLimits, SipMessage, StartLine,
    };
    use zeroize::Zeroizing;

    /// Reads one SIP message from a stream.
    async fn next_message<S: AsyncReadExt + Unpin>(s: &mut S, buf: &mut Vec<u8>) -> Vec<u8> {
        loop {
            let skip = buf
                .iter()
                .take_while(|b| **b == b'\r' || **b == b'\n')
                .count();
            buf.drain(..skip);
            match SipMessage::parse(buf, Framing::Stream, &ParseLimits::default()) {
                Ok(m) => {
                    let n = m.len;
                    return buf.drain(..n).collect();
                }
                Err(e) => assert_eq!(e.kind, voxgate_sip::ErrorKind::Incomplete, "{e}"),
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
                .await
                .expect("timed out waiting for the UA")
                .unwrap();
            assert!(n > 0, "the UA closed the connection");
            buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn code(m: &[u8]) -> u16 {
        match SipMessage::parse(m, Framing::Datagram, &ParseLimits::default())
            .unwrap()
            .start
        {
            StartLine::Response { code, .. } => code,
            StartLine::Request { .. } => 0,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn registers_with_digest_then_answers_over_the_same_tls_connection() {
        let dir = tmpdir("register");
        let c = certs(&dir);
        let pw = dir.join("password");
        std::fs::write(&pw, "correct horse\n").unwrap();
        let load = |p: &Path| std::fs::read(p).unwrap();
        let chain: Vec<CertificateDer<'static>> =
            rustls_pemfile::certs(&mut &load(&c.join("server.pem"))[..])
                .collect::<Result<_, _>>()
                .unwrap();
        let key: PrivateKeyDer<'static> =
            rustls_pemfile::private_key(&mut &load(&c.join("server.key"))[..])
                .unwrap()
                .unwrap();
        let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = listener.local_addr().unwrap();

        let ua = Ua::start(
            &[
                "--user",
                "alice@a.example",
                "--password-file",
                s(&pw),
                "--register",
                "--answer",
                "--proxy",
                &proxy.to_string(),
                "--ca",
                s(&c.join("ca.pem")),
                "--json",
            ],
            &dir,
            "alice",
        );
        let (tcp, src) = tokio::time::timeout(Duration::from_secs(10), listener.accept())
            .await
            .unwrap()
            .unwrap();
        let mut tls = tokio_rustls::TlsAcceptor::from(Arc::new(cfg))
            .accept(tcp)
            .await
            .unwrap();
        let mut buf = Vec::new();

        // REGISTER: 401, then 200 with the digest answer.
        let mut registrar = Registrar::new(RegistrarConfig {
            domains: vec!["a.example".into()],
            ..Default::default()
        });
        let mut auth = DigestAuth::new(DigestConfig::new("a.example")).unwrap();
        let creds = |user: &str, alg: Algorithm| -> Option<Zeroizing<String>> {
            (user == "alice").then(|| ha1(alg, "alice", "a.example", "correct horse"))
        };
        let mut codes = Vec::new();
        let contact = loop {
            let req = next_message(&mut tls, &mut buf).await;
            let m = SipMessage::parse(&req, Framing::Datagram, &ParseLimits::default()).unwrap();
            assert_eq!(m.method(), Some("REGISTER"));
            let resp = registrar.handle_register(Instant::now(), src.ip(), &m, &mut auth, creds);
            codes.push(code(&resp));
            tls.write_all(&resp).await.unwrap();
            if code(&resp) == 200 {
                break registrar
                    .lookup(Instant::now(), "alice@a.example")
                    .first()
                    .unwrap()
                    .contact
                    .clone();
            }
            assert!(codes.len() < 3, "{codes:?}");
        };
        assert_eq!(codes, [401, 200]);
        assert!(contact.ends_with(";transport=tls"), "{contact}");
        let ua = tokio::task::spawn_blocking(move || {
            ua.expect_line("ready");
            ua
        })
        .await
        .unwrap();

        // An INVITE from "the proxy" over the same connection, with an offer whose RTP port
        // is ours.
        let rtp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let local = LocalMedia {
            address: IpAddr::from([127, 0, 0, 1]),
            port: rtp.local_addr().unwrap().port(),
            formats: vec![(0, "PCMU/8000".into())],
            suites: vec![voxgate_rtp::SrtpProfile::AesCm128HmacSha1_80],
        };
        let (offer, keys) = sdp::create_offer(EncryptionPolicy::Mandatory, &local).unwrap();
        let body = offer.to_bytes();
        let invite = format!(
            "INVITE {contact} SIP/2.0\r\nVia: SIP/2.0/TLS {proxy};branch=z9hG4bKproxy1\r\n\
Via: SIP/2.0/TLS 192.0.2.9:5061;branch=z9hG4bKcarol1\r\nMax-Forwards: 69\r\n\
Record-Route: <sip:{proxy};transport=tls;lr>\r\nFrom: <sip:carol@c.example>;tag=carol1\r\n\
To: <sip:alice@a.example>\r\nCall-ID: call-from-carol@c.example\r\nCSeq: 1 INVITE\r\n\
Contact: <sip:carol@192.0.2.9:5061;transport=tls>\r\nContent-Type: application/sdp\r\n\
Content-Length: {}\r\n\r\n",
            body.len()
        );
        let mut bytes = invite.into_bytes();
        bytes.extend_from_slice(&body);
        tls.write_all(&bytes).await.unwrap();
        let ringing = next_message(&mut tls, &mut buf).await;
        assert_eq!(code(&ringing), 180);
        let ok = next_message(&mut tls, &mut buf).await;
        assert_eq!(code(&ok), 200);
        let okm = SipMessage::parse(&ok, Framing::Datagram, &ParseLimits::default()).unwrap();
        // RFC 3261 §12.1.1: the Record-Route comes back in the 2xx.
        assert!(okm
            .headers
            .iter()
            .any(|h| h.name.eq_ignore_ascii_case(b"Record-Route")));
        let to_tag = String::from_utf8(okm.to().unwrap().param("tag").unwrap().to_vec()).unwrap();
        let answer = SessionDescription::parse(okm.body).unwrap();
        let Security::Srtp { receive, .. } =
            sdp::accept_answer(EncryptionPolicy::Mandatory, &keys, &answer).unwrap()
        else {
            panic!("mandatory answered without SRTP")
        };
        let ack = format!(
            "ACK {contact} SIP/2.0\r\nVia: SIP/2.0/TLS {proxy};branch=z9hG4bKproxy2\r\n\
Max-Forwards: 70\r\nFrom: <sip:carol@c.example>;tag=carol1\r\n\
To: <sip:alice@a.example>;tag={to_tag}\r\nCall-ID: call-from-carol@c.example\r\n\
CSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
        );
        tls.write_all(ack.as_bytes()).await.unwrap();
        // Alice's SRTP arrives and authenticates with the key in her answer.
        let mut srtp = SrtpSession::new(receive.to_policy().unwrap()).unwrap();
        let mut good = 0;
        let mut pkt = vec![0u8; 2048];
        while good < 10 {
            let n = tokio::time::timeout(Duration::from_secs(5), rtp.recv(&mut pkt))
                .await
                .expect("no RTP from the UA")
                .unwrap();
            let mut p = pkt[..n].to_vec();
            srtp.unprotect_rtp_vec(&mut p).unwrap();
            good += 1;
        }
        let bye = format!(
            "BYE {contact} SIP/2.0\r\nVia: SIP/2.0/TLS {proxy};branch=z9hG4bKproxy3\r\n\
Max-Forwards: 70\r\nFrom: <sip:carol@c.example>;tag=carol1\r\n\
To: <sip:alice@a.example>;tag={to_tag}\r\nCall-ID: call-from-carol@c.example\r\n\
CSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"
        );
        tls.write_all(bye.as_bytes()).await.unwrap();
        let r = next_message(&mut tls, &mut buf).await;
        assert_eq!(code(&r), 200);
        // Done (one call): the UA removes its binding (Expires: 0), authenticated, then exits.
        let mut codes = Vec::new();
        while codes.last() != Some(&200) && codes.len() < 3 {
            let req = next_message(&mut tls, &mut buf).await;
            let m = SipMessage::parse(&req, Framing::Datagram, &ParseLimits::default()).unwrap();
            assert_eq!(m.method(), Some("REGISTER"));
            let resp = registrar.handle_register(Instant::now(), src.ip(), &m, &mut auth, creds);
            codes.push(code(&resp));
            tls.write_all(&resp).await.unwrap();
        }
        assert_eq!(codes, [401, 200]);
        assert!(registrar
            .lookup(Instant::now(), "alice@a.example")
            .is_empty());
        let (status, json, err) = tokio::task::spawn_blocking(move || ua.finish())
            .await
            .unwrap();
        assert_eq!(status, 0, "{err}");
        let j = json.expect("JSON");
        assert_eq!(j["calls"], 1, "{j}");
        assert_eq!(j["encrypted"], true, "{j}");
        assert!(j["rtp_sent"].as_u64().unwrap() >= 10, "{j}");
    }
}
