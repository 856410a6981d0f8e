//! The report as one self-contained HTML page: inline CSS, inline SVG plots, no scripts and
//! no external resource. Recovered audio is linked relatively (the WAVs sit next to it).

use std::fmt::Write;

use crate::report::{Report, SecondStats, StreamReport};

/// Escapes text for HTML element content and attribute values.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c if c.is_control() => o.push(' '),
            c => o.push(c),
        }
    }
    o
}

/// A relative link target: only plain file names the auditor made are linked.
fn safe_file(name: &str) -> Option<&str> {
    name.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        .then_some(name)
        .filter(|n| !n.starts_with('.'))
}

/// A line chart of one series per second (points beyond 2000 are decimated by maximum).
fn svg_series(
    points: &[SecondStats],
    value: impl Fn(&SecondStats) -> f64,
    unit: &str,
    colour: &str,
) -> String {
    const W: f64 = 560.0;
    const H: f64 = 140.0;
    const PAD: f64 = 34.0;
    if points.is_empty() {
        return String::new();
    }
    let step = points.len().div_ceil(2000).max(1);
    let pts: Vec<(f64, f64)> = points
        .chunks(step)
        .map(|c| {
            let v = c.iter().map(&value).fold(f64::MIN, f64::max);
            (c[0].t as f64, if v.is_finite() { v } else { 0.0 })
        })
        .collect();
    let t0 = pts.first().map_or(0.0, |p| p.0);
    let t1 = pts.last().map_or(1.0, |p| p.0).max(t0 + 1.0);
    let vmax = pts.iter().map(|p| p.1).fold(0.0, f64::max).max(1e-9);
    let x = |t: f64| PAD + (t - t0) / (t1 - t0) * (W - PAD - 8.0);
    let y = |v: f64| H - 18.0 - v / vmax * (H - 30.0);
    let mut path = String::new();
    for (i, (t, v)) in pts.iter().enumerate() {
        let _ = write!(
            path,
            "{}{:.1},{:.1} ",
            if i == 0 { "M" } else { "L" },
            x(*t),
            y(*v)
        );
    }
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" role=\"img\">\
<rect x=\"0\" y=\"0\" width=\"{W}\" height=\"{H}\" fill=\"#fafafa\" stroke=\"#ddd\"/>\
<line x1=\"{PAD}\" y1=\"{yb:.1}\" x2=\"{xr:.1}\" y2=\"{yb:.1}\" stroke=\"#999\"/>\
<line x1=\"{PAD}\" y1=\"12\" x2=\"{PAD}\" y2=\"{yb:.1}\" stroke=\"#999\"/>\
<text x=\"2\" y=\"16\" font-size=\"10\">{vmax:.2}</text><text x=\"2\" y=\"{yb:.1}\" font-size=\"10\">0</text>\
<text x=\"{PAD}\" y=\"{H}\" font-size=\"10\" dy=\"-3\">{t0:.0} s</text>\
<text x=\"{xr:.1}\" y=\"{H}\" font-size=\"10\" dy=\"-3\" text-anchor=\"end\">{t1:.0} s ({unit})</text>\
<path d=\"{path}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\"/></svg>",
        yb = H - 18.0,
        xr = W - 8.0,
    )
}

fn stream_row(s: &StreamReport) -> String {
    format!(
        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
<td>{} ({:.1}%)</td><td>{}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{}</td><td>{:.2}</td></tr>",
        s.id,
        esc(&s.src),
        esc(&s.dst),
        esc(&s.ssrc),
        esc(&s.codec),
        esc(s.encryption),
        s.packets,
        s.lost,
        s.lost_pct,
        s.sequence_errors,
        s.max_delta_ms,
        s.max_jitter_ms,
        s.mean_jitter_ms,
        s.one_way_delay
            .as_ref()
            .map_or("-".to_string(), |d| format!("{:.2}", d.mean_ms)),
        s.mos.mos
    )
}

/// Renders the report.
pub fn render(r: &Report) -> String {
    let mut h = String::with_capacity(64 * 1024);
    h.push_str(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:; media-src 'self' data:\">\
<title>voxgate audit</title><style>\
body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:1em 0}\
td,th{border:1px solid #ccc;padding:3px 7px;font-size:13px;text-align:left}th{background:#eee}\
.critical{background:#c0392b;color:#fff}.high{background:#e67e22;color:#fff}.medium{background:#f1c40f}\
.low{background:#bde}.info{background:#ddd}.sev{font-weight:bold;padding:2px 6px;border-radius:3px}\
section.stream{border-top:1px solid #ccc;margin-top:1.5em}code{font-size:12px}</style></head><body>",
    );
    let c = &r.capture;
    let _ = write!(
        h,
        "<h1>voxgate audit</h1><p>{} frames, {} bytes, {:.1} s; {} RTP packets in {} streams; \
{} SIP messages over UDP, {} over TCP; {} frames skipped.</p>",
        c.frames,
        c.bytes,
        c.duration_s,
        c.rtp_packets,
        r.streams.len(),
        r.sip.messages_udp,
        r.sip.messages_tcp,
        r.skipped.values().sum::<u64>()
    );
    if let Some(e) = &r.capture_error {
        let _ = write!(h, "<p><b>Capture error:</b> {}</p>", esc(e));
    }
    h.push_str("<h2>Findings</h2>");
    if r.findings.is_empty() {
        h.push_str("<p>None.</p>");
    } else {
        h.push_str(
            "<table><tr><th>Severity</th><th>Finding</th><th>Detail</th><th>Evidence</th></tr>",
        );
        for f in &r.findings {
            let files: Vec<String> = f
                .files
                .iter()
                .filter_map(|n| safe_file(n))
                .map(|n| format!("<a href=\"{0}\">{0}</a>", esc(n)))
                .collect();
            let _ = write!(
                h,
                "<tr><td><span class=\"sev {0}\">{0}</span></td><td>{1}</td><td>{2}</td><td>{3}</td></tr>",
                f.severity.as_str(),
                esc(&f.title),
                esc(&f.detail),
                files.join(" ")
            );
        }
        h.push_str("</table>");
    }
    h.push_str(
        "<h2>RTP streams</h2><table><tr><th>#</th><th>Source</th><th>Destination</th><th>SSRC</th>\
<th>Codec</th><th>Encryption</th><th>Packets</th><th>Lost</th><th>Seq errors</th><th>Max delta (ms)</th>\
<th>Max jitter (ms)</th><th>Mean jitter (ms)</th><th>One-way delay (ms)</th><th>MOS</th></tr>",
    );
    for s in &r.streams {
        h.push_str(&stream_row(s));
    }
    h.push_str(
        "</table><p><small>Packets, lost, jitter and delta are computed as Wireshark's \
<code>rtp,streams</code> computes them. MOS: ",
    );
    h.push_str(&esc(r.mos_model));
    h.push_str("</small></p>");
    for s in &r.streams {
        let _ = write!(
            h,
            "<section class=\"stream\"><h3>Stream {}: {} &rarr; {} ({}, {})</h3>",
            s.id,
            esc(&s.src),
            esc(&s.dst),
            esc(&s.codec),
            esc(&s.ssrc)
        );
        if let Some(a) = &s.audio {
            if let Some(n) = safe_file(&a.file) {
                let _ = write!(
                    h,
                    "<p>Recovered audio ({1:.1} s): <audio controls preload=\"none\" src=\"{0}\"></audio> <a href=\"{0}\">{0}</a></p>",
                    esc(n),
                    a.seconds
                );
            }
        }
        if s.per_second.len() > 1 {
            h.push_str("<p>Jitter per second (max, ms)</p>");
            h.push_str(&svg_series(
                &s.per_second,
                |p| p.max_jitter_ms,
                "ms",
                "#2c7fb8",
            ));
            h.push_str("<p>Lost packets per second</p>");
            h.push_str(&svg_series(
                &s.per_second,
                |p| p.lost.max(0) as f64,
                "packets",
                "#d95f0e",
            ));
        }
        h.push_str("</section>");
    }
    if !r.skipped.is_empty() {
        h.push_str("<h2>Skipped frames</h2><table><tr><th>Reason</th><th>Frames</th></tr>");
        for (k, v) in &r.skipped {
            let _ = write!(h, "<tr><td>{}</td><td>{v}</td></tr>", esc(k));
        }
        h.push_str("</table>");
    }
    h.push_str("</body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_and_file_links_are_safe() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert_eq!(
            safe_file("stream-001-0000abcd.wav"),
            Some("stream-001-0000abcd.wav")
        );
        assert_eq!(safe_file("../etc/passwd"), None);
        assert_eq!(safe_file("http://x/y"), None);
    }
}
