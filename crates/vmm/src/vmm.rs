//! The skeleton both of isolab's VMMs share: how a VMM fails, what it reports about a guest
//! that stopped, and what the instance cost. (How a VMM process is launched for the lab is the
//! backends' `vmm_launch`.)
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

use crate::exits::{ExitCounts, Fault};
use crate::hypercalls::Host;
use crate::{cpu, hypercalls, kvm, linux, loader, memory, vcpu};
use isolab_host::facts::KvmKind;
use isolab_host::memory::ProcessMemory;
use isolab_results::info;
use kvm_ioctls::VcpuFd;
use std::fmt;
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
    /// guest was (see [`crate::idt`]): KVM's SVM code resets the vCPU after a shutdown.
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
    /// A snapshot could not be taken, or is refused.
    #[error(transparent)]
    Snapshot(#[from] crate::snapshot::SnapshotError),
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
    pub fn timeout(vcpu: &crate::vcpu::TimedVcpu<'_>) -> VmmError {
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
            VmmError::Snapshot(_) => "snapshot",
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

/// Finish the I/O exit a vCPU rests on, without running the guest: KVM completes an exit only
/// on the next `KVM_RUN` — some implementations have moved RIP past an `out` already (an
/// emulated `out` is written back before the exit: PVM), others move it then
/// (`complete_userspace_io`: VT-x, AMD-V) — and its API asks a VMM to finish the exit before
/// it saves state, with a `KVM_RUN` that `immediate_exit` stops before any guest code runs.
/// After it, RIP is past the `out` on every kind.
pub fn finish_pending_exit(vcpu: &mut VcpuFd) -> Result<(), VmmError> {
    vcpu.set_kvm_immediate_exit(1);
    let finished = vcpu.run().map(|_| ());
    vcpu.set_kvm_immediate_exit(0);
    match finished {
        Err(e) if e.errno() == libc::EINTR => Ok(()),
        Err(e) => Err(VmmError::Run(e)),
        Ok(()) => Err(VmmError::Stopped {
            what: "KVM entered the guest despite immediate_exit".into(),
            context: String::new(),
        }),
    }
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
    for (key, value) in isolab_results::info::kvm_facts() {
        host.info(key, value);
    }
    host.info(&format!("{}total", info::EXITS_PREFIX), exits.total());
    for (cause, n) in exits.iter() {
        host.info(&format!("{}{cause}", info::EXITS_PREFIX), n);
    }
}
