//! Shared by the integration tests that run real peers against `voxgate proxy`: start the
//! real binary with a configuration, learn the ports it bound (listeners may use port 0) from
//! its `listening <transport> <addr>` lines, and stop it on drop.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub fn voxgate() -> &'static str {
    env!("CARGO_BIN_EXE_voxgate")
}

/// A fresh scratch directory under the target dir (kept after the test for inspection).
pub fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// Fails the test with an install hint when a peer program is missing (`.ci/run` installs
/// them; a test never silently skips).
pub fn require_tool(tool: &str, package: &str) -> PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let p = Path::new(dir).join(tool);
        if p.is_file() {
            return p;
        }
    }
    panic!("`{tool}` is not installed: apt-get install -y {package} (bash .ci/run does this)");
}

/// A running `voxgate proxy`.
pub struct Proxy {
    pub child: Child,
    /// transport ("udp", "tcp", "tls") -> bound address.
    pub listeners: HashMap<String, SocketAddr>,
    pub dir: PathBuf,
}

impl Proxy {
    /// Writes `config` to DIR/proxy.toml and starts `voxgate proxy --config` in DIR, waiting
    /// (at most 30 s) for its `ready` line.
    pub fn start(dir: &Path, config: &str) -> Proxy {
        let path = dir.join("proxy.toml");
        std::fs::write(&path, config).expect("write config");
        let stderr = std::fs::File::create(dir.join("proxy.log")).expect("log file");
        let mut child = Command::new(voxgate())
            .arg("proxy")
            .arg("--config")
            .arg(&path)
            .current_dir(dir)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start voxgate proxy");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut listeners = HashMap::new();
        loop {
            match rx.recv_timeout(Duration::from_secs(30)) {
                Ok(line) if line == "ready" => break,
                Ok(line) => {
                    let parts: Vec<&str> = line.split_whitespace().collect();
                    if let ["listening", t, a] = parts[..] {
                        listeners.insert(t.to_string(), a.parse().expect("listener address"));
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let log = std::fs::read_to_string(dir.join("proxy.log")).unwrap_or_default();
                    panic!("voxgate proxy did not become ready; its log:\n{log}");
                }
            }
        }
        Proxy {
            child,
            listeners,
            dir: dir.to_path_buf(),
        }
    }

    pub fn addr(&self, transport: &str) -> SocketAddr {
        self.listeners[transport]
    }

    /// Still running?
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Resident set size in KiB (from /proc).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("proxy.log")).unwrap_or_default()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the binary to completion in `dir`; fails the test with its stderr otherwise.
pub fn run_ok(dir: &Path, args: &[&str]) {
    let out = Command::new(voxgate())
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// ITU-T G.711 mu-law quantization (decode(encode(x)), as the G.191 reference code does it:
/// negative values by their one's complement), written here independently of voxgate-rtp's
/// codec so that audio checks do not trust the code under test.
pub fn ulaw_quantize(x: i16) -> i16 {
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

/// An 8 kHz mono 16-bit WAV.
pub fn write_wav(p: &Path, samples: &[i16]) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 8000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(p, spec).unwrap();
    for s in samples {
        w.write_sample(*s).unwrap();
    }
    w.finalize().unwrap();
}

pub fn read_wav(p: &Path) -> Vec<i16> {
    hound::WavReader::open(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .into_samples::<i16>()
        .map(|s| s.unwrap())
        .collect()
}

/// Share of the recording (from its first sound) equal to the mu-law-quantized source, aligned
/// on the first 20 ms that match exactly; and how many samples were compared.
pub fn match_share(rec: &[i16], source: &[i16]) -> (f64, usize) {
    let Some(first) = rec.iter().position(|x| *x != 0) else {
        return (0.0, 0);
    };
    let q: Vec<i16> = source.iter().map(|x| ulaw_quantize(*x)).collect();
    let Some(window) = rec.get(first..first + 160) else {
        return (0.0, 0);
    };
    let Some(at) = q.windows(160).position(|w| w == window) else {
        return (0.0, 0);
    };
    let n = (rec.len() - first).min(q.len() - at);
    let same = rec[first..first + n]
        .iter()
        .zip(&q[at..at + n])
        .filter(|(a, b)| a == b)
        .count();
    (same as f64 / n.max(1) as f64, n)
}
