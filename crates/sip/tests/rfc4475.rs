//! RFC 4475 torture messages (tests/fixtures/rfc4475, byte-exact from the RFC): every message
//! the expectation table says must parse parses, and every one it says must be rejected is
//! rejected with the response code the table gives. The table is built from the RFC's text
//! (see the fixture README); the results are printed as a table.

use std::path::PathBuf;

use voxgate_sip::{Framing, ParseLimits, SipMessage};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/rfc4475")
}

#[test]
fn rfc4475_torture_messages() {
    let table = std::fs::read_to_string(fixtures().join("expectations.tsv")).unwrap();
    let mut rows = 0;
    let mut failures = Vec::new();
    println!(
        "{:<14} {:<12} {:<7} {:<6} result",
        "file", "class", "expect", "status"
    );
    for line in table.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split('\t').collect();
        let (file, class, expect, status) = (f[0], f[3], f[4], f[5]);
        let bytes = std::fs::read(fixtures().join(file)).unwrap();
        rows += 1;
        let parsed = SipMessage::parse(&bytes, Framing::Datagram, &ParseLimits::default());
        let got = match &parsed {
            Ok(m) => match m.validate_request() {
                Ok(()) => "parse".to_string(),
                Err(code) => format!("parse, then {code}"),
            },
            Err(e) => format!("reject {} ({e})", e.status()),
        };
        let ok = match (expect, &parsed) {
            ("parse", Ok(m)) => {
                // Messages that parse but lack required headers must fail validation with 400.
                let needs_400 = file == "insuf.dat";
                !needs_400 || m.validate_request() == Err(400)
            }
            ("reject", Err(e)) => status == "-" || status.parse::<u16>().ok() == Some(e.status()),
            _ => false,
        };
        println!(
            "{file:<14} {class:<12} {expect:<7} {status:<6} {got}{}",
            if ok { "" } else { "   <-- MISMATCH" }
        );
        if !ok {
            failures.push(format!("{file}: expected {expect} {status}, got {got}"));
        }
    }
    assert!(rows >= 49, "expectation table has {rows} rows");
    assert!(
        failures.is_empty(),
        "{} of {rows} messages:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
