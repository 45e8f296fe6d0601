//! The HTML report: one self-contained page (inline SVG and CSS, no script, nothing fetched from
//! the network) that prints well, rendered with minijinja from `templates/index.html`.
//!
//! This module gathers what the template shows — figures, tables, plots and the claims ledger,
//! grouped by host — into plain serialisable structs; the template only lays them out and holds
//! the explanatory text.

use crate::claims::{Assessment, Verdict};
use crate::plot::Palette;
use crate::summary::ThroughputRow;
use crate::table::Table;
use crate::{backends, claims, format, plot, stop_point, summary, table, ReportError};
use isolab_host::facts::KvmKind;
use isolab_host::files::OutDir;
use isolab_results::{Family, Results};
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::path::{Component, Path, PathBuf};

/// The page template, embedded in the binary so a report needs no files besides the results.
const TEMPLATE: &str = include_str!("templates/index.html");
/// The page's style sheet, inlined into the page.
const STYLE: &str = include_str!("templates/style.css");

/// Errors of the HTML rendering.
#[derive(Debug, thiserror::Error)]
pub enum HtmlError {
    /// The template could not be rendered.
    #[error("rendering the report template: {0:#}")]
    Template(#[from] minijinja::Error),
}

/// A plot, inline and as a file.
#[derive(Debug, Serialize)]
struct Figure {
    /// File name of the SVG in the report directory.
    file: String,
    /// The SVG itself.
    svg: String,
    /// What it shows and how to read it.
    caption: String,
}

/// The part of a section that comes from one results file.
#[derive(Debug, Default, Serialize)]
struct Block {
    /// "on host X" / the file, when the report holds more than one of this experiment.
    heading: Option<String>,
    figures: Vec<Figure>,
    tables: Vec<Table>,
    notes: Vec<String>,
    warnings: Vec<String>,
}

/// One line of the claims ledger.
#[derive(Debug, Serialize)]
struct LedgerRow {
    id: &'static str,
    statement: &'static str,
    host: String,
    verdict: &'static str,
    class: &'static str,
    figures: Vec<String>,
    why: String,
    caveats: Vec<String>,
    /// The claim judged resource by resource.
    parts: Vec<PartRow>,
}

/// One resource's verdict under a claim.
#[derive(Debug, Serialize)]
struct PartRow {
    verdict: &'static str,
    class: &'static str,
    why: String,
}

/// A link to a results file.
#[derive(Debug, Serialize)]
struct RawLink {
    href: String,
    schema: String,
    experiment: String,
    host: String,
    runs: usize,
    density_steps: usize,
}

/// Everything the template shows.
#[derive(Debug, Serialize)]
struct Page {
    title: String,
    hosts: Vec<String>,
    multi_host: bool,
    summary: Vec<String>,
    warnings: Vec<String>,
    ledger: Vec<LedgerRow>,
    claims: Vec<claims::Claim>,
    common_rule: &'static str,
    min_pairs: usize,
    /// The fewest samples that give a confidence interval.
    min_ci: usize,
    /// The report's bootstrap seed, as written in the code.
    bootstrap_seed: String,
    families: Vec<FamilyRow>,
    startup: Vec<Block>,
    memory: Vec<Block>,
    throughput: Vec<Block>,
    density: Vec<Block>,
    isolation: Vec<Block>,
    images: Vec<Block>,
    interference: Vec<Block>,
    /// Cold against restored starts (`lab run restore`), file by file.
    restore: Vec<Block>,
    /// The latest validation of each machine against the field's tools (`lab validate`).
    validation: Vec<Block>,
    machines: Vec<Machine>,
    files: Table,
    nested_pvm: Option<&'static str>,
    nested_pvm_vms: bool,
    raw: Vec<RawLink>,
    style: &'static str,
}

/// An isolation family and the backends of the report that belong to it.
#[derive(Debug, Serialize)]
struct FamilyRow {
    name: &'static str,
    describe: &'static str,
    backends: String,
}

/// One machine's facts.
#[derive(Debug, Serialize)]
struct Machine {
    host: String,
    facts: Table,
}

/// A results file and the host it belongs to.
struct Dataset<'a> {
    results: &'a Results,
    host: String,
}

/// The facts that identify a machine: files that agree on all of them are from one host.
fn machine_key(r: &Results) -> String {
    let e = &r.header.environment;
    format!(
        "{}\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{:?}\u{1f}{}\u{1f}{}",
        e.hostname, e.cpu_model, e.cpus, e.memory_bytes, e.kernel_release, e.kvm, e.cgroup, e.uid
    )
}

/// Label every file with its host. Two different machines with the same host name get `#2`, so
/// they are never mixed.
fn datasets<'a>(files: &[&'a Results]) -> (Vec<Dataset<'a>>, Vec<String>) {
    let mut machines: Vec<(String, String)> = Vec::new(); // (key, label)
    let mut label_of: HashMap<String, String> = HashMap::new();
    let mut out = Vec::new();
    for r in files {
        let key = machine_key(r);
        let host = match label_of.get(&key) {
            Some(label) => label.clone(),
            None => {
                let name = &r.header.environment.hostname;
                let same_name = machines
                    .iter()
                    .filter(|(_, l)| l == name || l.starts_with(&format!("{name} #")))
                    .count();
                let label = if same_name == 0 {
                    name.clone()
                } else {
                    format!("{name} #{}", same_name + 1)
                };
                label_of.insert(key.clone(), label.clone());
                machines.push((key, label.clone()));
                label
            }
        };
        out.push(Dataset { results: r, host });
    }
    (out, machines.into_iter().map(|(_, l)| l).collect())
}

/// The directory holding a results file: what names it among others.
fn dir_name(r: &Results) -> String {
    r.path.parent().and_then(|p| p.file_name()).map_or_else(
        || r.path.display().to_string(),
        |n| n.to_string_lossy().into(),
    )
}

/// `to` relative to directory `from`, with `/` separators, for links that survive moving the
/// whole tree (e.g. into a git repository).
fn relative(from: &Path, to: &Path) -> String {
    let (Ok(from), Ok(to)) = (from.canonicalize(), to.canonicalize()) else {
        return to.display().to_string();
    };
    let a: Vec<Component> = from.components().collect();
    let b: Vec<Component> = to.components().collect();
    let common = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut parts: Vec<String> = vec!["..".into(); a.len() - common];
    parts.extend(
        b[common..]
            .iter()
            .map(|c| c.as_os_str().to_string_lossy().into_owned()),
    );
    parts.join("/")
}

/// A relative path as a URL: percent-encode all but unreserved characters and `/`, so the link
/// can go into the page as it is (the template marks it safe).
fn href(path: &str) -> String {
    path.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                char::from(b).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// A file-name-safe version of `s`.
fn slug(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    while out.contains("--") {
        out = out.replace("--", "-");
    }
    out.trim_matches('-').to_string()
}

/// Builds the sections, naming each SVG uniquely (it is written next to the page with it).
struct Builder {
    palette: Palette,
    multi_host: bool,
    /// The SVG files named so far.
    files: HashSet<String>,
    /// For each plot's name, the last number a file of it took (`startup-waterfall-3`), where
    /// the search for a free one resumes.
    numbered: HashMap<String, usize>,
}

impl Builder {
    /// The heading of a file's block: needed when there are several hosts, or several files of
    /// the same experiment on one host.
    fn heading(&self, d: &Dataset, siblings: usize) -> Option<String> {
        match (self.multi_host, siblings > 1) {
            (false, false) => None,
            (true, false) => Some(format!("on {}", d.host)),
            (false, true) => Some(format!("from {}", dir_name(d.results))),
            (true, true) => Some(format!("on {}, from {}", d.host, dir_name(d.results))),
        }
    }

    /// Name `svg` `<name>[-host].svg` (unique within the report) and return the figure. Its
    /// file is written with the page, once the whole report is made.
    fn figure(
        &mut self,
        name: &str,
        d: &Dataset,
        svg: String,
        caption: String,
    ) -> Result<Figure, ReportError> {
        // The plot may have been cut short by a stop request: then it is not kept.
        stop_point()?;
        let mut file = if self.multi_host {
            format!("{name}-{}", slug(&d.host))
        } else {
            name.to_string()
        };
        if self.files.contains(&format!("{file}.svg")) {
            // Names are only ever taken, so every number up to the last one this plot took is
            // still taken: the search for a free one starts after it.
            let n = self.numbered.entry(name.to_string()).or_insert(1);
            loop {
                *n += 1;
                file = format!("{name}-{n}");
                if !self.files.contains(&format!("{file}.svg")) {
                    break;
                }
            }
        }
        let file = format!("{file}.svg");
        self.files.insert(file.clone());
        Ok(Figure { file, svg, caption })
    }

    fn startup(&mut self, d: &Dataset, siblings: usize) -> Result<Option<Block>, ReportError> {
        let rows = summary::startup(d.results);
        if rows.iter().all(|r| r.startup.is_none()) {
            return Ok(None);
        }
        let mut b = Block {
            heading: self.heading(d, siblings),
            ..Block::default()
        };
        if rows.len() > plot::MAX_ROWS {
            b.notes.push(plots_left_out(rows.len(), "backends"));
            b.tables.push(table::startup(&rows));
            return Ok(Some(b));
        }
        if let Some(svg) = plot::startup_waterfall(&rows, false)? {
            b.figures.push(self.figure(
                "startup-waterfall",
                d,
                svg,
                "Each bar is one backend's start-up, split into its phases: the median duration of \
                 each phase, laid end to end (so a bar's length is the sum of the phase medians, \
                 close to but not exactly the median start-up). Phase names are the edges the \
                 lab stamps; each segment is the time from the previous edge to this one."
                    .into(),
            )?);
        }
        if let Some(svg) = plot::startup_waterfall(&rows, true)? {
            b.figures.push(self.figure(
                "startup-waterfall-fast",
                d,
                svg,
                "The same, for the backends that start within 10× of the fastest, on their own \
                 scale: where the time of a process, a container and a microVM goes."
                    .into(),
            )?);
        }
        if let Some(svg) = plot::startup_distribution(&rows, &self.palette)? {
            b.figures.push(
                self.figure(
                    "startup-distribution",
                    d,
                    svg,
                    "Every measured sample is a dot. The box holds the middle half of the samples \
                 (25th to 75th percentile), the black bar is the median, the whiskers reach the \
                 5th and 95th percentiles. The axis turns logarithmic when backends differ by more \
                 than 20×: equal distances are then equal ratios."
                        .into(),
                )?,
            );
        }
        b.tables.push(table::startup(&rows));
        Ok(Some(b))
    }

    fn memory(&mut self, d: &Dataset, siblings: usize) -> Result<Option<Block>, ReportError> {
        let rows = summary::memory(d.results);
        if rows.is_empty() {
            return Ok(None);
        }
        let mut b = Block {
            heading: self.heading(d, siblings),
            ..Block::default()
        };
        let plot = if rows.len() > plot::MAX_ROWS {
            b.notes
                .push(plots_left_out(rows.len(), "backends and working sets"));
            None
        } else {
            plot::memory(&rows, &self.palette)?
        };
        if let Some(svg) = plot {
            b.figures.push(
                self.figure(
                    "memory",
                    d,
                    svg,
                    "Dark: what the instance costs before its workload does anything (runtime, \
                 namespaces or guest, page tables, kernel structures). Light: what the workload's \
                 own working set added. The light part should be about the same everywhere; the \
                 dark part is the price of the isolation."
                        .into(),
                )?,
            );
        }
        b.tables.push(table::memory(&rows));
        Ok(Some(b))
    }

    fn throughput(&mut self, d: &Dataset, siblings: usize) -> Result<Option<Block>, ReportError> {
        let rows = summary::throughput(d.results);
        if rows.is_empty() {
            return Ok(None);
        }
        let mismatches = summary::checksum_mismatches(d.results);
        let mut b = Block {
            heading: self.heading(d, siblings),
            warnings: table::mismatch_lines(&mismatches),
            ..Block::default()
        };
        // One plot per resource: the isolation models pay in different places.
        for resource in isolab_payload::Resource::ALL {
            let of: Vec<ThroughputRow> = rows
                .iter()
                .filter(|r| summary::resource_of(&r.workload) == Some(resource))
                .cloned()
                .collect();
            if of.len() > plot::MAX_ROWS {
                b.notes.push(plots_left_out(
                    of.len(),
                    &format!("{} workloads and backends", resource.name()),
                ));
                continue;
            }
            let Some(svg) = plot::throughput(&of, &self.palette)? else {
                continue;
            };
            let name = format!("throughput-{}", resource.name().replace(' ', "-"));
            b.figures.push(self.figure(
                &name,
                d,
                svg,
                format!(
                    "{}: each bar is the backend's rate divided by the plain process's rate in \
                     the same round, median over rounds; the whisker is the bootstrap 95% \
                     confidence interval. The dashed line at 1× is \"as fast as a process\".",
                    format::capitalise(resource.name())
                ),
            )?);
        }
        b.tables.push(table::throughput(&rows, &mismatches));
        let latency = summary::latency(d.results);
        if !latency.is_empty() {
            b.tables.push(table::latency(&latency));
        }
        Ok(Some(b))
    }

    fn density(&mut self, d: &Dataset, siblings: usize) -> Result<Option<Block>, ReportError> {
        let series = summary::density(d.results);
        if series.is_empty() {
            return Ok(None);
        }
        let mut b = Block {
            heading: self.heading(d, siblings),
            ..Block::default()
        };
        let drawn = series.len() <= plot::MAX_ROWS;
        if !drawn {
            b.notes.push(plots_left_out(series.len(), "backends"));
        }
        if let Some(svg) = drawn
            .then(|| plot::density_memory(&series, &self.palette))
            .transpose()?
            .flatten()
        {
            b.figures.push(
                self.figure(
                    "density-memory",
                    d,
                    svg,
                    "Memory held by N idle instances together. The slope is the cost of one more \
                 instance; where a line starts above zero, the first instance paid a cost the \
                 others share."
                        .into(),
                )?,
            );
        }
        if let Some(svg) = drawn
            .then(|| plot::density_launch(&series, &self.palette))
            .transpose()?
            .flatten()
        {
            b.figures.push(self.figure(
                "density-launch",
                d,
                svg,
                "Instances started per second at each step, while the ones before keep running."
                    .into(),
            )?);
        }
        b.tables.push(table::density(&series));
        if series.iter().any(|s| s.per_instance_on_image.is_some()) {
            if let Some(svg) = drawn
                .then(|| plot::images_memory(&series, &self.palette))
                .transpose()?
                .flatten()
            {
                b.figures.push(self.figure(
                    "images-memory",
                    d,
                    svg,
                    "Host memory of N instances of the lab's layered image: their own memory plus \
                     the image's page cache, counted once, less what KSM merged. Containers \
                     share the image's pages; each VM reads the image into its own memory."
                        .into(),
                )?);
            }
            b.tables.push(table::shared_image(&series));
        }
        if let Some(image) = &d.results.image {
            b.tables.push(table::image_layers(image));
        }
        let memory = d.results.header.environment.memory_bytes;
        for s in &series {
            if let Some(fit) = s.projected_fit(memory) {
                b.notes.push(format!(
                    "{}: at {} per instance, about {:.0} would fit in this host's {} (a projection \
                     from memory alone).",
                    s.label,
                    format::bytes(s.per_instance.map_or(0.0, |p| p.median)),
                    fit,
                    format::bytes(memory as f64)
                ));
            }
        }
        Ok(Some(b))
    }

    fn interference(&mut self, d: &Dataset, siblings: usize) -> Result<Option<Block>, ReportError> {
        let rows = summary::interference(d.results);
        if rows.is_empty() {
            return Ok(None);
        }
        let mut b = Block {
            heading: self.heading(d, siblings),
            warnings: table::mismatch_lines(&summary::checksum_mismatches(d.results)),
            ..Block::default()
        };
        for a in isolab_results::Aggressor::ALL {
            // The plot draws a line per backend, victim and configuration, over a column per
            // number of aggressors.
            let mine = || rows.iter().filter(|r| r.aggressor == a.name());
            let lines: HashSet<_> = mine()
                .map(|r| (&r.backend, &r.victim.kernel, r.config))
                .collect();
            let counts: HashSet<u32> = mine().map(|r| r.count).collect();
            if lines.len() > plot::MAX_ROWS || counts.len() > plot::MAX_ROWS {
                b.notes.push(plots_left_out(
                    lines.len().max(counts.len()),
                    &format!("lines or numbers of aggressors beside {}", a.describe()),
                ));
                continue;
            }
            let Some(svg) = plot::interference(&rows, a.name(), &self.palette)? else {
                continue;
            };
            b.figures.push(self.figure(
                &format!("interference-{}", a.name()),
                d,
                svg,
                format!(
                    "Beside {}: each point is the victim's time beside that many aggressors over its time alone in the same round, median over rounds, with its bootstrap 95% confidence interval. Solid lines: no limits; dashed: every instance under the same limits. 1× (the grey line) is \"as if alone\".",
                    a.describe()
                ),
            )?);
        }
        b.tables
            .push(table::interference_alone(&summary::interference_alone(
                d.results,
            )));
        b.tables.push(table::interference(&rows));
        let stability = table::stability(&rows);
        if !stability.is_empty() {
            b.tables.push(stability);
        }
        if let Some(limited) = d.results.header.settings.get("limited") {
            let chosen = d
                .results
                .header
                .settings
                .get("limited_chosen_by")
                .and_then(|v| v.as_str())
                .unwrap_or("?");
            b.notes.push(format!(
                "Limited configuration ({}): {}.",
                if chosen == "lab" {
                    "the lab's defaults"
                } else {
                    "the limits given"
                },
                describe_limits(limited)
            ));
        }
        Ok(Some(b))
    }

    fn isolation(&mut self, d: &Dataset, siblings: usize) -> Option<Block> {
        let iso = summary::isolation(d.results)?;
        Some(Block {
            heading: self.heading(d, siblings),
            tables: vec![table::isolation(&iso, true, None)],
            ..Block::default()
        })
    }
}

/// The note of a block whose plots are left out: `n` rows of `what` are more than a plot shows
/// ([`plot::MAX_ROWS`]).
fn plots_left_out(n: usize, what: &str) -> String {
    format!(
        "Not plotted: {n} {what} are more than a plot shows legibly (at most {}); the table has \
         every one.",
        plot::MAX_ROWS
    )
}

/// Limits as the results' settings record them, in words: `0.5 CPUs, 512 MiB, 64 processes,
/// 32 MiB/s of disk`.
fn describe_limits(v: &serde_json::Value) -> String {
    let Ok(l) = serde_json::from_value::<isolab_resources::cgroup::Limits>(v.clone()) else {
        return v.to_string();
    };
    let mut parts = Vec::new();
    if let Some(c) = l.cpus {
        parts.push(format!(
            "{} CPU{}",
            format::sig3(c),
            if c == 1.0 { "" } else { "s" }
        ));
    }
    if let Some(m) = l.memory_bytes {
        parts.push(format!("{} of memory", format::bytes(m as f64)));
    }
    if let Some(p) = l.pids {
        parts.push(format!("{p} processes"));
    }
    if let Some(b) = l.io_bps {
        parts.push(format!("{}/s of disk, each way", format::bytes(b as f64)));
    }
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(", ")
    }
}

/// One section's blocks, over the files of `experiment` (by their data, not only their name:
/// a file of another experiment with such data is shown too).
fn section<'a>(
    sets: &'a [Dataset<'a>],
    mut build: impl FnMut(&Dataset<'a>, usize) -> Result<Option<Block>, ReportError>,
) -> Result<Vec<Block>, ReportError> {
    let mut per_host: HashMap<&str, usize> = HashMap::new();
    for d in sets {
        *per_host.entry(&d.host).or_default() += 1;
    }
    let mut blocks = Vec::new();
    for d in sets {
        stop_point()?;
        let siblings = per_host[d.host.as_str()];
        if let Some(b) = build(d, siblings)? {
            blocks.push(b);
        }
    }
    Ok(blocks)
}

fn summary_lines(
    sets: &[Dataset],
    hosts: &[String],
    ledger: &[(String, Assessment)],
) -> Vec<String> {
    let mut lines = Vec::new();
    let mut experiments: Vec<&str> = sets
        .iter()
        .map(|d| d.results.header.experiment.as_str())
        .collect();
    experiments.dedup();
    lines.push(format!(
        "{} results file{} ({}) from {} host{}: {}.",
        sets.len(),
        if sets.len() == 1 { "" } else { "s" },
        experiments.join(", "),
        hosts.len(),
        if hosts.len() == 1 { "" } else { "s" },
        hosts.join(", ")
    ));
    for d in sets
        .iter()
        .filter(|d| d.results.header.experiment == "startup")
    {
        let parts: Vec<String> = summary::startup(d.results)
            .iter()
            .filter_map(|r| {
                let s = r.startup?;
                let vs = r.vs_process.map_or(String::new(), |v| {
                    format!(" ({}× process)", format::sig3(v.median))
                });
                Some(format!("{} {}{vs}", r.label, format::duration(s.median)))
            })
            .collect();
        if !parts.is_empty() {
            lines.push(format!(
                "Start-up on {} (median): {}.",
                d.host,
                parts.join(" · ")
            ));
        }
    }
    for d in sets
        .iter()
        .filter(|d| d.results.header.experiment == "memory")
    {
        let rows = summary::memory(d.results);
        let Some(smallest) = rows.first().map(|r| r.mib) else {
            continue;
        };
        let parts: Vec<String> = rows
            .iter()
            .filter(|r| r.mib == smallest)
            .filter_map(|r| Some(format!("{} {}", r.label, format::bytes(r.fixed?.median))))
            .collect();
        lines.push(format!(
            "Fixed memory cost of one instance on {} (median, at ready): {}.",
            d.host,
            parts.join(" · ")
        ));
    }
    for host in hosts {
        let mine: Vec<&Assessment> = ledger
            .iter()
            .filter(|(h, _)| h == host)
            .map(|(_, a)| a)
            .collect();
        let n = |v: Verdict| mine.iter().filter(|a| a.verdict == v).count();
        let on = if hosts.len() > 1 {
            format!(" on {host}")
        } else {
            String::new()
        };
        lines.push(format!(
            "Claims ledger{on}: {} supported, {} not supported, {} depending on the backend or on what the data cannot test, {} without data in this report.",
            n(Verdict::Supported),
            n(Verdict::NotSupported),
            n(Verdict::Depends),
            n(Verdict::NoData)
        ));
    }
    lines
}

fn warnings(sets: &[Dataset]) -> Vec<String> {
    let mut w = Vec::new();
    for d in sets {
        let r = d.results;
        let at = format!("{} on {}", r.header.experiment, d.host);
        for line in table::mismatch_lines(&summary::checksum_mismatches(r)) {
            w.push(format!("{at}: {line}"));
        }
        for b in r.backend_names() {
            if isolab_host::interrupt::work_stopped() {
                break;
            }
            let failed = r
                .measured(b)
                .filter(|x| x.outcome != isolab_results::Outcome::Completed)
                .count();
            if failed > 0 {
                w.push(format!(
                    "{at}: {failed} sample{} of {} did not complete and {} left out of every figure.",
                    if failed == 1 { "" } else { "s" },
                    backends::label(r, b),
                    if failed == 1 { "is" } else { "are" }
                ));
            }
        }
        for s in &r.header.skipped {
            w.push(format!(
                "{at}: {} was not measured: {}",
                s.backend, s.reason
            ));
        }
    }
    w
}

fn machines(sets: &[Dataset], hosts: &[String]) -> Vec<Machine> {
    hosts
        .iter()
        .filter_map(|h| {
            let d = sets.iter().find(|d| d.host == *h)?;
            let e = &d.results.header.environment;
            let mut kvm = e.kvm.label().to_string();
            if let Some(under) = e.underneath.describe() {
                kvm.push_str(&format!("; {under}"));
            }
            if e.kvm == KvmKind::NestedPvm {
                kvm.push_str(" — see the caveat above");
            }
            let facts: Vec<(&str, String)> = vec![
                ("host name", e.hostname.clone()),
                ("CPU", format!("{} ({} online)", e.cpu_model, e.cpus)),
                ("memory", format::bytes(e.memory_bytes as f64)),
                ("kernel", e.kernel_release.clone()),
                ("KVM", kvm),
                ("cgroup", e.cgroup.clone()),
                ("lab ran as uid", e.uid.to_string()),
            ];
            let mut t = table::Table {
                columns: vec!["".into(), "".into()],
                numeric: vec![false, false],
                rows: vec![],
                notes: vec![],
            };
            for (k, v) in facts {
                t.rows.push(vec![k.into(), v.into()]);
            }
            Some(Machine {
                host: h.clone(),
                facts: t,
            })
        })
        .collect()
}

fn files_table(sets: &[Dataset]) -> Table {
    let mut t = table::Table {
        columns: [
            "experiment",
            "host",
            "directory",
            "started (UTC)",
            "isolab",
            "commit",
            "settings",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
        numeric: vec![false; 7],
        rows: vec![],
        notes: vec![],
    };
    for d in sets {
        let h = &d.results.header;
        // Settings as `key=value` words, in the file's order (serde_json keeps keys sorted).
        // Files written before the shuffle's seed had its name call it `seed`: shown by its
        // name, so that no reader takes it for the workload's `seed=` (see the method).
        let settings = match &h.settings {
            serde_json::Value::Object(m) => m
                .iter()
                .map(|(k, v)| {
                    let k = if k == "seed" { "shuffle_seed" } else { k };
                    match v {
                        serde_json::Value::String(s) => format!("{k}={s}"),
                        other => format!("{k}={other}"),
                    }
                })
                .collect::<Vec<_>>()
                .join(" "),
            other => other.to_string(),
        };
        t.rows.push(vec![
            h.experiment.as_str().into(),
            d.host.as_str().into(),
            dir_name(d.results).into(),
            h.environment.date.as_str().into(),
            h.environment.lab_version.as_str().into(),
            h.environment.commit.as_str().into(),
            settings.into(),
        ]);
    }
    t
}

/// Render the report of `files` into `out_dir`.
pub(super) fn render(files: &[Results], out_path: &Path) -> Result<PathBuf, ReportError> {
    let out_dir = &OutDir::open_or_create(out_path)?;
    // A canonical order — experiments as a student meets them, then host, then path — so the
    // same files give the same page whatever order they were named in.
    let rank = |e: &str| {
        [
            "startup",
            "memory",
            "throughput",
            "density",
            "images",
            "isolation",
            "interference",
        ]
        .iter()
        .position(|x| *x == e)
        .unwrap_or(usize::MAX)
    };
    let mut files: Vec<&Results> = files.iter().collect();
    files.sort_by(|a, b| {
        let key = |r: &Results| {
            (
                rank(&r.header.experiment),
                r.header.experiment.clone(),
                r.header.environment.hostname.clone(),
                r.path.clone(),
            )
        };
        key(a).cmp(&key(b))
    });
    let (sets, hosts) = datasets(&files);
    let multi_host = hosts.len() > 1;
    // Colours: by family, in the order backends first appear anywhere in the report.
    let mut names: Vec<(String, Family)> = Vec::new();
    let mut named: HashSet<&str> = HashSet::new();
    for r in &files {
        for b in r.backend_names() {
            if named.insert(b) {
                names.push((b.clone(), r.family(b)));
            }
        }
    }
    let mut b = Builder {
        palette: Palette::new(names.iter().map(|(n, f)| (n.as_str(), *f))),
        multi_host,
        files: HashSet::new(),
        numbered: HashMap::new(),
    };
    // `lab run images` climbs density ladders on the lab's image: shown with the density ones.
    let by = |exp: &str| -> Vec<Dataset> {
        sets.iter()
            .filter(|d| {
                let e = d.results.header.experiment.as_str();
                e == exp || (exp == "density" && e == "images")
            })
            .map(|d| Dataset {
                results: d.results,
                host: d.host.clone(),
            })
            .collect()
    };
    let (st, me, th, de, is, inf) = (
        by("startup"),
        by("memory"),
        by("throughput"),
        by("density"),
        by("isolation"),
        by("interference"),
    );
    let startup = section(&st, |d, n| b.startup(d, n))?;
    let memory = section(&me, |d, n| b.memory(d, n))?;
    let throughput = section(&th, |d, n| b.throughput(d, n))?;
    let density = section(&de, |d, n| b.density(d, n))?;
    let isolation = section(&is, |d, n| Ok(b.isolation(d, n)))?;
    let interference = section(&inf, |d, n| b.interference(d, n))?;

    // The claims ledger, host by host.
    stop_point()?;
    let mut ledger: Vec<(String, Assessment)> = Vec::new();
    for host in &hosts {
        let mine: Vec<&Results> = sets
            .iter()
            .filter(|d| d.host == *host)
            .map(|d| d.results)
            .collect();
        ledger.extend(claims::ledger(&mine).into_iter().map(|a| (host.clone(), a)));
    }
    // Rows ordered claim by claim, hosts side by side.
    let mut rows: Vec<LedgerRow> = Vec::new();
    for c in claims::CLAIMS {
        for (host, a) in ledger.iter().filter(|(_, a)| a.claim.id == c.id) {
            rows.push(LedgerRow {
                id: c.id,
                statement: c.statement,
                host: host.clone(),
                verdict: a.verdict.label(),
                class: a.verdict.class(),
                figures: a.figures.clone(),
                why: a.why.clone(),
                caveats: a.caveats.clone(),
                parts: a
                    .parts
                    .iter()
                    .map(|p| PartRow {
                        verdict: p.verdict.label(),
                        class: p.verdict.class(),
                        why: p.why.clone(),
                    })
                    .collect(),
            });
        }
    }

    // Image sizes, host by host.
    let mut images = Vec::new();
    for host in &hosts {
        let mine: Vec<&Results> = sets
            .iter()
            .filter(|d| d.host == *host)
            .map(|d| d.results)
            .collect();
        let rows = summary::images(&mine);
        if !rows.is_empty() {
            images.push(Block {
                heading: multi_host.then(|| format!("on {host}")),
                tables: vec![table::images(&rows)],
                ..Block::default()
            });
        }
    }

    // Cold against restored starts, file by file.
    let restore: Vec<Block> = sets
        .iter()
        .filter(|d| d.results.header.experiment == crate::restore::EXPERIMENT)
        .map(|d| Block {
            heading: Some(format!(
                "{} ({})",
                relative(out_dir.path(), &d.results.path),
                d.host
            )),
            tables: crate::restore::tables(d.results),
            ..Block::default()
        })
        .collect();

    // The latest validation of each host's kernels against fio, netperf and iperf3.
    let mut validation = Vec::new();
    for host in &hosts {
        let mine: Vec<&Results> = sets
            .iter()
            .filter(|d| {
                d.host == *host && d.results.header.experiment == crate::validation::EXPERIMENT
            })
            .map(|d| d.results)
            .collect();
        if let Some(latest) = mine
            .iter()
            .max_by(|a, b| a.header.environment.date.cmp(&b.header.environment.date))
        {
            validation.push(Block {
                heading: multi_host.then(|| format!("on {host}")),
                tables: vec![crate::validation::table(&latest.validations)],
                notes: vec![format!(
                    "From {} ({}, lab {}).",
                    relative(out_dir.path(), &latest.path),
                    latest.header.environment.date,
                    latest.header.environment.commit
                )],
                ..Block::default()
            });
        }
    }

    let raw = sets
        .iter()
        .map(|d| RawLink {
            href: href(&relative(out_dir.path(), &d.results.path)),
            schema: d.results.header.schema.clone(),
            experiment: d.results.header.experiment.clone(),
            host: d.host.clone(),
            runs: d.results.runs.len(),
            density_steps: d.results.density.len(),
        })
        .collect();

    let page = Page {
        title: format!("isolab report — {}", hosts.join(", ")),
        summary: summary_lines(&sets, &hosts, &ledger),
        warnings: warnings(&sets),
        ledger: rows,
        claims: claims::CLAIMS.to_vec(),
        common_rule: claims::COMMON_RULE,
        min_pairs: claims::MIN_PAIRS,
        min_ci: isolab_host::stats::MIN_CI_SAMPLES,
        bootstrap_seed: format!("{:#x}", isolab_host::stats::BOOTSTRAP_SEED),
        families: Family::ALL
            .iter()
            .filter_map(|f| {
                let mine: Vec<&str> = names
                    .iter()
                    .filter(|(_, g)| g == f)
                    .map(|(n, _)| n.as_str())
                    .collect();
                (!mine.is_empty()).then(|| FamilyRow {
                    name: f.short(),
                    describe: f.describe(),
                    backends: mine.join(", "),
                })
            })
            .collect(),
        startup,
        memory,
        throughput,
        density,
        isolation,
        images,
        interference,
        restore,
        validation,
        machines: machines(&sets, &hosts),
        files: files_table(&sets),
        nested_pvm: files
            .iter()
            .any(|r| r.header.environment.kvm == KvmKind::NestedPvm)
            .then_some(claims::NESTED_PVM),
        // In the summary only when a VM was measured on such a machine.
        nested_pvm_vms: files.iter().any(|r| {
            r.header.environment.kvm == KvmKind::NestedPvm
                && r.backends().iter().any(|b| r.family(b).is_vm())
        }),
        raw,
        hosts,
        multi_host,
        style: STYLE,
    };
    stop_point()?;
    // A page whose rendering a stop request ended is an error of the template's: it is the
    // stop that is reported.
    let html = render_page(&page).map_err(|e| match stop_point() {
        Err(stopped) => stopped,
        Ok(()) => e.into(),
    })?;
    let tables = markdown(&page, &ledger);
    // The last look: from here on the report is written whole, plots first and the page last,
    // each file in one step (`OutDir::write`), so a stop never leaves half a report: either
    // nothing new, or every file of it.
    stop_point()?;
    let sections = [
        &page.startup,
        &page.memory,
        &page.throughput,
        &page.density,
        &page.interference,
    ];
    for figure in sections.into_iter().flatten().flat_map(|b| &b.figures) {
        out_dir.write(&figure.file, figure.svg.as_bytes())?;
    }
    out_dir.write("tables.md", tables.as_bytes())?;
    let index = out_dir.write("index.html", html.as_bytes())?;
    Ok(index)
}

fn render_page(page: &Page) -> Result<String, HtmlError> {
    let mut env = minijinja::Environment::new();
    // Templates named *.html escape every value; SVG and CSS are marked |safe where inserted.
    // minijinja's HTML escaping also writes `/` as `&#x2f;`, which is harmless but makes paths
    // and "VT-x/AMD-V" unreadable in the page's source: escape only what HTML requires.
    env.set_formatter(|out, state, value| match value.as_str() {
        Some(s) if !value.is_safe() && *state.auto_escape() == minijinja::AutoEscape::Html => {
            let escaped = s
                .replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
                .replace('"', "&quot;")
                .replace('\'', "&#39;");
            minijinja::escape_formatter(out, state, &minijinja::Value::from_safe_string(escaped))
        }
        _ => minijinja::escape_formatter(out, state, value),
    });
    // `stop_point()` in the template's long loops: nothing while the work goes on, an error
    // (which ends the rendering) once a stop is requested.
    env.add_function("stop_point", || {
        if isolab_host::interrupt::work_stopped() {
            Err(minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                "a stop was requested",
            ))
        } else {
            Ok("")
        }
    });
    env.add_template("index.html", TEMPLATE)?;
    let html = env
        .get_template("index.html")?
        .render(minijinja::value::Serde(page))?;
    Ok(html)
}

/// Every table of the report as Markdown, under the section it belongs to. Every text from the
/// results files is escaped ([`format::markdown`]).
fn markdown(page: &Page, ledger: &[(String, Assessment)]) -> String {
    let mut out = format!("# {}\n\n", format::markdown(&page.title));
    out.push_str("Tables of the report, to paste into coursework. Figures: medians with bootstrap 95% confidence intervals; ratios paired within a round; warm-up excluded.\n\n");
    out.push_str("## Claims ledger\n\n");
    out.push_str(&table::claims(ledger, page.multi_host, true).markdown());
    let sections: [(&str, &Vec<Block>); 7] = [
        ("Start-up", &page.startup),
        ("Memory", &page.memory),
        ("Throughput", &page.throughput),
        ("Density", &page.density),
        ("Isolation", &page.isolation),
        ("Images", &page.images),
        ("Neighbours", &page.interference),
    ];
    for (name, blocks) in sections {
        out.push_str(&format!("\n## {name}\n\n"));
        if blocks.is_empty() {
            out.push_str("No data in this report.\n");
        }
        for b in blocks {
            if let Some(h) = &b.heading {
                out.push_str(&format!("### {}\n\n", format::markdown(h)));
            }
            for w in &b.warnings {
                out.push_str(&format!("**{}**\n\n", format::markdown(w)));
            }
            for t in &b.tables {
                out.push_str(&t.markdown());
                out.push('\n');
            }
            for n in &b.notes {
                out.push_str(&format!("{}\n\n", format::markdown(n)));
            }
        }
    }
    out.push_str("\n## Results files\n\n");
    out.push_str(&page.files.markdown());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_links_climb_and_descend() {
        let root = std::env::temp_dir().join(format!("isolab-rel-{}", std::process::id()));
        std::fs::create_dir_all(root.join("a/report")).unwrap();
        std::fs::create_dir_all(root.join("a/startup")).unwrap();
        std::fs::write(root.join("a/startup/results.jsonl"), "").unwrap();
        assert_eq!(
            relative(
                &root.join("a/report"),
                &root.join("a/startup/results.jsonl")
            ),
            "../startup/results.jsonl"
        );
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn slugs_are_file_names() {
        assert_eq!(slug("vm #2"), "vm-2");
        assert_eq!(slug("Lab.Host"), "lab-host");
        assert_eq!(href("../a b/results.jsonl"), "../a%20b/results.jsonl");
        assert_eq!(href("x\"><script>"), "x%22%3E%3Cscript%3E");
    }
}
