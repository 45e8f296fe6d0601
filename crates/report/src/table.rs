//! Tables: built once from figures, rendered three ways — for the terminal (tabled, box
//! drawing), as Markdown (for a student's coursework) and as HTML (by the report's template,
//! from the same [`Table`] serialised).

use crate::claims::Assessment;
use crate::format;
use crate::format::NONE;
use crate::summary::{
    ChecksumMismatch, DensitySeries, ImageRow, InterferenceRow, Isolation, LatencyRow, MemoryRow,
    StartupRow, ThroughputRow,
};
use isolab_host::stats::{Summary, N_TOO_SMALL};
use isolab_results::Config;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use tabled::builder::Builder;
use tabled::settings::object::Columns;
use tabled::settings::{Alignment, Modify, Style};

/// The most rows a table draws on a terminal ([`Table::terminal`]).
pub const TERMINAL_ROWS: usize = 1000;
/// The most columns a table draws on a terminal: the isolation table has one per backend.
pub const TERMINAL_COLUMNS: usize = 64;

/// One cell: its text and, for the HTML report, a class that colours it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Cell {
    /// What it says.
    pub text: String,
    /// CSS class: `host` (same as the host's view), `warn`, or a verdict.
    pub class: Option<&'static str>,
}

impl From<String> for Cell {
    fn from(text: String) -> Cell {
        Cell { text, class: None }
    }
}

impl From<&str> for Cell {
    fn from(text: &str) -> Cell {
        Cell::from(text.to_string())
    }
}

/// A table of figures.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Table {
    /// Column headers.
    pub columns: Vec<String>,
    /// Which columns hold numbers (aligned right).
    pub numeric: Vec<bool>,
    /// The rows.
    pub rows: Vec<Vec<Cell>>,
    /// Lines printed under the table.
    pub notes: Vec<String>,
}

impl Table {
    pub(crate) fn new(columns: &[&str], numeric: &[usize]) -> Table {
        Table {
            columns: columns.iter().map(|c| c.to_string()).collect(),
            numeric: (0..columns.len()).map(|i| numeric.contains(&i)).collect(),
            rows: vec![],
            notes: vec![],
        }
    }

    pub(crate) fn push(&mut self, row: Vec<Cell>) {
        self.rows.push(row);
    }

    /// True when the table has no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Cell text for text renderings: a cell that matches the host's view is starred.
    fn plain(cell: &Cell) -> String {
        if cell.class == Some("host") {
            format!("{} *", cell.text)
        } else {
            cell.text.clone()
        }
    }

    /// The table with box-drawing borders, numbers aligned right, notes under it. Text from
    /// results files is made [`format::printable`] first.
    ///
    /// A terminal is for reading: at most [`TERMINAL_ROWS`] rows and [`TERMINAL_COLUMNS`]
    /// columns are drawn, and a line says where the rest is (the report's `tables.md` and page
    /// hold every row). The lab's own tables are far smaller; a hostile file's would keep the
    /// terminal busy for minutes, and the table is laid out in one call that cannot stop half-way.
    pub fn terminal(&self) -> String {
        if self.columns.len() > TERMINAL_COLUMNS {
            let mut out = format!(
                "({} columns and {} rows: too wide for a terminal; the report's tables.md has \
                 this table)",
                self.columns.len(),
                self.rows.len()
            );
            for n in &self.notes {
                out.push('\n');
                out.push_str(&format::printable(n));
            }
            return out;
        }
        let mut b = Builder::default();
        b.push_record(self.columns.iter().map(|c| format::printable(c)));
        for row in self.rows.iter().take(TERMINAL_ROWS) {
            b.push_record(row.iter().map(|c| format::printable(&Table::plain(c))));
        }
        let mut t = b.build();
        t.with(Style::sharp());
        for (i, numeric) in self.numeric.iter().enumerate() {
            if *numeric {
                t.with(Modify::new(Columns::one(i)).with(Alignment::right()));
            }
        }
        let mut out = t.to_string();
        if self.rows.len() > TERMINAL_ROWS {
            out.push_str(&format!(
                "\n… and {} more rows: the report's tables.md has every one.",
                self.rows.len() - TERMINAL_ROWS
            ));
        }
        for n in &self.notes {
            out.push('\n');
            out.push_str(&format::printable(n));
        }
        out
    }

    /// The table in GitHub-flavoured Markdown, every cell escaped ([`format::markdown`]).
    pub fn markdown(&self) -> String {
        let esc = format::markdown;
        let mut out = String::new();
        let line = |cells: Vec<String>| format!("| {} |\n", cells.join(" | "));
        out.push_str(&line(self.columns.iter().map(|c| esc(c)).collect()));
        out.push_str(&line(
            self.numeric
                .iter()
                .map(|n| if *n { "---:" } else { "---" }.to_string())
                .collect(),
        ));
        for row in &self.rows {
            // A stop request ends a long table; the text is then thrown away.
            if isolab_host::interrupt::work_stopped() {
                break;
            }
            out.push_str(&line(row.iter().map(|c| esc(&Table::plain(c))).collect()));
        }
        for n in &self.notes {
            out.push('\n');
            out.push_str(&esc(n));
            out.push('\n');
        }
        out
    }
}

/// A summary's 95% CI as `low–high` through `f` (each end with its own unit), or "n too small"
/// when its samples are too few for one ([`Summary::ci`]).
fn ci(s: &Summary, f: impl Fn(f64) -> String) -> String {
    match s.ci() {
        Some((low, high)) => format!("{}–{}", f(low), f(high)),
        None => N_TOO_SMALL.to_string(),
    }
}

/// Say under `t` what "n too small" means, when one of its cells says it.
fn explain_too_small(t: &mut Table) {
    if t.rows
        .iter()
        .flatten()
        .any(|c| c.text.contains(N_TOO_SMALL))
    {
        t.notes.push(TOO_SMALL_NOTE.into());
    }
}

/// The note under a table with an interval it cannot give.
pub const TOO_SMALL_NOTE: &str = "n too small: fewer than 6 samples (rounds, pairs or ladder \
    steps), from which no 95% interval of a median can be had — even the widest, from the \
    smallest sample to the largest, holds the median less than 95% of the time. Run more \
    rounds (--runs 6 or more).";

fn or_none(s: Option<&Summary>, f: impl Fn(&Summary) -> String) -> Cell {
    Cell::from(s.map_or(NONE.to_string(), f))
}

fn count(n: usize, failed: usize) -> Cell {
    let text = match failed {
        0 => n.to_string(),
        f => format!("{n} ({f} failed)"),
    };
    Cell {
        text,
        class: (failed > 0).then_some("warn"),
    }
}

/// The start-up table: one row per backend.
pub fn startup(rows: &[StartupRow]) -> Table {
    let mut t = Table::new(
        &[
            "backend",
            "n",
            "p50 ms",
            "CPU ms (p50)",
            "p5 ms",
            "p95 ms",
            "95% CI of p50",
            "× process",
            "phases to ready (median ms)",
        ],
        &[1, 2, 3, 4, 5, 6, 7],
    );
    for row in rows {
        let s = row.startup.as_ref();
        let phases = row
            .phases
            .iter()
            .map(|(name, ns)| format!("{name} {}", format::ms(*ns)))
            .collect::<Vec<_>>()
            .join(" · ");
        t.push(vec![
            row.label.as_str().into(),
            count(s.map_or(0, |s| s.n), row.failed),
            or_none(s, |s| format::ms(s.median)),
            or_none(row.cpu.as_ref(), |c| format::ms(c.median)),
            or_none(s, |s| format::ms(s.p5)),
            or_none(s, |s| format::ms(s.p95)),
            or_none(s, |s| ci(s, format::ms)),
            or_none(row.vs_process.as_ref(), format::ratio),
            phases.into(),
        ]);
    }
    if rows
        .iter()
        .any(|r| r.startup.is_some_and(|s| s.outliers > 0))
    {
        let o: Vec<String> = rows
            .iter()
            .filter_map(|r| {
                let s = r.startup?;
                (s.outliers > 0).then(|| format!("{} {}", r.label, s.outliers))
            })
            .collect();
        t.notes.push(format!(
            "Outliers (beyond 1.5 IQR, kept in every figure): {}.",
            o.join(", ")
        ));
    }
    if rows.iter().any(|r| r.cpu.is_some()) {
        t.notes.push(
            "CPU ms: user + system time of the lab's children over a whole sample, from launch \
             to exit (the runtime's or VMM's processes and the workload, threads that run at once \
             included; not Docker's daemons, which the lab did not start): it also holds what \
             follows `ready` — the workload's end, the teardown — so it can exceed the start-up's \
             wall time. On a busy machine wall time grows, CPU time much less."
                .into(),
        );
    }
    for r in rows.iter().filter(|r| !r.traced.is_empty()) {
        let top: Vec<String> = crate::summary::largest(&r.traced, 3)
            .iter()
            .map(|s| format!("{} {}", s.name, format::ms(s.median_ns)))
            .collect();
        t.notes.push(format!(
            "{} from the kernel's events, largest phases (median ms, each to the next event): {}.",
            r.label,
            top.join(" · ")
        ));
    }
    let costs: Vec<String> = rows
        .iter()
        .filter_map(|r| {
            let c = r.trace_cost?;
            Some(format!(
                "{} {:+.1}% ({} traced {} vs {} untraced {})",
                r.label,
                c.fraction() * 100.0,
                c.n_traced,
                format::ms(c.traced_ns),
                c.n_untraced,
                format::ms(c.untraced_ns)
            ))
        })
        .collect();
    if !costs.is_empty() {
        t.notes.push(format!(
            "Tracing cost (median start-up, traced rounds vs untraced rounds of the same run): {}.",
            costs.join(" · ")
        ));
    }
    explain_too_small(&mut t);
    t
}

/// The memory table: one row per backend and working-set size.
pub fn memory(rows: &[MemoryRow]) -> Table {
    let mut t = Table::new(
        &[
            "backend",
            "working set MiB",
            "n",
            "fixed MiB at ready (95% CI)",
            "touched MiB (done − ready)",
            "kernel MiB",
            "PSS / USS MiB",
            "guest RAM / touched MiB",
            "VMM overhead MiB",
        ],
        &[1, 2, 3, 4, 5, 6, 7, 8],
    );
    let mib = |s: &Summary| format::mib(s.median);
    let pair = |a: Option<&Summary>, b: Option<&Summary>| match (a, b) {
        (None, None) => NONE.to_string(),
        (a, b) => format!(
            "{} / {}",
            a.map_or(NONE.into(), mib),
            b.map_or(NONE.into(), mib)
        ),
    };
    for r in rows {
        t.push(vec![
            r.label.as_str().into(),
            r.mib.to_string().into(),
            count(r.n, r.failed),
            or_none(r.fixed.as_ref(), |s| format::with_ci(s, format::mib)),
            or_none(r.touched.as_ref(), mib),
            or_none(r.kernel_at_ready.as_ref(), mib),
            pair(r.pss_at_ready.as_ref(), r.uss_at_ready.as_ref()).into(),
            pair(r.guest_ram.as_ref(), r.guest_touched.as_ref()).into(),
            or_none(r.vmm_overhead.as_ref(), mib),
        ]);
    }
    explain_too_small(&mut t);
    t
}

/// The throughput table: one row per workload and backend.
pub fn throughput(rows: &[ThroughputRow], mismatches: &[ChecksumMismatch]) -> Table {
    let mut t = Table::new(
        &[
            "workload",
            "backend",
            "n",
            "rate p50",
            "95% CI",
            "× process (95% CI)",
        ],
        &[2, 3, 4, 5],
    );
    let mismatched: HashSet<&str> = mismatches.iter().map(|m| m.workload.as_str()).collect();
    for r in rows {
        let unit = r.unit.per_second();
        let name = crate::summary::workload_name(&r.workload);
        let bad = mismatched.contains(name.as_str());
        t.push(vec![
            Cell {
                text: if bad {
                    format!("{name} (CHECKSUM MISMATCH)")
                } else {
                    name
                },
                class: bad.then_some("warn"),
            },
            r.label.as_str().into(),
            count(r.rate.map_or(0, |s| s.n), r.failed),
            or_none(r.rate.as_ref(), |s| {
                format!("{}{unit}", format::rate(s.median))
            }),
            or_none(r.rate.as_ref(), |s| ci(s, format::rate)),
            or_none(r.vs_process.as_ref(), format::ratio),
        ]);
    }
    t.notes.extend(mismatch_lines(mismatches));
    explain_too_small(&mut t);
    t
}

/// A victim's fate in one condition: `6/6` completed with its own checksum, or what went
/// wrong.
fn survived(r: &InterferenceRow) -> Cell {
    if r.is_not_measured() {
        return Cell {
            text: NOT_MEASURED.into(),
            class: Some("warn"),
        };
    }
    let ok = r.n - r.failed - r.wrong;
    let mut text = format!("{ok}/{}", r.n);
    if r.failed > 0 {
        text.push_str(&format!(", {} did not complete", r.failed));
    }
    if r.wrong > 0 {
        text.push_str(&format!(", {} wrong checksum", r.wrong));
    }
    Cell {
        text,
        class: (!r.survived()).then_some("warn"),
    }
}

/// What an interference row is about, its configuration aside: backend, victim, aggressor and
/// how many.
type Condition<'a> = (&'a str, &'a str, &'a str, u32);

fn condition(r: &InterferenceRow) -> Condition<'_> {
    (
        r.backend.as_str(),
        r.victim.kernel.as_str(),
        r.aggressor.as_str(),
        r.count,
    )
}

/// The interference experiment's slowdowns: one row per backend, victim, aggressor and number
/// of aggressors, the two configurations side by side.
pub fn interference(rows: &[InterferenceRow]) -> Table {
    let mut t = Table::new(
        &[
            "backend",
            "victim",
            "beside",
            "slowdown, unlimited (95% CI)",
            "slowdown, limited (95% CI)",
            "victim completed, correct (unlimited · limited)",
        ],
        &[3, 4],
    );
    // A condition's row in each configuration (the first of each), found in one lookup.
    let mut first: HashMap<(Condition, Config), &InterferenceRow> = HashMap::new();
    for r in rows {
        first.entry((condition(r), r.config)).or_insert(r);
    }
    let mut done: HashSet<Condition> = HashSet::new();
    for r in rows {
        let key = condition(r);
        if !done.insert(key) {
            continue;
        }
        let find = |c: Config| first.get(&(key, c)).copied();
        let (u, l) = (find(Config::Unlimited), find(Config::Limited));
        let slow = |x: Option<&InterferenceRow>| match x {
            Some(x) if x.is_not_measured() => Cell {
                text: NOT_MEASURED.into(),
                class: Some("warn"),
            },
            _ => or_none(x.and_then(|x| x.slowdown.as_ref()), format::ratio),
        };
        let fate = match (u, l) {
            (Some(u), Some(l)) => {
                let (a, b) = (survived(u), survived(l));
                Cell {
                    class: a.class.or(b.class),
                    text: format!("{} · {}", a.text, b.text),
                }
            }
            (Some(x), None) | (None, Some(x)) => survived(x),
            (None, None) => NONE.into(),
        };
        t.push(vec![
            r.label.as_str().into(),
            crate::summary::workload_name(&r.victim).into(),
            format!("{} × {}", r.count, r.aggressor).into(),
            slow(u),
            slow(l),
            fate,
        ]);
    }
    t.notes.push(
        "Slowdown: the victim's time beside its neighbours over its time alone, in the same \
         round and configuration (above 1× is slower). Limited: every instance, victim \
         included, under the same limits."
            .into(),
    );
    explain_too_small(&mut t);
    t.notes.extend(not_measured_lines(rows));
    t
}

/// What a cell says of a condition none of whose samples was measured.
const NOT_MEASURED: &str = "not measured";

/// One line per condition with samples left out because an aggressor did not do its work:
/// which, and why.
fn not_measured_lines(rows: &[InterferenceRow]) -> Vec<String> {
    rows.iter()
        .filter_map(|r| {
            Some(format!(
                "{} {} beside {} × {} ({}): {}.",
                r.label,
                crate::summary::workload_name(&r.victim),
                r.count,
                r.aggressor,
                r.config.name(),
                r.not_measured_text()?
            ))
        })
        .collect()
}

/// What stopped each neighbour's failure (fork bomb, memory hog), and whether the victim
/// survived it.
pub fn stability(rows: &[InterferenceRow]) -> Table {
    let mut t = Table::new(
        &[
            "backend",
            "neighbour",
            "configuration",
            "victim completed, correct",
            "what stopped the neighbour",
        ],
        &[],
    );
    for r in rows
        .iter()
        .filter(|r| r.aggressor == "fork" || r.aggressor == "oom")
    {
        let what = match r.aggressor.as_str() {
            "fork" => "fork bomb",
            _ => "memory hog",
        };
        t.push(vec![
            r.label.as_str().into(),
            format!("{} × {what}", r.count).into(),
            r.config.name().into(),
            survived(r),
            r.stability.describe(&r.aggressor).into(),
        ]);
    }
    t
}

/// The victims' times alone, against which every slowdown is measured.
pub fn interference_alone(
    alone: &[(
        String,
        String,
        isolab_results::WorkloadRecord,
        Config,
        Summary,
    )],
) -> Table {
    let mut t = Table::new(
        &[
            "backend",
            "victim",
            "configuration",
            "n",
            "time alone (95% CI)",
        ],
        &[3, 4],
    );
    for (_, label, w, config, s) in alone {
        t.push(vec![
            label.as_str().into(),
            crate::summary::workload_name(w).into(),
            config.name().into(),
            s.n.to_string().into(),
            format::with_ci(s, format::duration).into(),
        ]);
    }
    explain_too_small(&mut t);
    t
}

/// The image table (`lab run images`): what N instances of one layered image cost the host,
/// for the ladders that ran on it.
pub fn shared_image(series: &[DensitySeries]) -> Table {
    let mut t = Table::new(
        &[
            "backend",
            "max alive",
            "host MiB per more instance (95% CI)",
            "image in page cache MiB",
            "cold start",
            "warm start p50",
            "KSM saved MiB",
        ],
        &[1, 2, 3, 4, 5, 6],
    );
    let mib = |b: f64| format!("{:.2}", b / 1048576.0);
    for d in series.iter().filter(|d| d.per_instance_on_image.is_some()) {
        let top = d.top();
        t.push(vec![
            d.label.as_str().into(),
            d.max_n().to_string().into(),
            or_none(d.per_instance_on_image.as_ref(), |s| {
                format::with_ci(s, mib)
            }),
            top.and_then(|s| s.image.image_cache_bytes)
                .map_or_else(|| format::NONE.to_string(), |b| mib(b as f64))
                .into(),
            d.cold_start_ns()
                .map_or_else(|| format::NONE.to_string(), |n| format::duration(n as f64))
                .into(),
            or_none(d.warm_start().as_ref(), |s| format::duration(s.median)),
            top.and_then(|s| s.image.ksm_pages_sharing)
                .map_or_else(|| format::NONE.to_string(), |p| mib(p as f64 * 4096.0))
                .into(),
        ]);
    }
    t.notes.push(
        "Host memory of N instances = their cgroups' anonymous and kernel memory, plus the \
         image's pages in the host's page cache counted once (mincore), less what KSM merged; \
         a row gives what each step added per instance. Cold: the first instance, the image \
         dropped from the page cache before it."
            .into(),
    );
    explain_too_small(&mut t);
    t
}

/// The lab's image: its layers, and Docker's build of them, then its rebuild after only the top
/// layer changed — which steps came from the layer cache, and the bytes each layer holds.
pub fn image_layers(image: &isolab_results::ImageRecord) -> Table {
    let mut t = Table::new(
        &[
            "layer",
            "bytes",
            "docker: first build",
            "docker: after the app layer changed",
        ],
        &[1],
    );
    let step_of = |b: &isolab_resources::image::docker::Build, i: usize| {
        // `FROM scratch` makes no layer: layer i is step i + 1.
        b.steps.get(i + 1).map_or(format::NONE.to_string(), |s| {
            let bytes = b.layers.get(i).map_or(0, |l| l.1);
            match s.cached {
                true => format!("from the cache ({})", format::bytes(bytes as f64)),
                false => format!("built: {} written", format::bytes(bytes as f64)),
            }
        })
    };
    for (i, (name, bytes)) in image.layers.iter().enumerate() {
        let (first, again) = match &image.docker {
            Some(d) => (step_of(&d.first, i), step_of(&d.rebuild, i)),
            None => (format::NONE.into(), format::NONE.into()),
        };
        t.push(vec![
            name.as_str().into(),
            format::bytes(*bytes as f64).into(),
            first.into(),
            again.into(),
        ]);
    }
    // How VMs got the image (only VMs ran on a disk of it, but the note is true either way).
    t.notes.push(
        if image.vm_disk_shared {
            "VMs booted from one read-only ext4 disk of these layers, shared (--shared-disk)."
        } else {
            "Each VM booted from a copy of its own of an ext4 disk of these layers."
        }
        .into(),
    );
    if let Some(d) = &image.docker {
        t.notes.push(format!(
            "docker build wrote {} the first time ({}), {} after only the app layer changed ({}).",
            format::bytes(d.first.written_bytes as f64),
            format::duration(d.first.build_ns as f64),
            format::bytes(d.rebuild.written_bytes as f64),
            format::duration(d.rebuild.build_ns as f64),
        ));
    }
    t
}

/// The latency table: one row per workload and backend that timed single requests.
pub fn latency(rows: &[LatencyRow]) -> Table {
    let mut t = Table::new(
        &[
            "workload",
            "backend",
            "n",
            "latency p50",
            "latency p99",
            "p50 × process (95% CI)",
        ],
        &[2, 3, 4, 5],
    );
    for r in rows {
        t.push(vec![
            crate::summary::workload_name(&r.workload).into(),
            r.label.as_str().into(),
            r.p50.map_or(0, |s| s.n).to_string().into(),
            or_none(r.p50.as_ref(), |s| format::with_ci(s, format::duration)),
            or_none(r.p99.as_ref(), |s| format::duration(s.median)),
            or_none(r.p50_vs_process.as_ref(), format::ratio),
        ]);
    }
    t.notes.push(
        "Each run times every request alone and reports its median (p50) and 99th percentile \
         (p99); a row gives the median of the runs' figures. Above 1× process is slower."
            .into(),
    );
    explain_too_small(&mut t);
    t
}

/// One loud line per workload whose checksums disagree.
pub fn mismatch_lines(mismatches: &[ChecksumMismatch]) -> Vec<String> {
    mismatches
        .iter()
        .map(|m| {
            format!(
                "CHECKSUM MISMATCH on {}: {} — some backend computed something else; its figures \
                 for this workload are not comparable.",
                m.workload,
                m.each()
            )
        })
        .collect()
}

/// The density table: one row per backend.
pub fn density(series: &[DensitySeries]) -> Table {
    let mut t = Table::new(
        &[
            "backend",
            "max alive",
            "MiB per instance (95% CI)",
            "MemAvailable drop MiB per instance",
            "launches/s p50",
            "idle CPU at max (% of a core)",
            "teardown",
            "stopped because",
        ],
        &[1, 2, 3, 4, 5, 6],
    );
    for d in series {
        let last = d.steps.last();
        let idle = last
            .filter(|s| s.idle_window_ns > 0)
            .map_or(NONE.to_string(), |s| {
                format!(
                    "{:.2}",
                    s.idle_cpu_ns as f64 / s.idle_window_ns as f64 * 100.0
                )
            });
        t.push(vec![
            d.label.as_str().into(),
            d.max_n().to_string().into(),
            or_none(d.per_instance.as_ref(), |s| format::with_ci(s, format::mib)),
            or_none(d.per_instance_host.as_ref(), |s| format::mib(s.median)),
            or_none(d.launch_rate.as_ref(), |s| format::sig3(s.median)),
            idle.into(),
            d.end
                .as_ref()
                .map_or(NONE.to_string(), |e| format::duration(e.teardown_ns as f64))
                .into(),
            d.end
                .as_ref()
                .map_or("(no end record)".to_string(), |e| e.reason.clone())
                .into(),
        ]);
    }
    explain_too_small(&mut t);
    t
}

/// The isolation table: one row per probe fact, one column per backend. `with_explanations`
/// adds the one-line explanation of each fact (HTML, Markdown); terminals are too narrow.
pub fn isolation(iso: &Isolation, with_explanations: bool, max_chars: Option<usize>) -> Table {
    let mut columns = vec!["fact"];
    if with_explanations {
        columns.push("what it tells");
    }
    columns.extend(iso.labels.iter().map(String::as_str));
    let mut t = Table::new(&columns, &[]);
    let cut = |v: &str| match max_chars {
        Some(n) if v.chars().count() > n => {
            format!("{}…", v.chars().take(n - 1).collect::<String>())
        }
        _ => v.to_string(),
    };
    for row in &iso.rows {
        let mut cells: Vec<Cell> = vec![row.key.as_str().into()];
        if with_explanations {
            cells.push(row.explanation.as_str().into());
        }
        for (v, same) in row.values.iter().zip(&row.same_as_host) {
            cells.push(Cell {
                text: v.as_deref().map_or(NONE.to_string(), cut),
                class: same.then_some("host"),
            });
        }
        t.push(cells);
    }
    if iso.served_by.iter().any(Option::is_some) {
        let mut cells: Vec<Cell> = vec!["served by".into()];
        if with_explanations {
            cells.push("Who answered, when it was not the workload's own kernel.".into());
        }
        cells.extend(
            iso.served_by
                .iter()
                .map(|s| Cell::from(s.clone().unwrap_or_else(|| "its kernel".into()))),
        );
        t.push(cells);
    }
    let note = if iso.host_view.is_some() {
        "Marked cells (* in text) equal the host's own view: what the process backend saw."
    } else {
        "Marked cells (* in text) equal the host's kernel release or host name (from the \
         environment record: no process backend ran the probe)."
    };
    t.notes.push(note.into());
    if iso.left_out > 0 {
        t.notes.push(format!(
            "{} more facts the runs reported are left out: the table shows at most {} besides \
             the {} it explains.",
            iso.left_out,
            crate::summary::MAX_EXTRA_FACTS,
            crate::summary::PROBE_FACTS.len()
        ));
    }
    t
}

/// The image table.
pub fn images(rows: &[ImageRow]) -> Table {
    let mut t = Table::new(&["backend", "image", "what it holds"], &[1]);
    for r in rows {
        t.push(vec![
            r.label.as_str().into(),
            format::bytes(r.bytes as f64).into(),
            r.what.clone().unwrap_or_default().into(),
        ]);
    }
    t
}

/// The claims ledger as a table (`host` column when several hosts are compared).
pub fn claims(ledger: &[(String, Assessment)], with_host: bool, with_figures: bool) -> Table {
    let mut columns = vec!["claim"];
    if with_host {
        columns.push("host");
    }
    columns.push("verdict");
    if with_figures {
        columns.push("figures");
    }
    columns.push("why");
    let mut t = Table::new(&columns, &[]);
    for (host, a) in ledger {
        let mut cells: Vec<Cell> = vec![a.claim.statement.into()];
        if with_host {
            cells.push(host.as_str().into());
        }
        cells.push(Cell {
            text: a.verdict.label().into(),
            class: Some(a.verdict.class()),
        });
        if with_figures {
            cells.push(a.figures.join("\n").into());
        }
        let mut why = a.why.clone();
        for p in &a.parts {
            why.push_str(&format!("\n{} — {}", p.verdict.label(), p.why));
        }
        for c in &a.caveats {
            why.push_str(&format!(" Caveat: {c}"));
        }
        cells.push(why.into());
        t.push(cells);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::Fixture;
    use crate::summary;

    /// The layers' table says how VMs got the image: a copy each, or one shared read-only disk.
    #[test]
    fn the_layers_table_says_how_vms_got_the_image() {
        let mut image = isolab_results::ImageRecord {
            layers: vec![("base".into(), 64 << 20), ("app".into(), 30)],
            lib_mib: 64,
            vm_disk_shared: false,
            docker: None,
        };
        let notes = |i: &isolab_results::ImageRecord| image_layers(i).notes.join(" ");
        assert!(
            notes(&image).contains("a copy of its own"),
            "{}",
            notes(&image)
        );
        image.vm_disk_shared = true;
        assert!(notes(&image).contains("--shared-disk"), "{}", notes(&image));
    }

    #[test]
    fn one_table_three_renderings() {
        let mut f = Fixture::new("startup");
        for round in 0..6 {
            f.startup("process", round, 700_000);
            f.startup("container", round, 1_400_000);
        }
        let t = startup(&summary::startup(&f.results()));
        let term = t.terminal();
        assert!(
            term.contains("p50 ms") && term.contains("2.00× (2.00–2.00)"),
            "{term}"
        );
        assert!(
            term.contains("cgroup 0.140 · fork 0.280 · ready 0.980"),
            "{term}"
        );
        let md = t.markdown();
        assert!(md.starts_with("| backend | n | p50 ms |"), "{md}");
        assert!(md.contains("| --- | ---: |"), "{md}");
        assert!(md.contains("| container | 6 | 1.400 |"), "{md}");
    }

    /// Fewer rounds than an interval needs: "n too small" in its place, and a note that says
    /// what it means.
    #[test]
    fn too_few_rounds_give_no_interval() {
        let mut f = Fixture::new("startup");
        for round in 0..5 {
            f.startup("process", round, 700_000);
            f.startup("container", round, 1_400_000);
        }
        let term = startup(&summary::startup(&f.results())).terminal();
        assert!(term.contains("2.00× (n too small)"), "{term}");
        assert!(!term.contains("–1.400"), "{term}");
        assert!(
            term.contains(TOO_SMALL_NOTE.split(':').next().unwrap()),
            "{term}"
        );
        let min = isolab_host::stats::MIN_CI_SAMPLES;
        assert!(TOO_SMALL_NOTE.contains(&format!("fewer than {min} samples")));
        assert!(TOO_SMALL_NOTE.contains(&format!("--runs {min} or more")));
    }

    #[test]
    fn markdown_escapes_cells_and_stars_host_matches() {
        let mut t = Table::new(&["a", "b"], &[]);
        t.push(vec![
            "x|y<script>".into(),
            Cell {
                text: "6.1".into(),
                class: Some("host"),
            },
        ]);
        assert!(
            t.markdown().contains("| x\\|y&lt;script&gt; | 6.1 \\* |"),
            "{}",
            t.markdown()
        );
        t.push(vec!["\u{1b}[31mred".into(), "".into()]);
        assert!(t.terminal().contains("\\u{1b}[31mred"), "{}", t.terminal());
        assert!(!t.terminal().contains('\u{1b}'));
    }
}
