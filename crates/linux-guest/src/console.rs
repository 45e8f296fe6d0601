//! A Linux guest's serial console, read by the host: a log, and the marker lines in it.
//!
//! Everything a Linux guest says arrives as bytes from its UART — kernel messages, and the
//! `isolab ...` lines `/init` prints. [`Console`] cuts the bytes into lines and:
//!
//! * keeps the whole log (to a file, if given) and its last lines (for error messages);
//! * forwards each marker line, **stamped with the host's clock**: with the time of the matching
//!   marker-port write if the VMM saw one ([`Console::stamp`]), else the line's arrival time;
//! * marks the phase edge `console` when the kernel's first line begins to arrive — the end of
//!   "kernel entry → first console output" — unless `/init` speaks first (a quiet kernel);
//! * turns a kernel panic into an `isolab error` line, so the run fails with the kernel's reason.
//!
//! It is pure bookkeeping with no I/O of its own besides the log file: the QEMU backend feeds
//! it from a relay thread reading QEMU's serial output, the lab's VMM from its UART emulation,
//! and the tests from byte strings.

use isolab_kernels::marker::Marker;
use isolab_kernels::wire;
use isolab_payload::Event;
use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io::Write;

/// Lines of the log kept in memory for error messages.
const TAIL_LINES: usize = 24;

/// The phase that ends when the guest kernel's first console output arrives.
pub const CONSOLE_PHASE: &str = "console";

/// What the kernel prints when it panics.
const PANIC: &str = "Kernel panic - not syncing: ";

/// The console of one guest.
pub struct Console {
    partial: Vec<u8>,
    tail: VecDeque<String>,
    log: Option<File>,
    /// Port stamps waiting for their console line, by phase name.
    pending: BTreeMap<&'static str, u64>,
    lines: u64,
    bytes: u64,
    saw_done: bool,
    saw_error: bool,
    /// When the first byte of the line being received arrived, while no line has yet.
    first_byte_ns: Option<u64>,
    /// The console of a guest restored from a snapshot: its kernel spoke long ago.
    resumed: bool,
}

impl Console {
    /// A console that also writes everything it receives to `log`.
    pub fn new(log: Option<File>) -> Console {
        Console {
            partial: Vec::new(),
            tail: VecDeque::new(),
            log,
            pending: BTreeMap::new(),
            lines: 0,
            bytes: 0,
            saw_done: false,
            saw_error: false,
            first_byte_ns: None,
            resumed: false,
        }
    }

    /// The console of a guest restored from a snapshot, whose console had received `partial`
    /// of a line when it was saved: the rest of that line arrives from the restored guest.
    /// There is no `console` phase: the kernel's first output was before the snapshot.
    pub fn resumed(log: Option<File>, partial: Vec<u8>) -> Console {
        Console {
            partial,
            resumed: true,
            ..Console::new(log)
        }
    }

    /// The line received so far and not finished (what a snapshot keeps).
    pub fn partial(&self) -> &[u8] {
        &self.partial
    }

    /// The VMM saw `marker` written to the marker port at host time `t_ns`: the next console
    /// line of that marker gets this time instead of its arrival time.
    pub fn stamp(&mut self, marker: Marker, t_ns: u64) {
        self.pending.insert(marker.phase(), t_ns);
    }

    /// Bytes from the UART that arrived at host time `now_ns`. Returns the lines to forward to
    /// the lab (marker lines with `t=`, and error lines), each ending in `\n`.
    pub fn feed(&mut self, bytes: &[u8], now_ns: u64) -> Vec<Vec<u8>> {
        if let Some(log) = &mut self.log {
            // The log is for people; losing it must not stop the guest.
            let _ = log.write_all(bytes);
        }
        if self.lines == 0 && !self.resumed && self.first_byte_ns.is_none() && !bytes.is_empty() {
            self.first_byte_ns = Some(now_ns);
        }
        self.bytes += bytes.len() as u64;
        let mut out = Vec::new();
        for &b in bytes {
            if b == b'\n' {
                let line = std::mem::take(&mut self.partial);
                self.line(&line, now_ns, &mut out);
            } else if b != b'\r' {
                self.partial.push(b);
            }
        }
        out
    }

    /// The guest is gone: treat what is left as a last line.
    pub fn finish(&mut self, now_ns: u64) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.line(&line, now_ns, &mut out);
        }
        if let Some(log) = &mut self.log {
            let _ = log.flush();
        }
        out
    }

    /// The last lines received, oldest first.
    pub fn tail(&self) -> impl Iterator<Item = &str> {
        self.tail.iter().map(String::as_str)
    }

    /// The last line that was not a marker and not empty: where the guest's own story stopped.
    pub fn last_kernel_line(&self) -> Option<&str> {
        self.tail
            .iter()
            .rev()
            .map(|l| l.trim())
            .find(|l| !l.is_empty() && Event::parse(l).is_none())
    }

    /// True once the workload's `done` line arrived.
    pub fn saw_done(&self) -> bool {
        self.saw_done
    }

    /// True once an error line went out (the guest's own, or a kernel panic).
    pub fn saw_error(&self) -> bool {
        self.saw_error
    }

    /// Lines and bytes received so far.
    pub fn received(&self) -> (u64, u64) {
        (self.lines, self.bytes)
    }

    fn line(&mut self, raw: &[u8], now_ns: u64, out: &mut Vec<Vec<u8>>) {
        let text = String::from_utf8_lossy(raw).into_owned();
        self.lines += 1;
        // The first line, if the kernel's own and not /init's marker: its first byte is the end
        // of "kernel entry → first console output".
        if let Some(t) = self.first_byte_ns.take() {
            if Event::parse(&text).is_none() {
                let mut phase = wire::Line::new(wire::PHASE)
                    .field("name", CONSOLE_PHASE)
                    .field("t", t);
                out.push(phase.finish().to_vec());
            }
        }
        if let Some(marker) = self.marker_line(&text, now_ns) {
            out.push(marker);
        } else if let Some(reason) = text.split(PANIC).nth(1) {
            self.saw_error = true;
            let mut line = wire::Line::new(wire::ERROR)
                .field("step", "guest_kernel")
                .text("msg", format!("kernel panic: {}", reason.trim()).as_bytes());
            out.push(line.finish().to_vec());
        }
        if self.tail.len() == TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail.push_back(text);
    }

    /// The marker line to forward for `text`, if it is one: from the `isolab` word on, with a
    /// `t=` added unless it has one.
    fn marker_line(&mut self, text: &str, now_ns: u64) -> Option<Vec<u8>> {
        let event = Event::parse(text)?;
        self.saw_done |= matches!(event, Event::Done { .. });
        self.saw_error |= matches!(event, Event::Error { .. });
        let start = text.find(wire::PREFIX)?;
        let mut line = text[start..].trim_end().to_string();
        let phase = match &event {
            Event::Phase { name, .. } if name == isolab_kernels::marker::INIT_PHASE => {
                Some(Marker::Init.phase())
            }
            Event::Ready { .. } => Some(Marker::Ready.phase()),
            Event::Start { .. } => Some(Marker::Start.phase()),
            Event::Done { .. } => Some(Marker::Done.phase()),
            _ => None,
        };
        let has_time = line.split(' ').any(|w| w.starts_with("t="));
        if !has_time {
            let t = phase.and_then(|p| self.pending.remove(p)).unwrap_or(now_ns);
            line.push_str(&format!(" t={t}"));
        }
        line.push('\n');
        Some(line.into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(lines: Vec<Vec<u8>>) -> Vec<String> {
        lines
            .into_iter()
            .map(|l| String::from_utf8(l).unwrap())
            .collect()
    }

    #[test]
    fn marker_lines_are_stamped_on_arrival_and_noise_is_kept_in_the_log_only() {
        let mut c = Console::new(None);
        let out = text(c.feed(
            b"[    0.1] Linux version 6.1\r\nisolab phase name=init\r\nisol",
            100,
        ));
        // The kernel's line came first: `console` at its arrival, then the marker.
        assert_eq!(
            out,
            [
                "isolab phase name=console t=100\n",
                "isolab phase name=init t=100\n"
            ]
        );
        // A line split across two reads is one line, stamped when its end arrives.
        let out = text(c.feed(b"ab ready\r\n", 250));
        assert_eq!(out, ["isolab ready t=250\n"]);
        assert_eq!(c.last_kernel_line(), Some("[    0.1] Linux version 6.1"));
        assert_eq!(c.received().0, 3);
    }

    #[test]
    fn the_kernels_first_line_marks_the_console_phase_and_init_first_does_not() {
        let mut c = Console::new(None);
        // The line's first byte arrives at 10, its end at 20: the phase is at 10.
        assert!(c.feed(b"[    0.5] Unable to", 10).is_empty());
        let out = text(c.feed(b" read the RTC\r\n[ 0.6] more\r\n", 20));
        assert_eq!(out, ["isolab phase name=console t=10\n"]);
        // A quiet kernel: /init's marker is the first line, and no console phase is made up.
        let mut quiet = Console::new(None);
        let out = text(quiet.feed(b"isolab phase name=init\n", 30));
        assert_eq!(out, ["isolab phase name=init t=30\n"]);
    }

    #[test]
    fn a_port_stamp_wins_over_the_arrival_time_once() {
        let mut c = Console::new(None);
        c.stamp(Marker::Done, 42);
        let out = text(c.feed(
            b"isolab done checksum=0x00000000000000ff ops=1 bytes=0\n",
            90,
        ));
        assert_eq!(
            out,
            ["isolab done checksum=0x00000000000000ff ops=1 bytes=0 t=42\n"]
        );
        // Used once: a second line of the same kind is stamped on arrival.
        let out = text(c.feed(b"isolab done checksum=0x1\n", 95));
        assert_eq!(out, ["isolab done checksum=0x1 t=95\n"]);
        // A line that brings its own time keeps it.
        let out = text(c.feed(b"isolab ready t=7\n", 99));
        assert_eq!(out, ["isolab ready t=7\n"]);
    }

    #[test]
    fn a_kernel_panic_becomes_an_error_line() {
        let mut c = Console::new(None);
        let out = text(c.feed(
            b"[ 1.0] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100\n",
            1,
        ));
        assert_eq!(out.len(), 2, "the console phase, then the error: {out:?}");
        match Event::parse(&out[1]) {
            Some(Event::Error { step, msg, .. }) => {
                assert_eq!(step, "guest_kernel");
                assert_eq!(
                    msg.as_deref(),
                    Some("kernel panic: Attempted to kill init! exitcode=0x00000100")
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_log_file_gets_every_byte() {
        let path = std::env::temp_dir().join(format!("isolab-console-{}", std::process::id()));
        let mut c = Console::new(Some(File::create(&path).unwrap()));
        c.feed(b"abc\r\n", 1);
        c.feed(b"no newline", 2);
        assert_eq!(c.finish(3), Vec::<Vec<u8>>::new());
        assert_eq!(std::fs::read(&path).unwrap(), b"abc\r\nno newline");
        assert_eq!(c.last_kernel_line(), Some("no newline"));
        std::fs::remove_file(&path).unwrap();
    }
}
