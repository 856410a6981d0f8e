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
