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
