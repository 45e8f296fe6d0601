//! The launcher: one thread per lab that starts every container, so that what is the same for
//! all of them is done once.
//!
//! Two pieces of a container's start cost the same every time and are expensive here:
//!
//! * **its root**. Building a root and detaching the host's mounts from under it costs ~0.2 ms,
//!   most of it waiting for an RCU grace period ([`crate::rootfs`]). The launcher thread does
//!   it once: it gives itself a private mount namespace (`unshare(CLONE_FS | CLONE_NEWNS)`: a
//!   thread may have its own namespace as long as it does not share its file-system context
//!   with the other threads), builds the root there, pivots into it and makes it read-only.
//!   That namespace is the **template**. A container cloned by this thread starts in it, and
//!   its own `unshare(CLONE_NEWNS)` copies the template — five mounts instead of the host's
//!   dozens — with no old root to detach.
//! * **its seccomp filter**. Loading Docker's profile makes the kernel check and JIT-compile
//!   ~1400 BPF instructions: ~0.3 ms here, on every start. But a filter belongs to a thread and
//!   is inherited by every process that thread creates. So the launcher loads the profile once,
//!   with the few calls a container needs to build itself (mount, unshare, sethostname, clone)
//!   still allowed ([`crate::seccomp::Profile::split`]), and each container, just before it
//!   execs, adds a filter of a few instructions that takes those calls back. The kernel runs
//!   every filter and keeps the strictest answer: the workload gets exactly Docker's profile.
//!
//! The rest of the lab is untouched: the filter and the namespace are the launcher thread's
//! alone (a thread's seccomp filter does not spread to its siblings unless asked with TSYNC),
//! and the thread does nothing but clone containers. A container's parent is this thread, so it
//! dies with the lab (`PR_SET_PDEATHSIG` fires when the parent *thread* ends), and the lab's
//! main thread can still wait for it: threads of one process may wait for each other's children.

use crate::rootfs::RootfsPlan;
use crate::seccomp::Filter;
use isolab_spawn::Stack;
use nix::errno::Errno;
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::JoinHandle;

/// The launcher thread could not be started: the step that failed, and why.
#[derive(Debug, thiserror::Error)]
#[error("{step}: {} (errno {})", errno.desc(), *errno as i32)]
pub struct LaunchError {
    /// The step.
    pub step: String,
    /// The error.
    pub errno: Errno,
}

/// Work for the launcher thread; it lends the job the stack its children start on.
type Job = Box<dyn FnOnce(&mut Stack) + Send>;

/// A running launcher thread with its template.
pub struct Launcher {
    jobs: Option<Sender<Job>>,
    thread: Option<JoinHandle<()>>,
    plan: RootfsPlan,
    /// Nanoseconds it took to build the template and load the filter.
    pub setup_ns: u64,
}

impl std::fmt::Debug for Launcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Launcher")
            .field("setup_ns", &self.setup_ns)
            .finish()
    }
}

impl Launcher {
    /// Start the thread: build the template root of `plan` and load `outer` (the inherited half
    /// of the seccomp profile), if any. Returns the step that failed.
    pub fn start(plan: &RootfsPlan, outer: Option<Filter>) -> Result<Launcher, (String, Errno)> {
        let started = isolab_host::clock::now_ns();
        let (jobs, queue) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::channel();
        let template = plan.clone();
        let thread = std::thread::Builder::new()
            .name("isolab-launcher".into())
            .spawn(move || {
                let prepared = prepare(&template, outer.as_ref());
                let ok = prepared.is_ok();
                let _ = ready_tx.send(prepared);
                if ok {
                    serve(queue);
                }
            })
            .map_err(|e| {
                (
                    "start the launcher thread".to_string(),
                    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EAGAIN)),
                )
            })?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Launcher {
                jobs: Some(jobs),
                thread: Some(thread),
                plan: plan.clone(),
                setup_ns: isolab_host::clock::now_ns() - started,
            }),
            Ok(Err((step, errno))) => {
                let _ = thread.join();
                Err((step.to_string(), errno))
            }
            Err(_) => {
                let _ = thread.join();
                Err(("the launcher thread".to_string(), Errno::EIO))
            }
        }
    }

    /// True when containers of `plan` can be started from this launcher's template.
    pub fn serves(&self, plan: &RootfsPlan) -> bool {
        self.plan.same_root(plan)
    }

    /// Run `job` on the launcher thread and wait for its result. The job gets the thread's
    /// one child stack (see [`serve`]).
    pub fn run<R: Send + 'static>(
        &self,
        job: impl FnOnce(&mut Stack) -> R + Send + 'static,
    ) -> Option<R> {
        let (tx, rx) = mpsc::sync_channel(1);
        let job: Job = Box::new(move |stack| {
            let _ = tx.send(job(stack));
        });
        self.jobs.as_ref()?.send(job).ok()?;
        rx.recv().ok()
    }
}

impl Drop for Launcher {
    fn drop(&mut self) {
        // Closing the queue ends the thread's loop; its template namespace goes with it.
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// **Launcher thread.** Its own mount namespace, the template root, the outer filter.
fn prepare(plan: &RootfsPlan, outer: Option<&Filter>) -> Result<(), (&'static str, Errno)> {
    // SAFETY: unshare with flags only; it affects this thread alone.
    if unsafe { libc::unshare(libc::CLONE_FS | libc::CLONE_NEWNS) } != 0 {
        return Err(("unshare the launcher's mount namespace", Errno::last()));
    }
    plan.populate()?;
    plan.pivot()?;
    RootfsPlan::seal()?;
    if let Some(filter) = outer {
        // The lab runs as root here (a launcher is only made for root), and CAP_SYS_ADMIN lets
        // a thread load a filter without no_new_privs; each container sets it before exec.
        filter.load().map_err(|e| ("load the seccomp profile", e))?;
    }
    Ok(())
}

/// **Launcher thread.** Run jobs until the lab drops its launcher.
///
/// One stack serves every container: a child runs on it only until it execs, and the thread
/// sleeps meanwhile (`CLONE_VFORK`), so the next clone finds it free. Allocating 256 KiB per
/// start would map fresh memory and unmap it again — and unmapping makes every CPU flush its TLB.
fn serve(queue: Receiver<Job>) {
    // Without a stack there is no launcher: the queue closes, and starts say the thread stopped.
    let Ok(mut stack) = Stack::new() else {
        return;
    };
    for job in queue {
        job(&mut stack);
    }
}
