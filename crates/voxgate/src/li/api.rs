//! The warrant provisioning API of `voxgate li`: JSON over HTTP/1.1 over mutual TLS.
//!
//! Every client presents a certificate issued by the configured client CA (no certificate, or
//! one from another CA: the TLS handshake fails). The caller's identity, `who`, is the
//! certificate's subject common name, or, without one, its first DNS subjectAltName; a
//! certificate naming no one (or with several common names) gets 403 on every request. `who`
//! is what the service writes in the audit log for every change and every read.
//!
//! | route                                   | body                      | success            |
//! |-----------------------------------------|---------------------------|--------------------|
//! | `POST /v1/warrants`                     | a warrant request         | 201, the warrant   |
//! | `POST /v1/warrants/{liid}/approve`      | none or `{}`              | 200, the warrant   |
//! | `POST /v1/warrants/{liid}/deactivate`   | `{"reason": "..."}`       | 200, the warrant   |
//! | `GET /v1/warrants`                      |                           | 200, `{"warrants": [...]}` |
//! | `GET /v1/warrants/{liid}`               |                           | 200, the warrant   |
//! | `GET /v1/audit/head`                    |                           | 200, the signed head |
//!
//! Errors are `{"error": {"code": "...", "message": "..."}}` with the status of the error:
//! the service's own errors with their [`ApiError::http_status`] and [`ApiError::code`] (the
//! message of a 5xx one stays in the node's log);
//! malformed JSON, unknown fields or a bad path 400 `bad_request`; no identity 403
//! `forbidden`; unknown route 404 `not_found`; wrong method 405 `method_not_allowed` (with
//! `Allow`); a body not sent in time 408 `request_timeout`; a body over 64 KiB 413
//! `payload_too_large` (never buffered: refused on its `Content-Length`, or as soon as more
//! has arrived); a body that is not `application/json` 415 `unsupported_media_type`; a
//! service that failed 500 `internal`.
//!
//! Limits: 256 connections at once (more are closed at once), 10 s for the TLS handshake,
//! 10 s for a request's head (which also closes idle keep-alive connections), 10 s for its
//! body. Every request is logged (remote address, method, path, who, status), never a body.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Bytes, Incoming};
use hyper::header::{HeaderValue, ALLOW, CACHE_CONTROL, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use crate::tls::{load_certs, load_key, load_roots, provider};

/// An error of the service, as the API reports it: `{"error": {"code", "message"}}` with
/// the HTTP status (the message is the error's `Display`).
pub(crate) trait ApiError: std::fmt::Display {
    /// A stable, machine-readable code (`snake_case`).
    fn code(&self) -> &'static str;
    /// The HTTP status (400..=599; anything else is answered as 500).
    fn http_status(&self) -> u16;
}

/// The warrant book's errors carry their own code and status.
impl ApiError for voxgate_li::warrant::WarrantError {
    fn code(&self) -> &'static str {
        voxgate_li::warrant::WarrantError::code(self)
    }
    fn http_status(&self) -> u16 {
        voxgate_li::warrant::WarrantError::http_status(self)
    }
}

/// What the API does, implemented by the LI node (it persists the book and writes an audit
/// entry for every change and every read of a warrant, naming `who`), with
/// `type Request = voxgate_li::warrant::WarrantRequest` and
/// `type Error = voxgate_li::warrant::WarrantError`.
///
/// The calls are synchronous and quick: the API makes each one on a blocking thread, holding
/// the service's mutex only for that call.
pub(crate) trait WarrantService: Send {
    /// The body of `POST /v1/warrants` (the warrant book's request; it should deny unknown
    /// fields, which then get 400).
    type Request: DeserializeOwned + Send + 'static;
    type Error: ApiError;
    fn create(&mut self, who: &str, req: Self::Request) -> Result<Value, Self::Error>;
    fn approve(&mut self, who: &str, liid: &str) -> Result<Value, Self::Error>;
    fn deactivate(&mut self, who: &str, liid: &str, reason: &str) -> Result<Value, Self::Error>;
    fn get(&mut self, who: &str, liid: &str) -> Result<Value, Self::Error>;
    /// The warrants, as a JSON array (answered as `{"warrants": <it>}`).
    fn list(&mut self, who: &str) -> Value;
    /// The audit log's signed head (for `GET /v1/audit/head`).
    fn audit_head(&mut self) -> Value;
}

/// The largest request body (bytes).
const MAX_BODY: usize = 64 * 1024;
/// How much of a refused body is read and dropped so that the answer reaches the client
/// (closing with unread data resets the connection); beyond it the connection is closed.
const DRAIN_CAP: u64 = 1024 * 1024;
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// The largest request head hyper buffers (bytes).
const MAX_HEAD: usize = 16 * 1024;

/// The connection limits of [`serve`].
#[derive(Debug, Clone, Copy)]
struct Limits {
    max_connections: usize,
    handshake_timeout: Duration,
    header_read_timeout: Duration,
    body_read_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 256,
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(10),
        }
    }
}

/// The rustls server config: our cert/key, client certificates REQUIRED, verified against
/// `client_ca`; HTTP/1.1 announced by ALPN.
pub(crate) fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: &Path,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let chain = load_certs(cert).context("API certificate")?;
    let key = load_key(key).context("API private key")?;
    let roots = load_roots(client_ca).context("API client CA")?;
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .context("client certificate verifier")?;
    let mut server = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .context("the API certificate and private key do not fit together")?;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(server))
}

/// Serves the API on `listener` until the task is dropped (accept errors are logged and
/// retried).
pub(crate) async fn serve<S>(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    service: Arc<Mutex<S>>,
) -> anyhow::Result<()>
where
    S: WarrantService + ?Sized + 'static,
{
    serve_with(listener, tls, service, Limits::default()).await
}

async fn serve_with<S>(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    service: Arc<Mutex<S>>,
    limits: Limits,
) -> anyhow::Result<()>
where
    S: WarrantService + ?Sized + 'static,
{
    let addr = listener
        .local_addr()
        .context("warrant API listener address")?;
    tracing::info!(%addr, "warrant API listening (HTTPS, client certificates required)");
    let acceptor = TlsAcceptor::from(tls);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let (tcp, remote) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "warrant API: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%remote, "warrant API connection refused: connection limit reached");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, service) = (acceptor.clone(), service.clone());
        tokio::spawn(async move {
            let _slot = slot;
            connection(tcp, remote, acceptor, service, limits).await;
        });
    }
}

/// What the requests of one connection share.
struct Conn<S: ?Sized> {
    remote: SocketAddr,
    /// The caller (None: the certificate names no one; every request gets 403).
    who: Option<Arc<str>>,
    service: Arc<Mutex<S>>,
    limits: Limits,
}

async fn connection<S>(
    tcp: TcpStream,
    remote: SocketAddr,
    acceptor: TlsAcceptor,
    service: Arc<Mutex<S>>,
    limits: Limits,
) where
    S: WarrantService + ?Sized + 'static,
{
    let tls = match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::warn!(%remote, error = %e, "warrant API connection refused: TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::warn!(%remote, "warrant API connection refused: TLS handshake timed out");
            return;
        }
    };
    let who = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|c| identity(c.as_ref()))
        .map(Arc::<str>::from);
    match &who {
        Some(who) => tracing::debug!(%remote, %who, "warrant API connection"),
        None => tracing::warn!(
            %remote,
            "warrant API connection: the client certificate names no one (no single subject \
             CN, no DNS name): its requests are refused"
        ),
    }
    let conn = Arc::new(Conn {
        remote,
        who,
        service,
        limits,
    });
    let svc = hyper::service::service_fn(move |req| {
        let conn = conn.clone();
        async move { Ok::<_, Infallible>(handle(req, &conn).await) }
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(MAX_HEAD)
        .keep_alive(true);
    if let Err(e) = http.serve_connection(TokioIo::new(tls), svc).await {
        tracing::debug!(%remote, error = %e, "warrant API connection ended");
    }
}

/// The caller named by a DER client certificate: its subject common name (exactly one), or
/// else its first DNS subjectAltName. Names with control characters, empty or over 256 bytes
/// name no one.
pub(crate) fn identity(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cns: Vec<_> = cert.subject().iter_common_name().collect();
    match cns.as_slice() {
        [cn] => {
            return cn
                .as_str()
                .ok()
                .filter(|s| usable_name(s))
                .map(str::to_owned)
        }
        [] => {}
        _ => return None,
    }
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|n| match n {
        x509_parser::extensions::GeneralName::DNSName(s) if usable_name(s) => Some((*s).to_owned()),
        _ => None,
    })
}

fn usable_name(s: &str) -> bool {
    !s.trim().is_empty() && s.len() <= 256 && !s.chars().any(char::is_control)
}

/// An answer that is not the service's success.
#[derive(Debug)]
struct Failure {
    status: StatusCode,
    code: &'static str,
    message: String,
    allow: Option<&'static str>,
}

impl Failure {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Failure {
            status,
            code,
            message: message.into(),
            allow: None,
        }
    }
    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
    fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the warrant service failed",
        )
    }
    /// The service's error; a server error's message stays in the node's log.
    fn from_service<E: ApiError + ?Sized>(e: &E) -> Self {
        let status = StatusCode::from_u16(e.http_status())
            .ok()
            .filter(|s| s.is_client_error() || s.is_server_error())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() {
            tracing::error!(code = e.code(), error = %e, "warrant API: the warrant service failed");
            return Self::new(status, e.code(), "the warrant service failed (see its log)");
        }
        Self::new(status, e.code(), e.to_string())
    }
}

fn json_response(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut resp = Response::new(Full::new(Bytes::from(bytes)));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn failure_response(f: &Failure) -> Response<Full<Bytes>> {
    let mut resp = json_response(
        f.status,
        &json!({"error": {"code": f.code, "message": f.message}}),
    );
    if let Some(allow) = f.allow {
        resp.headers_mut()
            .insert(ALLOW, HeaderValue::from_static(allow));
    }
    resp
}

/// One request: route, read and parse the body, call the service, log, answer.
async fn handle<S>(req: Request<Incoming>, conn: &Conn<S>) -> Response<Full<Bytes>>
where
    S: WarrantService + ?Sized + 'static,
{
    let (parts, mut body) = req.into_parts();
    let result = match &conn.who {
        None => Err(Failure::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the client certificate names no one (no subject common name, no DNS name)",
        )),
        Some(who) => dispatch(&parts, &mut body, who, conn).await,
    };
    let mut resp = match &result {
        Ok((status, v)) => json_response(*status, v),
        Err(f) => failure_response(f),
    };
    // A body left unread (refused before or while reading it) is read and dropped, up to a
    // bound, so that the answer is not lost to a reset; beyond it (or from a client too slow
    // to send it) the connection closes.
    let timed_out = matches!(&result, Err(f) if f.status == StatusCode::REQUEST_TIMEOUT);
    if !body.is_end_stream() && (timed_out || !drain(&parts, &mut body).await) {
        resp.headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    let who = conn.who.as_deref().unwrap_or("-");
    let status = resp.status().as_u16();
    match &result {
        Ok(_) => tracing::info!(
            remote = %conn.remote, method = %parts.method, path = parts.uri.path(), who, status,
            "warrant API request"
        ),
        Err(f) => tracing::info!(
            remote = %conn.remote, method = %parts.method, path = parts.uri.path(), who, status,
            code = f.code, "warrant API request refused"
        ),
    }
    resp
}

/// Reads and drops the rest of a body: true if it ended within [`DRAIN_CAP`] and
/// [`DRAIN_TIMEOUT`].
async fn drain(parts: &hyper::http::request::Parts, body: &mut Incoming) -> bool {
    if content_length(parts).is_some_and(|n| n > DRAIN_CAP) {
        return false;
    }
    let mut seen = 0u64;
    let read = async {
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { return false };
            if let Some(d) = frame.data_ref() {
                seen += d.len() as u64;
                if seen > DRAIN_CAP {
                    return false;
                }
            }
        }
        true
    };
    tokio::time::timeout(DRAIN_TIMEOUT, read)
        .await
        .unwrap_or(false)
}

/// The routes.
enum Route {
    List,
    Create,
    Get(String),
    Approve(String),
    Deactivate(String),
    AuditHead,
}

fn route(method: &Method, path: &str) -> Result<Route, Failure> {
    let not_found = || Failure::new(StatusCode::NOT_FOUND, "not_found", "no such resource");
    let Some(rest) = path.strip_prefix('/') else {
        return Err(not_found());
    };
    let segs: Vec<&str> = rest.split('/').collect();
    if segs.iter().any(|s| s.is_empty()) {
        return Err(not_found());
    }
    let liid = |s: &str| {
        percent_decode(s).ok_or_else(|| Failure::bad_request("the LIID in the path is not valid"))
    };
    let (get, post) = (method == Method::GET, method == Method::POST);
    let (allow, route) = match segs.as_slice() {
        ["v1", "warrants"] if get => return Ok(Route::List),
        ["v1", "warrants"] if post => return Ok(Route::Create),
        ["v1", "warrants"] => ("GET, POST", None),
        ["v1", "warrants", id] if get => ("GET", Some(Route::Get(liid(id)?))),
        ["v1", "warrants", _] => ("GET", None),
        ["v1", "warrants", id, "approve"] if post => ("POST", Some(Route::Approve(liid(id)?))),
        ["v1", "warrants", id, "deactivate"] if post => {
            ("POST", Some(Route::Deactivate(liid(id)?)))
        }
        ["v1", "warrants", _, "approve" | "deactivate"] => ("POST", None),
        ["v1", "audit", "head"] if get => return Ok(Route::AuditHead),
        ["v1", "audit", "head"] => ("GET", None),
        _ => return Err(not_found()),
    };
    route.ok_or(Failure {
        status: StatusCode::METHOD_NOT_ALLOWED,
        code: "method_not_allowed",
        message: format!("{method} is not allowed here (allowed: {allow})"),
        allow: Some(allow),
    })
}

/// Percent-decodes a path segment to UTF-8 (None: a bad escape or not UTF-8).
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The body of `approve`: nothing, or an empty object.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApproveBody {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeactivateBody {
    reason: String,
}

/// A service call, to run on a blocking thread.
enum Call<R> {
    List,
    Create(R),
    Get(String),
    Approve(String),
    Deactivate(String, String),
    AuditHead,
}

async fn dispatch<S>(
    parts: &hyper::http::request::Parts,
    body: &mut Incoming,
    who: &Arc<str>,
    conn: &Conn<S>,
) -> Result<(StatusCode, Value), Failure>
where
    S: WarrantService + ?Sized + 'static,
{
    let route = route(&parts.method, parts.uri.path())?;
    let timeout = conn.limits.body_read_timeout;
    let call = match route {
        Route::List => Call::List,
        Route::AuditHead => Call::AuditHead,
        Route::Get(liid) => Call::Get(liid),
        Route::Create => {
            let raw = read_body(parts, body, timeout).await?;
            if raw.is_empty() {
                return Err(Failure::bad_request("a JSON warrant request is required"));
            }
            Call::Create(parse::<S::Request>(&raw)?)
        }
        Route::Approve(liid) => {
            let raw = read_body(parts, body, timeout).await?;
            if !raw.is_empty() {
                parse::<ApproveBody>(&raw)?;
            }
            Call::Approve(liid)
        }
        Route::Deactivate(liid) => {
            let raw = read_body(parts, body, timeout).await?;
            if raw.is_empty() {
                return Err(Failure::bad_request(
                    "a JSON body {\"reason\": \"...\"} is required",
                ));
            }
            let d = parse::<DeactivateBody>(&raw)?;
            if d.reason.trim().is_empty() {
                return Err(Failure::bad_request("the reason must not be empty"));
            }
            Call::Deactivate(liid, d.reason)
        }
    };
    let service = conn.service.clone();
    let who = who.clone();
    let done = tokio::task::spawn_blocking(move || {
        let Ok(mut s) = service.lock() else {
            tracing::error!("warrant API: the warrant service is unusable (it panicked before)");
            return Err(Failure::internal());
        };
        let r = match call {
            Call::List => {
                let warrants = s.list(&who);
                return Ok((StatusCode::OK, json!({ "warrants": warrants })));
            }
            Call::AuditHead => return Ok((StatusCode::OK, s.audit_head())),
            Call::Create(req) => s.create(&who, req).map(|v| (StatusCode::CREATED, v)),
            Call::Get(liid) => s.get(&who, &liid).map(|v| (StatusCode::OK, v)),
            Call::Approve(liid) => s.approve(&who, &liid).map(|v| (StatusCode::OK, v)),
            Call::Deactivate(liid, reason) => s
                .deactivate(&who, &liid, &reason)
                .map(|v| (StatusCode::OK, v)),
        };
        r.map_err(|e| Failure::from_service(&e))
    })
    .await;
    done.unwrap_or_else(|e| {
        tracing::error!(error = %e, "warrant API: the warrant service failed");
        Err(Failure::internal())
    })
}

/// A JSON object (not an array, which serde would also take for a struct) as `T`.
fn parse<T: DeserializeOwned>(raw: &[u8]) -> Result<T, Failure> {
    if raw.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(Failure::bad_request("the body must be a JSON object"));
    }
    serde_json::from_slice(raw).map_err(|e| Failure::bad_request(format!("bad JSON body: {e}")))
}

fn content_length(parts: &hyper::http::request::Parts) -> Option<u64> {
    parts
        .headers
        .get(CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// `Content-Type: application/json`, with or without parameters.
fn is_json(parts: &hyper::http::request::Parts) -> bool {
    let Some(ct) = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    ct.split(';')
        .next()
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
}

/// The body, at most [`MAX_BODY`] bytes (413 as soon as it says or shows it is larger), of
/// type JSON when not empty (415), in time (408).
async fn read_body(
    parts: &hyper::http::request::Parts,
    body: &mut Incoming,
    timeout: Duration,
) -> Result<Bytes, Failure> {
    let too_large = || {
        Failure::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the body is over {MAX_BODY} bytes"),
        )
    };
    let announced = content_length(parts);
    if announced.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(too_large());
    }
    // HTTP/1.1: a request has a body when it has a non-zero Content-Length or is chunked.
    let has_body = announced.map_or(!body.is_end_stream(), |n| n > 0);
    if has_body && !is_json(parts) {
        return Err(Failure::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "the body must be Content-Type: application/json",
        ));
    }
    let read = async {
        let mut buf = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame =
                frame.map_err(|e| Failure::bad_request(format!("reading the body: {e}")))?;
            if let Some(d) = frame.data_ref() {
                if buf.len() + d.len() > MAX_BODY {
                    return Err(too_large());
                }
                buf.extend_from_slice(d);
            }
        }
        Ok(Bytes::from(buf))
    };
    match tokio::time::timeout(timeout, read).await {
        Ok(r) => r,
        Err(_) => Err(Failure::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            "the body did not arrive in time",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicU32, Ordering};

    use hyper::HeaderMap;
    use rcgen::{
        BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
        IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
    };
    use rustls::pki_types::ServerName;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::TlsConnector;

    // ---- the service double -------------------------------------------------------------

    #[derive(Debug)]
    struct FakeError {
        code: &'static str,
        status: u16,
        message: String,
    }

    impl std::fmt::Display for FakeError {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(&self.message)
        }
    }

    impl ApiError for FakeError {
        fn code(&self) -> &'static str {
            self.code
        }
        fn http_status(&self) -> u16 {
            self.status
        }
    }

    fn err(code: &'static str, status: u16, message: &str) -> FakeError {
        FakeError {
            code,
            status,
            message: message.into(),
        }
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct FakeRequest {
        liid: String,
        targets: Vec<String>,
    }

    /// An in-memory book that records every call as "who op liid".
    #[derive(Default)]
    struct Fake {
        warrants: BTreeMap<String, Value>,
        calls: Vec<String>,
    }

    impl WarrantService for Fake {
        type Request = FakeRequest;
        type Error = FakeError;
        fn create(&mut self, who: &str, req: FakeRequest) -> Result<Value, FakeError> {
            self.calls.push(format!("{who} create {}", req.liid));
            if req.liid == "odd-status" {
                return Err(err("odd", 200, "an error with a success status"));
            }
            if self.warrants.contains_key(&req.liid) {
                return Err(err("duplicate", 409, "that LIID exists"));
            }
            let w = json!({"liid": req.liid, "targets": req.targets, "state": "pending",
                           "created_by": who});
            self.warrants.insert(req.liid, w.clone());
            Ok(w)
        }
        fn approve(&mut self, who: &str, liid: &str) -> Result<Value, FakeError> {
            self.calls.push(format!("{who} approve {liid}"));
            let w = self
                .warrants
                .get_mut(liid)
                .ok_or_else(|| err("unknown_warrant", 404, "no such warrant"))?;
            if w["created_by"] == who {
                return Err(err("self_approval", 403, "the creator cannot approve"));
            }
            w["state"] = "active".into();
            w["approved_by"] = who.into();
            Ok(w.clone())
        }
        fn deactivate(&mut self, who: &str, liid: &str, reason: &str) -> Result<Value, FakeError> {
            self.calls.push(format!("{who} deactivate {liid}"));
            let w = self
                .warrants
                .get_mut(liid)
                .ok_or_else(|| err("unknown_warrant", 404, "no such warrant"))?;
            w["state"] = "inactive".into();
            w["reason"] = reason.into();
            Ok(w.clone())
        }
        fn get(&mut self, who: &str, liid: &str) -> Result<Value, FakeError> {
            self.calls.push(format!("{who} get {liid}"));
            self.warrants
                .get(liid)
                .cloned()
                .ok_or_else(|| err("unknown_warrant", 404, "no such warrant"))
        }
        fn list(&mut self, who: &str) -> Value {
            self.calls.push(format!("{who} list"));
            Value::Array(self.warrants.values().cloned().collect())
        }
        fn audit_head(&mut self) -> Value {
            json!({"node": "li-test", "count": self.calls.len()})
        }
    }

    type DynService = dyn WarrantService<Request = FakeRequest, Error = FakeError>;

    // ---- certificates ---------------------------------------------------------------------

    fn ca(name: &str) -> (Issuer<'static, KeyPair>, String) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let pem = params.self_signed(&key).unwrap().pem();
        (Issuer::new(params, key), pem)
    }

    /// A leaf (cert PEM, key PEM): `cn` None leaves the subject empty.
    fn leaf(
        issuer: &Issuer<'static, KeyPair>,
        cn: Option<&str>,
        dns: &[&str],
        server: bool,
    ) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        for d in dns {
            params
                .subject_alt_names
                .push(SanType::DnsName((*d).try_into().unwrap()));
        }
        if server {
            params
                .subject_alt_names
                .push(SanType::IpAddress([127, 0, 0, 1].into()));
        }
        let mut dn = DistinguishedName::new();
        if let Some(cn) = cn {
            dn.push(DnType::CommonName, cn);
        }
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![if server {
            ExtendedKeyUsagePurpose::ServerAuth
        } else {
            ExtendedKeyUsagePurpose::ClientAuth
        }];
        let cert = params.signed_by(&key, issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    type Pair = (String, String);

    /// The test PKI, in a directory removed when dropped.
    struct Pki {
        dir: PathBuf,
        ca_pem: String,
        officer1: Pair,
        officer2: Pair,
        /// No subject CN, a DNS name.
        dns_only: Pair,
        /// No subject CN, no DNS name.
        nameless: Pair,
        /// "officer-1", from another CA.
        stranger: Pair,
    }

    impl Drop for Pki {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    static DIRS: AtomicU32 = AtomicU32::new(0);

    impl Pki {
        fn new() -> Pki {
            let dir = std::env::temp_dir().join(format!(
                "voxgate-li-api-{}-{}",
                std::process::id(),
                DIRS.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir).unwrap();
            let (issuer, ca_pem) = ca("warrant API test CA");
            let (other, _) = ca("another CA");
            let (srv, srv_key) = leaf(&issuer, Some("li-node"), &["localhost"], true);
            for (name, data) in [
                ("ca.pem", &ca_pem),
                ("server.pem", &srv),
                ("server.key", &srv_key),
            ] {
                std::fs::write(dir.join(name), data).unwrap();
            }
            Pki {
                officer1: leaf(&issuer, Some("officer-1"), &[], false),
                officer2: leaf(&issuer, Some("officer-2"), &["ignored.example.net"], false),
                dns_only: leaf(
                    &issuer,
                    None,
                    &["ops.example.net", "second.example.net"],
                    false,
                ),
                nameless: leaf(&issuer, None, &[], false),
                stranger: leaf(&other, Some("officer-1"), &[], false),
                dir,
                ca_pem,
            }
        }

        fn server_config(&self) -> Arc<rustls::ServerConfig> {
            server_config(
                &self.dir.join("server.pem"),
                &self.dir.join("server.key"),
                &self.dir.join("ca.pem"),
            )
            .unwrap()
        }

        fn connector(&self, client: Option<&Pair>) -> TlsConnector {
            let mut roots = rustls::RootCertStore::empty();
            for c in rustls_pemfile::certs(&mut self.ca_pem.as_bytes()) {
                roots.add(c.unwrap()).unwrap();
            }
            let b = rustls::ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots);
            let mut cfg = match client {
                None => b.with_no_client_auth(),
                Some((cert, key)) => {
                    let chain = rustls_pemfile::certs(&mut cert.as_bytes())
                        .collect::<Result<Vec<_>, _>>()
                        .unwrap();
                    let key = rustls_pemfile::private_key(&mut key.as_bytes())
                        .unwrap()
                        .unwrap();
                    b.with_client_auth_cert(chain, key).unwrap()
                }
            };
            cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
            TlsConnector::from(Arc::new(cfg))
        }
    }

    // ---- the server and a client ----------------------------------------------------------

    struct Server {
        addr: SocketAddr,
        fake: Arc<Mutex<Fake>>,
        pki: Pki,
        task: tokio::task::JoinHandle<anyhow::Result<()>>,
    }

    impl Drop for Server {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    impl Server {
        fn calls(&self) -> Vec<String> {
            self.fake.lock().unwrap().calls.clone()
        }
    }

    async fn start_with(limits: Limits) -> Server {
        let pki = Pki::new();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let fake = Arc::new(Mutex::new(Fake::default()));
        // The service as the LI node hands it over: a trait object.
        let service: Arc<Mutex<DynService>> = fake.clone();
        let task = tokio::spawn(serve_with(listener, pki.server_config(), service, limits));
        Server {
            addr,
            fake,
            pki,
            task,
        }
    }

    async fn start() -> Server {
        start_with(Limits::default()).await
    }

    type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

    async fn tls_connect(
        addr: SocketAddr,
        connector: &TlsConnector,
    ) -> anyhow::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(addr).await?;
        let name = ServerName::try_from("localhost").unwrap();
        Ok(connector.connect(name, tcp).await?)
    }

    async fn connect(addr: SocketAddr, connector: &TlsConnector) -> anyhow::Result<Sender> {
        let tls = tls_connect(addr, connector).await?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    #[derive(Debug)]
    struct Reply {
        status: u16,
        headers: HeaderMap,
        json: Value,
    }

    async fn send(
        sender: &mut Sender,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: impl Into<Bytes>,
    ) -> anyhow::Result<Reply> {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost");
        if let Some(ct) = content_type {
            req = req.header(CONTENT_TYPE, ct);
        }
        let resp = sender
            .send_request(req.body(Full::new(body.into()))?)
            .await?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let raw = resp.into_body().collect().await?.to_bytes();
        let json = serde_json::from_slice(&raw)
            .with_context(|| format!("not JSON: {}", String::from_utf8_lossy(&raw)))?;
        Ok(Reply {
            status,
            headers,
            json,
        })
    }

    /// One request on a connection of its own.
    async fn call(
        s: &Server,
        who: &Pair,
        method: &str,
        path: &str,
        body: &str,
    ) -> anyhow::Result<Reply> {
        let mut sender = connect(s.addr, &s.pki.connector(Some(who))).await?;
        let ct = (!body.is_empty()).then_some("application/json");
        send(&mut sender, method, path, ct, body.to_owned()).await
    }

    /// Raw bytes over TLS; everything the server sends until it closes (5 s at most).
    async fn raw(s: &Server, who: &Pair, bytes: &[u8]) -> String {
        let mut tls = tls_connect(s.addr, &s.pki.connector(Some(who)))
            .await
            .unwrap();
        tls.write_all(bytes).await.unwrap();
        let mut out = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut out)).await;
        assert!(read.is_ok(), "the server did not close the connection");
        String::from_utf8_lossy(&out).into_owned()
    }

    fn assert_error(r: &Reply, status: u16, code: &str) {
        assert_eq!(r.status, status, "{r:?}");
        let e = r.json.as_object().unwrap();
        assert_eq!(e.len(), 1, "{r:?}");
        let inner = e["error"].as_object().unwrap();
        assert_eq!(inner.len(), 2, "{r:?}");
        assert_eq!(inner["code"], code, "{r:?}");
        assert!(
            inner["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{r:?}"
        );
        assert_eq!(r.headers[CONTENT_TYPE], "application/json");
    }

    const W1: &str = r#"{"liid": "LI-1", "targets": ["sip:alice@example.net"]}"#;

    // ---- tests ----------------------------------------------------------------------------

    #[tokio::test]
    async fn the_certificate_cn_is_who_calls_the_service() {
        let s = start().await;
        let (o1, o2) = (&s.pki.officer1, &s.pki.officer2);

        let r = call(&s, o1, "POST", "/v1/warrants", W1).await.unwrap();
        assert_eq!(r.status, 201, "{r:?}");
        assert_eq!(r.json["created_by"], "officer-1");
        assert_eq!(r.headers[CONTENT_TYPE], "application/json");
        assert_eq!(r.headers[CACHE_CONTROL], "no-store");

        // The creator's own approval is the service's error, with its status and code.
        let r = call(&s, o1, "POST", "/v1/warrants/LI-1/approve", "")
            .await
            .unwrap();
        assert_error(&r, 403, "self_approval");
        assert_eq!(r.json["error"]["message"], "the creator cannot approve");

        let r = call(&s, o2, "POST", "/v1/warrants/LI-1/approve", "{}")
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.json["approved_by"], "officer-2");
        assert_eq!(r.json["state"], "active");

        let r = call(&s, o2, "GET", "/v1/warrants/LI-1", "").await.unwrap();
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.json["liid"], "LI-1");

        let r = call(&s, o1, "GET", "/v1/warrants", "").await.unwrap();
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.json["warrants"].as_array().unwrap().len(), 1);
        assert_eq!(r.json["warrants"][0]["liid"], "LI-1");

        let r = call(
            &s,
            o1,
            "POST",
            "/v1/warrants/LI-1/deactivate",
            r#"{"reason": "investigation closed"}"#,
        )
        .await
        .unwrap();
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.json["reason"], "investigation closed");
        assert_eq!(r.json["state"], "inactive");

        // Not a warrant of the book: the service's 404.
        let r = call(&s, o1, "GET", "/v1/warrants/LI-9", "").await.unwrap();
        assert_error(&r, 404, "unknown_warrant");
        let r = call(&s, o2, "POST", "/v1/warrants", W1).await.unwrap();
        assert_error(&r, 409, "duplicate");

        let r = call(&s, o1, "GET", "/v1/audit/head", "").await.unwrap();
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.json["node"], "li-test");

        assert_eq!(
            s.calls(),
            [
                "officer-1 create LI-1",
                "officer-1 approve LI-1",
                "officer-2 approve LI-1",
                "officer-2 get LI-1",
                "officer-1 list",
                "officer-1 deactivate LI-1",
                "officer-1 get LI-9",
                "officer-2 create LI-1",
            ]
        );
    }

    #[tokio::test]
    async fn a_dns_name_names_the_caller_without_a_cn_and_a_nameless_certificate_gets_403() {
        let s = start().await;
        let r = call(&s, &s.pki.dns_only, "GET", "/v1/warrants/X", "")
            .await
            .unwrap();
        assert_error(&r, 404, "unknown_warrant");
        let r = call(&s, &s.pki.nameless, "GET", "/v1/warrants", "")
            .await
            .unwrap();
        assert_error(&r, 403, "forbidden");
        let r = call(&s, &s.pki.nameless, "POST", "/v1/warrants", W1)
            .await
            .unwrap();
        assert_error(&r, 403, "forbidden");
        assert_eq!(s.calls(), ["ops.example.net get X"]);
    }

    #[tokio::test]
    async fn no_client_certificate_or_one_from_another_ca_cannot_connect() {
        let s = start().await;
        for connector in [
            s.pki.connector(None),
            s.pki.connector(Some(&s.pki.stranger)),
        ] {
            // TLS 1.3: the client may finish its side of the handshake before the server
            // refuses; the refusal then ends the first request.
            let outcome = match connect(s.addr, &connector).await {
                Err(e) => Err(e),
                Ok(mut sender) => send(&mut sender, "GET", "/v1/warrants", None, "").await,
            };
            assert!(outcome.is_err(), "{outcome:?}");
        }
        assert!(s.calls().is_empty());
    }

    #[tokio::test]
    async fn malformed_bodies_get_400() {
        let s = start().await;
        let o1 = &s.pki.officer1;
        for (path, body) in [
            ("/v1/warrants", r#"{"liid": "LI-1", "targets": ["#),
            ("/v1/warrants", "not json"),
            (
                "/v1/warrants",
                r#"{"liid": "LI-1", "targets": [], "extra": 1}"#,
            ),
            ("/v1/warrants", r#"{"liid": 7, "targets": []}"#),
            ("/v1/warrants", r#"{"targets": []}"#),
            ("/v1/warrants", r#"["LI-1", []]"#),
            ("/v1/warrants", ""),
            ("/v1/warrants/LI-1/approve", r#"{"reason": "x"}"#),
            ("/v1/warrants/LI-1/approve", "[]"),
            ("/v1/warrants/LI-1/deactivate", ""),
            ("/v1/warrants/LI-1/deactivate", "{}"),
            ("/v1/warrants/LI-1/deactivate", r#"["x"]"#),
            ("/v1/warrants/LI-1/deactivate", r#"{"reason": "  "}"#),
            (
                "/v1/warrants/LI-1/deactivate",
                r#"{"reason": "x", "by": "y"}"#,
            ),
        ] {
            let r = call(&s, o1, "POST", path, body).await.unwrap();
            assert_error(&r, 400, "bad_request");
        }
        let r = call(&s, o1, "GET", "/v1/warrants/bad%zzescape", "")
            .await
            .unwrap();
        assert_error(&r, 400, "bad_request");
        assert!(s.calls().is_empty(), "{:?}", s.calls());

        // A percent-encoded LIID reaches the service decoded.
        let r = call(&s, o1, "GET", "/v1/warrants/LI%20one", "")
            .await
            .unwrap();
        assert_error(&r, 404, "unknown_warrant");
        assert_eq!(s.calls(), ["officer-1 get LI one"]);
    }

    #[tokio::test]
    async fn unknown_routes_get_404_and_wrong_methods_405_with_allow() {
        let s = start().await;
        let o1 = &s.pki.officer1;
        for path in [
            "/",
            "/v1",
            "/v2/warrants",
            "/v1/warrants/",
            "/v1/warrants//approve",
            "/v1/warrants/LI-1/suspend",
            "/v1/warrants/LI-1/approve/now",
            "/v1/audit",
        ] {
            let r = call(&s, o1, "GET", path, "").await.unwrap();
            assert_error(&r, 404, "not_found");
        }
        for (method, path, allow) in [
            ("PUT", "/v1/warrants", "GET, POST"),
            ("DELETE", "/v1/warrants/LI-1", "GET"),
            ("POST", "/v1/warrants/LI-1", "GET"),
            ("GET", "/v1/warrants/LI-1/approve", "POST"),
            ("PUT", "/v1/warrants/LI-1/deactivate", "POST"),
            ("POST", "/v1/audit/head", "GET"),
        ] {
            let r = call(&s, o1, method, path, "{}").await.unwrap();
            assert_error(&r, 405, "method_not_allowed");
            assert_eq!(r.headers[ALLOW], allow, "{method} {path}");
        }
        assert!(s.calls().is_empty(), "{:?}", s.calls());
    }

    #[tokio::test]
    async fn bodies_over_64_kib_get_413_and_64_kib_is_accepted() {
        let s = start().await;
        let o1 = &s.pki.officer1;
        // Exactly the limit: accepted.
        let head = r#"{"liid": "LI-big", "targets": [""#;
        let tail = r#""]}"#;
        let exact = format!(
            "{head}{}{tail}",
            "a".repeat(MAX_BODY - head.len() - tail.len())
        );
        assert_eq!(exact.len(), MAX_BODY);
        let r = call(&s, o1, "POST", "/v1/warrants", &exact).await.unwrap();
        assert_eq!(r.status, 201, "{r:?}");

        // One byte more, with a Content-Length: refused, and the answer arrives.
        let over = format!(
            "{head}{}{tail}",
            "a".repeat(MAX_BODY + 1 - head.len() - tail.len())
        );
        let r = call(&s, o1, "POST", "/v1/warrants", &over).await.unwrap();
        assert_error(&r, 413, "payload_too_large");

        // Chunked, so only counting shows it.
        let mut req = b"POST /v1/warrants HTTP/1.1\r\nHost: localhost\r\n\
            Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            .to_vec();
        for _ in 0..3 {
            req.extend_from_slice(format!("{:x}\r\n", 30_000).as_bytes());
            req.extend_from_slice(&[b' '; 30_000]);
            req.extend_from_slice(b"\r\n");
        }
        // The refused body is read to its end: the connection goes on.
        req.extend_from_slice(
            b"0\r\n\r\nGET /v1/warrants HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        );
        let out = raw(&s, o1, &req).await;
        assert!(out.starts_with("HTTP/1.1 413 "), "{out}");
        assert!(out.contains("payload_too_large"), "{out}");
        assert!(out.contains("HTTP/1.1 200 "), "{out}");

        // A Content-Length that says too much: refused at once, without waiting for it.
        let out = raw(
            &s,
            o1,
            b"POST /v1/warrants HTTP/1.1\r\nHost: localhost\r\n\
              Content-Type: application/json\r\nContent-Length: 1000000000000\r\n\r\n{",
        )
        .await;
        assert!(out.starts_with("HTTP/1.1 413 "), "{out}");
        assert!(
            out.to_ascii_lowercase().contains("connection: close"),
            "{out}"
        );

        assert_eq!(s.calls(), ["officer-1 create LI-big", "officer-1 list"]);
    }

    #[tokio::test]
    async fn bodies_that_are_not_json_get_415() {
        let s = start().await;
        let o1 = &s.pki.officer1;
        let mut sender = connect(s.addr, &s.pki.connector(Some(o1))).await.unwrap();
        for ct in [
            None,
            Some("text/plain"),
            Some("application/jsonx"),
            Some(""),
        ] {
            let r = send(&mut sender, "POST", "/v1/warrants", ct, W1)
                .await
                .unwrap();
            assert_error(&r, 415, "unsupported_media_type");
        }
        assert!(s.calls().is_empty());
        // Parameters and case do not matter; no body needs no type (on the same connection:
        // the refused bodies were read).
        let r = send(
            &mut sender,
            "POST",
            "/v1/warrants",
            Some("Application/JSON; charset=utf-8"),
            W1,
        )
        .await
        .unwrap();
        assert_eq!(r.status, 201, "{r:?}");
        let r = send(&mut sender, "POST", "/v1/warrants/LI-1/approve", None, "")
            .await
            .unwrap();
        assert_error(&r, 403, "self_approval");
        assert_eq!(
            s.calls(),
            ["officer-1 create LI-1", "officer-1 approve LI-1"]
        );
    }

    #[tokio::test]
    async fn an_error_status_outside_4xx_5xx_is_answered_500() {
        let s = start().await;
        let r = call(
            &s,
            &s.pki.officer1,
            "POST",
            "/v1/warrants",
            r#"{"liid": "odd-status", "targets": []}"#,
        )
        .await
        .unwrap();
        assert_error(&r, 500, "odd");
    }

    #[tokio::test]
    async fn a_service_that_panicked_is_answered_500() {
        let s = start().await;
        let fake = s.fake.clone();
        let _ = std::thread::spawn(move || {
            let _g = fake.lock().unwrap();
            panic!("poisoning the book");
        })
        .join();
        let r = call(&s, &s.pki.officer1, "GET", "/v1/warrants", "")
            .await
            .unwrap();
        assert_error(&r, 500, "internal");
    }

    #[tokio::test]
    async fn serve_takes_the_service_as_a_trait_object() {
        let pki = Pki::new();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let service: Arc<Mutex<DynService>> = Arc::new(Mutex::new(Fake::default()));
        let task = tokio::spawn(serve(listener, pki.server_config(), service));
        let mut sender = connect(addr, &pki.connector(Some(&pki.officer2)))
            .await
            .unwrap();
        let r = send(&mut sender, "GET", "/v1/warrants", None, "")
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.json, json!({"warrants": []}));
        task.abort();
    }

    #[tokio::test]
    async fn slow_clients_are_cut_off() {
        let s = start_with(Limits {
            handshake_timeout: Duration::from_millis(300),
            header_read_timeout: Duration::from_millis(300),
            body_read_timeout: Duration::from_millis(300),
            ..Limits::default()
        })
        .await;
        // No TLS handshake.
        let mut tcp = TcpStream::connect(s.addr).await.unwrap();
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut buf)).await;
        assert!(read.is_ok(), "the handshake did not time out");
        // No request head.
        let out = raw(&s, &s.pki.officer1, b"").await;
        assert!(!out.contains("HTTP/1.1 2"), "{out}");
        // Half a head.
        let out = raw(&s, &s.pki.officer1, b"GET /v1/warrants HTTP/1.1\r\nHost: x").await;
        assert!(!out.contains("HTTP/1.1 2"), "{out}");
        // A body that does not come.
        let out = raw(
            &s,
            &s.pki.officer1,
            b"POST /v1/warrants HTTP/1.1\r\nHost: localhost\r\n\
              Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{",
        )
        .await;
        assert!(out.starts_with("HTTP/1.1 408 "), "{out}");
        assert!(s.calls().is_empty());
    }

    #[tokio::test]
    async fn connections_over_the_cap_are_closed() {
        let s = start_with(Limits {
            max_connections: 1,
            ..Limits::default()
        })
        .await;
        let connector = s.pki.connector(Some(&s.pki.officer1));
        let mut first = connect(s.addr, &connector).await.unwrap();
        let r = send(&mut first, "GET", "/v1/warrants", None, "")
            .await
            .unwrap();
        assert_eq!(r.status, 200);
        let second = match connect(s.addr, &connector).await {
            Err(e) => Err(e),
            Ok(mut sender) => send(&mut sender, "GET", "/v1/warrants", None, "").await,
        };
        assert!(second.is_err(), "{second:?}");
        // The first connection still works; once it is gone, there is room again.
        let r = send(&mut first, "GET", "/v1/warrants", None, "")
            .await
            .unwrap();
        assert_eq!(r.status, 200);
        drop(first);
        let mut ok = false;
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if let Ok(mut sender) = connect(s.addr, &connector).await {
                if send(&mut sender, "GET", "/v1/warrants", None, "")
                    .await
                    .is_ok_and(|r| r.status == 200)
                {
                    ok = true;
                    break;
                }
            }
        }
        assert!(ok, "no room after the first connection closed");
    }

    #[test]
    fn identity_rules() {
        let (issuer, _) = ca("CA");
        let der = |p: &Pair| {
            rustls_pemfile::certs(&mut p.0.as_bytes())
                .next()
                .unwrap()
                .unwrap()
        };
        let one = leaf(&issuer, Some("officer-1"), &["x.example.net"], false);
        assert_eq!(identity(&der(&one)).as_deref(), Some("officer-1"));
        let dns = leaf(&issuer, None, &["a.example.net", "b.example.net"], false);
        assert_eq!(identity(&der(&dns)).as_deref(), Some("a.example.net"));
        let none = leaf(&issuer, None, &[], false);
        assert_eq!(identity(&der(&none)), None);
        let ctl = leaf(&issuer, Some("evil\nname"), &[], false);
        assert_eq!(identity(&der(&ctl)), None);
        assert_eq!(identity(b"not a certificate"), None);
    }

    #[test]
    fn the_warrant_books_request_and_error_fit() {
        fn is_api_error<E: ApiError>() {}
        is_api_error::<voxgate_li::warrant::WarrantError>();
        let body = br#"{"liid": "LI-1", "targets": [], "start_ms": 0, "end_ms": 1,
                        "delivery": "iri_only", "destination": "x", "extra": true}"#;
        let e = parse::<voxgate_li::warrant::WarrantRequest>(body).unwrap_err();
        assert_eq!((e.status, e.code), (StatusCode::BAD_REQUEST, "bad_request"));
        assert!(e.message.contains("extra"), "{e:?}");
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("LI-1").as_deref(), Some("LI-1"));
        assert_eq!(percent_decode("a%2Fb%20c").as_deref(), Some("a/b c"));
        assert_eq!(percent_decode("%"), None);
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%ff"), None);
    }
}
