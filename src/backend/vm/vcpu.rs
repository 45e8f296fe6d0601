//! The guest's time limit: how a VMM stops a vCPU that never exits.
//!
//! `KVM_RUN` returns only when the guest exits. A guest spinning in `jmp $` never does, and the
//! thread inside `KVM_RUN` cannot be told to stop by any flag it is not looking at. What does get
//! a thread out of a blocking system call is a **signal**: KVM checks for pending signals before
//! every guest entry and returns `-EINTR` (`KVM_EXIT_INTR`) when one is there, and a signal sent
//! while the guest runs forces an exit to the host to deliver it.
//!
//! There is a race, though. If the signal arrives while the thread is in the VMM — serving a
//! hypercall, say — its handler runs there, and the next `KVM_RUN` enters the guest as if nothing
//! had happened; the guest may then spin forever. KVM closes the gap with `kvm_run.immediate_exit`
//! (`KVM_CAP_IMMEDIATE_EXIT`): the signal handler sets that byte, and `KVM_RUN` returns `-EINTR`
//! at once, without entering the guest, for as long as it is set. So:
//!
//! ```text
//!  POSIX timer (CLOCK_MONOTONIC, absolute deadline, aimed at this thread)
//!      └─► SIGRTMIN ─► handler: kvm_run.immediate_exit = 1
//!                          └─► KVM_RUN returns EINTR ─► the VMM sees the deadline passed
//! ```
//!
//! The handler finds `immediate_exit` through a thread-local pointer, so several vCPU threads in
//! one process (the tests do that) each kick only their own vCPU.
//!
//! The limit counts the guest's time only: while the guest waits for the host
//! ([`isolab_kernels::hypercall::Call::WaitHost`]), the watchdog is paused, so an instance that
//! sleeps until the host stops it is not a runaway.

use crate::measure::clock::now_ns;
use kvm_ioctls::VcpuFd;
use std::cell::Cell;
use std::sync::OnceLock;
use std::time::Duration;

thread_local! {
    /// The `immediate_exit` byte of the `kvm_run` page of the vCPU this thread runs, or null.
    /// Const-initialised and without a destructor: reading it is a plain thread-local load, which
    /// is safe inside a signal handler.
    static IMMEDIATE_EXIT: Cell<*mut u8> = const { Cell::new(std::ptr::null_mut()) };
}

/// The kick: runs on the vCPU thread when its timer fires.
extern "C" fn on_kick(_signal: libc::c_int) {
    let flag = IMMEDIATE_EXIT.with(Cell::get);
    if !flag.is_null() {
        // SAFETY: the pointer is set by a live Watchdog to a byte of its vCPU's kvm_run mapping
        // and cleared before that mapping can go away; a volatile byte store is all the handler
        // does, which is async-signal-safe.
        unsafe { flag.write_volatile(1) };
    }
}

/// The kick signal: the first real-time signal the C library leaves to programs. Real-time
/// signals carry no default meaning, so no other part of the lab (or of a test harness) uses it.
pub fn kick_signal() -> libc::c_int {
    libc::SIGRTMIN()
}

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum WatchdogError {
    /// The signal handler could not be installed.
    #[error("sigaction: {0}")]
    Handler(std::io::Error),
    /// The timer could not be made or set.
    #[error("{op}: {source}")]
    Timer {
        /// timer_create or timer_settime.
        op: &'static str,
        /// The error.
        source: std::io::Error,
    },
}

/// Install the kick handler for [`kick_signal`] once per process. `SA_RESTART`, so that a kick landing
/// in an ordinary system call of the VMM (a pipe write) restarts it; `KVM_RUN` returns `EINTR`
/// regardless — that is KVM's contract, not the C library's.
///
/// The lab calls it before it forks a VMM: the child then inherits the handler and a finished
/// once-cell, and can never find the cell half-initialised by a thread that does not exist in it.
pub fn install_handler() -> Result<(), WatchdogError> {
    static INSTALLED: OnceLock<Result<(), i32>> = OnceLock::new();
    let result = INSTALLED.get_or_init(|| {
        // SAFETY: a zeroed sigaction is a valid "no flags, empty mask" value to fill in.
        let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
        action.sa_sigaction = on_kick as extern "C" fn(libc::c_int) as libc::sighandler_t;
        action.sa_flags = libc::SA_RESTART;
        // SAFETY: the mask is a valid sigset_t inside `action`.
        unsafe { libc::sigemptyset(&mut action.sa_mask) };
        // SAFETY: installing a handler that only does an async-signal-safe store.
        let rc = unsafe { libc::sigaction(kick_signal(), &action, std::ptr::null_mut()) };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
        }
    });
    result.map_err(|errno| WatchdogError::Handler(std::io::Error::from_raw_os_error(errno)))
}

/// A time limit on the guest of one vCPU, on the thread that runs it.
pub struct Watchdog {
    timer: libc::timer_t,
    limit: Duration,
    /// When the limit runs out (host monotonic ns), while armed.
    deadline_ns: u64,
    /// Time left, while paused.
    paused_left: Option<u64>,
}

impl Watchdog {
    /// Make a disarmed watchdog for `vcpu`, which this thread will run.
    pub fn new(vcpu: &mut VcpuFd, limit: Duration) -> Result<Watchdog, WatchdogError> {
        install_handler()?;
        // A thread inherits its signal mask; one that blocked the kick would never be kicked.
        // SAFETY: a sigset_t on the stack, initialised by sigemptyset before use.
        let rc = unsafe {
            let mut kick: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut kick);
            libc::sigaddset(&mut kick, kick_signal());
            libc::pthread_sigmask(libc::SIG_UNBLOCK, &kick, std::ptr::null_mut())
        };
        if rc != 0 {
            return Err(WatchdogError::Handler(std::io::Error::from_raw_os_error(
                rc,
            )));
        }
        // SAFETY: a zeroed sigevent is valid to fill in.
        let mut event: libc::sigevent = unsafe { std::mem::zeroed() };
        // SIGEV_THREAD_ID: deliver the signal to this thread, the one inside KVM_RUN, not to any
        // thread of the process.
        event.sigev_notify = libc::SIGEV_THREAD_ID;
        event.sigev_signo = kick_signal();
        // SAFETY: gettid has no preconditions.
        event.sigev_notify_thread_id = unsafe { libc::gettid() };
        let mut timer: libc::timer_t = std::ptr::null_mut();
        // SAFETY: `event` and `timer` are valid for the call; the timer is deleted in Drop.
        if unsafe { libc::timer_create(libc::CLOCK_MONOTONIC, &mut event, &mut timer) } != 0 {
            return Err(WatchdogError::Timer {
                op: "timer_create",
                source: std::io::Error::last_os_error(),
            });
        }
        let flag = &mut vcpu.get_kvm_run().immediate_exit as *mut u8;
        IMMEDIATE_EXIT.with(|p| p.set(flag));
        Ok(Watchdog {
            timer,
            limit,
            deadline_ns: u64::MAX,
            paused_left: None,
        })
    }

    /// The limit.
    pub fn limit(&self) -> Duration {
        self.limit
    }

    /// Start counting the full limit from now.
    pub fn start(&mut self) -> Result<(), WatchdogError> {
        let limit = u64::try_from(self.limit.as_nanos()).unwrap_or(u64::MAX);
        self.arm(limit)
    }

    /// Stop counting (the guest waits for the host).
    pub fn pause(&mut self) -> Result<(), WatchdogError> {
        self.paused_left = Some(self.deadline_ns.saturating_sub(now_ns()));
        self.deadline_ns = u64::MAX;
        self.set(0)
    }

    /// Go on counting what was left at [`Watchdog::pause`].
    pub fn resume(&mut self) -> Result<(), WatchdogError> {
        match self.paused_left.take() {
            Some(left) => self.arm(left),
            None => Ok(()),
        }
    }

    /// True once the limit has run out.
    pub fn expired(&self) -> bool {
        now_ns() >= self.deadline_ns
    }

    fn arm(&mut self, left_ns: u64) -> Result<(), WatchdogError> {
        self.deadline_ns = now_ns().saturating_add(left_ns);
        // A zero it_value would disarm the timer: a deadline is at least 1 ns.
        self.set(self.deadline_ns.max(1))
    }

    /// Set the timer to fire at `at_ns` on CLOCK_MONOTONIC (0 disarms it).
    fn set(&self, at_ns: u64) -> Result<(), WatchdogError> {
        let at = if at_ns == u64::MAX {
            i64::MAX as u64
        } else {
            at_ns
        };
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: (at / 1_000_000_000) as libc::time_t,
                tv_nsec: (at % 1_000_000_000) as libc::c_long,
            },
        };
        // SAFETY: `self.timer` is a live timer; `spec` is valid.
        let rc = unsafe {
            libc::timer_settime(self.timer, libc::TIMER_ABSTIME, &spec, std::ptr::null_mut())
        };
        if rc != 0 {
            return Err(WatchdogError::Timer {
                op: "timer_settime",
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(())
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        // Deleting the timer cancels a pending expiry; then the handler has nothing to poke.
        // SAFETY: deleting the timer this watchdog created, once.
        unsafe { libc::timer_delete(self.timer) };
        IMMEDIATE_EXIT.with(|p| p.set(std::ptr::null_mut()));
    }
}
