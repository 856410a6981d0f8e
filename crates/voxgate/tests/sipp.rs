//! SIPp (Debian package `sip-tester`) against the real `voxgate proxy` on loopback.
//!
//! The scenarios are tests/fixtures/sipp/*.xml (see the README there). Each test starts its own
//! proxy (UDP and TCP listeners on port 0) with the users `alice` (password) and `uas` (a static
//! contact: the SIPp uas, on a free UDP port chosen here). Then, over UDP (`-t u1`) and over TCP
//! (`-t t1`; the proxy reaches the uas over UDP, so it record-routes twice):
//!
//! - REGISTER with digest: `register_auth.xml`, 10 registrations, all must succeed;
//! - calls with digest: `uac_auth.xml`, 10 calls (407, ACK, INVITE with credentials, 100, 180,
//!   200, ACK and BYE along the Record-Route set, 200) to the SIPp uas, which must see all 10
//!   calls (and all 10 ACKs) succeed too.
//!
//! A wrong password must get no 200: SIPp fails every call, nothing reaches the uas, and the
//! proxy logs each failed digest check. After each run the proxy must still be alive. SIPp's
//! message traces, statistics and screens stay in the scratch directory (target/tmp/sipp-*).

mod common;

use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::Proxy;

const CALLS: u32 = 10;
const SIPP_TIMEOUT: Duration = Duration::from_secs(60);
const DOMAIN: &str = "a.example";

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/sipp/"
    ))
    .join(name)
}

fn sipp() -> PathBuf {
    common::require_tool("sipp", "sip-tester")
}

/// A loopback port free for both UDP and TCP right now (bound on port 0, then released).
fn free_port() -> u16 {
    for _ in 0..100 {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
        let port = udp.local_addr().expect("local addr").port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port");
}

fn config(uas_port: u16) -> String {
    format!(
        r#"
[[listen]]
transport = "udp"
address = "127.0.0.1:0"

[[listen]]
transport = "tcp"
address = "127.0.0.1:0"

[auth]
algorithms = ["md5"]          # SIPp only does MD5
authenticate_calls = true

[[domain]]
name = "{DOMAIN}"
encryption = "off"

  [[domain.user]]
  name = "alice"
  password = "secret"

  [[domain.user]]
  name = "uas"
  contact = "sip:uas@127.0.0.1:{uas_port}"
"#
    )
}

/// `alice` with PASSWORD as a SIPp injection file (SEQUENTIAL; field 0 the user, field 1 the
/// digest credentials).
fn users_csv(dir: &Path, password: &str) -> PathBuf {
    let path = dir.join(format!("users-{password}.csv"));
    std::fs::write(
        &path,
        format!("SEQUENTIAL\nalice;[authentication username=alice password={password}];\n"),
    )
    .expect("write users.csv");
    path
}

/// A SIPp process run in DIR, its output going to DIR/NAME.out.
fn spawn_sipp(dir: &Path, name: &str, args: &[String]) -> Child {
    let out = std::fs::File::create(dir.join(format!("{name}.out"))).expect("sipp output file");
    let err = out.try_clone().expect("clone");
    Command::new(sipp())
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("start sipp")
}

/// Waits at most TIMEOUT for CHILD; kills it (and returns None) when it does not exit in time.
fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Arguments common to every SIPp run: loopback only, stats, traces, no keyboard, an overall
/// timeout that counts as a failure.
fn common_args(name: &str) -> Vec<String> {
    [
        "-i",
        "127.0.0.1",
        "-bind_local",
        "-nostdin",
        "-trace_msg",
        "-message_file",
        &format!("{name}.messages.log"),
        "-trace_err",
        "-error_file",
        &format!("{name}.errors.log"),
        "-trace_stat",
        "-stf",
        &format!("{name}.stat.csv"),
        "-trace_screen",
        "-screen_file",
        &format!("{name}.screen.log"),
        "-timeout",
        &format!("{}s", SIPP_TIMEOUT.as_secs()),
        "-timeout_error",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// The SIPp uas: answers CALLS calls on UDP PORT, then exits (after its 2 s timewait).
fn start_uas(dir: &Path, port: u16) -> Child {
    let mut args = vec![
        "-sf".to_string(),
        fixture("uas.xml").display().to_string(),
        "-p".into(),
        port.to_string(),
        "-t".into(),
        "u1".into(),
        "-m".into(),
        CALLS.to_string(),
    ];
    args.extend(common_args("uas"));
    let child = spawn_sipp(dir, "uas", &args);
    // Wait until it is bound (a uac INVITE sent earlier would only be retransmitted, but this
    // keeps the first call's timing clean).
    let deadline = Instant::now() + Duration::from_secs(10);
    while UdpSocket::bind(("127.0.0.1", port)).is_ok() {
        assert!(
            Instant::now() < deadline,
            "SIPp uas did not bind 127.0.0.1:{port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

/// Runs a SIPp client scenario against the proxy over TRANSPORT ("u1" or "t1"); returns its exit
/// status (None: it did not finish within the timeout and was killed).
fn run_client(
    dir: &Path,
    name: &str,
    scenario: &str,
    auth_uri: &str,
    users: &Path,
    proxy: &Proxy,
    transport: &str,
) -> Option<ExitStatus> {
    let target = match transport {
        "u1" => proxy.addr("udp"),
        "t1" => proxy.addr("tcp"),
        other => panic!("transport {other}"),
    };
    let mut args = vec![
        "-sf".to_string(),
        fixture(scenario).display().to_string(),
        "-s".into(),
        "uas".into(),
        "-key".into(),
        "domain".into(),
        DOMAIN.into(),
        "-inf".into(),
        users.display().to_string(),
        "-auth_uri".into(),
        auth_uri.into(),
        "-p".into(),
        free_port().to_string(),
        "-t".into(),
        transport.into(),
        "-m".into(),
        CALLS.to_string(),
        "-r".into(),
        "20".into(),
        "-l".into(),
        "5".into(),
        "-d".into(),
        "50".into(),
    ];
    args.extend(common_args(name));
    args.push(target.to_string());
    let mut child = spawn_sipp(dir, name, &args);
    wait_timeout(&mut child, SIPP_TIMEOUT + Duration::from_secs(15))
}

/// Successful and failed calls from the last line of a SIPp statistics file.
fn sipp_counts(path: &Path) -> (u64, u64) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines.next().expect("stat header").split(';').collect();
    let last: Vec<&str> = lines.next_back().expect("stat line").split(';').collect();
    let get = |name: &str| -> u64 {
        let i = header
            .iter()
            .position(|h| *h == name)
            .unwrap_or_else(|| panic!("no column {name}"));
        last[i].trim().parse().expect("counter")
    };
    (get("SuccessfulCall(C)"), get("FailedCall(C)"))
}

/// How many times the message of the scenario line that contains all of WORDS was seen, from a
/// SIPp screen dump (e.g. the uas's "----------> ACK  E-RTD1 10 ..." line).
fn screen_count(path: &Path, words: &[&str]) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    // The screen is dumped more than once; the last dump is the final one.
    text.lines()
        .rfind(|l| words.iter().all(|w| l.contains(w)))
        .and_then(|l| {
            l.split_whitespace()
                .find(|t| t.chars().all(|c| c.is_ascii_digit()))
                .and_then(|t| t.parse().ok())
        })
}

fn report(dir: &Path, proxy: &Proxy, names: &[&str]) -> String {
    let mut s = format!("scratch dir: {}\n", dir.display());
    for name in names {
        for suffix in ["errors.log", "out"] {
            let p = dir.join(format!("{name}.{suffix}"));
            if let Ok(t) = std::fs::read_to_string(&p) {
                let tail: String = t
                    .lines()
                    .rev()
                    .take(40)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n");
                s += &format!("--- {} (tail) ---\n{tail}\n", p.display());
            }
        }
    }
    let log = proxy.log();
    let tail: Vec<&str> = log.lines().rev().take(40).collect();
    s += "--- proxy log (tail) ---\n";
    for l in tail.into_iter().rev() {
        s += l;
        s += "\n";
    }
    s
}

fn register_and_call(transport: &str) {
    sipp();
    let dir = common::scratch(&format!("sipp-{transport}"));
    let uas_port = free_port();
    let mut proxy = Proxy::start(&dir, &config(uas_port));
    let users = fixture("users.csv");

    // REGISTER with digest.
    let reg = format!("register-{transport}");
    let status = run_client(
        &dir,
        &reg,
        "register_auth.xml",
        DOMAIN,
        &users,
        &proxy,
        transport,
    );
    assert!(
        matches!(status, Some(s) if s.success()),
        "SIPp register_auth over {transport}: {status:?}\n{}",
        report(&dir, &proxy, &[&reg])
    );
    assert_eq!(
        sipp_counts(&dir.join(format!("{reg}.stat.csv"))),
        (CALLS as u64, 0)
    );
    assert!(proxy.alive(), "proxy died after the registrations");

    // Calls with digest, to the SIPp uas.
    let mut uas = start_uas(&dir, uas_port);
    let uac = format!("uac-auth-{transport}");
    let status = run_client(
        &dir,
        &uac,
        "uac_auth.xml",
        &format!("uas@{DOMAIN}"),
        &users,
        &proxy,
        transport,
    );
    let uas_status = wait_timeout(&mut uas, Duration::from_secs(20));
    assert!(
        matches!(status, Some(s) if s.success()),
        "SIPp uac_auth over {transport}: {status:?}\n{}",
        report(&dir, &proxy, &[&uac, "uas"])
    );
    assert_eq!(
        sipp_counts(&dir.join(format!("{uac}.stat.csv"))),
        (CALLS as u64, 0)
    );
    assert!(
        matches!(uas_status, Some(s) if s.success()),
        "SIPp uas: {uas_status:?}\n{}",
        report(&dir, &proxy, &[&uac, "uas"])
    );
    assert_eq!(sipp_counts(&dir.join("uas.stat.csv")), (CALLS as u64, 0));
    // The uas takes a late ACK (a BYE may overtake it), so check that every ACK arrived.
    assert_eq!(
        screen_count(&dir.join("uas.screen.log"), &["---------->", " ACK "]),
        Some(CALLS as u64),
        "the uas did not receive every ACK\n{}",
        report(&dir, &proxy, &[&uac, "uas"])
    );
    assert!(proxy.alive(), "proxy died after the calls");
}

#[test]
fn sipp_register_and_call_over_udp() {
    register_and_call("u1");
}

#[test]
fn sipp_register_and_call_over_tcp() {
    register_and_call("t1");
}

#[test]
fn sipp_wrong_password_gets_no_200() {
    sipp();
    let dir = common::scratch("sipp-wrong-password");
    let uas_port = free_port();
    let mut proxy = Proxy::start(&dir, &config(uas_port));
    let users = users_csv(&dir, "not-the-password");
    // Fewer attempts than the per-account lockout (5 by default), so each one is a real check.
    let calls = 3;
    let mut args = vec![
        "-sf".to_string(),
        fixture("uac_auth.xml").display().to_string(),
        "-s".into(),
        "uas".into(),
        "-key".into(),
        "domain".into(),
        DOMAIN.into(),
        "-inf".into(),
        users.display().to_string(),
        "-auth_uri".into(),
        format!("uas@{DOMAIN}"),
        "-p".into(),
        free_port().to_string(),
        "-t".into(),
        "u1".into(),
        "-m".into(),
        calls.to_string(),
        "-r".into(),
        "10".into(),
    ];
    args.extend(common_args("uac-wrong"));
    args.push(proxy.addr("udp").to_string());
    let mut child = spawn_sipp(&dir, "uac-wrong", &args);
    let status = wait_timeout(&mut child, SIPP_TIMEOUT + Duration::from_secs(15));
    let status = status.unwrap_or_else(|| {
        panic!(
            "SIPp did not finish (a second 407 must fail the call at once)\n{}",
            report(&dir, &proxy, &["uac-wrong"])
        )
    });
    assert!(!status.success(), "SIPp succeeded with a wrong password");
    assert_eq!(
        sipp_counts(&dir.join("uac-wrong.stat.csv")),
        (0, calls as u64),
        "{}",
        report(&dir, &proxy, &["uac-wrong"])
    );
    let messages =
        std::fs::read_to_string(dir.join("uac-wrong.messages.log")).expect("message trace");
    assert!(
        !messages.contains("SIP/2.0 200"),
        "a 200 came back to a wrong password:\n{messages}"
    );
    // Each INVITE with credentials was challenged again (retransmitted 407s may add more).
    assert!(
        messages.matches("SIP/2.0 407").count() >= 2 * calls,
        "{messages}"
    );
    // And the proxy says why.
    std::thread::sleep(Duration::from_millis(200));
    let log = proxy.log();
    let failures = log
        .lines()
        .filter(|l| l.contains("digest authentication failed"))
        .count();
    assert!(
        failures >= calls,
        "expected {calls} digest failures in the proxy log, found {failures}:\n{log}"
    );
    assert!(proxy.alive(), "proxy died");
}
