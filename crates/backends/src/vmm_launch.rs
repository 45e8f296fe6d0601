//! One instance = one VMM process: how `vm` and `vm-linux` start isolab's VMM
//! ([`isolab_vmm`]) for the lab.
//!
//! ```text
//!  lab                                   VMM child (forked)
//!  prepare: supported CPUID, kick handler
//!  cgroup ─ pipes ─ fork ──────────────► born in (v2) or join (v1) the cgroup,
//!                                        fds 0..=4, die with the lab
//!                                        machine-specific: build, load, run
//!                                        failure → one `error` line (VmmError)
//!                                        cost: guest RAM, VMM USS, exits
//!  Instance ◄── marker/info lines ────── _exit
//! ```

use crate::instance::{Instance, Parts, Timeline};
use crate::lab::Lab;
use crate::provide::Scratch;
use crate::{BackendError, Limits, Spec};
use isolab_resources::cgroup::Placement;
use isolab_spawn::child;
use isolab_spawn::child::{ChildFds, Reporter, CONTROL_FD, REPORT_FD};
use isolab_spawn::clone_fork;
use isolab_vmm::hypercalls::Host;
use isolab_vmm::{kvm, vcpu, VmmError};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::unistd::{fork, ForkResult};
use nix::unistd::{pipe2, Pid};
use std::io::Read;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};

/// What every VM start does first, in the lab: ask KVM for its supported CPUID and install the
/// time limit's signal handler, once per lab — so every VMM forked from now on inherits both
/// instead of paying for them.
pub fn prepare(backend: &str) -> Result<(), BackendError> {
    kvm::cache_supported_cpuid().map_err(|e| BackendError::Unavailable {
        backend: backend.into(),
        reason: e.to_string(),
    })?;
    vcpu::install_handler().map_err(|e| BackendError::Instance {
        step: "time limit".into(),
        detail: e.to_string(),
    })
}

/// Launch one VMM process: the instance's cgroup, the pipes, `fork`; in the child, `vmm` runs
/// with a [`Host`] on the pipes and its error, if any, becomes the instance's error line.
///
/// The VMM is a real copy-on-write `fork` of the lab, not the cheap `spawn_shared` of the other
/// backends: it is not a program to `exec` but code of `lab` itself that allocates and runs for
/// the whole life of the instance.
///
/// How it gets into its cgroup. Only glibc's `fork()` makes a copy of a multi-threaded lab that
/// may allocate (it takes malloc's locks around the copy), and `fork()` cannot be asked to use
/// `clone3(CLONE_INTO_CGROUP)`. So the child must move itself afterwards — on v1 by writing `0`
/// to `tasks`, which moves one thread and takes no global lock. On v2 the only way is
/// `cgroup.procs`, whose writer takes the global `cgroup_threadgroup_rwsem` and waits for an RCU
/// grace period (measured on the emulated cgroup v2 machine: ~14 ms, against ~2 ms for a
/// `clone3` birth). So on v2 the forked child is only a go-between: single-threaded, it may use a
/// raw `clone3(CLONE_INTO_CGROUP | CLONE_PARENT)` as safely as `fork()`, and makes the VMM
/// *inside* the cgroup, as a child of the lab; it hands the VMM's PID over and exits. Two
/// copy-on-write copies of the lab's page tables instead of one cost far less than the stall.
pub fn launch(
    lab: &Lab,
    backend: &str,
    name: &str,
    spec: &Spec,
    limits: &Limits,
    timeline: Timeline,
    vmm: impl FnOnce(&mut Host) -> Result<(), VmmError>,
) -> Result<Instance, BackendError> {
    launch_keeping(
        lab,
        backend,
        name,
        spec,
        limits,
        timeline,
        Vec::new(),
        |host, _| vmm(host),
    )
}

/// [`launch`], with more descriptors the VMM keeps (a Linux guest's tap): the child closes every
/// descriptor of the lab it did not install, so these are installed too, and `vmm` is told the
/// numbers they have in the VMM, in the order given.
#[allow(clippy::too_many_arguments)]
pub fn launch_keeping(
    lab: &Lab,
    backend: &str,
    name: &str,
    spec: &Spec,
    limits: &Limits,
    mut timeline: Timeline,
    keep: Vec<OwnedFd>,
    vmm: impl FnOnce(&mut Host, &[RawFd]) -> Result<(), VmmError>,
) -> Result<Instance, BackendError> {
    let cgroup = lab.instance_cgroup(name, limits)?;
    let placement = Placement::of(cgroup.as_ref())?;
    // v2 with clone3: the go-between of the function's documentation, which tells the VMM's PID
    // (or minus the errno of its clone3) on this pipe.
    let handover = placement
        .birth_dir()
        .is_some()
        .then(|| pipe2(OFlag::O_CLOEXEC))
        .transpose()
        .map_err(BackendError::sys("pipe"))?;
    if cgroup.is_some() {
        timeline.mark("cgroup");
    }
    // The bare guest's `io` goes through the VMM into a file of the instance's own directory.
    let scratch = lab.scratch_if_io(spec, name, None)?;
    let scratch_dir = scratch
        .as_ref()
        .map_or_else(|| lab.scratch_dir(), |s| s.path().to_path_buf());
    let (ends, mut fds) = child::pipes(None)?;
    let kept: Vec<RawFd> = keep
        .into_iter()
        .map(|fd| fds.keep(fd))
        .collect::<Result<_, _>>()?;
    // SAFETY: fork in a process that may have other threads: the child has only this one,
    // and a lock another thread held at the fork stays locked in the child. glibc's fork
    // re-initialises malloc's locks in the child, so the VMM may allocate; it takes no other
    // lock of the lab's (no stdout, no environment), and it ends in `_exit`, never returning
    // into the lab's code.
    match unsafe { fork() }.map_err(BackendError::sys("fork"))? {
        ForkResult::Child => place_vmm(&placement, handover.as_ref().map(|(_, w)| w), &fds, || {
            // SAFETY: `install` put the report and control pipes at these numbers; they stay
            // open until this process exits.
            let (report, control) = unsafe {
                (
                    BorrowedFd::borrow_raw(REPORT_FD),
                    BorrowedFd::borrow_raw(CONTROL_FD),
                )
            };
            let mut host = Host::new(report, control, scratch_dir);
            match vmm(&mut host, &kept) {
                Ok(()) => 0,
                Err(e) => {
                    let (step, msg) = e.step_and_message();
                    host.error(&step, &msg);
                    1
                }
            }
        }),
        ForkResult::Parent { child } => {
            drop(fds);
            drop(placement);
            let main = match handover {
                None => child,
                Some((read, write)) => {
                    drop(write);
                    let told = read_handover(read);
                    // The go-between has exited (or is about to): reap it.
                    let _ = nix::sys::wait::waitpid(child, None);
                    told?
                }
            };
            Ok(Instance::new(Parts {
                backend: backend.into(),
                spec: *spec,
                main,
                helpers: Vec::new(),
                cgroup,
                ends,
                timeline,
                timeout: lab.settings.timeout,
                cleanup: scratch.map(Scratch::removal).into_iter().collect(),
            }))
        }
    }
}

/// The VMM's PID as the go-between told it.
fn read_handover(read: OwnedFd) -> Result<Pid, BackendError> {
    let mut buf = [0u8; 4];
    std::fs::File::from(read)
        .read_exact(&mut buf)
        .map_err(BackendError::io("read the VMM's PID from its go-between"))?;
    match i32::from_ne_bytes(buf) {
        pid if pid > 0 => Ok(Pid::from_raw(pid)),
        errno => Err(BackendError::sys("clone3 the VMM into its cgroup")(
            Errno::from_raw(-errno),
        )),
    }
}

/// **Child side**, in a fork of the lab. With `handover` (v2): the go-between, which makes the
/// VMM born in its cgroup, tells its PID and exits. Otherwise this process is the VMM.
fn place_vmm(
    placement: &Placement,
    handover: Option<&OwnedFd>,
    fds: &ChildFds,
    vmm: impl FnOnce() -> i32,
) -> ! {
    let Some(tell) = handover else {
        vmm_child(placement, fds, vmm)
    };
    // SAFETY: this process is a fork of the lab and has a single thread, so no lock is held by
    // anyone else and a raw clone3 copies nothing half-done: it is as safe as fork here.
    let told = match unsafe { clone_fork(libc::CLONE_PARENT, placement, fds.reporter()) } {
        // The VMM, already in its cgroup (or, on a kernel without clone3, joined by clone_fork).
        Ok(None) => {
            // SAFETY: closing the inherited write end of the go-between's pipe.
            unsafe { libc::close(tell.as_raw_fd()) };
            vmm_child(&Placement::none(), fds, vmm)
        }
        Ok(Some(pid)) => pid.as_raw(),
        Err(e) => -(e as i32),
    };
    // SAFETY: writing a 4-byte buffer to the pipe's write end, then ending this process.
    unsafe {
        libc::write(tell.as_raw_fd(), told.to_ne_bytes().as_ptr().cast(), 4);
    }
    child::exit_now(0)
}

/// **Child side**, in a VMM process just forked from the lab: join the instance's cgroup first
/// (so everything the VMM allocates, KVM's kernel memory included, is charged to the instance),
/// take fds 0..=4, stamp `fork`, arrange to die with the lab, run `vmm` and `_exit` with its
/// status. A panic must not unwind into the lab's code that called fork: it is caught and
/// becomes status 101.
fn vmm_child(join: &Placement, fds: &ChildFds, vmm: impl FnOnce() -> i32) -> ! {
    if let Err(e) = join.join() {
        fds.reporter().fail("join cgroup", e);
    }
    // The VMM shares no terminal with the lab (see `child::new_session`); born by clone_fork
    // on v2, it leads its own session already.
    if let Err(e) = child::new_session() {
        fds.reporter().fail("setsid", e);
    }
    if let Err(e) = fds.install() {
        fds.reporter().fail("install fds", e);
    }
    let report = Reporter::INSTALLED;
    report.phase("fork");
    if let Err(e) = child::die_with_parent() {
        report.fail("prctl", e);
    }
    // AssertUnwindSafe: after a panic the process exits at once, so no half-updated state is
    // ever observed.
    let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(vmm)).unwrap_or(101);
    child::exit_now(code)
}
