//! Tools for the code that runs in a child process between `fork` and `exec`.
//!
//! `lab` may have several threads (a progress bar, a console reader). After a `fork` only the
//! forking thread exists in the child, and a lock another thread held at that moment (inside
//! `malloc`, say) stays locked forever. So the child code of every backend follows one rule: **no
//! allocation, no locks** — only system calls on data the parent prepared before forking. This
//! module holds that prepared data ([`Exec`], [`ChildFds`]) and the few child-side helpers
//! ([`Reporter`], [`exit_now`]); [`super::spawn`] creates the child processes.

use crate::measure::clock::now_ns;
use isolab_kernels::wire::{self, Line};
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::unistd::pipe2;
use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::BackendError;

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
}

/// A copy of `fd` numbered 10 or higher and close-on-exec, so that installing a child's fds at
/// small fixed numbers never overwrites one not yet moved, and nothing leaks into other children.
pub fn high(fd: OwnedFd) -> Result<OwnedFd, BackendError> {
    let raw = fcntl(&fd, FcntlArg::F_DUPFD_CLOEXEC(10)).map_err(BackendError::sys("fcntl"))?;
    // SAFETY: F_DUPFD_CLOEXEC returned a new fd that nothing else owns.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) })
}

/// The child's side of its pipes, as [`crate::backend::spawn::spawn_exec`] uses them: installed
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
pub fn pipes(sync: Option<OwnedFd>) -> Result<(ParentEnds, ChildFds), BackendError> {
    let pipe = || pipe2(OFlag::O_CLOEXEC).map_err(BackendError::sys("pipe2"));
    let (report_r, report_w) = pipe()?;
    let (control_r, control_w) = pipe()?;
    let (stderr_r, stderr_w) = pipe()?;
    let devnull = File::open("/dev/null").map_err(BackendError::io("open /dev/null"))?;
    let child = ChildFds {
        fds: [
            high(OwnedFd::from(
                devnull.try_clone().map_err(BackendError::io("dup"))?,
            ))?,
            high(OwnedFd::from(devnull))?,
            high(stderr_w)?,
            high(report_w)?,
            high(control_r)?,
        ],
        sync: sync.map(high).transpose()?,
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

    /// **Child side.** Put the fds at 0..=5 and close every other fd, so the workload inherits
    /// nothing from the lab (another instance's pipe would keep that instance's pipe open and
    /// hide its end).
    pub fn install(&self) -> Result<(), Errno> {
        for (target, fd) in self.fds.iter().enumerate() {
            // dup2 gives a copy without close-on-exec at the target number.
            // SAFETY: plain dup2 of an fd we own onto a small fixed number.
            Errno::result(unsafe { libc::dup2(fd.as_raw_fd(), target as RawFd) })?;
        }
        let mut first_closed = SYNC_FD;
        if let Some(sync) = &self.sync {
            // SAFETY: as above.
            Errno::result(unsafe { libc::dup2(sync.as_raw_fd(), SYNC_FD) })?;
            first_closed = SYNC_FD + 1;
        }
        close_from(first_closed);
        Ok(())
    }
}

/// Close every fd numbered `first` or higher.
pub fn close_from(first: RawFd) {
    // close_range(2) (Linux 5.9) does it in one call; the loop is the fallback for older kernels.
    // SAFETY: closing fds in the child; nothing after this uses them.
    let done = unsafe { libc::syscall(libc::SYS_close_range, first as u32, u32::MAX, 0) } == 0;
    if !done {
        for fd in first..1024 {
            // SAFETY: as above.
            unsafe { libc::close(fd) };
        }
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

/// **Child side.** Move this process into its cgroup by writing "0" ("me") to each
/// `cgroup.procs` fd the parent opened.
pub fn join_cgroup(fds: &[OwnedFd]) -> Result<(), Errno> {
    for fd in fds {
        // SAFETY: writing a 1-byte buffer to an fd we own.
        Errno::result(unsafe { libc::write(fd.as_raw_fd(), b"0".as_ptr().cast(), 1) })?;
    }
    Ok(())
}

/// **Child side.** Ask the kernel to SIGKILL this process when the lab dies, so a crashed lab
/// leaves no running instances behind.
pub fn die_with_parent() -> Result<(), Errno> {
    // SAFETY: prctl with integer arguments.
    Errno::result(unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) }).map(drop)
}

/// Set `O_NONBLOCK` on the parent's end of a pipe.
pub fn set_nonblocking(file: &File) -> Result<(), BackendError> {
    let flags = fcntl(file, FcntlArg::F_GETFL).map_err(BackendError::sys("fcntl"))?;
    let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
    fcntl(file, FcntlArg::F_SETFL(flags)).map_err(BackendError::sys("fcntl"))?;
    Ok(())
}
