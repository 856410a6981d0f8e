//! `voxgate li agency`: a receiving law-enforcement monitoring facility, for tests and the
//! demo. It accepts the mediation's X2/X3 PDUs over mutual TLS and writes to DIR:
//! `iri.json` (the IRI records, one per line), `<LIID>/<correlation>-<direction>.wav` (the
//! G.711 payload of the X3 RTP packets, placed by RTP timestamp) and `summary.json`
//! (PDUs per kind, written on exit and every second).

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use serde_json::json;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use voxgate_li::iri::{IriRecord, IRI_MIME};
use voxgate_li::x2x3::{Attribute, Decoder, PayloadDirection, Pdu, PduType};
use voxgate_rtp::g711::Law;

use super::wav::Track;

#[derive(Debug, clap::Args)]
pub struct AgencyArgs {
    #[arg(long)]
    pub listen: SocketAddr,
    #[arg(long)]
    pub cert: PathBuf,
    #[arg(long)]
    pub key: PathBuf,
    /// The CA of the mediation's certificate (client certificates required).
    #[arg(long)]
    pub client_ca: PathBuf,
    #[arg(long)]
    pub out: PathBuf,
}

/// A track being written, with its first RTP timestamp and place.
type TrackState = (Track, Option<(u32, u64)>);

#[derive(Default)]
struct Received {
    x2: u64,
    x3: u64,
    other: u64,
    bad: u64,
    tracks: HashMap<(String, u64, &'static str), TrackState>,
    liids: HashMap<[u8; 16], String>,
}

pub fn run(a: AgencyArgs) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let tls = super::api::server_config(&a.cert, &a.key, &a.client_ca)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let state = Arc::new(Mutex::new(Received::default()));
    let out = a.out.clone();
    let st = state.clone();
    let r = rt.block_on(async move {
        let l = TcpListener::bind(a.listen)
            .await
            .with_context(|| format!("binding {}", a.listen))?;
        println!("listening agency {}", l.local_addr()?);
        println!("ready");
        let _ = std::io::stdout().flush();
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        let iri = Arc::new(Mutex::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(out.join("iri.json"))?,
        ));
        {
            let st = st.clone();
            let out = out.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    write_summary(&st, &out);
                }
            });
        }
        let accept = async {
            loop {
                let (tcp, remote) = l.accept().await?;
                let acceptor = acceptor.clone();
                let st = st.clone();
                let out = out.clone();
                let iri = iri.clone();
                tokio::spawn(async move {
                    let Ok(Ok(mut tls)) =
                        tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
                    else {
                        tracing::warn!(%remote, "agency: TLS handshake failed");
                        return;
                    };
                    let mut dec = Decoder::new(1 << 20);
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        dec.push(&buf[..n]);
                        loop {
                            match dec.next_pdu() {
                                Ok(Some(p)) => take(&st, &out, &iri, &p),
                                Ok(None) => break,
                                Err(e) => {
                                    tracing::warn!(%remote, error = %e, "agency: stream broken");
                                    st.lock().unwrap_or_else(|p| p.into_inner()).bad += 1;
                                    return;
                                }
                            }
                        }
                    }
                });
            }
            #[allow(unreachable_code)]
            Ok::<(), anyhow::Error>(())
        };
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = accept => r?,
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        Ok::<(), anyhow::Error>(())
    });
    let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
    for (_, (t, _)) in s.tracks.iter_mut() {
        let _ = t.finish();
    }
    drop(s);
    write_summary(&state, &a.out);
    r.map(|_| ExitCode::SUCCESS)
}

fn write_summary(st: &Arc<Mutex<Received>>, out: &std::path::Path) {
    let s = st.lock().unwrap_or_else(|p| p.into_inner());
    let v = json!({"x2": s.x2, "x3": s.x3, "other": s.other, "bad": s.bad});
    let _ = std::fs::write(out.join("summary.json"), v.to_string());
}

fn take(
    st: &Arc<Mutex<Received>>,
    out: &std::path::Path,
    iri: &Arc<Mutex<std::fs::File>>,
    p: &Pdu,
) {
    let mut s = st.lock().unwrap_or_else(|p| p.into_inner());
    match p.pdu_type {
        PduType::X2 => {
            s.x2 += 1;
            let mime = p
                .attributes
                .iter()
                .any(|a| matches!(a, Attribute::MimeContentType(m) if m == IRI_MIME));
            match serde_json::from_slice::<IriRecord>(&p.payload) {
                Ok(r) if mime => {
                    s.liids.insert(p.xid, r.liid.clone());
                    let mut f = iri.lock().unwrap_or_else(|p| p.into_inner());
                    let _ = writeln!(f, "{}", serde_json::to_string(&r).unwrap_or_default());
                }
                _ => s.bad += 1,
            }
        }
        PduType::X3 => {
            s.x3 += 1;
            let dir = match p.direction {
                PayloadDirection::FromTarget => "from-target",
                PayloadDirection::ToTarget => "to-target",
                _ => "unknown",
            };
            let liid = s
                .liids
                .get(&p.xid)
                .cloned()
                .unwrap_or_else(|| voxgate_li::warrant::format_xid(&p.xid));
            let pkt = &p.payload;
            if pkt.len() < 12 {
                s.bad += 1;
                return;
            }
            let Some(law) = Law::from_payload_type(pkt[1] & 0x7f) else {
                return;
            };
            let Ok(rtp) = voxgate_rtp::RtpPacket::parse(pkt) else {
                s.bad += 1;
                return;
            };
            let ts = rtp.timestamp();
            let hl = rtp.header().header_len;
            let Some(payload) = pkt.get(hl..) else {
                return;
            };
            let samples: Vec<i16> = payload.iter().map(|c| law.decode(*c)).collect();
            let key = (liid.clone(), p.correlation_id, dir);
            if !s.tracks.contains_key(&key) {
                let path = out
                    .join(&liid)
                    .join(format!("{:016x}-{dir}.wav", p.correlation_id));
                match Track::create(&path) {
                    Ok(t) => {
                        s.tracks.insert(key.clone(), (t, None));
                    }
                    Err(_) => return,
                }
            }
            if let Some((t, anchor)) = s.tracks.get_mut(&key) {
                let (first, base) = *anchor.get_or_insert((ts, 0));
                let _ = t.put(base + u64::from(ts.wrapping_sub(first)), &samples);
            }
        }
        _ => s.other += 1,
    }
}
