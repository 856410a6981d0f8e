//! SIPVicious (Debian package `sipvicious`: `svwar`, `svcrack`) against the real `voxgate proxy`
//! over UDP on loopback, plus raw requests that compare what an enumerator can observe.
//!
//! How svwar decides (sipvicious 0.3.3, svwar.py): it first sends the request for a random
//! 32-bit extension and keeps the first line of the answer as the "bad user" line. Without
//! `--force`, a 401/403/407 to that random extension makes it stop at once ("SIP server replied
//! with an authentication request for an unknown extension") and report nothing. With `--force`
//! it scans; an extension is reported (`reqauth`, `noauth` or `weird` in its result table) only
//! when the first line of its answer differs from the bad-user line, and an answer identical to
//! the bad-user line that is not one of its "not found" codes (404, 481, 503, ...) makes it stop
//! ("We got an unknown response") with nothing reported. So "svwar cannot tell existing from
//! missing" means here: its result table is absent or empty, or it lists every scanned
//! extension with the same verdict. Extension 100 (the one that exists) is scanned first so
//! that its answer is the one compared with the random extension's; a control run against a
//! responder that answers 404 to missing users shows that svwar and the parsing here do report
//! a difference when there is one. svwar compares first lines only, so raw REGISTER, INVITE
//! and OPTIONS requests for an existing and a missing user also compare whole answers, byte
//! for byte once nonces, tags, branches, Call-IDs and the user name itself are masked.
//!
//! svcrack sends one REGISTER per password, each on a fresh nonce, but counts `nc` across
//! nonces (00000001, 00000002, ...); the proxy's nonces are single-use and must be answered with
//! nc=00000001, so in one svcrack run only the first guess is a real password check (the others
//! still count as failures). So besides the plain run (50 wrong passwords, the right one last),
//! a second test runs svcrack once per password, each guess with nc=00000001 as a careful
//! cracker would send it; control runs show that svcrack does find a right password on this
//! proxy when nothing stops it. After the attack the right password, sent by this test on a
//! fresh nonce, must get 403 while the lockout lasts, from the cracking source and from another
//! one, while other accounts still work; a source lockout is checked the same way. svcrack and
//! svwar ignore `-b` (0.3.3 never passes it on), so they always send from 127.0.0.1; this
//! test's own requests use other loopback addresses (127.0.0.x) to tell per-source from
//! per-account lockouts apart.

mod common;

use std::collections::BTreeSet;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use voxgate_sip::digest::{ha1, response, Algorithm};

const PASSWORD_100: &str = "s3cret-Pa55";
const PASSWORD_101: &str = "0ther-Pa55word";
const PASSWORD_102: &str = "third-Pa55";
const ANSWER_WAIT: Duration = Duration::from_secs(2);
const TOOL_TIMEOUT: Duration = Duration::from_secs(60);

fn config(algorithms: &str, max_failures_per_source: u32) -> String {
    format!(
        r#"
[[listen]]
transport = "udp"
address = "127.0.0.1:0"

[auth]
algorithms = {algorithms}
max_failures_per_source = {max_failures_per_source}
max_failures_per_account = 5
lockout_secs = 900

[[domain]]
name = "a.example"
encryption = "off"

  [[domain.user]]
  name = "100"
  password = "{PASSWORD_100}"

  [[domain.user]]
  name = "101"
  password = "{PASSWORD_101}"

  [[domain.user]]
  name = "102"
  password = "{PASSWORD_102}"
"#
    )
}

// ---------------------------------------------------------------------------------------------
// Running the tools

struct ToolRun {
    status: Option<ExitStatus>,
    stdout: String,
    stderr: String,
    /// Killed after `done_marker` appeared in its stderr (or at the timeout).
    killed: bool,
    elapsed: Duration,
    command: String,
}

impl ToolRun {
    fn describe(&self) -> String {
        format!(
            "`{}` (exit {:?}, killed {}, {:.1} s)\n--- stdout\n{}--- stderr\n{}",
            self.command,
            self.status.and_then(|s| s.code()),
            self.killed,
            self.elapsed.as_secs_f64(),
            self.stdout,
            self.stderr
        )
    }
}

/// A running tool: stdout and stderr go to files in the scratch dir.
struct Spawned {
    child: std::process::Child,
    out: PathBuf,
    err: PathBuf,
    start: Instant,
    command: String,
}

fn spawn_tool(tool: &Path, args: &[String], dir: &Path, name: &str) -> Spawned {
    let out = dir.join(format!("{name}.stdout"));
    let err = dir.join(format!("{name}.stderr"));
    let child = Command::new(tool)
        .args(args)
        .current_dir(dir)
        .env("HOME", dir) // sipvicious may keep sessions under ~/.sipvicious
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).expect("stdout file"))
        .stderr(std::fs::File::create(&err).expect("stderr file"))
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", tool.display()));
    Spawned {
        child,
        out,
        err,
        start: Instant::now(),
        command: format!("{} {}", tool.display(), args.join(" ")),
    }
}

impl Spawned {
    /// Waits for the exit, or for `done_marker` in stderr (then kills it after a short grace),
    /// or kills it at `TOOL_TIMEOUT`.
    fn finish(self, done_marker: Option<&str>) -> ToolRun {
        finish_all(vec![self], done_marker).remove(0)
    }
}

/// [`Spawned::finish`] for tools running side by side (each one's time is its own).
fn finish_all(mut spawned: Vec<Spawned>, done_marker: Option<&str>) -> Vec<ToolRun> {
    let mut ended: Vec<Option<(Option<ExitStatus>, bool, Duration)>> = vec![None; spawned.len()];
    let mut marker_seen: Vec<Option<Instant>> = vec![None; spawned.len()];
    while ended.iter().any(Option::is_none) {
        for (i, s) in spawned.iter_mut().enumerate() {
            if ended[i].is_some() {
                continue;
            }
            if let Some(st) = s.child.try_wait().expect("try_wait") {
                ended[i] = Some((Some(st), false, s.start.elapsed()));
                continue;
            }
            if let (None, Some(m)) = (marker_seen[i], done_marker) {
                if std::fs::read_to_string(&s.err)
                    .unwrap_or_default()
                    .contains(m)
                {
                    marker_seen[i] = Some(Instant::now());
                }
            }
            let grace_over =
                marker_seen[i].is_some_and(|t| t.elapsed() > Duration::from_millis(100));
            if grace_over || s.start.elapsed() > TOOL_TIMEOUT {
                let _ = s.child.kill();
                let _ = s.child.wait();
                ended[i] = Some((None, true, s.start.elapsed()));
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    spawned
        .into_iter()
        .zip(ended)
        .map(|(s, e)| {
            let (status, killed, elapsed) = e.expect("ended");
            ToolRun {
                status,
                stdout: std::fs::read_to_string(&s.out).unwrap_or_default(),
                stderr: std::fs::read_to_string(&s.err).unwrap_or_default(),
                killed,
                elapsed,
                command: s.command,
            }
        })
        .collect()
}

/// `n` UDP ports free on `ip` right now (for the tools' `-P`; they move up if one got taken).
fn free_ports(ip: &str, n: usize) -> Vec<u16> {
    let socks: Vec<UdpSocket> = (0..n)
        .map(|_| UdpSocket::bind((ip, 0)).expect("bind"))
        .collect();
    socks
        .iter()
        .map(|s| s.local_addr().expect("addr").port())
        .collect()
}

/// The rows (first column, second column) of a sipvicious result table:
/// `| 100       | reqauth        |`.
fn table_rows(stdout: &str) -> Vec<(String, String)> {
    stdout
        .lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l
                .trim()
                .strip_prefix('|')?
                .strip_suffix('|')?
                .split('|')
                .map(str::trim)
                .collect();
            match cells[..] {
                [a, b] if a != "Extension" => Some((a.to_string(), b.to_string())),
                _ => None,
            }
        })
        .collect()
}

/// svwar's verdict on a scan of `scanned`: `Ok(description)` when it cannot tell extensions
/// apart (nothing reported, or every scanned extension reported alike), `Err` otherwise.
fn svwar_blind(run: &ToolRun, scanned: &BTreeSet<String>) -> Result<String, String> {
    let rows = table_rows(&run.stdout);
    if rows.is_empty() {
        let why = [
            "authentication request for an unknown extension",
            "We got an unknown response",
            "found nothing",
        ]
        .into_iter()
        .find(|w| run.stderr.contains(w))
        .unwrap_or("no table");
        return Ok(format!("nothing reported ({why})"));
    }
    let reported: BTreeSet<String> = rows.iter().map(|r| r.0.clone()).collect();
    let verdicts: BTreeSet<&str> = rows.iter().map(|r| r.1.as_str()).collect();
    if &reported == scanned && verdicts.len() == 1 {
        return Ok(format!(
            "all {} reported alike ({verdicts:?})",
            reported.len()
        ));
    }
    Err(format!("svwar told extensions apart: {rows:?}"))
}

fn range_set(lo: u32, hi: u32) -> BTreeSet<String> {
    (lo..=hi).map(|n| n.to_string()).collect()
}

// ---------------------------------------------------------------------------------------------
// Raw SIP over UDP

/// The value of the first header `name` (case-insensitive; no compact forms needed here).
fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.split("\r\n")
        .skip(1)
        .take_while(|l| !l.is_empty())
        .find_map(|l| {
            let (h, v) = l.split_once(':')?;
            h.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
}

fn headers<'a>(msg: &'a str, name: &str) -> Vec<&'a str> {
    msg.split("\r\n")
        .skip(1)
        .take_while(|l| !l.is_empty())
        .filter_map(|l| {
            let (h, v) = l.split_once(':')?;
            h.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
        .collect()
}

fn status(msg: &str) -> Option<u16> {
    msg.strip_prefix("SIP/2.0 ")?.get(..3)?.parse().ok()
}

/// A quoted or token parameter of a challenge: `nonce="..."`, `algorithm=MD5`.
fn param(challenge: &str, name: &str) -> Option<String> {
    let i = challenge.find(&format!("{name}="))?;
    let v = &challenge[i + name.len() + 1..];
    Some(match v.strip_prefix('"') {
        Some(q) => q[..q.find('"')?].to_string(),
        None => v
            .split(|c: char| c == ',' || c == ';' || c == '>' || c.is_whitespace())
            .next()?
            .to_string(),
    })
}

/// A UDP SIP client bound to one loopback source address.
struct Client {
    sock: UdpSocket,
    me: SocketAddr,
    proxy: SocketAddr,
    seq: u32,
}

impl Client {
    fn new(source_ip: &str, proxy: SocketAddr) -> Client {
        let sock = UdpSocket::bind((source_ip, 0))
            .unwrap_or_else(|e| panic!("bind {source_ip}: {e} (loopback 127.0.0.0/8 expected)"));
        let me = sock.local_addr().expect("addr");
        Client {
            sock,
            me,
            proxy,
            seq: 0,
        }
    }

    fn next(&mut self) -> u32 {
        self.seq += 1;
        self.seq
    }

    /// Sends `req` and returns the first final answer carrying `call_id`.
    fn exchange(&self, req: &str, call_id: &str) -> String {
        self.try_exchange(req, call_id)
            .unwrap_or_else(|| panic!("no final answer within {ANSWER_WAIT:?} to:\n{req}"))
    }

    fn try_exchange(&self, req: &str, call_id: &str) -> Option<String> {
        self.sock
            .send_to(req.as_bytes(), self.proxy)
            .expect("send request");
        let start = Instant::now();
        let mut buf = vec![0u8; 65_536];
        loop {
            let left = ANSWER_WAIT.checked_sub(start.elapsed())?;
            self.sock
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .expect("set_read_timeout");
            let Ok((n, _)) = self.sock.recv_from(&mut buf) else {
                continue;
            };
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            if status(&msg).is_some_and(|c| c >= 200) && header(&msg, "Call-ID") == Some(call_id) {
                return Some(msg);
            }
        }
    }

    /// REGISTER for `user`@a.example, with an `Authorization` when given. Returns the answer
    /// and the request's unique tokens (Call-ID, branch, From tag).
    fn register(
        &mut self,
        user: &str,
        call_id: &str,
        cseq: u32,
        auth: Option<&str>,
    ) -> (String, [String; 3]) {
        let n = self.next();
        let me = self.me;
        let branch = format!("z9hG4bK-reg{n}-{}", std::process::id());
        let tag = format!("ft{n}x{}", std::process::id());
        let auth = auth.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
        let req = format!(
            "REGISTER sip:a.example SIP/2.0\r\n\
             Via: SIP/2.0/UDP {me};branch={branch};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:{user}@a.example>;tag={tag}\r\n\
             To: <sip:{user}@a.example>\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: {cseq} REGISTER\r\n\
             Contact: <sip:{user}@{me}>\r\n\
             Expires: 60\r\n\
             {auth}Content-Length: 0\r\n\r\n"
        );
        (
            self.exchange(&req, call_id),
            [call_id.to_string(), branch, tag],
        )
    }

    /// Does the proxy answer an unauthenticated REGISTER at all (within `ANSWER_WAIT`)?
    fn probe(&mut self) -> Option<u16> {
        let n = self.next();
        let me = self.me;
        let call_id = format!("probe-{n}-{}@127.0.0.1", std::process::id());
        let req = format!(
            "REGISTER sip:a.example SIP/2.0\r\n\
             Via: SIP/2.0/UDP {me};branch=z9hG4bK-probe{n}-{};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:102@a.example>;tag=p{n}\r\n\
             To: <sip:102@a.example>\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: 1 REGISTER\r\n\
             Content-Length: 0\r\n\r\n",
            std::process::id()
        );
        self.try_exchange(&req, &call_id).and_then(|a| status(&a))
    }

    /// An out-of-dialog INVITE or OPTIONS to `user`@a.example from a stranger; a final answer
    /// to an INVITE is acknowledged (same branch) so that the proxy stops retransmitting it.
    fn request(&mut self, method: &str, user: &str) -> (String, [String; 3]) {
        let n = self.next();
        let me = self.me;
        let pid = std::process::id();
        let branch = format!("z9hG4bK-{method}{n}-{pid}");
        let tag = format!("ft{n}x{pid}");
        let call_id = format!("{method}-{user}-{n}-{pid}@127.0.0.1");
        let msg = |m: &str| {
            format!(
                "{m} sip:{user}@a.example SIP/2.0\r\n\
                 Via: SIP/2.0/UDP {me};branch={branch};rport\r\n\
                 Max-Forwards: 70\r\n\
                 From: <sip:stranger@b.example>;tag={tag}\r\n\
                 To: <sip:{user}@a.example>\r\n\
                 Call-ID: {call_id}\r\n\
                 CSeq: 1 {m}\r\n\
                 Contact: <sip:stranger@{me}>\r\n\
                 Content-Length: 0\r\n\r\n"
            )
        };
        let answer = self.exchange(&msg(method), &call_id);
        if method == "INVITE" {
            let to = header(&answer, "To").unwrap_or_default().to_string();
            let ack = msg("ACK").replace(
                &format!("To: <sip:{user}@a.example>\r\n"),
                &format!("To: {to}\r\n"),
            );
            self.sock.send_to(ack.as_bytes(), self.proxy).expect("ACK");
        }
        (answer, [call_id, branch, tag])
    }

    /// REGISTER answered with a fresh MD5 challenge, then with credentials for `password`
    /// (nc=00000001 on the fresh nonce): the final answer's status and text.
    fn register_with_password(&mut self, user: &str, password: &str) -> (u16, String) {
        let call_id = format!(
            "auth-{user}-{}-{}@127.0.0.1",
            self.next(),
            std::process::id()
        );
        let (challenge, _) = self.register(user, &call_id, 1, None);
        let code = status(&challenge).unwrap_or(0);
        if code != 401 {
            // Locked-out sources are refused before any challenge.
            return (code, challenge);
        }
        let www = headers(&challenge, "WWW-Authenticate")
            .into_iter()
            .find(|h| param(h, "algorithm").is_some_and(|a| a.eq_ignore_ascii_case("MD5")))
            .unwrap_or_else(|| panic!("no MD5 challenge in:\n{challenge}"));
        let realm = param(www, "realm").expect("realm");
        let nonce = param(www, "nonce").expect("nonce");
        let uri = "sip:a.example";
        let cnonce = format!("c{}", self.next());
        let h1 = ha1(Algorithm::Md5, user, &realm, password);
        let resp = response(
            Algorithm::Md5,
            &h1,
            &nonce,
            "00000001",
            &cnonce,
            "REGISTER",
            uri,
        );
        let auth = format!(
            "Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", \
             response=\"{resp}\", algorithm=MD5, cnonce=\"{cnonce}\", qop=auth, nc=00000001"
        );
        let (answer, _) = self.register(user, &call_id, 2, Some(&auth));
        (status(&answer).unwrap_or(0), answer)
    }
}

/// An answer with what is expected to vary masked: nonce values, tag values, and the request's
/// own Call-ID, branch, From tag and user name.
fn masked(answer: &str, tokens: &[String; 3], user: &str) -> String {
    let mut m = answer.to_string();
    for key in ["nonce=\"", "tag="] {
        let mut out = String::new();
        let mut rest = m.as_str();
        while let Some(i) = rest.find(key) {
            out.push_str(&rest[..i + key.len()]);
            rest = &rest[i + key.len()..];
            let end = rest.find(['"', ';', ',', '>', '\r']).unwrap_or(rest.len());
            out.push_str("<masked>");
            rest = &rest[end..];
        }
        out.push_str(rest);
        m = out;
    }
    for (t, with) in tokens.iter().zip(["<call-id>", "<branch>", "<from-tag>"]) {
        m = m.replace(t.as_str(), with);
    }
    m.replace(&format!("sip:{user}@"), "sip:<user>@")
}

// ---------------------------------------------------------------------------------------------
// A control responder for svwar: 401 for extension 100, 404 for everyone else.

struct Control {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Control {
    fn start() -> Control {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind control");
        let addr = sock.local_addr().expect("addr");
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65_536];
            while !stop2.load(Ordering::Relaxed) {
                let Ok((n, src)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let req = String::from_utf8_lossy(&buf[..n]).into_owned();
                if req.starts_with("ACK ") {
                    continue;
                }
                let to = header(&req, "To").unwrap_or_default();
                let exists = to.contains("sip:100@");
                let mut resp = String::from(if exists {
                    "SIP/2.0 401 Unauthorized\r\n\
                     WWW-Authenticate: Digest realm=\"a.example\", nonce=\"n\", qop=\"auth\"\r\n"
                } else {
                    "SIP/2.0 404 Not Found\r\n"
                });
                for h in ["Via", "From", "To", "Call-ID", "CSeq"] {
                    for v in headers(&req, h) {
                        resp.push_str(&format!("{h}: {v}\r\n"));
                    }
                }
                resp.push_str("Content-Length: 0\r\n\r\n");
                let _ = sock.send_to(resp.as_bytes(), src);
            }
        });
        Control {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------------------------

fn svwar_args(
    target: SocketAddr,
    port: u16,
    range: &str,
    method: &str,
    extra: &[&str],
) -> Vec<String> {
    let mut a: Vec<String> = vec![
        "-v".into(),
        "-x".into(),
        "127.0.0.1".into(),
        "-P".into(),
        port.to_string(),
        "-e".into(),
        range.into(),
        "-m".into(),
        method.into(),
    ];
    a.extend(extra.iter().map(|s| s.to_string()));
    a.push(format!("udp://{target}"));
    a
}

#[test]
fn svwar_cannot_tell_existing_from_missing_extensions() {
    let svwar = common::require_tool("svwar", "sipvicious");
    let dir = common::scratch("sipvicious_svwar");
    // Default algorithms (SHA-256 and MD5): two challenges per answer.
    let mut proxy = common::Proxy::start(&dir, &config(r#"["sha-256", "md5"]"#, 10));
    let paddr = proxy.addr("udp");
    let scanned = range_set(90, 110);

    // Control: the same scan against a responder that does give extension 100 away.
    let control = Control::start();
    let port = free_ports("0.0.0.0", 1)[0];
    let run = spawn_tool(
        &svwar,
        &svwar_args(
            control.addr,
            port,
            "90-110",
            "REGISTER",
            &["--domain", "a.example"],
        ),
        &dir,
        "svwar-control",
    )
    .finish(None);
    drop(control);
    let rows = table_rows(&run.stdout);
    assert_eq!(
        rows,
        vec![("100".to_string(), "reqauth".to_string())],
        "control: svwar should single out extension 100 on a responder that answers 404 to \
         missing users; {}",
        run.describe()
    );

    // Against the proxy: each method, as svwar runs by default and with --force (100 first),
    // addressed to the domain and to the proxy's bare IP address. All at once: each run
    // spends most of its time in svwar's final 3 s wait.
    let mut plan: Vec<(String, String, Vec<&str>)> = Vec::new();
    for method in ["REGISTER", "INVITE", "OPTIONS"] {
        plan.push((
            method.into(),
            "90-110".into(),
            vec!["--domain", "a.example"],
        ));
        plan.push((
            method.into(),
            "100,90-99,101-110".into(),
            vec!["--force", "--domain", "a.example"],
        ));
        plan.push((method.into(), "100,90-99,101-110".into(), vec!["--force"]));
    }
    let ports = free_ports("0.0.0.0", plan.len());
    let mut labels = Vec::new();
    let mut running = Vec::new();
    for (i, ((method, range, extra), port)) in plan.iter().zip(ports).enumerate() {
        labels.push(format!("{method} -e{range} {}", extra.join(" ")));
        let args = svwar_args(paddr, port, range, method, extra);
        running.push(spawn_tool(&svwar, &args, &dir, &format!("svwar-{i}")));
    }
    let runs = finish_all(running, None);
    let mut failures = Vec::new();
    println!("{:<54} {:>5}  svwar's result", "svwar run", "secs");
    for (label, run) in labels.iter().zip(&runs) {
        let secs = run.elapsed.as_secs_f64();
        match svwar_blind(run, &scanned) {
            Ok(what) => println!("{label:<54} {secs:>5.1}  {what}"),
            Err(e) => {
                println!("{label:<54} {secs:>5.1}  TOLD APART");
                failures.push(format!("{label}: {e}\n{}", run.describe()));
            }
        }
        assert!(
            !run.killed,
            "svwar had to be killed ({label}); {}",
            run.describe()
        );
        if label.contains("--force") {
            // The scan went on past the random extension, and the answer it stopped at (the
            // first line equal to the random extension's) was the one for extension 100.
            let stop = run
                .stderr
                .lines()
                .find(|l| l.contains("Response: "))
                .unwrap_or_default();
            assert!(
                run.stderr.contains("Ok SIP device found") && stop.contains("\"100\"<sip:100@"),
                "svwar did not compare extension 100's answer ({label}); {}",
                run.describe()
            );
        } else {
            assert!(
                run.stderr.contains("Ok SIP device found")
                    || run
                        .stderr
                        .contains("authentication request for an unknown extension"),
                "svwar got no answer from the proxy ({label}); {}",
                run.describe()
            );
        }
    }
    assert!(
        failures.is_empty(),
        "svwar can enumerate extensions:\n{}",
        failures.join("\n")
    );
    assert!(proxy.alive(), "voxgate proxy died; log:\n{}", proxy.log());
}

#[test]
fn answers_do_not_depend_on_the_user_existing() {
    let dir = common::scratch("sipvicious_raw");
    let mut proxy = common::Proxy::start(&dir, &config(r#"["sha-256", "md5"]"#, 10));
    let paddr = proxy.addr("udp");
    let mut c = Client::new("127.0.0.7", paddr);
    let pid = std::process::id();
    let mut compared = Vec::new();

    // Unauthenticated REGISTER, INVITE and OPTIONS: existing user 100, missing user 999.
    for method in ["REGISTER", "INVITE", "OPTIONS"] {
        let mut masked_answers = Vec::new();
        for user in ["100", "999"] {
            let (answer, tokens) = if method == "REGISTER" {
                let call_id = format!("cmp-{user}-{pid}@127.0.0.1");
                c.register(user, &call_id, 1, None)
            } else {
                c.request(method, user)
            };
            masked_answers.push((answer.clone(), masked(&answer, &tokens, user)));
        }
        let (a, b) = (&masked_answers[0], &masked_answers[1]);
        assert_eq!(
            a.1, b.1,
            "{method}: the answers for an existing (100) and a missing (999) user differ \
             beyond nonces, tags and the request's own tokens.\n--- 100:\n{}\n--- 999:\n{}",
            a.0, b.0
        );
        let code = status(&a.0).unwrap_or(0);
        let expected = if method == "REGISTER" { 401 } else { 407 };
        assert_eq!(code, expected, "{method} is challenged; answer:\n{}", a.0);
        compared.push(format!("{method}: both {code}, identical once masked"));
    }

    // A wrong password for an existing user and any password for a missing one.
    let mut c2 = Client::new("127.0.0.8", paddr);
    let (code_known, known) = c2.register_with_password("100", "not-the-password");
    let (code_missing, missing) = c2.register_with_password("999", "not-the-password");
    let strip = |m: &str, user: &str| {
        let tokens = [
            header(m, "Call-ID").unwrap_or_default().to_string(),
            param(header(m, "Via").unwrap_or_default(), "branch").unwrap_or_default(),
            param(header(m, "From").unwrap_or_default(), "tag").unwrap_or_default(),
        ];
        masked(m, &tokens, user)
    };
    assert_eq!(
        (code_known, strip(&known, "100")),
        (code_missing, strip(&missing, "999")),
        "a wrong password for 100 and a guess for missing 999 are answered differently:\n\
         --- 100:\n{known}\n--- 999:\n{missing}"
    );
    compared.push(format!(
        "REGISTER with a wrong password: both {code_known}, identical once masked"
    ));
    for line in &compared {
        println!("{line}");
    }
    println!("sample (100, REGISTER with a wrong password):\n{known}");
    assert!(proxy.alive(), "voxgate proxy died; log:\n{}", proxy.log());
}

fn svcrack_args(port: u16, user: &str, words: &Path, target: SocketAddr) -> Vec<String> {
    vec![
        "-v".into(),
        "-x".into(),
        "127.0.0.1".into(),
        "-P".into(),
        port.to_string(),
        "-u".into(),
        user.into(),
        "-d".into(),
        words.display().to_string(),
        "--domain".into(),
        "a.example".into(),
        format!("udp://{target}"),
    ]
}

fn cracked(run: &ToolRun, user: &str) -> bool {
    run.stderr.contains(&format!("The password for {user} is"))
        || table_rows(&run.stdout).iter().any(|(u, _)| u == user)
}

/// svcrack logs this (with -v) once its dictionary is spent and it only waits for answers:
/// by then the answer to its last guess has been read (a 200 would have ended the run).
const SPENT: Option<&str> = Some("no more passwords");

/// One svcrack run on `user` with `words`, from 127.0.0.1 (svcrack ignores `-b`).
fn svcrack(
    tool: &Path,
    dir: &Path,
    name: &str,
    user: &str,
    words: &[&str],
    proxy: SocketAddr,
) -> ToolRun {
    let file = dir.join(format!("{name}.words"));
    std::fs::write(&file, words.join("\n") + "\n").expect("word list");
    let port = free_ports("0.0.0.0", 1)[0];
    spawn_tool(tool, &svcrack_args(port, user, &file, proxy), dir, name).finish(SPENT)
}

/// 50 wrong passwords, then `right`.
fn word_list(right: &str) -> Vec<String> {
    let mut list: Vec<String> = (1..=50).map(|i| format!("guess{i:02}-{i}x")).collect();
    list.push(right.to_string());
    list
}

#[test]
fn svcrack_is_stopped_by_the_lockout() {
    let svcrack_bin = common::require_tool("svcrack", "sipvicious");
    let dir = common::scratch("sipvicious_svcrack");
    // svcrack only knows MD5 and only reads the first challenge of an answer.
    let mut proxy = common::Proxy::start(&dir, &config(r#"["md5"]"#, 10));
    let paddr = proxy.addr("udp");

    // Control: svcrack does find a right password on this proxy when it is the first guess.
    let run = svcrack(
        &svcrack_bin,
        &dir,
        "svcrack-control",
        "102",
        &[PASSWORD_102, "x"],
        paddr,
    );
    assert!(
        cracked(&run, "102"),
        "control: svcrack should find 102's password when it is its first guess; {}",
        run.describe()
    );
    // And 100's right password works before the attack.
    let mut other = Client::new("127.0.0.3", paddr);
    let (code, answer) = other.register_with_password("100", PASSWORD_100);
    assert_eq!(
        code, 200,
        "100's right password before the attack:\n{answer}"
    );

    // The attack: 50 wrong passwords, then the right one.
    let list = word_list(PASSWORD_100);
    let words: Vec<&str> = list.iter().map(String::as_str).collect();
    let run = svcrack(&svcrack_bin, &dir, "svcrack-100", "100", &words, paddr);
    println!(
        "svcrack -u 100, 51 words (right one last): {:.1} s, cracked: {}",
        run.elapsed.as_secs_f64(),
        cracked(&run, "100")
    );
    assert!(
        !cracked(&run, "100"),
        "svcrack found 100's password despite the lockout; {}",
        run.describe()
    );
    assert!(
        run.stderr.contains("no more passwords"),
        "svcrack did not get through its word list; {}",
        run.describe()
    );

    // While the account is locked its right password is refused with 403, from svcrack's
    // source and from another one; another account still works from svcrack's source (5
    // failures there, below the per-source limit of 10).
    let mut same = Client::new("127.0.0.1", paddr);
    let (code, answer) = same.register_with_password("100", PASSWORD_100);
    assert_eq!(
        code, 403,
        "100's right password from svcrack's source during the lockout:\n{answer}"
    );
    let (code, answer) = other.register_with_password("100", PASSWORD_100);
    assert_eq!(
        code, 403,
        "100's right password from another source during the lockout:\n{answer}"
    );
    let (code, answer) = same.register_with_password("102", PASSWORD_102);
    assert_eq!(
        code, 200,
        "another account from svcrack's source (not locked out itself):\n{answer}"
    );

    // A source that fails 10 times (one guess on each of 10 missing accounts, so that no
    // account lockout is involved) is locked out: even a right password from it gets 403,
    // while the same account still works from elsewhere.
    let mut guesser = Client::new("127.0.0.6", paddr);
    for n in 990..1000 {
        let (code, answer) = guesser.register_with_password(&n.to_string(), "wrong");
        assert!(
            code == 401 || (code == 403 && n == 999),
            "guess {n} from 127.0.0.6 answered {code}:\n{answer}"
        );
    }
    let (code, answer) = guesser.register_with_password("102", PASSWORD_102);
    assert_eq!(
        code, 403,
        "102's right password from a locked-out source:\n{answer}"
    );
    let (code, answer) = other.register_with_password("102", PASSWORD_102);
    assert_eq!(
        code, 200,
        "102's right password from another source:\n{answer}"
    );

    let log = proxy.log();
    assert!(
        log.contains("locked out"),
        "the proxy log does not mention the lockout:\n{log}"
    );
    assert!(proxy.alive(), "voxgate proxy died; log:\n{log}");
}

#[test]
fn svcrack_one_guess_per_run_is_stopped_by_the_account_lockout() {
    let svcrack_bin = common::require_tool("svcrack", "sipvicious");
    let dir = common::scratch("sipvicious_svcrack_each");
    // Every run comes from 127.0.0.1; a high per-source limit leaves the account lockout alone
    // in the way.
    let mut proxy = common::Proxy::start(&dir, &config(r#"["md5"]"#, 1000));
    let paddr = proxy.addr("udp");

    let run = svcrack(&svcrack_bin, &dir, "control", "102", &[PASSWORD_102], paddr);
    assert!(
        cracked(&run, "102"),
        "control: a one-password svcrack run with the right password should succeed; {}",
        run.describe()
    );

    let t0 = Instant::now();
    let list = word_list(PASSWORD_100);
    for (i, pw) in list.iter().enumerate() {
        let run = svcrack(
            &svcrack_bin,
            &dir,
            &format!("guess-{i}"),
            "100",
            &[pw],
            paddr,
        );
        assert!(
            !cracked(&run, "100"),
            "svcrack found 100's password at guess {} of {} despite the lockout; {}",
            i + 1,
            list.len(),
            run.describe()
        );
        if !run.stderr.contains("no more passwords") {
            let probe = Client::new("127.0.0.9", paddr).probe();
            panic!(
                "svcrack's guess {} did not complete; a REGISTER from 127.0.0.9 right after \
                 got {probe:?}; {}\nproxy log:\n{}",
                i + 1,
                run.describe(),
                proxy.log()
            );
        }
    }
    println!(
        "svcrack -u 100, one run per password (51, right one last): {:.1} s, not cracked",
        t0.elapsed().as_secs_f64()
    );
    let (code, answer) =
        Client::new("127.0.0.1", paddr).register_with_password("100", PASSWORD_100);
    assert_eq!(
        code, 403,
        "100's right password during the lockout:\n{answer}"
    );
    let (code, answer) =
        Client::new("127.0.0.1", paddr).register_with_password("101", PASSWORD_101);
    assert_eq!(code, 200, "another account during 100's lockout:\n{answer}");
    assert!(proxy.alive(), "voxgate proxy died; log:\n{}", proxy.log());
}
