//! The watermark over a real network path: two network namespaces joined by a veth pair. In the
//! first, a 20 ms UDP "call" goes through `voxgate trace embed` (the tracer's relay); a second
//! call of the same shape goes straight to the far side, unmarked. Both cross the veth, then a
//! delaying hop in the far namespace: each datagram is held a random U[0, 10 ms] (FIFO, the
//! CCS 2005 paper's model) before it goes on to its receiver, and `tc netem` jitter is added
//! on the veth where the kernel has it (`sch_netem`; the kernel CI runs on here does not:
//! CONFIG_NET_SCH_NETEM is not set, so the delaying hop is user space). The far namespace's
//! loopback is captured (AF_PACKET) into a pcap and `voxgate trace detect` must find the mark
//! on the first flow and not on the second. The relay's send-time error is reported.
//!
//! Needs root (namespaces, AF_PACKET): CI runs as root. The test threads enter the namespaces
//! with setns(2), so the traffic is the test's own sockets.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `SIOCGSTAMP` (linux/sockios.h): the receive time of the last packet read.
const SIOCGSTAMP: libc::c_ulong = 0x8906;

fn sh(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

/// Moves the calling thread into the namespace.
fn enter(ns: &str) {
    let f = std::fs::File::open(format!("/var/run/netns/{ns}")).unwrap();
    // SAFETY: setns on a valid namespace fd, for this thread only.
    let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
}

/// A 20 ms flow of 172-byte datagrams for `secs` seconds from `from` to `to`.
fn call(ns: String, to: SocketAddr, secs: u64) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        enter(&ns);
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        let start = Instant::now();
        let mut n = 0u64;
        let mut p = vec![0x80u8; 172];
        while start.elapsed() < Duration::from_secs(secs) {
            p[2..4].copy_from_slice(&(n as u16).to_be_bytes());
            let _ = s.send_to(&p, to);
            n += 1;
            let next = start + Duration::from_millis(20 * n);
            if let Some(d) = next.checked_duration_since(Instant::now()) {
                std::thread::sleep(d);
            }
        }
        n
    })
}

/// Captures every IPv4 frame on `dev` in `ns` into a pcap until `stop`.
fn capture(
    ns: String,
    dev: String,
    path: std::path::PathBuf,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        enter(&ns);
        // SAFETY: plain socket calls; the fd is closed below.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW,
                i32::from((libc::ETH_P_ALL as u16).to_be()),
            )
        };
        assert!(fd >= 0, "AF_PACKET: {}", std::io::Error::last_os_error());
        let name = std::ffi::CString::new(dev).unwrap();
        // SAFETY: a valid C string.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: binding our socket to the interface.
        let r = unsafe {
            libc::bind(
                fd,
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(r, 0);
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 100_000,
        };
        // SAFETY: valid option buffer.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            );
        }
        let file = std::fs::File::create(path).unwrap();
        let header = pcap_file::pcap::PcapHeader {
            datalink: pcap_file::DataLink::ETHERNET,
            ..Default::default()
        };
        let mut w = pcap_file::pcap::PcapWriter::with_header(file, header).unwrap();
        let mut buf = vec![0u8; 65_536];
        let mut n = 0;
        while !stop.load(Ordering::Relaxed) {
            let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut flen = std::mem::size_of::<libc::sockaddr_ll>() as u32;
            // SAFETY: buf and the address are valid for their lengths.
            let len = unsafe {
                libc::recvfrom(
                    fd,
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    0,
                    (&mut from as *mut libc::sockaddr_ll).cast(),
                    &mut flen,
                )
            };
            // The loopback shows each datagram twice (sent, received): keep it once.
            if len <= 0 || from.sll_pkttype == libc::PACKET_OUTGOING {
                continue;
            }
            // The kernel's receive time of the frame (not when this thread got to it).
            let mut tv = libc::timeval {
                tv_sec: 0,
                tv_usec: 0,
            };
            // SAFETY: SIOCGSTAMP fills a timeval for the last frame read on fd.
            let r = unsafe { libc::ioctl(fd, SIOCGSTAMP as _, &mut tv) };
            let ts = if r == 0 {
                Duration::new(tv.tv_sec as u64, tv.tv_usec as u32 * 1000)
            } else {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
            };
            let frame = &buf[..len as usize];
            w.write_packet(&pcap_file::pcap::PcapPacket::new(
                ts,
                frame.len() as u32,
                frame,
            ))
            .unwrap();
            n += 1;
        }
        // SAFETY: our fd.
        unsafe { libc::close(fd) };
        n
    })
}

#[test]
fn a_call_relayed_through_the_embedder_is_detected_downstream_and_an_unmarked_one_is_not() {
    let dir = common::scratch("trace_netns");
    let id = std::process::id() % 100_000;
    let (a, b) = (Netns(format!("vgtr-a-{id}")), Netns(format!("vgtr-b-{id}")));
    let (va, vb) = (format!("vgta{id}"), format!("vgtb{id}"));
    sh(&["ip", "netns", "add", &a.0]);
    sh(&["ip", "netns", "add", &b.0]);
    sh(&[
        "ip", "link", "add", &va, "netns", &a.0, "type", "veth", "peer", "name", &vb, "netns", &b.0,
    ]);
    sh(&["ip", "-n", &a.0, "addr", "add", "10.77.0.1/24", "dev", &va]);
    sh(&["ip", "-n", &b.0, "addr", "add", "10.77.0.2/24", "dev", &vb]);
    for (ns, dev) in [(&a.0, &va), (&b.0, &vb)] {
        sh(&["ip", "-n", ns, "link", "set", dev, "up"]);
        sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
    }
    // netem jitter on the veth where the kernel has it.
    let netem = Command::new("ip")
        .args([
            "netns", "exec", &a.0, "tc", "qdisc", "add", "dev", &va, "root", "netem",
        ])
        .args(["delay", "5ms", "1ms", "distribution", "normal"])
        .output()
        .unwrap()
        .status
        .success();
    eprintln!(
        "tc netem on the veth: {}",
        if netem { "yes" } else { "not in this kernel" }
    );
    let key = "5a".repeat(32);
    let mut relay = Command::new("ip")
        .args(["netns", "exec", &a.0, common::voxgate(), "trace", "embed"])
        .args([
            "--listen",
            "10.77.0.1:5000",
            "--to",
            "10.77.0.2:7000",
            "--key",
            &key,
        ])
        .args(["--mark", "0x77", "--stats", "embed-stats.json"])
        .current_dir(&dir)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join("embed.log")).unwrap())
        .spawn()
        .unwrap();
    {
        use std::io::BufRead;
        let out = relay.stdout.take().unwrap();
        let mut lines = std::io::BufReader::new(out).lines();
        while let Some(Ok(l)) = lines.next() {
            if l == "ready" {
                break;
            }
        }
        std::thread::spawn(move || for _ in lines {});
    }
    // The far side: the delaying hop (7000 -> 6000, 7001 -> 6001), sockets that take the calls
    // (no ICMP port unreachable), and the capture of its loopback.
    let stop = Arc::new(AtomicBool::new(false));
    let hops: Vec<_> = [(7000u16, 6000u16), (7001, 6001)]
        .into_iter()
        .enumerate()
        .map(|(i, (from, to))| {
            let (ns, stop) = (b.0.clone(), stop.clone());
            std::thread::spawn(move || {
                enter(&ns);
                let s = UdpSocket::bind(("10.77.0.2", from)).unwrap();
                s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
                let out = UdpSocket::bind("10.77.0.2:0").unwrap();
                let dst = SocketAddr::from(([10, 77, 0, 2], to));
                let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ (i as u64 + 1);
                let (tx, rx) = std::sync::mpsc::channel::<(Instant, Vec<u8>)>();
                // Each datagram leaves at its time (sleep, then spin), in order.
                let sender = std::thread::spawn(move || {
                    while let Ok((at, p)) = rx.recv() {
                        let now = Instant::now();
                        if at > now + Duration::from_micros(300) {
                            std::thread::sleep(at - now - Duration::from_micros(300));
                        }
                        while Instant::now() < at {
                            std::hint::spin_loop();
                        }
                        let _ = out.send_to(&p, dst);
                    }
                });
                let mut last = Instant::now();
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(n) = s.recv(&mut buf) {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let delay = Duration::from_micros(x % 10_000);
                        // FIFO: never before the one ahead.
                        let at = (Instant::now() + delay).max(last);
                        last = at;
                        let _ = tx.send((at, buf[..n].to_vec()));
                    }
                }
                drop(tx);
                let _ = sender.join();
            })
        })
        .collect();
    let sink = {
        let (ns, stop) = (b.0.clone(), stop.clone());
        std::thread::spawn(move || {
            enter(&ns);
            let s1 = UdpSocket::bind("10.77.0.2:6000").unwrap();
            let s2 = UdpSocket::bind("10.77.0.2:6001").unwrap();
            for s in [&s1, &s2] {
                s.set_nonblocking(true).unwrap();
            }
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                let _ = s1.recv(&mut buf);
                let _ = s2.recv(&mut buf);
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let cap = capture(b.0.clone(), "lo".into(), dir.join("far.pcap"), stop.clone());
    std::thread::sleep(Duration::from_millis(300));
    let secs = 50;
    let marked = call(a.0.clone(), "10.77.0.1:5000".parse().unwrap(), secs);
    let unmarked = call(a.0.clone(), "10.77.0.2:7001".parse().unwrap(), secs);
    let (n1, n2) = (marked.join().unwrap(), unmarked.join().unwrap());
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: SIGTERM to our child.
    unsafe { libc::kill(relay.id() as i32, libc::SIGTERM) };
    let _ = relay.wait();
    stop.store(true, Ordering::Relaxed);
    for h in hops {
        let _ = h.join();
    }
    let frames = cap.join().unwrap();
    let _ = sink.join();
    assert!(
        frames >= n1 + n2 - 10,
        "{frames} frames for {n1} + {n2} sent"
    );
    let out = Command::new(common::voxgate())
        .args([
            "trace", "detect", "--pcap", "far.pcap", "--key", &key, "--mark", "0x77", "--json",
        ])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let verdict = |port: u16| {
        v["flows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["dst"].as_str().unwrap().ends_with(&format!(":{port}")))
            .map(|f| f["detection"].clone())
            .unwrap_or_else(|| panic!("no flow to :{port} in {v}"))
    };
    let (m, u) = (verdict(6000), verdict(6001));
    assert_eq!(m["verdict"], "watermarked", "marked flow: {m}");
    assert_eq!(u["verdict"], "not_watermarked", "unmarked flow: {u}");
    // The relay's timing: reported (and sane).
    let stats: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("embed-stats.json")).unwrap()).unwrap();
    eprintln!("embed send-time error: {}", stats["send_error_us"]);
    assert!(stats["packets"].as_u64().unwrap() >= n1 - 5, "{stats}");
    assert!(stats["delayed"].as_u64().unwrap() > 0, "{stats}");
    assert!(
        stats["send_error_us"]["p50"].as_u64().unwrap() < 1000,
        "{stats}"
    );
}
