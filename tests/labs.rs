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

use isolab::labs::{skeleton, Track, EXERCISES};
use std::path::{Path, PathBuf};

fn labs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("labs")
}

/// Every file of `dir`, relative to it.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
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
