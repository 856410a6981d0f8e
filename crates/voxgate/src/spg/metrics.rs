//! The SPG's counters, in Prometheus text format on `GET /metrics`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

#[derive(Debug, Default)]
pub(crate) struct Metrics {
    pub escrowed: AtomicU64,
    pub rekeys: AtomicU64,
    pub ended: AtomicU64,
    pub store_errors: AtomicU64,
    pub live_sessions: AtomicU64,
    pub connections_refused: AtomicU64,
    pub refused: Mutex<BTreeMap<u16, u64>>,
}

impl Metrics {
    pub fn refused(&self, code: u16) {
        let mut m = match self.refused.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        *m.entry(code).or_default() += 1;
    }

    pub fn render(&self) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut s = String::new();
        let mut one = |name: &str, kind: &str, help: &str, v: u64| {
            crate::metrics_http::metric(&mut s, name, kind, help, v)
        };
        one(
            "voxgate_escrow_sessions_escrowed_total",
            "counter",
            "key_update requests that created a session.",
            g(&self.escrowed),
        );
        one(
            "voxgate_escrow_rekeys_total",
            "counter",
            "key_update requests that rekeyed a session.",
            g(&self.rekeys),
        );
        one(
            "voxgate_escrow_sessions_ended_total",
            "counter",
            "Sessions ended by session_end.",
            g(&self.ended),
        );
        one(
            "voxgate_escrow_store_errors_total",
            "counter",
            "Key store writes that failed (requests answered 503).",
            g(&self.store_errors),
        );
        one(
            "voxgate_escrow_connections_refused_total",
            "counter",
            "Escrow connections refused (certificate, address or limit).",
            g(&self.connections_refused),
        );
        one(
            "voxgate_escrow_sessions_live",
            "gauge",
            "Live escrowed sessions.",
            g(&self.live_sessions),
        );
        s.push_str("# HELP voxgate_escrow_requests_refused_total Requests answered with an error, by code.\n# TYPE voxgate_escrow_requests_refused_total counter\n");
        let m = match self.refused.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        for (code, n) in m.iter() {
            s.push_str(&format!(
                "voxgate_escrow_requests_refused_total{{code=\"{code}\"}} {n}\n"
            ));
        }
        s
    }
}
