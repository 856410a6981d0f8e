//! PROTOS c07-sip (tests/fixtures/protos): all 4,527 cases, with their placeholders filled and cut
//! at 65,507 bytes as the original tool did, go through the parser. None may panic; the valid
//! case must parse; the per-group table of parsed / rejected (by response code) is printed.
//! The replay against a running `voxgate proxy` over UDP is crates/voxgate/tests/protos_udp.rs.

use std::collections::BTreeMap;

#[path = "../../../tests/fixtures/protos/cases.rs"]
mod protos_cases;

use protos_cases::{cases, groups, split_case};
use voxgate_sip::{Framing, ParseLimits, SipMessage};

/// Fills the placeholders for a parser-only run.
fn fill(msg: &[u8], case: usize) -> Vec<u8> {
    let id = case.to_string();
    protos_cases::fill(
        msg,
        &[
            (b"<To>", b"bob@127.0.0.1"),
            (b"<From>", b"protos@127.0.0.1"),
            (b"<From-Address>", b"127.0.0.1"),
            (b"<From-IP>", b"127.0.0.1"),
            (b"<Local-Port>", b"5070"),
            (b"<Branch-ID>", id.as_bytes()),
            (b"<Call-ID>", id.as_bytes()),
            (b"<CSeq>", b"1"),
            (b"<Teardown-Method>", b"CANCEL"),
        ],
    )
}

#[test]
fn protos_c07_sip_cases_never_break_the_parser() {
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
    for (name, first, count) in groups() {
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
