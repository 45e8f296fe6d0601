//! What a running experiment tells the person waiting for it.
//!
//! On a terminal, indicatif's bar on standard error, redrawn in place. Anywhere else — standard
//! error into a file, a pipe, a CI log — a bar draws nothing (there is no cursor to move back),
//! and a run of minutes would say nothing until its tables. There the experiment writes one
//! line per finished step instead, as hyperfine does per finished benchmark: what the step was,
//! how many samples it took, how long it took and how long the run has taken. A step is a round
//! of shuffled samples, or a rung of a density ladder; a step still going after
//! [`HEARTBEAT`] says how far it got after its next sample, so the log is never quiet for long.
//! `--no-progress` turns both off.

use indicatif::{ProgressBar, ProgressStyle};
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// How long a step may run without a line, in lines mode, before the next sample writes one.
pub const HEARTBEAT: Duration = Duration::from_secs(20);

/// How an experiment shows its progress: a bar on a terminal, lines elsewhere, or nothing.
pub struct Progress {
    what: String,
    /// What it counts: samples, or instances.
    unit: &'static str,
    started: Instant,
    kind: Kind,
}

enum Kind {
    Bar(ProgressBar),
    Lines {
        /// When the last line was written.
        last_line: Instant,
        /// When the current step began.
        step_started: Instant,
        /// Samples (or instances) of the current step so far, and how many failed.
        in_step: u64,
        failed_in_step: u64,
        /// Samples of the whole run so far.
        done: u64,
        total: u64,
    },
    Quiet,
}

impl Progress {
    /// Progress of experiment `what`, of `total` samples (or instances): shown when `show`, as a
    /// bar when standard error is a terminal, as lines when it is not.
    pub fn new(show: bool, what: &str, total: u64) -> Progress {
        Progress::to(show, std::io::stderr().is_terminal(), what, total)
    }

    fn to(show: bool, terminal: bool, what: &str, total: u64) -> Progress {
        let now = Instant::now();
        let kind = match (show, terminal) {
            (false, _) => Kind::Quiet,
            (true, true) => {
                let bar = ProgressBar::new(total);
                bar.set_style(
                    ProgressStyle::with_template(
                        "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}",
                    )
                    .expect("a valid template"),
                );
                Kind::Bar(bar)
            }
            (true, false) => Kind::Lines {
                last_line: now,
                step_started: now,
                in_step: 0,
                failed_in_step: 0,
                done: 0,
                total,
            },
        };
        Progress {
            what: what.to_string(),
            unit: "sample",
            started: now,
            kind,
        }
    }

    /// Count `unit`s (e.g. "instance") rather than samples.
    pub fn counting(mut self, unit: &'static str) -> Progress {
        self.unit = unit;
        self
    }

    /// Say what the run is about to do (lines only: a bar shows it by itself).
    pub fn begin(&mut self, plan: &str) {
        let line = format!("{}: {plan}", self.what);
        self.line(line);
    }

    /// What is running now: the bar's message.
    pub fn running(&self, message: &str) {
        if let Kind::Bar(bar) = &self.kind {
            bar.set_message(message.to_string());
        }
    }

    /// One sample (or instance) finished, `ok` or not; `message` says what it was. On the bar
    /// one step forward; in lines, a line when the step has gone on for [`HEARTBEAT`].
    pub fn sample(&mut self, message: &str, ok: bool) {
        let (what, unit) = (self.what.clone(), self.unit);
        let elapsed = self.started.elapsed();
        let line = match &mut self.kind {
            Kind::Bar(bar) => {
                bar.inc(1);
                None
            }
            Kind::Lines {
                last_line,
                in_step,
                failed_in_step,
                done,
                total,
                ..
            } => {
                *in_step += 1;
                *done += 1;
                *failed_in_step += u64::from(!ok);
                (last_line.elapsed() >= HEARTBEAT).then(|| {
                    format!(
                        "{what}: … {in_step} {unit}s of this step so far, the last {message} · \
                         {done}/{total} {unit}s · {} elapsed",
                        duration(elapsed)
                    )
                })
            }
            Kind::Quiet => None,
        };
        if let Some(line) = line {
            self.line(line);
        }
    }

    /// The bar's position, for a step that counts instances rather than samples.
    pub fn position(&self, n: u64) {
        if let Kind::Bar(bar) = &self.kind {
            bar.set_position(n);
        }
    }

    /// A step finished: in lines, say which, with its samples (and failures), how long it took
    /// and how long the run has taken; a new step begins.
    pub fn step_done(&mut self, step: &str) {
        let (what, unit) = (self.what.clone(), self.unit);
        let elapsed = self.started.elapsed();
        let Kind::Lines {
            step_started,
            in_step,
            failed_in_step,
            done,
            total,
            ..
        } = &mut self.kind
        else {
            return;
        };
        let failed = match *failed_in_step {
            0 => String::new(),
            n => format!(" ({n} failed)"),
        };
        let line = format!(
            "{what}: {step}: {in_step} {unit}{}{failed} in {} · {done}/{total} {unit}s · {} elapsed",
            if *in_step == 1 { "" } else { "s" },
            duration(step_started.elapsed()),
            duration(elapsed)
        );
        *step_started = Instant::now();
        *in_step = 0;
        *failed_in_step = 0;
        self.line(line);
    }

    /// A line of its own (lines only), e.g. a rung of a density ladder.
    pub fn note(&mut self, note: &str) {
        let line = format!(
            "{}: {note} · {} elapsed",
            self.what,
            duration(self.started.elapsed())
        );
        if let Kind::Lines { step_started, .. } = &mut self.kind {
            *step_started = Instant::now();
        }
        self.line(line);
    }

    /// Done: the bar is cleared (the tables follow).
    pub fn finish(&self) {
        if let Kind::Bar(bar) = &self.kind {
            bar.finish_and_clear();
        }
    }

    fn line(&mut self, line: String) {
        if let Kind::Lines { last_line, .. } = &mut self.kind {
            *last_line = Instant::now();
            // Standard error gone: there is nobody to tell.
            let _ = writeln!(std::io::stderr(), "{line}");
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

/// `d` as a person reads it: "850 ms", "12.3 s", "3 min 05 s", "1 h 02 min".
pub fn duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => format!("{} ms", d.as_millis()),
        1..=59 => format!("{:.1} s", d.as_secs_f64()),
        60..=3599 => format!("{} min {:02} s", s / 60, s % 60),
        _ => format!("{} h {:02} min", s / 3600, s % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_a_person_would_say_them() {
        assert_eq!(duration(Duration::from_millis(850)), "850 ms");
        assert_eq!(duration(Duration::from_millis(12_340)), "12.3 s");
        assert_eq!(duration(Duration::from_secs(185)), "3 min 05 s");
        assert_eq!(duration(Duration::from_secs(3720)), "1 h 02 min");
    }

    #[test]
    fn off_a_terminal_steps_are_counted_and_a_new_step_starts_from_zero() {
        let mut p = Progress::to(true, false, "startup", 6);
        for ok in [true, false, true] {
            p.sample("process ready", ok);
        }
        let Kind::Lines {
            in_step,
            failed_in_step,
            done,
            ..
        } = &p.kind
        else {
            panic!("lines off a terminal")
        };
        assert_eq!((*in_step, *failed_in_step, *done), (3, 1, 3));
        p.step_done("round 1/2");
        let Kind::Lines {
            in_step,
            failed_in_step,
            done,
            ..
        } = &p.kind
        else {
            unreachable!()
        };
        assert_eq!((*in_step, *failed_in_step, *done), (0, 0, 3));
    }

    #[test]
    fn no_progress_is_quiet_and_a_terminal_gets_a_bar() {
        assert!(matches!(
            Progress::to(false, false, "x", 1).kind,
            Kind::Quiet
        ));
        assert!(matches!(
            Progress::to(false, true, "x", 1).kind,
            Kind::Quiet
        ));
        assert!(matches!(
            Progress::to(true, true, "x", 1).kind,
            Kind::Bar(_)
        ));
    }
}
