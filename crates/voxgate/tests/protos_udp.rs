//! PROTOS c07-sip (tests/fixtures/protos) against the real `voxgate proxy` over UDP: all 4,527
//! cases, group by group, from one local socket. Each case's INVITE is sent and its answers
//! are awaited for a few milliseconds (answers are read as they come, so the proxy is never
//! flooded); then its teardown message goes out as an ACK, which ends the INVITE server
//! transaction of a challenged or refused INVITE (a CANCEL would not, and the proxy would then
//! retransmit its final answer for 32 s). After every group a valid REGISTER (fresh Call-ID,
//! from another socket) must be challenged (401) within 2 s, the proxy must still run, and its
//! RSS is sampled; at the end it must not have grown by 64 MiB or more, and its log must show no
//! panic. A per-group table (answers by status code, REGISTER round trip, RSS) is printed:
//! `cargo test -p voxgate --test protos_udp -- --nocapture`.
//!
//! Placeholders are filled as in crates/sip/tests/protos.rs except: `<To>` is `100@` the
//! proxy's own listener address (requests to it are for the first domain), `<From-Address>`,
//! `<From-IP>` and `<Local-Port>` are this test's socket (the proxy answers to the datagram's
//! source anyway), and `<Branch-ID>` / `<Call-ID>` carry `pcx<case>` so that a late answer can
//! still be credited to the case it answers.

mod common;
#[path = "../../../tests/fixtures/protos/cases.rs"]
mod protos_cases;

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use protos_cases::{cases, groups, split_case};

/// How long to wait for the first answer to a case before going on. A late answer is still
/// credited to its case (by the `pcx<case>` marker) when it arrives during a later wait.
const ANSWER_WAIT: Duration = Duration::from_millis(25);
/// After a provisional answer, how long to wait for the final one.
const FINAL_WAIT: Duration = Duration::from_millis(250);
const REGISTER_WAIT: Duration = Duration::from_secs(2);
const RSS_GROWTH_LIMIT_KIB: u64 = 64 * 1024;

const CONFIG: &str = r#"
[[listen]]
transport = "udp"
address = "127.0.0.1:0"

[auth]
max_failures_per_source = 10
max_failures_per_account = 5
lockout_secs = 900

[[domain]]
name = "a.example"
encryption = "off"

  [[domain.user]]
  name = "100"
  password = "s3cret-Pa55"
"#;

/// Fills the placeholders (Content-Length last, from the filled body) and cuts the message at
/// the UDP limit, as the original PROTOS tool did.
fn fill(msg: &[u8], case: usize, proxy: SocketAddr, me: SocketAddr) -> Vec<u8> {
    let marker = format!("pcx{case}");
    let to = format!("100@{proxy}");
    let from = format!("protos@{me}");
    let ip = me.ip().to_string();
    let port = me.port().to_string();
    protos_cases::fill(
        msg,
        &[
            (b"<To>", to.as_bytes()),
            (b"<From>", from.as_bytes()),
            (b"<From-Address>", ip.as_bytes()),
            (b"<From-IP>", ip.as_bytes()),
            (b"<Local-Port>", port.as_bytes()),
            (b"<Branch-ID>", marker.as_bytes()),
            (b"<Call-ID>", marker.as_bytes()),
            (b"<CSeq>", b"1"),
            (b"<Teardown-Method>", b"ACK"),
        ],
    )
}

/// The status code of a response, `None` for anything else.
fn status(msg: &[u8]) -> Option<u16> {
    let rest = msg.strip_prefix(b"SIP/2.0 ")?;
    std::str::from_utf8(rest.get(..3)?).ok()?.parse().ok()
}

/// The case an answer belongs to, from the `pcx<case>` marker of its Via branch or Call-ID.
fn case_of(msg: &[u8]) -> Option<usize> {
    let head_end = msg
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(msg.len());
    let head = &msg[..head_end];
    let i = head.windows(3).position(|w| w == b"pcx")?;
    let digits: Vec<u8> = head[i + 3..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .copied()
        .collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

/// The method named in an answer's CSeq header.
fn cseq_method(msg: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(msg);
    text.lines().take_while(|l| !l.is_empty()).find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("CSeq")
            .then(|| value.split_whitespace().nth(1).map(str::to_string))?
    })
}

/// Answers seen for one case.
#[derive(Default)]
struct CaseAnswers {
    codes: Vec<u16>,
    /// Answers whose CSeq names ACK (an ACK must never be answered).
    to_ack: usize,
}

struct Replayer {
    sock: UdpSocket,
    buf: Vec<u8>,
    answers: BTreeMap<usize, CaseAnswers>,
    /// Datagrams that were not SIP responses.
    not_responses: usize,
    /// The first few answers to an ACK: (case, the answer's head).
    ack_examples: Vec<(usize, String)>,
}

impl Replayer {
    /// Receives until `deadline`; returns early once `current` has a final answer.
    fn receive(&mut self, current: usize, deadline: Instant) {
        loop {
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            self.sock
                .set_read_timeout(Some(deadline - now))
                .expect("set_read_timeout");
            let n = match self.sock.recv_from(&mut self.buf) {
                Ok((n, _)) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return
                }
                Err(e) => panic!("recv_from: {e}"),
            };
            let msg = &self.buf[..n];
            let Some(code) = status(msg) else {
                self.not_responses += 1;
                continue;
            };
            let case = case_of(msg).unwrap_or(current);
            let to_ack = cseq_method(msg).is_some_and(|m| m.eq_ignore_ascii_case("ACK"));
            if to_ack && self.ack_examples.len() < 3 {
                let head = String::from_utf8_lossy(msg);
                let head = head.split("\r\n\r\n").next().unwrap_or_default();
                self.ack_examples
                    .push((case, head.chars().take(400).collect()));
            }
            let a = self.answers.entry(case).or_default();
            a.codes.push(code);
            a.to_ack += usize::from(to_ack);
            if case == current && code >= 200 {
                return;
            }
        }
    }

    /// Sends one case's messages: the INVITE, waiting for its answer, then the ACK.
    fn play(&mut self, case: usize, msgs: &[Vec<u8>], proxy: SocketAddr) {
        let mut it = msgs.iter();
        if let Some(invite) = it.next() {
            self.sock.send_to(invite, proxy).expect("send case");
            let start = Instant::now();
            self.receive(case, start + ANSWER_WAIT);
            let provisional_only = self
                .answers
                .get(&case)
                .is_some_and(|a| a.codes.iter().all(|c| *c < 200));
            if provisional_only {
                self.receive(case, start + FINAL_WAIT);
            }
        }
        for teardown in it {
            self.sock.send_to(teardown, proxy).expect("send teardown");
        }
    }
}

/// A valid REGISTER for 100@a.example, from its own socket and with a fresh Call-ID: the
/// status of the answer and the round trip, or `None` after `REGISTER_WAIT`.
fn register_probe(proxy: SocketAddr, n: usize) -> Option<(u16, Duration, bool)> {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind probe socket");
    let me = sock.local_addr().expect("probe addr");
    let call_id = format!("probe-{n}-{}@127.0.0.1", std::process::id());
    let req = format!(
        "REGISTER sip:a.example SIP/2.0\r\n\
         Via: SIP/2.0/UDP {me};branch=z9hG4bK-probe-{n};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:100@a.example>;tag=probe{n}\r\n\
         To: <sip:100@a.example>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 REGISTER\r\n\
         Contact: <sip:100@{me}>\r\n\
         Expires: 60\r\n\
         Content-Length: 0\r\n\r\n"
    );
    let start = Instant::now();
    sock.send_to(req.as_bytes(), proxy).expect("send REGISTER");
    let mut buf = vec![0u8; 65_536];
    loop {
        let left = REGISTER_WAIT.checked_sub(start.elapsed())?;
        sock.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .expect("set_read_timeout");
        let Ok((len, _)) = sock.recv_from(&mut buf) else {
            return None;
        };
        let msg = &buf[..len];
        let text = String::from_utf8_lossy(msg);
        match status(msg) {
            Some(code) if code >= 200 && text.contains(&call_id) => {
                let challenged = text.lines().any(|l| {
                    l.split_once(':').is_some_and(|(h, v)| {
                        h.trim().eq_ignore_ascii_case("WWW-Authenticate")
                            && v.trim_start().starts_with("Digest ")
                    })
                });
                return Some((code, start.elapsed(), challenged));
            }
            _ => continue,
        }
    }
}

#[test]
fn protos_c07_sip_over_udp_never_breaks_the_proxy() {
    let started = Instant::now();
    let cases = cases();
    assert_eq!(cases.len(), 4527, "all PROTOS cases unpacked");
    let groups = groups();
    assert_eq!(
        groups.iter().map(|g| g.2).sum::<usize>(),
        4527,
        "the groups cover every case"
    );

    let dir = common::scratch("protos_udp");
    let mut proxy = common::Proxy::start(&dir, CONFIG);
    let paddr = proxy.addr("udp");
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let me = sock.local_addr().expect("local addr");
    let mut r = Replayer {
        sock,
        buf: vec![0u8; 65_536],
        answers: BTreeMap::new(),
        not_responses: 0,
        ack_examples: Vec::new(),
    };

    let (code, rtt, challenged) =
        register_probe(paddr, 0).expect("the proxy answers a REGISTER before the replay");
    assert!(
        code == 401 && challenged,
        "a REGISTER before the replay is challenged (401 with WWW-Authenticate), got {code}"
    );
    let rss_start = proxy.rss_kib();
    println!(
        "proxy {paddr}, replaying from {me}; first REGISTER {code} in {} ms; RSS {rss_start} KiB",
        rtt.as_millis()
    );
    println!(
        "{:<30} {:>5} {:>8} {:>6} {:>6}  {:<28} {:>12} {:>8} {:>7}",
        "group", "cases", "answered", "silent", "->ACK", "answers", "REGISTER", "RSS KiB", "ms"
    );

    let mut rss_max = rss_start;
    for (gi, (name, first, count)) in groups.iter().enumerate() {
        let t0 = Instant::now();
        for n in *first..first + count {
            let msgs: Vec<Vec<u8>> = split_case(&cases[&n])
                .into_iter()
                .map(|m| fill(m, n, paddr, me))
                .collect();
            r.play(n, &msgs, paddr);
            if n % 200 == 199 && !proxy.alive() {
                panic!(
                    "voxgate proxy died during group {name}, by case {n}; its log:\n{}",
                    proxy.log()
                );
            }
        }
        // Answers still in flight for this group's last case.
        r.receive(usize::MAX, Instant::now() + ANSWER_WAIT);
        let group_ms = t0.elapsed().as_millis();

        assert!(
            proxy.alive(),
            "voxgate proxy died during group {name} (cases {first}..{}); its log:\n{}",
            first + count - 1,
            proxy.log()
        );
        let probe = register_probe(paddr, gi + 1);
        let Some((code, rtt, challenged)) = probe else {
            panic!(
                "no answer to a valid REGISTER within {REGISTER_WAIT:?} after group {name} \
                 (cases {first}..{}); proxy alive: {}; its log:\n{}",
                first + count - 1,
                proxy.alive(),
                proxy.log()
            );
        };
        assert!(
            code == 401 && challenged,
            "after group {name} a valid REGISTER got {code} (challenge header: {challenged}) \
             instead of a 401 challenge"
        );
        let rss = proxy.rss_kib();
        rss_max = rss_max.max(rss);

        let mut answered = 0;
        let mut to_ack = 0;
        let mut by_code: BTreeMap<u16, usize> = BTreeMap::new();
        for n in *first..first + count {
            if let Some(a) = r.answers.get(&n) {
                answered += usize::from(!a.codes.is_empty());
                to_ack += a.to_ack;
                for c in &a.codes {
                    *by_code.entry(*c).or_default() += 1;
                }
            }
        }
        let codes: Vec<String> = by_code.iter().map(|(c, k)| format!("{c}x{k}")).collect();
        let codes = if codes.is_empty() {
            "-".to_string()
        } else {
            codes.join(" ")
        };
        let reg = format!("{code} {:.1}ms", rtt.as_secs_f64() * 1e3);
        println!(
            "{name:<30} {count:>5} {answered:>8} {:>6} {to_ack:>6}  {codes:<28} {reg:>12} {rss:>8} {group_ms:>7}",
            count - answered
        );
    }
    // Late answers (e.g. retransmissions) are credited before the totals.
    r.receive(usize::MAX, Instant::now() + Duration::from_millis(200));

    let rss_end = proxy.rss_kib();
    let answered = r.answers.values().filter(|a| !a.codes.is_empty()).count();
    let to_ack: usize = r.answers.values().map(|a| a.to_ack).sum();
    let mut all_codes: BTreeMap<u16, usize> = BTreeMap::new();
    for a in r.answers.values() {
        for c in &a.codes {
            *all_codes.entry(*c).or_default() += 1;
        }
    }
    println!(
        "total: {} cases, {answered} answered, {} silent, {to_ack} answers to an ACK, \
         {} non-response datagrams; answers {all_codes:?}",
        cases.len(),
        cases.len() - answered,
        r.not_responses
    );
    for (case, head) in &r.ack_examples {
        println!("an answer to case {case}'s ACK (ACKs are never answered in RFC 3261):\n{head}");
    }
    println!(
        "RSS: start {rss_start} KiB, max {rss_max} KiB, end {rss_end} KiB (growth {} KiB); \
         {:.1} s in all",
        rss_end.saturating_sub(rss_start),
        started.elapsed().as_secs_f64()
    );

    assert!(proxy.alive(), "voxgate proxy died at the end of the replay");
    let log = proxy.log();
    assert!(
        !log.contains("panicked"),
        "the proxy log shows a panic:\n{log}"
    );
    assert!(
        rss_end < rss_start + RSS_GROWTH_LIMIT_KIB,
        "proxy RSS grew from {rss_start} KiB to {rss_end} KiB (limit +{RSS_GROWTH_LIMIT_KIB} KiB)"
    );
    // Case 0 is a valid INVITE from a stranger: challenged before anything else.
    let valid = r
        .answers
        .get(&0)
        .map(|a| a.codes.clone())
        .unwrap_or_default();
    assert!(
        valid.contains(&407),
        "the valid INVITE (case 0) was not challenged with 407: answers {valid:?}"
    );
    // Nothing a stranger sends may succeed or be redirected; refusals are 4xx (5xx for 501,
    // 505, 513); provisional answers may precede them.
    let bad: Vec<(usize, Vec<u16>)> = r
        .answers
        .iter()
        .filter(|(_, a)| a.codes.iter().any(|c| (200..400).contains(c) || *c >= 600))
        .map(|(n, a)| (*n, a.codes.clone()))
        .collect();
    assert!(
        bad.is_empty(),
        "PROTOS cases answered with a success, a redirection or a 6xx: {bad:?}"
    );
}
