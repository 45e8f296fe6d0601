//! The skeleton both of isolab's VMMs share: how a VMM process is launched, how it fails, what
//! it reports about a guest that stopped, and what the instance cost.
//!
//! `vm` (a bare guest) and `vm-linux` (a Linux kernel) differ in what they load and which exits
//! they serve. Everything else is here, once:
//!
//! ```text
//!  lab                                   VMM child (forked)                      vmm.rs
//!  prepare: supported CPUID, kick handler                                         prepare
//!  cgroup ─ pipes ─ fork ──────────────► born in (v2) or join (v1) the cgroup,     launch
//!                                        fds 0..=4, die with the lab
//!                                        machine-specific: build, load, run        (backend)
//!                                        failure → one `error` line              VmmError
//!                                        cost: guest RAM, VMM USS, exits         report_cost
//!  Instance ◄── marker/info lines ────── _exit
//! ```

use super::exits::{ExitCounts, Fault};
use super::hypercalls::Host;
use super::{cpu, hypercalls, kvm, linux, loader, memory, vcpu};
use crate::backend::child::{self, ChildFds, Reporter, CONTROL_FD, REPORT_FD};
use crate::backend::instance::{Instance, Parts, Timeline};
use crate::backend::spawn::clone_fork;
use crate::backend::{BackendError, Limits, Spec};
use crate::cgroup::Placement;
use crate::host::KvmKind;
use crate::lab::{Lab, Scratch};
use crate::measure::memory::ProcessMemory;
use crate::results::info;
use kvm_ioctls::VcpuFd;
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::unistd::{fork, ForkResult};
use nix::unistd::{pipe2, Pid};
use std::fmt;
use std::io::Read;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::Duration;
use vm_memory::GuestMemoryMmap;

/// The registers the VMM reports when a guest stops where it should not: where it was and what
/// it was touching.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Registers {
    /// The instruction pointer. For a fault, the faulting instruction.
    pub rip: u64,
    /// The stack pointer.
    pub rsp: u64,
    /// The flags.
    pub rflags: u64,
    /// The address of the last page fault.
    pub cr2: u64,
}

impl Registers {
    /// The vCPU's registers now, if KVM will say.
    pub fn of(vcpu: &VcpuFd) -> Option<Registers> {
        let regs = vcpu.get_regs().ok()?;
        let sregs = vcpu.get_sregs().ok()?;
        Some(Registers {
            rip: regs.rip,
            rsp: regs.rsp,
            rflags: regs.rflags,
            cr2: sregs.cr2,
        })
    }
}

impl fmt::Display for Registers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rip={:#x} rsp={:#x} rflags={:#x} cr2={:#x}",
            self.rip, self.rsp, self.rflags, self.cr2
        )
    }
}

/// Where a guest was when it stopped, as far as the VMM can know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Place {
    /// The registers, and the function RIP lies in when the kernel's symbols are known.
    At {
        /// The registers.
        regs: Registers,
        /// `function+0xoffset`, for a Linux guest whose symbols the lab found.
        symbol: Option<String>,
    },
    /// KVM threw the state away before the VMM could look, and why.
    Lost(&'static str),
    /// KVM would not say.
    Unknown,
}

impl Place {
    /// Where the vCPU is now — except after a triple fault on AMD, where that is not where the
    /// guest was (see [`super::idt`]): KVM's SVM code resets the vCPU after a shutdown.
    pub fn after(vcpu: &VcpuFd, fault: Option<&Fault>) -> Place {
        if fault == Some(&Fault::TripleFault) && KvmKind::detect() == KvmKind::HardwareAmdV {
            return Place::Lost(
                "KVM on AMD resets the vCPU after a triple fault, so its registers are not the fault's",
            );
        }
        Registers::of(vcpu).map_or(Place::Unknown, |regs| Place::At { regs, symbol: None })
    }
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Place::At {
                regs,
                symbol: Some(symbol),
            } => write!(f, "at {symbol} ({regs})"),
            Place::At { regs, symbol: None } => write!(f, "at {regs}"),
            Place::Lost(why) => write!(f, "(registers lost: {why})"),
            Place::Unknown => f.write_str("(registers unreadable)"),
        }
    }
}

/// Errors of either VMM. Each maps to the `step=` of the instance's error line.
#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    /// KVM is missing, unusable or refused an ioctl on /dev/kvm.
    #[error(transparent)]
    Kvm(#[from] kvm::KvmError),
    /// An ioctl on the VM failed.
    #[error("{op}: {source}")]
    Ioctl {
        /// The ioctl.
        op: &'static str,
        /// Why.
        source: kvm_ioctls::Error,
    },
    /// Guest RAM could not be made or written.
    #[error(transparent)]
    Memory(#[from] memory::MemoryError),
    /// The vCPU's state could not be set.
    #[error(transparent)]
    Cpu(#[from] cpu::CpuError),
    /// The bare guest program could not be loaded.
    #[error(transparent)]
    Load(#[from] loader::LoadError),
    /// The Linux kernel could not be loaded.
    #[error(transparent)]
    Boot(#[from] linux::boot::BootError),
    /// The time limit could not be set up.
    #[error(transparent)]
    Watchdog(#[from] vcpu::WatchdogError),
    /// A hypercall ended the run (the kernel failed, the guest panicked).
    #[error(transparent)]
    Hypercall(#[from] hypercalls::HypercallError),
    /// Host I/O of the VMM failed.
    #[error("{what}: {source}")]
    Io {
        /// What the VMM was doing.
        what: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// `KVM_RUN` itself failed.
    #[error("KVM_RUN: {0}")]
    Run(kvm_ioctls::Error),
    /// The guest stopped where it cannot go on.
    #[error("{0}")]
    GuestFault(Box<GuestFault>),
    /// The guest ran past its time limit.
    #[error("the guest ran for {limit:?} without finishing and was stopped {place}{}", semicolon(.context))]
    GuestTimeout {
        /// The limit.
        limit: Duration,
        /// Where it was.
        place: Place,
        /// How far the guest got.
        context: String,
    },
    /// The guest stopped by itself, but before its workload reported done.
    #[error("{what}{}", semicolon(.context))]
    Stopped {
        /// How it stopped.
        what: String,
        /// How far it got.
        context: String,
    },
}

/// A guest that stopped where it cannot go on: what happened, and where.
#[derive(Debug)]
pub struct GuestFault {
    /// What happened.
    pub fault: Fault,
    /// What KVM added.
    pub detail: String,
    /// Where the guest was.
    pub place: Place,
    /// How far the guest got, in its own words (a Linux guest's last console line).
    pub context: String,
}

impl fmt::Display for GuestFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}{} {}{}",
            self.fault,
            self.detail,
            self.place,
            semicolon(&self.context)
        )
    }
}

impl VmmError {
    /// The guest stopped on `fault` at `place`.
    pub fn fault(fault: Fault, detail: String, place: Place) -> VmmError {
        VmmError::GuestFault(Box::new(GuestFault {
            fault,
            detail,
            place,
            context: String::new(),
        }))
    }
}

fn semicolon(c: &str) -> String {
    if c.is_empty() {
        String::new()
    } else {
        format!("; {c}")
    }
}

impl VmmError {
    /// The guest used up its time limit on `vcpu`.
    pub fn timeout(vcpu: &super::vcpu::TimedVcpu<'_>) -> VmmError {
        VmmError::GuestTimeout {
            limit: vcpu.limit(),
            place: Place::after(vcpu.fd(), None),
            context: String::new(),
        }
    }

    /// The place of a guest-stopped error, to annotate (a Linux guest adds the symbol).
    pub fn place_mut(&mut self) -> Option<&mut Place> {
        match self {
            VmmError::GuestFault(f) => Some(&mut f.place),
            VmmError::GuestTimeout { place, .. } => Some(place),
            _ => None,
        }
    }

    /// The context of a guest-stopped error, to fill in (a Linux guest's last words).
    pub fn context_mut(&mut self) -> Option<&mut String> {
        match self {
            VmmError::GuestFault(f) => Some(&mut f.context),
            VmmError::GuestTimeout { context, .. } | VmmError::Stopped { context, .. } => {
                Some(context)
            }
            _ => None,
        }
    }

    /// The `step=` and `msg=` of the error line. A kernel's own failure reads exactly as the
    /// Linux workload reports it (`step=<kernel> msg=<error>`).
    pub fn step_and_message(&self) -> (String, String) {
        let step = match self {
            VmmError::Kvm(_) | VmmError::Ioctl { .. } => "kvm",
            VmmError::Memory(_) => "guest memory",
            VmmError::Cpu(_) => "vcpu setup",
            VmmError::Load(_) => "load guest",
            VmmError::Boot(_) => "load kernel",
            VmmError::Watchdog(_) => "time limit",
            VmmError::Io { .. } => "vmm",
            VmmError::Run(_) => "KVM_RUN",
            VmmError::GuestFault(_) => "guest fault",
            VmmError::GuestTimeout { .. } => "guest timeout",
            VmmError::Stopped { .. } => "guest stopped",
            VmmError::Hypercall(hypercalls::HypercallError::KernelFailed { kernel, error }) => {
                return (kernel.to_string(), format!("{error:?}"))
            }
            VmmError::Hypercall(hypercalls::HypercallError::Panic(_)) => "guest panic",
            VmmError::Hypercall(_) => "hypercall",
        };
        (step.to_string(), self.to_string())
    }
}

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
                timeout: lab.timeout,
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

/// Report what this instance cost as `info` lines: guest RAM configured and touched, the VMM's
/// memory and its overhead over the guest's, KVM's kind, exits by cause.
///
/// The VMM's USS (unique set size, from `/proc/self/smaps_rollup`) contains the guest RAM it
/// touched — guest RAM *is* VMM memory — so the VMM's own overhead is USS minus that. Its RSS is
/// much larger: the VMM is a copy-on-write fork of the lab and shares every page it has not
/// written with it; those pages cost nothing more per instance, which PSS shows.
pub fn report_cost(host: &Host, mem: &GuestMemoryMmap, ram_bytes: u64, exits: &ExitCounts) {
    host.info(info::GUEST_RAM_BYTES, ram_bytes);
    let touched = memory::resident_bytes(mem).unwrap_or(0);
    let vmm = ProcessMemory::of([std::process::id() as i32]);
    host.info(info::GUEST_TOUCHED_BYTES, touched);
    host.info(info::VMM_RSS_BYTES, vmm.rss_bytes);
    host.info(info::VMM_PSS_BYTES, vmm.pss_bytes);
    host.info(info::VMM_USS_BYTES, vmm.uss_bytes);
    host.info(
        info::VMM_OVERHEAD_BYTES,
        vmm.uss_bytes.saturating_sub(touched),
    );
    for (key, value) in crate::host::kvm_facts() {
        host.info(key, value);
    }
    host.info(&format!("{}total", info::EXITS_PREFIX), exits.total());
    for (cause, n) in exits.iter() {
        host.info(&format!("{}{cause}", info::EXITS_PREFIX), n);
    }
}
