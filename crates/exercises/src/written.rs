//! The written questions of the measuring exercises: collected, never graded by the lab.
//!
//! Each measuring text ends with **Questions** that ask *why* ("which kernel objects are
//! created in that phase?"). No program can tell a good answer from a bad one, so the lab does
//! not try: it asks for one answer per question under `[written]` in the answers file
//! (`q1 = "…"`, `q2 = "…"`, one per numbered question), passes the exercise only when none is
//! blank, and hands them to the instructor in `lab check --json` beside the figures it did
//! check. A student cannot finish by copying the table: the questions' answers are theirs to
//! write and someone else's to read.

use crate::answers::Answers;
use crate::Test;
use std::collections::BTreeMap;

/// How many numbered questions each measuring exercise's text asks (its `## Questions`
/// section; `every_text_asks_as_many_questions_as_its_template_collects` keeps them equal).
pub const WRITTEN: [(&str, usize); 11] = [
    ("startup", 5),
    ("memory", 5),
    ("isolation", 4),
    ("boundary", 4),
    ("density", 4),
    ("throughput", 4),
    ("images", 4),
    ("neighbours", 4),
    ("restore", 4),
    ("container-compare", 4),
    ("vmm-compare", 3),
];

/// The table of the answers file the written answers go in.
pub const SECTION: &str = "written";

/// How many written questions exercise `id` asks (0 for a building step).
pub fn count(id: &str) -> usize {
    WRITTEN
        .iter()
        .find(|(i, _)| *i == id)
        .map_or(0, |(_, n)| *n)
}

/// The keys of exercise `id`'s written answers: `written.q1` …
pub fn keys(id: &str) -> Vec<String> {
    (1..=count(id)).map(|i| format!("{SECTION}.q{i}")).collect()
}

/// The written answers of exercise `id` in `answers` (question key → text, blank ones left
/// out), and the test that they are all there.
pub fn collect(answers: &Answers, id: &str) -> (Test, BTreeMap<String, String>) {
    let n = count(id);
    let name = format!("your written answers to the text's {n} questions ([{SECTION}] q1 … q{n})");
    let mut texts = BTreeMap::new();
    let (mut blank, mut wrong) = (Vec::new(), Vec::new());
    for i in 1..=n {
        let key = format!("{SECTION}.q{i}");
        match answers.text(&key) {
            Ok(Some(text)) => {
                texts.insert(format!("q{i}"), text);
            }
            Ok(None) => blank.push(i.to_string()),
            Err(_) => wrong.push(format!("q{i}")),
        }
    }
    let test = if !wrong.is_empty() {
        Test::fail(
            name,
            format!(
                "{} should be text in quotes (\"\"\"…\"\"\" for several lines)",
                wrong.join(", ")
            ),
        )
    } else if !blank.is_empty() {
        Test::not_yet(
            name,
            format!(
                "question{} {} not answered yet: write a few sentences each; \
                 `lab check --json FILE` hands them to your instructor",
                if blank.len() == 1 { "" } else { "s" },
                blank.join(", ")
            ),
        )
    } else {
        Test::pass(name)
    };
    (test, texts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Status;

    #[test]
    fn written_answers_are_collected_and_none_may_be_blank() {
        let a = Answers::parse(
            "[written]\nq1 = \"The namespaces phase: clone creates them.\"\nq2 = \"  \"\nq3 = 4\n",
        )
        .unwrap();
        let (test, texts) = collect(&a, "boundary");
        assert_eq!(test.status, Status::Fail, "{test:?}");
        assert!(test.hint.as_deref().unwrap().contains("q3"), "{test:?}");
        assert_eq!(texts.len(), 1);
        assert_eq!(texts["q1"], "The namespaces phase: clone creates them.");
        let a = Answers::parse("[written]\nq1 = \"a\"\nq2 = \"b\"\nq4 = \"d\"\n").unwrap();
        let (test, _) = collect(&a, "boundary");
        assert_eq!(test.status, Status::NotYet);
        assert!(
            test.hint
                .as_deref()
                .unwrap()
                .starts_with("question 3 not answered"),
            "{test:?}"
        );
        let a =
            Answers::parse("[written]\nq1 = \"a\"\nq2 = \"b\"\nq3 = \"c\"\nq4 = \"d\"\n").unwrap();
        assert_eq!(collect(&a, "boundary").0.status, Status::Pass);
    }

    /// Each measuring text's `## Questions` has as many numbered questions as [`WRITTEN`]
    /// says, and its template asks for exactly those answers.
    #[test]
    fn every_text_asks_as_many_questions_as_its_template_collects() {
        let labs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../labs");
        for e in crate::EXERCISES.iter().filter(|e| e.answers.is_some()) {
            let text = std::fs::read_to_string(labs.join(e.doc)).unwrap();
            let section = text
                .split("\n## Questions")
                .nth(1)
                .unwrap_or_else(|| panic!("{} has no Questions", e.doc));
            let section = section.split("\n## ").next().unwrap();
            let numbered = section
                .lines()
                .filter(|l| {
                    let d: String = l.chars().take_while(char::is_ascii_digit).collect();
                    !d.is_empty() && l[d.len()..].starts_with(". ")
                })
                .count();
            assert_eq!(numbered, count(e.id), "{}", e.doc);
            let template: toml::Table = std::fs::read_to_string(labs.join(e.answers.unwrap()))
                .unwrap()
                .parse()
                .unwrap();
            let written = template
                .get(SECTION)
                .and_then(|w| w.as_table())
                .unwrap_or_else(|| panic!("{} has no [{SECTION}]", e.id));
            let want: Vec<String> = (1..=count(e.id)).map(|i| format!("q{i}")).collect();
            let mut got: Vec<String> = written.keys().cloned().collect();
            got.sort_by_key(|k| k[1..].parse::<usize>().unwrap_or(0));
            assert_eq!(got, want, "{}", e.id);
        }
    }
}
