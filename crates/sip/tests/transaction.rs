//! RFC 3261 §17 transaction timers on a simulated clock: no sleeping, exact instants.

use std::time::{Duration, Instant};

use voxgate_sip::transaction::build_ack;
use voxgate_sip::{
    ClientTransaction, Framing, Output, ParseLimits, ServerTransaction, SipMessage, State, Timers,
    Transport, TuEvent,
};

const INVITE: &[u8] = b"INVITE sip:bob@b.example SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKnashds8\r\n\
Route: <sip:p1.example;lr>\r\n\
Max-Forwards: 70\r\n\
To: Bob <sip:bob@b.example>\r\n\
From: Alice <sip:alice@a.example>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710\r\n\
CSeq: 314159 INVITE\r\n\
Content-Length: 0\r\n\r\n";

const OPTIONS: &[u8] = b"OPTIONS sip:bob@b.example SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKopt1\r\n\
Max-Forwards: 70\r\n\
To: <sip:bob@b.example>\r\n\
From: <sip:alice@a.example>;tag=1\r\n\
Call-ID: opt1\r\n\
CSeq: 1 OPTIONS\r\n\
Content-Length: 0\r\n\r\n";

fn response(code: u16, method: &str, cseq: u32) -> Vec<u8> {
    format!(
        "SIP/2.0 {code} Whatever\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKnashds8\r\n\
To: Bob <sip:bob@b.example>;tag=a6c85cf\r\nFrom: Alice <sip:alice@a.example>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// Runs timers up to `until`; returns (offset from t0, output) pairs.
fn run_client(tx: &mut ClientTransaction, t0: Instant, until: Instant) -> Vec<(Duration, Output)> {
    let mut log: Vec<(Duration, Output)> = Vec::new();
    while let Some(o) = tx.poll_output() {
        log.push((Duration::ZERO, o));
    }
    while let Some(at) = tx.poll_timeout().filter(|at| *at <= until) {
        tx.handle_timeout(at);
        while let Some(o) = tx.poll_output() {
            log.push((at - t0, o));
        }
    }
    log
}

fn transmits(log: &[(Duration, Output)]) -> Vec<u64> {
    log.iter()
        .filter(|(_, o)| matches!(o, Output::Transmit(_)))
        .map(|(t, _)| t.as_millis() as u64)
        .collect()
}

#[test]
fn invite_over_udp_retransmits_with_timer_a_and_gives_up_at_timer_b() {
    let t0 = Instant::now();
    let mut tx = ClientTransaction::new(
        t0,
        INVITE.to_vec(),
        Transport::Unreliable,
        Timers::default(),
    )
    .unwrap();
    let log = run_client(&mut tx, t0, t0 + Duration::from_secs(60));
    // A doubles from T1: 0.5, 1.5, 3.5, 7.5, 15.5, 31.5 s; B = 64*T1 = 32 s.
    assert_eq!(
        transmits(&log),
        vec![0, 500, 1500, 3500, 7500, 15500, 31500]
    );
    let tail: Vec<_> = log
        .iter()
        .rev()
        .take(2)
        .map(|(t, o)| (t.as_millis(), o.clone()))
        .collect();
    assert_eq!(tail[0], (32_000, Output::Terminated));
    assert_eq!(tail[1], (32_000, Output::Tu(TuEvent::Timeout)));
    assert_eq!(tx.state(), State::Terminated);
}

#[test]
fn non_invite_retransmits_capped_at_t2_and_reliable_transports_do_not_retransmit() {
    let t0 = Instant::now();
    let mut tx = ClientTransaction::new(
        t0,
        OPTIONS.to_vec(),
        Transport::Unreliable,
        Timers::default(),
    )
    .unwrap();
    let log = run_client(&mut tx, t0, t0 + Duration::from_secs(60));
    assert_eq!(
        transmits(&log),
        vec![0, 500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500]
    );
    assert!(log.contains(&(Duration::from_secs(32), Output::Tu(TuEvent::Timeout))));

    let mut tx =
        ClientTransaction::new(t0, OPTIONS.to_vec(), Transport::Reliable, Timers::default())
            .unwrap();
    let log = run_client(&mut tx, t0, t0 + Duration::from_secs(60));
    assert_eq!(transmits(&log), vec![0]);
    assert!(log.contains(&(Duration::from_secs(32), Output::Tu(TuEvent::Timeout))));
}

#[test]
fn invite_error_response_is_acked_and_retransmissions_absorbed() {
    let t0 = Instant::now();
    let mut tx = ClientTransaction::new(
        t0,
        INVITE.to_vec(),
        Transport::Unreliable,
        Timers::default(),
    )
    .unwrap();
    run_client(&mut tx, t0, t0);
    let t1 = t0 + Duration::from_millis(200);
    tx.handle_response(t1, &response(180, "INVITE", 314159))
        .unwrap();
    assert_eq!(tx.state(), State::Proceeding);
    assert!(matches!(
        tx.poll_output(),
        Some(Output::Tu(TuEvent::Response { code: 180, .. }))
    ));
    // No more retransmissions in Proceeding.
    assert_eq!(tx.poll_timeout(), None);
    let busy = response(486, "INVITE", 314159);
    tx.handle_response(t1, &busy).unwrap();
    assert!(matches!(
        tx.poll_output(),
        Some(Output::Tu(TuEvent::Response { code: 486, .. }))
    ));
    let Some(Output::Transmit(ack)) = tx.poll_output() else {
        panic!("ACK expected")
    };
    let ack_msg = SipMessage::parse(&ack, Framing::Datagram, &ParseLimits::default()).unwrap();
    assert_eq!(ack_msg.method(), Some("ACK"));
    assert_eq!(ack_msg.cseq().unwrap().number, 314159);
    assert_eq!(ack_msg.cseq().unwrap().method, b"ACK");
    assert_eq!(
        ack_msg.to().unwrap().param("tag").unwrap(),
        b"a6c85cf",
        "To from the response"
    );
    assert_eq!(
        ack_msg.vias()[0].branch().unwrap(),
        b"z9hG4bKnashds8",
        "same branch as the INVITE"
    );
    assert!(ack_msg.header_named("Route").is_some(), "Route copied");
    assert_eq!(tx.state(), State::Completed);
    // The 486 again: ACK again, TU not told.
    tx.handle_response(t1 + Duration::from_secs(1), &busy)
        .unwrap();
    assert_eq!(tx.poll_output(), Some(Output::Transmit(ack.clone())));
    assert_eq!(tx.poll_output(), None);
    // Timer D (32 s) ends it.
    assert_eq!(tx.poll_timeout(), Some(t1 + Duration::from_secs(32)));
    tx.handle_timeout(t1 + Duration::from_secs(32));
    assert_eq!(tx.poll_output(), Some(Output::Terminated));
}

#[test]
fn invite_2xx_goes_to_accepted_and_passes_retransmitted_2xx_to_the_tu() {
    let t0 = Instant::now();
    let mut tx = ClientTransaction::new(
        t0,
        INVITE.to_vec(),
        Transport::Unreliable,
        Timers::default(),
    )
    .unwrap();
    run_client(&mut tx, t0, t0);
    let ok = response(200, "INVITE", 314159);
    tx.handle_response(t0, &ok).unwrap();
    assert_eq!(tx.state(), State::Accepted);
    tx.handle_response(t0 + Duration::from_secs(1), &ok)
        .unwrap();
    let events: Vec<_> = std::iter::from_fn(|| tx.poll_output()).collect();
    assert_eq!(
        events.len(),
        2,
        "both 2xx reach the TU (it ACKs them), no ACK from the transaction"
    );
    assert_eq!(
        tx.poll_timeout(),
        Some(t0 + Duration::from_secs(32)),
        "Timer M"
    );
}

#[test]
fn server_invite_retransmits_error_until_ack_then_lingers() {
    let t0 = Instant::now();
    let mut st = ServerTransaction::new(INVITE, Transport::Unreliable, Timers::default()).unwrap();
    assert_eq!(st.state(), State::Proceeding);
    st.send_response(t0, response(180, "INVITE", 314159))
        .unwrap();
    // A retransmitted INVITE gets the last provisional response again.
    st.handle_request(t0, INVITE).unwrap();
    let outs: Vec<_> = std::iter::from_fn(|| st.poll_output()).collect();
    assert_eq!(outs.len(), 2);
    st.send_response(t0, response(486, "INVITE", 314159))
        .unwrap();
    assert_eq!(st.state(), State::Completed);
    assert!(
        matches!(st.poll_output(), Some(Output::Transmit(_))),
        "the 486 itself"
    );
    let mut times = Vec::new();
    let until = t0 + Duration::from_secs(10);
    while let Some(at) = st.poll_timeout().filter(|a| *a <= until) {
        st.handle_timeout(at);
        while let Some(o) = st.poll_output() {
            if matches!(o, Output::Transmit(_)) {
                times.push((at - t0).as_millis() as u64);
            }
        }
    }
    // Timer G: 0.5, 1.5, 3.5, 7.5 s (doubling, capped at T2)...
    assert_eq!(times, vec![500, 1500, 3500, 7500]);
    let ack = build_ack(
        INVITE,
        &SipMessage::parse(
            &response(486, "INVITE", 314159),
            Framing::Datagram,
            &ParseLimits::default(),
        )
        .unwrap(),
    )
    .unwrap();
    st.handle_request(until, &ack).unwrap();
    assert_eq!(st.state(), State::Confirmed);
    assert_eq!(
        st.poll_timeout(),
        Some(until + Duration::from_secs(5)),
        "Timer I = T4"
    );
    st.handle_timeout(until + Duration::from_secs(5));
    assert_eq!(st.poll_output(), Some(Output::Terminated));
}

#[test]
fn server_invite_without_ack_times_out_at_timer_h() {
    let t0 = Instant::now();
    let mut st = ServerTransaction::new(INVITE, Transport::Reliable, Timers::default()).unwrap();
    st.send_response(t0, response(603, "INVITE", 314159))
        .unwrap();
    assert_eq!(
        st.poll_output().map(|o| matches!(o, Output::Transmit(_))),
        Some(true)
    );
    assert_eq!(
        st.poll_timeout(),
        Some(t0 + Duration::from_secs(32)),
        "reliable: no G, only H"
    );
    st.handle_timeout(t0 + Duration::from_secs(32));
    assert_eq!(st.poll_output(), Some(Output::Tu(TuEvent::Timeout)));
    assert_eq!(st.poll_output(), Some(Output::Terminated));
}

#[test]
fn server_non_invite_absorbs_retransmissions_and_resends_the_final_response() {
    let t0 = Instant::now();
    let mut st = ServerTransaction::new(OPTIONS, Transport::Unreliable, Timers::default()).unwrap();
    st.handle_request(t0, OPTIONS).unwrap();
    assert_eq!(st.poll_output(), None, "Trying: nothing to resend");
    let ok = response(200, "OPTIONS", 1);
    st.send_response(t0, ok.clone()).unwrap();
    assert_eq!(st.poll_output(), Some(Output::Transmit(ok.clone())));
    st.handle_request(t0 + Duration::from_secs(1), OPTIONS)
        .unwrap();
    assert_eq!(st.poll_output(), Some(Output::Transmit(ok)));
    assert_eq!(
        st.poll_timeout(),
        Some(t0 + Duration::from_secs(32)),
        "Timer J = 64*T1"
    );
    // Over a reliable transport J is zero: done at once.
    let mut st = ServerTransaction::new(OPTIONS, Transport::Reliable, Timers::default()).unwrap();
    st.send_response(t0, response(200, "OPTIONS", 1)).unwrap();
    let outs: Vec<_> = std::iter::from_fn(|| st.poll_output()).collect();
    assert_eq!(outs.last(), Some(&Output::Terminated));
}
