//! `voxgate proxy` over real TLS on loopback: registration and a call's INVITE delivered over
//! the callee's own registration connection (connection reuse), the connection limits, the
//! idle timeout, a malformed message on a stream, the metrics endpoint and `--check-config`.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use voxgate_sip::digest::{ha1, response, Algorithm};

fn make_certs(dir: &Path) {
    let st = Command::new(common::voxgate())
        .args(["cert", "dev", "--out"])
        .arg(dir.join("certs"))
        .status()
        .expect("voxgate cert dev");
    assert!(st.success());
}

fn config(extra: &str) -> String {
    format!(
        r#"[[listen]]
transport = "tls"
address = "127.0.0.1:0"
[tls]
cert = "certs/server.pem"
key = "certs/server.key"
client_ca = "certs/ca.pem"
[metrics]
address = "127.0.0.1:0"
{extra}
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
    )
}

fn connector(dir: &Path) -> TlsConnector {
    let pem = std::fs::read(dir.join("certs/ca.pem")).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut &pem[..]) {
        let c: CertificateDer<'static> = c.unwrap();
        roots.add(c).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    TlsConnector::from(Arc::new(cfg))
}

struct Peer {
    s: TlsStream<TcpStream>,
    buf: Vec<u8>,
    port: u16,
}

impl Peer {
    async fn connect(c: &TlsConnector, addr: std::net::SocketAddr) -> Peer {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let port = tcp.local_addr().unwrap().port();
        let name = ServerName::IpAddress(addr.ip().into());
        let s = c.connect(name, tcp).await.expect("TLS handshake");
        Peer {
            s,
            buf: Vec::new(),
            port,
        }
    }

    async fn send(&mut self, m: &str) {
        self.s.write_all(m.as_bytes()).await.unwrap();
    }

    /// The next whole message (Content-Length framed).
    async fn recv(&mut self) -> String {
        let fut = async {
            loop {
                if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&self.buf[..end]).to_string();
                    let cl: usize = head
                        .lines()
                        .find_map(|l| {
                            let (n, v) = l.split_once(':')?;
                            n.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse().ok())?
                        })
                        .unwrap_or(0);
                    if self.buf.len() >= end + 4 + cl {
                        let m: Vec<u8> = self.buf.drain(..end + 4 + cl).collect();
                        return String::from_utf8_lossy(&m).to_string();
                    }
                }
                let mut tmp = [0u8; 4096];
                let n = self.s.read(&mut tmp).await.unwrap_or(0);
                assert!(n > 0, "connection closed while waiting for a message");
                self.buf.extend_from_slice(&tmp[..n]);
            }
        };
        tokio::time::timeout(Duration::from_secs(10), fut)
            .await
            .expect("a message within 10 s")
    }

    /// Whether the proxy closes the connection within `d`.
    async fn closed_within(&mut self, d: Duration) -> bool {
        let mut tmp = [0u8; 256];
        matches!(
            tokio::time::timeout(d, self.s.read(&mut tmp)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }
}

fn header(m: &str, name: &str) -> String {
    m.lines()
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default()
}

fn digest(ch: &str, user: &str, pw: &str, method: &str, uri: &str) -> String {
    let alg = if ch.contains("SHA-256") {
        Algorithm::Sha256
    } else {
        Algorithm::Md5
    };
    let i = ch.find("nonce=\"").unwrap() + 7;
    let nonce = &ch[i..i + ch[i..].find('"').unwrap()];
    let r = response(
        alg,
        &ha1(alg, user, "a.example", pw),
        nonce,
        "00000001",
        "abcdef",
        method,
        uri,
    );
    format!("Digest username=\"{user}\", realm=\"a.example\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{r}\", algorithm={}, qop=auth, nc=00000001, cnonce=\"abcdef\"", alg.name())
}

async fn register(p: &mut Peer, user: &str, pw: &str) {
    let port = p.port;
    let req = |cseq: u32, auth: &str| {
        format!("REGISTER sip:a.example SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:{port};branch=z9hG4bKr{cseq}{user}\r\nMax-Forwards: 70\r\nFrom: <sip:{user}@a.example>;tag=t{user}\r\nTo: <sip:{user}@a.example>\r\nCall-ID: reg-{user}\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:{user}@127.0.0.1:{port};transport=tls>\r\n{auth}Content-Length: 0\r\n\r\n")
    };
    p.send(&req(1, "")).await;
    let r = p.recv().await;
    assert!(r.starts_with("SIP/2.0 401"), "{r}");
    let a = digest(
        &header(&r, "WWW-Authenticate"),
        user,
        pw,
        "REGISTER",
        "sip:a.example",
    );
    p.send(&req(2, &format!("Authorization: {a}\r\n"))).await;
    let r = p.recv().await;
    assert!(r.starts_with("SIP/2.0 200"), "{r}");
}

const SDP: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_over_tls_reuses_the_registration_connection() {
    let dir = common::scratch("proxy_tls_call");
    make_certs(&dir);
    let proxy = common::Proxy::start(&dir, &config(""));
    let addr = proxy.addr("tls");
    let c = connector(&dir);
    let mut bob = Peer::connect(&c, addr).await;
    register(&mut bob, "bob", "bob-pw").await;
    let mut alice = Peer::connect(&c, addr).await;
    let port = alice.port;
    let inv = |cseq: u32, auth: &str| {
        format!("INVITE sip:bob@a.example SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:{port};branch=z9hG4bKi{cseq}\r\nMax-Forwards: 70\r\nFrom: <sip:alice@a.example>;tag=al\r\nTo: <sip:bob@a.example>\r\nCall-ID: tls-call\r\nCSeq: {cseq} INVITE\r\nContact: <sip:alice@127.0.0.1:{port};transport=tls>\r\n{auth}Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{SDP}", SDP.len())
    };
    alice.send(&inv(1, "")).await;
    assert!(alice.recv().await.starts_with("SIP/2.0 100"));
    let r = alice.recv().await;
    assert!(r.starts_with("SIP/2.0 407"), "{r}");
    let a = digest(
        &header(&r, "Proxy-Authenticate"),
        "alice",
        "alice-pw",
        "INVITE",
        "sip:bob@a.example",
    );
    alice
        .send(&inv(2, &format!("Proxy-Authorization: {a}\r\n")))
        .await;
    assert!(alice.recv().await.starts_with("SIP/2.0 100"));
    // Bob gets the INVITE over the connection he registered on.
    let got = bob.recv().await;
    assert!(
        got.starts_with(&format!(
            "INVITE sip:bob@127.0.0.1:{};transport=tls SIP/2.0",
            bob.port
        )),
        "{got}"
    );
    assert!(got.ends_with(SDP));
    assert!(header(&got, "Record-Route").contains(";transport=tls;lr;vx="));
    // Bob refuses: the 486 reaches alice.
    let vias: Vec<&str> = got
        .lines()
        .filter(|l| l.starts_with("Via:"))
        .map(|l| l.trim_start_matches("Via:").trim())
        .collect();
    let busy = format!("SIP/2.0 486 Busy Here\r\nVia: {}\r\nVia: {}\r\nFrom: <sip:alice@a.example>;tag=al\r\nTo: <sip:bob@a.example>;tag=bb\r\nCall-ID: tls-call\r\nCSeq: 2 INVITE\r\nContent-Length: 0\r\n\r\n", vias[0], vias[1]);
    bob.send(&busy).await;
    let r = alice.recv().await;
    assert!(r.starts_with("SIP/2.0 486"), "{r}");
    // The proxy ACKs the 486 on its hop.
    let ack = bob.recv().await;
    assert!(ack.starts_with("ACK "), "{ack}");

    // Metrics over HTTP.
    let m = http_get(proxy.addr("metrics"), "/metrics").await;
    assert!(m.starts_with("HTTP/1.1 200 OK"), "{m}");
    assert!(
        m.contains("voxgate_sip_requests_total{method=\"INVITE\"} 2"),
        "{m}"
    );
    assert!(m.contains("voxgate_connections 2"), "{m}");
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out))
        .await
        .unwrap()
        .unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_idle_timeout_and_malformed_streams() {
    let dir = common::scratch("proxy_tls_limits");
    make_certs(&dir);
    let proxy = common::Proxy::start(
        &dir,
        &config("[limits]\nmax_connections_per_ip = 2\nidle_timeout_secs = 1\n"),
    );
    let addr = proxy.addr("tls");
    let c = connector(&dir);
    let mut one = Peer::connect(&c, addr).await;
    let _two = Peer::connect(&c, addr).await;
    // The third connection from the same IP is refused (closed before or at the handshake).
    let tcp = TcpStream::connect(addr).await.unwrap();
    let third = tokio::time::timeout(
        Duration::from_secs(5),
        c.connect(ServerName::IpAddress(addr.ip().into()), tcp),
    )
    .await
    .expect("refusal is prompt");
    if let Ok(mut s) = third {
        let mut tmp = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut tmp))
            .await
            .expect("closed promptly")
            .unwrap_or(0);
        assert_eq!(n, 0, "third connection must be closed");
    }
    // Idle connections are closed after the idle timeout.
    assert!(one.closed_within(Duration::from_secs(5)).await);

    // A malformed message on a stream: answered with 400 where addressable, then closed.
    let mut p = Peer::connect(&c, addr).await;
    p.send("OPTIONS sip:bob@a.example SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:1;branch=z9hG4bKm\r\nFrom: <sip:a@a.example>;tag=1\r\nTo: <sip:bob@a.example>\r\nCall-ID: m@x\r\nCSeq: 1 OPTIONS\r\nCSeq: 2 OPTIONS\r\nContent-Length: 0\r\n\r\n").await;
    let r = p.recv().await;
    assert!(r.starts_with("SIP/2.0 400"), "{r}");
    assert!(p.closed_within(Duration::from_secs(5)).await);
    let mut proxy = proxy;
    assert!(proxy.alive());
}

#[test]
fn check_config_loads_the_example_and_names_bad_keys() {
    let dir = common::scratch("proxy_check_config");
    make_certs(&dir);
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/proxy.toml");
    std::fs::copy(example, dir.join("proxy.toml")).unwrap();
    let out = Command::new(common::voxgate())
        .args(["proxy", "--check-config", "--config"])
        .arg(dir.join("proxy.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("configuration OK"));
    let bad = std::fs::read_to_string(dir.join("proxy.toml"))
        .unwrap()
        .replace("[auth]", "[auth]\nnonce_lifetme = 5");
    std::fs::write(dir.join("bad.toml"), bad).unwrap();
    let out = Command::new(common::voxgate())
        .args(["proxy", "--check-config", "--config"])
        .arg(dir.join("bad.toml"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nonce_lifetme"), "{err}");
}
