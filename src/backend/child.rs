//! Tools for the code that runs in a child process between `fork` and `exec`.
//!
//! `lab` may have several threads (a progress bar, a console reader). After a `fork` only the
//! forking thread exists in the child, and a lock another thread held at that moment (inside
//! `malloc`, say) stays locked forever. So the child code of every backend follows one rule: **no
//! allocation, no locks** — only system calls on data the parent prepared before forking. This
//! module holds that prepared data ([`Exec`], [`ChildFds`]) and the few child-side helpers
//! ([`Reporter`], [`clone_fork`], [`exit_now`]).

use crate::measure::clock::now_ns;
use isolab_kernels::wire::{self, Line};
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::unistd::{pipe2, Pid};
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

/// Make the pipes between the lab and one child. Every fd is close-on-exec and numbered 10 or
/// higher, so that installing them at 0..=5 in the child never overwrites one not yet moved.
pub fn pipes(sync: Option<OwnedFd>) -> Result<(ParentEnds, ChildFds), BackendError> {
    let high = |fd: OwnedFd| -> Result<OwnedFd, BackendError> {
        let raw = fcntl(&fd, FcntlArg::F_DUPFD_CLOEXEC(10)).map_err(BackendError::sys("fcntl"))?;
        // SAFETY: F_DUPFD_CLOEXEC returned a new fd that nothing else owns.
        Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) })
    };
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
                .field("step", step)
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

/// `clone(2)` without `CLONE_VM`: a fork that can also create namespaces (`CLONE_NEW*`) or make
/// the new process a sibling rather than a child (`CLONE_PARENT`). Returns `None` in the child.
///
/// # Safety
/// Same as `fork`: in the child, only async-signal-safe work until `exec` or `_exit`.
pub unsafe fn clone_fork(flags: libc::c_int) -> Result<Option<Pid>, Errno> {
    // With a NULL stack the child continues on a copy of the parent's stack, exactly like fork.
    // The exit signal (low byte of flags) is SIGCHLD so the parent can wait for it normally.
    // SAFETY: the caller upholds fork's rules; the arguments are flags and null pointers.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags | libc::SIGCHLD) as libc::c_ulong,
            std::ptr::null_mut::<libc::c_void>(),
            std::ptr::null_mut::<libc::c_int>(),
            std::ptr::null_mut::<libc::c_int>(),
            0 as libc::c_ulong,
        )
    };
    match ret {
        -1 => Err(Errno::last()),
        0 => Ok(None),
        pid => Ok(Some(Pid::from_raw(pid as i32))),
    }
}

/// The stack of a child that shares the lab's memory (see [`spawn_shared`]).
pub struct Stack(Vec<u8>);

impl Stack {
    /// Enough for the deepest child code here (path buffers of 1 KiB on the stack, a few frames).
    const SIZE: usize = 256 * 1024;

    /// A fresh stack. Its pages are only touched (and paid for) as far as the child goes.
    pub fn new() -> Stack {
        Stack(vec![0; Stack::SIZE])
    }
}

impl Default for Stack {
    fn default() -> Self {
        Stack::new()
    }
}

impl std::fmt::Debug for Stack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Stack({} KiB)", self.0.len() / 1024)
    }
}

/// What the trampoline needs: the child's code and the signal mask to restore.
struct Trampoline<'a> {
    body: &'a mut dyn FnMut() -> libc::c_int,
    mask: libc::sigset_t,
}

extern "C" fn trampoline(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `Trampoline` that `spawn_shared` keeps alive until we exec or exit
    // (CLONE_VFORK suspends it until then).
    let t = unsafe { &mut *(arg as *mut Trampoline) };
    // SAFETY: restoring a signal mask saved by the parent.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &t.mask, std::ptr::null_mut()) };
    (t.body)()
}

/// Start a child the way `posix_spawn` does: `clone(CLONE_VM | CLONE_VFORK)`. The child runs on
/// `stack` in the parent's address space, so nothing is copied — no page tables, no copy-on-write
/// faults — and the calling thread sleeps until the child calls `execve` or exits. `flags` may
/// add namespaces or `CLONE_PARENT`.
///
/// That makes this the cheapest way to start a process, and the reason a shell or `posix_spawn`
/// starts programs faster than `fork` + `exec` from a large process. It is also why the child's
/// code must be so careful: every write it makes lands in the parent's memory.
///
/// Signals are blocked around the clone so that no signal handler of the lab runs on the child's
/// stack before the child has restored the normal mask.
///
/// # Safety
/// `body` must only make async-signal-safe system calls on data prepared before the call, and
/// must end in `execve` or `_exit`; it must not unwind.
pub unsafe fn spawn_shared(
    flags: libc::c_int,
    stack: &mut Stack,
    body: &mut dyn FnMut() -> libc::c_int,
) -> Result<Pid, Errno> {
    // SAFETY: sigset operations on local, initialised sets.
    let (all, mut old) = unsafe {
        let mut all = std::mem::zeroed::<libc::sigset_t>();
        libc::sigfillset(&mut all);
        (all, std::mem::zeroed::<libc::sigset_t>())
    };
    // SAFETY: blocking signals on this thread; restored below.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old) };
    let mut t = Trampoline { body, mask: old };
    let len = stack.0.len();
    // The stack grows down: hand clone the top, aligned to 16 bytes as the x86-64 ABI requires.
    let top = stack.0.as_mut_ptr().wrapping_add(len);
    let top = top.wrapping_sub(top as usize % 16);
    // SAFETY: `top` is the aligned end of a live buffer; `t` outlives the child's use of it
    // because CLONE_VFORK suspends us until the child execs or exits.
    let ret = unsafe {
        libc::clone(
            trampoline,
            top.cast(),
            flags | libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (&mut t as *mut Trampoline).cast(),
        )
    };
    let err = Errno::last();
    // SAFETY: restoring our own mask.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    if ret == -1 {
        Err(err)
    } else {
        Ok(Pid::from_raw(ret))
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
