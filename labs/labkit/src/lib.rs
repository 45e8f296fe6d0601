//! # labkit: what the exercises give you for free
//!
//! You build a container runtime (`labs/container/`) and a virtual machine monitor
//! (`labs/vmm/`). `lab` starts your program the way it starts its own backends and reads what
//! happened from a pipe. This crate is the plumbing between the two, so that your code is about
//! namespaces and KVM, not about argument parsing:
//!
//! * [`container::Request`] and [`vmm::Request`] read the command line `lab` starts you with
//!   (the ABI is written down in `labs/abi.md`);
//! * [`Report`] writes the **marker lines** `lab` reads on file descriptor 3: phase edges on the
//!   host's clock, `ready`/`done` for a guest, facts, errors;
//! * [`wait_for_go`] blocks until `lab` writes to file descriptor 4 (or closes it).
//!
//! ```text
//!   lab ──(argv, fds 3 and 4)──► your runtime / VMM ──► the workload or the guest
//!    ▲                                 │
//!    └──── "isolab phase name=… t=…" ──┘   (fd 3: one line per event)
//! ```
//!
//! Nothing here hides a mechanism the exercises are about: every system call that makes a
//! container or a VM is yours to write.

use isolab_kernels::wire::{self, Line};
use std::os::fd::RawFd;

pub mod container;
pub mod vmm;

pub use isolab_kernels;

/// The file descriptor on which `lab` reads marker lines. Your process inherits it open; a
/// container's workload inherits it from you and writes its own lines there.
pub const REPORT_FD: RawFd = 3;

/// The file descriptor on which `lab` gives the go-ahead (one byte, or end of file).
pub const CONTROL_FD: RawFd = 4;

/// `CLOCK_MONOTONIC` now, in nanoseconds: the host clock every phase edge is stamped with.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into a valid, writable one.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Writes marker lines to `lab` on [`REPORT_FD`].
///
/// Each line is one `write(2)` of less than `PIPE_BUF` bytes, which the kernel delivers whole
/// even when your runtime and its workload write to the same pipe at the same time. A `Report`
/// allocates nothing, so it is safe to use in a child between `fork` and `exec`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Report;

impl Report {
    /// The end of a phase of your runtime or VMM, stamped now (e.g. `namespaces`, `kvm_open`).
    /// `lab` shows each phase's duration beside those of its own backends.
    pub fn phase(&self, name: &str) {
        self.line(
            Line::new(wire::PHASE)
                .field("name", name)
                .field("t", now_ns()),
        );
    }

    /// The guest reached its first instruction (a VMM reports this for its guest).
    pub fn ready(&self) {
        self.line(Line::new(wire::READY).field("t", now_ns()));
    }

    /// The guest's kernel finished its set-up; the measured part begins.
    pub fn start(&self) {
        self.line(Line::new(wire::START).field("t", now_ns()));
    }

    /// The guest's kernel finished, with its result.
    pub fn done(&self, checksum: u64, ops: u64, bytes: u64) {
        self.line(
            Line::new(wire::DONE)
                .field("t", now_ns())
                .hex("checksum", checksum)
                .field("ops", ops)
                .field("bytes", bytes),
        );
    }

    /// A fact for `lab` (it appears in `lab exec`'s output and in the results).
    pub fn info(&self, key: &str, value: impl std::fmt::Display) {
        let mut buf = Text::default();
        let _ = std::fmt::Write::write_fmt(&mut buf, format_args!("{value}"));
        self.line(
            Line::new(wire::INFO)
                .text("key", key.as_bytes())
                .text("value", buf.as_bytes()),
        );
    }

    /// The `n`th value (from 1) the guest wrote to the I/O port: `out1`, `out2`, … for `lab`.
    pub fn guest_wrote(&self, n: usize, value: u64) {
        let mut key = Text::default();
        let _ = std::fmt::Write::write_fmt(&mut key, format_args!("out{n}"));
        self.line(
            Line::new(wire::INFO)
                .text("key", key.as_bytes())
                .field("value", value),
        );
    }

    /// Why the guest stopped: `hlt`, `shutdown`, …
    pub fn exit(&self, reason: &str) {
        self.info("exit", reason);
    }

    /// Something failed at `step`; `lab` shows `msg` and ends the run.
    pub fn error(&self, step: &str, msg: &str) {
        self.line(
            Line::new(wire::ERROR)
                .text("step", step.as_bytes())
                .text("msg", msg.as_bytes()),
        );
    }

    /// Mark code that is still the skeleton's: `lab check` then says "not yet" instead of
    /// "fail" for the checks of `step`. Remove the call when you write the step.
    pub fn todo(&self, step: u32, what: &str) {
        self.line(
            Line::new(wire::INFO)
                .field("key", format_args!("todo_step_{step}"))
                .text("value", what.as_bytes()),
        );
    }

    fn line(&self, mut line: Line) {
        let bytes = line.finish();
        // SAFETY: writing a valid buffer to fd 3. When lab is not listening (you ran the
        // program by hand) the write fails with EBADF, which is harmless.
        unsafe { libc::write(REPORT_FD, bytes.as_ptr().cast(), bytes.len()) };
    }
}

/// A fixed buffer for formatting a value without allocating.
struct Text {
    bytes: [u8; 256],
    len: usize,
}

impl Default for Text {
    fn default() -> Self {
        Text {
            bytes: [0; 256],
            len: 0,
        }
    }
}

impl Text {
    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl std::fmt::Write for Text {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let n = s.len().min(self.bytes.len() - self.len);
        self.bytes[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// Block until `lab` says go: one byte on [`CONTROL_FD`], or its end of file (lab closed it,
/// meaning "stop"). Sleeps in `read(2)`, so a waiting program costs no CPU.
pub fn wait_for_go() -> std::io::Result<()> {
    let mut byte = 0u8;
    loop {
        // SAFETY: reading one byte into a valid one-byte buffer.
        let n = unsafe { libc::read(CONTROL_FD, (&mut byte as *mut u8).cast(), 1) };
        if n >= 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Why the command line was not what `lab` sends.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// `--key value` pairs, in order.
type Options = Vec<(String, String)>;

/// Split `args` into `--key value` options and the words after `--`.
fn split_options(args: &[String], known: &[&str]) -> Result<(Options, Vec<String>), UsageError> {
    let mut options = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        if arg == "--" {
            return Ok((options, it.cloned().collect()));
        }
        let key = arg
            .strip_prefix("--")
            .filter(|k| known.contains(k))
            .ok_or_else(|| UsageError(format!("unknown option {arg:?}")))?;
        let value = it
            .next()
            .ok_or_else(|| UsageError(format!("--{key} needs a value")))?;
        options.push((key.to_string(), value.clone()));
    }
    Ok((options, Vec::new()))
}

/// The last value given for `--key`, if any.
fn last<'a>(options: &'a Options, key: &str) -> Option<&'a str> {
    options
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn number(key: &str, value: &str) -> Result<u64, UsageError> {
    value
        .parse()
        .map_err(|_| UsageError(format!("--{key}: {value:?} is not a number")))
}

/// Parse the process's own command line with `parse`, or print the error and exit with status 2
/// (what `lab` reports as a usage error).
fn from_env<T>(parse: impl FnOnce(&[String]) -> Result<T, UsageError>) -> T {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match parse(&args) {
        Ok(request) => request,
        Err(e) => {
            Report.error("usage", &e.0);
            eprintln!("{e}");
            std::process::exit(2)
        }
    }
}
