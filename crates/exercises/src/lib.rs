//! `lab check`: guided exercises that check themselves.
//!
//! The exercises in `labs/` come in three tracks:
//!
//! * **measure** — run an experiment, read the report, and write what you found in
//!   `labs/answers/<exercise>.toml`: the figures you quote with their intervals, and short
//!   conclusions in a fixed vocabulary ([`measure`]). The check reads *your own* results file
//!   (it must come from this machine, with enough rounds) and recomputes every figure with the
//!   report's own code, so answers copied from another run or another machine do not pass;
//! * **container** — build a container runtime in seven steps, from fork/exec to dropped
//!   capabilities ([`container`]);
//! * **vmm** — build a virtual machine monitor in five steps, from opening `/dev/kvm` to running
//!   the lab's bare guest ([`vmm`]).
//!
//! The building tracks' checks build your crate ([`cargo`]), start your program through the
//! same backend the lab measures it with (`student:container`, `student:vmm`, see
//! [`isolab_backends::student`]), and look at what the workload sees from inside and at what the
//! kernel shows from outside ([`inspect`]). The last exercise of each track measures what you
//! built against the lab's own backends.
//!
//! Every check prints one line per test — pass, fail (with a hint) or not yet — and a score,
//! like MIT 6.1810's `make grade`; [`Outcome::exercism`] writes Exercism's `results.json`
//! shape for instructors; [`Progress`] remembers the last result of each exercise for the
//! progress table.

pub mod answers;
pub mod cargo;
pub mod container;
pub mod inspect;
pub mod measure;
pub mod models;
pub mod skeleton;
pub mod vmm;
pub mod written;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Errors of `lab check` itself (a failed check is not an error: it is an [`Outcome`]).
#[derive(Debug, thiserror::Error)]
pub enum ExercisesError {
    /// No exercise by that name.
    #[error("no exercise '{0}' (see `lab check` for the list)")]
    UnknownExercise(String),
    /// `--program` names a program for an exercise that checks no program.
    #[error("{0} checks answers, not a program: --program is for the building steps")]
    NotAProgram(String),
    /// `--program` names no runnable file.
    #[error("--program {0}: no such program")]
    NoProgram(PathBuf),
    /// The labs directory is not where it was looked for.
    #[error(
        "no exercises at {0} (run lab from the top of the isolab checkout, or pass --labs DIR)"
    )]
    NoLabs(PathBuf),
    /// The lab's own work directory could not be prepared.
    #[error(transparent)]
    Lab(#[from] isolab_backends::lab::LabError),
    /// A file was refused (an answers file that is not a regular file, or too large), or one
    /// of the lab's files under `labs/` could not be written.
    #[error(transparent)]
    Files(#[from] isolab_host::files::FilesError),
    /// A stop was requested (Ctrl-C, SIGTERM) before the check was done: nothing is recorded.
    #[error("stopped before the check was done")]
    Interrupted,
}

impl ExercisesError {
    /// True for mistakes in what was asked (exit status 2).
    pub fn is_usage(&self) -> bool {
        match self {
            ExercisesError::Files(e) => e.is_usage(),
            e => matches!(
                e,
                ExercisesError::UnknownExercise(_)
                    | ExercisesError::NoLabs(_)
                    | ExercisesError::NotAProgram(_)
                    | ExercisesError::NoProgram(_)
            ),
        }
    }

    /// True when the check stopped because a stop was requested.
    pub fn is_interrupted(&self) -> bool {
        matches!(
            self,
            ExercisesError::Interrupted
                | ExercisesError::Files(isolab_host::files::FilesError::Interrupted { .. })
        )
    }
}

/// The three tracks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Track {
    /// Measure a claim and answer with your own figures.
    Measure,
    /// Build a container runtime.
    Container,
    /// Build a VMM.
    Vmm,
}

impl Track {
    /// The track's name in tables.
    pub fn name(self) -> &'static str {
        match self {
            Track::Measure => "measure",
            Track::Container => "container",
            Track::Vmm => "vmm",
        }
    }
}

/// One exercise.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Exercise {
    /// The name `lab check` takes.
    pub id: &'static str,
    /// Its title.
    pub title: &'static str,
    /// Its track: how it is checked (answers, or a program).
    pub track: Track,
    /// The track it is listed under: its own, except that the comparison at the end of a
    /// building track is checked like a measuring exercise but belongs to that track.
    pub listed: Track,
    /// For a building step, its number in the track (1…); 0 otherwise.
    pub step: u32,
    /// Its text, relative to the labs directory.
    pub doc: &'static str,
    /// A building step's crate, relative to the labs directory.
    pub dir: Option<&'static str>,
    /// A measuring exercise's answers file, relative to the labs directory.
    pub answers: Option<&'static str>,
    /// What the student can do afterwards.
    pub goal: &'static str,
    /// About how long it takes, in minutes.
    pub minutes: u32,
    /// What it needs first (exercises, privileges, hardware).
    pub needs: &'static str,
}

const fn measure(
    id: &'static str,
    title: &'static str,
    doc: &'static str,
    answers: &'static str,
    goal: &'static str,
    minutes: u32,
    needs: &'static str,
) -> Exercise {
    Exercise {
        id,
        title,
        track: Track::Measure,
        listed: Track::Measure,
        step: 0,
        doc,
        dir: None,
        answers: Some(answers),
        goal,
        minutes,
        needs,
    }
}

/// The comparison that ends building track `track`: answered from measurements, like a
/// measuring exercise, and listed under its track.
const fn compare(track: Track, exercise: Exercise) -> Exercise {
    Exercise {
        listed: track,
        ..exercise
    }
}

#[allow(clippy::too_many_arguments)]
const fn build(
    track: Track,
    id: &'static str,
    step: u32,
    title: &'static str,
    doc: &'static str,
    dir: &'static str,
    goal: &'static str,
    minutes: u32,
    needs: &'static str,
) -> Exercise {
    Exercise {
        id,
        title,
        track,
        listed: track,
        step,
        doc,
        dir: Some(dir),
        answers: None,
        goal,
        minutes,
        needs,
    }
}

/// Every exercise, in the order to do them within each track.
pub const EXERCISES: [Exercise; 23] = [
    measure(
        "startup",
        "Where start-up time goes",
        "01-startup.md",
        "answers/startup.toml",
        "read a start-up waterfall and say which kernel objects each phase creates",
        30,
        "root; the set-up of the top-level README",
    ),
    measure(
        "memory",
        "What one instance costs",
        "02-memory.md",
        "answers/memory.toml",
        "split an instance's memory into fixed cost and working set, and explain the VM's",
        30,
        "startup",
    ),
    measure(
        "isolation",
        "What the workload can see",
        "03-isolation.md",
        "answers/isolation.toml",
        "name the namespace behind each difference a container sees, and decode capabilities",
        30,
        "startup",
    ),
    measure(
        "boundary",
        "The price of crossing the boundary",
        "04-boundary.md",
        "answers/boundary.toml",
        "tell computation from kernel entries and VM exits, with confidence intervals",
        30,
        "startup",
    ),
    measure(
        "density",
        "How many fit",
        "05-density.md",
        "answers/density.toml",
        "find the marginal cost of an instance and what limits density",
        25,
        "memory",
    ),
    measure(
        "throughput",
        "Where the models differ: disk and network",
        "06-throughput.md",
        "answers/throughput.toml",
        "say which model pays where on disk and network, and why: a veth hop, a VM exit per \
         notification",
        30,
        "boundary",
    ),
    measure(
        "images",
        "One image, many instances",
        "07-images.md",
        "answers/images.toml",
        "measure what one more instance of one image costs, and what KSM changes",
        30,
        "density",
    ),
    measure(
        "neighbours",
        "Noisy neighbours",
        "08-neighbours.md",
        "answers/neighbours.toml",
        "tell which load and which failure reach a neighbour, with and without limits",
        30,
        "boundary",
    ),
    measure(
        "restore",
        "Restored starts: a VM as fast as a container?",
        "09-restore.md",
        "answers/restore.toml",
        "measure a VM restored from a snapshot against cold starts, and what its first run and \
         each more restored VM cost",
        30,
        "startup",
    ),
    build(
        Track::Container,
        "container-1",
        1,
        "fork, exec, wait",
        "container/1-run/README.md",
        "container/1-run",
        "start a program as a child, pass it file descriptors, report its exit status",
        30,
        "root; Rust; the set-up of the top-level README",
    ),
    build(
        Track::Container,
        "container-2",
        2,
        "A root of its own: pivot_root (and why chroot is not enough)",
        "container/2-root/README.md",
        "container/2-root",
        "give a process its own root file system that it cannot climb out of",
        45,
        "container-1",
    ),
    build(
        Track::Container,
        "container-3",
        3,
        "PID 1: a PID namespace",
        "container/3-pid/README.md",
        "container/3-pid",
        "make the workload PID 1 of its own PID namespace",
        20,
        "container-2",
    ),
    build(
        Track::Container,
        "container-4",
        4,
        "A host name and a /proc of its own",
        "container/4-uts/README.md",
        "container/4-uts",
        "give the container a UTS namespace and a /proc that lists only its processes",
        20,
        "container-3",
    ),
    build(
        Track::Container,
        "container-5",
        5,
        "No network: a network namespace",
        "container/5-net/README.md",
        "container/5-net",
        "cut the container off the host's network",
        15,
        "container-4",
    ),
    build(
        Track::Container,
        "container-6",
        6,
        "A memory limit: cgroups",
        "container/6-cgroup/README.md",
        "container/6-cgroup",
        "limit a container's memory and watch the OOM killer enforce it",
        30,
        "container-5",
    ),
    build(
        Track::Container,
        "container-7",
        7,
        "Less than root: capabilities and no_new_privs",
        "container/7-caps/README.md",
        "container/7-caps",
        "keep only some of root's powers, for good",
        30,
        "container-6",
    ),
    compare(
        Track::Container,
        measure(
            "container-compare",
            "Your runtime against runc and the lab's",
            "container/compare.md",
            "answers/container-compare.toml",
            "measure your runtime phase by phase against two others and explain the difference",
            30,
            "container-7",
        ),
    ),
    build(
        Track::Vmm,
        "vmm-1",
        1,
        "Open /dev/kvm",
        "vmm/1-kvm/README.md",
        "vmm/1-kvm",
        "talk to KVM: API version and capabilities",
        20,
        "Rust; /dev/kvm (VT-x, AMD-V or nested); the set-up of the top-level README",
    ),
    build(
        Track::Vmm,
        "vmm-2",
        2,
        "A VM with memory and a vCPU",
        "vmm/2-machine/README.md",
        "vmm/2-machine",
        "create a VM, give it RAM from your own address space, create a vCPU",
        30,
        "vmm-1",
    ),
    build(
        Track::Vmm,
        "vmm-3",
        3,
        "Real mode: your first VM exit",
        "vmm/3-real/README.md",
        "vmm/3-real",
        "run guest code and handle the exits it causes",
        40,
        "vmm-2",
    ),
    build(
        Track::Vmm,
        "vmm-4",
        4,
        "Long mode, ring 3",
        "vmm/4-long/README.md",
        "vmm/4-long",
        "put a vCPU straight into 64-bit mode: page tables, segments, a TSS",
        90,
        "vmm-3",
    ),
    build(
        Track::Vmm,
        "vmm-5",
        5,
        "Run the lab's bare guest",
        "vmm/5-guest/README.md",
        "vmm/5-guest",
        "load an ELF guest and serve its hypercalls: the workload's kernels in your VMM",
        90,
        "vmm-4",
    ),
    compare(
        Track::Vmm,
        measure(
            "vmm-compare",
            "Your VMM against the lab's",
            "vmm/compare.md",
            "answers/vmm-compare.toml",
            "measure your VMM's start-up and exits against the lab's and explain the difference",
            30,
            "vmm-5",
        ),
    ),
];

/// The exercise called `id`.
pub fn exercise(id: &str) -> Result<&'static Exercise, ExercisesError> {
    EXERCISES
        .iter()
        .find(|e| e.id == id)
        .ok_or_else(|| ExercisesError::UnknownExercise(id.to_string()))
}

/// The result of one test of an exercise.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// It holds.
    Pass,
    /// It does not.
    Fail,
    /// It could not be looked at yet: an earlier test failed, the answer is blank, or the
    /// step's skeleton is still in place.
    NotYet,
}

impl Status {
    fn word(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Fail => "FAIL",
            Status::NotYet => "not yet",
        }
    }
}

/// One test of an exercise.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Test {
    /// What is tested, in words.
    pub name: String,
    /// How it went.
    pub status: Status,
    /// Why it failed and what to look at (a hint, never the answer).
    pub hint: Option<String>,
}

impl Test {
    /// A test that holds.
    pub fn pass(name: impl Into<String>) -> Test {
        Test {
            name: name.into(),
            status: Status::Pass,
            hint: None,
        }
    }

    /// A test that does not, and what to look at.
    pub fn fail(name: impl Into<String>, hint: impl Into<String>) -> Test {
        Test {
            name: name.into(),
            status: Status::Fail,
            hint: Some(hint.into()),
        }
    }

    /// A test that could not be looked at yet, and why.
    pub fn not_yet(name: impl Into<String>, why: impl Into<String>) -> Test {
        Test {
            name: name.into(),
            status: Status::NotYet,
            hint: Some(why.into()),
        }
    }

    /// Pass when `ok`, else fail with `hint`.
    pub fn expect(name: impl Into<String>, ok: bool, hint: impl FnOnce() -> String) -> Test {
        if ok {
            Test::pass(name)
        } else {
            Test::fail(name, hint())
        }
    }
}

/// What one `lab check EXERCISE` found.
#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    /// The exercise.
    pub exercise: &'static Exercise,
    /// Its tests, in order.
    pub tests: Vec<Test>,
    /// What was measured along the way (every exercise ends in a measurement).
    pub measured: Vec<String>,
    /// A measuring exercise's written answers, by question (`q1` …): collected for the
    /// instructor, who grades them ([`written`]).
    pub written: BTreeMap<String, String>,
}

impl Outcome {
    /// Tests passed, and tests in all.
    pub fn score(&self) -> (usize, usize) {
        let passed = self
            .tests
            .iter()
            .filter(|t| t.status == Status::Pass)
            .count();
        (passed, self.tests.len())
    }

    /// True when every test passed.
    pub fn passed(&self) -> bool {
        let (passed, total) = self.score();
        total > 0 && passed == total
    }

    /// The terminal report: one line per test, the hints, what was measured, the score.
    pub fn render(&self) -> String {
        let mut out = format!("{} — {}\n", self.exercise.id, self.exercise.title);
        for t in &self.tests {
            let _ = writeln!(out, "  {:<8} {}", t.status.word(), t.name);
            if let Some(hint) = &t.hint {
                if t.status != Status::Pass {
                    let _ = writeln!(out, "           ↳ {hint}");
                }
            }
        }
        for m in &self.measured {
            let _ = writeln!(out, "  measured: {m}");
        }
        let (passed, total) = self.score();
        let _ = writeln!(
            out,
            "score: {passed}/{total}{}",
            if self.passed() { " — done" } else { "" }
        );
        out
    }

    /// Exercism's test-runner `results.json` (version 2): what an instructor's tools read.
    pub fn exercism(&self) -> serde_json::Value {
        let status = if self.passed() { "pass" } else { "fail" };
        let (passed, total) = self.score();
        serde_json::json!({
            "version": 2,
            "status": status,
            "message": null,
            "exercise": self.exercise.id,
            "score": { "passed": passed, "total": total },
            "measured": self.measured,
            // For the instructor to read and grade: the lab only checked that none is blank.
            "written": self.written,
            "tests": self.tests.iter().map(|t| serde_json::json!({
                "name": t.name,
                "status": if t.status == Status::Pass { "pass" } else { "fail" },
                // Exercism knows only pass and fail (and runner errors): "not yet" is a fail
                // whose message says so.
                "message": match (t.status, &t.hint) {
                    (Status::NotYet, Some(h)) => Some(format!("not yet: {h}")),
                    (_, h) => h.clone(),
                },
            })).collect::<Vec<_>>(),
        })
    }
}

/// Where the exercises are and how to check them.
#[derive(Clone, Debug)]
pub struct Options {
    /// The labs directory (`labs/` of the checkout).
    pub labs: PathBuf,
    /// A building step's crate to check instead of the exercise's own (`--crate`).
    pub crate_dir: Option<PathBuf>,
    /// A building step's program, already built, to check instead of building a crate
    /// (`--program`): e.g. one built on another machine, for a machine without cargo.
    pub program: Option<PathBuf>,
    /// A measuring exercise's answers file instead of the exercise's own (`--answers`).
    pub answers: Option<PathBuf>,
    /// How long to wait for an instance to reach each marker.
    pub timeout: Duration,
}

impl Options {
    /// The defaults: `labs/` under the current directory.
    pub fn new(labs: PathBuf) -> Options {
        Options {
            labs,
            crate_dir: None,
            program: None,
            answers: None,
            timeout: Duration::from_secs(30),
        }
    }

    fn require_labs(&self) -> Result<(), ExercisesError> {
        if self.labs.join("README.md").is_file() {
            Ok(())
        } else {
            Err(ExercisesError::NoLabs(self.labs.clone()))
        }
    }
}

/// Run the checks of exercise `id`, record the result in the progress file, and (for a
/// building step that passed) install the program for `student:container` / `student:vmm`.
/// `say` hears what is going on (building, running) while it happens.
pub fn check(
    id: &str,
    options: &Options,
    say: &mut dyn FnMut(&str),
) -> Result<Outcome, ExercisesError> {
    let exercise = exercise(id)?;
    if let Some(program) = &options.program {
        // A program built elsewhere needs no labs directory: nothing is built, installed or
        // recorded here.
        if exercise.track == Track::Measure {
            return Err(ExercisesError::NotAProgram(exercise.id.into()));
        }
        if !program.is_file() {
            return Err(ExercisesError::NoProgram(program.clone()));
        }
    } else {
        options.require_labs()?;
    }
    let mut written = BTreeMap::new();
    let (tests, measured, built) = match exercise.track {
        Track::Measure => {
            let checked = measure::check(exercise, options)?;
            written = checked.written;
            (checked.tests, checked.measured, None)
        }
        Track::Container | Track::Vmm => {
            let (built, what) = match &options.program {
                Some(program) => (
                    Ok(Program::Given(program.clone())),
                    format!("{} is given", program.display()),
                ),
                None => {
                    let dir = options.crate_dir.clone().unwrap_or_else(|| {
                        options.labs.join(exercise.dir.expect("a building step"))
                    });
                    match cargo::build(&dir, &options.labs, say) {
                        // A stop during the build: cargo and its compilers are gone, and the
                        // check ends here.
                        Err(cargo::BuildError::Interrupted) => {
                            return Err(ExercisesError::Interrupted)
                        }
                        built => (
                            built.map(Program::Built),
                            format!("{} builds", dir.display()),
                        ),
                    }
                }
            };
            let mut tests = vec![match &built {
                Ok(_) => Test::pass(what),
                Err(e) => Test::fail(what, e.to_string()),
            }];
            let mut measured = Vec::new();
            match &built {
                Ok(built) => {
                    let mut lab = isolab_backends::lab::Lab::new()?;
                    lab.settings.timeout = options.timeout;
                    let program = &built.place(&lab)?;
                    let (more, m) = if exercise.track == Track::Container {
                        container::check(exercise.step, program, &lab, say)
                    } else {
                        vmm::check(exercise.step, program, &lab, say)
                    };
                    tests.extend(more);
                    measured = m;
                }
                Err(_) => tests.push(Test::not_yet(
                    "the step's checks",
                    "they run once your crate builds",
                )),
            }
            (tests, measured, built.ok())
        }
    };
    // Results read half-way and statistics cut short by a stop request make failed tests that
    // say nothing of the student's work: neither shown nor recorded.
    if isolab_host::interrupt::work_stopped() {
        return Err(ExercisesError::Interrupted);
    }
    let outcome = Outcome {
        exercise,
        tests,
        measured,
        written,
    };
    // Another crate or answers file (an instructor's, a test's) is not this student's progress.
    let own = options.crate_dir.is_none() && options.program.is_none() && options.answers.is_none();
    if own {
        if let (true, Some(program)) = (outcome.passed(), built) {
            install(options, exercise, &program)?;
        }
        Progress::record(&options.labs, &outcome)?;
    }
    Ok(outcome)
}

/// What `lab check` prints, and whether it means success.
#[derive(Clone, Debug)]
pub struct Done {
    /// The text for the terminal.
    pub text: String,
    /// Every test passed (or there was nothing to check: the progress table).
    pub passed: bool,
}

/// `lab check [EXERCISE] [--json FILE]`: check one exercise, or show the progress table, and
/// write the Exercism-style JSON when asked.
pub fn command(
    exercise: Option<&str>,
    options: &Options,
    json: Option<&Path>,
    say: &mut dyn FnMut(&str),
) -> Result<Done, ExercisesError> {
    match exercise {
        Some(id) => {
            let outcome = check(id, options, say)?;
            if let Some(path) = json {
                write_json(path, &outcome.exercism())?;
            }
            Ok(Done {
                text: outcome.render(),
                passed: outcome.passed(),
            })
        }
        None => {
            options.require_labs()?;
            let progress = Progress::read(&options.labs);
            if let Some(path) = json {
                let mut value = progress.exercism();
                with_written(&mut value, &options.labs);
                write_json(path, &value)?;
            }
            Ok(Done {
                text: progress.render(),
                passed: true,
            })
        }
    }
}

/// Add each measuring exercise's written answers, as its answers file holds them now, to its
/// entry of the progress JSON: the instructor grades them there. An answers file that cannot be
/// read adds nothing (its check says why).
fn with_written(value: &mut serde_json::Value, labs: &Path) {
    let Some(tests) = value["tests"].as_array_mut() else {
        return;
    };
    for (test, e) in tests.iter_mut().zip(EXERCISES.iter()) {
        let Some(file) = e.answers else { continue };
        if let Ok(answers) = answers::Answers::read_in(labs, Path::new(file)) {
            let (_, texts) = written::collect(&answers, e.id);
            test["written"] = serde_json::json!(texts);
        }
    }
}

/// The program a building step's checks run.
#[derive(Clone, Debug)]
enum Program {
    /// Named with `--program`: run where it is.
    Given(PathBuf),
    /// Built from the student's crate, and already read: what is in the target directory now
    /// is the builder's to change ([`cargo`]).
    Built(cargo::Built),
}

impl Program {
    /// Where the checks find the program: the given file, or the lab's own copy of the built
    /// one in its work directory (root's, mode 0755: whoever runs it may read it, no one else
    /// may change it).
    fn place(&self, lab: &isolab_backends::lab::Lab) -> Result<PathBuf, ExercisesError> {
        use std::os::unix::fs::PermissionsExt;
        match self {
            Program::Given(path) => Ok(path.clone()),
            Program::Built(built) => {
                let path = lab.workdir().join("student-program");
                std::fs::write(&path, &built.bytes)
                    .and_then(|()| {
                        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                    })
                    .map_err(|source| isolab_backends::lab::LabError::Workdir {
                        path: path.clone(),
                        source,
                    })?;
                Ok(path)
            }
        }
    }

    /// Its bytes.
    fn bytes(&self) -> Result<std::borrow::Cow<'_, [u8]>, ExercisesError> {
        match self {
            Program::Given(path) => {
                Ok(isolab_host::files::read_bounded(path, MAX_PROGRAM, "program")?.into())
            }
            Program::Built(built) => Ok((&built.bytes[..]).into()),
        }
    }
}

/// Copy a passing step's program to where `student:container` / `student:vmm` look.
fn install(
    options: &Options,
    exercise: &Exercise,
    program: &Program,
) -> Result<(), ExercisesError> {
    let kind = match exercise.track {
        Track::Container => isolab_backends::student::Kind::Container,
        Track::Vmm => isolab_backends::student::Kind::Vmm,
        Track::Measure => return Ok(()),
    };
    let dest = isolab_backends::student::installed(&options.labs, kind);
    let (Some(dir), Some(name)) = (dest.parent(), dest.file_name().and_then(|n| n.to_str())) else {
        return Ok(());
    };
    // `labs/` belongs to the student and the lab may run as root: written through an OutDir,
    // a link planted at either name is replaced, not written through. Its temporary name and
    // rename also mean a `lab run` using the old program never sees half a file. Beside it, the
    // step it passed: only the last step's program counts as a whole container or VMM in a
    // report's claims.
    let out = isolab_host::files::OutDir::open_or_create(dir)?;
    out.write_mode(name, &program.bytes()?, 0o755)?;
    out.write(
        &format!("{name}.step"),
        format!("{}\n", exercise.step).as_bytes(),
    )?;
    Ok(())
}

/// The largest program a building step installs: the steps' programs are a few MiB (static
/// Rust programs with nix, caps or kvm-ioctls); 256 MiB is far beyond any, and bounds what a
/// build that went wrong can make the lab copy.
const MAX_PROGRAM: u64 = 256 << 20;

/// The largest progress file read: one line per exercise, a few KiB in all.
const MAX_PROGRESS: u64 = 1 << 20;

/// The best and the last result of each exercise, kept in `<labs>/.lab/progress.json`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Progress {
    /// Exercise id → its last result, and its best.
    pub exercises: BTreeMap<String, Recorded>,
}

/// One exercise's last result (its fields) and its best one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Recorded {
    /// Tests passed.
    pub passed: usize,
    /// Tests in all.
    pub total: usize,
    /// When (RFC 3339, UTC).
    pub date: String,
    /// The best result so far, when it is not the last one: a retry that went worse does not
    /// take back an exercise done. (Files written before it was kept have none.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best: Option<Score>,
}

/// A result: tests passed of all, and when.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Score {
    /// Tests passed.
    pub passed: usize,
    /// Tests in all.
    pub total: usize,
    /// When (RFC 3339, UTC).
    pub date: String,
}

impl Score {
    /// Every test passed.
    pub fn done(&self) -> bool {
        self.total > 0 && self.passed == self.total
    }

    /// Better than `other`: done beats not done, then the larger share of tests passed.
    fn beats(&self, other: &Score) -> bool {
        let share = |s: &Score| s.passed as f64 / s.total.max(1) as f64;
        (self.done(), share(self)) > (other.done(), share(other))
    }

    fn show(&self) -> String {
        if self.done() {
            format!("done ({}/{}, {})", self.passed, self.total, self.date)
        } else {
            format!("{}/{} ({})", self.passed, self.total, self.date)
        }
    }
}

impl Recorded {
    /// The last result.
    pub fn last(&self) -> Score {
        Score {
            passed: self.passed,
            total: self.total,
            date: self.date.clone(),
        }
    }

    /// The best result: the last one unless an earlier one beat it.
    pub fn best(&self) -> Score {
        self.best.clone().unwrap_or_else(|| self.last())
    }

    /// `last` recorded after this one.
    fn then(&self, last: Score) -> Recorded {
        let best = self.best();
        Recorded {
            passed: last.passed,
            total: last.total,
            date: last.date.clone(),
            best: best.beats(&last).then_some(best),
        }
    }
}

impl Progress {
    fn path(labs: &Path) -> PathBuf {
        labs.join(".lab").join("progress.json")
    }

    /// The progress recorded under `labs` (empty when nothing was checked yet, or when the
    /// file is not one the lab wrote: not a regular file, too large, not JSON).
    pub fn read(labs: &Path) -> Progress {
        // In the student's `labs/`: as root, through no link (see `files::open_regular_beneath`).
        let text = if nix::unistd::geteuid().is_root() {
            isolab_host::files::read_to_string_beneath(
                labs,
                Path::new(".lab/progress.json"),
                MAX_PROGRESS,
                "progress file",
            )
        } else {
            isolab_host::files::read_to_string_bounded(
                &Progress::path(labs),
                MAX_PROGRESS,
                "progress file",
            )
        };
        text.ok()
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_default()
    }

    fn record(labs: &Path, outcome: &Outcome) -> Result<(), ExercisesError> {
        let mut progress = Progress::read(labs);
        let (passed, total) = outcome.score();
        progress.add(
            outcome.exercise.id,
            Score {
                passed,
                total,
                date: jiff::Timestamp::now()
                    .round(jiff::Unit::Second)
                    .map_or_else(|_| String::new(), |t| t.to_string()),
            },
        );
        let text = serde_json::to_string_pretty(&progress).expect("progress serialises");
        // In the student's `labs/`: no link planted there is written through.
        isolab_host::files::OutDir::open_or_create(&labs.join(".lab"))?
            .write("progress.json", text.as_bytes())?;
        Ok(())
    }

    /// Record `last` as exercise `id`'s last result, keeping its best.
    pub fn add(&mut self, id: &str, last: Score) {
        let recorded = match self.exercises.get(id) {
            Some(before) => before.then(last),
            None => Recorded {
                passed: last.passed,
                total: last.total,
                date: last.date,
                best: None,
            },
        };
        self.exercises.insert(id.to_string(), recorded);
    }

    /// The progress table: every exercise, its track, time, best result and last check (the
    /// last is shown only where it is not the best).
    pub fn render(&self) -> String {
        let mut out = String::from(
            "exercise            track      min  best                                 last check\n",
        );
        let mut done = 0;
        for e in &EXERCISES {
            let (best, last) = match self.exercises.get(e.id) {
                Some(r) => {
                    let (best, last) = (r.best(), r.last());
                    if best.done() {
                        done += 1;
                    }
                    let last = if last == best {
                        "the same".to_string()
                    } else {
                        last.show()
                    };
                    (best.show(), last)
                }
                None => ("not started".into(), String::new()),
            };
            let line = format!(
                "{:<19} {:<10} {:>3}  {best:<36} {last}",
                e.id,
                e.listed.name(),
                e.minutes
            );
            let _ = writeln!(out, "{}", line.trim_end());
        }
        let _ = writeln!(
            out,
            "{done}/{} exercises done. `lab check EXERCISE` checks one; its text is in labs/.",
            EXERCISES.len()
        );
        out
    }

    /// Every exercise's last result in Exercism's shape, one "test" per exercise: the file an
    /// instructor collects from each student (`lab check --json FILE`).
    pub fn exercism(&self) -> serde_json::Value {
        let all = EXERCISES
            .iter()
            .all(|e| self.exercises.get(e.id).is_some_and(|r| r.best().done()));
        serde_json::json!({
            "version": 2,
            "status": if all { "pass" } else { "fail" },
            "message": null,
            "tests": EXERCISES.iter().map(|e| {
                let r = self.exercises.get(e.id);
                serde_json::json!({
                    "name": e.id,
                    "track": e.listed.name(),
                    // Done once is done: the best result decides, the last is reported too.
                    "status": match r {
                        Some(r) if r.best().done() => "pass",
                        Some(_) => "fail",
                        None => "error",
                    },
                    "message": r.map(|r| {
                        let (best, last) = (r.best(), r.last());
                        let mut m = format!("best {}/{} at {}", best.passed, best.total, best.date);
                        if best != last {
                            m.push_str(&format!("; last {}/{} at {}", last.passed, last.total, last.date));
                        }
                        m
                    }),
                })
            }).collect::<Vec<_>>(),
        })
    }
}

/// A seed for the values a check chooses at random: different on every check.
fn random_seed() -> u64 {
    isolab_host::clock::now_ns() ^ (u64::from(std::process::id()) << 32)
}

/// What the workload's kernels compute for `spec` natively, in the lab: the checksum a
/// student's container or VMM must reproduce.
pub fn native_output(spec: &isolab_payload::Spec) -> isolab_payload::Output {
    /// A system call that returns its argument, and a host that says go at once: the same
    /// answers every backend's shim gives.
    struct Native;
    impl isolab_kernels::Shim for Native {
        fn enter_kernel(&mut self, x: u64) -> u64 {
            x
        }
        fn wait_host(&mut self) -> Result<(), isolab_kernels::Error> {
            Ok(())
        }
    }
    let mut arena = vec![0u64; spec.arena_bytes().div_ceil(8) as usize];
    // SAFETY: viewing a Vec<u64>'s initialised memory as bytes; u8 has no alignment needs and
    // the slice covers exactly the vector's elements.
    let bytes =
        unsafe { std::slice::from_raw_parts_mut(arena.as_mut_ptr().cast::<u8>(), arena.len() * 8) };
    isolab_kernels::run(spec, &mut Native, bytes).unwrap_or_default()
}

/// A failed test of step `step`: "not yet" when the run shows the step's skeleton is still in
/// place (`labkit::Report::todo`), else a failure with `hint`.
fn todo_or_fail(
    name: &str,
    step: u32,
    run: &isolab_backends::Run,
    hint: impl FnOnce() -> String,
) -> Test {
    match run.info.get(&format!("todo_step_{step}")) {
        Some(what) => Test::not_yet(
            name,
            format!("step {step} is still the skeleton's ({what}): write it, and remove its report.todo call"),
        ),
        None => Test::fail(name, hint()),
    }
}

/// "your runtime: start-up 1.52 ms (median of 5); phases in ms: cgroup 0.080 · fork 0.100 · …":
/// what a student's program took, phase by phase, computed as the report computes it.
fn startup_line(label: &str, runs: &[isolab_backends::Run]) -> Option<String> {
    use isolab_host::format::ms;
    use isolab_results::Family;
    let records: Vec<isolab_results::RunRecord> = runs
        .iter()
        .map(|r| r.record(Family::Floor, 0, 0, false))
        .collect();
    let records: Vec<&isolab_results::RunRecord> = records.iter().collect();
    let startup: Vec<f64> = records
        .iter()
        .filter_map(|r| r.startup_ns)
        .map(|n| n as f64)
        .collect();
    let total = isolab_host::stats::Summary::of(&startup)?;
    let phases: Vec<String> = isolab_report::summary::median_phases(&records)
        .into_iter()
        .map(|(name, ns)| format!("{name} {}", ms(ns)))
        .collect();
    Some(format!(
        "{label}: start-up {} ms (median of {}); phases in ms: {}",
        ms(total.median),
        total.n,
        phases.join(" · ")
    ))
}

/// Write `value` as pretty JSON to `path`, without following a link at that name (see
/// [`isolab_host::files::OutDir`]), readable by its owner only: the hints in it come from the
/// student's files (their answers, what their program said), which are not every user's to
/// read.
pub fn write_json(path: &Path, value: &serde_json::Value) -> Result<(), ExercisesError> {
    let text = serde_json::to_string_pretty(value).expect("JSON serialises");
    let name = path.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
        isolab_host::files::FilesError::BadName {
            name: path.display().to_string(),
        }
    })?;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    isolab_host::files::OutDir::open_or_create(dir)?.write_mode(
        name,
        (text + "\n").as_bytes(),
        0o600,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalogue_is_consistent() {
        let mut ids: Vec<&str> = EXERCISES.iter().map(|e| e.id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), EXERCISES.len(), "ids are unique");
        for track in [Track::Container, Track::Vmm] {
            let steps: Vec<u32> = EXERCISES
                .iter()
                .filter(|e| e.track == track)
                .map(|e| e.step)
                .collect();
            assert_eq!(steps, (1..=steps.len() as u32).collect::<Vec<_>>());
            assert!(EXERCISES
                .iter()
                .filter(|e| e.track == track)
                .all(|e| e.dir.is_some() && e.answers.is_none()));
        }
        assert!(EXERCISES
            .iter()
            .filter(|e| e.track == Track::Measure)
            .all(|e| e.answers.is_some() && e.dir.is_none()));
        assert!(EXERCISES.len() >= 11);
        for (track, kind) in [
            (Track::Container, isolab_backends::student::Kind::Container),
            (Track::Vmm, isolab_backends::student::Kind::Vmm),
        ] {
            let last = EXERCISES.iter().filter(|e| e.track == track).count() as u32;
            assert_eq!(kind.last_step(), last, "{kind:?}");
        }
    }

    #[test]
    fn progress_keeps_the_best_result_and_shows_the_last() {
        let score = |passed, date: &str| Score {
            passed,
            total: 11,
            date: date.into(),
        };
        let mut p = Progress::default();
        p.add("container-3", score(8, "d1"));
        p.add("container-3", score(11, "d2"));
        p.add("container-3", score(6, "d3"));
        let r = &p.exercises["container-3"];
        assert_eq!(r.last(), score(6, "d3"));
        assert_eq!(r.best(), score(11, "d2"));
        let text = p.render();
        let line = text.lines().find(|l| l.starts_with("container-3")).unwrap();
        assert!(
            line.contains("done (11/11, d2)") && line.contains("6/11 (d3)"),
            "{line}"
        );
        assert!(
            text.contains(&format!("1/{} exercises done", EXERCISES.len())),
            "{text}"
        );
        let json = p.exercism();
        let entry = json["tests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == "container-3")
            .unwrap();
        assert_eq!(entry["status"], "pass");
        assert_eq!(entry["message"], "best 11/11 at d2; last 6/11 at d3");
        // A better retry replaces the best; a file without `best` (older) reads as last = best.
        p.add("container-3", score(11, "d4"));
        assert_eq!(p.exercises["container-3"].best, None);
        let old: Progress =
            serde_json::from_str(r#"{"exercises":{"startup":{"passed":3,"total":9,"date":"d0"}}}"#)
                .unwrap();
        assert_eq!(
            old.exercises["startup"].best(),
            old.exercises["startup"].last()
        );
        // The comparisons are listed under their building tracks.
        let line = |id: &str| {
            text.lines()
                .find(|l| l.starts_with(id))
                .unwrap()
                .to_string()
        };
        assert!(line("container-compare").contains(" container "), "{text}");
        assert!(line("vmm-compare").contains(" vmm "), "{text}");
        assert!(line("throughput").contains(" measure "), "{text}");
    }

    #[test]
    fn a_score_counts_passes_and_only_a_full_score_passes() {
        let outcome = Outcome {
            exercise: &EXERCISES[0],
            tests: vec![
                Test::pass("a"),
                Test::fail("b", "why"),
                Test::not_yet("c", "later"),
            ],
            measured: vec!["x".into()],
            written: BTreeMap::from([("q1".to_string(), "because".to_string())]),
        };
        assert_eq!(outcome.score(), (1, 3));
        assert!(!outcome.passed());
        let text = outcome.render();
        assert!(text.contains("FAIL") && text.contains("↳ why") && text.contains("score: 1/3"));
        let json = outcome.exercism();
        assert_eq!(json["status"], "fail");
        assert_eq!(json["tests"][2]["status"], "fail");
        assert_eq!(json["written"]["q1"], "because");
        let empty = Outcome {
            tests: vec![],
            ..outcome
        };
        assert!(!empty.passed(), "no tests is not a pass");
    }
}
