//! Terminal tables.

use super::summary::StartupRow;
use tabled::builder::Builder;
use tabled::settings::object::Columns;
use tabled::settings::{Alignment, Modify, Style};

/// Milliseconds with three significant decimals.
pub fn ms(ns: f64) -> String {
    format!("{:.3}", ns / 1e6)
}

/// The start-up table: one row per backend.
pub fn startup(rows: &[StartupRow]) -> String {
    let mut b = Builder::default();
    b.push_record([
        "backend",
        "n",
        "p50 ms",
        "p5 ms",
        "p95 ms",
        "95% CI of p50",
        "× process",
        "phases to ready (median ms)",
    ]);
    for row in rows {
        let s = row.startup.as_ref();
        let cell =
            |f: fn(&crate::measure::stats::Summary) -> f64| s.map_or("–".into(), |s| ms(f(s)));
        let phases = row
            .phases
            .iter()
            .map(|(name, ns)| format!("{name} {}", ms(*ns)))
            .collect::<Vec<_>>()
            .join(" · ");
        b.push_record([
            row.backend.clone(),
            match (s.map_or(0, |s| s.n), row.failed) {
                (n, 0) => n.to_string(),
                (n, f) => format!("{n} ({f} failed)"),
            },
            cell(|s| s.median),
            cell(|s| s.p5),
            cell(|s| s.p95),
            s.map_or("–".into(), |s| {
                format!("{}–{}", ms(s.ci_low), ms(s.ci_high))
            }),
            row.vs_process.as_ref().map_or("–".into(), |r| {
                format!("{:.2}× ({:.2}–{:.2})", r.median, r.ci_low, r.ci_high)
            }),
            phases,
        ]);
    }
    let mut table = b.build();
    table
        .with(Style::sharp())
        .with(Modify::new(Columns::new(1..7)).with(Alignment::right()));
    table.to_string()
}
