//! One Linux microVM: build it, boot the kernel, serve its devices until it reboots.
//!
//! ```text
//!  LinuxMachine::run                                           phase stamped when done
//!    open /dev/kvm                                             kvm_open
//!    KVM_CREATE_VM                                             vm_created
//!    KVM_SET_TSS_ADDR, KVM_CREATE_IRQCHIP, KVM_CREATE_PIT2,
//!    KVM_IRQFD (UART → IRQ 4)                                  irqchip
//!    mmap guest RAM, KVM_SET_USER_MEMORY_REGION                memory_mapped
//!    KVM_CREATE_VCPU                                           vcpu_created
//!    kernel, initramfs, command line, boot structures;
//!    CPUID, GDT, registers, LAPIC pins                         kernel_loaded
//!    loop { KVM_RUN; serve the port/MMIO exit }                kernel_entry (the first KVM_RUN)
//!      guest /init's marker-port writes, stamped at the exit: init, ready, start, done
//!    the guest resets (i8042 or triple fault)                  reboot
//! ```
//!
//! Everything before `kernel_entry` is the VMM's set-up; from `kernel_entry` to `init` the guest
//! kernel boots; `init` → `ready` is `/init` mounting and setting up; `ready` → `done` the work;
//! `done` → `reboot` → `exited` the stop.

use super::super::hypercalls::Host;
use super::super::machine::Registers;
use super::super::vcpu::Watchdog;
use super::super::{kvm, memory};
use super::boot;
use super::cpu;
use super::devices::{Devices, PortWrite, COM1_IRQ};
use super::LinuxVmError;
use crate::host::KvmKind;
use crate::linux_guest::console::Console;
use crate::measure::clock::now_ns;
use crate::measure::memory::ProcessMemory;
use kvm_bindings::{kvm_pit_config, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{VcpuExit, VcpuFd};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::time::Duration;
use vmm_sys_util::eventfd::EventFd;

/// Where Intel's VMX keeps the real-mode TSS KVM needs (three pages just below the 4 GiB BIOS
/// area). Our guests never run in real mode, but KVM on Intel wants the address set before the
/// first vCPU exists; it is outside guest RAM, so it costs nothing.
const KVM_TSS_ADDRESS: usize = 0xfffb_d000;

/// How to build one Linux microVM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinuxConfig {
    /// Guest RAM, bytes (a multiple of 2 MiB).
    pub ram_bytes: u64,
    /// How long the guest may run before the VMM stops it.
    pub time_limit: Duration,
    /// The kernel: a vmlinux with a PVH note, or a bzImage.
    pub kernel: PathBuf,
    /// The initramfs file.
    pub initrd: PathBuf,
    /// The command line.
    pub cmdline: String,
    /// Hide XSAVE from the guest's CPUID (nested PVM).
    pub hide_xsave: bool,
    /// Where to keep the console log.
    pub console_log: PathBuf,
}

/// How the guest stopped by itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// `reboot=k`: the i8042's reset line.
    KeyboardReset,
    /// `reboot=t`, or a crash: a triple fault (`KVM_EXIT_SHUTDOWN`).
    TripleFault,
    /// `KVM_EXIT_SYSTEM_EVENT` (a reset or shutdown KVM noticed itself, e.g. by PSCI or the like).
    SystemEvent(u32),
}

impl Stop {
    fn describe(self) -> String {
        match self {
            Stop::KeyboardReset => "a reset through the i8042 keyboard controller".into(),
            Stop::TripleFault => "a triple fault (KVM_EXIT_SHUTDOWN)".into(),
            Stop::SystemEvent(kind) => format!("a system event of type {kind}"),
        }
    }
}

/// Writes raw lines to the report pipe.
struct Report<'fd>(BorrowedFd<'fd>);

impl Report<'_> {
    fn lines(&self, lines: Vec<Vec<u8>>) {
        for line in lines {
            // SAFETY: writing a valid buffer to a borrowed fd; one write per line (atomic pipe
            // writes under PIPE_BUF), a failure means the lab is gone.
            unsafe { libc::write(self.0.as_raw_fd(), line.as_ptr().cast(), line.len()) };
        }
    }
}

fn ioctl(op: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> LinuxVmError {
    move |source| LinuxVmError::Ioctl { op, source }
}

/// Build the machine, boot, serve it until the guest stops; report what it cost.
///
/// `report` takes the console's marker lines, `control` gives the lab's go-ahead bytes, which
/// go to the guest's console input.
pub fn run(
    config: &LinuxConfig,
    host: &Host,
    report: BorrowedFd<'_>,
    control: OwnedFd,
) -> Result<Stop, LinuxVmError> {
    let report = Report(report);
    let kvm = kvm::open()?;
    host.phase("kvm_open");
    let vm = kvm.create_vm().map_err(ioctl("KVM_CREATE_VM"))?;
    host.phase("vm_created");

    vm.set_tss_address(KVM_TSS_ADDRESS)
        .map_err(ioctl("KVM_SET_TSS_ADDR"))?;
    // The PC's interrupt controllers (two 8259 PICs, an I/O APIC, each vCPU's local APIC) and its
    // timer (an 8254 PIT), emulated inside KVM.
    vm.create_irq_chip().map_err(ioctl("KVM_CREATE_IRQCHIP"))?;
    vm.create_pit2(kvm_pit_config {
        // No PC speaker behind port 0x61.
        flags: KVM_PIT_SPEAKER_DUMMY,
        ..Default::default()
    })
    .map_err(ioctl("KVM_CREATE_PIT2"))?;
    let irq = EventFd::new(libc::EFD_NONBLOCK).map_err(|source| LinuxVmError::Io {
        what: "eventfd",
        source,
    })?;
    vm.register_irqfd(&irq, COM1_IRQ)
        .map_err(ioctl("KVM_IRQFD"))?;
    host.phase("irqchip");

    let mem = memory::create(config.ram_bytes)?;
    memory::register(&vm, &mem)?;
    host.phase("memory_mapped");
    let mut vcpu = vm.create_vcpu(0).map_err(ioctl("KVM_CREATE_VCPU"))?;
    host.phase("vcpu_created");

    let initrd = std::fs::read(&config.initrd).map_err(|source| LinuxVmError::Io {
        what: "read the initramfs",
        source,
    })?;
    let loaded = boot::load(
        &mem,
        config.ram_bytes,
        &config.kernel,
        &initrd,
        &config.cmdline,
    )?;
    let cpuid = cpu::guest_cpuid(kvm::supported_cpuid(&kvm)?, config.hide_xsave);
    cpu::configure(&vcpu, &mem, &cpuid, loaded.entry)?;
    host.phase("kernel_loaded");

    let log = File::create(&config.console_log).map_err(|source| LinuxVmError::Io {
        what: "create the console log",
        source,
    })?;
    let mut console = Console::new(Some(log));
    let mut devices = Devices::new(irq);
    start_input(control, &devices)?;

    let mut exits: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut watchdog = Watchdog::new(&mut vcpu, config.time_limit)?;
    host.phase("kernel_entry");
    watchdog.start()?;
    let outcome = serve(
        &mut vcpu,
        &mut devices,
        &mut console,
        &report,
        &mut exits,
        &watchdog,
    );
    drop(watchdog);
    report.lines(console.finish(now_ns()));

    // What this instance cost, whatever happened.
    host.info("guest_ram_bytes", config.ram_bytes);
    let touched = memory::resident_bytes(&mem).unwrap_or(0);
    let vmm = ProcessMemory::of([std::process::id() as i32]);
    host.info("guest_ram_touched_bytes", touched);
    host.info("vmm_uss_bytes", vmm.uss_bytes);
    host.info("vmm_overhead_bytes", vmm.uss_bytes.saturating_sub(touched));
    host.info("kvm_kind", KvmKind::detect().label());
    host.info(
        "boot_protocol",
        match loaded.entry {
            boot::Entry::Pvh { .. } => "pvh",
            boot::Entry::Linux64 { .. } => "linux-64bit",
        },
    );
    let (lines, bytes) = console.received();
    host.info("console_lines", lines);
    host.info("console_bytes", bytes);
    host.info("exits_total", exits.values().sum::<u64>());
    for (cause, n) in &exits {
        host.info(&format!("exits_{cause}"), n);
    }

    let context = |console: &Console| match console.last_kernel_line() {
        Some(line) => format!(
            "last console line: {:?}",
            line.chars().take(100).collect::<String>()
        ),
        None => "the guest printed nothing".into(),
    };
    match outcome {
        Ok(stop) => {
            host.phase("reboot");
            if console.saw_done() || console.saw_error() {
                Ok(stop)
            } else {
                Err(LinuxVmError::Stopped {
                    what: format!(
                        "the guest stopped by {} before the workload reported done",
                        stop.describe()
                    ),
                    regs: None,
                    context: context(&console),
                })
            }
        }
        Err(Failure::Fault { what }) => Err(LinuxVmError::Stopped {
            what,
            regs: registers(&vcpu),
            context: format!("{}{}", pvm_note(), context(&console)),
        }),
        Err(Failure::Timeout(limit)) => Err(LinuxVmError::Timeout {
            limit,
            regs: registers(&vcpu),
            context: format!("{}{}", pvm_note(), context(&console)),
        }),
        Err(Failure::Run(e)) => Err(LinuxVmError::Run(e)),
    }
}

/// On nested PVM, say why a Linux guest cannot get far (short: an error line holds 512 bytes).
fn pvm_note() -> &'static str {
    if KvmKind::detect() == KvmKind::NestedPvm {
        "nested PVM emulates guest ring 0 and cannot go on here (hardware VT-x/AMD-V runs it); "
    } else {
        ""
    }
}

/// Why the run loop ended without the guest stopping by itself.
enum Failure {
    Fault { what: String },
    Timeout(Duration),
    Run(kvm_ioctls::Error),
}

/// The run loop: enter the guest, serve its exit, repeat until it stops.
fn serve(
    vcpu: &mut VcpuFd,
    devices: &mut Devices,
    console: &mut Console,
    report: &Report<'_>,
    exits: &mut BTreeMap<&'static str, u64>,
    watchdog: &Watchdog,
) -> Result<Stop, Failure> {
    loop {
        let exit = vcpu.run();
        // The stamp of a marker is the moment its exit reached the VMM: take it first.
        let now = now_ns();
        let cause: &'static str = match exit {
            Ok(VcpuExit::IoOut(port, data)) => {
                let what = devices.write(port, data);
                match what {
                    PortWrite::Uart => {
                        let bytes = devices.take_output();
                        report.lines(console.feed(&bytes, now));
                    }
                    PortWrite::Marker(m) => console.stamp(m, now),
                    PortWrite::Reset => {
                        count(exits, what.cause());
                        return Ok(Stop::KeyboardReset);
                    }
                    _ => {}
                }
                what.cause()
            }
            Ok(VcpuExit::IoIn(port, data)) => devices.read(port, data),
            // No memory-mapped devices: reads see all ones, writes vanish.
            Ok(VcpuExit::MmioRead(_, data)) => {
                data.fill(0xff);
                "mmio_unclaimed"
            }
            Ok(VcpuExit::MmioWrite(..)) => "mmio_unclaimed",
            Ok(VcpuExit::Shutdown) => {
                count(exits, "shutdown");
                return Ok(Stop::TripleFault);
            }
            Ok(VcpuExit::SystemEvent(kind, _)) => {
                count(exits, "system_event");
                return Ok(Stop::SystemEvent(kind));
            }
            Ok(VcpuExit::InternalError) => {
                count(exits, "internal_error");
                return Err(Failure::Fault {
                    what: format!(
                        "KVM could not run the guest (KVM_EXIT_INTERNAL_ERROR{})",
                        internal_detail(vcpu)
                    ),
                });
            }
            Ok(VcpuExit::FailEntry(reason, _)) => {
                count(exits, "fail_entry");
                return Err(Failure::Fault {
                    what: format!(
                        "VM entry failed (KVM_EXIT_FAIL_ENTRY, hardware reason {reason:#x})"
                    ),
                });
            }
            Ok(VcpuExit::Hlt) => {
                count(exits, "hlt");
                return Err(Failure::Fault {
                    what: "the guest halted with no interrupt controller to wake it (KVM_EXIT_HLT)"
                        .into(),
                });
            }
            Ok(other) => {
                return Err(Failure::Fault {
                    what: format!("an exit this VMM does not handle: {other:?}"),
                })
            }
            Err(e) if e.errno() == libc::EINTR => {
                if watchdog.expired() {
                    return Err(Failure::Timeout(watchdog.limit()));
                }
                vcpu.set_kvm_immediate_exit(0);
                "interrupted"
            }
            Err(e) => return Err(Failure::Run(e)),
        };
        count(exits, cause);
    }
}

fn count(exits: &mut BTreeMap<&'static str, u64>, cause: &'static str) {
    *exits.entry(cause).or_default() += 1;
}

/// KVM's sub-error of an internal error, in words.
fn internal_detail(vcpu: &mut VcpuFd) -> String {
    format!(", {}", super::super::kvm::internal_error(vcpu))
}

/// Where the guest was.
fn registers(vcpu: &VcpuFd) -> Option<Registers> {
    let regs = vcpu.get_regs().ok()?;
    let sregs = vcpu.get_sregs().ok()?;
    Some(Registers {
        rip: regs.rip,
        rsp: regs.rsp,
        rflags: regs.rflags,
        cr2: sregs.cr2,
    })
}

/// A thread that types the lab's go-ahead bytes into the guest's console: what the lab writes
/// on the control pipe goes into the UART's receive FIFO, whose interrupt wakes the guest's
/// `read(0)`. When the lab closes the pipe, one last byte goes in, so a guest waiting for the
/// host ends as a process does at end of file.
fn start_input(control: OwnedFd, devices: &Devices) -> Result<(), LinuxVmError> {
    let uart = std::sync::Arc::clone(&devices.uart);
    let mut control = File::from(control);
    std::thread::Builder::new()
        .name("guest-input".into())
        .spawn(move || {
            let mut buf = [0u8; 64];
            loop {
                let (bytes, last): (&[u8], bool) = match control.read(&mut buf) {
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Ok(0) | Err(_) => (b"\n", true),
                    Ok(n) => (&buf[..n], false),
                };
                let mut uart = uart.lock().unwrap_or_else(|e| e.into_inner());
                let _ = uart.enqueue_raw_bytes(bytes);
                drop(uart);
                if last {
                    return;
                }
            }
        })
        .map(drop)
        .map_err(|source| LinuxVmError::Io {
            what: "start the console input thread",
            source,
        })
}
