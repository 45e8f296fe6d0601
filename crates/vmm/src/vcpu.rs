//! Running a vCPU under a time limit: how a VMM stops a guest that never exits.
//!
//! `KVM_RUN` returns only when the guest exits. A guest spinning in `jmp $` never does, and the
//! thread inside `KVM_RUN` cannot be told to stop by any flag it is not looking at. What does get
//! a thread out of a blocking system call is a **signal**: KVM checks for pending signals before
//! every guest entry and returns `-EINTR` when one is there, and a signal sent while the guest
//! runs forces an exit to the host to deliver it.
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
//!                          └─► KVM_RUN returns EINTR ─► clear immediate_exit, *then* look at the
//!                              deadline: passed → stop the guest; not yet → enter it again
//! ```
//!
//! The order of the last two steps matters. Clearing the byte *after* looking at the clock would
//! lose a kick that lands in between: the deadline was not passed when looked at, the kick's 1 is
//! then overwritten by the 0, the one-shot timer never fires again, and the guest spins until the
//! lab's outer timeout. Cleared first, a late kick leaves its 1 in place and the very next
//! `KVM_RUN` comes straight back.
//!
//! The handler finds `immediate_exit` through a thread-local pointer, so several vCPU threads in
//! one process (the tests do that) each kick only their own vCPU. That pointer points into the
//! vCPU's `kvm_run` page, which is unmapped when the `VcpuFd` is dropped; [`TimedVcpu`] therefore
//! *borrows* the `VcpuFd` for as long as the pointer is set, and clears it when dropped, so the
//! borrow checker guarantees the handler never writes into a page that is gone.
//!
//! The limit counts the guest's time only: while the guest waits for the host
//! ([`isolab_kernels::hypercall::Call::WaitHost`]), the watchdog is paused, so an instance that
//! sleeps until the host stops it is not a runaway.

use isolab_host::clock::now_ns;
use kvm_ioctls::{VcpuExit, VcpuFd};
use std::cell::Cell;
use std::marker::PhantomData;
use std::ptr::NonNull;
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
        // SAFETY: the pointer is set by a live `KickTarget`, which borrows the VcpuFd whose
        // kvm_run page holds the byte, and is cleared before that borrow ends; a volatile byte
        // store is all the handler does, which is async-signal-safe.
        unsafe { flag.write_volatile(1) };
    }
}

/// The kick signal: the first real-time signal the C library leaves to programs. Real-time
/// signals carry no default meaning, so no other part of the lab (or of a test harness) uses it.
pub fn kick_signal() -> libc::c_int {
    libc::SIGRTMIN()
}

/// Errors of setting up the time limit.
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

/// The `immediate_exit` byte of one vCPU, published to this thread's kick handler for as long as
/// this value lives — which the lifetime `'v` keeps within the life of the vCPU's `kvm_run` page.
struct KickTarget<'v> {
    flag: NonNull<u8>,
    _vcpu: PhantomData<&'v VcpuFd>,
}

impl<'v> KickTarget<'v> {
    fn publish(vcpu: &mut VcpuFd) -> KickTarget<'v> {
        let flag = NonNull::from(&mut vcpu.get_kvm_run().immediate_exit);
        IMMEDIATE_EXIT.with(|p| p.set(flag.as_ptr()));
        KickTarget {
            flag,
            _vcpu: PhantomData,
        }
    }

    /// Take the kick back: KVM_RUN enters the guest again.
    fn clear(&self) {
        // SAFETY: the byte lies in the kvm_run page of a VcpuFd that outlives `'v`; the handler
        // writes it with the same volatile byte store, and a byte store cannot tear.
        unsafe { self.flag.as_ptr().write_volatile(0) };
    }
}

impl Drop for KickTarget<'_> {
    fn drop(&mut self) {
        IMMEDIATE_EXIT.with(|p| p.set(std::ptr::null_mut()));
    }
}

/// A one-shot POSIX timer that sends [`kick_signal`] to the thread that made it.
struct Timer(libc::timer_t);

impl Timer {
    fn for_this_thread() -> Result<Timer, WatchdogError> {
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
        Ok(Timer(timer))
    }

    /// Fire at `at_ns` on CLOCK_MONOTONIC (0 disarms).
    fn set(&self, at_ns: u64) -> Result<(), WatchdogError> {
        let at = at_ns.min(i64::MAX as u64);
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
        // SAFETY: `self.0` is a live timer; `spec` is valid.
        let rc = unsafe {
            libc::timer_settime(self.0, libc::TIMER_ABSTIME, &spec, std::ptr::null_mut())
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

impl Drop for Timer {
    fn drop(&mut self) {
        // Deleting the timer cancels a pending expiry.
        // SAFETY: deleting the timer this value created, once.
        unsafe { libc::timer_delete(self.0) };
    }
}

/// A vCPU run by this thread under a time limit: `KVM_RUN` with the watchdog around it.
///
/// Both VMMs (`vm`, `vm-linux`) drive their guest through this type, so the time limit and its
/// race are handled in one place. Fields drop in declaration order: the timer goes first (no more
/// kicks), then the kick target (the handler forgets the byte), then the borrow of the vCPU ends.
pub struct TimedVcpu<'v> {
    timer: Timer,
    kick: KickTarget<'v>,
    vcpu: &'v mut VcpuFd,
    limit: Duration,
    /// When the limit runs out (host monotonic ns), while armed.
    deadline_ns: u64,
    /// Time left, while paused.
    paused_left: Option<u64>,
}

impl<'v> TimedVcpu<'v> {
    /// Take charge of `vcpu`, which this thread will run, with a time limit of `limit`
    /// (not yet counting: see [`TimedVcpu::start`]).
    pub fn new(vcpu: &'v mut VcpuFd, limit: Duration) -> Result<TimedVcpu<'v>, WatchdogError> {
        install_handler()?;
        let timer = Timer::for_this_thread()?;
        let kick = KickTarget::publish(vcpu);
        Ok(TimedVcpu {
            timer,
            kick,
            vcpu,
            limit,
            deadline_ns: u64::MAX,
            paused_left: None,
        })
    }

    /// The limit.
    pub fn limit(&self) -> Duration {
        self.limit
    }

    /// The vCPU, for reading its registers.
    pub fn fd(&self) -> &VcpuFd {
        self.vcpu
    }

    /// What KVM says about the `KVM_EXIT_INTERNAL_ERROR` that just happened.
    pub fn internal_error(&mut self) -> String {
        crate::kvm::internal_error(self.vcpu)
    }

    /// Start counting the full limit from now.
    pub fn start(&mut self) -> Result<(), WatchdogError> {
        let limit = u64::try_from(self.limit.as_nanos()).unwrap_or(u64::MAX);
        self.arm(limit)
    }

    /// Enter the guest until it exits. A signal — the time limit's kick, or any other — comes
    /// back as [`VcpuExit::Intr`], with the kick already taken back: the caller then asks
    /// [`TimedVcpu::time_up`] whether to stop or to enter again.
    pub fn run(&mut self) -> Result<VcpuExit<'_>, kvm_ioctls::Error> {
        match self.vcpu.run() {
            Ok(exit) => Ok(exit),
            Err(e) if e.errno() == libc::EINTR => {
                // First take the kick back; the caller looks at the clock after (see the module
                // documentation for why in this order).
                self.kick.clear();
                Ok(VcpuExit::Intr)
            }
            Err(e) => Err(e),
        }
    }

    /// True once the guest has used up its time limit.
    pub fn time_up(&self) -> bool {
        now_ns() >= self.deadline_ns
    }

    /// Stop counting (the guest waits for the host).
    pub fn pause(&mut self) -> Result<(), WatchdogError> {
        self.paused_left = Some(self.deadline_ns.saturating_sub(now_ns()));
        self.deadline_ns = u64::MAX;
        self.timer.set(0)
    }

    /// Go on counting what was left at [`TimedVcpu::pause`].
    pub fn resume(&mut self) -> Result<(), WatchdogError> {
        match self.paused_left.take() {
            Some(left) => self.arm(left),
            None => Ok(()),
        }
    }

    fn arm(&mut self, left_ns: u64) -> Result<(), WatchdogError> {
        self.deadline_ns = now_ns().saturating_add(left_ns);
        // A zero it_value would disarm the timer: a deadline is at least 1 ns.
        self.timer.set(self.deadline_ns.max(1))
    }
}
