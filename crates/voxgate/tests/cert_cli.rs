//! `voxgate cert`: the certificates it writes work for real (mutual) TLS with rustls over
//! loopback, and the failure cases fail.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

fn voxgate(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_voxgate"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("voxgate-cert-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn certs(p: &Path) -> Vec<CertificateDer<'static>> {
    let data = std::fs::read(p).unwrap();
    rustls_pemfile::certs(&mut &data[..])
        .collect::<Result<_, _>>()
        .unwrap()
}

fn key(p: &Path) -> PrivateKeyDer<'static> {
    let data = std::fs::read(p).unwrap();
    rustls_pemfile::private_key(&mut &data[..])
        .unwrap()
        .unwrap()
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn roots(ca: &Path) -> RootCertStore {
    let mut r = RootCertStore::empty();
    for c in certs(ca) {
        r.add(c).unwrap();
    }
    r
}

/// A TLS server requiring client certificates from the CA; echoes one message.
async fn server(
    dir: &Path,
    cert: &str,
    keyf: &str,
) -> (SocketAddr, tokio::task::JoinHandle<Result<Vec<u8>, String>>) {
    let verifier = WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots(&dir.join("ca.pem"))),
        provider(),
    )
    .build()
    .unwrap();
    let cfg = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs(&dir.join(cert)), key(&dir.join(keyf)))
        .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(cfg));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.map_err(|e| e.to_string())?;
        let mut tls = acceptor.accept(tcp).await.map_err(|e| e.to_string())?;
        let peer = tls
            .get_ref()
            .1
            .peer_certificates()
            .map(|c| c.len())
            .unwrap_or(0);
        let mut buf = [0u8; 5];
        tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        tls.write_all(&buf).await.map_err(|e| e.to_string())?;
        tls.shutdown().await.ok();
        assert!(peer >= 1, "client presented a certificate");
        Ok(buf.to_vec())
    });
    (addr, task)
}

async fn client(
    dir: &Path,
    addr: SocketAddr,
    name: &str,
    client_cert: Option<(&str, &str)>,
) -> Result<Vec<u8>, String> {
    let b = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots(&dir.join("ca.pem")));
    let cfg = match client_cert {
        Some((c, k)) => b
            .with_client_auth_cert(certs(&dir.join(c)), key(&dir.join(k)))
            .unwrap(),
        None => b.with_no_client_auth(),
    };
    let conn = TlsConnector::from(Arc::new(cfg));
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let server_name = ServerName::try_from(name.to_string()).map_err(|e| e.to_string())?;
    let mut tls = conn
        .connect(server_name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    tls.write_all(b"hello").await.map_err(|e| e.to_string())?;
    let mut buf = [0u8; 5];
    tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
    Ok(buf.to_vec())
}

#[tokio::test]
async fn dev_certificates_give_working_mutual_tls() {
    let dir = tmpdir("dev");
    let (code, stdout, stderr) = voxgate(&["cert", "dev", "--out", dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("server.pem"), "{stdout}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for k in ["ca.key", "server.key", "client.key"] {
            let mode = std::fs::metadata(dir.join(k)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{k} must be private");
        }
    }
    // By DNS name and by IP address.
    for name in ["localhost", "127.0.0.1"] {
        let (addr, srv) = server(&dir, "server.pem", "server.key").await;
        let echoed = client(&dir, addr, name, Some(("client.pem", "client.key"))).await;
        assert_eq!(echoed.unwrap(), b"hello");
        assert_eq!(srv.await.unwrap().unwrap(), b"hello");
    }
    // A name the certificate does not carry: the client refuses the server.
    let (addr, _srv) = server(&dir, "server.pem", "server.key").await;
    let err = client(
        &dir,
        addr,
        "evil.example",
        Some(("client.pem", "client.key")),
    )
    .await;
    assert!(err.is_err(), "wrong name must fail");
    // No client certificate: the server refuses the client.
    let (addr, srv) = server(&dir, "server.pem", "server.key").await;
    let _ = client(&dir, addr, "localhost", None).await;
    assert!(
        srv.await.unwrap().is_err(),
        "server must refuse a client without a certificate"
    );
    // The client certificate is not a server certificate (EKU clientAuth only).
    let (addr, srv) = server(&dir, "client.pem", "client.key").await;
    let err = client(&dir, addr, "localhost", Some(("client.pem", "client.key"))).await;
    assert!(err.is_err());
    drop(srv);

    // A second run does not overwrite the working set; --force does.
    let before = std::fs::read(dir.join("ca.key")).unwrap();
    let (code, _, stderr) = voxgate(&["cert", "dev", "--out", dir.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(stderr.contains("exists"), "{stderr}");
    assert_eq!(std::fs::read(dir.join("ca.key")).unwrap(), before);
    let (code, _, _) = voxgate(&["cert", "dev", "--out", dir.to_str().unwrap(), "--force"]);
    assert_eq!(code, 0);
    assert_ne!(std::fs::read(dir.join("ca.key")).unwrap(), before);
}

#[tokio::test]
async fn issue_signs_a_gateway_certificate_with_the_existing_ca() {
    let dir = tmpdir("issue");
    let d = dir.to_str().unwrap();
    assert_eq!(voxgate(&["cert", "dev", "--out", d]).0, 0);
    let (code, _, stderr) = voxgate(&[
        "cert",
        "issue",
        "--ca-cert",
        &format!("{d}/ca.pem"),
        "--ca-key",
        &format!("{d}/ca.key"),
        "--name",
        "gw1.a.example",
        "--ip",
        "127.0.0.1",
        "--out-cert",
        &format!("{d}/gw1.pem"),
        "--out-key",
        &format!("{d}/gw1.key"),
    ]);
    assert_eq!(code, 0, "{stderr}");
    // As a server under its DNS name, and as the client of another server.
    let (addr, srv) = server(&dir, "gw1.pem", "gw1.key").await;
    assert_eq!(
        client(
            &dir,
            addr,
            "gw1.a.example",
            Some(("client.pem", "client.key"))
        )
        .await
        .unwrap(),
        b"hello"
    );
    srv.await.unwrap().unwrap();
    let (addr, srv) = server(&dir, "server.pem", "server.key").await;
    assert_eq!(
        client(&dir, addr, "localhost", Some(("gw1.pem", "gw1.key")))
            .await
            .unwrap(),
        b"hello"
    );
    srv.await.unwrap().unwrap();
    // A certificate signed by another CA is refused.
    let other = tmpdir("other");
    assert_eq!(
        voxgate(&["cert", "dev", "--out", other.to_str().unwrap()]).0,
        0
    );
    std::fs::copy(other.join("client.pem"), dir.join("foreign.pem")).unwrap();
    std::fs::copy(other.join("client.key"), dir.join("foreign.key")).unwrap();
    let (addr, srv) = server(&dir, "server.pem", "server.key").await;
    let _ = client(
        &dir,
        addr,
        "localhost",
        Some(("foreign.pem", "foreign.key")),
    )
    .await;
    assert!(
        srv.await.unwrap().is_err(),
        "a foreign CA's client must be refused"
    );
    // Bad input: a non-DNS name, days out of range.
    let (code, _, stderr) = voxgate(&[
        "cert",
        "issue",
        "--ca-cert",
        &format!("{d}/ca.pem"),
        "--ca-key",
        &format!("{d}/ca.key"),
        "--name",
        "x",
        "--dns",
        "not a name",
        "--out-cert",
        &format!("{d}/x.pem"),
        "--out-key",
        &format!("{d}/x.key"),
    ]);
    assert_eq!(code, 1);
    assert!(stderr.contains("not a DNS name"), "{stderr}");
}
