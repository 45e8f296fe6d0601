//! Stopping on SIGINT, SIGTERM and SIGHUP (Ctrl-C, `kill`, a closed terminal).
//!
//! The default action of these signals ends a process on the spot: the lab's instances would
//! be killed by their own death signal, but its cgroups, its work directory and an OCI runtime's
//! state would be left for the guardian (see `isolab_resources::ownership`), and the sample being taken
//! would be half-written. So the lab catches them. The **first** one is a request: whatever the
//! lab is waiting for — a marker, an instance's end, the density experiment's idle window — it
//! stops waiting, tears every instance down, keeps every completed sample and exits with
//! 128 + the signal's number (130, 143, 129), as a shell reports a program ended by it. A
//! **second** one during the teardown changes nothing (a teardown cut short is exactly the leak
//! this exists to prevent); the lab says it is still cleaning up — or, for a command that made
//! nothing on the host (`lab report`, `lab export`, a check that builds nothing), that it is
//! already stopping.
//!
//! Commands whose whole work is reading files and computing (`lab report`, `lab export`, `lab
//! check`) also stop in the middle of that work: they call [`cut_work_short`], and every loop
//! whose length a results file decides asks [`work_stopped`] as it goes, so that the work
//! between two looks is bounded whatever the file — reading a results file line by line,
//! reading any file the lab did not write chunk by chunk, the bootstrap's resampling, the
//! figures backend by backend, each drawing call of a plot, each row of the report's page and
//! of its Markdown tables, each sample of a CSV export. A loop that stops returns what it has;
//! its caller throws that away and reports the stop. `lab run` does not: after a stop it still
//! reads back and prints the samples it kept.
//!
//! A signal handler may do almost nothing: no allocation, no locks. This one stores the signal
//! number in an atomic and writes one byte into a pipe — the "self-pipe trick". Code that waits
//! with `poll(2)` includes the pipe's read end ([`fd`]) and so wakes up at once. The byte is
//! never read back: the pipe stays readable, and every later wait returns at once too.

use std::os::fd::{BorrowedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::Duration;

/// The first signal received, or 0.
static SIGNAL: AtomicI32 = AtomicI32::new(0);
/// The pipe's read end, or -1 before [`install`].
static READ_END: AtomicI32 = AtomicI32::new(-1);
/// The pipe's write end, or -1.
static WRITE_END: AtomicI32 = AtomicI32::new(-1);
/// The process that installed the handler: a copy of the lab made by `fork` (a VMM) inherits
/// the handler, and must not speak for the lab.
static LAB_PID: AtomicI32 = AtomicI32::new(0);

/// Set once this process has made something on the host that it removes before it ends (a
/// `isolab_backends::lab::Lab`'s work directory and cgroups): then a second signal is told the lab is
/// still removing it.
static CLEANS_UP: AtomicBool = AtomicBool::new(false);
/// Set by commands whose long work may be abandoned on a stop request ([`cut_work_short`]).
static CUT_SHORT: AtomicBool = AtomicBool::new(false);

/// The signals that stop a lab run.
pub const SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

extern "C" fn on_signal(sig: libc::c_int) {
    // SAFETY: getpid, write and _exit are async-signal-safe; the buffers are static.
    unsafe {
        if libc::getpid() != LAB_PID.load(Ordering::Relaxed) {
            // A forked child of the lab: end as the signal's default action would.
            libc::_exit(128 + sig);
        }
        if SIGNAL
            .compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            let fd = WRITE_END.load(Ordering::Relaxed);
            libc::write(fd, b"!".as_ptr().cast(), 1);
        } else if CLEANS_UP.load(Ordering::Relaxed) {
            let msg = b"lab: still removing what this run made; it ends when that is done\n";
            libc::write(2, msg.as_ptr().cast(), msg.len());
        } else {
            // Nothing to remove: the first signal's stop is only a return through the callers.
            let msg = b"lab: already stopping; it ends in a moment\n";
            libc::write(2, msg.as_ptr().cast(), msg.len());
        }
    }
}

/// Catch SIGINT, SIGTERM and SIGHUP for the rest of the process's life. Call once, early.
pub fn install() -> std::io::Result<()> {
    let (read, write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
            .map_err(std::io::Error::from)?;
    LAB_PID.store(std::process::id() as i32, Ordering::SeqCst);
    READ_END.store(std::os::fd::IntoRawFd::into_raw_fd(read), Ordering::SeqCst);
    WRITE_END.store(std::os::fd::IntoRawFd::into_raw_fd(write), Ordering::SeqCst);
    let action = nix::sys::signal::SigAction::new(
        nix::sys::signal::SigHandler::Handler(on_signal),
        // Interrupted system calls restart: every wait that matters polls the pipe instead.
        nix::sys::signal::SaFlags::SA_RESTART,
        nix::sys::signal::SigSet::empty(),
    );
    for sig in SIGNALS {
        let sig = nix::sys::signal::Signal::try_from(sig).map_err(std::io::Error::from)?;
        // SAFETY: the handler only uses async-signal-safe calls and atomics.
        unsafe { nix::sys::signal::sigaction(sig, &action) }.map_err(std::io::Error::from)?;
    }
    Ok(())
}

/// The signal that asked the lab to stop, if one did.
pub fn requested() -> Option<i32> {
    match SIGNAL.load(Ordering::SeqCst) {
        0 => None,
        sig => Some(sig),
    }
}

/// Say that this process has made something on the host it must remove before it ends: a
/// second signal is then told the lab is still removing it.
pub fn will_clean_up() {
    CLEANS_UP.store(true, Ordering::SeqCst);
}

/// True once [`will_clean_up`] was called: a stop then removes what the process made.
pub fn cleans_up() -> bool {
    CLEANS_UP.load(Ordering::SeqCst)
}

/// From now on, a stop request also ends long reading and computing ([`work_stopped`]). For
/// commands that only read and compute, whose half-done work is worth nothing: their callers
/// discard it and return an "interrupted" error.
pub fn cut_work_short() {
    CUT_SHORT.store(true, Ordering::SeqCst);
}

/// True when long work should end now: a stop was requested and this command asked for its
/// work to be cut short ([`cut_work_short`]). One atomic load: cheap enough for every line of a
/// file and every resample of a bootstrap.
pub fn work_stopped() -> bool {
    CUT_SHORT.load(Ordering::Relaxed) && SIGNAL.load(Ordering::Relaxed) != 0
}

/// The exit status that reports `sig`: 128 + its number.
pub fn exit_status(sig: i32) -> u8 {
    (128 + sig).clamp(0, 255) as u8
}

/// The name of `sig` ("SIGINT").
pub fn name(sig: i32) -> String {
    nix::sys::signal::Signal::try_from(sig)
        .map_or_else(|_| format!("signal {sig}"), |s| s.to_string())
}

/// A descriptor that becomes readable when a stop was requested, for `poll(2)`; `None` when no
/// handler is installed (a library user that handles signals itself).
pub fn fd() -> Option<BorrowedFd<'static>> {
    let raw: RawFd = READ_END.load(Ordering::SeqCst);
    // SAFETY: once installed, the read end stays open for the life of the process.
    (raw >= 0).then(|| unsafe { BorrowedFd::borrow_raw(raw) })
}

/// Sleep for `d`, or until a stop is requested. Returns false if it was.
pub fn sleep(d: Duration) -> bool {
    let deadline = crate::clock::deadline(d);
    loop {
        if requested().is_some() {
            return false;
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return true;
        }
        let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
        match fd() {
            Some(fd) => {
                let mut fds = [nix::poll::PollFd::new(fd, nix::poll::PollFlags::POLLIN)];
                let _ = nix::poll::poll(
                    &mut fds,
                    nix::poll::PollTimeout::try_from(ms).unwrap_or(nix::poll::PollTimeout::MAX),
                );
            }
            None => std::thread::sleep(left),
        }
    }
}

/// Wait until a stop is requested (`lab exec --kernel sleep`). Without a handler, forever.
pub fn wait() -> i32 {
    loop {
        if let Some(sig) = requested() {
            return sig;
        }
        sleep(Duration::from_secs(3600));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn statuses_and_names() {
        assert_eq!(super::exit_status(libc::SIGINT), 130);
        assert_eq!(super::exit_status(libc::SIGTERM), 143);
        assert_eq!(super::exit_status(libc::SIGHUP), 129);
        assert_eq!(super::name(libc::SIGTERM), "SIGTERM");
    }
}
