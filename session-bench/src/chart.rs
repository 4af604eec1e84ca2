//! The peer comparison as an SVG chart: for one concurrency, one panel per operation,
//! one row per engine, bars for ours, its floor and its peer, on a log scale.

use std::fmt::Write as _;

use crate::groups::Role;
use crate::harness::Op;
use crate::report::Report;

const PANEL_W: f64 = 540.0;
const LABEL_W: f64 = 178.0;
const PLOT_W: f64 = 292.0;
const BAR_H: f64 = 7.0;
const BAR_GAP: f64 = 1.5;
const ROW_GAP: f64 = 7.0;
const TOP: f64 = 64.0;
const PANEL_HEAD: f64 = 30.0;

const ROLES: [(Role, &str, &str); 3] = [
    (Role::Ours, "ours", "#2563eb"),
    (Role::Floor, "raw-client floor", "#9ca3af"),
    (Role::Peer, "peer (tower-sessions)", "#ea580c"),
];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn short(r: f64) -> String {
    if r >= 1e6 {
        format!("{:.2}M", r / 1e6)
    } else if r >= 1e4 {
        format!("{:.0}k", r / 1e3)
    } else if r >= 1e3 {
        format!("{:.1}k", r / 1e3)
    } else {
        format!("{r:.0}")
    }
}

/// The chart for concurrency `conc`, or `None` when nothing was measured.
pub fn svg(report: &Report, conc: usize) -> Option<String> {
    let engines = report.engines();
    if engines.is_empty() {
        return None;
    }
    // Rows: which roles each engine has.
    let roles_of = |e: &str| -> Vec<(Role, &str, &str)> {
        ROLES
            .iter()
            .copied()
            .filter(|(role, _, _)| {
                Op::ALL
                    .iter()
                    .any(|op| report.rate(e, *role, *op, conc).is_some())
            })
            .collect()
    };
    let mut lo = f64::INFINITY;
    let mut hi: f64 = 1.0;
    for e in &engines {
        for op in Op::ALL {
            for (role, _, _) in ROLES {
                if let Some(r) = report.rate(e, role, op, conc).filter(|r| *r > 0.0) {
                    lo = lo.min(r);
                    hi = hi.max(r);
                }
            }
        }
    }
    let lo_dec = lo.log10().floor().max(0.0);
    let hi_dec = hi.log10().ceil().max(lo_dec + 1.0);
    let x = |r: f64| -> f64 {
        let v = (r.max(10f64.powf(lo_dec)).log10() - lo_dec) / (hi_dec - lo_dec);
        LABEL_W + v * PLOT_W
    };
    let rows_h: f64 = engines
        .iter()
        .map(|e| roles_of(e).len() as f64 * (BAR_H + BAR_GAP) + ROW_GAP)
        .sum();
    let panel_h = PANEL_HEAD + rows_h + 24.0;
    let width = PANEL_W * 2.0 + 20.0;
    let height = TOP + panel_h * 2.0 + 20.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="Helvetica, Arial, sans-serif">"#
    );
    let _ = writeln!(
        s,
        r##"<rect width="100%" height="100%" fill="#ffffff"/><text x="10" y="24" font-size="17" font-weight="bold" fill="#111827">Session operations per second, concurrency {conc} (log scale; higher is better)</text>"##
    );
    let mut lx = 10.0;
    for (_, label, color) in ROLES {
        let _ = writeln!(
            s,
            r##"<rect x="{lx}" y="38" width="12" height="12" fill="{color}"/><text x="{}" y="48" font-size="12" fill="#374151">{}</text>"##,
            lx + 16.0,
            esc(label)
        );
        lx += 16.0 + label.len() as f64 * 6.6 + 24.0;
    }
    for (pi, op) in Op::ALL.into_iter().enumerate() {
        let ox = 10.0 + (pi % 2) as f64 * (PANEL_W + 10.0);
        let oy = TOP + (pi / 2) as f64 * panel_h;
        let _ = writeln!(s, r#"<g transform="translate({ox},{oy})">"#);
        let _ = writeln!(
            s,
            r##"<text x="0" y="18" font-size="14" font-weight="bold" fill="#111827">{}</text>"##,
            op.name()
        );
        // Decade grid lines.
        let plot_h = rows_h;
        let mut d = lo_dec;
        while d <= hi_dec {
            let gx = x(10f64.powf(d));
            let _ = writeln!(
                s,
                r##"<line x1="{gx:.1}" y1="{PANEL_HEAD}" x2="{gx:.1}" y2="{:.1}" stroke="#e5e7eb"/><text x="{gx:.1}" y="{:.1}" font-size="10" fill="#6b7280" text-anchor="middle">{}</text>"##,
                PANEL_HEAD + plot_h,
                PANEL_HEAD + plot_h + 12.0,
                short(10f64.powf(d))
            );
            d += 1.0;
        }
        let mut y = PANEL_HEAD;
        for e in &engines {
            let roles = roles_of(e);
            let block = roles.len() as f64 * (BAR_H + BAR_GAP);
            let _ = writeln!(
                s,
                r##"<text x="{:.1}" y="{:.1}" font-size="11" fill="#111827" text-anchor="end">{}</text>"##,
                LABEL_W - 6.0,
                y + block / 2.0 + 3.5,
                esc(e)
            );
            for (role, _, color) in roles {
                if let Some(r) = report.rate(e, role, op, conc) {
                    let w = (x(r) - LABEL_W).max(1.0);
                    let _ = writeln!(
                        s,
                        r##"<rect x="{LABEL_W}" y="{y:.1}" width="{w:.1}" height="{BAR_H}" fill="{color}"/><text x="{:.1}" y="{:.1}" font-size="8.5" fill="#374151">{}</text>"##,
                        LABEL_W + w + 3.0,
                        y + BAR_H - 0.5,
                        short(r)
                    );
                }
                y += BAR_H + BAR_GAP;
            }
            y += ROW_GAP;
        }
        s.push_str("</g>\n");
    }
    s.push_str("</svg>\n");
    Some(s)
}
