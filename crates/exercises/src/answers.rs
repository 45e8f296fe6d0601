//! A student's answers to a measuring exercise (`labs/answers/<exercise>.toml`), and how each
//! answer is compared with what the student's own results show.
//!
//! ```toml
//! results = "reports/20261128-101500-startup/results.jsonl"
//!
//! [container]
//! startup_ms = 1.393             # a figure, as the table prints it
//! ci_ms = [1.376, 1.426]         # its 95% confidence interval
//! longest_phase = "namespaces"   # a word from the exercise's vocabulary
//! ```
//!
//! A blank answer (`""`) is "not yet". A figure is a TOML number (`1.393`); the same number in
//! quotes (`"1.393"`) is read as that number too, since a template's blank is a pair of quotes.
//! A figure must equal the one recomputed from the results
//! file **at the precision the report prints it** ([`Precision`]): three decimals of a
//! millisecond, two of a MiB, three significant digits of a ratio. That is what reading the
//! table gives, and what a copy of another run's answers almost never matches — a second run
//! on the same machine moves every interval by more than that.

use crate::Test;
use isolab_host::files::FilesError;
use std::path::{Path, PathBuf};

/// The largest answers file `lab check` reads. A complete one is about a kilobyte (a path and a
/// dozen figures and words); 1 MiB is plenty for any comments a student adds, and small enough
/// that `--answers /dev/zero` or a huge file costs nothing: either is refused before it is read.
pub const MAX_ANSWERS: u64 = 1 << 20;

/// Why an answers file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum AnswersError {
    /// It could not be read, or was refused (not a regular file, too large).
    #[error(transparent)]
    Files(#[from] FilesError),
    /// It is not TOML.
    #[error("{path} is not valid TOML: line {line}, column {column}: {message}")]
    Toml {
        /// The file.
        path: PathBuf,
        /// Where the parser stopped (1-based).
        line: usize,
        /// The column there (1-based, in characters).
        column: usize,
        /// What the parser expected there: its message, never the line itself.
        message: String,
    },
}

/// Why `text` (the file at `path`) is not TOML, without quoting it: the parser's own error
/// shows the line it stopped at, and the file may not be the student's to show — a link to a
/// file only root may read, once, put its secret in the hint and in the `--json` file.
fn toml_error(path: &Path, text: &str, e: &toml::de::Error) -> AnswersError {
    let at = e.span().map_or(0, |s| s.start).min(text.len());
    let before = text.get(..at).unwrap_or("");
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    AnswersError::Toml {
        path: path.to_path_buf(),
        line,
        column,
        message: e.message().trim().replace('\n', "; "),
    }
}

/// A student's answers file.
#[derive(Clone, Debug)]
pub struct Answers {
    /// Where it was read from.
    pub path: PathBuf,
    table: toml::Table,
}

/// How precisely a figure is printed, and therefore how precisely it must be quoted.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Precision {
    /// A fixed number of decimals (milliseconds: 3; MiB: 2).
    Decimals(u32),
    /// Three significant digits (ratios, `format::sig3`).
    Sig3,
    /// Within this fraction of the value: an estimate the student works out from printed
    /// figures (e.g. 0.1 for ±10 %).
    Relative(f64),
}

impl Precision {
    /// Half a unit of the last printed digit of `value`: how far a correctly read figure can
    /// be from the exact one.
    fn tolerance(self, value: f64) -> f64 {
        let half_unit = |decimals: i32| 0.5 * 10f64.powi(-decimals);
        let slack = 1e-9 + value.abs() * 1e-12;
        slack
            + match self {
                Precision::Decimals(d) => half_unit(d as i32),
                Precision::Sig3 => {
                    let a = value.abs();
                    // Mirrors format::sig3: 0 decimals from 100, 1 from 10, 2 from 1, else 3.
                    let d = if a >= 100.0 || a == 0.0 {
                        0
                    } else if a >= 10.0 {
                        1
                    } else if a >= 1.0 {
                        2
                    } else {
                        3
                    };
                    half_unit(d)
                }
                Precision::Relative(r) => value.abs() * r,
            }
    }

    /// How close a quoted figure must be, in words, for the check's lines and hints.
    pub fn describe(self) -> String {
        match self {
            Precision::Decimals(1) => "as printed, to 1 decimal".into(),
            Precision::Decimals(d) => format!("as printed, to {d} decimals"),
            Precision::Sig3 => "as printed, to 3 significant digits".into(),
            Precision::Relative(r) => format!("within ±{} % of it", (r * 100.0).round()),
        }
    }

    /// Does `quoted` read `exact` correctly?
    pub fn matches(self, quoted: f64, exact: f64) -> bool {
        (quoted - exact).abs() <= self.tolerance(exact)
    }
}

/// What a question's answer was.
enum Given<T> {
    Blank,
    Wrong(String),
    Value(T),
}

impl Answers {
    /// Read the answers at `path`: a regular file of at most [`MAX_ANSWERS`] bytes (the
    /// student's file, read by a lab that often runs as root: see [`isolab_host::files`]).
    ///
    /// As root, no symbolic link is followed from `path`'s directory on: the student who owns
    /// the directory could have made the file a link to one only root may read
    /// ([`Answers::read_in`]).
    pub fn read(path: &Path) -> Result<Answers, AnswersError> {
        if !nix::unistd::geteuid().is_root() {
            let text =
                isolab_host::files::read_to_string_bounded(path, MAX_ANSWERS, "answers file")?;
            return Answers::from_text(path, &text);
        }
        let name = path.file_name().map(Path::new).unwrap_or(path);
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        Answers::read_in(dir, name)
    }

    /// Read the answers at `rel` below the directory `dir` (an exercise's file in the labs
    /// directory). As root, without following a symbolic link anywhere below `dir`
    /// ([`isolab_host::files::read_to_string_beneath`]): the labs directory may be a student's.
    pub fn read_in(dir: &Path, rel: &Path) -> Result<Answers, AnswersError> {
        let path = dir.join(rel);
        let text = if nix::unistd::geteuid().is_root() {
            isolab_host::files::read_to_string_beneath(dir, rel, MAX_ANSWERS, "answers file")?
        } else {
            isolab_host::files::read_to_string_bounded(&path, MAX_ANSWERS, "answers file")?
        };
        Answers::from_text(&path, &text)
    }

    /// The answers in `text`, read from `path`.
    fn from_text(path: &Path, text: &str) -> Result<Answers, AnswersError> {
        let table = text
            .parse::<toml::Table>()
            .map_err(|e| toml_error(path, text, &e))?;
        Ok(Answers {
            path: path.to_path_buf(),
            table,
        })
    }

    /// Answers from a TOML text (tests).
    pub fn parse(text: &str) -> Result<Answers, String> {
        Ok(Answers {
            path: PathBuf::from("(text)"),
            table: text.parse().map_err(|e| format!("not valid TOML: {e}"))?,
        })
    }

    /// The value at a dotted key (`container.startup_ms`).
    fn get(&self, key: &str) -> Option<&toml::Value> {
        let mut parts = key.split('.');
        let mut value = self.table.get(parts.next()?)?;
        for part in parts {
            value = value.as_table()?.get(part)?;
        }
        Some(value)
    }

    /// A path the student wrote (the results file), if any.
    pub fn path_at(&self, key: &str) -> Option<PathBuf> {
        match self.get(key)? {
            toml::Value::String(s) if !s.trim().is_empty() => Some(PathBuf::from(s.trim())),
            _ => None,
        }
    }

    /// The text at `key`: `Ok(None)` when missing or blank, `Err` (what is there instead)
    /// when it is not a string.
    pub fn text(&self, key: &str) -> Result<Option<String>, String> {
        match self.get(key) {
            None => Ok(None),
            Some(toml::Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(s.trim().to_string())),
            Some(other) => Err(shown(other)),
        }
    }

    fn number(&self, key: &str) -> Given<f64> {
        match self.get(key) {
            None => Given::Blank,
            Some(toml::Value::String(s)) if s.trim().is_empty() => Given::Blank,
            Some(v) => match as_number(v) {
                Some(n) => Given::Value(n),
                None => Given::Wrong(format!(
                    "{key} should be a number (e.g. 1.25), not {}",
                    shown(v)
                )),
            },
        }
    }

    fn pair(&self, key: &str) -> Given<(f64, f64)> {
        match self.get(key) {
            None => Given::Blank,
            Some(toml::Value::String(s)) if s.trim().is_empty() => Given::Blank,
            Some(toml::Value::Array(a)) => {
                match (
                    a.len(),
                    a.first().and_then(as_number),
                    a.get(1).and_then(as_number),
                ) {
                    (2, Some(lo), Some(hi)) => Given::Value((lo, hi)),
                    _ if a
                        .iter()
                        .all(|v| v.as_str().is_some_and(|s| s.trim().is_empty())) =>
                    {
                        Given::Blank
                    }
                    _ => Given::Wrong(format!("{key} should be [low, high], two numbers")),
                }
            }
            Some(other) => {
                Given::Wrong(format!("{key} should be [low, high], not {}", shown(other)))
            }
        }
    }

    fn word(&self, key: &str) -> Given<String> {
        match self.get(key) {
            None => Given::Blank,
            Some(toml::Value::String(s)) if s.trim().is_empty() => Given::Blank,
            Some(toml::Value::String(s)) => Given::Value(s.trim().to_lowercase()),
            Some(other) => Given::Wrong(format!(
                "{key} should be a word in quotes, not {}",
                shown(other)
            )),
        }
    }
}

/// A TOML number, or a string that holds one (`"1.517"`: what a student writes into a
/// template whose blank is `""`). NaN and infinities are not figures.
fn as_number(v: &toml::Value) -> Option<f64> {
    let n = match v {
        toml::Value::Integer(i) => *i as f64,
        toml::Value::Float(f) => *f,
        toml::Value::String(s) => s.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    n.is_finite().then_some(n)
}

/// A value as the student wrote it, short: a hint names what was there without pasting a
/// whole table or a long text back.
fn shown(v: &toml::Value) -> String {
    let text = v.to_string();
    if text.chars().count() > 40 {
        format!("{}…", text.chars().take(40).collect::<String>())
    } else {
        text
    }
}

/// What the student's data say the answer to one question is.
#[derive(Clone, Debug, PartialEq)]
pub enum Expected {
    /// A figure, read at `precision`.
    Figure {
        /// The exact value.
        value: f64,
        /// How precisely it is printed.
        precision: Precision,
    },
    /// An interval, both ends read at `precision`.
    Interval {
        /// Low end.
        low: f64,
        /// High end.
        high: f64,
        /// How precisely the ends are printed.
        precision: Precision,
    },
    /// A word: any of `accepted` (a near-tie may allow two), out of `vocabulary`.
    Word {
        /// The right answers.
        accepted: Vec<String>,
        /// Every word the question allows.
        vocabulary: Vec<String>,
    },
}

impl Expected {
    /// A word question with one right answer.
    pub fn word(answer: &str, vocabulary: &[&str]) -> Expected {
        Expected::Word {
            accepted: vec![answer.to_string()],
            vocabulary: vocabulary.iter().map(|w| w.to_string()).collect(),
        }
    }

    /// The answer as it would be written in the answers file (for the answer keys of tests).
    pub fn as_toml(&self) -> toml::Value {
        match self {
            Expected::Figure { value, .. } => toml::Value::Float(*value),
            Expected::Interval { low, high, .. } => {
                toml::Value::Array(vec![toml::Value::Float(*low), toml::Value::Float(*high)])
            }
            Expected::Word { accepted, .. } => toml::Value::String(accepted[0].clone()),
        }
    }
}

/// One question of an exercise: where its answer goes, and what it asks.
#[derive(Clone, Debug, PartialEq)]
pub struct Question {
    /// The dotted key in the answers file.
    pub key: String,
    /// What is asked, for the check's line.
    pub ask: String,
    /// What the data say, or why they cannot say (the results lack what it needs).
    pub expected: Result<Expected, String>,
    /// Where to read the answer (the table and column), for the hint.
    pub where_to_look: String,
}

/// Compare the answer to `q` with what the data say.
pub fn judge(answers: &Answers, q: &Question) -> Test {
    let name = format!("{} ({})", q.ask, q.key);
    let expected = match &q.expected {
        Ok(e) => e,
        Err(why) => return Test::fail(name, why.clone()),
    };
    let blank = || {
        Test::not_yet(
            name.clone(),
            format!("not answered yet: {}", q.where_to_look),
        )
    };
    match expected {
        Expected::Figure { value, precision } => match answers.number(&q.key) {
            Given::Blank => blank(),
            Given::Wrong(w) => Test::fail(name, w),
            Given::Value(v) => Test::expect(&name, precision.matches(v, *value), || {
                format!(
                    "{v} is not what your results show: {} (quote it {})",
                    q.where_to_look,
                    precision.describe()
                )
            }),
        },
        Expected::Interval {
            low,
            high,
            precision,
        } => match answers.pair(&q.key) {
            Given::Blank => blank(),
            Given::Wrong(w) => Test::fail(name, w),
            Given::Value((l, h)) => Test::expect(
                &name,
                precision.matches(l, *low) && precision.matches(h, *high),
                || {
                    format!(
                        "[{l}, {h}] is not the interval your results show: {} (quote both ends {})",
                        q.where_to_look,
                        precision.describe()
                    )
                },
            ),
        },
        Expected::Word {
            accepted,
            vocabulary,
        } => match answers.word(&q.key) {
            Given::Blank => blank(),
            Given::Wrong(w) => Test::fail(name, w),
            Given::Value(w) if !vocabulary.is_empty() && !vocabulary.contains(&w) => Test::fail(
                name,
                format!("{w:?} is not one of {}", vocabulary.join(", ")),
            ),
            Given::Value(w) => Test::expect(&name, accepted.contains(&w), || {
                format!("{w:?} is not what your data show: {}", q.where_to_look)
            }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Status;

    fn q(key: &str, expected: Expected) -> Question {
        Question {
            key: key.into(),
            ask: "a question".into(),
            expected: Ok(expected),
            where_to_look: "the table".into(),
        }
    }

    #[test]
    fn a_toml_error_says_where_and_never_quotes_the_file() {
        let dir = std::env::temp_dir().join(format!("isolab-answers-toml-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("startup.toml");
        std::fs::write(&path, "results = \"\"\nhunter2-is-the-password\n").unwrap();
        let e = Answers::read(&path).unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, AnswersError::Toml { line: 2, .. }), "{text}");
        assert!(text.contains("line 2, column 24"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
        assert_eq!(text.lines().count(), 1, "{text}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn figures_match_at_the_printed_precision_only() {
        let ms = Precision::Decimals(3);
        assert!(ms.matches(1.393, 1.393_4));
        assert!(ms.matches(1.394, 1.393_6));
        assert!(!ms.matches(1.392, 1.393_6));
        assert!(Precision::Sig3.matches(17.5, 17.46));
        assert!(!Precision::Sig3.matches(17.4, 17.46));
        assert!(Precision::Sig3.matches(0.979, 0.9791));
        assert!(Precision::Sig3.matches(412.0, 411.6));
        assert!(Precision::Relative(0.1).matches(18.0, 17.0));
        assert!(!Precision::Relative(0.1).matches(19.0, 17.0));
    }

    #[test]
    fn answers_are_judged_blank_wrong_or_right() {
        let a = Answers::parse(
            "results = \"r\"\n[c]\nms = 1.393\nci = [1.376, 1.426]\nphase = \"Namespaces\"\nblank = \"\"\nbad = \"x\"\nnone = [\"\", \"\"]\n",
        )
        .unwrap();
        assert_eq!(a.path_at("results"), Some(PathBuf::from("r")));
        let fig = |v| Expected::Figure {
            value: v,
            precision: Precision::Decimals(3),
        };
        assert_eq!(judge(&a, &q("c.ms", fig(1.3931))).status, Status::Pass);
        assert_eq!(judge(&a, &q("c.ms", fig(1.40))).status, Status::Fail);
        assert_eq!(judge(&a, &q("c.blank", fig(1.0))).status, Status::NotYet);
        assert_eq!(judge(&a, &q("c.missing", fig(1.0))).status, Status::NotYet);
        assert_eq!(judge(&a, &q("c.bad", fig(1.0))).status, Status::Fail);
        let quoted =
            Answers::parse("[c]\nms = \"1.393\"\nci = [\"1.376\", \" 1.426 \"]\nnan = \"nan\"\n")
                .unwrap();
        assert_eq!(
            judge(&quoted, &q("c.ms", fig(1.3931))).status,
            Status::Pass,
            "a quoted number is that number"
        );
        assert_eq!(judge(&quoted, &q("c.nan", fig(1.0))).status, Status::Fail);
        let wrong = judge(&a, &q("c.ms", fig(1.40)));
        assert!(
            wrong.hint.as_deref().unwrap().contains("to 3 decimals"),
            "the hint states the tolerance: {wrong:?}"
        );
        let ci = Expected::Interval {
            low: 1.3762,
            high: 1.4258,
            precision: Precision::Decimals(3),
        };
        assert_eq!(judge(&a, &q("c.ci", ci.clone())).status, Status::Pass);
        assert_eq!(judge(&quoted, &q("c.ci", ci.clone())).status, Status::Pass);
        assert_eq!(judge(&a, &q("c.none", ci)).status, Status::NotYet);
        let vocab = ["namespaces", "rootfs"];
        assert_eq!(
            judge(&a, &q("c.phase", Expected::word("namespaces", &vocab))).status,
            Status::Pass,
            "words are compared in lower case"
        );
        assert_eq!(
            judge(&a, &q("c.phase", Expected::word("rootfs", &vocab))).status,
            Status::Fail
        );
        let no_data = Question {
            expected: Err("no container runs".into()),
            ..q("c.ms", fig(0.0))
        };
        assert_eq!(judge(&a, &no_data).status, Status::Fail);
    }
}
