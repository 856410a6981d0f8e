//! IPv4 header options on real sockets: loopback, without CAP_NET_RAW, and through a Linux router namespace.
//!
//! These tests need root (CAP_NET_RAW to send option type 158; CAP_SYS_ADMIN and `ip` from iproute2 for the
//! namespaces) and fail with a message saying so otherwise; nothing is skipped.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::process::Command;
use std::time::Duration;

use voxgate_netio::{
    enable_recv_options, ip_options, recv_with_options, send_with_options, set_ip_options,
    NetError, OptionsBuf,
};

/// The CALEA session_ID option: type 158 (copy flag + experimental number 30, RFC 4727), length 10, the 8-byte
/// session_ID, then NOP and EOL to reach 12 bytes.
fn session_id_option(session_id: u64) -> [u8; 12] {
    let mut o = [0u8; 12];
    o[0] = 158;
    o[1] = 10;
    o[2..10].copy_from_slice(&session_id.to_be_bytes());
    o[10] = 1; // NOP
    o[11] = 0; // EOL
    o
}

fn require_root() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "these tests send IPv4 option 158, which needs CAP_NET_RAW: run them as root (e.g. sudo -E cargo test -p voxgate-netio)"
    );
}

fn receiver() -> UdpSocket {
    let r = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    r.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    enable_recv_options(&r).unwrap();
    r
}

fn sender() -> UdpSocket {
    UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap()
}

fn recv(r: &UdpSocket) -> (Vec<u8>, SocketAddr, OptionsBuf) {
    let mut buf = [0u8; 2048];
    let (n, from, opts) = recv_with_options(r, &mut buf).unwrap();
    (buf[..n].to_vec(), from, opts)
}

#[test]
fn session_id_option_round_trips_on_loopback() {
    require_root();
    let r = receiver();
    let s = sender();
    let opt = session_id_option(0x0102_0304_0506_0708);
    set_ip_options(&s, &opt).unwrap();
    assert_eq!(ip_options(&s).unwrap().as_slice(), &opt);
    s.send_to(b"rtp", r.local_addr().unwrap()).unwrap();
    let (data, from, opts) = recv(&r);
    assert_eq!(data, b"rtp");
    assert_eq!(from, s.local_addr().unwrap());
    assert_eq!(opts.as_slice(), &[158, 10, 1, 2, 3, 4, 5, 6, 7, 8, 1, 0]);
}

#[test]
fn padding_variants_arrive_byte_exact() {
    require_root();
    let r = receiver();
    let s = sender();
    let id = 0xdead_beef_0000_0001u64.to_be_bytes();
    for pad in [[0u8, 0], [1, 1], [1, 0]] {
        let mut opt = vec![158, 10];
        opt.extend_from_slice(&id);
        opt.extend_from_slice(&pad);
        set_ip_options(&s, &opt).unwrap();
        s.send_to(&pad, r.local_addr().unwrap()).unwrap();
        let (data, _, opts) = recv(&r);
        assert_eq!(data, pad);
        assert_eq!(opts.as_slice(), &opt[..], "padding {pad:?}");
    }
}

#[test]
fn different_session_ids_on_different_sockets() {
    require_root();
    let r = receiver();
    let ids = [1u64, 0xffff_ffff_ffff_ffff, 0x8000_0000_0000_0000, 42];
    let senders: Vec<UdpSocket> = ids
        .iter()
        .map(|&id| {
            let s = sender();
            set_ip_options(&s, &session_id_option(id)).unwrap();
            s
        })
        .collect();
    for round in 0..3u8 {
        for s in &senders {
            s.send_to(&[round], r.local_addr().unwrap()).unwrap();
        }
    }
    for round in 0..3u8 {
        for (s, &id) in senders.iter().zip(&ids) {
            let (data, from, opts) = recv(&r);
            assert_eq!(data, [round]);
            assert_eq!(from, s.local_addr().unwrap());
            assert_eq!(opts.as_slice(), &session_id_option(id));
        }
    }
}

#[test]
fn clearing_options_sends_plain_datagrams() {
    require_root();
    let r = receiver();
    let s = sender();
    set_ip_options(&s, &session_id_option(7)).unwrap();
    s.send_to(b"a", r.local_addr().unwrap()).unwrap();
    set_ip_options(&s, &[]).unwrap();
    assert!(ip_options(&s).unwrap().is_empty());
    s.send_to(b"b", r.local_addr().unwrap()).unwrap();
    let (a, _, oa) = recv(&r);
    let (b, _, ob) = recv(&r);
    assert_eq!(
        (a.as_slice(), oa.as_slice()),
        (&b"a"[..], &session_id_option(7)[..])
    );
    assert_eq!((b.as_slice(), ob.as_slice()), (&b"b"[..], &[][..]));
}

#[test]
fn receiver_without_recvopts_sees_no_options() {
    require_root();
    let r = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    r.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let s = sender();
    set_ip_options(&s, &session_id_option(9)).unwrap();
    s.send_to(b"x", r.local_addr().unwrap()).unwrap();
    let (data, _, opts) = recv(&r);
    assert_eq!(data, b"x");
    assert!(opts.is_empty());
}

#[test]
fn bad_options_refused_with_typed_errors_and_socket_unchanged() {
    let s = sender();
    let unpadded = &session_id_option(5)[..10];
    assert!(matches!(
        set_ip_options(&s, unpadded),
        Err(NetError::OptionsLength { len: 10 })
    ));
    assert!(matches!(
        set_ip_options(&s, &[1; 44]),
        Err(NetError::OptionsLength { len: 44 })
    ));
    assert!(matches!(
        set_ip_options(&s, &[1; 3]),
        Err(NetError::OptionsLength { len: 3 })
    ));
    assert!(matches!(
        set_ip_options(&s, &[158, 14, 1, 2, 3, 4, 5, 6, 7, 8, 1, 0]),
        Err(NetError::MalformedOptions { offset: 0, .. })
    ));
    assert!(matches!(
        set_ip_options(&s, &[158, 10, 1, 2, 3, 4, 5, 6, 7, 8, 0, 1]),
        Err(NetError::MalformedOptions { offset: 11, .. })
    ));
    let e = send_with_options(&s, b"x", "127.0.0.1:9".parse().unwrap(), &[1; 41]).unwrap_err();
    assert!(matches!(e, NetError::OptionsLength { len: 41 }));
    let e = send_with_options(&s, b"x", "[::1]:9".parse().unwrap(), &[]).unwrap_err();
    assert!(matches!(e, NetError::NotIpv4 { .. }));
    assert!(ip_options(&s).unwrap().is_empty());
}

#[test]
fn per_packet_options_with_sendmsg() {
    require_root();
    let r = receiver();
    let to = r.local_addr().unwrap();
    let s = sender();
    for id in [11u64, 12, 13] {
        assert_eq!(
            send_with_options(&s, &id.to_be_bytes(), to, &session_id_option(id)).unwrap(),
            8
        );
    }
    for id in [11u64, 12, 13] {
        let (data, _, opts) = recv(&r);
        assert_eq!(data, id.to_be_bytes());
        assert_eq!(opts.as_slice(), &session_id_option(id));
    }
    // Per-packet options win over the socket's; empty per-packet options leave the socket's in force.
    set_ip_options(&s, &session_id_option(20)).unwrap();
    send_with_options(&s, b"p", to, &session_id_option(21)).unwrap();
    send_with_options(&s, b"q", to, &[]).unwrap();
    assert_eq!(recv(&r).2.as_slice(), &session_id_option(21));
    assert_eq!(recv(&r).2.as_slice(), &session_id_option(20));
}

#[test]
fn nonblocking_socket_reports_would_block() {
    let r = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    r.set_nonblocking(true).unwrap();
    enable_recv_options(&r).unwrap();
    let mut buf = [0u8; 64];
    let e = recv_with_options(&r, &mut buf).unwrap_err();
    assert!(e.is_would_block(), "{e:?}");
    assert_eq!(
        std::io::Error::from(e).kind(),
        std::io::ErrorKind::WouldBlock
    );
}

#[test]
fn truncated_datagram_is_an_error() {
    let r = receiver();
    let s = sender();
    s.send_to(&[7; 100], r.local_addr().unwrap()).unwrap();
    let mut small = [0u8; 10];
    assert!(matches!(
        recv_with_options(&r, &mut small),
        Err(NetError::Truncated { capacity: 10 })
    ));
}

const NO_CAP_CHILD: &str = "VOXGATE_NETIO_NO_CAP_CHILD";

/// Runs this test binary again under `setpriv` without CAP_NET_RAW (removed from the bounding set, so root's
/// exec does not get it back) and runs `no_cap_net_raw_child` there.
#[test]
fn without_cap_net_raw_option_158_is_refused_with_typed_error() {
    require_root();
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("setpriv")
        .args([
            "--inh-caps=-all",
            "--ambient-caps=-all",
            "--bounding-set=-net_raw",
            "--",
        ])
        .arg(&exe)
        .args([
            "no_cap_net_raw_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(NO_CAP_CHILD, "1")
        .output()
        .unwrap_or_else(|e| panic!("cannot run setpriv ({e}): install util-linux"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "child without CAP_NET_RAW failed: {}\n{stdout}\n{stderr}",
        out.status
    );
}

#[test]
#[ignore = "run by without_cap_net_raw_option_158_is_refused_with_typed_error under setpriv"]
fn no_cap_net_raw_child() {
    assert_eq!(
        std::env::var(NO_CAP_CHILD).as_deref(),
        Ok("1"),
        "only meant to run under setpriv, from without_cap_net_raw_option_158_is_refused_with_typed_error"
    );
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let cap_eff = status.lines().find(|l| l.starts_with("CapEff:")).unwrap();
    let eff = u64::from_str_radix(cap_eff.split_whitespace().nth(1).unwrap(), 16).unwrap();
    assert_eq!(eff & (1 << 13), 0, "CAP_NET_RAW still effective: {cap_eff}");

    let s = sender();
    let e = set_ip_options(&s, &session_id_option(1)).unwrap_err();
    assert!(
        matches!(e, NetError::NeedCapNetRaw { option_type: 158 }),
        "{e:?}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains("CAP_NET_RAW") && msg.contains("setcap cap_net_raw+ep"),
        "{msg}"
    );
    assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied);
    let e = send_with_options(
        &s,
        b"x",
        "127.0.0.1:9".parse().unwrap(),
        &session_id_option(1),
    )
    .unwrap_err();
    assert!(
        matches!(e, NetError::NeedCapNetRaw { option_type: 158 }),
        "{e:?}"
    );
    // Options the kernel knows need no privilege: Router Alert (RFC 2113) and NOPs still work.
    set_ip_options(&s, &[148, 4, 0, 0]).unwrap();
    set_ip_options(&s, &[1, 1, 1, 1]).unwrap();
    set_ip_options(&s, &[]).unwrap();
}

/// Three network namespaces, A - R - B, two veth pairs, R forwarding: deleted on drop.
struct RoutedPath {
    names: [String; 3],
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap_or_else(|e| {
        panic!("cannot run `ip` ({e}): install iproute2 (apt-get install iproute2)")
    });
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl RoutedPath {
    fn new() -> RoutedPath {
        let pid = std::process::id();
        let names = ["a", "r", "b"].map(|n| format!("vgnio{pid}{n}"));
        let path = RoutedPath { names };
        let [a, r, b] = &path.names;
        for n in &path.names {
            ip(&["netns", "add", n]);
            ip(&["-n", n, "link", "set", "lo", "up"]);
        }
        ip(&[
            "-n", a, "link", "add", "va", "type", "veth", "peer", "name", "vra", "netns", r,
        ]);
        ip(&[
            "-n", b, "link", "add", "vb", "type", "veth", "peer", "name", "vrb", "netns", r,
        ]);
        ip(&["-n", a, "addr", "add", "10.77.1.2/24", "dev", "va"]);
        ip(&["-n", r, "addr", "add", "10.77.1.1/24", "dev", "vra"]);
        ip(&["-n", r, "addr", "add", "10.77.2.1/24", "dev", "vrb"]);
        ip(&["-n", b, "addr", "add", "10.77.2.2/24", "dev", "vb"]);
        for (n, dev) in [(a, "va"), (r, "vra"), (r, "vrb"), (b, "vb")] {
            ip(&["-n", n, "link", "set", dev, "up"]);
        }
        ip(&["-n", a, "route", "add", "default", "via", "10.77.1.1"]);
        ip(&["-n", b, "route", "add", "default", "via", "10.77.2.1"]);
        ip(&["netns", "exec", r, "sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        path
    }

    /// A UDP socket bound to `addr` inside namespace `ns`: created on a thread that entered the namespace
    /// (setns changes only the calling thread; the socket stays in the namespace it was created in).
    fn socket_in(&self, ns: usize, addr: &str) -> UdpSocket {
        let path = format!("/run/netns/{}", self.names[ns]);
        let addr = addr.to_owned();
        std::thread::spawn(move || {
            let f = std::fs::File::open(&path).unwrap();
            // SAFETY: setns on an open namespace file descriptor affects only this thread, which ends here.
            let rc =
                unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&f), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
            UdpSocket::bind(addr).unwrap()
        })
        .join()
        .unwrap()
    }

    fn forwarded_datagrams(&self) -> u64 {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.names[1], "cat", "/proc/net/snmp"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let mut ip_lines = text.lines().filter(|l| l.starts_with("Ip:"));
        let (names, values) = (ip_lines.next().unwrap(), ip_lines.next().unwrap());
        let col = names
            .split_whitespace()
            .position(|n| n == "ForwDatagrams")
            .unwrap();
        values.split_whitespace().nth(col).unwrap().parse().unwrap()
    }
}

impl Drop for RoutedPath {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

#[test]
fn session_id_option_survives_a_linux_router() {
    require_root();
    let path = RoutedPath::new();
    let s = path.socket_in(0, "10.77.1.2:0");
    let r = path.socket_in(2, "10.77.2.2:0");
    r.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    enable_recv_options(&r).unwrap();
    let to = r.local_addr().unwrap();
    let before = path.forwarded_datagrams();

    set_ip_options(&s, &session_id_option(0x1122_3344_5566_7788)).unwrap();
    s.send_to(b"via router", to).unwrap();
    send_with_options(&s, b"per packet", to, &session_id_option(0x99)).unwrap();

    let (data, from, opts) = recv(&r);
    assert_eq!(data, b"via router");
    assert_eq!(from, s.local_addr().unwrap());
    assert_eq!(opts.as_slice(), &session_id_option(0x1122_3344_5566_7788));
    let (data, _, opts) = recv(&r);
    assert_eq!(data, b"per packet");
    assert_eq!(opts.as_slice(), &session_id_option(0x99));
    assert!(
        path.forwarded_datagrams() >= before + 2,
        "the datagrams did not go through the router"
    );
}
