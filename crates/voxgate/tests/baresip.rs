//! baresip (Debian package baresip-core, headless: aufile source, sndfile dumps) calls through
//! `voxgate proxy` over TLS with `mediaenc=srtp-mand`, and audio arrives both ways: each side
//! plays its own tone (alice 440 Hz, bob 620 Hz) and must receive the other's.
//!
//! baresip 1.0 (libre 1.0) fails on a SHA-256 digest challenge instead of picking the MD5 one
//! beside it, so this proxy offers MD5 only (`[auth] algorithms = ["md5"]`), as an operator with
//! such clients would.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port_pair() -> u16 {
    loop {
        let s = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let p = s.local_addr().unwrap().port();
        drop(s);
        if p < 65000
            && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok()
            && std::net::UdpSocket::bind(("127.0.0.1", p)).is_ok()
        {
            return p;
        }
    }
}

pub fn tone(path: &Path, hz: f64, secs: f64) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 8000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for i in 0..(8000.0 * secs) as usize {
        let v = (2.0 * std::f64::consts::PI * hz * i as f64 / 8000.0).sin() * 8000.0;
        w.write_sample(v as i16).unwrap();
    }
    w.finalize().unwrap();
}

/// The share of the signal's energy at `hz` (Goertzel over 20 ms blocks that are not silent).
pub fn tone_share(path: &Path, hz: f64) -> (f64, usize) {
    let mut r = hound::WavReader::open(path).unwrap();
    let rate = r.spec().sample_rate as f64;
    let s: Vec<f64> = r.samples::<i16>().map(|x| x.unwrap_or(0) as f64).collect();
    let n = (rate * 0.02) as usize;
    let (mut at, mut total, mut blocks) = (0.0, 0.0, 0);
    for b in s.chunks_exact(n) {
        let e: f64 = b.iter().map(|x| x * x).sum();
        if e / (n as f64) < 1e4 {
            continue; // silence
        }
        let w = 2.0 * std::f64::consts::PI * hz / rate;
        let (mut s1, mut s2) = (0.0, 0.0);
        for x in b {
            let s0 = x + 2.0 * w.cos() * s1 - s2;
            s2 = s1;
            s1 = s0;
        }
        let power = s1 * s1 + s2 * s2 - 2.0 * w.cos() * s1 * s2;
        // A pure tone's Goertzel power is (N/2)^2 * A^2 while its energy is N * A^2 / 2.
        at += power * 2.0 / n as f64;
        total += e;
        blocks += 1;
    }
    (if total > 0.0 { at / total } else { 0.0 }, blocks)
}

pub struct Baresip {
    child: Child,
    pub dir: PathBuf,
}

impl Drop for Baresip {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Baresip {
    /// Starts baresip for `user` with its own config dir under `dir`, sending `tone_hz`.
    pub fn start(
        dir: &Path,
        user: &str,
        password: &str,
        proxy: std::net::SocketAddr,
        tone_hz: f64,
        secs: u32,
        dial: Option<&str>,
    ) -> Baresip {
        let bdir = dir.join(format!("baresip-{user}"));
        let snd = bdir.join("snd");
        std::fs::create_dir_all(&snd).unwrap();
        let wav = bdir.join("tone.wav");
        tone(&wav, tone_hz, 4.0);
        let port = free_port_pair();
        let config = format!(
            "poll_method epoll\nsip_listen 127.0.0.1:{port}\nsip_cafile {ca}\n\
audio_player aufile,/dev/null\naudio_source aufile,{wav}\naudio_alert aufile,/dev/null\n\
module_path /usr/lib/baresip/modules\nmodule g711.so\nmodule aufile.so\nmodule srtp.so\nmodule sndfile.so\n\
snd_path {snd}\nmodule_app account.so\nmodule_app menu.so\n",
            ca = dir.join("certs/ca.pem").display(),
            wav = wav.display(),
            snd = snd.display()
        );
        std::fs::write(bdir.join("config"), config).unwrap();
        std::fs::write(
            bdir.join("accounts"),
            format!(
                "<sip:{user}@a.example;transport=tls>;auth_pass={password};outbound=\"sip:{proxy};transport=tls\";mediaenc=srtp-mand;regint=600;answermode=auto\n"
            ),
        )
        .unwrap();
        let log = std::fs::File::create(bdir.join("log")).unwrap();
        let mut cmd = Command::new("baresip");
        cmd.arg("-f")
            .arg(&bdir)
            .args(["-n", "127.0.0.1", "-t", &secs.to_string()]);
        if let Some(d) = dial {
            cmd.args(["-e", &format!("/dial {d}")]);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start baresip");
        Baresip { child, dir: bdir }
    }

    pub fn log(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(self.dir.join("log")).unwrap_or_default())
            .into_owned()
    }

    pub fn wait_for(&self, what: &str, within: Duration) -> bool {
        let t = Instant::now();
        while t.elapsed() < within {
            if self.log().contains(what) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    pub fn wait(&mut self, within: Duration) {
        let t = Instant::now();
        while t.elapsed() < within {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
    }

    /// The received (decoded) audio baresip dumped.
    pub fn received(&self) -> Option<PathBuf> {
        std::fs::read_dir(self.dir.join("snd"))
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.to_string_lossy().ends_with("-dec.wav"))
    }
}

pub fn proxy_config() -> String {
    r#"[[listen]]
transport = "tls"
address = "127.0.0.1:0"
[tls]
cert = "certs/server.pem"
key = "certs/server.key"
client_ca = "certs/ca.pem"
[auth]
algorithms = ["md5"]
[[domain]]
name = "a.example"
encryption = "mandatory"
  [[domain.user]]
  name = "alice"
  password = "alice-pw"
  [[domain.user]]
  name = "bob"
  password = "bob-pw"
"#
    .to_string()
}

pub fn make_certs(dir: &Path) {
    let st = Command::new(common::voxgate())
        .args(["cert", "dev", "--out"])
        .arg(dir.join("certs"))
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
}

fn report(name: &str, b: &Baresip) {
    let mut e = std::io::stderr();
    let _ = writeln!(e, "--- {name} log ---\n{}", b.log());
}

#[test]
fn baresip_to_baresip_over_tls_with_mandatory_srtp_through_the_proxy() {
    common::require_tool("baresip", "baresip-core");
    let dir = common::scratch("baresip_pair");
    make_certs(&dir);
    let proxy = common::Proxy::start(&dir, &proxy_config());
    let addr = proxy.addr("tls");
    let mut bob = Baresip::start(&dir, "bob", "bob-pw", addr, 620.0, 20, None);
    assert!(
        bob.wait_for("[1 binding]", Duration::from_secs(15)),
        "bob did not register:\n{}\n{}",
        bob.log(),
        proxy.log()
    );
    let mut alice = Baresip::start(
        &dir,
        "alice",
        "alice-pw",
        addr,
        440.0,
        12,
        Some("sip:bob@a.example"),
    );
    let established = alice.wait_for("Call established", Duration::from_secs(15));
    alice.wait(Duration::from_secs(20));
    bob.wait(Duration::from_secs(10));
    if !established {
        report("alice", &alice);
        report("bob", &bob);
        panic!("call not established; proxy log:\n{}", proxy.log());
    }
    for b in [&alice, &bob] {
        assert!(
            b.log().contains("SRTP is Enabled"),
            "SRTP not in use:\n{}",
            b.log()
        );
    }
    assert!(
        proxy.log().contains("media encrypted (SRTP)"),
        "{}",
        proxy.log()
    );
    // Each side got the other's tone.
    for (b, hz) in [(&alice, 620.0), (&bob, 440.0)] {
        let Some(wav) = b.received() else {
            report("alice", &alice);
            report("bob", &bob);
            panic!("no received audio in {}", b.dir.display());
        };
        let (share, blocks) = tone_share(&wav, hz);
        eprintln!(
            "{}: {hz} Hz share {share:.3} over {blocks} blocks",
            wav.display()
        );
        assert!(
            blocks >= 50,
            "at least 1 s of audio arrived ({blocks} blocks)"
        );
        assert!(
            share > 0.8,
            "received audio is the peer's tone ({share:.3})"
        );
    }
}

/// Runs `voxgate ua` with `args`; returns the child with stdout lines on a channel.
struct Ua {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Ua {
    fn start(dir: &Path, name: &str, args: &[&str]) -> Ua {
        let log = std::fs::File::create(dir.join(format!("ua-{name}.log"))).unwrap();
        let mut child = Command::new(common::voxgate())
            .arg("ua")
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start voxgate ua");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Ua {
            child,
            lines: rx,
            seen: Vec::new(),
        }
    }

    fn expect_line(&mut self, want: &str, within: Duration) -> bool {
        let t = Instant::now();
        while t.elapsed() < within {
            if let Ok(l) = self.lines.recv_timeout(Duration::from_millis(200)) {
                let hit = l == want;
                self.seen.push(l);
                if hit {
                    return true;
                }
            }
        }
        false
    }

    /// Waits for the exit; returns (success, the JSON summary line).
    fn finish(mut self, within: Duration) -> (bool, serde_json::Value) {
        let t = Instant::now();
        let ok = loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                break st.success();
            }
            if t.elapsed() > within {
                let _ = self.child.kill();
                break false;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        while let Ok(l) = self.lines.recv_timeout(Duration::from_millis(500)) {
            self.seen.push(l);
        }
        let json = self
            .seen
            .iter()
            .rev()
            .find_map(|l| serde_json::from_str(l).ok())
            .unwrap_or(serde_json::Value::Null);
        (ok, json)
    }
}

fn ua_args<'a>(user: &'a str, pw: &'a Path, proxy: &'a str, ca: &'a Path) -> Vec<&'a str> {
    vec![
        "--user",
        user,
        "--password-file",
        pw.to_str().unwrap(),
        "--proxy",
        proxy,
        "--ca",
        ca.to_str().unwrap(),
        "--encryption",
        "mandatory",
        "--json",
    ]
}

#[test]
fn baresip_calls_voxgate_ua_and_voxgate_ua_calls_baresip() {
    common::require_tool("baresip", "baresip-core");
    let dir = common::scratch("baresip_ua");
    make_certs(&dir);
    let proxy = common::Proxy::start(&dir, &proxy_config());
    let addr = proxy.addr("tls");
    let addr_s = addr.to_string();
    let ca = dir.join("certs/ca.pem");
    let bob_pw = dir.join("bob.pw");
    std::fs::write(&bob_pw, "bob-pw\n").unwrap();
    let alice_pw = dir.join("alice.pw");
    std::fs::write(&alice_pw, "alice-pw\n").unwrap();
    let bob_tone = dir.join("bob-tone.wav");
    tone(&bob_tone, 620.0, 4.0);
    let alice_tone = dir.join("alice-tone.wav");
    tone(&alice_tone, 440.0, 4.0);

    // 1. baresip (alice) calls voxgate ua (bob, registered, answering).
    let bob_rec = dir.join("bob-recv.wav");
    let mut args = ua_args("bob@a.example", &bob_pw, &addr_s, &ca);
    args.extend([
        "--register",
        "--answer",
        "--play",
        bob_tone.to_str().unwrap(),
        "--record",
        bob_rec.to_str().unwrap(),
        "--timeout",
        "40",
    ]);
    let mut bob = Ua::start(&dir, "bob", &args);
    assert!(
        bob.expect_line("ready", Duration::from_secs(15)),
        "ua did not register: {:?}\n{}",
        bob.seen,
        proxy.log()
    );
    let mut alice = Baresip::start(
        &dir,
        "alice",
        "alice-pw",
        addr,
        440.0,
        10,
        Some("sip:bob@a.example"),
    );
    alice.wait(Duration::from_secs(20));
    let (ok, summary) = bob.finish(Duration::from_secs(20));
    assert!(
        ok,
        "voxgate ua (callee) failed: {summary}\n{}",
        std::fs::read_to_string(dir.join("ua-bob.log")).unwrap_or_default()
    );
    assert_eq!(summary["encrypted"], true, "{summary}");
    assert!(alice.log().contains("SRTP is Enabled"), "{}", alice.log());
    let (share, blocks) = tone_share(&bob_rec, 440.0);
    eprintln!("ua received from baresip: 440 Hz share {share:.3} over {blocks} blocks");
    assert!(blocks >= 50 && share > 0.8, "ua got baresip's tone");
    let wav = alice.received().expect("baresip recorded audio");
    let (share, blocks) = tone_share(&wav, 620.0);
    eprintln!("baresip received from ua: 620 Hz share {share:.3} over {blocks} blocks");
    assert!(blocks >= 50 && share > 0.8, "baresip got the ua's tone");

    // 2. voxgate ua (alice) calls baresip (bob, registered, auto-answer).
    let mut bob = Baresip::start(&dir, "bob", "bob-pw", addr, 620.0, 25, None);
    assert!(
        bob.wait_for("[1 binding]", Duration::from_secs(15)),
        "baresip did not register:\n{}",
        bob.log()
    );
    let alice_rec = dir.join("alice-recv.wav");
    let mut args = ua_args("alice@a.example", &alice_pw, &addr_s, &ca);
    args.extend([
        "--call",
        "sip:bob@a.example",
        "--play",
        alice_tone.to_str().unwrap(),
        "--record",
        alice_rec.to_str().unwrap(),
        "--duration",
        "4",
        "--timeout",
        "30",
    ]);
    let alice = Ua::start(&dir, "alice", &args);
    let (ok, summary) = alice.finish(Duration::from_secs(35));
    bob.wait(Duration::from_secs(1));
    assert!(
        ok,
        "voxgate ua (caller) failed: {summary}\n{}",
        std::fs::read_to_string(dir.join("ua-alice.log")).unwrap_or_default()
    );
    assert_eq!(summary["encrypted"], true, "{summary}");
    let (share, blocks) = tone_share(&alice_rec, 620.0);
    eprintln!("ua received from baresip: 620 Hz share {share:.3} over {blocks} blocks");
    assert!(blocks >= 50 && share > 0.8, "ua got baresip's tone");
    let wav = bob.received().expect("baresip recorded audio");
    let (share, blocks) = tone_share(&wav, 440.0);
    eprintln!("baresip received from ua: 440 Hz share {share:.3} over {blocks} blocks");
    assert!(blocks >= 50 && share > 0.8, "baresip got the ua's tone");
}
