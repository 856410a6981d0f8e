//! Golden vectors of the escrow wire format: the bytes in docs/escrow-protocol.md, decoded and
//! re-encoded. A change of the encoding breaks these on purpose.

use voxgate_escrow::wire::{
    Addr, Direction, ErrorReply, KeyUpdate, KeyUpdateReply, Message, Secret, SessionEnd,
    SessionEndReply, StreamKey,
};
use zeroize::Zeroizing;

fn unhex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| c.is_ascii_hexdigit()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn examples() -> Vec<(&'static str, Message)> {
    let key: Vec<u8> = (0u8..30).collect();
    vec![
        (
            "key_update",
            Message::KeyUpdate(KeyUpdate {
                request_id: 1,
                time_ms: 1_764_028_800_000,
                call_id: "c1@gw1.a.example".into(),
                session_id: None,
                streams: vec![StreamKey {
                    direction: Direction::Send,
                    src: Addr("192.0.2.10:40000".parse().unwrap()),
                    dst: Addr("198.51.100.7:50000".parse().unwrap()),
                    ssrc: Some(0xdead_beef),
                    suite: "AES_CM_128_HMAC_SHA1_80".into(),
                    master: Secret(Zeroizing::new(key)),
                    mki: None,
                }],
            }),
        ),
        (
            "key_update_reply",
            Message::KeyUpdateReply(KeyUpdateReply {
                request_id: 1,
                session_id: 0x8f3a_5c21_09d4_e76b,
            }),
        ),
        (
            "session_end",
            Message::SessionEnd(SessionEnd {
                request_id: 2,
                time_ms: 1_764_028_860_000,
                session_id: 0x8f3a_5c21_09d4_e76b,
            }),
        ),
        (
            "session_end_reply",
            Message::SessionEndReply(SessionEndReply {
                request_id: 2,
                session_id: 0x8f3a_5c21_09d4_e76b,
            }),
        ),
        (
            "error",
            Message::Error(ErrorReply {
                request_id: 3,
                code: 409,
                reason: "request id reused".into(),
            }),
        ),
    ]
}

/// The frames of docs/escrow-protocol.md, as hex.
const GOLDEN: &[(&str, &str)] = &[
    ("key_update", "010100000078a40001011b0000019ab84f5c0002706331406777312e612e6578616d706c650481a60000018244c000020a199c40028244c633640719c350031adeadbeef04774145535f434d5f3132385f484d41435f534841315f383005581e000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d"),
    ("key_update_reply", "01020000000da20001011b8f3a5c2109d4e76b"),
    ("session_end", "010300000017a30002011b0000019ab8504660021b8f3a5c2109d4e76b"),
    ("session_end_reply", "01040000000da20002011b8f3a5c2109d4e76b"),
    ("error", "017f0000001aa300030119019902717265717565737420696420726575736564"),
];

#[test]
#[ignore = "prints the vectors for docs/escrow-protocol.md"]
fn print_vectors() {
    for (name, m) in examples() {
        println!("{name} {}", hex(&m.encode()));
    }
}

#[test]
fn golden_vectors_decode_and_reencode() {
    let ex = examples();
    assert_eq!(GOLDEN.len(), ex.len());
    for ((name, want), (ename, m)) in GOLDEN.iter().zip(ex) {
        assert_eq!(*name, ename);
        let bytes = unhex(want);
        assert_eq!(hex(&m.encode()), hex(&bytes), "{name}: encoding changed");
        let (back, n) = Message::decode(&bytes).expect(name);
        assert_eq!(n, bytes.len());
        assert_eq!(back, m, "{name}");
    }
}
