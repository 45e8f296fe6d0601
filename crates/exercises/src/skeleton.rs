//! How the step crates of a building track are made from its solution.
//!
//! Each step of a track (`labs/container/1-run` … `7-caps`, `labs/vmm/1-kvm` … `5-guest`) is a
//! crate whose source is the track's solution with the steps from this one on replaced by their
//! skeletons: step `k`'s crate holds the solution of steps `1..k` and a TODO for step `k` and
//! every later one. Writing each crate by hand would let them drift apart; instead the solution
//! carries the skeletons in comments, and [`render`] cuts one step out of it:
//!
//! ```text
//!     // STEP 3 BEGIN
//!     unshare(CloneFlags::CLONE_NEWPID)?;          ← the solution (steps before k keep it)
//!     // STEP 3 END
//!     //~ // TODO(step 3): a PID namespace.       ← the skeleton (step k and later get it,
//!     //~ report.todo(3, "a PID namespace");          without the `//~ `)
//! ```
//!
//! Skeleton lines (`//~`) may sit inside a block or right after its `END`. A block of step `*`
//! is skeleton in every step (e.g. an `allow` that only unfinished code needs). The marker lines
//! themselves never appear in a step's crate. The test `step_crates_are_rendered_from_the_solution`
//! (tests/labs.rs) keeps the checked-in crates equal to what this renders.

/// Why a solution's markers do not parse.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SkeletonError {
    /// A `BEGIN` inside a block, an `END` without its `BEGIN`, or a file that ends in a block.
    #[error("line {line}: {what}")]
    Markers {
        /// Line number, from 1.
        line: usize,
        /// What is wrong.
        what: String,
    },
}

/// Which step a block belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// Step n.
    N(u32),
    /// Every step's skeleton, no solution.
    All,
}

impl Step {
    /// Does step `k`'s crate get this block's solution (true) or its skeleton (false)?
    fn solved_in(self, k: u32) -> bool {
        match self {
            Step::N(n) => n < k,
            Step::All => false,
        }
    }
}

fn marker(line: &str, word: &str) -> Option<Step> {
    let rest = line.trim().strip_prefix("// STEP ")?.strip_suffix(word)?;
    match rest.trim() {
        "*" => Some(Step::All),
        n => n.parse().ok().map(Step::N),
    }
}

/// The source of step `k`'s crate, from the solution's source.
pub fn render(solution: &str, k: u32) -> Result<String, SkeletonError> {
    let mut out = String::new();
    // The open block, and the block whose END was the last non-skeleton line (skeleton lines
    // right after an END belong to it).
    let (mut open, mut after): (Option<Step>, Option<Step>) = (None, None);
    for (i, line) in solution.lines().enumerate() {
        let err = |what: &str| SkeletonError::Markers {
            line: i + 1,
            what: what.to_string(),
        };
        if let Some(step) = marker(line, " BEGIN") {
            if open.is_some() {
                return Err(err("BEGIN inside a block"));
            }
            (open, after) = (Some(step), None);
            continue;
        }
        if let Some(step) = marker(line, " END") {
            if open != Some(step) {
                return Err(err("END without its BEGIN"));
            }
            (open, after) = (None, Some(step));
            continue;
        }
        let trimmed = line.trim_start();
        if let Some(code) = trimmed.strip_prefix("//~") {
            let step = open
                .or(after)
                .ok_or_else(|| err("skeleton line outside a block"))?;
            if !step.solved_in(k) {
                let indent = &line[..line.len() - trimmed.len()];
                let code = code.strip_prefix(' ').unwrap_or(code);
                if code.is_empty() {
                    out.push('\n');
                } else {
                    out.push_str(indent);
                    out.push_str(code);
                    out.push('\n');
                }
            }
            continue;
        }
        after = None;
        if open.is_none_or(|step| step.solved_in(k)) {
            out.push_str(line);
            out.push('\n');
        }
    }
    if open.is_some() {
        return Err(SkeletonError::Markers {
            line: solution.lines().count(),
            what: "the file ends inside a block".into(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOLUTION: &str = "\
fn main() {
    // STEP 1 BEGIN
    one();
    // STEP 1 END
    //~ // TODO(step 1)
    //~ todo(1);
    // STEP 2 BEGIN
    two();
    //~ todo(2);
    // STEP 2 END
    // STEP * BEGIN
    //~ unfinished();
    // STEP * END
    always();
}
";

    #[test]
    fn each_step_keeps_the_earlier_solutions_and_the_later_skeletons() {
        assert_eq!(
            render(SOLUTION, 1).unwrap(),
            "fn main() {\n    // TODO(step 1)\n    todo(1);\n    todo(2);\n    unfinished();\n    always();\n}\n"
        );
        assert_eq!(
            render(SOLUTION, 2).unwrap(),
            "fn main() {\n    one();\n    todo(2);\n    unfinished();\n    always();\n}\n"
        );
        assert_eq!(
            render(SOLUTION, 3).unwrap(),
            "fn main() {\n    one();\n    two();\n    unfinished();\n    always();\n}\n"
        );
    }

    #[test]
    fn broken_markers_are_refused_with_their_line() {
        let err = |s: &str| render(s, 1).unwrap_err().to_string();
        assert!(err("// STEP 1 BEGIN\n// STEP 2 BEGIN\n").starts_with("line 2"));
        assert!(err("// STEP 1 END\n").starts_with("line 1"));
        assert!(err("// STEP 1 BEGIN\nx\n").contains("ends inside"));
        assert!(err("//~ x\n").contains("outside a block"));
        assert!(err("// STEP 1 BEGIN\n// STEP 2 END\n").starts_with("line 2"));
    }
}
