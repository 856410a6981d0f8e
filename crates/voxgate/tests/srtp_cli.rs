//! `voxgate srtp decrypt|encrypt` on real captures: packets protected by libsrtp (the system
//! libsrtp2), written as pcap and pcapng, decrypted by the real binary.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use etherparse::PacketBuilder;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapReader, PcapWriter};
use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionBlock;
use pcap_file::pcapng::{Block, PcapNgReader, PcapNgWriter};
use pcap_file::DataLink;
use voxgate_libsrtp_oracle::{Direction, LibSrtp};
use voxgate_rtp::SrtpProfile;

const KEY_A: &str = "PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR"; // RFC 4568 §4 example, 30 bytes
const KEY_B: &str = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVowMTIzNDU2Nzg5YWJjZGVmZ2g="; // 44 bytes

fn b64(s: &str) -> Vec<u8> {
    // Tiny decoder for the two constants above (standard alphabet, no padding needed).
    let alpha = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in s.bytes().filter(|c| *c != b'=') {
        bits = bits << 6 | alpha.iter().position(|a| *a == c).unwrap() as u32;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    out
}

fn rtp(seq: u16, ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, 0x00];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(seq as u32 * 160).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend((0..160u32).map(|i| (i * 7 + seq as u32) as u8));
    p
}

fn rtcp_rr(ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, 201, 0, 1];
    p.extend_from_slice(&ssrc.to_be_bytes());
    p
}

fn frame(payload: &[u8], v6: bool, sport: u16) -> Vec<u8> {
    let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
    let b = if v6 {
        let mut s = [0u8; 16];
        s[15] = 1;
        let mut d = [0u8; 16];
        d[15] = 2;
        b.ipv6(s, d, 64).udp(sport, 40000)
    } else {
        b.ipv4([127, 0, 0, 1], [127, 0, 0, 2], 64).udp(sport, 40000)
    };
    let mut out = Vec::new();
    b.write(&mut out, payload).unwrap();
    out
}

/// The frames of a small call: two SRTP streams with different suites (one over IPv6), their
/// SRTCP, and a SIP message that must pass through untouched. Returns (protected, plain).
fn call() -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let mut a = LibSrtp::new(
        SrtpProfile::AesCm128HmacSha1_80,
        &b64(KEY_A),
        None,
        Direction::Sender,
    )
    .unwrap();
    let mut b = LibSrtp::new(
        SrtpProfile::AeadAes256Gcm,
        &b64(KEY_B),
        None,
        Direction::Sender,
    )
    .unwrap();
    let mut prot = Vec::new();
    let mut plain = Vec::new();
    let sip = b"OPTIONS sip:bob@b.example SIP/2.0\r\nContent-Length: 0\r\n\r\n".to_vec();
    prot.push(frame(&sip, false, 5060));
    plain.push(frame(&sip, false, 5060));
    // Start near the wrap so the ROC rolls over inside the capture.
    for i in 0..300u16 {
        let seq = 65400u16.wrapping_add(i);
        let pa = rtp(seq, 0xaaaa_0001);
        let mut ea = pa.clone();
        a.protect_rtp(&mut ea).unwrap();
        prot.push(frame(&ea, false, 4000));
        plain.push(frame(&pa, false, 4000));
        let pb = rtp(seq, 0xbbbb_0002);
        let mut eb = pb.clone();
        b.protect_rtp(&mut eb).unwrap();
        prot.push(frame(&eb, true, 6000));
        plain.push(frame(&pb, true, 6000));
        if i % 100 == 0 {
            for (s, ssrc, sport, v6) in [
                (&mut a, 0xaaaa_0001u32, 4001, false),
                (&mut b, 0xbbbb_0002, 6001, true),
            ] {
                let pr = rtcp_rr(ssrc);
                let mut er = pr.clone();
                s.protect_rtcp(&mut er).unwrap();
                prot.push(frame(&er, v6, sport));
                plain.push(frame(&pr, v6, sport));
            }
        }
    }
    (prot, plain)
}

fn write_pcap(path: &Path, frames: &[Vec<u8>]) {
    let f = std::fs::File::create(path).unwrap();
    let header = PcapHeader {
        datalink: DataLink::ETHERNET,
        ..Default::default()
    };
    let mut w = PcapWriter::with_header(f, header).unwrap();
    for (i, fr) in frames.iter().enumerate() {
        let ts = Duration::from_millis(20 * i as u64);
        w.write_packet(&PcapPacket::new(ts, fr.len() as u32, fr))
            .unwrap();
    }
}

fn write_pcapng(path: &Path, frames: &[Vec<u8>]) {
    let f = std::fs::File::create(path).unwrap();
    let mut w = PcapNgWriter::new(f).unwrap();
    w.write_pcapng_block(InterfaceDescriptionBlock::new(DataLink::ETHERNET, 65535))
        .unwrap();
    for (i, fr) in frames.iter().enumerate() {
        w.write_pcapng_block(EnhancedPacketBlock {
            interface_id: 0,
            timestamp: Duration::from_millis(20 * i as u64),
            original_len: fr.len() as u32,
            data: fr.as_slice().into(),
            options: vec![],
        })
        .unwrap();
    }
}

fn read_frames(path: &Path) -> Vec<Vec<u8>> {
    let bytes = std::fs::read(path).unwrap();
    let mut out = Vec::new();
    if bytes.starts_with(&[0x0a, 0x0d, 0x0d, 0x0a]) {
        let mut r = PcapNgReader::new(&bytes[..]).unwrap();
        while let Some(b) = r.next_block() {
            if let Block::EnhancedPacket(p) = b.unwrap() {
                assert_eq!(p.original_len as usize, p.data.len());
                out.push(p.data.to_vec());
            }
        }
    } else {
        let mut r = PcapReader::new(&bytes[..]).unwrap();
        while let Some(p) = r.next_packet() {
            let p = p.unwrap();
            assert_eq!(p.orig_len as usize, p.data.len());
            out.push(p.data.to_vec());
        }
    }
    out
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("voxgate-srtp-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn voxgate(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_voxgate"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn crypto_a() -> String {
    format!("AES_CM_128_HMAC_SHA1_80 inline:{KEY_A}")
}
fn crypto_b() -> String {
    format!("a=crypto:2 AEAD_AES_256_GCM inline:{KEY_B}")
}

#[test]
fn decrypts_a_libsrtp_capture_pcap_and_pcapng() {
    let (prot, plain) = call();
    for (ext, writer) in [
        ("pcap", write_pcap as fn(&Path, &[Vec<u8>])),
        ("pcapng", write_pcapng),
    ] {
        let input = tmp(&format!("call.{ext}"));
        let output = tmp(&format!("plain.{ext}"));
        writer(&input, &prot);
        let (a, b) = (crypto_b(), crypto_a()); // order must not matter
        let (code, stdout, stderr) = voxgate(&[
            "srtp",
            "decrypt",
            "--crypto",
            &a,
            "--crypto",
            &b,
            "--in",
            input.to_str().unwrap(),
            "--out",
            output.to_str().unwrap(),
            "--json",
        ]);
        assert_eq!(code, 0, "{stderr}");
        let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        let streams = report["streams"].as_array().unwrap();
        let find = |ssrc: u32, kind: &str| {
            streams
                .iter()
                .find(|s| s["ssrc"] == ssrc && s["kind"] == kind)
                .unwrap_or_else(|| panic!("no {kind} stream {ssrc:#x} in {stdout}"))
        };
        let a = find(0xaaaa_0001, "RTP");
        assert_eq!(
            (a["processed"].as_u64(), a["key"].as_u64()),
            (Some(300), Some(2)),
            "{stdout}"
        );
        let b = find(0xbbbb_0002, "RTP");
        assert_eq!(
            (b["processed"].as_u64(), b["key"].as_u64()),
            (Some(300), Some(1))
        );
        assert_eq!(find(0xaaaa_0001, "RTCP")["processed"], 3);
        assert_eq!(find(0xbbbb_0002, "RTCP")["processed"], 3);
        for s in streams {
            assert_eq!(s["auth_failures"], 0);
            assert_eq!(s["replays"], 0);
        }
        assert_eq!(report["not_rtp"], 1, "the SIP message");
        let got = read_frames(&output);
        assert_eq!(got.len(), plain.len());
        for (i, (g, p)) in got.iter().zip(&plain).enumerate() {
            assert_eq!(
                g, p,
                "{ext} frame {i} differs from the plaintext frame (headers, checksums)"
            );
        }
    }
}

#[test]
fn keys_from_a_file() {
    let (prot, plain) = call();
    let input = tmp("keyfile-in.pcap");
    let output = tmp("keyfile-out.pcap");
    let keys = tmp("keys.txt");
    write_pcap(&input, &prot);
    std::fs::write(
        &keys,
        format!("# keys of the call\n{}\n\n{}\n", crypto_a(), crypto_b()),
    )
    .unwrap();
    let (code, stdout, stderr) = voxgate(&[
        "srtp",
        "decrypt",
        "--crypto-file",
        keys.to_str().unwrap(),
        "--in",
        input.to_str().unwrap(),
        "--out",
        output.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(read_frames(&output), plain);
    std::fs::write(&keys, "# nothing\n").unwrap();
    let (code, _, stderr) = voxgate(&[
        "srtp",
        "decrypt",
        "--crypto-file",
        keys.to_str().unwrap(),
        "--in",
        input.to_str().unwrap(),
        "--out",
        output.to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(stderr.contains("no key given"), "{stderr}");
}

#[test]
fn human_report_and_wrong_key() {
    let (prot, _) = call();
    let input = tmp("wrongkey.pcap");
    let output = tmp("wrongkey-out.pcap");
    write_pcap(&input, &prot);
    let wrong = "AES_CM_128_HMAC_SHA1_80 inline:QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVowMTIz";
    let (code, stdout, stderr) = voxgate(&[
        "srtp",
        "decrypt",
        "--crypto",
        wrong,
        "--in",
        input.to_str().unwrap(),
        "--out",
        output.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "nothing decrypted is exit 2: {stdout}{stderr}");
    assert!(stdout.contains("auth-fail"), "{stdout}");
    assert!(stdout.contains("0xaaaa0001"), "{stdout}");
    assert!(
        !stdout.contains("QUJDREVG") && !stderr.contains("QUJDREVG"),
        "key printed"
    );
    // Output equals input, frame for frame.
    assert_eq!(read_frames(&output), prot);
}

#[test]
fn encrypt_then_decrypt_and_libsrtp_reads_our_srtp() {
    let (_, plain) = call();
    let input = tmp("plain-in.pcap");
    let enc = tmp("enc.pcap");
    let dec = tmp("dec.pcap");
    write_pcap(&input, &plain);
    let pin_b = format!("ssrc=0xbbbb0002 {}", crypto_b());
    let (code, stdout, stderr) = voxgate(&[
        "srtp",
        "encrypt",
        "--crypto",
        &crypto_a(),
        "--crypto",
        &pin_b,
        "--in",
        input.to_str().unwrap(),
        "--out",
        enc.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let encrypted = read_frames(&enc);
    assert_ne!(encrypted, plain);
    // libsrtp unprotects what voxgate encrypted (stream A).
    let mut rx = LibSrtp::new(
        SrtpProfile::AesCm128HmacSha1_80,
        &b64(KEY_A),
        None,
        Direction::Receiver,
    )
    .unwrap();
    let mut n = 0;
    for (e, p) in encrypted.iter().zip(&plain) {
        // IPv4 frames of stream A: UDP source port 4000 at bytes 34..36.
        if e.len() > 42 && e[12..14] == [0x08, 0x00] && e[34..36] == 4000u16.to_be_bytes() {
            let mut pkt = e[42..].to_vec();
            rx.unprotect_rtp(&mut pkt).unwrap();
            assert_eq!(&pkt[..], &p[42..]);
            n += 1;
        }
    }
    assert_eq!(n, 300);
    let (code, _, stderr) = voxgate(&[
        "srtp",
        "decrypt",
        "--crypto",
        &crypto_a(),
        "--crypto",
        &crypto_b(),
        "--in",
        enc.to_str().unwrap(),
        "--out",
        dec.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(read_frames(&dec), plain);
}

#[test]
fn bad_inputs_give_clear_errors() {
    let junk = tmp("junk.pcap");
    std::fs::write(&junk, b"this is not a capture").unwrap();
    let out = tmp("junk-out.pcap");
    let (code, _, stderr) = voxgate(&[
        "srtp",
        "decrypt",
        "--crypto",
        &crypto_a(),
        "--in",
        junk.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(stderr.contains("not a pcap or pcapng"), "{stderr}");

    for (spec, want) in [
        ("AES_CM_128_HMAC_SHA1_80 inline:!!!!", "base64"),
        ("AES_CM_128_HMAC_SHA1_80 inline:AAAA", "wrong key length"),
        ("FOO_BAR inline:AAAA", "unknown crypto suite"),
        (
            "AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR KDR=3",
            "unsupported session parameter",
        ),
    ] {
        let (code, _, stderr) = voxgate(&[
            "srtp",
            "decrypt",
            "--crypto",
            spec,
            "--in",
            junk.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]);
        assert_eq!(code, 1, "{spec}");
        assert!(stderr.contains(want), "{spec}: {stderr}");
    }

    // A capture cut in the middle of a packet: the frames before it are written, and the
    // error names the problem.
    let (prot, plain) = call();
    let cut = tmp("cut.pcap");
    write_pcap(&cut, &prot);
    let bytes = std::fs::read(&cut).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() - 50]).unwrap();
    let (code, _, stderr) = voxgate(&[
        "srtp",
        "decrypt",
        "--crypto",
        &crypto_a(),
        "--crypto",
        &crypto_b(),
        "--in",
        cut.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(stderr.contains("corrupt capture"), "{stderr}");
    let got = read_frames(&out);
    assert_eq!(got.len(), plain.len() - 1);
    assert_eq!(got[..], plain[..plain.len() - 1]);
}
