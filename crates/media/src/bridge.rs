//! The voice gateway's SRTP bridge, sans-I/O.
//!
//! A voice gateway is the encrypting node of the seed design: inside, its users' phones speak
//! to it (SRTP or, where the enterprise allows it, plain RTP); outside, toward its
//! service-provider gateway (SPG), every call is SRTP with keys the gateway itself makes, one
//! per direction (RFC 4568 SDES), and those are the keys it escrows. Media is terminated and
//! re-encrypted here, so that (1) the escrowed keys are exactly the keys used on the provider's
//! network, and (2) the session_ID carrier can be added to every datagram: in the IPv4 header
//! options, or as an RFC 8285 RTP header extension, which must be written before the SRTP
//! authentication tag is computed, i.e. by the node that encrypts.
//!
//! **Control plane** ([`BridgeAnchor`], a [`MediaAnchor`] behind the gateway's proxy): every SDP
//! crossing the gateway between a user and the provider is replaced. An offer from a user
//! becomes an offer to the provider with fresh gateway keys for the same suites (and tags);
//! the provider's answer picks one, and the user's offer is answered with another fresh key
//! for the same suite. An offer from the provider becomes an offer to the user (SRTP or plain
//! under the inside policy) and so on. When both outside keys are known and the SPG has seen
//! the answer (at once for an answer from outside; at the ACK for an answer we sent outside),
//! an [`EscrowRequest::KeyUpdate`] is emitted; the driver's escrow client answers with a
//! session_ID, given to the data plane with [`BridgeCommand::Tag`].
//!
//! **Data plane** ([`Bridge`]): per datagram, in place: the source must be the leg's peer; the
//! packet is decrypted with the sender's key, re-encrypted with the next leg's key; outward
//! packets get the gateway's SSRC and the session_ID carrier, and are held (dropped) until the
//! call is escrowed. RTCP is not bridged (the legs are independent RTP sessions).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use voxgate_escrow::carrier::{ipv4_options, rtp_extension_block, RTP_EXTENSION_URI};
use voxgate_escrow::wire::{Addr, Direction, Secret, StreamKey};
use voxgate_rtp::{CryptoAttribute, SrtpProfile, SrtpSession};
use voxgate_sip::anchor::{MediaAnchor, Refusal, SdpContext, SdpKind, Side};
use voxgate_sip::sdp::{EncryptionPolicy, Line, Media, SessionDescription};
use zeroize::Zeroizing;

use crate::ports::PortPool;
use crate::sdp_edit::{connection_value, media_info};

/// How the session_ID travels with each outward datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carrier {
    /// IPv4 option type 158 (the seed paper's design).
    Ipv4Option,
    /// An RFC 8285 header extension with this id (negotiated with `a=extmap`).
    RtpExtension { id: u8 },
}

/// Bridge settings.
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    /// Address of the inside media ports (in SDP to users).
    pub inside_address: IpAddr,
    /// Address of the outside media ports (in SDP to the provider; the escrowed 5-tuples).
    pub outside_address: IpAddr,
    pub first_port: u16,
    pub port_count: u16,
    pub carrier: Carrier,
    /// What users get offered and must offer (the enterprise's policy).
    pub inside_policy: EncryptionPolicy,
    /// The trusted-peer name of the SPG: SDP from it is "outside".
    pub provider: String,
    /// The RTCP CNAME written in `a=ssrc`.
    pub cname: String,
}

/// One direction of a bridged call at the gateway.
pub struct BridgeLeg {
    /// The only source accepted.
    pub peer: Option<SocketAddr>,
    pub out_port: u16,
    pub dst: Option<SocketAddr>,
    /// Decrypts what arrives (`None`: plain RTP).
    pub rx: Option<SrtpSession>,
    /// Encrypts what leaves (`None`: plain RTP).
    pub tx: Option<SrtpSession>,
    /// Leaves toward the provider: rewritten SSRC, session_ID carrier, held until escrowed.
    pub outward: bool,
    pub ssrc_out: Option<u32>,
    /// The keys did not change since the port's previous leg: keep its contexts (so the
    /// sender's index goes on and no (key, SSRC, index) is ever used twice, and the replay
    /// window is not reset), and ignore `rx`/`tx` here.
    pub keep_rx: bool,
    pub keep_tx: bool,
}

impl std::fmt::Debug for BridgeLeg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BridgeLeg")
            .field("peer", &self.peer)
            .field("out_port", &self.out_port)
            .field("dst", &self.dst)
            .field("rx", &self.rx.is_some())
            .field("tx", &self.tx.is_some())
            .field("outward", &self.outward)
            .finish_non_exhaustive()
    }
}

/// What the data plane must learn.
#[derive(Debug)]
pub enum BridgeCommand {
    Leg {
        port: u16,
        leg: Option<Box<BridgeLeg>>,
    },
    /// The session_ID of the call whose outside port is `port` (`None`: not escrowed).
    Tag { port: u16, session_id: Option<u64> },
}

/// What the escrow client must do.
#[derive(Debug)]
pub enum EscrowRequest {
    /// Escrow (or rekey) the call's outside keys; on success, tag the datagrams leaving by
    /// `outside_port`.
    KeyUpdate {
        call_id: String,
        outside_port: u16,
        streams: Vec<StreamKey>,
    },
    /// The call is over: `session_end`.
    End { call_id: String },
}

pub type BridgeSink = Box<dyn FnMut(BridgeCommand) + Send>;
pub type EscrowSink = Box<dyn FnMut(EscrowRequest) + Send>;

/// The keys of the four contexts of a call's legs (inside rx/tx, outside rx/tx).
type LegKeys = [Option<CryptoAttribute>; 4];

/// Keys and addresses of one bridged call.
#[derive(Clone)]
struct Call {
    inside_port: u16,
    outside_port: u16,
    inside_peer: Option<SocketAddr>,
    outside_peer: Option<SocketAddr>,
    far_ssrc: Option<u32>,
    ssrc_out: u32,
    /// The offer in progress: whether it came from inside, the offerer's keys, its
    /// transport, and the keys we offered on the other leg.
    offer_from_inside: bool,
    offer_keys: Vec<CryptoAttribute>,
    offer_proto: String,
    offered: Vec<CryptoAttribute>,
    inside_rx: Option<CryptoAttribute>,
    inside_tx: Option<CryptoAttribute>,
    outside_rx: Option<CryptoAttribute>,
    outside_tx: Option<CryptoAttribute>,
    /// Waiting for the ACK before escrowing (we sent the answer outside).
    escrow_at_ack: bool,
    /// The keys last handed to the data plane, and last escrowed (with the relay's address).
    pushed: Option<LegKeys>,
    escrowed: Option<(CryptoAttribute, CryptoAttribute, SocketAddr)>,
    /// The last answer refused the audio stream: no media flows.
    refused: bool,
    /// `o=` versions of the SDP we write on each leg (inside, outside).
    versions: [u64; 2],
    session: u64,
    /// The last body rewritten per direction, and what it became (retransmissions of a 2xx
    /// and identical provisional/final answers are not renegotiated).
    last: [Option<(Vec<u8>, Vec<u8>)>; 2],
}

/// The gateway's [`MediaAnchor`].
pub struct BridgeAnchor {
    cfg: BridgeConfig,
    pool: PortPool,
    calls: HashMap<String, Call>,
    media: BridgeSink,
    escrow: EscrowSink,
    rng: SystemRandom,
}

impl std::fmt::Debug for BridgeAnchor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BridgeAnchor")
            .field("cfg", &self.cfg)
            .field("calls", &self.calls.len())
            .finish_non_exhaustive()
    }
}

fn usable_keys(m: &Media) -> Vec<CryptoAttribute> {
    m.attributes("crypto")
        .filter_map(|v| CryptoAttribute::parse(v).ok())
        .filter(|a| a.tag.is_some() && a.to_policy().is_ok())
        .collect()
}

fn session_of(k: &CryptoAttribute) -> Option<SrtpSession> {
    SrtpSession::new(k.to_policy().ok()?).ok()
}

/// The escrow record of a key: suite name, master key || salt, MKI.
fn stream_key(
    direction: Direction,
    src: SocketAddr,
    dst: SocketAddr,
    ssrc: Option<u32>,
    k: &CryptoAttribute,
) -> Option<StreamKey> {
    let p = k.keys.first()?;
    Some(StreamKey {
        direction,
        src: Addr(src),
        dst: Addr(dst),
        ssrc,
        suite: k.suite.name().to_string(),
        master: Secret(Zeroizing::new(p.key_salt.to_vec())),
        mki: p.mki.map(|m| m.bytes().into()),
    })
}

/// The lines of a media description the bridge passes on (codec parameters, direction).
fn kept_lines(m: &Media) -> Vec<Line> {
    // Keys, addresses, SSRCs and extensions are the gateway's own on each leg.
    const DROP: [&str; 6] = [
        "crypto",
        "rtcp",
        "rtcp-mux",
        "ssrc",
        "extmap",
        "fingerprint",
    ];
    m.lines
        .iter()
        .filter(|l| {
            l.kind == 'a' && {
                let n = l.value.split(':').next().unwrap_or_default();
                !DROP.contains(&n) && !crate::sdp_edit::ICE.contains(&n)
            }
        })
        .cloned()
        .collect()
}

fn first_audio(sd: &SessionDescription) -> Option<usize> {
    sd.media
        .iter()
        .position(|m| m.media == "audio" && m.port != 0)
}

impl BridgeAnchor {
    pub fn new(cfg: BridgeConfig, media: BridgeSink, escrow: EscrowSink) -> Self {
        BridgeAnchor {
            pool: PortPool::new(cfg.first_port, cfg.port_count),
            cfg,
            calls: HashMap::new(),
            media,
            escrow,
            rng: SystemRandom::new(),
        }
    }

    pub fn calls(&self) -> usize {
        self.calls.len()
    }

    pub fn free_pairs(&self) -> usize {
        self.pool.available()
    }

    fn fresh_key(&self, suite: SrtpProfile, tag: u32) -> Result<CryptoAttribute, Refusal> {
        let mut k = Zeroizing::new(vec![0u8; suite.key_len() + suite.salt_len()]);
        self.rng
            .fill(&mut k)
            .map_err(|_| Refusal::new(500, "random generator failed"))?;
        Ok(CryptoAttribute::new(tag, suite, &k))
    }

    fn random_u32(&self) -> Result<u32, Refusal> {
        let mut b = [0u8; 4];
        self.rng
            .fill(&mut b)
            .map_err(|_| Refusal::new(500, "random generator failed"))?;
        Ok(u32::from_be_bytes(b))
    }

    /// Writes the SDP for one leg: our address and port, one audio stream with `lines`, the
    /// other streams of `template` refused (port 0).
    #[allow(clippy::too_many_arguments)]
    fn write_sdp(
        &self,
        call: &mut Call,
        outside: bool,
        template: &SessionDescription,
        audio: usize,
        proto: &str,
        formats: Vec<String>,
        mut lines: Vec<Line>,
        keys: &[CryptoAttribute],
    ) -> Vec<u8> {
        let (ip, port) = if outside {
            (self.cfg.outside_address, call.outside_port)
        } else {
            (self.cfg.inside_address, call.inside_port)
        };
        let v = &mut call.versions[usize::from(outside)];
        *v += 1;
        let c = connection_value(ip);
        let session = vec![
            Line {
                kind: 'v',
                value: "0".into(),
            },
            Line {
                kind: 'o',
                value: format!("voxgate {} {} {c}", call.session, v),
            },
            Line {
                kind: 's',
                value: "-".into(),
            },
            Line {
                kind: 'c',
                value: c,
            },
            Line {
                kind: 't',
                value: "0 0".into(),
            },
        ];
        for k in keys {
            lines.push(Line {
                kind: 'a',
                value: format!("crypto:{k}"),
            });
        }
        if outside {
            if let Carrier::RtpExtension { id } = self.cfg.carrier {
                lines.push(Line {
                    kind: 'a',
                    value: format!("extmap:{id} {RTP_EXTENSION_URI}"),
                });
            }
            lines.push(Line {
                kind: 'a',
                value: format!("ssrc:{} cname:{}", call.ssrc_out, self.cfg.cname),
            });
        }
        let media = template
            .media
            .iter()
            .enumerate()
            .map(|(i, m)| {
                if i == audio {
                    Media {
                        media: "audio".into(),
                        port,
                        proto: proto.into(),
                        formats: formats.clone(),
                        lines: lines.clone(),
                    }
                } else {
                    Media {
                        media: m.media.clone(),
                        port: 0,
                        proto: m.proto.clone(),
                        formats: m.formats.clone(),
                        lines: Vec::new(),
                    }
                }
            })
            .collect();
        SessionDescription { session, media }.to_bytes()
    }

    /// An answer that refuses every stream of `template`, with our session lines.
    fn write_refusal(
        &self,
        call: &mut Call,
        outside: bool,
        template: &SessionDescription,
    ) -> Vec<u8> {
        let ip = if outside {
            self.cfg.outside_address
        } else {
            self.cfg.inside_address
        };
        let v = &mut call.versions[usize::from(outside)];
        *v += 1;
        let c = connection_value(ip);
        let session = vec![
            Line {
                kind: 'v',
                value: "0".into(),
            },
            Line {
                kind: 'o',
                value: format!("voxgate {} {} {c}", call.session, v),
            },
            Line {
                kind: 's',
                value: "-".into(),
            },
            Line {
                kind: 'c',
                value: c,
            },
            Line {
                kind: 't',
                value: "0 0".into(),
            },
        ];
        let media = template
            .media
            .iter()
            .map(|m| Media {
                media: m.media.clone(),
                port: 0,
                proto: m.proto.clone(),
                formats: m.formats.clone(),
                lines: Vec::new(),
            })
            .collect();
        SessionDescription { session, media }.to_bytes()
    }

    fn new_call(&mut self) -> Result<Call, Refusal> {
        let ssrc_out = self.random_u32()?;
        let session = u64::from(self.random_u32()?);
        let Some(i) = self.pool.alloc() else {
            return Err(Refusal::new(503, "no media ports left on the gateway"));
        };
        let Some(o) = self.pool.alloc() else {
            self.pool.release(i);
            return Err(Refusal::new(503, "no media ports left on the gateway"));
        };
        Ok(Call {
            inside_port: i,
            outside_port: o,
            inside_peer: None,
            outside_peer: None,
            far_ssrc: None,
            ssrc_out,
            offer_from_inside: true,
            offer_keys: Vec::new(),
            offer_proto: String::new(),
            offered: Vec::new(),
            inside_rx: None,
            inside_tx: None,
            outside_rx: None,
            outside_tx: None,
            escrow_at_ack: false,
            pushed: None,
            escrowed: None,
            refused: false,
            versions: [0, 0],
            session,
            last: [None, None],
        })
    }

    /// An offer crossing the gateway (`from_inside`: a user's; else the provider's).
    fn offer(
        &mut self,
        call: &mut Call,
        from_inside: bool,
        sd: &SessionDescription,
    ) -> Result<Vec<u8>, Refusal> {
        let na = |r: &str| Refusal::new(488, r.to_string());
        let ai = first_audio(sd).ok_or_else(|| na("no audio stream offered"))?;
        let m = &sd.media[ai];
        let keys = usable_keys(m);
        let info = media_info(sd, m);
        let savp = m.proto == "RTP/SAVP";
        if m.proto != "RTP/SAVP" && m.proto != "RTP/AVP" {
            return Err(na("unsupported media transport"));
        }
        let lines = kept_lines(m);
        let out = if from_inside {
            if keys.is_empty() && (savp || self.cfg.inside_policy == EncryptionPolicy::Mandatory) {
                return Err(na(
                    "encryption is mandatory inside: offer SRTP with a=crypto",
                ));
            }
            // The provider leg is always SRTP, with our own keys for the user's suites.
            let mut suites: Vec<(SrtpProfile, u32)> = Vec::new();
            for k in &keys {
                if !suites.iter().any(|(s, _)| *s == k.suite) {
                    suites.push((k.suite, k.tag.unwrap_or(1)));
                }
            }
            if suites.is_empty() {
                suites.push((SrtpProfile::AesCm128HmacSha1_80, 1));
            }
            let offered = suites
                .iter()
                .map(|(s, t)| self.fresh_key(*s, *t))
                .collect::<Result<Vec<_>, _>>()?;
            call.inside_peer = info.rtp;
            let b = self.write_sdp(
                call,
                true,
                sd,
                ai,
                "RTP/SAVP",
                m.formats.clone(),
                lines,
                &offered,
            );
            call.offered = offered;
            b
        } else {
            if keys.is_empty() {
                return Err(na(
                    "the provider leg must be SRTP: no usable a=crypto offered",
                ));
            }
            let (proto, offered) = match self.cfg.inside_policy {
                EncryptionPolicy::Off => ("RTP/AVP", Vec::new()),
                p => {
                    let mut v = Vec::new();
                    for k in &keys {
                        if !v.iter().any(|x: &CryptoAttribute| x.suite == k.suite) {
                            v.push(self.fresh_key(k.suite, k.tag.unwrap_or(1))?);
                        }
                    }
                    let proto = if p == EncryptionPolicy::Mandatory {
                        "RTP/SAVP"
                    } else {
                        "RTP/AVP"
                    };
                    (proto, v)
                }
            };
            call.outside_peer = info.rtp;
            call.far_ssrc = info.ssrc;
            let b = self.write_sdp(
                call,
                false,
                sd,
                ai,
                proto,
                m.formats.clone(),
                lines,
                &offered,
            );
            call.offered = offered;
            b
        };
        call.offer_from_inside = from_inside;
        call.offer_keys = keys;
        call.offer_proto = m.proto.clone();
        Ok(out)
    }

    /// An answer crossing the gateway, to the offer in progress.
    fn answer(
        &mut self,
        call: &mut Call,
        from_inside: bool,
        sd: &SessionDescription,
    ) -> Result<Vec<u8>, Refusal> {
        let bad = |r: &str| Refusal::new(502, r.to_string());
        if from_inside == call.offer_from_inside {
            return Err(bad("an answer from the side that made the offer"));
        }
        let Some(ai) = first_audio(sd) else {
            // The audio stream was refused: pass the refusal on, in an SDP of our own (nothing
            // of one side's description crosses to the other).
            call.refused = true;
            return Ok(self.write_refusal(call, from_inside, sd));
        };
        call.refused = false;
        let m = &sd.media[ai];
        let info = media_info(sd, m);
        let answered = usable_keys(m);
        let lines = kept_lines(m);
        // The answer picks one of the keys we offered (by tag).
        let ours = |tag: Option<u32>, offered: &[CryptoAttribute]| {
            offered
                .iter()
                .find(|k| k.tag == tag)
                .cloned()
                .ok_or_else(|| bad("the answer's crypto tag was not offered"))
        };
        if from_inside {
            // The user answered the provider's offer.
            call.inside_peer = info.rtp;
            let (inside_tx, inside_rx, tag) = match answered.as_slice() {
                [k] => (Some(ours(k.tag, &call.offered)?), Some(k.clone()), k.tag),
                [] if self.cfg.inside_policy != EncryptionPolicy::Mandatory => (None, None, None),
                [] => return Err(bad("no SRTP key in the user's answer (mandatory inside)")),
                _ => return Err(bad("several keys in the user's answer")),
            };
            let far = call
                .offer_keys
                .iter()
                .find(|k| tag.is_some() && k.tag == tag)
                .or_else(|| call.offer_keys.first())
                .cloned()
                .ok_or_else(|| bad("no usable key in the provider's offer"))?;
            let out_tx = self.fresh_key(far.suite, far.tag.unwrap_or(1))?;
            call.inside_tx = inside_tx;
            call.inside_rx = inside_rx;
            call.outside_rx = Some(far);
            call.outside_tx = Some(out_tx.clone());
            let b = self.write_sdp(
                call,
                true,
                sd,
                ai,
                "RTP/SAVP",
                m.formats.clone(),
                lines,
                &[out_tx],
            );
            // The SPG sees this answer after us: escrow when the ACK comes back through.
            call.escrow_at_ack = true;
            Ok(b)
        } else {
            // The provider answered the offer we made for the user.
            call.outside_peer = info.rtp;
            call.far_ssrc = info.ssrc;
            let far = match answered.as_slice() {
                [k] => k.clone(),
                _ => return Err(bad("the provider's answer must carry exactly one SRTP key")),
            };
            let out_tx = ours(far.tag, &call.offered)?;
            if out_tx.suite != far.suite {
                return Err(bad("the answer changes the suite of the tag"));
            }
            // Answer the user with the same suite (and tag when it offered one).
            let user = call
                .offer_keys
                .iter()
                .find(|k| k.tag == far.tag && k.suite == far.suite)
                .or_else(|| call.offer_keys.iter().find(|k| k.suite == far.suite))
                .or_else(|| call.offer_keys.first())
                .cloned();
            let (proto, inside_tx, inside_rx) = match user {
                Some(u) => {
                    let tx = self.fresh_key(u.suite, u.tag.unwrap_or(1))?;
                    (call.offer_proto.clone(), Some(tx), Some(u))
                }
                None => ("RTP/AVP".to_string(), None, None),
            };
            call.outside_rx = Some(far);
            call.outside_tx = Some(out_tx);
            call.inside_rx = inside_rx;
            call.inside_tx = inside_tx.clone();
            let keys: Vec<CryptoAttribute> = inside_tx.into_iter().collect();
            let b = self.write_sdp(call, false, sd, ai, &proto, m.formats.clone(), lines, &keys);
            call.escrow_at_ack = false;
            Ok(b)
        }
    }

    /// Hands the data plane both legs of a call; contexts whose keys did not change are kept.
    fn push_legs(&mut self, call: &mut Call) {
        let keys: LegKeys = [
            call.inside_rx.clone(),
            call.inside_tx.clone(),
            call.outside_rx.clone(),
            call.outside_tx.clone(),
        ];
        let same = |i: usize| {
            call.pushed
                .as_ref()
                .is_some_and(|p| p[i].is_some() && p[i] == keys[i])
        };
        let (keep_in_rx, keep_in_tx, keep_out_rx, keep_out_tx) =
            (same(0), same(1), same(2), same(3));
        call.pushed = Some(keys);
        let inside = BridgeLeg {
            peer: call.inside_peer,
            out_port: call.outside_port,
            dst: call.outside_peer,
            rx: call.inside_rx.as_ref().and_then(session_of),
            tx: call.outside_tx.as_ref().and_then(session_of),
            outward: true,
            ssrc_out: Some(call.ssrc_out),
            keep_rx: keep_in_rx,
            keep_tx: keep_out_tx,
        };
        let outside = BridgeLeg {
            peer: call.outside_peer,
            out_port: call.inside_port,
            dst: call.inside_peer,
            rx: call.outside_rx.as_ref().and_then(session_of),
            tx: call.inside_tx.as_ref().and_then(session_of),
            outward: false,
            ssrc_out: None,
            keep_rx: keep_out_rx,
            keep_tx: keep_in_tx,
        };
        (self.media)(BridgeCommand::Leg {
            port: call.inside_port,
            leg: Some(Box::new(inside)),
        });
        (self.media)(BridgeCommand::Leg {
            port: call.outside_port,
            leg: Some(Box::new(outside)),
        });
    }

    /// Asks for escrow of the call's outside keys, unless exactly these are escrowed already.
    fn escrow_keys(&mut self, call_id: &str, call: &mut Call) {
        let here = SocketAddr::new(self.cfg.outside_address, call.outside_port);
        let (Some(peer), Some(tx), Some(rx)) =
            (call.outside_peer, &call.outside_tx, &call.outside_rx)
        else {
            return;
        };
        let now = (tx.clone(), rx.clone(), peer);
        if call.escrowed.as_ref() == Some(&now) {
            return;
        }
        call.escrowed = Some(now);
        let streams: Vec<StreamKey> = [
            stream_key(Direction::Send, here, peer, Some(call.ssrc_out), tx),
            stream_key(Direction::Receive, peer, here, call.far_ssrc, rx),
        ]
        .into_iter()
        .flatten()
        .collect();
        (self.escrow)(EscrowRequest::KeyUpdate {
            call_id: call_id.to_string(),
            outside_port: call.outside_port,
            streams,
        });
    }
}

impl MediaAnchor for BridgeAnchor {
    fn sdp(
        &mut self,
        _now: Instant,
        ctx: &SdpContext<'_>,
        body: &[u8],
    ) -> Result<Option<Vec<u8>>, Refusal> {
        let provider = Some(self.cfg.provider.as_str());
        let from_inside = ctx.from_trusted != provider;
        if from_inside && ctx.to_trusted != provider {
            // Between two users of the gateway: not the provider's business.
            return Ok(None);
        }
        let dir = usize::from(from_inside);
        if let Some((input, output)) = self
            .calls
            .get(ctx.call_id)
            .and_then(|c| c.last[dir].as_ref())
        {
            if input == body {
                return Ok(Some(output.clone()));
            }
        }
        let sd = SessionDescription::parse(body)
            .map_err(|e| Refusal::new(488, format!("SDP the gateway cannot read: {e}")))?;
        // Worked on a copy: a refused body leaves the call as it was.
        let existing = self.calls.get(ctx.call_id).cloned();
        let is_new = existing.is_none();
        let mut call = match existing {
            Some(c) => c,
            None if ctx.kind == SdpKind::Offer => self.new_call()?,
            None => return Err(Refusal::new(502, "an answer without an offer")),
        };
        let r = match ctx.kind {
            SdpKind::Offer => self.offer(&mut call, from_inside, &sd),
            SdpKind::Answer => self.answer(&mut call, from_inside, &sd),
        };
        match r {
            Ok(out) => {
                call.last[dir] = Some((body.to_vec(), out.clone()));
                if ctx.kind == SdpKind::Answer && !call.refused {
                    self.push_legs(&mut call);
                    if !call.escrow_at_ack {
                        self.escrow_keys(ctx.call_id, &mut call);
                    }
                }
                self.calls.insert(ctx.call_id.to_string(), call);
                Ok(Some(out))
            }
            Err(e) => {
                if is_new {
                    // Nothing was handed to the data plane for it: its ports go back.
                    self.pool.release(call.inside_port);
                    self.pool.release(call.outside_port);
                }
                Err(e)
            }
        }
    }

    fn acked(&mut self, _now: Instant, call_id: &str, _side: Side) {
        let Some(mut call) = self.calls.remove(call_id) else {
            return;
        };
        if call.escrow_at_ack {
            call.escrow_at_ack = false;
            self.escrow_keys(call_id, &mut call);
        }
        self.calls.insert(call_id.to_string(), call);
    }

    fn call_ended(&mut self, _now: Instant, call_id: &str) {
        let Some(call) = self.calls.remove(call_id) else {
            return;
        };
        for port in [call.inside_port, call.outside_port] {
            (self.media)(BridgeCommand::Leg { port, leg: None });
            self.pool.release(port);
        }
        (self.media)(BridgeCommand::Tag {
            port: call.outside_port,
            session_id: None,
        });
        (self.escrow)(EscrowRequest::End {
            call_id: call_id.to_string(),
        });
    }
}

/// Why the bridge dropped a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BridgeDrop {
    /// No call uses the port, or the other side is not known yet.
    NoRoute,
    /// Not from the leg's peer.
    WrongSource,
    /// Outward, but the call is not escrowed (yet): nothing leaves untagged.
    NotEscrowed,
    /// The sender's SRTP did not authenticate (or replay).
    Unprotect,
    /// Not RTP, or no room to rewrite it.
    Malformed,
    /// RTCP: each leg is its own RTP session; not bridged.
    Rtcp,
}

impl BridgeDrop {
    pub const ALL: [BridgeDrop; 6] = [
        BridgeDrop::NoRoute,
        BridgeDrop::WrongSource,
        BridgeDrop::NotEscrowed,
        BridgeDrop::Unprotect,
        BridgeDrop::Malformed,
        BridgeDrop::Rtcp,
    ];

    pub fn name(self) -> &'static str {
        match self {
            BridgeDrop::NoRoute => "no_route",
            BridgeDrop::WrongSource => "wrong_source",
            BridgeDrop::NotEscrowed => "not_escrowed",
            BridgeDrop::Unprotect => "unprotect_failed",
            BridgeDrop::Malformed => "malformed",
            BridgeDrop::Rtcp => "rtcp",
        }
    }
}

/// What to do with a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BridgeDecision {
    Forward {
        out_port: u16,
        dst: SocketAddr,
        len: usize,
        /// IPv4 options to send with it (the session_ID option).
        ipv4_options: Option<[u8; 12]>,
    },
    Drop(BridgeDrop),
}

/// Counters of the data plane.
#[derive(Debug, Default, Clone)]
pub struct BridgeStats {
    pub received: u64,
    pub outward: u64,
    pub inward: u64,
    pub dropped: HashMap<BridgeDrop, u64>,
}

/// The data plane.
pub struct Bridge {
    first_port: u16,
    carrier: Carrier,
    legs: Vec<Option<Box<BridgeLeg>>>,
    tags: Vec<Option<u64>>,
    stats: BridgeStats,
}

impl std::fmt::Debug for Bridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bridge")
            .field("first_port", &self.first_port)
            .field("carrier", &self.carrier)
            .finish_non_exhaustive()
    }
}

/// Room the bridge may add to a datagram: the extension block and the SRTP tag.
pub const HEADROOM: usize = 16 + 16;

impl Bridge {
    pub fn new(cfg: &BridgeConfig) -> Self {
        let n = usize::from(cfg.port_count);
        Bridge {
            first_port: cfg.first_port,
            carrier: cfg.carrier,
            legs: (0..n).map(|_| None).collect(),
            tags: vec![None; n],
            stats: BridgeStats::default(),
        }
    }

    pub fn stats(&self) -> &BridgeStats {
        &self.stats
    }

    fn slot(&self, port: u16) -> Option<usize> {
        let i = usize::from(port.checked_sub(self.first_port)?);
        (i < self.legs.len()).then_some(i)
    }

    pub fn apply(&mut self, cmd: BridgeCommand) {
        match cmd {
            BridgeCommand::Leg { port, leg } => {
                if let Some(i) = self.slot(port) {
                    let old = self.legs[i].take();
                    self.legs[i] = leg.map(|mut new| {
                        if let Some(mut old) = old {
                            if new.keep_rx && old.rx.is_some() {
                                new.rx = old.rx.take();
                            }
                            if new.keep_tx && old.tx.is_some() {
                                new.tx = old.tx.take();
                            }
                        }
                        new
                    });
                }
            }
            BridgeCommand::Tag { port, session_id } => {
                if let Some(i) = self.slot(port) {
                    self.tags[i] = session_id;
                }
            }
        }
    }

    fn drop(&mut self, r: BridgeDrop) -> BridgeDecision {
        *self.stats.dropped.entry(r).or_default() += 1;
        BridgeDecision::Drop(r)
    }

    /// Decides about one datagram that arrived on `port` from `src`: `buf[..len]`, rewritten
    /// in place (`buf` must have [`HEADROOM`] bytes beyond `len`).
    pub fn handle(
        &mut self,
        port: u16,
        src: SocketAddr,
        buf: &mut [u8],
        len: usize,
    ) -> BridgeDecision {
        self.stats.received += 1;
        let Some(i) = self.slot(port) else {
            return self.drop(BridgeDrop::NoRoute);
        };
        let carrier = self.carrier;
        let (out_port, outward, tag) = match &self.legs[i] {
            None => return self.drop(BridgeDrop::NoRoute),
            Some(l) => {
                if l.peer != Some(src) {
                    return self.drop(BridgeDrop::WrongSource);
                }
                let tag = self.slot(l.out_port).and_then(|o| self.tags[o]);
                (l.out_port, l.outward, tag)
            }
        };
        if len < 12 || buf[0] >> 6 != 2 || len > buf.len() {
            return self.drop(BridgeDrop::Malformed);
        }
        if (192..=223).contains(&buf[1]) {
            return self.drop(BridgeDrop::Rtcp);
        }
        if outward && tag.is_none() {
            return self.drop(BridgeDrop::NotEscrowed);
        }
        let Some(leg) = self.legs[i].as_mut() else {
            return self.drop(BridgeDrop::NoRoute);
        };
        let Some(dst) = leg.dst else {
            return self.drop(BridgeDrop::NoRoute);
        };
        let mut len = len;
        if let Some(rx) = leg.rx.as_mut() {
            match rx.unprotect_rtp(buf, len) {
                Ok(n) => len = n,
                Err(_) => return self.drop(BridgeDrop::Unprotect),
            }
        }
        // The header: fixed part and CSRCs kept; any extension replaced (outward: by the
        // carrier; inward: removed).
        let cc = usize::from(buf[0] & 0x0f);
        let fixed = 12 + 4 * cc;
        let mut hdr_end = fixed;
        if buf[0] & 0x10 != 0 {
            if len < fixed + 4 {
                return self.drop(BridgeDrop::Malformed);
            }
            let words = usize::from(u16::from_be_bytes([buf[fixed + 2], buf[fixed + 3]]));
            hdr_end = fixed + 4 + 4 * words;
        }
        if len < hdr_end {
            return self.drop(BridgeDrop::Malformed);
        }
        let ext: Option<[u8; 16]> = match (outward, carrier, tag) {
            (true, Carrier::RtpExtension { id }, Some(sid)) => Some(rtp_extension_block(id, sid)),
            _ => None,
        };
        let new_hdr_end = fixed + ext.map_or(0, |e| e.len());
        // Room for the new header and the SRTP tag (our keys have no MKI).
        if len - hdr_end + new_hdr_end + 16 > buf.len() {
            return self.drop(BridgeDrop::Malformed);
        }
        buf.copy_within(hdr_end..len, new_hdr_end);
        len = len - hdr_end + new_hdr_end;
        match ext {
            Some(e) => {
                buf[fixed..new_hdr_end].copy_from_slice(&e);
                buf[0] |= 0x10;
            }
            None => buf[0] &= !0x10,
        }
        if let Some(ssrc) = leg.ssrc_out {
            buf[8..12].copy_from_slice(&ssrc.to_be_bytes());
        }
        if let Some(tx) = leg.tx.as_mut() {
            match tx.protect_rtp(buf, len) {
                Ok(n) => len = n,
                Err(_) => return self.drop(BridgeDrop::Malformed),
            }
        }
        let ipv4_options = match (outward, carrier, tag) {
            (true, Carrier::Ipv4Option, Some(sid)) => Some(ipv4_options(sid)),
            _ => None,
        };
        if outward {
            self.stats.outward += 1;
        } else {
            self.stats.inward += 1;
        }
        BridgeDecision::Forward {
            out_port,
            dst,
            len,
            ipv4_options,
        }
    }
}
