//! The exercises of `labs/` as a student meets them: every check can fail and can pass.
//!
//! * every step crate is what the track's solution renders for that step
//!   (`src/labs/skeleton.rs`); `ISOLAB_WRITE_LABS=1 cargo test --test labs step_crates` writes
//!   them after a change to a solution;
//! * for every building step, `lab check` fails on the step's untouched skeleton and passes on
//!   the next step's skeleton, which holds the solution (the last step: on the solution);
//! * for every measuring exercise, it passes on answers derived from a real run and fails on
//!   the same answers checked against another run (another seed) or another machine.

mod common;

use isolab_exercises::{skeleton, Track, EXERCISES};
use std::path::{Path, PathBuf};
use std::process::Command;

const LAB: &str = env!("CARGO_BIN_EXE_lab");

fn labs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("labs")
}

/// Every file of `dir`, relative to it, leaving out build output and lab state.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if e.file_name() == "target" || e.file_name() == ".lab" {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}

/// What step `step`'s crate in `dir` must hold: the solution's sources rendered for the step,
/// and its Cargo.toml with the step's package name.
fn rendered(solution: &Path, track: &str, step: u32) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    for rel in files(&solution.join("src")) {
        let text = std::fs::read_to_string(solution.join("src").join(&rel)).unwrap();
        let text =
            skeleton::render(&text, step).unwrap_or_else(|e| panic!("{}: {e}", rel.display()));
        out.push((Path::new("src").join(rel), text));
    }
    let manifest = std::fs::read_to_string(solution.join("Cargo.toml"))
        .unwrap()
        .replace(
            &format!("name = \"{track}-solution\""),
            &format!("name = \"{track}-{step}\""),
        );
    out.push((PathBuf::from("Cargo.toml"), manifest));
    out
}

#[test]
fn step_crates_are_rendered_from_the_solution() {
    let write = std::env::var_os("ISOLAB_WRITE_LABS").is_some();
    let mut stale = Vec::new();
    for e in EXERCISES.iter().filter(|e| e.track != Track::Measure) {
        let track = e.track.name();
        let solution = labs().join(track).join("solution");
        let dir = labs().join(e.dir.unwrap());
        for (rel, text) in rendered(&solution, track, e.step) {
            let path = dir.join(&rel);
            if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
                if write {
                    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                    std::fs::write(&path, &text).unwrap();
                } else {
                    stale.push(path.display().to_string());
                }
            }
        }
    }
    assert!(
        stale.is_empty(),
        "step crates differ from what their solution renders (ISOLAB_WRITE_LABS=1 cargo test \
         --test labs step_crates rewrites them): {stale:?}"
    );
}

#[test]
fn every_exercise_states_its_goal_time_needs_and_check() {
    let index = std::fs::read_to_string(labs().join("README.md")).unwrap();
    for e in &EXERCISES {
        let text = std::fs::read_to_string(labs().join(e.doc))
            .unwrap_or_else(|err| panic!("{}: {err}", e.doc));
        for want in [
            "**Goal:**".to_string(),
            format!("**Time:** {} min", e.minutes),
            "**Needs:**".to_string(),
            format!("**Check:** `lab check {}`", e.id),
        ] {
            assert!(text.contains(&want), "{} lacks {want:?}", e.doc);
        }
        let row = format!("| `{}` | [", e.id);
        let line = index
            .lines()
            .find(|l| l.starts_with(&row))
            .unwrap_or_else(|| panic!("labs/README.md has no row for {}", e.id));
        assert!(
            line.contains(&format!("]({}) | {} |", e.doc, e.minutes)),
            "labs/README.md's row for {} disagrees with the catalogue: {line}",
            e.id
        );
        if let Some(answers) = e.answers {
            assert!(labs().join(answers).is_file(), "no {answers}");
        }
    }
}

/// `lab check` on each step's untouched skeleton fails; on the next step's skeleton (the
/// solution of this one) it passes; so does the solution on the last step.
#[test]
fn every_building_step_fails_on_its_skeleton_and_passes_on_the_next() {
    let state = common::temp_dir("labs-steps");
    for track in [Track::Container, Track::Vmm] {
        let steps: Vec<_> = EXERCISES.iter().filter(|e| e.track == track).collect();
        for (i, e) in steps.iter().enumerate() {
            let own = labs().join(e.dir.unwrap());
            let next = steps
                .get(i + 1)
                .map(|n| labs().join(n.dir.unwrap()))
                .unwrap_or_else(|| labs().join(track.name()).join("solution"));
            for (dir, pass) in [(&own, false), (&next, true)] {
                let out = Command::new(LAB)
                    .args(["check", e.id, "--labs"])
                    .arg(labs())
                    .arg("--crate")
                    .arg(dir)
                    .env("TMPDIR", &state)
                    .output()
                    .unwrap();
                let text = String::from_utf8_lossy(&out.stdout);
                let code = out.status.code();
                assert_eq!(
                    code,
                    Some(if pass { 0 } else { 1 }),
                    "lab check {} --crate {}: expected to {}\n{text}\n{}",
                    e.id,
                    dir.display(),
                    if pass { "pass" } else { "fail" },
                    String::from_utf8_lossy(&out.stderr)
                );
                if !pass {
                    assert!(text.contains("not yet") || text.contains("FAIL"), "{text}");
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&state);
}

// ---------------------------------------------------------------------------------------------
// The walkthrough: every `lab` command of every text, in order, as a new student runs them.

/// One `lab` command of a text, and the section (`## …`) it is in.
#[derive(Clone, Debug)]
struct Cmd {
    args: Vec<String>,
    section: String,
    /// The exit status the text announces in a trailing comment (`# exit status 1: …`), for a
    /// command that is meant to fail (e.g. a workload the OOM killer ends).
    status: Option<i32>,
}

impl Cmd {
    fn text(&self) -> String {
        format!("lab {}", self.args.join(" "))
    }
}

/// The `lab` commands of a Markdown text, in order: every line of a fenced block that starts
/// with `lab `, and every inline `lab …` span that no fenced block repeats.
fn commands(md: &str) -> Vec<Cmd> {
    let (mut fenced, mut inline) = (Vec::new(), Vec::new());
    let (mut in_block, mut section) = (false, String::new());
    for line in md.lines() {
        let t = line.trim();
        if t.starts_with("```") {
            in_block = !in_block;
            continue;
        }
        if let Some(h) = t.strip_prefix("## ") {
            section = h.to_string();
        }
        let cmd = |text: &str| {
            let (text, comment) = text.split_once('#').unwrap_or((text, ""));
            Cmd {
                args: text
                    .split_whitespace()
                    .skip(1)
                    .map(str::to_string)
                    .collect(),
                section: section.clone(),
                status: comment
                    .trim()
                    .strip_prefix("exit status ")
                    .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
                    .and_then(|n| n.parse().ok()),
            }
        };
        if in_block {
            if t.starts_with("lab ") {
                fenced.push((fenced.len() + inline.len(), cmd(t)));
            }
        } else {
            for (i, span) in t.split('`').enumerate() {
                if i % 2 == 1 && span.starts_with("lab ") {
                    inline.push((fenced.len() + inline.len(), cmd(span)));
                }
            }
        }
    }
    let texts: Vec<String> = fenced.iter().map(|(_, c)| c.text()).collect();
    let mut all: Vec<(usize, Cmd)> = fenced;
    all.extend(
        inline
            .into_iter()
            .filter(|(_, c)| !texts.contains(&c.text())),
    );
    all.sort_by_key(|(i, _)| *i);
    let mut seen = Vec::new();
    all.into_iter()
        .map(|(_, c)| c)
        .filter(|c| {
            // An inline mention of the same command twice runs once.
            let new = !seen.contains(&(c.text(), c.section.clone()));
            seen.push((c.text(), c.section.clone()));
            new
        })
        .collect()
}

/// Copy `src` to `dst`, leaving out build output and lab state.
fn copy_tree(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap().flatten() {
        let name = e.file_name();
        if name == "target" || name == ".lab" {
            continue;
        }
        let (from, to) = (e.path(), dst.join(&name));
        if from.is_dir() {
            copy_tree(&from, &to);
        } else {
            std::fs::copy(&from, &to).unwrap();
        }
    }
}

/// What the walkthrough ran and found.
struct Walk {
    /// Its scratch checkout: labs/, kernels/, reports/.
    dir: PathBuf,
    /// For each measuring exercise, the results files its commands wrote (as printed), with
    /// the command and what it printed.
    results: std::collections::BTreeMap<String, Vec<(PathBuf, Cmd, String)>>,
}

impl Walk {
    fn lab(&self, args: &[String]) -> std::process::Output {
        Command::new(LAB)
            .args(args)
            .current_dir(&self.dir)
            // The step crates share the repository's labs target directory: their dependencies
            // are built once.
            .env("CARGO_TARGET_DIR", labs().join("target"))
            .env("TMPDIR", self.dir.join("tmp"))
            .output()
            .unwrap()
    }
}

/// Run `cmd` in the walkthrough; check that `lab` accepted it (no usage error, no panic) and,
/// when `want` says so, its exit status. Returns its standard output.
fn run(walk: &Walk, cmd: &Cmd, want: Option<i32>, log: &mut Vec<String>) -> String {
    let started = std::time::Instant::now();
    let out = walk.lab(&cmd.args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let code = out.status.code();
    log.push(format!(
        "{:>7.1} s  {:?}  {}",
        started.elapsed().as_secs_f64(),
        code,
        cmd.text()
    ));
    assert!(
        matches!(code, Some(0 | 1)),
        "`{}` was not accepted (status {code:?}):\n{stdout}\n{stderr}",
        cmd.text()
    );
    if let Some(want) = cmd.status.or(want) {
        assert_eq!(
            code,
            Some(want),
            "`{}` ({}):\n{stdout}\n{stderr}",
            cmd.text(),
            cmd.section
        );
    }
    stdout
}

/// The `results:` paths a `lab run` printed.
fn printed_results(stdout: &str) -> Vec<PathBuf> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("results: "))
        .map(PathBuf::from)
        .collect()
}

/// The answers a student reading `files` right writes for exercise `id`, with the results
/// paths as `lab run` printed them.
fn derived_answers(walk: &Walk, id: &str, files: &[(PathBuf, Cmd, String)]) -> String {
    let results: Vec<isolab_results::Results> = files
        .iter()
        .map(|(p, _, _)| isolab_results::Results::read(&walk.dir.join(p)).unwrap())
        .collect();
    let mut key = isolab_exercises::measure::answer_key(id, &results);
    for (need, (path, _, _)) in isolab_exercises::measure::needs(id).iter().zip(files) {
        key.insert(
            need.key.into(),
            toml::Value::String(path.display().to_string()),
        );
    }
    toml::to_string(&key).unwrap()
}

/// The dotted keys of every leaf of a TOML table.
fn leaf_keys(table: &toml::Table, prefix: &str, out: &mut Vec<String>) {
    for (k, v) in table {
        let key = format!("{prefix}{k}");
        match v {
            toml::Value::Table(t) => leaf_keys(t, &format!("{key}."), out),
            _ => out.push(key),
        }
    }
}

/// Every figure of the key that the report prints must appear, as printed, in what the
/// exercise's commands printed: a student can read each answer off the terminal.
fn assert_figures_are_printed(id: &str, files: &[(PathBuf, Cmd, String)], walk: &Walk) {
    use isolab_exercises::answers::{Expected, Precision};
    let printed: String = files.iter().map(|(_, _, out)| out.as_str()).collect();
    let results: Vec<isolab_results::Results> = files
        .iter()
        .map(|(p, _, _)| isolab_results::Results::read(&walk.dir.join(p)).unwrap())
        .collect();
    let show = |v: f64, p: Precision| match p {
        Precision::Decimals(d) => Some(format!("{v:.*}", d as usize)),
        Precision::Sig3 => Some(isolab_report::format::sig3(v)),
        Precision::Relative(_) => None,
    };
    for q in isolab_exercises::measure::questions(id, &results) {
        let values = match q.expected.as_ref().unwrap() {
            Expected::Figure { value, precision } => vec![show(*value, *precision)],
            Expected::Interval {
                low,
                high,
                precision,
            } => vec![show(*low, *precision), show(*high, *precision)],
            Expected::Word { .. } => vec![],
        };
        for v in values.into_iter().flatten() {
            assert!(
                printed.contains(&v),
                "{id}: {} = {v} is not in what the commands printed",
                q.key
            );
        }
    }
}

/// The tests that use the walkthrough; the last one to finish removes its directory.
static WALKERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(2);

/// One user of the walkthrough is done (only after its assertions passed: a failed test leaves
/// the directory to look at).
fn done_with(walk: &Walk) {
    if WALKERS.fetch_sub(1, std::sync::atomic::Ordering::SeqCst) == 1 {
        let _ = std::fs::remove_dir_all(&walk.dir);
    }
}

fn walkthrough() -> &'static Walk {
    static WALK: std::sync::OnceLock<Walk> = std::sync::OnceLock::new();
    WALK.get_or_init(|| {
        let _serial = common::serial();
        let dir = common::temp_dir("labs-walk");
        // A fresh checkout's exercises, and the kernels crate they link (labs/Cargo.toml names it
        // by its place in the workspace, ../crates/kernels).
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        copy_tree(&labs(), &dir.join("labs"));
        copy_tree(&repo.join("crates/kernels"), &dir.join("crates/kernels"));
        std::fs::create_dir_all(dir.join("tmp")).unwrap();
        let mut walk = Walk {
            dir,
            results: Default::default(),
        };
        let mut log = Vec::new();
        let read = |p: &str| std::fs::read_to_string(labs().join(p)).unwrap();
        for cmd in commands(&read("README.md")) {
            run(&walk, &cmd, None, &mut log);
        }
        for e in &EXERCISES {
            log.push(format!("== {} ({})", e.id, e.doc));
            let started = std::time::Instant::now();
            let cmds = commands(&read(e.doc));
            let check = |c: &Cmd| c.args.first().map(String::as_str) == Some("check");
            match e.track {
                Track::Measure => {
                    let mut produced = Vec::new();
                    let answer_at = cmds
                        .iter()
                        .position(|c| c.section == "Answer")
                        .expect("a measuring text has an Answer section");
                    for cmd in &cmds[..answer_at] {
                        if check(cmd) {
                            continue;
                        }
                        let out = run(&walk, cmd, Some(0), &mut log);
                        for p in printed_results(&out) {
                            produced.push((p, cmd.clone(), out.clone()));
                        }
                    }
                    let needs = isolab_exercises::measure::needs(e.id);
                    let files: Vec<_> = needs
                        .iter()
                        .map(|n| {
                            produced
                                .iter()
                                .find(|(p, _, _)| {
                                    p.to_string_lossy()
                                        .ends_with(&format!("-{}/results.jsonl", n.experiment))
                                })
                                .unwrap_or_else(|| panic!("{}: no {} results", e.id, n.experiment))
                                .clone()
                        })
                        .collect();
                    let answers = derived_answers(&walk, e.id, &files);
                    // The template asks exactly what the check checks.
                    let template: toml::Table = read(e.answers.unwrap()).parse().unwrap();
                    let derived: toml::Table = answers.parse().unwrap();
                    let (mut want, mut got) = (Vec::new(), Vec::new());
                    leaf_keys(&template, "", &mut want);
                    leaf_keys(&derived, "", &mut got);
                    want.sort();
                    got.sort();
                    assert_eq!(want, got, "{}: template and questions disagree", e.id);
                    assert_figures_are_printed(e.id, &files, &walk);
                    std::fs::write(walk.dir.join("labs").join(e.answers.unwrap()), answers)
                        .unwrap();
                    for cmd in &cmds[answer_at..] {
                        let want = (check(cmd)
                            && cmd.args.get(1).map(String::as_str) == Some(e.id))
                        .then_some(0);
                        run(&walk, cmd, want, &mut log);
                    }
                    walk.results.insert(e.id.to_string(), files);
                }
                Track::Container | Track::Vmm => {
                    let own_check =
                        |c: &Cmd| check(c) && c.args.get(1).map(String::as_str) == Some(e.id);
                    let at = cmds.iter().position(own_check).expect("the step's check");
                    for cmd in &cmds[..at] {
                        run(&walk, cmd, None, &mut log);
                    }
                    // The untouched skeleton fails; the step solved (as the next step's
                    // skeleton has it) passes, and is installed for the measurements.
                    run(&walk, &cmds[at], Some(1), &mut log);
                    let track = e.track.name();
                    let next = EXERCISES
                        .iter()
                        .find(|n| n.track == e.track && n.step == e.step + 1)
                        .map_or(format!("{track}/solution"), |n| n.dir.unwrap().to_string());
                    let src = walk.dir.join("labs").join(e.dir.unwrap()).join("src");
                    std::fs::remove_dir_all(&src).unwrap();
                    copy_tree(&labs().join(next).join("src"), &src);
                    run(&walk, &cmds[at], Some(0), &mut log);
                    for cmd in &cmds[at + 1..] {
                        run(&walk, cmd, Some(0), &mut log);
                    }
                }
            }
            log.push(format!(
                "   {} took {:.0} s",
                e.id,
                started.elapsed().as_secs_f64()
            ));
        }
        for doc in ["abi.md", "instructors.md"] {
            for cmd in commands(&read(doc)) {
                run(&walk, &cmd, Some(0), &mut log);
            }
        }
        // No text was left out: every Markdown file of labs/ is one of those above.
        let walked: Vec<PathBuf> = ["README.md", "abi.md", "instructors.md"]
            .into_iter()
            .chain(EXERCISES.iter().map(|e| e.doc))
            .map(|d| labs().join(d))
            .collect();
        for file in files(&labs()) {
            let path = labs().join(&file);
            if path.extension().is_some_and(|x| x == "md") {
                assert!(
                    walked.contains(&path),
                    "{} is walked by no test",
                    file.display()
                );
            }
        }
        println!("walkthrough:\n{}", log.join("\n"));
        walk
    })
}

#[test]
fn a_new_student_can_walk_through_every_exercise() {
    let walk = walkthrough();
    // Everything passed on the way (asserted in `walkthrough`): the progress table says so.
    let out = walk.lab(&["check".into()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("{0}/{0} exercises done", EXERCISES.len())),
        "{text}"
    );
    // What an instructor collects (labs/instructors.md wrote it): Exercism's shape, one test
    // per exercise.
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(walk.dir.join("progress.json")).unwrap())
            .unwrap();
    assert_eq!(json["status"], "pass");
    assert_eq!(json["tests"].as_array().unwrap().len(), EXERCISES.len());
    let one: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(walk.dir.join("container-3.json")).unwrap())
            .unwrap();
    assert_eq!(one["status"], "pass");
    assert!(one["tests"].as_array().unwrap().len() > 5);
    done_with(walk);
}

/// Answers derived from one run fail against another run of the same machine, and against the
/// same run carried to another machine.
#[test]
fn copied_answers_do_not_pass() {
    let walk = walkthrough();
    let scratch = walk.dir.join("copies");
    std::fs::create_dir_all(&scratch).unwrap();
    for (id, files) in &walk.results {
        let answers: toml::Table = derived_answers(walk, id, files).parse().unwrap();
        let needs = isolab_exercises::measure::needs(id);
        let check = |answers: &toml::Table, what: &str| {
            let path = scratch.join(format!("{id}-{what}.toml"));
            std::fs::write(&path, toml::to_string(answers).unwrap()).unwrap();
            let out = walk.lab(&[
                "check".into(),
                id.clone(),
                "--answers".into(),
                path.display().to_string(),
            ]);
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            assert_eq!(
                out.status.code(),
                Some(1),
                "{id}: answers of one run passed against {what}:\n{text}"
            );
            text
        };
        // The same results, measured on "another machine".
        let mut moved = answers.clone();
        for (need, (path, _, _)) in needs.iter().zip(files) {
            let text = std::fs::read_to_string(walk.dir.join(path)).unwrap();
            let (first, rest) = text.split_once('\n').unwrap();
            let mut header: serde_json::Value = serde_json::from_str(first).unwrap();
            header["environment"]["hostname"] = "another-machine".into();
            header["environment"]["cpu_model"] = "Another CPU".into();
            let copy = scratch.join(format!("{id}-{}-elsewhere.jsonl", need.key));
            std::fs::write(&copy, format!("{header}\n{rest}")).unwrap();
            moved.insert(need.key.into(), copy.display().to_string().into());
        }
        let text = check(&moved, "another machine");
        assert!(text.contains("was measured on this machine"), "{text}");
        // A classmate's results, whose strings (host name, CPU, kernel) read as this machine's:
        // only the machine identity the lab recorded tells.
        let mut classmates = answers.clone();
        for (need, (path, _, _)) in needs.iter().zip(files) {
            let text = std::fs::read_to_string(walk.dir.join(path)).unwrap();
            let (first, rest) = text.split_once('\n').unwrap();
            let mut header: serde_json::Value = serde_json::from_str(first).unwrap();
            assert!(
                header["environment"]["machine"]["boot_id"].is_string(),
                "{id}: the lab records no boot_id: {first}"
            );
            header["environment"]["machine"] = serde_json::json!({
                "boot_id": "5c1a55e5-0000-4000-8000-000000000000",
                "machine": "0".repeat(64),
            });
            let copy = scratch.join(format!("{id}-{}-classmate.jsonl", need.key));
            std::fs::write(&copy, format!("{header}\n{rest}")).unwrap();
            classmates.insert(need.key.into(), copy.display().to_string().into());
        }
        let text = check(&classmates, "a classmate's machine");
        assert!(text.contains("was measured on this machine"), "{text}");
        // Another run here: the first results file of the exercise again, with another seed.
        // Memory and density figures do not depend on timing: two runs on one machine give the
        // same answers at the printed precision, so only another machine's differ.
        // `lab run images` climbs a ladder, as density does, and takes no `--seed`.
        if matches!(id.as_str(), "memory" | "density" | "images") {
            continue;
        }
        let (_, cmd, _) = &files[0];
        let mut again = cmd.clone();
        // No warm-up: the copy needs a valid run, not a careful one (a text may say so already).
        again.args.extend(["--seed".into(), "2".into()]);
        if !again.args.iter().any(|a| a == "--warmup") {
            again.args.extend(["--warmup".into(), "0".into()]);
        }
        let mut log = Vec::new();
        let out = run(walk, &again, Some(0), &mut log);
        let other = printed_results(&out)
            .into_iter()
            .next()
            .expect("a results path");
        let mut copied = answers.clone();
        copied.insert(needs[0].key.into(), other.display().to_string().into());
        check(&copied, "another run");
    }
    done_with(walk);
}
