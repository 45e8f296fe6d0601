//! The bad neighbours that need an operating system: `fork-bomb` and `mem-hog`.
//!
//! The interference experiment runs them beside a victim instance to see whether one instance's
//! **failure** reaches another. Both run in a **child** of the workload, never in the workload
//! itself, for two reasons:
//!
//! * the workload is a container's PID 1 or a Linux guest's `/init`. A guest's init must never
//!   die (the kernel panics: "Attempted to kill init"), and a container whose PID 1 dies is
//!   over — its kernel kills every other process of its PID namespace. The child is what may be
//!   killed; the workload survives it and tells the host what happened;
//! * the workload has to report: how many forks the kernel refused, which signal ended the hog,
//!   how far it got. Those counts live on one page of memory shared with the children
//!   (`MAP_SHARED`), which every process of the bomb inherits across `fork`.
//!
//! Each kernel is bounded: it ends after `iters` milliseconds, or as soon as the host says stop
//! (a byte, or the end of file, on the control pipe — a guest's console). Then the workload
//! kills its child's whole process group, reaps every process of it (it is their *subreaper*:
//! orphans come back to it, not to the host's init), reports, and marks `done` as any kernel
//! does. The limits that keep them from harming the host are the lab's (a cgroup's `pids.max`
//! and `memory.max`) or, in a guest, the guest's own (see [`FORK_LIMIT_IN_GUEST`]).

use crate::shim::{now_ns, LinuxShim};
use isolab_kernels::common::CHECK_SEED;
use isolab_kernels::{wire, Error, Kernel, Output, Shim, Spec};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The most processes the fork bomb may have inside a Linux guest (`RLIMIT_NPROC` of the user
/// it runs as there). Outside a guest the bound is the lab's: the `pids.max` of the instance's
/// cgroup, which the lab always sets for a bomb. The same number, so that a bomb in a guest and
/// one in a container reach the same size.
pub const FORK_LIMIT_IN_GUEST: u64 = 128;

/// The user a bomb becomes in a guest: `nobody`. `RLIMIT_NPROC` does not bind root — the kernel
/// lets a task with CAP_SYS_ADMIN or CAP_SYS_RESOURCE, or of the initial user, fork past it —
/// so a bomb that stays root has no bound but the guest's memory.
const NOBODY: libc::uid_t = 65534;

/// The hog's step: it maps and touches this much at a time.
const HOG_CHUNK: usize = 4 << 20;

/// The first pause of a bomb process whose fork was refused; it doubles up to
/// [`MAX_BACKOFF`]. bash does the same (`fork: retry: Resource temporarily unavailable`, then
/// sleeps of 1, 2, 4, 8 and 16 s): a classic bomb under a limit spends its time retrying, and
/// holds every process slot it got. The lab's bomb retries a thousand times sooner, so its
/// short runs see the retries, without turning into a CPU hog (the `cpu` aggressor is that).
const FIRST_BACKOFF: Duration = Duration::from_millis(1);
const MAX_BACKOFF: Duration = Duration::from_millis(16);

/// How often the workload looks at its child while it waits for the host.
const POLL: Duration = Duration::from_millis(20);

/// Counters shared by the workload and every process of its child's tree.
#[repr(C)]
struct Counters {
    /// Forks that succeeded (the bomb).
    forks: AtomicU64,
    /// Forks the kernel refused (EAGAIN: a pids limit or `RLIMIT_NPROC`; ENOMEM).
    refused: AtomicU64,
    /// Bytes the hog has touched.
    touched: AtomicU64,
}

/// One page of anonymous memory shared across `fork` (`MAP_SHARED`): writes of any process of
/// the tree are seen by all. Unmapped when the workload is done with it.
struct Shared {
    ptr: *mut Counters,
}

impl Shared {
    fn new() -> Result<Shared, Error> {
        // SAFETY: a new anonymous mapping with no address hint; checked below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(errno());
        }
        // A fresh anonymous mapping is zero-filled: three zero counters.
        Ok(Shared { ptr: ptr.cast() })
    }

    fn get(&self) -> &Counters {
        // SAFETY: the page is mapped, page-aligned, zero-initialised (a valid `Counters`: atomics
        // of zero) and lives as long as `self`; only atomic operations touch it.
        unsafe { &*self.ptr }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the page mapped in `new`.
        unsafe { libc::munmap(self.ptr.cast(), 4096) };
    }
}

fn errno() -> Error {
    Error::Platform(std::io::Error::last_os_error().raw_os_error().unwrap_or(0) as u32)
}

/// How the child ended, if it did before the workload stopped it.
#[derive(Clone, Copy, Debug)]
enum Ended {
    Signal(i32),
    Exit(i32),
}

/// Run `spec` (`fork-bomb` or `mem-hog`) in a child until the host says stop or its time is up
/// (a hog that is killed is started again); report what happened as `info` lines. `guest`:
/// this is a Linux guest's init.
pub fn run(shim: &mut LinuxShim, spec: &Spec, guest: bool) -> Result<Output, Error> {
    let shared = Shared::new()?;
    // Orphans of the child's tree (a bomb process whose parent was killed) come back to us,
    // not to the host's init: we can reap them all. A guest's init and a container's PID 1
    // are already the reaper of everything below them.
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let hog_in_guest = guest && spec.kernel == Kernel::MemHog;
    let oom_before = hog_in_guest.then(guest_oom_kills).flatten();
    let (report_fd, control_fd) = (shim.report_fd(), shim.control_fd());
    let spawn = || -> Result<libc::pid_t, Error> {
        // SAFETY: the workload is single-threaded; the child only makes system calls and
        // touches the shared page and memory it maps itself, and never returns.
        let child = unsafe { libc::fork() };
        if child < 0 {
            return Err(errno());
        }
        if child == 0 {
            // The child must not hold the lab's pipes: the lab knows the instance has ended
            // when the last writer of its marker pipe is gone, and the control pipe is the
            // workload's.
            // SAFETY: closing our copies of two descriptors.
            unsafe {
                libc::close(report_fd);
                libc::close(control_fd);
            }
            match spec.kernel {
                Kernel::ForkBomb => bomb(shared.get(), guest),
                _ => hog(shared.get(), spec.mib.saturating_mul(1 << 20)),
            }
        }
        Ok(child)
    };
    let mut child = spawn()?;
    shim.mark_start();
    let deadline = now_ns().saturating_add(spec.iters.saturating_mul(1_000_000));
    let (mut ended, mut hog_kills, mut most) = (None, 0u64, 0u64);
    while !shim.told_to_stop(POLL) && now_ns() < deadline {
        let Some(end) = reap_child(child) else {
            continue;
        };
        ended = Some(end);
        if spec.kernel == Kernel::MemHog {
            // A hog that was killed is started again, as a container with a restart policy
            // (`docker run --restart always`) would be: its failure goes on, kill after kill,
            // for as long as its neighbours run.
            most = most.max(shared.get().touched.swap(0, Ordering::Relaxed));
            if matches!(end, Ended::Signal(_)) {
                hog_kills += 1;
            }
            sleep(Duration::from_millis(10));
            child = spawn()?;
        }
    }
    if ended.is_none() {
        ended = reap_child(child);
    }
    stop_tree(child);
    let c = shared.get();
    let mut info = |key: &str, value: &dyn std::fmt::Display| {
        shim.emit(
            wire::Line::new(wire::INFO)
                .field("key", key)
                .field("value", value),
        );
    };
    match spec.kernel {
        Kernel::ForkBomb => {
            info("forks", &c.forks.load(Ordering::Relaxed));
            info("forks_refused", &c.refused.load(Ordering::Relaxed));
            if guest {
                info("fork_limit", &FORK_LIMIT_IN_GUEST);
            }
        }
        _ => {
            info("hog_bytes", &most.max(c.touched.load(Ordering::Relaxed)));
            info("hog_kills", &hog_kills);
        }
    }
    match ended {
        Some(Ended::Signal(sig)) => info("child_signal", &signal_name(sig)),
        Some(Ended::Exit(code)) => info("child_exit", &code),
        None => {}
    }
    // In a guest, its kernel's count of OOM kills tells whose killer it was: the guest's own.
    // (A container sees the host's /proc/vmstat, which counts the whole host's kills; the lab
    // reads the instance's cgroup instead.)
    if let (Some(before), Some(after)) = (oom_before, hog_in_guest.then(guest_oom_kills).flatten())
    {
        info("guest_oom_kills", &after.saturating_sub(before));
    }
    let forks = c.forks.load(Ordering::Relaxed);
    let touched = most.max(c.touched.load(Ordering::Relaxed));
    drop(shared);
    // The counts vary from run to run; the checksum says only that the kernel ran to its end.
    Ok(Output {
        checksum: CHECK_SEED,
        ops: forks,
        bytes: touched,
    })
}

/// `waitpid(child, WNOHANG)`: how the child ended, if it has.
fn reap_child(child: libc::pid_t) -> Option<Ended> {
    let mut status = 0;
    // SAFETY: waiting, without blocking, for our own child.
    let r = unsafe { libc::waitpid(child, &mut status, libc::WNOHANG) };
    if r != child {
        return None;
    }
    Some(if libc::WIFSIGNALED(status) {
        Ended::Signal(libc::WTERMSIG(status))
    } else {
        Ended::Exit(libc::WEXITSTATUS(status))
    })
}

/// Kill the child's process group (every process of a bomb: they never leave it) and reap
/// every process that comes back to us, until none is left.
///
/// One `kill(-pgid)` is not enough: a bomb process may be in the middle of `fork` while the
/// signal goes out, and its new child, born after the group was walked, escapes it. So: kill,
/// reap what died, and again, until `waitpid` says there are no children left (ECHILD). The
/// limit on the bomb's size bounds how long that can go on.
fn stop_tree(child: libc::pid_t) {
    loop {
        // SAFETY: signalling our child's process group (the child made it, with its own PID
        // as the group's id) and the child itself, in case it had not made the group yet.
        unsafe {
            libc::kill(-child, libc::SIGKILL);
            libc::kill(child, libc::SIGKILL);
        }
        loop {
            let mut status = 0;
            // SAFETY: reaping any of our children (the bomb's orphans are ours: subreaper).
            let r = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG | libc::__WALL) };
            if r > 0 {
                continue;
            }
            if r < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD) {
                return;
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The fork bomb, in the child: a process group of its own, then fork, fork, fork. Every new
/// process runs the same loop, so the tree doubles until the kernel refuses.
///
/// What refuses it is the point of the experiment. In a container or a process the lab set
/// `pids.max` on the instance's cgroup: the kernel's pids controller counts every task of the
/// cgroup, and `fork` (in `copy_process`, which asks `cgroup_can_fork`) fails with EAGAIN once
/// the count is at the limit — for this cgroup only; the neighbours' cgroups have their own
/// counts. Without it, the bomb would stop only at the host's `pid_max`, or when the host's
/// memory is gone, and every other process of the host would be refused with it. In a guest,
/// the bomb's processes are the guest kernel's: the host sees one VMM process whatever happens
/// inside, and the guest's own limit (here `RLIMIT_NPROC`) or its own memory stops the bomb.
fn bomb(c: &Counters, guest: bool) -> ! {
    // SAFETY: setpgid(0, 0) makes this process the leader of a new group; no pointers.
    unsafe { libc::setpgid(0, 0) };
    if guest {
        drop_to_nobody_with_nproc(FORK_LIMIT_IN_GUEST);
    }
    let mut backoff = FIRST_BACKOFF;
    loop {
        // SAFETY: fork in a process that only makes system calls and atomic stores.
        match unsafe { libc::fork() } {
            0 => backoff = FIRST_BACKOFF,
            pid if pid > 0 => {
                c.forks.fetch_add(1, Ordering::Relaxed);
            }
            _ => {
                c.refused.fetch_add(1, Ordering::Relaxed);
                sleep(backoff);
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// In a guest: become `nobody`, whose processes `RLIMIT_NPROC` counts, limited to `limit`.
fn drop_to_nobody_with_nproc(limit: u64) {
    let rlimit = libc::rlimit {
        rlim_cur: limit,
        rlim_max: limit,
    };
    // SAFETY: plain system calls on this process's own credentials and limits. Order matters:
    // groups and gid while still root, the uid last (after it, no way back).
    unsafe {
        libc::setrlimit(libc::RLIMIT_NPROC, &rlimit);
        libc::setgroups(0, std::ptr::null());
        libc::setgid(NOBODY);
        libc::setuid(NOBODY);
    }
}

/// The memory hog, in the child: first ask to be the OOM killer's first choice, then map and
/// touch memory, [`HOG_CHUNK`] at a time, up to `ceiling` bytes, then wait to be stopped.
///
/// Who dies when memory runs out is the kernel's choice. Its OOM killer scores every task that
/// may be killed — in the cgroup whose `memory.max` was reached, or in the whole machine (here:
/// the whole guest) — by the memory it holds (resident pages, swap, page tables), plus
/// `oom_score_adj` thousandths of the memory it could have: at +1000 a task is the first choice
/// whatever its size. The hog is the largest task anyway once it has grown; the adjustment says
/// so from its first page, and raising one's own score needs no privilege. The guest's init is
/// never a candidate (the kernel will not kill PID 1 of the machine), and a container's PID 1
/// is a task like any other: the reason the hog is a child.
fn hog(c: &Counters, ceiling: u64) -> ! {
    // SAFETY: setpgid(0, 0) makes this process the leader of a new group; no pointers.
    unsafe { libc::setpgid(0, 0) };
    let _ = std::fs::write("/proc/self/oom_score_adj", "1000");
    while c.touched.load(Ordering::Relaxed) < ceiling {
        // SAFETY: a new private anonymous mapping with no address hint; checked below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                HOG_CHUNK,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            // Overcommit refused the mapping: the guest (or host) is out of memory already.
            sleep(Duration::from_millis(10));
            continue;
        }
        let p: *mut u8 = p.cast();
        for page in (0..HOG_CHUNK).step_by(4096) {
            // SAFETY: `page` is inside the mapping just made, which is writable. A write makes
            // the kernel back the page — the moment its memory is charged, and where the OOM
            // killer strikes when there is none.
            unsafe { p.add(page).write_volatile(1) };
        }
        c.touched.fetch_add(HOG_CHUNK as u64, Ordering::Relaxed);
    }
    loop {
        // SAFETY: pause has no arguments; it returns only when a signal is handled.
        unsafe { libc::pause() };
    }
}

fn sleep(d: Duration) {
    let ts = libc::timespec {
        tv_sec: d.as_secs() as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    };
    // SAFETY: a valid timespec; no remainder wanted.
    unsafe { libc::nanosleep(&ts, std::ptr::null_mut()) };
}

/// The guest kernel's count of OOM kills (`oom_kill` in /proc/vmstat, Linux 4.13).
fn guest_oom_kills() -> Option<u64> {
    std::fs::read_to_string("/proc/vmstat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse().ok())
}

fn signal_name(sig: i32) -> String {
    match sig {
        libc::SIGKILL => "SIGKILL".into(),
        libc::SIGSEGV => "SIGSEGV".into(),
        libc::SIGBUS => "SIGBUS".into(),
        libc::SIGTERM => "SIGTERM".into(),
        libc::SIGABRT => "SIGABRT".into(),
        other => format!("signal {other}"),
    }
}
