//! One microVM: build it, run its vCPU until the guest finishes, report what it cost.
//!
//! ```text
//!  Machine::boot                                            phase stamped when done
//!    open /dev/kvm, check API version and capabilities     kvm_open
//!    KVM_CREATE_VM                                          vm_created
//!    mmap guest RAM (MAP_NORESERVE), KVM_SET_USER_MEMORY_REGION   memory_mapped
//!    KVM_CREATE_VCPU, mmap its kvm_run page                 vcpu_created
//!    load the ELF, write page tables, GDT, TSS, IDT, boot page;
//!    KVM_SET_CPUID2, KVM_SET_SREGS, KVM_SET_REGS            guest_loaded
//!  Machine::run
//!    loop { KVM_RUN; handle_exit; serve the hypercall }     first_entry, then the guest's
//!                                                           ready / start / done markers
//! ```
//!
//! A machine can also be saved at its `ready` ([`Machine::run_until_ready`], then
//! [`Machine::snapshot`]) and built from such a snapshot instead of booted ([`Machine::restore`]):
//!
//! ```text
//!  Machine::restore
//!    open /dev/kvm; KVM_CREATE_VM                           kvm_open, vm_created
//!    read and check the snapshot's header and vCPU state    snapshot_read
//!    mmap its RAM MAP_PRIVATE (and prefault it),
//!    KVM_SET_USER_MEMORY_REGION                             memory_mapped
//!    KVM_CREATE_VCPU                                        vcpu_created
//!    KVM_SET_CPUID2, SREGS, MSRS, FPU, REGS                 state_loaded
//!  Machine::run, as above: the guest's first act is its `ready` again
//! ```
//!
//! This type has no idea it runs in a child process of the lab: give it a [`Host`] (pipes and a
//! scratch directory) and it runs in any thread — which is how the unit tests drive it.

use crate::exits::{handle_exit, ExitCounts, Fault, Outcome};
use crate::hypercalls::{Flow, Host};
use crate::idt::Exception;
use crate::layout::{ARENA_BASE, BOOT_ADDR};
use crate::loader::Guest;
use crate::snapshot::{self, CpuState, GuestKind, SnapshotError};
use crate::vcpu::TimedVcpu;
use crate::vmm::{Place, Registers, VmmError};
use crate::{cpu, hypercalls, kvm, loader, memory, vmm};
use isolab_kernels::hypercall::{BootInfo, Call};
use isolab_kernels::Spec;
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use std::time::Duration;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// How to build a machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MachineConfig {
    /// Guest RAM in bytes (a multiple of 2 MiB; see [`memory::check_size`]).
    pub ram_bytes: u64,
    /// How long the guest may run (time it spends waiting for the host not counted).
    pub time_limit: Duration,
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

/// Open KVM and make a VM: the first two steps of every machine, booted or restored.
fn open_vm(host: &Host) -> Result<(Kvm, VmFd), VmmError> {
    let kvm = kvm::open()?;
    host.phase("kvm_open");
    let vm = kvm.create_vm().map_err(|source| kvm::KvmError::Ioctl {
        op: "KVM_CREATE_VM",
        source,
    })?;
    host.phase("vm_created");
    Ok((kvm, vm))
}

/// The machine's one vCPU (id 0).
fn create_vcpu(vm: &VmFd, host: &Host) -> Result<VcpuFd, VmmError> {
    let vcpu = vm.create_vcpu(0).map_err(|source| kvm::KvmError::Ioctl {
        op: "KVM_CREATE_VCPU",
        source,
    })?;
    host.phase("vcpu_created");
    Ok(vcpu)
}

impl Machine {
    /// Build the machine and load `guest` to run `spec`, stamping each phase on `host`.
    pub fn boot(
        config: &MachineConfig,
        guest: &Guest,
        spec: &Spec,
        host: &Host,
    ) -> Result<Machine, VmmError> {
        let (kvm, vm) = open_vm(host)?;

        let mem = memory::create(config.ram_bytes)?;
        memory::register(&vm, &mem)?;
        host.phase("memory_mapped");

        let vcpu = create_vcpu(&vm, host)?;

        let loaded = loader::load(&mem, guest)?;
        let cr3 = memory::write_page_tables(&mem, config.ram_bytes)?;
        let vendor = cpu::Vendor::of_host();
        memory::write_descriptor_tables(&mem, vendor)?;
        hypercalls::write_boot_info(
            &mem,
            &BootInfo {
                spec: *spec,
                arena_addr: ARENA_BASE,
                arena_len: config.ram_bytes - ARENA_BASE,
            },
        )?;
        let cpuid = cpu::guest_cpuid(kvm::supported_cpuid(&kvm)?);
        cpu::configure(&vcpu, &cpuid, &cpu::bare_guest(cr3, loaded.entry, vendor))?;
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

    /// Build a machine from the snapshot in `file` (see [`snapshot`]) to run `spec`, instead of
    /// booting one; with `prefault`, its RAM is populated before the first entry. The snapshot
    /// decides the RAM size; `config` the time limit.
    pub fn restore(
        config: &MachineConfig,
        file: &std::fs::File,
        spec: &Spec,
        prefault: bool,
        host: &Host,
    ) -> Result<Machine, VmmError> {
        let (kvm, vm) = open_vm(host)?;

        let (header, state) = snapshot::read(file, GuestKind::Bare)?;
        let state = CpuState::decode(&state)?;
        host.phase("snapshot_read");

        let mem = snapshot::map(file, &header, prefault)?;
        memory::register(&vm, &mem)?;
        host.phase("memory_mapped");
        // The guest reads what to run from its boot page: it must be what the lab asked for.
        let words: Option<Vec<u64>> = (0..BootInfo::WORDS as u64)
            .map(|i| mem.read_obj::<u64>(GuestAddress(BOOT_ADDR + i * 8)).ok())
            .collect();
        let theirs = words
            .and_then(|w| w.try_into().ok())
            .and_then(|w| BootInfo::from_words(w).ok())
            .map(|b| b.spec);
        if theirs != Some(*spec) {
            return Err(SnapshotError::OtherWorkload {
                theirs: theirs.map_or_else(|| "no valid boot page".into(), |s| s.to_string()),
                ours: spec.to_string(),
            }
            .into());
        }

        let vcpu = create_vcpu(&vm, host)?;

        let cpuid = cpu::guest_cpuid(kvm::supported_cpuid(&kvm)?);
        vcpu.set_cpuid2(&cpuid)
            .map_err(cpu::ioctl("KVM_SET_CPUID2"))?;
        state.apply(&vcpu)?;
        host.phase("state_loaded");

        Ok(Machine {
            vcpu,
            _vm: vm,
            _kvm: kvm,
            mem,
            config: MachineConfig {
                ram_bytes: header.ram_bytes,
                time_limit: config.time_limit,
            },
            spec: *spec,
            exits: ExitCounts::default(),
        })
    }

    /// Run the guest until it exits ([`Call::Exit`]), fails, faults or runs out of time.
    pub fn run(&mut self, host: &mut Host) -> Result<(), VmmError> {
        self.run_until(host, Until::Exit)
    }

    /// Run the guest until it has said `ready` (the marker is sent), and stop there without
    /// entering it again: the vCPU rests on its `ready` hypercall, to be saved.
    pub fn run_until_ready(&mut self, host: &mut Host) -> Result<(), VmmError> {
        self.run_until(host, Until::Ready)
    }

    fn run_until(&mut self, host: &mut Host, until: Until) -> Result<(), VmmError> {
        let mut vcpu = TimedVcpu::new(&mut self.vcpu, self.config.time_limit)?;
        host.phase("first_entry");
        vcpu.start()?;
        serve(
            &mut vcpu,
            &self.mem,
            host,
            &self.spec,
            self.config.ram_bytes,
            &mut self.exits,
            until,
        )
    }

    /// Save this machine, stopped by [`Machine::run_until_ready`], into `file`: its vCPU state
    /// (stamped `snapshot_state`), then its RAM (`snapshot_memory`, and the fact
    /// `snapshot_ram_written_bytes`).
    ///
    /// The vCPU rests on an I/O exit, which [`vmm::finish_pending_exit`] finishes first; RIP
    /// is then past the `out` on every kind of KVM. The snapshot moves it back onto the `out` —
    /// one byte, `0xef`, checked in guest RAM — so that a restored guest's first act is to say
    /// `ready` again.
    pub fn snapshot(&mut self, host: &Host, file: &std::fs::File) -> Result<(), VmmError> {
        vmm::finish_pending_exit(&mut self.vcpu)?;
        let mut state = CpuState::of(&self.vcpu)?;
        let out = state.regs.rip.wrapping_sub(1);
        let opcode = memory::translate(&self.mem, state.sregs.cr3, out)
            .and_then(|t| self.mem.read_obj::<u8>(GuestAddress(t.paddr)).ok());
        if opcode != Some(OUT_DX_EAX) {
            return Err(SnapshotError::Malformed(format!(
                "the guest's ready at {out:#x} is not the one-byte `out dx, eax` a snapshot rewinds to"
            ))
            .into());
        }
        state.regs.rip = out;
        host.phase("snapshot_state");
        let written = snapshot::write(
            file,
            GuestKind::Bare,
            &state.encode(),
            &self.mem,
            self.config.ram_bytes,
        )?;
        host.phase("snapshot_memory");
        host.info("snapshot_ram_written_bytes", written.ram_written);
        Ok(())
    }

    /// Exits so far, by cause.
    pub fn exits(&self) -> &ExitCounts {
        &self.exits
    }

    /// Report what this instance cost (see [`vmm::report_cost`]).
    pub fn report(&self, host: &Host) {
        vmm::report_cost(host, &self.mem, self.config.ram_bytes, &self.exits);
    }
}

/// `out dx, eax`: the instruction of every hypercall (see `isolab_kernels::hypercall`).
const OUT_DX_EAX: u8 = 0xef;

/// Where the run loop stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Until {
    /// When the guest exits.
    Exit,
    /// Once the guest's `ready` has been served, before it is entered again.
    Ready,
}

/// The run loop: enter the guest, decide what its exit means, do it; until it exits or fails
/// (or, with [`Until::Ready`], says `ready`).
fn serve(
    vcpu: &mut TimedVcpu<'_>,
    mem: &GuestMemoryMmap,
    host: &mut Host,
    spec: &Spec,
    ram_bytes: u64,
    exits: &mut ExitCounts,
    until: Until,
) -> Result<(), VmmError> {
    loop {
        let outcome = handle_exit(&vcpu.run().map_err(VmmError::Run)?);
        exits.count(&outcome);
        match outcome {
            Outcome::Hypercall(call) => {
                // Waiting for the host is not the guest's time.
                let waits = call == Call::WaitHost;
                if waits {
                    vcpu.pause()?;
                }
                let flow = hypercalls::serve(call, mem, host, spec, ram_bytes)?;
                if waits {
                    vcpu.resume()?;
                }
                if flow == Flow::Exit {
                    return match until {
                        Until::Exit => Ok(()),
                        Until::Ready => Err(VmmError::Stopped {
                            what: "the guest exited before it was ready to be saved".into(),
                            context: String::new(),
                        }),
                    };
                }
                if call == Call::Ready && until == Until::Ready {
                    return Ok(());
                }
            }
            // A kick: out of time, or (a stray signal) enter again.
            Outcome::Interrupted => {
                if vcpu.time_up() {
                    return Err(VmmError::timeout(vcpu));
                }
            }
            Outcome::Exception(vector) => return Err(exception(vcpu.fd(), mem, vector)),
            Outcome::Fault(fault) => {
                let detail = match fault {
                    Fault::InternalError => format!(" ({})", vcpu.internal_error()),
                    _ => String::new(),
                };
                let place = Place::after(vcpu.fd(), Some(&fault));
                return Err(VmmError::fault(fault, detail, place));
            }
        }
    }
}

/// The guest raised exception `vector`, and the VMM's handler reported it (see [`crate::idt`]):
/// read the frame the CPU pushed on the ring-0 stack. A store of an exception code made in ring
/// 3 is the guest's own doing, not the handler's: an unknown call.
fn exception(vcpu: &VcpuFd, mem: &GuestMemoryMmap, vector: u8) -> VmmError {
    let unknown = || {
        VmmError::fault(
            Fault::UnknownCall(crate::idt::code_of_vector(vector)),
            String::new(),
            Place::after(vcpu, None),
        )
    };
    let (Ok(regs), Ok(sregs)) = (vcpu.get_regs(), vcpu.get_sregs()) else {
        return unknown();
    };
    if sregs.cs.dpl != 0 {
        return unknown();
    }
    let words = Exception::frame_words(vector);
    let frame: Option<Vec<u64>> = (0..words as u64)
        .map(|i| mem.read_obj::<u64>(GuestAddress(regs.rsp + i * 8)).ok())
        .collect();
    match frame.and_then(|f| Exception::from_frame(vector, &f, sregs.cr2)) {
        Some(e) => VmmError::fault(
            Fault::Exception(e),
            String::new(),
            Place::At {
                regs: Registers {
                    rip: e.rip,
                    rsp: e.rsp,
                    rflags: e.rflags,
                    cr2: e.cr2,
                },
                symbol: None,
            },
        ),
        None => unknown(),
    }
}

#[cfg(test)]
mod tests {
    //! The machine in this thread, on real KVM, with pipes for a host: no fork, no cgroup.

    use super::*;
    use crate::{fixtures, run_machine};
    use isolab_kernels::hypercall::status;
    use isolab_kernels::Kernel;
    use isolab_payload::Event;
    use isolab_results::info;
    use nix::fcntl::OFlag;
    use std::io::Read;
    use std::os::fd::AsFd;
    use std::time::Instant;

    /// Run `code` with 2 MiB of RAM; returns the result and the parsed marker lines.
    fn run(code: &'static [u8], limit: Duration) -> (Result<(), VmmError>, Vec<Event>) {
        let (report_r, report_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).unwrap();
        let (control_r, control_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).unwrap();
        let config = MachineConfig {
            ram_bytes: crate::layout::MIN_RAM,
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
        assert!(touched > 0 && touched < crate::layout::MIN_RAM, "{touched}");
    }

    #[test]
    fn a_faulting_guest_is_reported_with_where_it_faulted() {
        let (result, events) = run(&fixtures::NULL_READ, Duration::from_secs(10));
        let fault = match result {
            Err(VmmError::GuestFault(f)) => *f,
            other => panic!("expected a page fault, got {other:?}"),
        };
        match fault {
            vmm::GuestFault {
                fault: Fault::Exception(e),
                place: Place::At { regs, .. },
                ..
            } => {
                // The VMM's handler reported it; the CPU's frame says where, on every vendor.
                assert_eq!(e.vector, 14, "#PF: {e}");
                assert_eq!(
                    e.error_code,
                    Some(4),
                    "a user-mode read of an unmapped page"
                );
                assert_eq!(e.cs & 3, 3, "in ring 3");
                assert_eq!(regs.rip, fixtures::NULL_READ_RIP, "{regs}");
                assert_eq!(regs.cr2, 0, "the faulting address: null");
                assert_eq!(
                    regs.rsp,
                    crate::layout::STACK_TOP,
                    "the guest's own stack pointer"
                );
            }
            other => panic!("expected a page fault, got {other:?}"),
        }
        assert_eq!(info(&events, "exits_exception"), Some("1"));
    }

    #[test]
    fn ud2_is_an_invalid_opcode_at_its_address() {
        let (result, _) = run(&fixtures::UD2, Duration::from_secs(10));
        match result {
            Err(VmmError::GuestFault(f)) => match f.fault {
                Fault::Exception(e) => {
                    assert_eq!((e.vector, e.error_code), (6, None), "#UD: {e}");
                    assert_eq!(e.rip, fixtures::UD2_RIP);
                }
                other => panic!("expected #UD, got {other}"),
            },
            other => panic!("expected #UD, got {other:?}"),
        }
    }

    #[test]
    fn a_spinning_guest_is_stopped_by_the_time_limit() {
        let limit = Duration::from_millis(300);
        let started = Instant::now();
        let (result, events) = run(&fixtures::SPIN, limit);
        let took = started.elapsed();
        match result {
            Err(VmmError::GuestTimeout {
                limit: l,
                place: Place::At { regs, .. },
                ..
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

    /// The race the order "take the kick back, then look at the clock" closes: a kick that
    /// lands after KVM_RUN returned is never lost. Kicks are raised by hand here, at exactly the
    /// moments the race needs; a kick that did reach KVM shows as an exit that entered no guest
    /// code (the guest's first act would be the `ready` hypercall, a port I/O exit).
    #[test]
    fn a_kick_that_lands_between_two_runs_is_not_lost() {
        let (report_r, report_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).unwrap();
        let (control_r, _control_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).unwrap();
        let host = Host::new(report_w.as_fd(), control_r.as_fd(), std::env::temp_dir());
        let config = MachineConfig {
            ram_bytes: crate::layout::MIN_RAM,
            time_limit: Duration::from_secs(600),
        };
        let spec = Spec::default_for(Kernel::Ready);
        let mut machine =
            Machine::boot(&config, &Guest::Raw(&fixtures::READY_EXIT), &spec, &host).unwrap();
        let mut vcpu = TimedVcpu::new(&mut machine.vcpu, config.time_limit).unwrap();
        vcpu.start().unwrap();
        let kick = || {
            // SAFETY: raise delivers the kick signal to this thread, whose handler only stores
            // one byte into the kvm_run page the TimedVcpu borrows.
            assert_eq!(unsafe { libc::raise(crate::vcpu::kick_signal()) }, 0);
        };
        // A kick before KVM_RUN: KVM_RUN returns at once.
        kick();
        assert!(matches!(vcpu.run(), Ok(kvm_ioctls::VcpuExit::Intr)));
        // A kick after KVM_RUN returned, before the VMM looked at the clock: still honoured.
        kick();
        assert!(!vcpu.time_up());
        assert!(matches!(vcpu.run(), Ok(kvm_ioctls::VcpuExit::Intr)));
        // No kick pending: the guest runs, and its first exit is its `ready` hypercall.
        assert!(matches!(
            vcpu.run(),
            Ok(kvm_ioctls::VcpuExit::IoOut(
                isolab_kernels::hypercall::PORT,
                _
            ))
        ));
        drop((vcpu, report_r));
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
                libc::sigaddset(&mut set, crate::vcpu::kick_signal());
                libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            }
            let _ = tx.send(run(&fixtures::SPIN, Duration::from_millis(200)).0);
        });
        let result = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the spinning guest was never stopped");
        assert!(
            matches!(result, Err(VmmError::GuestTimeout { .. })),
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
            matches!(&result, Err(VmmError::GuestFault(f)) if f.fault == Fault::UnknownCall(99)),
            "{result:?}"
        );
    }
}
