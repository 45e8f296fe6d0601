//! # isolab-spawn
//!
//! Creating an instance's first process, and putting it in its cgroup from birth.
//!
//! Two ways to make a process here, both built on `clone`:
//!
//! * [`spawn_shared`] — like `posix_spawn`: `CLONE_VM | CLONE_VFORK`. The child runs on a stack
//!   of its own inside the lab's address space until it calls `execve`, so nothing is copied: no
//!   page tables, no copy-on-write faults. The cheapest start there is, used whenever the lab
//!   can wait for the child to exec.
//! * [`clone_fork`] — like `fork`: the child gets a copy-on-write copy of the lab. Used when the
//!   lab must stay awake while the child sets up (writing a rootless container's uid map).
//!
//! Both take a [`Placement`], which the cgroup module decides ([`isolab_resources::cgroup::placement`]):
//! the cgroup the child must be in before it does anything. On cgroup v2 (Linux 5.7+)
//! `clone3(CLONE_INTO_CGROUP)` creates the child *inside* the cgroup. Otherwise the child moves
//! itself right after it starts, by writing `0` to a file the parent opened.
//!
//! Either way the child's next act is to start a session of its own
//! ([`crate::child::new_session`]): whatever terminal the lab was started from, no instance
//! can reach it.

pub mod child;

use crate::child::{die_with_parent, new_session, ChildSide, Exec, Reporter};
pub use isolab_resources::cgroup::Placement;
use nix::errno::Errno;
use nix::unistd::Pid;

/// Errors of preparing a child process (its pipes and descriptors) in the parent.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// A system call failed.
    #[error("{step}: {source}")]
    Sys {
        /// What the lab was doing.
        step: &'static str,
        /// The error.
        source: Errno,
    },
    /// Host file I/O failed.
    #[error("{action}: {source}")]
    Io {
        /// What the lab was doing.
        action: String,
        /// The error.
        source: std::io::Error,
    },
}

impl SpawnError {
    /// The error of system call `step`, for `map_err`.
    pub fn sys(step: &'static str) -> impl FnOnce(Errno) -> SpawnError {
        move |source| SpawnError::Sys { step, source }
    }

    /// The error of I/O while `action`, for `map_err`.
    pub fn io(action: impl Into<String>) -> impl FnOnce(std::io::Error) -> SpawnError {
        let action = action.into();
        move |source| SpawnError::Io { action, source }
    }
}

/// The stack of a child that shares the lab's memory (see [`spawn_shared`]).
///
/// A mapping of its own with a **guard page** below it: the stack grows down, and a child that
/// runs past its end touches the guard, which has no access rights, and dies of SIGSEGV. A stack
/// cut out of the heap (a `Vec`) has no such edge: an overflow would silently overwrite whatever
/// the lab's allocator put below it — in the lab's own memory, since the child shares it.
pub struct Stack {
    /// The start of the mapping: the guard page, then the usable stack.
    map: *mut libc::c_void,
    guard: usize,
    len: usize,
}

impl Stack {
    /// Enough for the deepest child code here (path buffers of 1 KiB on the stack, a few frames).
    const SIZE: usize = 256 * 1024;

    /// A fresh stack. Its pages are only touched (and paid for) as far as the child goes.
    pub fn new() -> Result<Stack, Errno> {
        // SAFETY: sysconf with a constant.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let len = Stack::SIZE + page;
        // SAFETY: a fresh anonymous private mapping; the result is checked.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(Errno::last());
        }
        let stack = Stack {
            map,
            guard: page,
            len,
        };
        // SAFETY: the lowest page of the mapping just made becomes inaccessible.
        Errno::result(unsafe { libc::mprotect(map, page, libc::PROT_NONE) })?;
        Ok(stack)
    }

    /// The region to hand to the kernel, above the guard: (lowest address, length). mmap
    /// returns page-aligned memory, so both ends are 16-byte aligned as the ABI wants.
    fn region(&mut self) -> (*mut u8, usize) {
        (
            self.map.cast::<u8>().wrapping_add(self.guard),
            self.len - self.guard,
        )
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping `new` made; no child runs on it any more
        // (spawn_shared returns only after the child has exec'd or exited).
        unsafe { libc::munmap(self.map, self.len) };
    }
}

impl std::fmt::Debug for Stack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Stack({} KiB + a guard page)",
            (self.len - self.guard) / 1024
        )
    }
}

// `CLONE_INTO_CGROUP` does not fit the 32-bit flags of clone(2): it exists only for clone3(2).
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// The kernel's `struct clone_args` (version 2, with `cgroup`), for clone3(2).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// Errors that mean "this kernel has no `clone3(CLONE_INTO_CGROUP)`": fall back to `clone` and
/// let the child join its cgroup itself. Only these two:
///
/// * ENOSYS — no clone3 at all (Linux < 5.3);
/// * E2BIG — clone3 without the `cgroup` field (Linux 5.3–5.6): the kernel refuses a
///   `struct clone_args` larger than the one it knows when the extra bytes are not zero, which
///   is how it says "I do not know CLONE_INTO_CGROUP".
///
/// EINVAL is *not* among them. A kernel that knows the `cgroup` field knows the flag too, so
/// EINVAL means the request itself is wrong — flags that do not go together, a bad exit
/// signal — and `clone` would refuse it as well, or worse, accept a different request. Falling
/// back on it would hide a bug of the lab's behind a slower path.
fn clone3_unsupported(e: Errno) -> bool {
    matches!(e, Errno::ENOSYS | Errno::E2BIG)
}

/// What the trampoline needs: the child's code, the signal mask to restore, and whether the
/// child must still move itself into its cgroup.
struct Trampoline<'a> {
    body: &'a mut dyn FnMut() -> libc::c_int,
    mask: libc::sigset_t,
    placement: &'a Placement,
    must_join: bool,
    report: Reporter,
}

extern "C" fn trampoline(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `Trampoline` that `spawn_shared` keeps alive until we exec or exit
    // (CLONE_VFORK suspends it until then).
    let t = unsafe { &mut *(arg as *mut Trampoline) };
    if t.must_join {
        if let Err(e) = t.placement.join() {
            t.report.fail("join cgroup", e);
        }
    }
    // No instance shares the lab's terminal (see `new_session`).
    if let Err(e) = new_session() {
        t.report.fail("setsid", e);
    }
    // SAFETY: restoring a signal mask saved by the parent.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &t.mask, std::ptr::null_mut()) };
    (t.body)()
}

/// Start a child the way `posix_spawn` does: `clone(CLONE_VM | CLONE_VFORK)`, placed in its
/// cgroup (see the module documentation). The child runs `body` on `stack` in the parent's
/// address space; the calling thread sleeps until the child calls `execve` or exits. `flags` may
/// add namespaces or `CLONE_PARENT`. `report` is where the child reports a failure to join.
///
/// Signals are blocked around the clone so that no signal handler of the lab runs on the child's
/// stack before the child has restored the normal mask.
///
/// # Safety
/// `body` must only make async-signal-safe system calls on data prepared before the call, and
/// must end in `execve` or `_exit`; it must not unwind. Every write it makes lands in the
/// parent's memory.
pub unsafe fn spawn_shared(
    flags: libc::c_int,
    stack: &mut Stack,
    placement: &Placement,
    report: Reporter,
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
    let (stack_lo, stack_len) = stack.region();
    let mut t = Trampoline {
        body,
        mask: old,
        placement,
        must_join: true,
        report,
    };
    let shared = libc::CLONE_VM | libc::CLONE_VFORK;
    let mut result = Err(Errno::ENOSYS);
    if let Some(dir) = placement.birth_dir() {
        t.must_join = false;
        let args = CloneArgs {
            flags: (flags | shared) as u64 | CLONE_INTO_CGROUP,
            exit_signal: libc::SIGCHLD as u64,
            stack: stack_lo as u64,
            stack_size: stack_len as u64,
            cgroup: dir as u64,
            ..CloneArgs::default()
        };
        // SAFETY: a valid clone_args with a live, aligned stack; `t` outlives the child's use of
        // it because CLONE_VFORK suspends us until the child execs or exits.
        result = unsafe { clone3_on_stack(&args, trampoline, (&mut t as *mut Trampoline).cast()) };
    }
    if matches!(result, Err(e) if clone3_unsupported(e)) {
        t.must_join = true;
        let top = stack_lo.wrapping_add(stack_len);
        // SAFETY: as above, with the classic clone(2), whose stack argument is the top.
        let ret = unsafe {
            libc::clone(
                trampoline,
                top.cast(),
                flags | shared | libc::SIGCHLD,
                (&mut t as *mut Trampoline).cast(),
            )
        };
        result = if ret == -1 {
            Err(Errno::last())
        } else {
            Ok(Pid::from_raw(ret))
        };
    }
    // SAFETY: restoring our own mask.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    result
}

/// The usual first process of an instance: spawned with [`spawn_shared`], it puts its pipes at
/// their fixed numbers, stamps `fork`, arranges to die with the lab, stamps `exec` and execs.
pub fn spawn_exec(
    flags: libc::c_int,
    placement: &Placement,
    fds: &dyn ChildSide,
    exec: &Exec,
) -> Result<Pid, Errno> {
    spawn_exec_with(flags, placement, fds, exec, Streams::Fixed, None)
}

/// Where the first process finds its pipes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Streams {
    /// Report on fd 3, control on fd 4 (see [`crate::child`]): a process, or a runtime that
    /// passes extra fds to its container (`runc run --preserve-fds 2`).
    Fixed,
    /// Report on standard output, control on standard input: a runtime that hands its
    /// container only its standard streams (`docker run -i`, gVisor's `runsc run`).
    Standard,
}

/// Work a first process does between `fork` and `exec`, in the child: system calls on data
/// prepared before the fork only. Returns the failing step.
pub type BeforeExec<'a> = &'a (dyn Fn() -> Result<(), (&'static str, Errno)> + Sync);

/// [`spawn_exec`], with the pipes where `streams` says, and `before_exec` (stamped as its own
/// phase `before_exec`) run just before the exec.
pub fn spawn_exec_with(
    flags: libc::c_int,
    placement: &Placement,
    fds: &dyn ChildSide,
    exec: &Exec,
    streams: Streams,
    before_exec: Option<(&'static str, BeforeExec)>,
) -> Result<Pid, Errno> {
    let mut stack = Stack::new()?;
    let mut body = || {
        if let Err(e) = fds.install() {
            fds.reporter().fail("install fds", e);
        }
        let mut report = Reporter::INSTALLED;
        report.phase("fork");
        if let Err(e) = die_with_parent() {
            report.fail("prctl", e);
        }
        if let Some((phase, work)) = before_exec {
            if let Err((step, e)) = work() {
                report.fail(step, e);
            }
            report.phase(phase);
        }
        report.phase("exec");
        if streams == Streams::Standard {
            // SAFETY: dup2 and close of the fds installed above.
            unsafe {
                libc::dup2(crate::child::REPORT_FD, 1);
                libc::dup2(crate::child::CONTROL_FD, 0);
                libc::close(crate::child::REPORT_FD);
                libc::close(crate::child::CONTROL_FD);
            }
            report = Reporter::at(1);
        }
        let e = exec.exec();
        report.fail("exec", e)
    };
    // SAFETY: the child only makes system calls on data prepared before this call (the fds, the
    // exec's strings, what `before_exec` captured), then execs or exits.
    unsafe { spawn_shared(flags, &mut stack, placement, fds.reporter(), &mut body) }
}

/// clone3(2) whose child starts on a new stack and calls `entry(arg)`.
///
/// Rust code cannot go on running after a `clone3` that switched stacks — the compiled code of the
/// calling function addresses its locals relative to the stack pointer, which now points
/// elsewhere — so the child's first instructions are written by hand: call `entry` on the new
/// stack, then exit with its return value. The parent just gets the syscall's result.
///
/// # Safety
/// `args` must describe a valid stack; `entry` must not return into anything (it ends in exec or
/// exit, or its value becomes the exit status).
#[cfg(target_arch = "x86_64")]
unsafe fn clone3_on_stack(
    args: &CloneArgs,
    entry: extern "C" fn(*mut libc::c_void) -> libc::c_int,
    arg: *mut libc::c_void,
) -> Result<Pid, Errno> {
    let ret: i64;
    // SAFETY: the syscall instruction with clone3's arguments. In the parent only rax (result),
    // rcx and r11 (clobbered by `syscall`) change. The child runs on its own stack (rsp =
    // stack + stack_size, 16-byte aligned, so `call` leaves it as the ABI expects), keeps r12 and
    // r13 (preserved across syscalls), calls `entry(arg)` and exits; it never reaches the Rust
    // code after this block.
    unsafe {
        std::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "xor ebp, ebp",
            "mov rdi, r12",
            "call r13",
            "mov edi, eax",
            "mov eax, {sys_exit}",
            "syscall",
            "ud2",
            "2:",
            sys_exit = const libc::SYS_exit,
            inlateout("rax") libc::SYS_clone3 => ret,
            in("rdi") args as *const CloneArgs,
            in("rsi") std::mem::size_of::<CloneArgs>(),
            in("r12") arg,
            in("r13") entry,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    if ret < 0 {
        Err(Errno::from_raw(-ret as i32))
    } else {
        Ok(Pid::from_raw(ret as i32))
    }
}

/// `clone` without `CLONE_VM`: a fork that can also create namespaces (`CLONE_NEW*`), placed in
/// its cgroup. Returns `None` in the child, which is already in its cgroup.
///
/// # Safety
/// Same as `fork`: in the child, only async-signal-safe work until `exec` or `_exit`.
pub unsafe fn clone_fork(
    flags: libc::c_int,
    placement: &Placement,
    report: Reporter,
) -> Result<Option<Pid>, Errno> {
    if let Some(dir) = placement.birth_dir() {
        // With no stack, the child continues on a copy of the parent's stack, exactly like fork.
        // A child made with CLONE_PARENT is its grandparent's, and reports its end as the caller
        // would (the caller's own exit signal): clone3 wants no exit signal of its own then.
        let exit_signal = if flags & libc::CLONE_PARENT != 0 {
            0
        } else {
            libc::SIGCHLD as u64
        };
        let args = CloneArgs {
            flags: flags as u64 | CLONE_INTO_CGROUP,
            exit_signal,
            cgroup: dir as u64,
            ..CloneArgs::default()
        };
        // SAFETY: a valid clone_args; without CLONE_VM the child has its own copy of memory.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_clone3,
                &args as *const CloneArgs,
                std::mem::size_of::<CloneArgs>(),
            )
        };
        match ret {
            0 => {
                if let Err(e) = new_session() {
                    report.fail("setsid", e);
                }
                return Ok(None);
            }
            -1 if clone3_unsupported(Errno::last()) => {}
            -1 => return Err(Errno::last()),
            pid => return Ok(Some(Pid::from_raw(pid as i32))),
        }
    }
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
        0 => {
            if let Err(e) = placement.join() {
                report.fail("join cgroup", e);
            }
            if let Err(e) = new_session() {
                report.fail("setsid", e);
            }
            Ok(None)
        }
        pid => Ok(Some(Pid::from_raw(pid as i32))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::child::Exec;
    use nix::sys::signal::{kill, Signal};
    use nix::sys::wait::waitpid;
    use std::path::{Path, PathBuf};

    /// A fresh cgroup in the machine's cgroup v2 tree (on a hybrid machine, the controller-less
    /// one at /sys/fs/cgroup/unified): clone3 can place processes in any v2 cgroup.
    fn v2_cgroup(name: &str) -> PathBuf {
        let unified = Path::new("/sys/fs/cgroup/unified");
        let root = if unified.join("cgroup.procs").exists() {
            unified
        } else {
            Path::new("/sys/fs/cgroup")
        };
        let dir = root.join(format!("isolab-spawn-{name}-{}", std::process::id()));
        std::fs::create_dir(&dir).unwrap();
        dir
    }

    /// The last PID in /proc/PID/status's NSpid: the process's PID in its own namespace.
    fn pid_inside(pid: Pid) -> String {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let line = status.lines().find(|l| l.starts_with("NSpid:")).unwrap();
        line.split_whitespace().last().unwrap().to_string()
    }

    fn in_cgroup(pid: Pid, dir: &Path) -> bool {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .unwrap()
            .lines()
            .any(|l| l.starts_with("0::") && l.ends_with(&name))
    }

    fn finish(pid: Pid, dir: &Path) {
        kill(pid, Signal::SIGKILL).unwrap();
        waitpid(pid, None).unwrap();
        std::fs::remove_dir(dir).unwrap();
    }

    #[test]
    fn clone3_places_a_shared_child_in_its_cgroup_and_namespace_from_birth() {
        let dir = v2_cgroup("shared");
        // No join files: if the child is in the cgroup, clone3 put it there.
        let placement = Placement {
            into: Some(std::fs::File::open(&dir).unwrap().into()),
            join: Vec::new(),
        };
        let exec = Exec::new(Path::new("/bin/sleep"), "sleep", &["10".into()], &[]);
        let mut stack = Stack::new().unwrap();
        let mut body = || {
            exec.exec();
            1
        };
        // SAFETY: the child only execs or exits.
        let pid = unsafe {
            spawn_shared(
                libc::CLONE_NEWPID,
                &mut stack,
                &placement,
                Reporter::INSTALLED,
                &mut body,
            )
        }
        .unwrap();
        assert!(in_cgroup(pid, &dir), "the child was born in the cgroup");
        assert_eq!(
            pid_inside(pid),
            "1",
            "and is PID 1 of its new PID namespace"
        );
        finish(pid, &dir);
    }

    #[test]
    fn a_shared_childs_stack_has_a_guard_page_below_it() {
        let mut stack = Stack::new().unwrap();
        let (lo, _) = stack.region();
        let lo = lo as usize;
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let guard = maps.lines().find(|l| {
            let range = l.split_whitespace().next().unwrap();
            let (_, end) = range.split_once('-').unwrap();
            usize::from_str_radix(end, 16).unwrap() == lo
        });
        let guard = guard.expect("a mapping ends where the stack begins");
        assert!(
            guard.split_whitespace().nth(1).unwrap().starts_with("---"),
            "and has no access rights: {guard}"
        );
    }

    /// Uses `depth` × 16 KiB of stack.
    #[inline(never)]
    fn deep(depth: u32) -> u8 {
        let mut frame = [0u8; 16 * 1024];
        frame[0] = depth as u8;
        let frame = std::hint::black_box(frame);
        if depth == 0 {
            frame[1]
        } else {
            deep(depth - 1).wrapping_add(frame[0])
        }
    }

    #[test]
    fn a_child_that_overflows_its_stack_dies_instead_of_writing_over_the_lab() {
        let canary = vec![0x5au8; 1 << 20];
        let mut stack = Stack::new().unwrap();
        // 1 MiB of frames on a 256 KiB stack.
        let mut body = || deep(64) as libc::c_int;
        // SAFETY: the child only recurses, then exits; its writes are on its own stack.
        let pid = unsafe {
            spawn_shared(
                0,
                &mut stack,
                &Placement::none(),
                Reporter::INSTALLED,
                &mut body,
            )
        }
        .unwrap();
        let status = waitpid(pid, None).unwrap();
        assert!(
            matches!(
                status,
                nix::sys::wait::WaitStatus::Signaled(_, Signal::SIGSEGV, _)
            ),
            "{status:?}"
        );
        assert!(
            canary.iter().all(|&b| b == 0x5a),
            "the lab's memory is intact"
        );
    }

    #[test]
    fn only_a_missing_feature_makes_clone3_fall_back() {
        assert!(clone3_unsupported(Errno::ENOSYS));
        assert!(clone3_unsupported(Errno::E2BIG));
        // A wrong request stays an error: clone would get it wrong too, or differently.
        assert!(!clone3_unsupported(Errno::EINVAL));
        assert!(!clone3_unsupported(Errno::EBADF));
    }

    /// The session a process leads, from field 6 of `/proc/PID/stat` (after the command's
    /// closing parenthesis: state, ppid, pgrp, session).
    fn session_of(pid: Pid) -> i32 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        after.split_whitespace().nth(3).unwrap().parse().unwrap()
    }

    /// Both ways of making an instance's first process give it a session of its own, so no
    /// instance shares the lab's controlling terminal.
    #[test]
    fn every_child_leads_a_session_of_its_own() {
        let exec = Exec::new(Path::new("/bin/sleep"), "sleep", &["10".into()], &[]);
        let mut stack = Stack::new().unwrap();
        let mut body = || {
            exec.exec();
            1
        };
        // SAFETY: the child only execs or exits.
        let shared = unsafe {
            spawn_shared(
                0,
                &mut stack,
                &Placement::none(),
                Reporter::INSTALLED,
                &mut body,
            )
        }
        .unwrap();
        // SAFETY: the child only execs or exits.
        let forked =
            match unsafe { clone_fork(0, &Placement::none(), Reporter::INSTALLED) }.unwrap() {
                None => {
                    exec.exec();
                    crate::child::exit_now(1)
                }
                Some(pid) => pid,
            };
        for pid in [shared, forked] {
            // The shared child has exec'd when spawn_shared returns (CLONE_VFORK); the forked
            // one runs on its own: give it a moment to get there.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while session_of(pid) != pid.as_raw() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            assert_eq!(session_of(pid), pid.as_raw(), "{pid} leads its session");
            assert_ne!(session_of(pid), session_of(Pid::this()));
            kill(pid, Signal::SIGKILL).unwrap();
            waitpid(pid, None).unwrap();
        }
    }

    #[test]
    fn clone3_places_a_forked_child_in_its_cgroup() {
        let dir = v2_cgroup("fork");
        let placement = Placement {
            into: Some(std::fs::File::open(&dir).unwrap().into()),
            join: Vec::new(),
        };
        let exec = Exec::new(Path::new("/bin/sleep"), "sleep", &["10".into()], &[]);
        // SAFETY: the child only execs or exits.
        let pid = match unsafe { clone_fork(0, &placement, Reporter::INSTALLED) }.unwrap() {
            None => {
                exec.exec();
                crate::child::exit_now(1)
            }
            Some(pid) => pid,
        };
        // The child is in the cgroup as soon as clone3 returns; exec comes later, which is fine.
        assert!(in_cgroup(pid, &dir));
        finish(pid, &dir);
    }
}
