//! One microVM: build it, run its vCPU until the guest finishes, report what it cost.
//!
//! ```text
//!  Machine::boot                                            phase stamped when done
//!    open /dev/kvm, check API version and capabilities     kvm_open
//!    KVM_CREATE_VM                                          vm_created
//!    mmap guest RAM (MAP_NORESERVE), KVM_SET_USER_MEMORY_REGION   memory_mapped
//!    KVM_CREATE_VCPU, mmap its kvm_run page                 vcpu_created
//!    load the ELF, write page tables, GDT, boot page;
//!    KVM_SET_CPUID2, KVM_SET_SREGS, KVM_SET_REGS            guest_loaded
//!  Machine::run
//!    loop { KVM_RUN; handle_exit; serve the hypercall }     first_entry, then the guest's
//!                                                           ready / start / done markers
//! ```
//!
//! This type has no idea it runs in a child process of the lab: give it a [`Host`] (pipes and a
//! scratch directory) and it runs in any thread — which is how the unit tests drive it.

use super::exits::{handle_exit, ExitCounts, Fault, Outcome};
use super::hypercalls::{self, Flow, Host};
use super::loader::{self, Guest};
use super::memory::{self, ARENA_BASE};
use super::vcpu::Watchdog;
use super::{cpu, kvm, VmError};
use crate::host::KvmKind;
use crate::measure::memory::ProcessMemory;
use crate::results::info;
use isolab_kernels::hypercall::{BootInfo, Call};
use isolab_kernels::Spec;
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use std::fmt;
use std::time::Duration;
use vm_memory::GuestMemoryMmap;

/// How to build a machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MachineConfig {
    /// Guest RAM in bytes (a multiple of 2 MiB; see [`memory::check_size`]).
    pub ram_bytes: u64,
    /// How long the guest may run (time it spends waiting for the host not counted).
    pub time_limit: Duration,
}

/// The registers the VMM reports when a guest dies: where it was and what it was touching.
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

impl fmt::Display for Registers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rip={:#x} rsp={:#x} rflags={:#x} cr2={:#x}",
            self.rip, self.rsp, self.rflags, self.cr2
        )
    }
}

/// A built microVM with one vCPU.
///
/// The fields are dropped in the order they are declared, and that order matters: the vCPU and
/// the VM must be gone before the memory KVM maps for them is unmapped.
pub struct Machine {
    vcpu: VcpuFd,
    _vm: VmFd,
    _kvm: Kvm,
    mem: GuestMemoryMmap,
    config: MachineConfig,
    spec: Spec,
    exits: ExitCounts,
}

impl Machine {
    /// Build the machine and load `guest` to run `spec`, stamping each phase on `host`.
    pub fn boot(
        config: &MachineConfig,
        guest: &Guest,
        spec: &Spec,
        host: &Host,
    ) -> Result<Machine, VmError> {
        let kvm = kvm::open()?;
        host.phase("kvm_open");

        let vm = kvm.create_vm().map_err(|source| kvm::KvmError::Ioctl {
            op: "KVM_CREATE_VM",
            source,
        })?;
        host.phase("vm_created");

        let mem = memory::create(config.ram_bytes)?;
        memory::register(&vm, &mem)?;
        host.phase("memory_mapped");

        let vcpu = vm.create_vcpu(0).map_err(|source| kvm::KvmError::Ioctl {
            op: "KVM_CREATE_VCPU",
            source,
        })?;
        host.phase("vcpu_created");

        let loaded = loader::load(&mem, guest)?;
        let cr3 = memory::write_page_tables(&mem, config.ram_bytes)?;
        memory::write_descriptor_tables(&mem)?;
        hypercalls::write_boot_info(
            &mem,
            &BootInfo {
                spec: *spec,
                arena_addr: ARENA_BASE,
                arena_len: config.ram_bytes - ARENA_BASE,
            },
        )?;
        cpu::configure(&vcpu, kvm::supported_cpuid(&kvm)?, cr3, loaded.entry)?;
        host.phase("guest_loaded");

        Ok(Machine {
            vcpu,
            _vm: vm,
            _kvm: kvm,
            mem,
            config: *config,
            spec: *spec,
            exits: ExitCounts::default(),
        })
    }

    /// Run the guest until it exits ([`Call::Exit`]), fails, faults or runs out of time.
    pub fn run(&mut self, host: &mut Host) -> Result<(), VmError> {
        let mut watchdog = Watchdog::new(&mut self.vcpu, self.config.time_limit)?;
        host.phase("first_entry");
        watchdog.start()?;
        loop {
            let outcome = match self.vcpu.run() {
                Ok(exit) => handle_exit(&exit),
                Err(e) if e.errno() == libc::EINTR => Outcome::Interrupted,
                Err(e) => return Err(VmError::Run(e)),
            };
            self.exits.count(&outcome);
            match outcome {
                Outcome::Hypercall(call) => {
                    // Waiting for the host is not the guest's time.
                    let waits = call == Call::WaitHost;
                    if waits {
                        watchdog.pause()?;
                    }
                    let flow = hypercalls::serve(
                        call,
                        &self.mem,
                        host,
                        &self.spec,
                        self.config.ram_bytes,
                    )?;
                    if waits {
                        watchdog.resume()?;
                    }
                    if flow == Flow::Exit {
                        return Ok(());
                    }
                }
                Outcome::Interrupted => {
                    if watchdog.expired() {
                        return Err(VmError::GuestTimeout {
                            limit: watchdog.limit(),
                            regs: self.registers(),
                        });
                    }
                    // Some other signal (or a kick that raced with a pause): carry on.
                    self.vcpu.set_kvm_immediate_exit(0);
                }
                Outcome::Fault(fault) => {
                    let detail = self.fault_detail(&fault);
                    return Err(VmError::GuestFault {
                        fault,
                        detail,
                        regs: self.registers(),
                    });
                }
            }
        }
    }

    /// The guest's registers now, if KVM will say.
    pub fn registers(&self) -> Option<Registers> {
        let regs = self.vcpu.get_regs().ok()?;
        let sregs = self.vcpu.get_sregs().ok()?;
        Some(Registers {
            rip: regs.rip,
            rsp: regs.rsp,
            rflags: regs.rflags,
            cr2: sregs.cr2,
        })
    }

    /// What KVM adds about a fault, where it says more than the exit reason.
    fn fault_detail(&mut self, fault: &Fault) -> String {
        if *fault != Fault::InternalError {
            return String::new();
        }
        format!(" ({})", kvm::internal_error(&mut self.vcpu))
    }

    /// Exits so far, by cause.
    pub fn exits(&self) -> &ExitCounts {
        &self.exits
    }

    /// Guest RAM backed by host memory now.
    pub fn ram_touched_bytes(&self) -> Result<u64, VmError> {
        Ok(memory::resident_bytes(&self.mem)?)
    }

    /// Report what this instance cost as `info` lines: guest RAM configured and touched, the
    /// VMM's memory and its overhead over the guest's, KVM's kind, exits by cause.
    ///
    /// The VMM's USS (unique set size, from `/proc/self/smaps_rollup`) contains the guest RAM
    /// it touched — guest RAM *is* VMM memory — so the VMM's own overhead is USS minus that. Its
    /// RSS is much larger: the VMM is a copy-on-write fork of the lab and shares every page it
    /// has not written with it; those pages cost nothing more per instance, which PSS shows.
    pub fn report(&self, host: &Host) {
        host.info(info::GUEST_RAM_BYTES, self.config.ram_bytes);
        let touched = self.ram_touched_bytes().unwrap_or(0);
        let vmm = ProcessMemory::of([std::process::id() as i32]);
        host.info(info::GUEST_TOUCHED_BYTES, touched);
        host.info(info::VMM_RSS_BYTES, vmm.rss_bytes);
        host.info(info::VMM_PSS_BYTES, vmm.pss_bytes);
        host.info(info::VMM_USS_BYTES, vmm.uss_bytes);
        host.info(
            info::VMM_OVERHEAD_BYTES,
            vmm.uss_bytes.saturating_sub(touched),
        );
        host.info(info::KVM, KvmKind::detect().label());
        host.info(&format!("{}total", info::EXITS_PREFIX), self.exits.total());
        for (cause, n) in self.exits.iter() {
            host.info(&format!("{}{cause}", info::EXITS_PREFIX), n);
        }
    }
}

#[cfg(test)]
mod tests {
    //! The machine in this thread, on real KVM, with pipes for a host: no fork, no cgroup.

    use super::*;
    use crate::backend::vm::{fixtures, run_machine};
    use crate::workload::Event;
    use isolab_kernels::hypercall::status;
    use isolab_kernels::Kernel;
    use nix::fcntl::OFlag;
    use std::io::Read;
    use std::os::fd::AsFd;
    use std::time::Instant;

    /// Run `code` with 2 MiB of RAM; returns the result and the parsed marker lines.
    fn run(code: &'static [u8], limit: Duration) -> (Result<(), VmError>, Vec<Event>) {
        let (report_r, report_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).unwrap();
        let (control_r, control_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).unwrap();
        let config = MachineConfig {
            ram_bytes: memory::MIN_RAM,
            time_limit: limit,
        };
        let result = {
            let mut host = Host::new(report_w.as_fd(), control_r.as_fd(), std::env::temp_dir());
            run_machine(
                &config,
                &Guest::Raw(code),
                &Spec::default_for(Kernel::Ready),
                &mut host,
            )
        };
        drop((report_w, control_w));
        let mut text = String::new();
        std::fs::File::from(report_r)
            .read_to_string(&mut text)
            .unwrap();
        (result, text.lines().filter_map(Event::parse).collect())
    }

    fn info<'a>(events: &'a [Event], key: &str) -> Option<&'a str> {
        events.iter().find_map(|e| match e {
            Event::Info { key: k, value } if k == key => Some(value.as_str()),
            _ => None,
        })
    }

    #[test]
    fn a_guest_boots_marks_ready_and_exits() {
        let (result, events) = run(&fixtures::READY_EXIT, Duration::from_secs(10));
        result.unwrap();
        let phases: Vec<&str> = events
            .iter()
            .filter_map(|e| match e {
                Event::Phase { name, .. } => Some(name.as_str()),
                Event::Ready { .. } => Some("ready"),
                _ => None,
            })
            .collect();
        assert_eq!(
            phases,
            [
                "kvm_open",
                "vm_created",
                "memory_mapped",
                "vcpu_created",
                "guest_loaded",
                "first_entry",
                "ready"
            ]
        );
        assert_eq!(info(&events, "exits_ready"), Some("1"));
        assert_eq!(info(&events, "exits_exit"), Some("1"));
        assert_eq!(info(&events, "exits_total"), Some("2"));
        assert_eq!(info(&events, info::GUEST_RAM_BYTES), Some("2097152"));
        let touched: u64 = info(&events, info::GUEST_TOUCHED_BYTES)
            .unwrap()
            .parse()
            .unwrap();
        assert!(touched > 0 && touched < memory::MIN_RAM, "{touched}");
    }

    #[test]
    fn a_faulting_guest_is_reported_with_its_registers() {
        let (result, _) = run(&fixtures::NULL_READ, Duration::from_secs(10));
        match result {
            Err(VmError::GuestFault {
                fault: Fault::TripleFault,
                regs: Some(regs),
                ..
            }) => {
                assert_eq!(regs.rip, fixtures::NULL_READ_RIP, "{regs}");
                assert_eq!(regs.cr2, 0, "the faulting address: null");
            }
            other => panic!("expected a triple fault, got {other:?}"),
        }
    }

    #[test]
    fn a_spinning_guest_is_stopped_by_the_time_limit() {
        let limit = Duration::from_millis(300);
        let started = Instant::now();
        let (result, events) = run(&fixtures::SPIN, limit);
        let took = started.elapsed();
        match result {
            Err(VmError::GuestTimeout {
                limit: l,
                regs: Some(regs),
            }) => {
                assert_eq!(l, limit);
                assert_eq!(regs.rip, fixtures::SPIN_RIP, "{regs}");
            }
            other => panic!("expected a timeout, got {other:?}"),
        }
        assert!(took >= limit, "stopped after {took:?}, before the limit");
        assert!(
            took < Duration::from_secs(10),
            "stopped only after {took:?}"
        );
        assert_eq!(info(&events, "exits_interrupted"), Some("1"));
    }

    #[test]
    fn the_time_limit_holds_even_on_a_thread_that_blocked_the_kick_signal() {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // SAFETY: a sigset_t on the stack, initialised by sigemptyset; blocks one signal on
            // this thread only.
            unsafe {
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigaddset(&mut set, super::super::vcpu::kick_signal());
                libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            }
            let _ = tx.send(run(&fixtures::SPIN, Duration::from_millis(200)).0);
        });
        let result = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the spinning guest was never stopped");
        assert!(
            matches!(result, Err(VmError::GuestTimeout { .. })),
            "{result:?}"
        );
    }

    #[test]
    fn bad_guest_buffers_are_refused_not_followed() {
        let (result, events) = run(&fixtures::BAD_BUFFERS, Duration::from_secs(10));
        result.unwrap();
        let output = events.iter().find_map(|e| match e {
            Event::Done { output, .. } => Some(*output),
            _ => None,
        });
        let output = output.expect("the guest went on to report done");
        assert_eq!(
            (output.checksum, output.ops, output.bytes),
            (status::EFAULT, status::EFAULT, status::EINVAL)
        );
    }

    #[test]
    fn an_unknown_hypercall_is_a_guest_fault() {
        let (result, _) = run(&fixtures::UNKNOWN_CALL, Duration::from_secs(10));
        assert!(
            matches!(
                result,
                Err(VmError::GuestFault {
                    fault: Fault::UnknownCall(99),
                    ..
                })
            ),
            "{result:?}"
        );
    }
}
