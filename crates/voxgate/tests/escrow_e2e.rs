//! CALEA key escrow end to end, real binaries on loopback: an SPG (`voxgate spg`: SIP proxy,
//! escrow server, media relay) and two voice gateways (`voxgate gateway`, a.example and
//! b.example), alice behind one and bob behind the other (`voxgate ua`). alice calls bob over
//! TLS with SRTP; each gateway re-keys its provider leg, escrows the keys, and tags every
//! datagram with the session_ID; the SPG relays only what is escrowed and verifies the tags.
//! During the call a rogue sender (raw IPv4 sockets, so that it can use the gateway's exact
//! 5-tuple) is dropped by the SPG with the right reason for each case: no session_ID, forged
//! session_ID, valid session_ID on the wrong tuple, right session_ID and tuple but a key that
//! is not the escrowed one. Both carriers (IPv4 option 158, RTP header extension) and both
//! key stores (SQLite, PostgreSQL) are covered; the stored records open with the authority's
//! key and hold the keys the relay verified.
//!
//! Needs root (raw sockets, option 158): CI runs as root. PostgreSQL: `VOXGATE_TEST_PG`, as
//! for the keystore tests (`.ci/run` starts it).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use voxgate_escrow::carrier::{ipv4_options, rtp_extension_block};
use voxgate_escrow::client::{ClientEvent, EscrowClient, RetryPolicy};
use voxgate_escrow::seal::AuthorityKeyPair;
use voxgate_escrow::wire::Direction;
use voxgate_keystore::{open_session, KeyStore, PgStore, SqliteStore};
use voxgate_rtp::{MasterKey, SrtpPolicy, SrtpProfile, SrtpSession};

/// A running voxgate role whose `listening <what> <addr>` lines were read up to `ready`.
struct Node {
    child: Child,
    log: PathBuf,
    lines: mpsc::Receiver<String>,
}

impl Node {
    fn start(dir: &Path, name: &str, args: &[&str]) -> Node {
        let log = dir.join(format!("{name}.log"));
        let mut child = Command::new(common::voxgate())
            .args(args)
            .current_dir(dir)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
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
        Node { child, log, lines }
    }

    fn wait_line(&self, prefix: &str) -> String {
        loop {
            match self.lines.recv_timeout(Duration::from_secs(30)) {
                Ok(l) if l.starts_with(prefix) => return l,
                Ok(_) => {}
                Err(_) => panic!("no line {prefix:?}; log:\n{}", self.log()),
            }
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Exit status and the JSON summary (for `voxgate ua --json`), waiting at most 40 s.
    fn finish(mut self) -> (i32, serde_json::Value, String) {
        let deadline = Instant::now() + Duration::from_secs(40);
        let code = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s.code().unwrap_or(-1);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("did not exit; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let mut json = serde_json::Value::Null;
        while let Ok(l) = self.lines.recv_timeout(Duration::from_millis(300)) {
            if l.starts_with('{') {
                json = serde_json::from_str(&l).unwrap();
            }
        }
        (code, json, self.log())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn metrics(addr: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// The value of a metric line (name with its labels, as printed).
fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no metric {name} in:\n{text}"))
}

fn drops(text: &str, reason: &str) -> u64 {
    metric(
        text,
        &format!("voxgate_relay_dropped_total{{reason=\"{reason}\"}}"),
    )
}

/// A test signal (440 Hz and noise) so that alignment is unique.
fn signal(seconds: usize) -> Vec<i16> {
    let mut x: u32 = 0x9e37_79b9;
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

/// Sends one UDP datagram with a forged source through a raw IPv4 socket (IP_HDRINCL), with
/// `options` in the IP header.
fn raw_send(src: SocketAddrV4, dst: SocketAddrV4, options: &[u8], payload: &[u8]) {
    assert_eq!(options.len() % 4, 0);
    let ihl = 20 + options.len();
    let total = ihl + 8 + payload.len();
    let mut p = vec![0u8; total];
    p[0] = 0x40 | (ihl / 4) as u8;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[6] = 0x40; // DF
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src.ip().octets());
    p[16..20].copy_from_slice(&dst.ip().octets());
    p[20..ihl].copy_from_slice(options);
    let mut sum: u32 = 0;
    for c in p[..ihl].chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    p[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    p[ihl..ihl + 2].copy_from_slice(&src.port().to_be_bytes());
    p[ihl + 2..ihl + 4].copy_from_slice(&dst.port().to_be_bytes());
    p[ihl + 4..ihl + 6].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    // UDP checksum 0: none (IPv4).
    p[ihl + 8..].copy_from_slice(payload);
    // SAFETY: a raw socket we close below; `p` and the sockaddr are valid for the call.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW);
        assert!(
            fd >= 0,
            "raw socket (needs root): {}",
            std::io::Error::last_os_error()
        );
        let mut sa: libc::sockaddr_in = std::mem::zeroed();
        sa.sin_family = libc::AF_INET as libc::sa_family_t;
        sa.sin_addr.s_addr = u32::from(*dst.ip()).to_be();
        let r = libc::sendto(
            fd,
            p.as_ptr().cast(),
            p.len(),
            0,
            (&sa as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        assert_eq!(r as usize, p.len(), "raw send: {err}");
    }
}

fn srtp_packet(key: &[u8], seq: u16, ssrc: u32, ext: Option<(u8, u64)>) -> Vec<u8> {
    let mk = MasterKey::from_key_salt(SrtpProfile::AesCm128HmacSha1_80, key).unwrap();
    let mut s = SrtpSession::new(SrtpPolicy::new(mk)).unwrap();
    let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p[8..12].copy_from_slice(&ssrc.to_be_bytes());
    if let Some((id, sid)) = ext {
        p[0] |= 0x10;
        p.extend_from_slice(&rtp_extension_block(id, sid));
    }
    p.extend_from_slice(&[0xd5; 160]);
    s.protect_rtp_vec(&mut p).unwrap();
    p
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Carrier {
    Ipv4Option,
    RtpExtension,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Store {
    Sqlite,
    Postgres,
}

fn pg_conn() -> String {
    std::env::var("VOXGATE_TEST_PG")
        .unwrap_or_else(|_| "host=/var/run/postgresql dbname=voxgate_test".to_string())
}

/// Three voxgate roles on the loopback addresses 127.0.`net`.x: the SPG (.1), gateway A (.11,
/// a.example, user alice at .50) and gateway B (.12, b.example, user bob at .51); gateway C
/// (.13) is registered at the SPG but has no calls.
struct Env {
    net: u8,
    dir: PathBuf,
    authority: AuthorityKeyPair,
    store: Store,
    schema: String,
    carrier: Carrier,
    spg: Node,
    gwa: Node,
    gwb: Node,
}

impl Env {
    fn ip(&self, h: u8) -> Ipv4Addr {
        Ipv4Addr::new(127, 0, self.net, h)
    }

    fn spg_metrics(&self) -> String {
        metrics(&format!("{}:9460", self.ip(1)))
    }

    fn start_spg(&mut self) {
        self.spg = Node::start(&self.dir, "spg", &["spg", "--config", "spg.toml"]);
        self.spg.wait_line("ready");
    }

    fn live_sessions(&self) -> Vec<voxgate_keystore::StoredSession> {
        match self.store {
            Store::Sqlite => {
                SqliteStore::open(self.dir.join("spg-keys.db")).and_then(|mut s| s.list_live())
            }
            Store::Postgres => {
                PgStore::connect_in_schema(&pg_conn(), &self.schema).and_then(|mut s| s.list_live())
            }
        }
        .unwrap_or_default()
    }

    /// Waits until both gateways' sessions are escrowed and stored.
    fn wait_escrowed(&self) -> Vec<voxgate_keystore::StoredSession> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let live = self.live_sessions();
            if live.len() == 2 {
                return live;
            }
            assert!(
                Instant::now() < deadline,
                "two sessions were not escrowed; SPG log:\n{}\ngateway A log:\n{}",
                self.spg.log(),
                self.gwa.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// bob answers (and plays the speech back), alice calls him for `secs` seconds.
    fn call(&self, source: &[i16], secs: u32) -> (Node, Node) {
        let dir = &self.dir;
        common::write_wav(&dir.join("speech.wav"), source);
        let bob = Node::start(
            dir,
            "bob",
            &[
                "ua",
                "--user",
                "bob@b.example",
                "--password-file",
                "bob.pw",
                "--register",
                "--answer",
                "--proxy",
                &format!("{}:5061", self.ip(12)),
                "--ca",
                "certs/ca.pem",
                "--listen",
                &format!("{}:0", self.ip(51)),
                "--record",
                "bob.wav",
                "--play",
                "speech.wav",
                "--json",
            ],
        );
        bob.wait_line("ready");
        let alice = Node::start(
            dir,
            "alice",
            &[
                "ua",
                "--user",
                "alice@a.example",
                "--password-file",
                "alice.pw",
                "--register",
                "--call",
                "sip:bob@b.example",
                "--proxy",
                &format!("{}:5061", self.ip(11)),
                "--ca",
                "certs/ca.pem",
                "--listen",
                &format!("{}:0", self.ip(50)),
                "--play",
                "speech.wav",
                "--record",
                "alice.wav",
                "--duration",
                &secs.to_string(),
                "--json",
            ],
        );
        (alice, bob)
    }
}

/// `engine`: the media I/O engine of the SPG's relay and the gateways (`[media] engine`);
/// `shared`: the gateways' sides on the relay's shared port pair (`[media] shared_port`).
fn setup(net: u8, carrier: Carrier, store: Store, engine: &str, shared: bool) -> Env {
    let ip = |h: u8| Ipv4Addr::new(127, 0, net, h);
    let (spg_ip, gwa_ip, gwb_ip) = (ip(1), ip(11), ip(12));
    let dir = common::scratch(&format!("escrow_e2e_{net}"));
    common::run_ok(
        &dir,
        &["cert", "dev", "--out", "certs", "--ip", &spg_ip.to_string()],
    );
    for (name, a) in [
        ("gw1.a.example", gwa_ip),
        ("gw1.b.example", gwb_ip),
        ("gw1.c.example", ip(13)),
    ] {
        common::run_ok(
            &dir,
            &[
                "cert",
                "issue",
                "--ca-cert",
                "certs/ca.pem",
                "--ca-key",
                "certs/ca.key",
                "--name",
                name,
                "--ip",
                &a.to_string(),
                "--out-cert",
                &format!("certs/{name}.pem"),
                "--out-key",
                &format!("certs/{name}.key"),
            ],
        );
    }
    let authority = AuthorityKeyPair::generate().unwrap();
    let schema = format!("e2e_{}_{net}", std::process::id());
    let store_toml = match store {
        Store::Sqlite => "sqlite = \"spg-keys.db\"".to_string(),
        Store::Postgres => format!(
            "postgres = \"{}\"\npostgres_schema = \"{schema}\"",
            pg_conn()
        ),
    };
    let media_base = 20_000 + u16::from(net) * 100;
    let gwc_ip = ip(13);
    std::fs::write(
        dir.join("spg.toml"),
        format!(
            r#"[escrow]
listen = "{spg_ip}:7450"
[tls]
cert = "certs/server.pem"
key = "certs/server.key"
client_ca = "certs/ca.pem"
[sip]
listen = ["{spg_ip}:5061"]
encryption = "mandatory"
[media]
address = "{spg_ip}"
first_port = {media_base}
port_count = 40
engine = "{engine}"
shared_port = {shared}
[[gateway]]
name = "gw1.a.example"
addresses = ["{gwa_ip}"]
domains = ["a.example"]
sip = "sip:{gwa_ip}:5061;transport=tls"
[[gateway]]
name = "gw1.b.example"
addresses = ["{gwb_ip}"]
domains = ["b.example"]
sip = "sip:{gwb_ip}:5061;transport=tls"
[[gateway]]
name = "gw1.c.example"
addresses = ["{gwc_ip}"]
domains = ["c.example"]
sip = "sip:{gwc_ip}:5061;transport=tls"
[authority]
public_key = "{}"
[store]
{store_toml}
[metrics]
address = "{spg_ip}:9460"
"#,
            authority.public()
        ),
    )
    .unwrap();
    let carrier_toml = match carrier {
        Carrier::Ipv4Option => "carrier = \"ipv4-option\"",
        Carrier::RtpExtension => "carrier = \"rtp-extension\"\nextension_id = 3",
    };
    for (d, gw_ip, user) in [("a", gwa_ip, "alice"), ("b", gwb_ip, "bob")] {
        std::fs::write(
            dir.join(format!("gw-{d}.toml")),
            format!(
                r#"[gateway]
name = "gw1.{d}.example"
[sip]
[[sip.listen]]
transport = "tls"
address = "{gw_ip}:5061"
[sip.tls]
cert = "certs/gw1.{d}.example.pem"
key = "certs/gw1.{d}.example.key"
client_ca = "certs/ca.pem"
[[sip.domain]]
name = "{d}.example"
encryption = "mandatory"
  [[sip.domain.user]]
  name = "{user}"
  password = "{user} secret"
[provider]
sip = "sip:{spg_ip}:5061;transport=tls"
addresses = ["{spg_ip}"]
escrow = "{spg_ip}:7450"
[media]
outside_address = "{gw_ip}"
first_port = 30000
port_count = 20
engine = "{engine}"
{carrier_toml}
[metrics]
address = "{gw_ip}:9461"
"#
            ),
        )
        .unwrap();
        std::fs::write(dir.join(format!("{user}.pw")), format!("{user} secret\n")).unwrap();
    }
    let spg = Node::start(&dir, "spg", &["spg", "--config", "spg.toml"]);
    spg.wait_line("ready");
    let gwa = Node::start(&dir, "gw-a", &["gateway", "--config", "gw-a.toml"]);
    gwa.wait_line("ready");
    let gwb = Node::start(&dir, "gw-b", &["gateway", "--config", "gw-b.toml"]);
    gwb.wait_line("ready");
    Env {
        net,
        dir,
        authority,
        store,
        schema,
        carrier,
        spg,
        gwa,
        gwb,
    }
}

/// One escrow exchange as gateway `name` from `from` (its address): a key_update for `call_id`
/// with `streams`; returns the SPG's answer.
fn escrow_as(
    env: &Env,
    name: &str,
    from: Ipv4Addr,
    call_id: &str,
    streams: Vec<voxgate_escrow::wire::StreamKey>,
) -> ClientEvent {
    let dir = &env.dir;
    let pem = |p: &str| std::fs::read(dir.join(p)).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut &pem("certs/ca.pem")[..]) {
        roots.add(c.unwrap()).unwrap();
    }
    let chain: Vec<_> = rustls_pemfile::certs(&mut &pem(&format!("certs/{name}.pem"))[..])
        .map(|c| c.unwrap())
        .collect();
    let key = rustls_pemfile::private_key(&mut &pem(&format!("certs/{name}.key"))[..])
        .unwrap()
        .unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .unwrap();
    let spg = SocketAddr::from((env.ip(1), 7450));
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(&SocketAddr::from((from, 0)).into()).unwrap();
    sock.connect(&spg.into()).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let tcp: TcpStream = sock.into();
    let conn = rustls::ClientConnection::new(
        std::sync::Arc::new(cfg),
        rustls::pki_types::ServerName::IpAddress(env.ip(1).into()),
    )
    .unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let mut client = EscrowClient::new(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64,
        RetryPolicy::default(),
    );
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    client.key_update(Instant::now(), wall, call_id, None, streams);
    while let Some(f) = client.poll_transmit() {
        tls.write_all(&f).unwrap();
    }
    let mut buf = [0u8; 4096];
    loop {
        if let Some(ev) = client.poll_event() {
            return ev;
        }
        let n = tls.read(&mut buf).expect("the SPG answers");
        assert!(n > 0, "the SPG closed the escrow connection");
        client.handle_input(&buf[..n]).unwrap();
    }
}

fn escrowed_call(net: u8, carrier: Carrier, store: Store, engine: &str, shared: bool) {
    let env = setup(net, carrier, store, engine, shared);
    let (gwa_ip, spg_ip) = (env.ip(11), env.ip(1));
    let source = signal(6);
    let (alice, bob) = env.call(&source, 5);
    let (spg, gwa, gwb, dir) = (&env.spg, &env.gwa, &env.gwb, &env.dir);

    // While the call is up: find gateway A's escrowed session (the store's non-secret row and
    // the sealed keys, opened with the authority's key as lawful interception would).
    let live = env.wait_escrowed();
    let rec_a = live
        .iter()
        .find(|r| r.gateway == "gw1.a.example")
        .expect("gateway A's session");
    assert!(live.iter().any(|r| r.gateway == "gw1.b.example"));
    let keys = open_session(&env.authority, rec_a).unwrap();
    let send = keys
        .iter()
        .find(|k| k.direction == Direction::Send)
        .expect("gateway A's send key");
    let SocketAddr::V4(gw_media) = send.src.0 else {
        panic!("IPv4")
    };
    let SocketAddr::V4(relay) = send.dst.0 else {
        panic!("IPv4")
    };
    assert_eq!(*gw_media.ip(), gwa_ip);
    assert_eq!(*relay.ip(), spg_ip);
    let sid = rec_a.session_id;
    let ssrc = send.ssrc.expect("the gateway escrows its SSRC");

    // Let real media flow, then the rogue sender, 5 datagrams per case.
    std::thread::sleep(Duration::from_millis(1500));
    let before = env.spg_metrics();
    let carry = |id: u64| -> (Vec<u8>, Option<(u8, u64)>) {
        match env.carrier {
            Carrier::Ipv4Option => (ipv4_options(id).to_vec(), None),
            Carrier::RtpExtension => (Vec::new(), Some((3, id))),
        }
    };
    let wrong_key = [0x5a; 30];
    let other_port = UdpSocket::bind(SocketAddrV4::new(gwa_ip, 0)).unwrap();
    let SocketAddr::V4(other) = other_port.local_addr().unwrap() else {
        unreachable!()
    };
    // Paced: a relay port queues only ~19 datagrams (`port_queue_bytes`), and a burst of 20
    // on one port (with the real stream) would be partly shed by the kernel.
    for i in 0..5u16 {
        std::thread::sleep(Duration::from_millis(10));
        // (1) No session_ID, from the gateway's own tuple.
        let p = srtp_packet(&send.master.0, 60_000 + i, ssrc, None);
        raw_send(gw_media, relay, &[], &p);
        // (2) A forged session_ID.
        let (o, e) = carry(sid ^ 0xdead_beef);
        raw_send(
            gw_media,
            relay,
            &o,
            &srtp_packet(&send.master.0, 60_100 + i, ssrc, e),
        );
        // (3) The valid session_ID, from another port of the gateway.
        let (o, e) = carry(sid);
        raw_send(
            other,
            relay,
            &o,
            &srtp_packet(&send.master.0, 60_200 + i, ssrc, e),
        );
        // (4) The valid session_ID and tuple, but a key that is not the escrowed one.
        raw_send(
            gw_media,
            relay,
            &o,
            &srtp_packet(&wrong_key, 60_300 + i, ssrc, e),
        );
    }
    std::thread::sleep(Duration::from_millis(600));
    let after = env.spg_metrics();
    for reason in [
        "no_session_id",
        "unknown_session_id",
        "wrong_tuple",
        "tag_mismatch",
    ] {
        assert_eq!(
            drops(&after, reason) - drops(&before, reason),
            5,
            "{reason} ({:?}); SPG log:\n{}",
            env.carrier,
            spg.log()
        );
    }

    // Escrow abuse: a registered gateway that is not party to the call, and a party naming
    // the other side's media path.
    let call_id = rec_a.call_id.clone();
    let other_key = |k: &voxgate_escrow::wire::StreamKey| voxgate_escrow::wire::StreamKey {
        master: voxgate_escrow::wire::Secret(zeroize::Zeroizing::new(vec![0x42; 30])),
        ..k.clone()
    };
    match escrow_as(
        &env,
        "gw1.c.example",
        env.ip(13),
        &call_id,
        vec![other_key(send)],
    ) {
        ClientEvent::Refused {
            code: 403, reason, ..
        } => {
            assert!(reason.contains("not party"), "{reason}")
        }
        other => panic!("gateway C escrowed a call it is not party to: {other:?}"),
    }
    match escrow_as(
        &env,
        "gw1.b.example",
        env.ip(12),
        &call_id,
        vec![other_key(send)],
    ) {
        ClientEvent::Refused {
            code: 403, reason, ..
        } => {
            assert!(reason.contains("not a media path"), "{reason}")
        }
        other => panic!("gateway B escrowed gateway A's media path: {other:?}"),
    }

    let (acode, aj, alog) = alice.finish();
    let (bcode, bj, blog) = bob.finish();
    assert_eq!(acode, 0, "alice: {alog}\ngateway A:\n{}", gwa.log());
    assert_eq!(bcode, 0, "bob: {blog}\ngateway B:\n{}", gwb.log());
    for (who, j) in [("alice", &aj), ("bob", &bj)] {
        assert_eq!(j["calls"], 1, "{who}: {j}");
        assert_eq!(j["encrypted"], true, "{who}: {j}");
        assert!(j["rtp_received"].as_u64().unwrap() > 150, "{who}: {j}");
        assert_eq!(j["srtp_auth_failures"], 0, "{who}: {j}");
    }
    // Each side hears the other's speech, sample for sample after G.711 (the relay path adds
    // no loss on loopback; the first packets before escrow are held, so compare from the
    // first sound on).
    for (who, wav) in [("bob", "bob.wav"), ("alice", "alice.wav")] {
        let rec = common::read_wav(&dir.join(wav));
        let (share, n) = common::match_share(&rec, &source);
        assert!(n >= 8000 * 3, "{who}: only {n} aligned samples");
        assert!(share >= 0.98, "{who}: {share} of the samples match");
    }
    // The SPG verified every relayed packet with the escrowed keys and saw no gateway fault
    // but the rogue's.
    let m = env.spg_metrics();
    let forwarded = metric(&m, "voxgate_relay_forwarded_total");
    let verified = metric(&m, "voxgate_relay_verified_total");
    assert!(forwarded > 300, "{m}");
    assert_eq!(verified, forwarded, "every packet verified:\n{m}");
    assert_eq!(drops(&m, "tag_mismatch"), 5, "{m}");
    assert_eq!(metric(&m, "voxgate_escrow_sessions_escrowed_total"), 2);
    // After the hang-up: both sessions ended in the store, and the relay's legs released.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = env.spg_metrics();
        if metric(&m, "voxgate_escrow_sessions_ended_total") == 2
            && metric(&m, "voxgate_relay_legs") == 0
        {
            break;
        }
        assert!(Instant::now() < deadline, "not ended:\n{m}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The gateways' bridges tagged what they sent and never sent untagged media.
    for (gw, ip) in [(gwa, gwa_ip), (gwb, env.ip(12))] {
        let gm = metrics(&format!("{ip}:9461"));
        assert!(metric(&gm, "voxgate_bridge_outward_total") > 150, "{gm}");
        assert_eq!(
            metric(&gm, "voxgate_gateway_escrowed_total"),
            1,
            "{gm}\n{}",
            gw.log()
        );
    }
    // No key material in any log.
    for n in [spg, gwa, gwb] {
        assert!(!n.log().contains("inline:"));
    }
}

#[test]
fn escrowed_call_ipv4_option_carrier_sqlite_store_uring_engine_shared_port() {
    escrowed_call(41, Carrier::Ipv4Option, Store::Sqlite, "uring", true);
}

#[test]
fn escrowed_call_rtp_extension_carrier_postgres_store_raw_engine_dedicated_ports() {
    escrowed_call(42, Carrier::RtpExtension, Store::Postgres, "raw", false);
}

/// kill -9 the SPG in the middle of a call, start it again: every stored session is intact
/// (same rows, same sealed bytes, the same keys when the authority opens them), and the SPG
/// serves again.
#[test]
fn the_spg_killed_mid_call_keeps_every_stored_session() {
    let mut env = setup(43, Carrier::RtpExtension, Store::Sqlite, "sockets", true);
    let (alice, bob) = env.call(&signal(6), 30);
    let mut before = env.wait_escrowed();
    before.sort_by_key(|r| r.session_id);
    let status = Command::new("kill")
        .args(["-9", &env.spg.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let _ = env.spg.child.wait();
    env.start_spg();
    let mut after = env.live_sessions();
    after.sort_by_key(|r| r.session_id);
    assert_eq!(after.len(), 2, "SPG log:\n{}", env.spg.log());
    for (a, b) in before.iter().zip(&after) {
        assert_eq!(
            (
                a.session_id,
                &a.gateway,
                &a.call_id,
                a.generation,
                &a.sealed
            ),
            (
                b.session_id,
                &b.gateway,
                &b.call_id,
                b.generation,
                &b.sealed
            )
        );
        let (ka, kb) = (
            open_session(&env.authority, a).unwrap(),
            open_session(&env.authority, b).unwrap(),
        );
        assert_eq!(ka.len(), kb.len());
        for (x, y) in ka.iter().zip(&kb) {
            assert_eq!(*x.master.0, *y.master.0);
        }
    }
    assert!(
        env.spg.log().contains("restored"),
        "the restart says what it restored:\n{}",
        env.spg.log()
    );
    let m = env.spg_metrics();
    assert_eq!(metric(&m, "voxgate_escrow_sessions_live"), 2, "{m}");
    drop((alice, bob));
}
