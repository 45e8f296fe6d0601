//! Tools for the code that runs in a child process between `fork` and `exec`.
//!
//! `lab` may have several threads (a progress bar, a console reader). After a `fork` only the
//! forking thread exists in the child, and a lock another thread held at that moment (inside
//! `malloc`, say) stays locked forever. So the child code of every backend follows one rule: **no
//! allocation, no locks** — only system calls on data the parent prepared before forking. This
//! module holds that prepared data ([`Exec`], [`ChildFds`]) and the few child-side helpers
//! ([`Reporter`], [`exit_now`]); [`crate`] creates the child processes.

use isolab_host::clock::now_ns;
use isolab_kernels::wire::{self, Line};
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::unistd::pipe2;
use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::SpawnError;
pub use isolab_host::fds::{close_from, close_from_listed};

/// The fd on which the workload writes its marker lines.
pub const REPORT_FD: RawFd = 3;
/// The fd on which the workload reads the host's go-ahead.
pub const CONTROL_FD: RawFd = 4;
/// The fd a multi-step launcher uses to talk to the lab (container: user-namespace handshake).
pub const SYNC_FD: RawFd = 5;

/// The parent's ends of the pipes to one child.
#[derive(Debug)]
pub struct ParentEnds {
    /// Marker lines from the instance.
    pub report: File,
    /// The host's go-ahead to the instance.
    pub control: File,
    /// The instance's standard error, read when something goes wrong.
    pub stderr: File,
}

/// The child's ends, installed at fixed numbers by [`ChildFds::install`]:
/// 0 = /dev/null, 1 = /dev/null, 2 = stderr pipe, 3 = report, 4 = control, 5 = sync (optional).
#[derive(Debug)]
pub struct ChildFds {
    fds: [OwnedFd; 5],
    sync: Option<OwnedFd>,
    /// A network namespace to join first (the instance's link to the lab's peer).
    netns: Option<OwnedFd>,
    /// More fds the child keeps, installed right after the fixed ones (a VMM's tap).
    kept: Vec<OwnedFd>,
}

/// A copy of `fd` numbered 10 or higher and close-on-exec, so that installing a child's fds at
/// small fixed numbers never overwrites one not yet moved, and nothing leaks into other children.
pub fn high(fd: OwnedFd) -> Result<OwnedFd, SpawnError> {
    let raw = fcntl(&fd, FcntlArg::F_DUPFD_CLOEXEC(10)).map_err(SpawnError::sys("fcntl"))?;
    // SAFETY: F_DUPFD_CLOEXEC returned a new fd that nothing else owns.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) })
}

/// The child's side of its pipes, as [`crate::spawn_exec`] uses them: installed
/// at fixed numbers before `exec`, and a reporter that works before that.
pub trait ChildSide {
    /// **Child side.** Put the fds at their fixed numbers and close the others.
    fn install(&self) -> Result<(), Errno>;
    /// A reporter on the report pipe where it is before [`ChildSide::install`].
    fn reporter(&self) -> Reporter;
}

impl ChildSide for ChildFds {
    fn install(&self) -> Result<(), Errno> {
        ChildFds::install(self)
    }
    fn reporter(&self) -> Reporter {
        ChildFds::reporter(self)
    }
}

/// Make the pipes between the lab and one child. Every fd is close-on-exec and numbered 10 or
/// higher, so that installing them at 0..=5 in the child never overwrites one not yet moved.
pub fn pipes(sync: Option<OwnedFd>) -> Result<(ParentEnds, ChildFds), SpawnError> {
    let pipe = || pipe2(OFlag::O_CLOEXEC).map_err(SpawnError::sys("pipe2"));
    let (report_r, report_w) = pipe()?;
    let (control_r, control_w) = pipe()?;
    let (stderr_r, stderr_w) = pipe()?;
    let devnull = File::open("/dev/null").map_err(SpawnError::io("open /dev/null"))?;
    let child = ChildFds {
        fds: [
            high(OwnedFd::from(
                devnull.try_clone().map_err(SpawnError::io("dup"))?,
            ))?,
            high(OwnedFd::from(devnull))?,
            high(stderr_w)?,
            high(report_w)?,
            high(control_r)?,
        ],
        sync: sync.map(high).transpose()?,
        netns: None,
        kept: Vec::new(),
    };
    let parent = ParentEnds {
        report: File::from(report_r),
        control: File::from(control_w),
        stderr: File::from(stderr_r),
    };
    Ok((parent, child))
}

impl ChildFds {
    /// A reporter on the report pipe where it is before [`ChildFds::install`].
    pub fn reporter(&self) -> Reporter {
        Reporter(self.fds[REPORT_FD as usize].as_raw_fd())
    }

    /// Have the child join the network namespace `netns` as it installs its fds: the
    /// descriptor is one of those installing closes.
    pub fn join_netns(&mut self, netns: OwnedFd) -> Result<(), SpawnError> {
        self.netns = Some(high(netns)?);
        Ok(())
    }

    /// Have the child keep `fd` through [`ChildFds::install`], which closes every other fd it
    /// did not install: the number the child finds it at (the first free one after the fixed
    /// fds, in the order kept).
    pub fn keep(&mut self, fd: OwnedFd) -> Result<RawFd, SpawnError> {
        self.kept.push(high(fd)?);
        Ok(self.first_kept() + self.kept.len() as RawFd - 1)
    }

    fn first_kept(&self) -> RawFd {
        if self.sync.is_some() {
            SYNC_FD + 1
        } else {
            SYNC_FD
        }
    }

    /// **Child side.** Join the network namespace given, if any; put the fds at 0..=5 and close
    /// every other fd, so the workload inherits nothing from the lab (another instance's pipe
    /// would keep that instance's pipe open and hide its end).
    pub fn install(&self) -> Result<(), Errno> {
        if let Some(ns) = &self.netns {
            // SAFETY: setns with a namespace descriptor we hold.
            Errno::result(unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) })?;
        }
        for (target, fd) in self.fds.iter().enumerate() {
            // dup2 gives a copy without close-on-exec at the target number.
            // SAFETY: plain dup2 of an fd we own onto a small fixed number.
            Errno::result(unsafe { libc::dup2(fd.as_raw_fd(), target as RawFd) })?;
        }
        if let Some(sync) = &self.sync {
            // SAFETY: as above.
            Errno::result(unsafe { libc::dup2(sync.as_raw_fd(), SYNC_FD) })?;
        }
        let first_kept = self.first_kept();
        for (i, fd) in self.kept.iter().enumerate() {
            // SAFETY: as above; the kept fds are numbered 10 or higher, above every target.
            Errno::result(unsafe { libc::dup2(fd.as_raw_fd(), first_kept + i as RawFd) })?;
        }
        close_from(first_kept + self.kept.len() as RawFd);
        Ok(())
    }
}

/// **Child side.** Writes marker lines on the report pipe. Each line is one `write(2)` of less
/// than `PIPE_BUF` bytes, which the kernel delivers atomically.
#[derive(Clone, Copy, Debug)]
pub struct Reporter(RawFd);

impl Reporter {
    /// The reporter once [`ChildFds::install`] has put the pipe at [`REPORT_FD`].
    pub const INSTALLED: Reporter = Reporter(REPORT_FD);

    /// A reporter on the report pipe's write end at `fd` (a backend with its own fd layout).
    pub const fn at(fd: RawFd) -> Reporter {
        Reporter(fd)
    }

    /// Stamp the end of a phase with the host clock.
    pub fn phase(&self, name: &str) {
        self.emit(
            Line::new(wire::PHASE)
                .field("name", name)
                .field("t", now_ns()),
        );
    }

    /// Report a failed step and end the child. Never returns.
    pub fn fail(&self, step: &str, errno: Errno) -> ! {
        self.emit(
            Line::new(wire::ERROR)
                // Escaped: a step's name has spaces ("mount /proc"), which end a plain field.
                .text("step", step.as_bytes())
                .field("errno", errno as i32),
        );
        exit_now(127)
    }

    fn emit(&self, mut line: Line) {
        let bytes = line.finish();
        // SAFETY: writing a valid buffer; nothing can be done about a failure here.
        unsafe { libc::write(self.0, bytes.as_ptr().cast(), bytes.len()) };
    }
}

/// End the child at once, without running the lab's atexit handlers or flushing its stdio
/// buffers (they belong to the parent).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit is async-signal-safe and ends the process.
    unsafe { libc::_exit(code) }
}

/// An `execve` prepared in the parent: every string and pointer array is built before `fork`.
#[derive(Debug)]
pub struct Exec {
    path: CString,
    _argv: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    _envp: Vec<CString>,
    envp_ptrs: Vec<*const libc::c_char>,
}

impl Exec {
    /// Prepare `execve(path, [argv0, args...], env)`.
    pub fn new(path: &Path, argv0: &str, args: &[String], env: &[(&str, &str)]) -> Exec {
        let cstring = |s: &[u8]| CString::new(s).expect("no NUL in arguments");
        let argv: Vec<CString> = std::iter::once(cstring(argv0.as_bytes()))
            .chain(args.iter().map(|a| cstring(a.as_bytes())))
            .collect();
        let envp: Vec<CString> = env
            .iter()
            .map(|(k, v)| cstring(format!("{k}={v}").as_bytes()))
            .collect();
        let ptrs = |v: &[CString]| {
            v.iter()
                .map(|c| c.as_ptr())
                .chain(std::iter::once(std::ptr::null()))
                .collect()
        };
        Exec {
            path: cstring(path.as_os_str().as_bytes()),
            argv_ptrs: ptrs(&argv),
            envp_ptrs: ptrs(&envp),
            _argv: argv,
            _envp: envp,
        }
    }

    /// **Child side.** Replace this process with the program. Returns only on failure.
    pub fn exec(&self) -> Errno {
        // SAFETY: all pointers point into CStrings owned by `self`, and both arrays end in NULL.
        unsafe {
            libc::execve(
                self.path.as_ptr(),
                self.argv_ptrs.as_ptr(),
                self.envp_ptrs.as_ptr(),
            )
        };
        Errno::last()
    }
}

/// **Child side.** Make this process the leader of a session of its own, with no controlling
/// terminal: the first thing every instance's first process does.
///
/// A terminal belongs to one *session*, the processes of a login shell and everything started
/// from it. Any process of that session can open `/dev/tty` — "my controlling terminal" — even
/// when its standard streams are pipes, and with `ioctl(TIOCSTI)` push bytes into the
/// terminal's *input*, which the shell reads next as if its user had typed them: an instance
/// left in the session of root's shell can type commands for root. Job control reaches it too
/// (Ctrl-C's SIGINT, a hangup's SIGHUP go to the terminal's foreground process group).
/// `setsid` starts a new session with no terminal at all: `/dev/tty` then fails with ENXIO.
///
/// A process that already leads a process group cannot start a session (EPERM); one that
/// already leads its own session (the VMM, made by [`crate::spawn::clone_fork`], which did this
/// already) has nothing left to do.
pub fn new_session() -> Result<(), Errno> {
    // SAFETY: setsid takes no argument.
    if unsafe { libc::setsid() } >= 0 {
        return Ok(());
    }
    let e = Errno::last();
    // SAFETY: getsid and getpid take plain integers or nothing.
    let leader = unsafe { libc::getsid(0) == libc::getpid() };
    if leader {
        Ok(())
    } else {
        Err(e)
    }
}

/// **Child side.** Ask the kernel to SIGKILL this process when the lab dies, so a crashed lab
/// leaves no running instances behind.
pub fn die_with_parent() -> Result<(), Errno> {
    // SAFETY: prctl with integer arguments.
    Errno::result(unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) }).map(drop)
}

/// Set `O_NONBLOCK` on the parent's end of a pipe.
pub fn set_nonblocking(file: &File) -> Result<(), SpawnError> {
    let flags = fcntl(file, FcntlArg::F_GETFL).map_err(SpawnError::sys("fcntl"))?;
    let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
    fcntl(file, FcntlArg::F_SETFL(flags)).map_err(SpawnError::sys("fcntl"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// In a forked child (so the test's own fds are left alone): raise the limit on open files,
    /// put fds far above 1024, close from 10 without close_range, and report whether they went.
    #[test]
    fn closing_without_close_range_reaches_fds_above_1024() {
        // SAFETY: the child only makes system calls, then _exits.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                // SAFETY: system calls on our own values.
                let code = unsafe {
                    let mut lim = std::mem::zeroed::<libc::rlimit>();
                    libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
                    lim.rlim_cur = lim.rlim_max.min(1 << 16);
                    libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
                    let high = [1500, (lim.rlim_cur - 1) as RawFd];
                    for fd in high {
                        libc::dup2(2, fd);
                    }
                    libc::dup2(2, 20);
                    close_from_listed(10);
                    let open = |fd| libc::fcntl(fd, libc::F_GETFD) != -1;
                    if high.iter().any(|&fd| open(fd)) || open(20) {
                        1
                    } else if !open(2) {
                        2
                    } else {
                        0
                    }
                };
                exit_now(code)
            }
            nix::unistd::ForkResult::Parent { child } => {
                let status = nix::sys::wait::waitpid(child, None).unwrap();
                assert_eq!(
                    status,
                    nix::sys::wait::WaitStatus::Exited(child, 0),
                    "1: an fd above 10 stayed open; 2: one below was closed"
                );
            }
        }
    }
}
