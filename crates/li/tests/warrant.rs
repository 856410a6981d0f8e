//! The warrant book: life cycle, dual control, windows, matching and persistence.

use voxgate_li::warrant::{
    xid_for, CallParties, Delivery, MatchedAs, Status, TargetId, Warrant, WarrantBook,
    WarrantError, WarrantRequest, DEFAULT_MAX_WINDOW_MS, MAX_LIID_LEN,
};

const DEST: &str = "lemf-1.agency.example:443";
const T0: u64 = 1_700_000_000_000;
const HOUR: u64 = 3_600_000;
const START: u64 = T0 + HOUR;
const END: u64 = T0 + 10 * HOUR;

fn book() -> WarrantBook {
    WarrantBook::new(vec![
        DEST.to_string(),
        "lemf-2.agency.example:443".to_string(),
    ])
}

fn req(liid: &str, targets: &[&str]) -> WarrantRequest {
    WarrantRequest {
        liid: liid.to_string(),
        targets: targets.iter().map(|s| s.to_string()).collect(),
        start_ms: START,
        end_ms: END,
        delivery: Delivery::IriAndContent,
        destination: DEST.to_string(),
    }
}

/// A book with `liid` created by "carol" at T0 and approved by "dave" and "erin".
fn approved(liid: &str, targets: &[&str]) -> WarrantBook {
    let mut b = book();
    b.create(req(liid, targets), "carol", T0).unwrap();
    b.approve(liid, "dave", T0 + 1).unwrap();
    b.approve(liid, "erin", T0 + 2).unwrap();
    b
}

fn call(caller: &str, callee: &str) -> CallParties {
    CallParties {
        caller: Some(caller.to_string()),
        callee: Some(callee.to_string()),
        gateways: vec![],
    }
}

fn liids(b: &WarrantBook, now: u64, p: &CallParties) -> Vec<String> {
    b.matching(now, p).into_iter().map(|m| m.liid).collect()
}

// ---------------------------------------------------------------------------------------------
// Life cycle
// ---------------------------------------------------------------------------------------------

#[test]
fn happy_path() {
    let mut b = book();
    let w = b
        .create(req("LI-1", &["sip:alice@a.example"]), "carol", T0)
        .unwrap();
    assert_eq!(w.liid, "LI-1");
    assert_eq!(w.xid, xid_for("LI-1"));
    assert_eq!(
        w.targets,
        vec![TargetId::parse("sip:alice@a.example").unwrap()]
    );
    assert_eq!(w.created_by, "carol");
    assert_eq!(w.created_ms, T0);
    assert_eq!(w.version, 1);
    assert_eq!(w.status(T0), Status::PendingApproval);
    assert_eq!(
        w.status(START),
        Status::PendingApproval,
        "unapproved: never active"
    );
    // Nothing changes by itself while it is pending.
    assert_eq!(b.next_change_ms(T0), None);

    let w = b.approve("LI-1", "dave", T0 + 1).unwrap();
    assert_eq!(
        w.status(START),
        Status::PendingApproval,
        "one approval is not enough"
    );
    assert_eq!(w.version, 2);
    let w = b.approve("LI-1", "erin", T0 + 2).unwrap();
    assert_eq!(w.version, 3);
    assert_eq!(w.approvals.len(), 2);
    assert_eq!(w.approvals[1].by, "erin");
    assert_eq!(w.approvals[1].at_ms, T0 + 2);

    let w = b.get("LI-1").unwrap();
    assert_eq!(w.status(T0 + 2), Status::Scheduled);
    assert_eq!(w.status(START - 1), Status::Scheduled);
    assert_eq!(w.status(START), Status::Active);
    assert!(w.is_active(START));
    assert_eq!(w.status(END - 1), Status::Active);
    assert_eq!(w.status(END), Status::Expired);
    assert!(!w.is_active(END));

    assert_eq!(b.next_change_ms(T0), Some(START));
    assert_eq!(b.next_change_ms(START - 1), Some(START));
    assert_eq!(b.next_change_ms(START), Some(END), "strictly after now");
    assert_eq!(b.next_change_ms(END - 1), Some(END));
    assert_eq!(b.next_change_ms(END), None);

    let alice = call("sip:alice@a.example", "sip:bob@b.example");
    assert!(b.matching(START - 1, &alice).is_empty());
    let m = b.matching(START, &alice);
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].liid, "LI-1");
    assert_eq!(m[0].xid, xid_for("LI-1"));
    assert_eq!(m[0].delivery, Delivery::IriAndContent);
    assert_eq!(m[0].destination, DEST);
    assert_eq!(m[0].matched.to_string(), "sip:alice@a.example");
    assert_eq!(m[0].as_, MatchedAs::Caller);
    assert!(b.matching(END, &alice).is_empty());

    assert_eq!(b.active_targets(START - 1), vec![]);
    assert_eq!(
        b.active_targets(START),
        vec![(
            "LI-1".to_string(),
            TargetId::parse("sip:alice@a.example").unwrap(),
            END
        )]
    );
    assert_eq!(b.active_targets(END), vec![]);
    assert_eq!(b.list().count(), 1);
}

#[test]
fn next_change_over_several_warrants() {
    let mut b = approved("LI-1", &["sip:alice@a.example"]);
    let mut r = req("LI-2", &["tel:+15550100"]);
    r.start_ms = T0 + 2 * HOUR;
    r.end_ms = T0 + 5 * HOUR;
    b.create(r, "carol", T0).unwrap();
    // LI-2 pending: only LI-1's times count.
    assert_eq!(b.next_change_ms(START), Some(END));
    b.approve("LI-2", "dave", T0).unwrap();
    b.approve("LI-2", "erin", T0).unwrap();
    assert_eq!(b.next_change_ms(T0), Some(START));
    assert_eq!(b.next_change_ms(START), Some(T0 + 2 * HOUR));
    assert_eq!(b.next_change_ms(T0 + 2 * HOUR), Some(T0 + 5 * HOUR));
    assert_eq!(b.next_change_ms(T0 + 5 * HOUR), Some(END));
    // A deactivated warrant no longer changes anything.
    b.deactivate("LI-2", "frank", "court order revoked", T0 + 3 * HOUR)
        .unwrap();
    assert_eq!(b.next_change_ms(T0 + 3 * HOUR), Some(END));
    let active: Vec<String> = b
        .active_targets(T0 + 3 * HOUR)
        .into_iter()
        .map(|(l, _, _)| l)
        .collect();
    assert_eq!(active, vec!["LI-1"]);
}

#[test]
fn several_targets_and_warrants() {
    let mut b = approved(
        "LI-1",
        &["sip:alice@a.example", "tel:+15550100", "gateway:gw-a"],
    );
    b.create(req("LI-2", &["sip:bob@b.example"]), "carol", T0)
        .unwrap();
    b.approve("LI-2", "dave", T0).unwrap();
    b.approve("LI-2", "erin", T0).unwrap();
    assert_eq!(b.active_targets(START).len(), 4);
    // Alice calls Bob: both warrants, one match each.
    let m = b.matching(START, &call("sip:alice@a.example", "sip:bob@b.example"));
    assert_eq!(m.len(), 2);
    assert_eq!((m[0].liid.as_str(), m[0].as_), ("LI-1", MatchedAs::Caller));
    assert_eq!((m[1].liid.as_str(), m[1].as_), ("LI-2", MatchedAs::Callee));
    // A call through gw-a between two strangers: LI-1, as gateway.
    let mut p = call("sip:x@x.example", "sip:y@y.example");
    p.gateways = vec!["GW-A".to_string()];
    let m = b.matching(START, &p);
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].as_, MatchedAs::Gateway);
    assert_eq!(m[0].matched, TargetId::Gateway("gw-a".into()));
}

// ---------------------------------------------------------------------------------------------
// Creation errors
// ---------------------------------------------------------------------------------------------

#[test]
fn create_errors() {
    let mut b = book();
    b.create(req("LI-1", &["sip:alice@a.example"]), "carol", T0)
        .unwrap();

    let e = b
        .create(req("LI-1", &["sip:bob@b.example"]), "carol", T0)
        .unwrap_err();
    assert!(
        matches!(&e, WarrantError::DuplicateLiid { liid } if liid == "LI-1"),
        "{e:?}"
    );
    assert_eq!((e.code(), e.http_status()), ("duplicate_liid", 409));
    assert!(e.to_string().contains("LI-1"));

    for bad in ["", "LI 1", "LI/1", "LI-é", &"x".repeat(MAX_LIID_LEN + 1)] {
        let e = b
            .create(req(bad, &["sip:a@a.example"]), "carol", T0)
            .unwrap_err();
        assert!(matches!(e, WarrantError::BadLiid { .. }), "{bad:?}: {e:?}");
        assert_eq!((e.code(), e.http_status()), ("bad_liid", 422));
    }
    // Exactly MAX_LIID_LEN is fine, with every allowed character class.
    let longest = format!("aZ09._-{}", "x".repeat(MAX_LIID_LEN - 7));
    b.create(req(&longest, &["sip:a@a.example"]), "carol", T0)
        .unwrap();

    let e = b.create(req("LI-2", &[]), "carol", T0).unwrap_err();
    assert_eq!(
        e,
        WarrantError::NoTargets {
            liid: "LI-2".into()
        }
    );
    assert_eq!((e.code(), e.http_status()), ("no_targets", 422));

    let e = b
        .create(
            req("LI-2", &["sip:alice@a.example", "mailto:alice@a.example"]),
            "carol",
            T0,
        )
        .unwrap_err();
    match &e {
        WarrantError::BadTarget { liid, target, .. } => {
            assert_eq!(liid, "LI-2");
            assert_eq!(target, "mailto:alice@a.example");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!((e.code(), e.http_status()), ("bad_target", 422));
    let msg = e.to_string();
    assert!(
        msg.contains("LI-2") && msg.contains("mailto:alice@a.example"),
        "{msg}"
    );

    // The same target twice (in different spellings) is refused.
    let e = b
        .create(
            req(
                "LI-2",
                &["sip:alice@a.example", "sips:alice@A.EXAMPLE:5061"],
            ),
            "carol",
            T0,
        )
        .unwrap_err();
    assert!(matches!(e, WarrantError::BadTarget { .. }), "{e:?}");

    let mut r = req("LI-2", &["sip:alice@a.example"]);
    r.start_ms = END;
    let e = b.create(r.clone(), "carol", T0).unwrap_err();
    assert!(matches!(e, WarrantError::BadWindow { .. }), "{e:?}");
    assert_eq!((e.code(), e.http_status()), ("bad_window", 422));
    r.start_ms = END + 1;
    assert!(matches!(
        b.create(r, "carol", T0),
        Err(WarrantError::BadWindow { .. })
    ));

    // Already over: refused, including the boundary (end is exclusive).
    let r = req("LI-2", &["sip:alice@a.example"]);
    assert!(matches!(
        b.create(r.clone(), "carol", END),
        Err(WarrantError::BadWindow { .. })
    ));
    assert!(matches!(
        b.create(r.clone(), "carol", END + 1),
        Err(WarrantError::BadWindow { .. })
    ));
    // Started in the past but not over: fine.
    b.create(r, "carol", END - 1).unwrap();

    let mut r = req("LI-3", &["sip:alice@a.example"]);
    r.end_ms = r.start_ms + DEFAULT_MAX_WINDOW_MS + 1;
    let e = b.create(r.clone(), "carol", T0).unwrap_err();
    assert_eq!(
        e,
        WarrantError::WindowTooLong {
            liid: "LI-3".into(),
            window_ms: DEFAULT_MAX_WINDOW_MS + 1,
            max_ms: DEFAULT_MAX_WINDOW_MS
        }
    );
    assert_eq!((e.code(), e.http_status()), ("window_too_long", 422));
    r.end_ms -= 1;
    b.create(r, "carol", T0).unwrap();
    // Configurable.
    b.max_window_ms = HOUR;
    let mut r = req("LI-4", &["sip:alice@a.example"]);
    assert!(matches!(
        b.create(r.clone(), "carol", T0),
        Err(WarrantError::WindowTooLong { .. })
    ));
    r.end_ms = r.start_ms + HOUR;
    b.create(r, "carol", T0).unwrap();
    b.max_window_ms = DEFAULT_MAX_WINDOW_MS;

    let mut r = req("LI-5", &["sip:alice@a.example"]);
    r.destination = "lemf-1.agency.example:444".into();
    let e = b.create(r.clone(), "carol", T0).unwrap_err();
    assert_eq!(
        e,
        WarrantError::DestinationNotAllowed {
            liid: "LI-5".into(),
            destination: "lemf-1.agency.example:444".into()
        }
    );
    assert_eq!(
        (e.code(), e.http_status()),
        ("destination_not_allowed", 422)
    );
    // Exact match only.
    r.destination = format!("{DEST} ");
    assert!(matches!(
        b.create(r, "carol", T0),
        Err(WarrantError::DestinationNotAllowed { .. })
    ));

    // A creator must be someone.
    let e = b
        .create(req("LI-6", &["sip:alice@a.example"]), " ", T0)
        .unwrap_err();
    assert!(matches!(e, WarrantError::BadIdentity { .. }), "{e:?}");
    assert_eq!((e.code(), e.http_status()), ("bad_identity", 403));

    // Nothing refused was added.
    let stored: Vec<&str> = b.list().map(|w| w.liid.as_str()).collect();
    assert_eq!(
        stored,
        vec!["LI-1", "LI-2", "LI-3", "LI-4", longest.as_str()]
    );
}

#[test]
fn request_json_refuses_unknown_fields() {
    let ok = r#"{"liid":"LI-1","targets":["sip:alice@a.example"],"start_ms":1,"end_ms":2,
                 "delivery":"iri_only","destination":"d"}"#;
    let r: WarrantRequest = serde_json::from_str(ok).unwrap();
    assert_eq!(r.delivery, Delivery::IriOnly);
    let extra = ok.replace("\"d\"}", "\"d\",\"approved\":true}");
    assert!(serde_json::from_str::<WarrantRequest>(&extra).is_err());
    let bad_delivery = ok.replace("iri_only", "everything");
    assert!(serde_json::from_str::<WarrantRequest>(&bad_delivery).is_err());
}

// ---------------------------------------------------------------------------------------------
// Dual control
// ---------------------------------------------------------------------------------------------

#[test]
fn one_approver_twice() {
    let mut b = book();
    b.create(req("LI-1", &["sip:alice@a.example"]), "carol", T0)
        .unwrap();
    b.approve("LI-1", "dave", T0).unwrap();
    for again in ["dave", "DAVE", "Dave"] {
        let e = b.approve("LI-1", again, T0 + 1).unwrap_err();
        assert!(
            matches!(&e, WarrantError::SameApproverTwice { liid, .. } if liid == "LI-1"),
            "{again}: {e:?}"
        );
        assert_eq!((e.code(), e.http_status()), ("same_approver_twice", 403));
    }
    let w = b.get("LI-1").unwrap();
    assert_eq!(w.approvals.len(), 1);
    assert_eq!(w.version, 2);
    assert!(!w.is_active(START));
    assert!(b
        .matching(START, &call("sip:alice@a.example", "sip:x@x.example"))
        .is_empty());
}

#[test]
fn creator_cannot_approve() {
    let mut b = book();
    b.create(req("LI-1", &["sip:alice@a.example"]), "carol", T0)
        .unwrap();
    let e = b.approve("LI-1", "carol", T0).unwrap_err();
    assert!(
        matches!(&e, WarrantError::CreatorCannotApprove { liid, creator } if liid == "LI-1" && creator == "carol")
    );
    assert_eq!((e.code(), e.http_status()), ("creator_cannot_approve", 403));
    // Not after another approval either, nor under another case.
    b.approve("LI-1", "dave", T0).unwrap();
    assert!(matches!(
        b.approve("LI-1", "Carol", T0),
        Err(WarrantError::CreatorCannotApprove { .. })
    ));
    assert_eq!(b.get("LI-1").unwrap().approvals.len(), 1);
}

#[test]
fn approver_identity_must_be_someone() {
    let mut b = book();
    b.create(req("LI-1", &["sip:alice@a.example"]), "carol", T0)
        .unwrap();
    for who in ["", "  ", " dave", "da\u{0}ve"] {
        assert!(
            matches!(
                b.approve("LI-1", who, T0),
                Err(WarrantError::BadIdentity { .. })
            ),
            "{who:?}"
        );
    }
    assert!(b.get("LI-1").unwrap().approvals.is_empty());
}

#[test]
fn third_approval_refused() {
    let mut b = approved("LI-1", &["sip:alice@a.example"]);
    let e = b.approve("LI-1", "frank", T0 + 3).unwrap_err();
    assert_eq!(
        e,
        WarrantError::AlreadyApproved {
            liid: "LI-1".into()
        }
    );
    assert_eq!((e.code(), e.http_status()), ("already_approved", 409));
    // Also while active.
    assert!(matches!(
        b.approve("LI-1", "frank", START),
        Err(WarrantError::AlreadyApproved { .. })
    ));
    assert_eq!(b.get("LI-1").unwrap().approvals.len(), 2);
}

#[test]
fn approval_after_expiry() {
    let mut b = book();
    b.create(req("LI-1", &["sip:alice@a.example"]), "carol", T0)
        .unwrap();
    b.approve("LI-1", "dave", T0).unwrap();
    let e = b.approve("LI-1", "erin", END).unwrap_err();
    assert_eq!(
        e,
        WarrantError::NotApprovable {
            liid: "LI-1".into(),
            status: Status::Expired
        }
    );
    assert_eq!((e.code(), e.http_status()), ("not_approvable", 409));
    assert!(e.to_string().contains("expired"), "{e}");
    // One ms before the end it was still possible.
    b.approve("LI-1", "erin", END - 1).unwrap();
    assert!(b.get("LI-1").unwrap().is_active(END - 1));
}

#[test]
fn approval_after_deactivation() {
    let mut b = book();
    b.create(req("LI-1", &["sip:alice@a.example"]), "carol", T0)
        .unwrap();
    b.approve("LI-1", "dave", T0).unwrap();
    b.deactivate("LI-1", "frank", "entered in error", T0 + 1)
        .unwrap();
    let e = b.approve("LI-1", "erin", T0 + 2).unwrap_err();
    assert_eq!(
        e,
        WarrantError::NotApprovable {
            liid: "LI-1".into(),
            status: Status::Deactivated
        }
    );
    let w = b.get("LI-1").unwrap();
    assert_eq!(w.approvals.len(), 1);
    assert_eq!(w.status(START), Status::Deactivated);
}

#[test]
fn unknown_liid() {
    let mut b = approved("LI-1", &["sip:alice@a.example"]);
    for e in [
        b.get("LI-2").unwrap_err(),
        b.approve("LI-2", "dave", T0).unwrap_err(),
        b.deactivate("LI-2", "dave", "x", T0).unwrap_err(),
        b.get("li-1").unwrap_err(),
    ] {
        assert!(matches!(e, WarrantError::UnknownLiid { .. }), "{e:?}");
        assert_eq!((e.code(), e.http_status()), ("unknown_liid", 404));
    }
}

// ---------------------------------------------------------------------------------------------
// Deactivation
// ---------------------------------------------------------------------------------------------

#[test]
fn deactivation_stops_matching_at_once() {
    let mut b = approved("LI-1", &["sip:alice@a.example"]);
    let p = call("sip:alice@a.example", "sip:bob@b.example");
    let now = START + 5;
    assert_eq!(liids(&b, now, &p), vec!["LI-1"]);
    let w = b
        .deactivate("LI-1", "frank", "court order revoked", now)
        .unwrap();
    assert_eq!(w.version, 4);
    let d = w.deactivated.as_ref().unwrap();
    assert_eq!(
        (d.by.as_str(), d.at_ms, d.reason.as_str()),
        ("frank", now, "court order revoked")
    );
    // At the same millisecond, and forever after, even inside the window.
    assert!(b.matching(now, &p).is_empty());
    assert!(b.matching(now + 1, &p).is_empty());
    assert!(b.active_targets(now).is_empty());
    assert_eq!(b.next_change_ms(now), None);
    assert_eq!(b.get("LI-1").unwrap().status(now), Status::Deactivated);
    // Even for a query about a moment before the deactivation: it never comes back.
    assert_eq!(b.get("LI-1").unwrap().status(START), Status::Deactivated);

    let e = b.deactivate("LI-1", "gina", "again", now + 1).unwrap_err();
    assert_eq!(
        e,
        WarrantError::AlreadyDeactivated {
            liid: "LI-1".into()
        }
    );
    assert_eq!((e.code(), e.http_status()), ("already_deactivated", 409));
    // The first deactivation record stands.
    assert_eq!(
        b.get("LI-1").unwrap().deactivated.as_ref().unwrap().by,
        "frank"
    );
    // No approval revives it.
    assert!(matches!(
        b.approve("LI-1", "gina", now + 2),
        Err(WarrantError::NotApprovable { .. })
    ));
}

#[test]
fn deactivate_pending_and_scheduled() {
    let mut b = book();
    b.create(req("LI-1", &["sip:alice@a.example"]), "carol", T0)
        .unwrap();
    b.deactivate("LI-1", "carol", "withdrawn", T0).unwrap();
    assert_eq!(b.get("LI-1").unwrap().status(T0), Status::Deactivated);

    let mut b = approved("LI-1", &["sip:alice@a.example"]);
    b.deactivate("LI-1", "frank", "withdrawn", START - 1)
        .unwrap();
    let p = call("sip:alice@a.example", "sip:bob@b.example");
    assert!(b.matching(START, &p).is_empty());
    assert!(b.active_targets(START).is_empty());
}

// ---------------------------------------------------------------------------------------------
// Matching
// ---------------------------------------------------------------------------------------------

#[test]
fn window_boundaries() {
    let b = approved("LI-1", &["sip:alice@a.example"]);
    let p = call("sip:alice@a.example", "sip:bob@b.example");
    assert!(b.matching(T0, &p).is_empty());
    assert!(b.matching(START - 1, &p).is_empty(), "before start");
    assert_eq!(liids(&b, START, &p), vec!["LI-1"], "start inclusive");
    assert_eq!(liids(&b, END - 1, &p), vec!["LI-1"]);
    assert!(b.matching(END, &p).is_empty(), "end exclusive");
    assert!(b.matching(u64::MAX, &p).is_empty());
}

#[test]
fn other_calls_do_not_match() {
    let b = approved("LI-1", &["sip:alice@a.example"]);
    // Bob's call to Carol.
    assert!(b
        .matching(START, &call("sip:bob@a.example", "sip:carol@a.example"))
        .is_empty());
    // Another domain's alice.
    assert!(b
        .matching(START, &call("sip:alice@b.example", "sip:bob@b.example"))
        .is_empty());
    assert!(b
        .matching(START, &call("sip:bob@b.example", "sip:alice@b.example"))
        .is_empty());
    // The user part is case-sensitive, the host is not.
    assert!(b
        .matching(START, &call("sip:Alice@a.example", "sip:bob@b.example"))
        .is_empty());
    assert_eq!(
        liids(&b, START, &call("sip:alice@A.EXAMPLE", "sip:bob@b.example")),
        vec!["LI-1"]
    );
    // A prefix or suffix is not the target.
    for other in [
        "sip:alice2@a.example",
        "sip:alic@a.example",
        "sip:alice@a.example.evil",
        "sip:alice@sub.a.example",
    ] {
        assert!(
            b.matching(START, &call(other, "sip:x@x.example"))
                .is_empty(),
            "{other}"
        );
    }
    // No parties at all.
    assert!(b.matching(START, &CallParties::default()).is_empty());
    // Garbage parties: no match, no panic.
    for junk in [
        "",
        "<",
        "\"",
        "sip:",
        "sip:@",
        "tel:+",
        "\u{0}",
        "sip:alice@a.example>x",
        "sip:alice@[",
        "%",
    ] {
        assert!(b.matching(START, &call(junk, junk)).is_empty(), "{junk:?}");
    }
}

#[test]
fn party_forms_match() {
    let b = approved("LI-1", &["sip:alice@a.example"]);
    for (caller, callee, as_) in [
        (
            "\"Alice\" <sip:alice@a.example>;tag=1928301774",
            "sip:bob@b.example",
            MatchedAs::Caller,
        ),
        (
            "sips:alice@a.example:5061;transport=tls",
            "sip:bob@b.example",
            MatchedAs::Caller,
        ),
        (
            "sip:bob@b.example",
            "sip:alice@a.example;transport=udp?x=y",
            MatchedAs::Callee,
        ),
        (
            "sip:bob@b.example",
            "<sip:%61lice@a.example.>",
            MatchedAs::Callee,
        ),
    ] {
        let m = b.matching(START, &call(caller, callee));
        assert_eq!(m.len(), 1, "{caller} -> {callee}");
        assert_eq!(m[0].as_, as_);
    }
    // Calling oneself: reported as caller, once.
    let m = b.matching(START, &call("sip:alice@a.example", "sip:alice@a.example"));
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].as_, MatchedAs::Caller);
}

#[test]
fn tel_and_sip_user_phone() {
    let b = approved("LI-1", &["tel:+1-555-0100"]);
    let t = TargetId::Tel("+15550100".into());
    for (caller, callee, as_) in [
        ("tel:+15550100", "sip:bob@b.example", MatchedAs::Caller),
        (
            "sip:+15550100@a.example;user=phone",
            "sip:bob@b.example",
            MatchedAs::Caller,
        ),
        (
            "sip:+1-555-0100@gw.example",
            "sip:bob@b.example",
            MatchedAs::Caller,
        ),
        (
            "sip:bob@b.example",
            "<sip:+1.555.0100;isub=2@gw.example;user=phone>",
            MatchedAs::Callee,
        ),
        ("sip:bob@b.example", "tel:+1(555)0100", MatchedAs::Callee),
        ("sip:bob@b.example", "+1 555 0100", MatchedAs::Callee),
    ] {
        assert_eq!(
            t.matches(&call(caller, callee)),
            Some(as_),
            "{caller} -> {callee}"
        );
        let m = b.matching(START, &call(caller, callee));
        assert_eq!(m.len(), 1, "{caller} -> {callee}");
        assert_eq!(m[0].matched, t);
    }
    for (caller, callee) in [
        ("tel:+15550101", "sip:bob@b.example"),
        ("sip:15550100@a.example;user=phone", "sip:bob@b.example"),
        ("sip:+155501000@a.example", "sip:bob@b.example"),
        ("tel:5550100", "sip:bob@b.example"),
    ] {
        assert_eq!(
            t.matches(&call(caller, callee)),
            None,
            "{caller} -> {callee}"
        );
    }
    // A SIP target is not a number: tel:+15550100 does not match sip:+15550100@a.example.
    let s = TargetId::parse("sip:+15550100@a.example").unwrap();
    assert_eq!(s.matches(&call("tel:+15550100", "sip:x@x.example")), None);
    assert_eq!(
        s.matches(&call("sip:+1-555-0100@a.example", "sip:x@x.example")),
        Some(MatchedAs::Caller)
    );
    assert_eq!(
        s.matches(&call("sip:+15550100@b.example", "sip:x@x.example")),
        None
    );
}

#[test]
fn gateway_targets() {
    let b = approved("LI-1", &["gateway:GW-A"]);
    let mut p = call("sip:x@x.example", "sip:y@y.example");
    assert!(b.matching(START, &p).is_empty());
    p.gateways = vec!["gw-b".into()];
    assert!(b.matching(START, &p).is_empty());
    p.gateways = vec!["gw-b".into(), "gw-a".into()];
    let m = b.matching(START, &p);
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].as_, MatchedAs::Gateway);
    p.gateways = vec!["Gw-A".into()];
    assert_eq!(liids(&b, START, &p), vec!["LI-1"]);
    p.gateways = vec!["gw-a2".into(), "gw".into()];
    assert!(b.matching(START, &p).is_empty());
    // A URI is not a gateway name.
    let p = call("sip:gw-a@gw-a", "gateway:gw-a");
    assert!(b.matching(START, &p).is_empty());
}

#[test]
fn target_parse_and_display() {
    for (input, canonical) in [
        ("sip:alice@a.example", "sip:alice@a.example"),
        (
            "sips:Alice@A.Example:5061;transport=tls",
            "sip:Alice@a.example",
        ),
        ("\"Al\" <sip:alice@a.example>", "sip:alice@a.example"),
        ("tel:+1-555-0100", "tel:+15550100"),
        ("+15550100", "tel:+15550100"),
        ("gateway:GW-A", "gateway:gw-a"),
        (
            "sip:+1-555-0100@a.example;user=phone",
            "sip:+15550100@a.example",
        ),
    ] {
        let t = TargetId::parse(input).unwrap();
        assert_eq!(t.to_string(), canonical, "{input}");
        assert_eq!(TargetId::parse(canonical).unwrap(), t);
        let parsed: TargetId = input.parse().unwrap();
        assert_eq!(parsed, t);
    }
    for bad in [
        "",
        "alice",
        "sip:a.example",
        "tel:555",
        "gateway:",
        "mailto:a@b",
        "+1",
        "sip:alice@",
    ] {
        let e = TargetId::parse(bad).unwrap_err();
        assert!(
            matches!(e, WarrantError::BadTarget { .. }),
            "{bad:?}: {e:?}"
        );
        assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
    }
    // Hostile input is clipped in the message.
    let huge = format!("sip:{}@a.example", "a".repeat(100_000));
    let e = TargetId::parse(&huge).unwrap_err();
    assert!(e.to_string().len() < 400, "{}", e.to_string().len());
}

// ---------------------------------------------------------------------------------------------
// Persistence
// ---------------------------------------------------------------------------------------------

fn sample_book() -> WarrantBook {
    let mut b = approved(
        "LI-1",
        &["sip:alice@a.example", "tel:+15550100", "gateway:gw-a"],
    );
    let mut r = req("LI-2", &["sip:bob@b.example"]);
    r.delivery = Delivery::IriOnly;
    r.destination = "lemf-2.agency.example:443".into();
    b.create(r, "carol", T0).unwrap();
    b.approve("LI-2", "dave", T0).unwrap();
    b.create(req("LI-3", &["sip:zed@z.example"]), "carol", T0)
        .unwrap();
    b.approve("LI-3", "dave", T0).unwrap();
    b.approve("LI-3", "erin", T0).unwrap();
    b.deactivate("LI-3", "frank", "done", T0 + 5).unwrap();
    b
}

fn allow() -> Vec<String> {
    vec![DEST.to_string(), "lemf-2.agency.example:443".to_string()]
}

#[test]
fn json_round_trip() {
    let b = sample_book();
    let text = b.to_json();
    let back = WarrantBook::from_json(&text, allow()).unwrap();
    assert_eq!(back, b);
    assert_eq!(back.to_json(), text);
    // The XID is written as a UUID string.
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let xid = v["warrants"][0]["xid"].as_str().unwrap();
    assert_eq!(xid, b.get("LI-1").unwrap().xid_string());
    assert_eq!(xid.len(), 36);
    assert_eq!(v["warrants"][0]["targets"][1], "tel:+15550100");
    // It behaves the same after reload.
    let p = call("sip:alice@a.example", "sip:bob@b.example");
    assert_eq!(back.matching(START, &p), b.matching(START, &p));
    assert_eq!(back.next_change_ms(T0), b.next_change_ms(T0));
    // Operations continue on the reloaded book.
    let mut back = back;
    back.approve("LI-2", "erin", T0 + 10).unwrap();
    assert_eq!(liids(&back, START, &p), vec!["LI-1", "LI-2"]);
    // A single warrant (as the API returns it) round-trips too.
    let w: Warrant = serde_json::from_value(warrant_json(&b, "LI-3")).unwrap();
    assert_eq!(&w, b.get("LI-3").unwrap());
    // An empty book.
    let empty = WarrantBook::new(allow());
    assert_eq!(
        WarrantBook::from_json(&empty.to_json(), allow()).unwrap(),
        empty
    );
}

#[test]
fn reloaded_with_shorter_allow_list_delivers_nowhere_else() {
    let b = sample_book();
    let back = WarrantBook::from_json(&b.to_json(), vec![DEST.to_string()]).unwrap();
    assert_eq!(back.list().count(), 3, "history kept");
    let mut back = back;
    back.approve("LI-2", "erin", T0).unwrap();
    let p = call("sip:alice@a.example", "sip:bob@b.example");
    assert_eq!(
        liids(&back, START, &p),
        vec!["LI-1"],
        "LI-2's destination is no longer allowed"
    );
    assert!(back
        .active_targets(START)
        .iter()
        .all(|(l, _, _)| l == "LI-1"));
}

fn warrant_json(b: &WarrantBook, liid: &str) -> serde_json::Value {
    serde_json::to_value(b.get(liid).unwrap()).unwrap()
}

fn book_with(warrants: Vec<serde_json::Value>) -> String {
    serde_json::json!({"format": "voxgate-warrants-v1", "warrants": warrants}).to_string()
}

fn corrupt(text: &str) -> String {
    match WarrantBook::from_json(text, allow()) {
        Err(e @ WarrantError::Corrupt(_)) => {
            assert_eq!((e.code(), e.http_status()), ("corrupt", 500));
            e.to_string()
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn corrupt_files() {
    let b = sample_book();
    let text = b.to_json();
    // Truncated anywhere.
    for cut in (0..text.len()).step_by(7) {
        if text.is_char_boundary(cut) {
            corrupt(&text[..cut]);
        }
    }
    corrupt("");
    corrupt("null");
    corrupt("[]");
    corrupt("{}");
    corrupt(&"[".repeat(100_000));
    corrupt(&text.replace("voxgate-warrants-v1", "voxgate-warrants-v2"));
    // Unknown fields, at the top and in a warrant, approval or deactivation.
    corrupt(&text.replacen("\"format\"", "\"extra\": 1, \"format\"", 1));
    let ok = warrant_json(&b, "LI-1");
    let mut w = ok.clone();
    w["override"] = true.into();
    corrupt(&book_with(vec![w]));
    let mut w = ok.clone();
    w["approvals"][0]["note"] = "x".into();
    corrupt(&book_with(vec![w]));
    let mut w = warrant_json(&b, "LI-3");
    w["deactivated"]["until"] = 0.into();
    corrupt(&book_with(vec![w]));
    // The untouched warrant loads.
    WarrantBook::from_json(&book_with(vec![ok.clone()]), allow()).unwrap();
}

#[test]
fn corrupt_invariants() {
    let b = sample_book();
    let ok = warrant_json(&b, "LI-1");
    let edit = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut w = ok.clone();
        f(&mut w);
        corrupt(&book_with(vec![w]))
    };
    // Two approvals by the same person (in any case).
    let msg = edit(&|w| w["approvals"][1]["by"] = "dave".into());
    assert!(msg.contains("LI-1") && msg.contains("dave"), "{msg}");
    edit(&|w| w["approvals"][1]["by"] = "DAVE".into());
    // Approved by the creator.
    edit(&|w| w["approvals"][0]["by"] = "carol".into());
    // Three approvals.
    edit(&|w| {
        w["approvals"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"by": "zoe", "at_ms": T0}))
    });
    // An approval after the window ended.
    edit(&|w| w["approvals"][1]["at_ms"] = END.into());
    // An empty approver.
    edit(&|w| w["approvals"][1]["by"] = "".into());
    // An XID that is not the LIID's.
    edit(&|w| w["xid"] = "00000000-0000-8000-8000-000000000000".into());
    edit(&|w| w["xid"] = "not-a-uuid".into());
    // An LIID edited (the XID then no longer fits), or invalid.
    edit(&|w| w["liid"] = "LI-9".into());
    edit(&|w| w["liid"] = "".into());
    // No targets, a bad target, a duplicated target.
    edit(&|w| w["targets"] = serde_json::json!([]));
    edit(&|w| w["targets"][0] = "mailto:alice@a.example".into());
    edit(&|w| w["targets"][1] = "sip:alice@A.example".into());
    // A reversed or empty window; created after its end.
    edit(&|w| w["start_ms"] = END.into());
    edit(&|w| w["created_ms"] = END.into());
    // A version that does not account for its changes.
    edit(&|w| w["version"] = 2.into());
    // Wrong types.
    edit(&|w| w["start_ms"] = (-1).into());
    edit(&|w| w["delivery"] = "everything".into());
    edit(&|w| w["approvals"] = "dave, erin".into());
    // The same LIID twice.
    corrupt(&book_with(vec![ok.clone(), ok.clone()]));
}
