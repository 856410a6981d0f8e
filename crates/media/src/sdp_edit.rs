//! Reading and rewriting the parts of an SDP body (RFC 4566) that media anchoring touches:
//! the connection address (`c=`, session or media level), the media port, RTCP (`a=rtcp`,
//! RFC 3605; `a=rtcp-mux`, RFC 5761), SDES keys (`a=crypto`, RFC 4568), SSRCs (`a=ssrc`,
//! RFC 5576), the session_ID header extension (`a=extmap`, RFC 8285) and ICE attributes
//! (RFC 8839), which an anchor removes since the media no longer flows end to end.

use std::net::{IpAddr, SocketAddr};

use voxgate_escrow::carrier::RTP_EXTENSION_URI;
use voxgate_sip::sdp::{Line, Media, SessionDescription};

/// ICE attributes: meaningless once media is anchored.
pub const ICE: [&str; 6] = [
    "candidate",
    "ice-ufrag",
    "ice-pwd",
    "ice-options",
    "end-of-candidates",
    "remote-candidates",
];

/// The address of a `c=` value (`IN IP4 192.0.2.1`, `IN IP6 ::1`, multicast TTLs ignored).
pub fn parse_connection(value: &str) -> Option<IpAddr> {
    let mut f = value.split_whitespace();
    if f.next()? != "IN" {
        return None;
    }
    let family = f.next()?;
    let addr = f.next()?.split('/').next()?;
    let ip: IpAddr = addr.parse().ok()?;
    match (family, ip) {
        ("IP4", IpAddr::V4(_)) | ("IP6", IpAddr::V6(_)) => Some(ip),
        _ => None,
    }
}

/// The `c=` value for an address.
pub fn connection_value(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(a) => format!("IN IP4 {a}"),
        IpAddr::V6(a) => format!("IN IP6 {a}"),
    }
}

/// The connection address of a media description: its own `c=`, else the session's.
pub fn media_address(sd: &SessionDescription, m: &Media) -> Option<IpAddr> {
    m.lines
        .iter()
        .chain(sd.session.iter())
        .find(|l| l.kind == 'c')
        .and_then(|l| parse_connection(&l.value))
}

/// What an anchor needs of one media description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaInfo {
    /// Where the writer receives RTP; `None` on hold (`0.0.0.0`) or when unusable.
    pub rtp: Option<SocketAddr>,
    /// Where it receives RTCP (`a=rtcp`, else the RTP address when muxed, else port + 1).
    pub rtcp: Option<SocketAddr>,
    pub rtcp_mux: bool,
    /// The id of the session_ID extension (`a=extmap:<id> urn:voxgate:escrow:session-id`).
    pub session_id_ext: Option<u8>,
    /// The first `a=ssrc` of the description.
    pub ssrc: Option<u32>,
}

/// Reads a media description (`port != 0` assumed by the caller).
pub fn media_info(sd: &SessionDescription, m: &Media) -> MediaInfo {
    let ip = media_address(sd, m).filter(|ip| !ip.is_unspecified());
    let rtp = ip.map(|ip| SocketAddr::new(ip, m.port));
    let rtcp_mux = m.attributes("rtcp-mux").next().is_some();
    let rtcp = match m.attributes("rtcp").next() {
        Some(v) => {
            let mut f = v.split_whitespace();
            let port = f.next().and_then(|p| p.parse::<u16>().ok());
            let rest: Vec<&str> = f.collect();
            let addr = if rest.len() >= 3 {
                parse_connection(&rest.join(" "))
            } else {
                ip
            };
            match (addr, port) {
                (Some(a), Some(p)) if !a.is_unspecified() => Some(SocketAddr::new(a, p)),
                _ => None,
            }
        }
        None if rtcp_mux => rtp,
        None => ip.map(|ip| SocketAddr::new(ip, m.port.wrapping_add(1))),
    };
    let session_id_ext = m.attributes("extmap").find_map(|v| {
        let mut f = v.split_whitespace();
        let id = f.next()?.split('/').next()?.parse::<u8>().ok()?;
        (f.next()? == RTP_EXTENSION_URI && (1..=14).contains(&id)).then_some(id)
    });
    let ssrc = m
        .attributes("ssrc")
        .next()
        .and_then(|v| v.split_whitespace().next()?.parse::<u32>().ok());
    MediaInfo {
        rtp,
        rtcp,
        rtcp_mux,
        session_id_ext,
        ssrc,
    }
}

/// Points a media description at `ip`:`port` (RTCP at `port + 1` unless muxed) and removes
/// its ICE attributes. The session-level `c=` is set by [`set_session_address`].
pub fn anchor_media(m: &mut Media, ip: IpAddr, port: u16) {
    m.port = port;
    let rtcp = format!("rtcp:{} {}", port.wrapping_add(1), connection_value(ip));
    m.lines.retain(|l| {
        if l.kind == 'c' {
            return false;
        }
        if l.kind != 'a' {
            return true;
        }
        let name = l.value.split(':').next().unwrap_or_default();
        !ICE.contains(&name)
    });
    for l in m.lines.iter_mut() {
        if l.kind == 'a' && (l.value == "rtcp" || l.value.starts_with("rtcp:")) {
            l.value = rtcp.clone();
        }
    }
}

/// Sets the session-level `c=` (adding it if missing) and the `o=` address.
pub fn set_session_address(sd: &mut SessionDescription, ip: IpAddr) {
    let value = connection_value(ip);
    let mut found = false;
    for l in sd.session.iter_mut() {
        if l.kind == 'c' {
            l.value = value.clone();
            found = true;
        }
        if l.kind == 'o' {
            // o=<user> <sess-id> <version> IN IP4 <addr>: keep identity and version.
            let f: Vec<&str> = l.value.split_whitespace().collect();
            if f.len() == 6 {
                l.value = format!("{} {} {} {value}", f[0], f[1], f[2]);
            }
        }
    }
    if !found {
        // RFC 4566 order: c= after s=, i=, u=, e=, p=.
        let at = sd
            .session
            .iter()
            .position(|l| matches!(l.kind, 'b' | 't' | 'r' | 'z' | 'k' | 'a'))
            .unwrap_or(sd.session.len());
        sd.session.insert(at, Line { kind: 'c', value });
    }
}

/// Removes every `a=<name>` line of a media description.
pub fn remove_attribute(m: &mut Media, name: &str) {
    m.lines.retain(|l| {
        l.kind != 'a' || {
            let n = l.value.split(':').next().unwrap_or_default();
            n != name
        }
    });
}

/// Adds an `a=` line.
pub fn add_attribute(m: &mut Media, value: String) {
    m.lines.push(Line { kind: 'a', value });
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=alice 42 7 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 40000 RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\na=extmap:3 urn:voxgate:escrow:session-id\r\na=ssrc:305419896 cname:gw\r\na=candidate:1 1 UDP 1 192.0.2.10 40000 typ host\r\na=ice-ufrag:abcd\r\nm=video 0 RTP/AVP 96\r\n";

    #[test]
    fn reads_what_an_anchor_needs() {
        let sd = SessionDescription::parse(OFFER.as_bytes()).unwrap();
        let i = media_info(&sd, &sd.media[0]);
        assert_eq!(i.rtp, Some("192.0.2.10:40000".parse().unwrap()));
        assert_eq!(i.rtcp, Some("192.0.2.10:40001".parse().unwrap()));
        assert!(!i.rtcp_mux);
        assert_eq!(i.session_id_ext, Some(3));
        assert_eq!(i.ssrc, Some(305_419_896));
        // Media-level c= wins; a=rtcp with an address; rtcp-mux; hold.
        let other = OFFER.replace(
            "a=rtpmap:0 PCMU/8000\r\n",
            "c=IN IP4 198.51.100.1\r\na=rtpmap:0 PCMU/8000\r\na=rtcp:41000 IN IP4 198.51.100.2\r\n",
        );
        let sd = SessionDescription::parse(other.as_bytes()).unwrap();
        let i = media_info(&sd, &sd.media[0]);
        assert_eq!(i.rtp, Some("198.51.100.1:40000".parse().unwrap()));
        assert_eq!(i.rtcp, Some("198.51.100.2:41000".parse().unwrap()));
        let mux = OFFER.replace("a=rtpmap:0 PCMU/8000\r\n", "a=rtcp-mux\r\n");
        let sd = SessionDescription::parse(mux.as_bytes()).unwrap();
        let i = media_info(&sd, &sd.media[0]);
        assert!(i.rtcp_mux);
        assert_eq!(i.rtcp, i.rtp);
        let hold = OFFER.replace("c=IN IP4 192.0.2.10", "c=IN IP4 0.0.0.0");
        let sd = SessionDescription::parse(hold.as_bytes()).unwrap();
        assert_eq!(media_info(&sd, &sd.media[0]).rtp, None);
        assert_eq!(parse_connection("IN IP4 ::1"), None);
        assert_eq!(parse_connection("IN IP6 ::1"), Some("::1".parse().unwrap()));
    }

    #[test]
    fn anchoring_rewrites_addresses_and_drops_ice() {
        let mut sd = SessionDescription::parse(OFFER.as_bytes()).unwrap();
        let relay: IpAddr = "203.0.113.5".parse().unwrap();
        set_session_address(&mut sd, relay);
        anchor_media(&mut sd.media[0], relay, 20_000);
        let out = String::from_utf8(sd.to_bytes()).unwrap();
        assert!(out.contains("o=alice 42 7 IN IP4 203.0.113.5\r\n"), "{out}");
        assert!(out.contains("c=IN IP4 203.0.113.5\r\n"));
        assert!(out.contains("m=audio 20000 RTP/SAVP 0\r\n"));
        assert!(out.contains("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:"));
        assert!(out.contains("a=extmap:3 urn:voxgate:escrow:session-id"));
        assert!(!out.contains("candidate") && !out.contains("ice-ufrag"));
        assert!(out.contains("m=video 0 RTP/AVP 96"));
        let again = SessionDescription::parse(out.as_bytes()).unwrap();
        assert_eq!(
            media_info(&again, &again.media[0]).rtp,
            Some("203.0.113.5:20000".parse().unwrap())
        );
    }
}
