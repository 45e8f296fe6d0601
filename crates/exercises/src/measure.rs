//! The checks of the measuring exercises: the student's answers against the student's own
//! results.
//!
//! Each exercise names the results files it needs (an experiment, the backends, how many
//! rounds) and asks questions whose right answers come from those files through the report's
//! own code ([`isolab_report::summary`]): the same medians, intervals and phase breakdowns the
//! tables print. So the right answers differ from machine to machine and from run to run, and
//! the check only accepts a results file measured on this machine.

use crate::answers::{judge, Answers, AnswersError, Expected, Precision, Question};
use crate::{Exercise, ExercisesError, Options, Test};
use isolab_host::files::FilesError;
use isolab_host::stats::Summary;
use isolab_report::summary;
use isolab_results::Results;
use std::path::{Path, PathBuf};

/// A results file an exercise needs.
#[derive(Clone, Copy, Debug)]
pub struct Needs {
    /// The answers-file key that names it.
    pub key: &'static str,
    /// The experiment that writes it.
    pub experiment: &'static str,
    /// Backends it must hold.
    pub backends: &'static [&'static str],
    /// Kernels it must hold (throughput), or none.
    pub kernels: &'static [&'static str],
    /// Completed measured samples each backend needs (density: the top of the ladder).
    pub rounds: usize,
}

const fn n(
    key: &'static str,
    experiment: &'static str,
    backends: &'static [&'static str],
    kernels: &'static [&'static str],
    rounds: usize,
) -> Needs {
    Needs {
        key,
        experiment,
        backends,
        kernels,
        rounds,
    }
}

/// What each measuring exercise reads.
const NEEDS: [(&str, &[Needs]); 11] = [
    (
        "startup",
        &[n(
            "results",
            "startup",
            &["container", "vm", "oci:runc"],
            &[],
            20,
        )],
    ),
    (
        "memory",
        &[n(
            "results",
            "memory",
            &["process", "container", "vm"],
            &[],
            10,
        )],
    ),
    (
        "isolation",
        &[n(
            "results",
            "isolation",
            &["process", "container", "vm"],
            &[],
            1,
        )],
    ),
    (
        "boundary",
        &[n(
            "results",
            "throughput",
            &["process", "container", "vm"],
            &["cpu", "random", "syscall"],
            10,
        )],
    ),
    (
        "density",
        &[n("results", "density", &["container", "vm"], &[], 32)],
    ),
    (
        "throughput",
        &[n(
            "results",
            "throughput",
            &["process", "container"],
            &crate::models::THROUGHPUT_KERNELS,
            3,
        )],
    ),
    ("images", &[n("results", "images", &["container"], &[], 2)]),
    (
        "restore",
        &[n(
            "results",
            "restore",
            &["container", "vm", "vm/restored", "vm/restored+prefault"],
            &[],
            6,
        )],
    ),
    (
        "neighbours",
        &[n("results", "interference", &["container", "vm"], &[], 3)],
    ),
    (
        "container-compare",
        &[n(
            "results",
            "startup",
            &["container", "oci:runc", "student:container"],
            &[],
            20,
        )],
    ),
    (
        "vmm-compare",
        &[
            n(
                "startup_results",
                "startup",
                &["vm", "student:vmm"],
                &[],
                20,
            ),
            n(
                "throughput_results",
                "throughput",
                &["process", "vm", "student:vmm"],
                &["cpu", "syscall"],
                10,
            ),
        ],
    ),
];

/// The results files exercise `id` reads.
pub fn needs(id: &str) -> &'static [Needs] {
    NEEDS
        .iter()
        .find(|(i, _)| *i == id)
        .map_or(&[], |(_, needs)| needs)
}

/// Check a measuring exercise: the results files, then every answer.
///
/// An answers file the lab refuses to read at all — not a regular file (`/dev/zero`, a FIFO),
/// or larger than [`crate::answers::MAX_ANSWERS`] — is an error of the command (exit status 2),
/// not a failed test: no answer in it was looked at. One that is missing or not TOML is a
/// failed test, with its reason as the hint.
pub fn check(exercise: &Exercise, options: &Options) -> Result<Checked, ExercisesError> {
    let read = match &options.answers {
        Some(path) => Answers::read(path),
        None => Answers::read_in(
            &options.labs,
            Path::new(exercise.answers.expect("a measuring exercise")),
        ),
    };
    let answers = match read {
        Ok(a) => a,
        Err(AnswersError::Files(e))
            if e.is_refusal() || matches!(e, FilesError::Interrupted { .. }) =>
        {
            return Err(ExercisesError::Files(e))
        }
        Err(e) => {
            return Ok(Checked {
                tests: vec![Test::fail("your answers file", e.to_string())],
                ..Checked::default()
            })
        }
    };
    // The written answers are collected whatever the figures show: they are the instructor's
    // to read.
    let (written_test, written) = crate::written::collect(&answers, exercise.id);
    let mut tests = Vec::new();
    let mut files = Vec::new();
    let mut measured = Vec::new();
    for need in needs(exercise.id) {
        let (t, results) = read_results(&answers, need);
        tests.extend(t);
        if let Some(r) = &results {
            measured.push(format!(
                "{} ({} on {}, {})",
                r.path.display(),
                r.header.experiment,
                r.header.environment.hostname,
                r.header.environment.kvm.label()
            ));
        }
        files.push(results);
    }
    if files.iter().any(Option::is_none) {
        tests.push(Test::not_yet(
            "your answers",
            "they are checked once the results files above are right",
        ));
    } else {
        let files: Vec<Results> = files.into_iter().flatten().collect();
        tests.extend(
            questions(exercise.id, &files)
                .iter()
                .map(|q| judge(&answers, q)),
        );
    }
    tests.push(written_test);
    Ok(Checked {
        tests,
        measured,
        written,
    })
}

/// What checking a measuring exercise found.
#[derive(Clone, Debug, Default)]
pub struct Checked {
    /// Its tests, in order.
    pub tests: Vec<Test>,
    /// The results files it read.
    pub measured: Vec<String>,
    /// The written answers, by question (`q1` …), for the instructor.
    pub written: std::collections::BTreeMap<String, String>,
}

/// The tests of one results file, and the file when they pass.
fn read_results(answers: &Answers, need: &Needs) -> (Vec<Test>, Option<Results>) {
    let name = format!(
        "{} names a results file of `lab run {}`",
        need.key, need.experiment
    );
    let Some(path) = answers.path_at(need.key) else {
        return (
            vec![Test::not_yet(
                name,
                format!(
                    "run the exercise's `lab run {}` command and put the `results:` path it printed here",
                    need.experiment
                ),
            )],
            None,
        );
    };
    let results = match read_one(&path) {
        Ok(r) if r.header.experiment == need.experiment => r,
        Ok(r) => {
            return (
                vec![Test::fail(
                    name,
                    format!(
                        "{} holds a {} experiment",
                        path.display(),
                        r.header.experiment
                    ),
                )],
                None,
            )
        }
        Err(e) => return (vec![Test::fail(name, e)], None),
    };
    let mut tests = vec![Test::pass(name)];
    let here = isolab_results::Environment::capture("");
    let there = &results.header.environment;
    let described = there.hostname == here.hostname
        && there.cpu_model == here.cpu_model
        && there.kernel_release == here.kernel_release
        && there.cpus == here.cpus;
    // The strings above are what a reader sees; the identity below is what binds the file to
    // this machine: a copied file with its kernel string edited still names another machine.
    let identity = here.machine.same_machine(&there.machine);
    tests.push(Test::expect(
        format!("{} was measured on this machine", need.key),
        described && identity.is_ok(),
        || match &identity {
            Err(why) if described => format!("{why}: run the experiment here"),
            _ => format!(
                "it comes from {} ({}, kernel {}): run the experiment here",
                there.hostname, there.cpu_model, there.kernel_release
            ),
        },
    ));
    let mut short = Vec::new();
    for backend in need.backends {
        let workloads: Vec<String> = if need.kernels.is_empty() {
            vec![String::new()]
        } else {
            need.kernels.iter().map(|k| k.to_string()).collect()
        };
        for kernel in workloads {
            // A ladder (density, images) counts the instances alive at its top.
            let ladder = matches!(need.experiment, "density" | "images");
            let n = if ladder {
                summary::density(&results)
                    .iter()
                    .find(|s| s.backend == *backend)
                    .map_or(0, |s| s.max_n() as usize)
            } else {
                summary::completed(&results, backend)
                    .filter(|r| kernel.is_empty() || r.workload.kernel == kernel)
                    .count()
            };
            if n < need.rounds {
                short.push(format!(
                    "{backend}{}: {n}",
                    if kernel.is_empty() {
                        String::new()
                    } else {
                        format!(" {kernel}")
                    }
                ));
            }
        }
    }
    let what = if matches!(need.experiment, "density" | "images") {
        format!(
            "instances alive at the top of the ladder (at least {})",
            need.rounds
        )
    } else {
        format!("completed rounds of each (at least {})", need.rounds)
    };
    tests.push(Test::expect(
        format!(
            "{} has {} with enough data",
            need.key,
            need.backends.join(", ")
        ),
        short.is_empty(),
        || format!("{what}; it has {}", short.join(", ")),
    ));
    let ok = tests.iter().all(|t| t.status == crate::Status::Pass);
    (tests, ok.then_some(results))
}

/// The results file the student named (a directory holding one, or the file).
///
/// The path comes from the student's answers, and root may be the one reading it: whatever it
/// names is read, but a line that is not a results record is reported by its number and the
/// kind of error only. serde_json's message can quote the value it choked on
/// (`invalid type: string "…"`), and the file named may be one only root may read.
fn read_one(path: &Path) -> Result<Results, String> {
    let file: PathBuf = if path.is_dir() {
        path.join(isolab_results::RESULTS_FILE)
    } else {
        path.to_path_buf()
    };
    Results::read(&file).map_err(|e| match e {
        isolab_results::ResultsError::Parse { path, line, source } => format!(
            "{} line {line}: not an isolab results record ({} error at column {})",
            path.display(),
            match source.classify() {
                serde_json::error::Category::Io => "read",
                serde_json::error::Category::Syntax => "JSON syntax",
                serde_json::error::Category::Data => "record",
                serde_json::error::Category::Eof => "incomplete JSON",
            },
            source.column()
        ),
        e => e.to_string(),
    })
}

/// The answer key of exercise `id` for `files`: what a student reading these results right
/// would write, with a placeholder for each written answer. The tests derive answers from real
/// runs with it.
pub fn answer_key(id: &str, files: &[Results]) -> toml::Table {
    let mut table = toml::Table::new();
    for (need, results) in needs(id).iter().zip(files) {
        table.insert(
            need.key.into(),
            toml::Value::String(results.path.display().to_string()),
        );
    }
    for q in questions(id, files) {
        let Ok(expected) = &q.expected else { continue };
        let mut parts: Vec<&str> = q.key.split('.').collect();
        let leaf = parts.pop().expect("a key");
        let mut t = &mut table;
        for p in parts {
            t = t
                .entry(p)
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .expect("a table");
        }
        t.insert(leaf.into(), expected.as_toml());
    }
    // No key can write a written answer: a placeholder says so, and fills the blank the check
    // asks for (only an instructor grades these).
    let mut written = toml::Table::new();
    for i in 1..=crate::written::count(id) {
        written.insert(
            format!("q{i}"),
            toml::Value::String(format!(
                "(written answer {i}: the instructor grades it, not the lab)"
            )),
        );
    }
    if !written.is_empty() {
        table.insert(crate::written::SECTION.into(), toml::Value::Table(written));
    }
    table
}

// ---------------------------------------------------------------------------------------------
// The questions

const VERDICTS: [&str; 3] = ["faster", "slower", "no clear difference"];

/// Builds one exercise's questions.
pub(crate) struct Asker<'a> {
    out: Vec<Question>,
    results: &'a Results,
}

impl Asker<'_> {
    pub(crate) fn push(
        &mut self,
        key: &str,
        ask: &str,
        look: &str,
        expected: Result<Expected, String>,
    ) {
        self.out.push(Question {
            key: key.into(),
            ask: ask.into(),
            expected,
            where_to_look: look.into(),
        });
    }

    /// A median and its interval, from `summary`, scaled by `unit` (1e6: ns → ms).
    fn median_and_ci(
        &mut self,
        keys: (&str, &str),
        what: &str,
        look: &str,
        summary: Option<Summary>,
        unit: f64,
        precision: Precision,
    ) {
        let missing = || format!("{} has no figure for {what}", self.results.path.display());
        let s = summary.ok_or_else(missing);
        self.push(
            keys.0,
            &format!("the median of {what}"),
            look,
            s.clone().map(|s| Expected::Figure {
                value: s.median / unit,
                precision,
            }),
        );
        let too_small = |_| {
            format!(
                "{} has too few samples of {what} for an interval (the report says \"n too \
                 small\"): run with --runs {} or more",
                self.results.path.display(),
                isolab_host::stats::MIN_CI_SAMPLES
            )
        };
        self.push(
            keys.1,
            "its 95% confidence interval",
            look,
            s.and_then(|s| s.ci().ok_or(()).map_err(too_small))
                .map(|(low, high)| Expected::Interval {
                    low: low / unit,
                    high: high / unit,
                    precision,
                }),
        );
    }
}

/// `a` against `b` by their medians' intervals, as the labs' rule says: intervals that overlap
/// show no difference. `lower_is` names what a lower figure is ("faster" for times).
fn compare(
    a: Option<Summary>,
    b: Option<Summary>,
    lower_is: &str,
    higher_is: &str,
) -> Option<String> {
    // Too few samples for an interval: nothing to compare (the report says "n too small").
    let ((a_low, a_high), (b_low, b_high)) = (a?.ci()?, b?.ci()?);
    Some(if a_high < b_low {
        lower_is.to_string()
    } else if a_low > b_high {
        higher_is.to_string()
    } else {
        "no clear difference".to_string()
    })
}

/// A ratio to 1 (× process): above 1 is faster, below is slower, an interval holding 1 is
/// neither.
fn against_one(s: Option<Summary>) -> Option<String> {
    let (low, high) = s?.ci()?;
    Some(if low > 1.0 {
        "faster".into()
    } else if high < 1.0 {
        "slower".into()
    } else {
        "no clear difference".into()
    })
}

fn verdict(v: Option<String>, vocabulary: &[&str], why: &str) -> Result<Expected, String> {
    v.map(|v| Expected::word(&v, vocabulary))
        .ok_or_else(|| why.to_string())
}

/// How close to the longest phase another phase may be and still be accepted as the longest:
/// said in the check's line, the template and the exercise's text.
const LONGEST_NEAR_TIE: &str = "10 %";

/// The phase of `row` with the largest median, and any within 10 % of it (a near-tie allows
/// either answer: two runs can order them differently); the vocabulary is the row's phases.
fn longest_phase(row: Option<&summary::StartupRow>) -> Result<Expected, String> {
    let row = row.ok_or("no start-up samples")?;
    let max = row.phases.iter().map(|(_, ns)| *ns).fold(0.0, f64::max);
    if max <= 0.0 {
        return Err("no phases recorded".into());
    }
    Ok(Expected::Word {
        accepted: row
            .phases
            .iter()
            .filter(|(_, ns)| *ns >= 0.9 * max)
            .map(|(n, _)| n.to_lowercase())
            .collect(),
        vocabulary: row.phases.iter().map(|(n, _)| n.to_lowercase()).collect(),
    })
}

/// Every question of exercise `id`, answered by `files` (in the order of [`needs`]).
pub fn questions(id: &str, files: &[Results]) -> Vec<Question> {
    let Some(first) = files.first() else {
        return Vec::new();
    };
    let mut a = Asker {
        out: Vec::new(),
        results: first,
    };
    match id {
        "startup" => startup_questions(&mut a, first),
        "memory" => memory_questions(&mut a, first),
        "isolation" => isolation_questions(&mut a, first),
        "boundary" => boundary_questions(&mut a, first),
        "density" => density_questions(&mut a, first),
        "throughput" => crate::models::throughput_questions(&mut a, first),
        "images" => crate::models::images_questions(&mut a, first),
        "neighbours" => crate::models::neighbours_questions(&mut a, first),
        "restore" => crate::models::restore_questions(&mut a, first),
        "container-compare" => container_compare_questions(&mut a, first),
        "vmm-compare" => {
            vmm_compare_questions(&mut a, first);
            if let Some(second) = files.get(1) {
                a.results = second;
                vmm_throughput_questions(&mut a, second);
            }
        }
        _ => {}
    }
    a.out
}

const STARTUP_TABLE: &str = "the start-up table: `p50 ms`, `95% CI of p50`, `phases to ready`";

fn startup_row<'a>(
    rows: &'a [summary::StartupRow],
    backend: &str,
) -> Option<&'a summary::StartupRow> {
    rows.iter().find(|r| r.backend == backend)
}

fn startup_questions(a: &mut Asker, r: &Results) {
    let rows = summary::startup(r);
    for (section, backend) in [("container", "container"), ("vm", "vm")] {
        let row = startup_row(&rows, backend);
        a.median_and_ci(
            (
                &format!("{section}.startup_ms"),
                &format!("{section}.ci_ms"),
            ),
            &format!("{backend}'s start-up (ms)"),
            STARTUP_TABLE,
            row.and_then(|r| r.startup),
            1e6,
            Precision::Decimals(3),
        );
        a.push(
            &format!("{section}.longest_phase"),
            &format!("{backend}'s longest phase (or one within {LONGEST_NEAR_TIE} of it)"),
            "`phases to ready`",
            longest_phase(row),
        );
    }
    let s = |b: &str| startup_row(&rows, b).and_then(|r| r.startup);
    a.push(
        "verdict.container_vs_vm",
        "does the container start faster than the vm",
        "compare the two intervals",
        verdict(
            compare(s("container"), s("vm"), "faster", "slower"),
            &VERDICTS,
            "needs container and vm samples",
        ),
    );
    a.push(
        "runc.times_container",
        "how many times longer runc takes than isolab's runtime (±10 %)",
        "divide the two medians",
        match (s("oci:runc"), s("container")) {
            (Some(runc), Some(c)) if c.median > 0.0 => Ok(Expected::Figure {
                value: runc.median / c.median,
                precision: Precision::Relative(0.1),
            }),
            _ => Err("needs oci:runc and container samples".into()),
        },
    );
}

const MIB: f64 = 1024.0 * 1024.0;
const MEMORY_TABLE: &str = "the memory table: `fixed MiB at ready (95% CI)`";

fn memory_questions(a: &mut Asker, r: &Results) {
    let rows = summary::memory(r);
    let sizes: Vec<u64> = rows.iter().map(|row| row.mib).collect();
    let (small, large) = (
        sizes.iter().copied().min().unwrap_or(0),
        sizes.iter().copied().max().unwrap_or(0),
    );
    let row = |backend: &str, mib: u64| rows.iter().find(|x| x.backend == backend && x.mib == mib);
    for backend in ["process", "container", "vm"] {
        a.median_and_ci(
            (
                &format!("fixed_mib.{backend}"),
                &format!("fixed_mib.{backend}_ci"),
            ),
            &format!("{backend}'s fixed cost at the {small} MiB working set (MiB)"),
            MEMORY_TABLE,
            row(backend, small).and_then(|x| x.fixed),
            MIB,
            Precision::Decimals(2),
        );
    }
    for backend in ["container", "vm"] {
        a.push(
            &format!("touched_mib.{backend}"),
            &format!("what {backend}'s workload touched at {large} MiB (MiB)"),
            "the memory table: `touched MiB (done − ready)`",
            row(backend, large)
                .and_then(|x| x.touched)
                .map(|s| Expected::Figure {
                    value: s.median / MIB,
                    precision: Precision::Decimals(2),
                })
                .ok_or_else(|| format!("no {backend} row at {large} MiB")),
        );
    }
    let fixed = |b: &str| row(b, small).and_then(|x| x.fixed);
    a.push(
        "verdict.more_fixed_memory",
        "which has the larger fixed cost",
        "compare the two intervals",
        verdict(
            compare(fixed("container"), fixed("vm"), "vm", "container"),
            &["container", "vm", "no clear difference"],
            "needs container and vm rows",
        ),
    );
    let vm = row("vm", small);
    a.push(
        "verdict.vm_pays_configured_ram",
        "does the vm's fixed cost reach its configured guest RAM",
        "compare `fixed MiB` with `guest RAM / touched MiB`",
        match vm.and_then(|x| Some((x.fixed?, x.guest_ram?))) {
            Some((f, g)) => Ok(Expected::word(
                if f.median >= g.median { "yes" } else { "no" },
                &["yes", "no"],
            )),
            None => Err("no vm row with guest RAM figures".into()),
        },
    );
}

/// The namespace that makes each probe fact differ between a process and a container.
const NAMESPACE_OF: [(&str, &str); 9] = [
    ("hostname", "uts"),
    ("pid", "pid"),
    ("pids_visible", "pid"),
    ("mounts", "mnt"),
    ("root_entries", "mnt"),
    ("interfaces", "net"),
    ("cgroup", "cgroup"),
    ("uid_map", "user"),
    ("root_on_host", "user"),
];

/// The capabilities' names, by number (linux/capability.h).
pub const CAPABILITIES: [&str; 41] = [
    "chown",
    "dac_override",
    "dac_read_search",
    "fowner",
    "fsetid",
    "kill",
    "setgid",
    "setuid",
    "setpcap",
    "linux_immutable",
    "net_bind_service",
    "net_broadcast",
    "net_admin",
    "net_raw",
    "ipc_lock",
    "ipc_owner",
    "sys_module",
    "sys_rawio",
    "sys_chroot",
    "sys_ptrace",
    "sys_pacct",
    "sys_admin",
    "sys_boot",
    "sys_nice",
    "sys_resource",
    "sys_time",
    "sys_tty_config",
    "mknod",
    "lease",
    "audit_write",
    "audit_control",
    "setfcap",
    "mac_override",
    "mac_admin",
    "syslog",
    "wake_alarm",
    "block_suspend",
    "audit_read",
    "perfmon",
    "bpf",
    "checkpoint_restore",
];

fn isolation_questions(a: &mut Asker, r: &Results) {
    let Some(iso) = summary::isolation(r) else {
        a.push(
            "container.hostname",
            "the probe's facts",
            "the isolation table",
            Err("no probe facts in the results".into()),
        );
        return;
    };
    let fact = |b: &str, k: &str| iso.value(b, k).map(|v| v.to_lowercase());
    for key in ["hostname", "pid", "interfaces", "cap_eff"] {
        a.push(
            &format!("container.{key}"),
            &format!("the container's {key}"),
            "the isolation table, column container",
            fact("container", key)
                .map(|v| Expected::word(&v, &[]))
                .ok_or_else(|| format!("no container {key} in the results")),
        );
    }
    let mut vocabulary: Vec<&str> = NAMESPACE_OF.iter().map(|(_, ns)| *ns).collect();
    vocabulary.extend(["ipc", "same"]);
    vocabulary.sort_unstable();
    vocabulary.dedup();
    for (key, ns) in NAMESPACE_OF {
        let expected = match (fact("process", key), fact("container", key)) {
            (Some(p), Some(c)) => Ok(Expected::word(
                if p == c { "same" } else { ns },
                &vocabulary,
            )),
            _ => Err(format!("no {key} for process and container in the results")),
        };
        a.push(
            &format!("namespace.{key}"),
            &format!("what makes {key} differ"),
            "compare the process and container columns; `same` where they agree",
            expected,
        );
    }
    a.push(
        "verdict.same_kernel",
        "does the container run on the host's kernel",
        "the kernel_release row",
        match (
            fact("process", "kernel_release"),
            fact("container", "kernel_release"),
        ) {
            (Some(p), Some(c)) => Ok(Expected::word(
                if p == c { "yes" } else { "no" },
                &["yes", "no"],
            )),
            _ => Err("no kernel_release for process and container".into()),
        },
    );
    let caps = |b: &str| fact(b, "cap_eff").and_then(|c| u64::from_str_radix(&c, 16).ok());
    a.push(
        "verdict.missing_capability",
        "a capability the process has and the container lacks",
        "decode both cap_eff masks",
        match (caps("process"), caps("container")) {
            (Some(p), Some(c)) if p & !c != 0 => {
                let missing: Vec<String> = CAPABILITIES
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| p & !c & (1 << i) != 0)
                    .flat_map(|(_, n)| [n.to_string(), format!("cap_{n}")])
                    .collect();
                Ok(Expected::Word {
                    accepted: missing,
                    vocabulary: Vec::new(),
                })
            }
            _ => Err("the process has no capability the container lacks here".into()),
        },
    );
    let host_kernel = fact("process", "kernel_release");
    a.push(
        "verdict.vm_kernel",
        "whose kernel answers the vm's probe: none, the host's or its own",
        "the kernel_release row, column vm",
        match fact("vm", "kernel_release") {
            Some(v) if v.starts_with("none") => {
                Ok(Expected::word("none", &["none", "host", "own"]))
            }
            Some(v) if Some(&v) == host_kernel.as_ref() => {
                Ok(Expected::word("host", &["none", "host", "own"]))
            }
            Some(_) => Ok(Expected::word("own", &["none", "host", "own"])),
            None => Err("no vm kernel_release in the results".into()),
        },
    );
}

const THROUGHPUT_TABLE: &str = "the throughput table: `× process (95% CI)`";

fn throughput_row<'a>(
    rows: &'a [summary::ThroughputRow],
    kernel: &str,
    backend: &str,
) -> Option<&'a summary::ThroughputRow> {
    rows.iter()
        .find(|x| x.workload.kernel == kernel && x.backend == backend)
}

fn ratio_and_ci(a: &mut Asker, section: &str, name: &str, kernel: &str, s: Option<Summary>) {
    a.median_and_ci(
        (
            &format!("{section}.{name}"),
            &format!("{section}.{name}_ci"),
        ),
        &format!("{name}'s rate on {kernel}, × process"),
        THROUGHPUT_TABLE,
        s,
        1.0,
        Precision::Sig3,
    );
}

fn boundary_questions(a: &mut Asker, r: &Results) {
    let rows = summary::throughput(r);
    let vs = |k: &str, b: &str| throughput_row(&rows, k, b).and_then(|x| x.vs_process);
    for kernel in ["cpu", "random"] {
        ratio_and_ci(a, kernel, "vm", kernel, vs(kernel, "vm"));
        a.push(
            &format!("{kernel}.verdict"),
            &format!("is the vm faster or slower than a process on {kernel}"),
            "does the interval hold 1?",
            verdict(against_one(vs(kernel, "vm")), &VERDICTS, "no vm row"),
        );
    }
    ratio_and_ci(a, "syscall", "vm", "syscall", vs("syscall", "vm"));
    a.push(
        "syscall.container",
        "the median of container's rate on syscall, × process",
        THROUGHPUT_TABLE,
        vs("syscall", "container")
            .map(|s| Expected::Figure {
                value: s.median,
                precision: Precision::Sig3,
            })
            .ok_or_else(|| "no container syscall row".to_string()),
    );
    a.push(
        "syscall.calls_per_exit",
        "how many system calls cost one VM exit (±10 %)",
        "the process's `rate p50` divided by the vm's, on syscall",
        vs("syscall", "vm")
            .filter(|s| s.median > 0.0)
            .map(|s| Expected::Figure {
                value: 1.0 / s.median,
                precision: Precision::Relative(0.1),
            })
            .ok_or_else(|| "no vm syscall row".to_string()),
    );
    let kvm = r.header.environment.kvm;
    a.push(
        "machine.kvm",
        "hardware virtualization or nested",
        "the environment line above the tables",
        Ok(Expected::word(
            match kvm {
                k if k.is_hardware() => "hardware",
                isolab_host::facts::KvmKind::NestedPvm => "nested",
                _ => "none",
            },
            &["hardware", "nested", "none"],
        )),
    );
}

fn density_questions(a: &mut Asker, r: &Results) {
    let series = summary::density(r);
    let per = |b: &str| {
        series
            .iter()
            .find(|s| s.backend == b)
            .and_then(|s| s.per_instance)
    };
    for backend in ["container", "vm"] {
        a.median_and_ci(
            (
                &format!("{backend}.mib_per_instance"),
                &format!("{backend}.mib_per_instance_ci"),
            ),
            &format!("{backend}'s memory per additional instance (MiB)"),
            "the density table: `MiB per instance (95% CI)`",
            per(backend),
            MIB,
            Precision::Decimals(2),
        );
    }
    for backend in ["container", "vm"] {
        a.push(
            &format!("{backend}.launches_per_s"),
            &format!("how many {backend} instances start per second (median)"),
            "the density table: `launches/s p50`",
            series
                .iter()
                .find(|s| s.backend == backend)
                .and_then(|s| s.launch_rate)
                .map(|s| Expected::Figure {
                    value: s.median,
                    precision: Precision::Sig3,
                })
                .ok_or_else(|| format!("no {backend} launch rate")),
        );
    }
    a.push(
        "verdict.cheaper",
        "which costs less per instance",
        "compare the two intervals",
        verdict(
            compare(per("container"), per("vm"), "container", "vm"),
            &["container", "vm", "no clear difference"],
            "needs container and vm ladders",
        ),
    );
    let idle = |b: &str| {
        series
            .iter()
            .find(|s| s.backend == b)
            .and_then(|s| s.steps.last())
            .filter(|s| s.idle_window_ns > 0)
            .map(|s| s.idle_cpu_ns as f64 / s.idle_window_ns as f64)
    };
    a.push(
        "verdict.idle_cpu",
        "do idle instances cost CPU: under 1 % of a core at the top is near zero",
        "the density table: `idle CPU at max`",
        match (idle("container"), idle("vm")) {
            (Some(c), Some(v)) => Ok(Expected::word(
                if c.max(v) < 0.01 { "near zero" } else { "busy" },
                &["near zero", "busy"],
            )),
            _ => Err("no idle CPU figures".into()),
        },
    );
}

/// The start-up of the student's program (`backend`): its median and interval under `keys`,
/// and its longest phase under `phase_key`.
fn student_startup(
    a: &mut Asker,
    row: Option<&summary::StartupRow>,
    keys: (&str, &str),
    phase_key: &str,
    what: &str,
) {
    a.median_and_ci(
        keys,
        &format!("{what}'s start-up (ms)"),
        STARTUP_TABLE,
        row.and_then(|x| x.startup),
        1e6,
        Precision::Decimals(3),
    );
    a.push(
        phase_key,
        &format!("{what}'s longest phase (or one within {LONGEST_NEAR_TIE} of it)"),
        "`phases to ready`",
        longest_phase(row),
    );
}

fn container_compare_questions(a: &mut Asker, r: &Results) {
    let rows = summary::startup(r);
    student_startup(
        a,
        startup_row(&rows, "student:container"),
        ("student.startup_ms", "student.ci_ms"),
        "student.longest_phase",
        "your runtime",
    );
    let s = |b: &str| startup_row(&rows, b).and_then(|x| x.startup);
    for (key, other) in [("vs_container", "container"), ("vs_runc", "oci:runc")] {
        a.push(
            &format!("verdict.{key}"),
            &format!("does yours start faster than {other}"),
            "compare the two intervals",
            verdict(
                compare(s("student:container"), s(other), "faster", "slower"),
                &VERDICTS,
                "needs both backends' samples",
            ),
        );
    }
}

fn vmm_compare_questions(a: &mut Asker, r: &Results) {
    let rows = summary::startup(r);
    student_startup(
        a,
        startup_row(&rows, "student:vmm"),
        ("startup.student_ms", "startup.student_ci_ms"),
        "startup.longest_phase",
        "your VMM",
    );
    let s = |b: &str| startup_row(&rows, b).and_then(|x| x.startup);
    a.push(
        "startup.vs_vm",
        "does yours start faster than the lab's vm",
        "compare the two intervals",
        verdict(
            compare(s("student:vmm"), s("vm"), "faster", "slower"),
            &VERDICTS,
            "needs both backends' samples",
        ),
    );
}

fn vmm_throughput_questions(a: &mut Asker, r: &Results) {
    let rows = summary::throughput(r);
    let vs = |k: &str, b: &str| throughput_row(&rows, k, b).and_then(|x| x.vs_process);
    ratio_and_ci(
        a,
        "syscall",
        "student",
        "syscall",
        vs("syscall", "student:vmm"),
    );
    a.push(
        "syscall.vs_vm",
        "do your VMM's exits cost less than the lab's (a higher rate is faster)",
        "compare the two intervals of `× process`",
        verdict(
            compare(
                vs("syscall", "student:vmm"),
                vs("syscall", "vm"),
                "slower",
                "faster",
            ),
            &VERDICTS,
            "needs both backends' syscall rows",
        ),
    );
    a.push(
        "cpu.verdict",
        "does the cpu kernel run faster or slower in your VMM than in a process",
        "does the interval hold 1?",
        verdict(
            against_one(vs("cpu", "student:vmm")),
            &VERDICTS,
            "no student:vmm cpu row",
        ),
    );
}
