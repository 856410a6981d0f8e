//! PROTOS c07-sip (tests/fixtures/protos): all 4,527 cases, with their placeholders filled and cut
//! at 65,507 bytes as the original tool did, go through the parser. None may panic; the valid
//! case must parse; the per-group table of parsed / rejected (by response code) is printed.
//! (The replay against a running `voxgate proxy` over UDP comes with the proxy.)

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;

use voxgate_sip::{Framing, ParseLimits, SipMessage};

const UDP_MAX: usize = 65_507;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/protos")
}

/// The cases of the archive, by number.
fn cases() -> BTreeMap<usize, Vec<u8>> {
    let xz = std::fs::read(fixtures().join("protos-c07-sip.tar.xz")).unwrap();
    let mut tar_bytes = Vec::new();
    lzma_rs::xz_decompress(&mut &xz[..], &mut tar_bytes).unwrap();
    let mut out = BTreeMap::new();
    let mut ar = tar::Archive::new(&tar_bytes[..]);
    for entry in ar.entries().unwrap() {
        let mut e = entry.unwrap();
        let path = e.path().unwrap().into_owned();
        if let Some(n) = path
            .file_name()
            .and_then(|f| f.to_str())
            .and_then(|f| f.parse::<usize>().ok())
        {
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            out.insert(n, data);
        }
    }
    out
}

/// Splits `<len> <bytes><len> <bytes>` into the two messages.
fn split_case(data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    while let Some(sp) = rest.iter().position(|b| *b == b' ') {
        let Some(len) = std::str::from_utf8(&rest[..sp])
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
        else {
            break;
        };
        let body = &rest[sp + 1..];
        let take = len.min(body.len());
        out.push(&body[..take]);
        rest = &body[take..];
    }
    out
}

fn replace(hay: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(hay.len());
    let mut i = 0;
    while i < hay.len() {
        if hay[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(hay[i]);
            i += 1;
        }
    }
    out
}

/// Fills the placeholders; Content-Length last, from the filled body.
fn fill(msg: &[u8], case: usize) -> Vec<u8> {
    let id = case.to_string();
    let mut m = msg.to_vec();
    for (k, v) in [
        (&b"<To>"[..], &b"bob@127.0.0.1"[..]),
        (b"<From>", b"protos@127.0.0.1"),
        (b"<From-Address>", b"127.0.0.1"),
        (b"<From-IP>", b"127.0.0.1"),
        (b"<Local-Port>", b"5070"),
        (b"<Branch-ID>", id.as_bytes()),
        (b"<Call-ID>", id.as_bytes()),
        (b"<CSeq>", b"1"),
        (b"<Teardown-Method>", b"CANCEL"),
    ] {
        m = replace(&m, k, v);
    }
    let body_len = m
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(0, |p| m.len() - p - 4);
    m = replace(&m, b"<Content-Length>", body_len.to_string().as_bytes());
    m.truncate(UDP_MAX);
    m
}

#[test]
fn protos_c07_sip_cases_never_break_the_parser() {
    let groups = std::fs::read_to_string(fixtures().join("protos-groups.tsv")).unwrap();
    let cases = cases();
    assert_eq!(cases.len(), 4527, "all cases unpacked");
    let limits = ParseLimits::default();
    let valid = fill(split_case(&cases[&0])[0], 0);
    let v =
        SipMessage::parse(&valid, Framing::Datagram, &limits).expect("case 0 is a valid INVITE");
    assert!(v.validate_request().is_ok());

    // Each case holds two messages (the INVITE and its CANCEL/ACK): the counts are messages.
    println!(
        "{:<28} {:>6} {:>10} {:>10}  rejections by status",
        "group", "cases", "msgs ok", "msgs 4xx/5xx"
    );
    let mut total = (0usize, 0usize, 0usize);
    let mut panics = Vec::new();
    for line in groups.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split('\t').collect();
        let (name, first, count): (&str, usize, usize) =
            (f[0], f[1].parse().unwrap(), f[2].parse().unwrap());
        let (mut parsed, mut rejected) = (0, 0);
        let mut by_status: BTreeMap<u16, usize> = BTreeMap::new();
        for n in first..first + count {
            for msg in split_case(&cases[&n]) {
                let m = fill(msg, n);
                match std::panic::catch_unwind(|| {
                    SipMessage::parse(&m, Framing::Datagram, &limits)
                        .map(|x| x.validate_request())
                        .map_err(|e| e.status())
                }) {
                    Ok(Ok(Ok(()))) => parsed += 1,
                    Ok(Ok(Err(code))) | Ok(Err(code)) => {
                        rejected += 1;
                        *by_status.entry(code).or_default() += 1;
                    }
                    Err(_) => panics.push(n),
                }
            }
        }
        // The valid request still parses after every group (a stateless parser; the proxy
        // replay will check the server the same way).
        assert!(SipMessage::parse(&valid, Framing::Datagram, &limits).is_ok());
        let statuses: Vec<String> = by_status.iter().map(|(s, c)| format!("{s}x{c}")).collect();
        println!(
            "{name:<28} {count:>6} {parsed:>10} {rejected:>10}  {}",
            statuses.join(" ")
        );
        total = (total.0 + count, total.1 + parsed, total.2 + rejected);
    }
    println!(
        "{:<28} {:>6} {:>10} {:>10}",
        "total", total.0, total.1, total.2
    );
    assert!(panics.is_empty(), "parser panicked on cases {panics:?}");
    assert_eq!(total.0, 4527);
}
