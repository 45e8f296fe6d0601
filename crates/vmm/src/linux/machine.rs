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
//!    virtio devices: irqfds, ioeventfds (disk, network card)   devices
//!    kernel, initramfs, command line, boot structures, MP table
//!    (and ACPI tables, for a kernel that finds devices there);
//!    CPUID, GDT, registers, LAPIC pins                         kernel_loaded
//!    loop { KVM_RUN; serve the port/MMIO exit }                kernel_entry (the first KVM_RUN)
//!      guest /init's marker-port writes, stamped at the exit: init, ready, start, done
//!    the guest resets (i8042 or triple fault)                  reboot
//! ```
//!
//! Everything before `kernel_entry` is the VMM's set-up. From `kernel_entry` the guest kernel
//! boots: `console` marks the first byte it prints (the first UART exit, see
//! [`Console`]), `init` the first instruction of `/init`; a kernel that prints nothing before
//! `/init` has no `console` edge.
//! `init` → `ready` is `/init` mounting and setting up; `ready` → `done` the work;
//! `done` → `reboot` → `exited` the stop.

use crate::exits::{ExitCounts, Fault};
use crate::hypercalls::Host;
use crate::linux::devices::{Devices, PortWrite, COM1_IRQ};
use crate::linux::snapshot::{DeviceState, LinuxState, VcpuState, VmState};
use crate::linux::virtio::block::Block;
use crate::linux::virtio::mmio::MmioTransport;
use crate::linux::virtio::net::Net;
use crate::linux::virtio::state::TransportState;
use crate::linux::virtio::{Counters, Kind, Notify, Slot, VirtioDevice, MMIO_BASE, QUEUE_NOTIFY};
use crate::linux::{boot, cpu};
use crate::snapshot::{GuestKind, SnapshotError};
use crate::vcpu::TimedVcpu;
use crate::vmm::{Place, VmmError};
use crate::{kvm, memory, vmm};
use isolab_host::clock::now_ns;
use isolab_host::facts::KvmKind;
use isolab_kernels::marker::Marker;
use isolab_linux_guest::console::Console;
use isolab_linux_guest::devices::{BlockBacking, NetBacking};
use isolab_linux_guest::symbols::Symbols;
use kvm_bindings::{kvm_irqchip, kvm_msr_entry, kvm_pit_config, Msrs, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{IoEventAddress, VcpuExit, VcpuFd, VmFd};
use std::fs::File;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::Duration;
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;

/// Where Intel's VMX keeps the real-mode TSS KVM needs (three pages just below the 4 GiB BIOS
/// area). Our guests never run in real mode, but KVM on Intel wants the address set before the
/// first vCPU exists; it is outside guest RAM, so it costs nothing.
const KVM_TSS_ADDRESS: usize = 0xfffb_d000;

/// How to build one Linux microVM.
#[derive(Debug)]
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
    /// Where to look up the kernel's symbols, should the guest stop where it should not.
    pub symbols: Option<Symbols>,
    /// A disk (virtio-blk on this file), in the first virtio slot.
    pub block: Option<BlockBacking>,
    /// A network card (virtio-net on this tap), in the next slot.
    pub net: Option<NetBacking>,
    /// Describe the devices in ACPI tables (for a kernel that cannot take them on its command
    /// line; the command line itself is the caller's, in `cmdline`).
    pub acpi: bool,
    /// How queue notifications reach the devices.
    pub notify: Notify,
}

impl LinuxConfig {
    /// The virtio slots of the configured devices, in order: the disk first, then the card.
    pub fn slots(&self) -> Vec<(Kind, Slot)> {
        let kinds = [
            self.block.as_ref().map(|_| Kind::Block),
            self.net.as_ref().map(|_| Kind::Net),
        ];
        kinds
            .into_iter()
            .flatten()
            .enumerate()
            .map(|(i, k)| (k, Slot::nth(i)))
            .collect()
    }
}

/// The virtio devices on the machine's MMIO bus, each in its slot.
pub struct Bus {
    devices: Vec<(Slot, MmioTransport)>,
}

impl Bus {
    /// The device whose register window holds `addr`, and the offset in it.
    fn find(&mut self, addr: u64) -> Option<(u64, &mut MmioTransport)> {
        self.devices
            .iter_mut()
            .find(|(slot, _)| slot.contains(addr))
            .map(|(slot, t)| (addr - slot.base, t))
    }

    /// Stop the devices' threads, then report each device's traffic as exit counts and facts.
    fn stop_and_report(self, host: &Host, exits: &mut ExitCounts) {
        let devices: Vec<(Kind, Notify, std::sync::Arc<Counters>)> = self
            .devices
            .iter()
            .map(|(_, t)| {
                (
                    t.kind(),
                    t.notify_mode(),
                    std::sync::Arc::clone(t.counters()),
                )
            })
            .collect();
        // Dropping a transport stops and joins its device's thread.
        drop(self);
        for (kind, mode, c) in devices {
            let name = kind.name();
            // In Notify::Exit mode the notifications were MMIO exits, counted as they came.
            if mode == Notify::Ioeventfd {
                exits.add(notify_cause(kind), Counters::get(&c.notifications));
            }
            host.info(
                &format!("virtio_{name}_interrupts"),
                Counters::get(&c.interrupts),
            );
            host.info(
                &format!("virtio_{name}_requests"),
                Counters::get(&c.requests),
            );
            // What serving the device cost the host: its thread's CPU time (a thread that sleeps
            // in poll between notifications costs next to nothing).
            host.info(
                &format!("virtio_{name}_thread_cpu_ns"),
                Counters::get(&c.thread_cpu_ns),
            );
            for (i, q) in c.queues().iter().enumerate() {
                host.info(&format!("virtio_{name}_queue{i}"), q);
            }
            if let Some(why) = c.ended() {
                host.info(&format!("virtio_{name}_stopped"), why);
            }
            let malformed = Counters::get(&c.malformed);
            if malformed > 0 {
                host.info(&format!("virtio_{name}_malformed"), malformed);
            }
        }
    }
}

fn mmio_cause(kind: Kind) -> &'static str {
    match kind {
        Kind::Block => "mmio_blk",
        Kind::Net => "mmio_net",
    }
}

fn notify_cause(kind: Kind) -> &'static str {
    match kind {
        Kind::Block => "notify_blk",
        Kind::Net => "notify_net",
    }
}

/// Errors while making the devices (in the VMM's error type: an instance step).
fn device_error(what: &'static str) -> impl FnOnce(crate::linux::virtio::VirtioError) -> VmmError {
    move |e| VmmError::Io {
        what,
        source: std::io::Error::other(e.to_string()),
    }
}

/// Make the configured devices: for each, the device, its transport, an irqfd on its interrupt
/// line and (in [`Notify::Ioeventfd`] mode) one ioeventfd per queue on its `QueueNotify`.
/// `saved`: the transports' states of a snapshot, one per configured device, to restore.
fn make_devices(
    config: &LinuxConfig,
    net: Option<&NetBacking>,
    vm: &VmFd,
    mem: &vm_memory::GuestMemoryMmap,
    host: &Host,
    saved: Option<&[(u32, Vec<u8>)]>,
) -> Result<Bus, VmmError> {
    let slots = config.slots();
    if let Some(saved) = saved {
        let theirs: Vec<u32> = saved.iter().map(|(kind, _)| *kind).collect();
        let ours: Vec<u32> = slots.iter().map(|(kind, _)| kind.id()).collect();
        if theirs != ours {
            return Err(SnapshotError::Malformed(format!(
                "virtio devices {theirs:?} in the snapshot, {ours:?} in this guest"
            ))
            .into());
        }
    }
    let mut devices = Vec::new();
    for (i, (kind, slot)) in slots.into_iter().enumerate() {
        let device: Box<dyn VirtioDevice> = match (kind, &config.block, net) {
            (Kind::Block, Some(b), _) => {
                // By path, in the VMM child: safe because no user but root (and the lab's) may
                // change a directory on it (`isolab_resources::disks`, "Paths others open").
                let block =
                    Block::open(&b.path, b.read_only).map_err(device_error("open the disk"))?;
                host.info("disk_bytes", block.capacity_sectors() * 512);
                host.info("disk_direct_io", block.direct());
                host.info("disk_block_size", block.block_size());
                Box::new(block)
            }
            (Kind::Net, _, Some(n)) => {
                host.info("net_tap", n.tap.name());
                Box::new(Net::new(&n.tap, n.mac).map_err(device_error("open the tap"))?)
            }
            _ => continue,
        };
        let irqfd = EventFd::new(libc::EFD_NONBLOCK).map_err(|source| VmmError::Io {
            what: "eventfd",
            source,
        })?;
        // KVM pulses the I/O APIC pin `slot.irq` whenever the device thread writes the eventfd.
        vm.register_irqfd(&irqfd, slot.irq)
            .map_err(ioctl("KVM_IRQFD"))?;
        let transport = match saved.and_then(|s| s.get(i)) {
            // A snapshot's device: its registers and its queues where the driver left them.
            Some((_, bytes)) => {
                let state =
                    TransportState::decode(bytes).map_err(device_error("read a saved device"))?;
                MmioTransport::restore(device, mem.clone(), irqfd, config.notify, &state)
                    .map_err(device_error("restore a virtio device"))?
            }
            None => MmioTransport::new(device, mem.clone(), irqfd, config.notify)
                .map_err(device_error("make a virtio device"))?,
        };
        if config.notify == Notify::Ioeventfd {
            for (queue, event) in transport.notify_events().iter().enumerate() {
                // A 4-byte write of `queue` to QueueNotify signals this eventfd inside KVM.
                vm.register_ioevent(
                    event,
                    &IoEventAddress::Mmio(slot.base + QUEUE_NOTIFY),
                    queue as u32,
                )
                .map_err(ioctl("KVM_IOEVENTFD"))?;
            }
        }
        devices.push((slot, transport));
    }
    Ok(Bus { devices })
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
    /// Not stopped by the guest: the VMM held it at `/init`'s `ready` to save it
    /// ([`Start::Snapshot`]).
    Ready,
}

impl Stop {
    fn describe(self) -> String {
        match self {
            Stop::KeyboardReset => "a reset through the i8042 keyboard controller".into(),
            Stop::TripleFault => "a triple fault (KVM_EXIT_SHUTDOWN)".into(),
            Stop::SystemEvent(kind) => format!("a system event of type {kind}"),
            Stop::Ready => "the VMM, at ready, to save it".into(),
        }
    }
}

fn ioctl(op: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmmError {
    move |source| VmmError::Ioctl { op, source }
}

/// How a machine comes to be, and how far it runs.
#[derive(Clone, Copy, Debug)]
pub enum Start<'f> {
    /// Boot the kernel and run the guest until it stops.
    Cold,
    /// Boot the kernel, run the guest to `/init`'s `ready`, and save the machine into this
    /// (empty) file instead of going on ([`crate::linux::snapshot`]).
    Snapshot(&'f File),
    /// Build the machine from the snapshot in this file, then run it until it stops; with
    /// `prefault`, its RAM is populated before the first entry.
    Restore {
        /// The snapshot.
        file: &'f File,
        /// Populate RAM first.
        prefault: bool,
    },
}

/// Build the machine, boot, serve it until the guest stops; report what it cost.
///
/// Marker lines and the cost go to `host`; the lab's go-ahead bytes, read from `host`'s control
/// pipe by a thread of their own, go to the guest's console input.
///
/// `net` is the network card's tap as this process has it (the VMM's inherited copy of
/// `config.net`'s).
pub fn run(config: &LinuxConfig, net: Option<&NetBacking>, host: &Host) -> Result<Stop, VmmError> {
    run_as(config, net, host, Start::Cold)
}

/// The machine's parts, however it was made.
struct Parts {
    vcpu: VcpuFd,
    mem: vm_memory::GuestMemoryMmap,
    bus: Bus,
    devices: Devices,
    console: Console,
    /// How the kernel was entered (a restored machine's was, long ago).
    entry: Option<boot::Entry>,
}

/// [`run`], made as `start` says.
pub fn run_as(
    config: &LinuxConfig,
    net: Option<&NetBacking>,
    host: &Host,
    start: Start<'_>,
) -> Result<Stop, VmmError> {
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
    let irq = EventFd::new(libc::EFD_NONBLOCK).map_err(|source| VmmError::Io {
        what: "eventfd",
        source,
    })?;
    vm.register_irqfd(&irq, COM1_IRQ)
        .map_err(ioctl("KVM_IRQFD"))?;
    host.phase("irqchip");

    if config.block.is_some() || config.net.is_some() {
        // The devices' registers sit above RAM; a guest this large would cover them.
        if config.ram_bytes > MMIO_BASE {
            return Err(VmmError::Io {
                what: "place the virtio devices",
                source: std::io::Error::other(format!(
                    "{} MiB of guest RAM reach the devices at {MMIO_BASE:#x}",
                    config.ram_bytes >> 20
                )),
            });
        }
    }
    let log = File::create(&config.console_log).map_err(|source| VmmError::Io {
        what: "create the console log",
        source,
    })?;
    let mut parts = match start {
        Start::Cold | Start::Snapshot(_) => boot_cold(&kvm, &vm, irq, config, net, host, log)?,
        Start::Restore { file, prefault } => {
            restore_from(&kvm, &vm, irq, config, net, host, log, file, prefault)?
        }
    };
    start_input(host, &parts.devices)?;

    let mut exits = ExitCounts::default();
    let mut timed = TimedVcpu::new(&mut parts.vcpu, config.time_limit)?;
    host.phase("kernel_entry");
    timed.start()?;
    let until = match start {
        Start::Snapshot(_) => Until::Ready,
        _ => Until::Stop,
    };
    let mut outcome = serve(
        &mut timed,
        &mut parts.devices,
        &mut parts.bus,
        &mut parts.console,
        host,
        &mut exits,
        until,
    );
    drop(timed);
    if let (Ok(Stop::Ready), Start::Snapshot(file)) = (&outcome, start) {
        if let Err(e) = save(&kvm, &vm, config, &mut parts, host, file) {
            outcome = Err(e);
        }
    }
    let Parts {
        vcpu,
        mem,
        bus,
        mut console,
        entry,
        ..
    } = parts;
    // Stop the device threads before the report of what the instance cost.
    bus.stop_and_report(host, &mut exits);
    // A guest that ran out of time is usually idle, waiting for an interrupt: say which ones
    // the interrupt controllers hold and when its timer would fire.
    let waiting = match outcome {
        Err(VmmError::GuestTimeout { .. }) => format!("{}; ", waiting_for(&vm, &vcpu)),
        _ => String::new(),
    };
    host.lines(console.finish(now_ns()));

    // What this instance cost, whatever happened.
    vmm::report_cost(host, &mem, config.ram_bytes, &exits);
    host.info(
        "boot_protocol",
        match entry {
            Some(boot::Entry::Pvh { .. }) => "pvh",
            Some(boot::Entry::Linux64 { .. }) => "linux-64bit",
            None => "restored",
        },
    );
    let (lines, bytes) = console.received();
    host.info("console_lines", lines);
    host.info("console_bytes", bytes);

    let last_words = match console.last_kernel_line() {
        Some(line) => format!(
            "last console line: {:?}",
            line.chars().take(100).collect::<String>()
        ),
        None => "the guest printed nothing".into(),
    };
    match outcome {
        Ok(Stop::Ready) => Ok(Stop::Ready),
        Ok(stop) => {
            host.phase("reboot");
            if console.saw_done() || console.saw_error() {
                Ok(stop)
            } else {
                Err(VmmError::Stopped {
                    what: format!(
                        "the guest stopped by {} before the workload reported done",
                        stop.describe()
                    ),
                    context: last_words,
                })
            }
        }
        Err(mut e) => {
            if let Some(context) = e.context_mut() {
                *context = format!("{}{waiting}{last_words}", pvm_note());
            }
            if let (Some(Place::At { regs, symbol }), Some(symbols)) =
                (e.place_mut(), &config.symbols)
            {
                *symbol = symbols.name(regs.rip);
            }
            Err(e)
        }
    }
}

/// A cold machine: guest RAM, the vCPU, the devices, the kernel loaded and the vCPU at its
/// entry.
fn boot_cold(
    kvm: &kvm_ioctls::Kvm,
    vm: &VmFd,
    irq: EventFd,
    config: &LinuxConfig,
    net: Option<&NetBacking>,
    host: &Host,
    log: File,
) -> Result<Parts, VmmError> {
    let mem = memory::create(config.ram_bytes)?;
    memory::register(vm, &mem)?;
    host.phase("memory_mapped");
    let vcpu = vm.create_vcpu(0).map_err(ioctl("KVM_CREATE_VCPU"))?;
    host.phase("vcpu_created");
    let bus = make_devices(config, net, vm, &mem, host, None)?;
    if !bus.devices.is_empty() {
        host.phase("devices");
    }
    let slots: Vec<Slot> = bus.devices.iter().map(|(s, _)| *s).collect();
    let rsdp = if config.acpi && !slots.is_empty() {
        Some(crate::linux::acpi::write(&mem, &slots).map_err(|e| {
            VmmError::from(crate::cpu::CpuError::Write {
                what: "ACPI tables",
                detail: e.to_string(),
            })
        })?)
    } else {
        None
    };

    let initrd = std::fs::read(&config.initrd).map_err(|source| VmmError::Io {
        what: "read the initramfs",
        source,
    })?;
    let loaded = boot::load(
        &mem,
        config.ram_bytes,
        &config.kernel,
        &initrd,
        &config.cmdline,
        rsdp,
    )?;
    let cpuid = guest_cpuid(kvm, config)?;
    let leaf1 = cpuid.as_slice().iter().find(|l| l.function == 1);
    crate::linux::mptable::write(&mem, leaf1.map_or(0, |l| l.eax), leaf1.map_or(0, |l| l.edx))
        .map_err(|e| {
            VmmError::from(crate::cpu::CpuError::Write {
                what: "MP table",
                detail: e.to_string(),
            })
        })?;
    cpu::configure(&vcpu, &mem, &cpuid, loaded.entry)?;
    host.phase("kernel_loaded");
    Ok(Parts {
        vcpu,
        mem,
        bus,
        devices: Devices::new(irq),
        console: Console::new(Some(log)),
        entry: Some(loaded.entry),
    })
}

/// The guest's CPUID: what KVM supports, trimmed as [`cpu::guest_cpuid`] says — the same for
/// a cold machine and a restored one, which must see the CPU it was saved on.
fn guest_cpuid(
    kvm: &kvm_ioctls::Kvm,
    config: &LinuxConfig,
) -> Result<kvm_bindings::CpuId, VmmError> {
    let options = cpu::CpuidOptions {
        hide_xsave: config.hide_xsave,
        tsc_deadline: kvm.check_extension(kvm_ioctls::Cap::TscDeadlineTimer),
    };
    Ok(cpu::guest_cpuid(kvm::supported_cpuid(kvm)?, options))
}

/// A machine from a snapshot (see [`crate::linux::snapshot`] for what goes back, and in
/// which order): no kernel is loaded, nothing boots.
#[allow(clippy::too_many_arguments)]
fn restore_from(
    kvm: &kvm_ioctls::Kvm,
    vm: &VmFd,
    irq: EventFd,
    config: &LinuxConfig,
    net: Option<&NetBacking>,
    host: &Host,
    log: File,
    file: &File,
    prefault: bool,
) -> Result<Parts, VmmError> {
    let (header, state) = crate::snapshot::read(file, GuestKind::Linux)?;
    let state = LinuxState::decode(&state)?;
    if let Some((theirs, ours)) = first_difference(&state.cmdline, &config.cmdline) {
        return Err(SnapshotError::OtherCommandLine {
            theirs: theirs.into(),
            ours: ours.into(),
        }
        .into());
    }
    if header.ram_bytes != config.ram_bytes {
        return Err(SnapshotError::Malformed(format!(
            "{} MiB of guest RAM, where this guest has {} MiB",
            header.ram_bytes >> 20,
            config.ram_bytes >> 20
        ))
        .into());
    }
    host.phase("snapshot_read");
    let mem = crate::snapshot::map(file, &header, prefault)?;
    memory::register(vm, &mem)?;
    host.phase("memory_mapped");
    state.vm.apply(vm)?;
    let vcpu = vm.create_vcpu(0).map_err(ioctl("KVM_CREATE_VCPU"))?;
    host.phase("vcpu_created");
    let bus = make_devices(config, net, vm, &mem, host, Some(&state.devices.virtio))?;
    let cpuid = guest_cpuid(kvm, config)?;
    vcpu.set_cpuid2(&cpuid).map_err(ioctl("KVM_SET_CPUID2"))?;
    state.vcpu.apply(&vcpu)?;
    state.vm.apply_clock(vm)?;
    let devices = Devices::restored(irq, &state.devices)?;
    let console = Console::resumed(Some(log), state.devices.console_partial);
    host.phase("state_loaded");
    Ok(Parts {
        vcpu,
        mem,
        bus,
        devices,
        console,
        entry: None,
    })
}

/// The first word in which two command lines differ (`-` where one has none left), if any:
/// what a refusal names, instead of two whole command lines.
fn first_difference<'a>(theirs: &'a str, ours: &'a str) -> Option<(&'a str, &'a str)> {
    let (mut a, mut b) = (theirs.split_whitespace(), ours.split_whitespace());
    loop {
        match (a.next(), b.next()) {
            (None, None) => return None,
            (x, y) if x == y => continue,
            (x, y) => return Some((x.unwrap_or("-"), y.unwrap_or("-"))),
        }
    }
}

/// `out dx, al`: how `/init` writes the marker port (see `isolab_workload::init::MarkerPort`).
const OUT_DX_AL: u8 = 0xee;

/// Save the machine, stopped by [`serve`] at `ready`, into `file`: stamps `snapshot_state` when
/// the state is read, `snapshot_memory` when the file is complete.
fn save(
    kvm: &kvm_ioctls::Kvm,
    vm: &VmFd,
    config: &LinuxConfig,
    parts: &mut Parts,
    host: &Host,
    file: &File,
) -> Result<(), VmmError> {
    host.phase("ready_held");
    let vcpu = &mut parts.vcpu;
    vmm::finish_pending_exit(vcpu)?;
    let mut cpu = VcpuState::of(kvm, vcpu)?;
    // The `out` is in `/init`'s code, at a virtual address of its process: KVM_TRANSLATE
    // walks the guest's page tables to the physical byte.
    let out = cpu.rip().wrapping_sub(1);
    let opcode = vcpu
        .translate_gva(out)
        .ok()
        .filter(|t| t.valid != 0)
        .and_then(|t| {
            parts
                .mem
                .read_obj::<u8>(GuestAddress(t.physical_address))
                .ok()
        });
    if opcode != Some(OUT_DX_AL) {
        return Err(SnapshotError::Malformed(format!(
            "the guest's ready at {out:#x} is not the one-byte `out dx, al` a snapshot rewinds to"
        ))
        .into());
    }
    cpu.set_rip(out);
    // Each device's thread stops between two requests and hands back its queues' positions.
    let mut virtio = Vec::new();
    for (_, transport) in parts.bus.devices.iter_mut() {
        let saved = transport
            .save()
            .map_err(device_error("save a virtio device"))?;
        virtio.push((transport.kind().id(), saved.encode()));
    }
    let state = LinuxState {
        cmdline: config.cmdline.clone(),
        vcpu: cpu,
        vm: VmState::of(vm)?,
        devices: DeviceState {
            virtio,
            console_partial: parts.console.partial().to_vec(),
            ..parts.devices.state()
        },
    };
    host.phase("snapshot_state");
    let written = crate::snapshot::write(
        file,
        GuestKind::Linux,
        &state.encode(),
        &parts.mem,
        config.ram_bytes,
    )?;
    host.phase("snapshot_memory");
    host.info("snapshot_ram_written_bytes", written.ram_written);
    Ok(())
}

/// The interrupts a stopped guest could be waiting for, in one short line: the master PIC's
/// requested, in-service and masked lines (IRQ 0 = PIT, 4 = UART), the local APIC's requested and
/// in-service vectors, and its timer — in TSC-deadline mode, how far in the guest's future the
/// deadline lies. A guest halted with nothing armed and nothing pending sleeps forever; one with
/// an interrupt pending that never arrives points at its delivery.
fn waiting_for(vm: &VmFd, vcpu: &VcpuFd) -> String {
    let mut parts = Vec::new();
    if let Ok(regs) = vcpu.get_regs() {
        parts.push(format!("IF={}", regs.rflags >> 9 & 1));
    }
    let mut pic = kvm_irqchip {
        chip_id: kvm_bindings::KVM_IRQCHIP_PIC_MASTER,
        ..Default::default()
    };
    if vm.get_irqchip(&mut pic).is_ok() {
        // SAFETY: chip_id PIC_MASTER: KVM filled in the `pic` member of the union.
        let p = unsafe { pic.chip.pic };
        parts.push(format!(
            "PIC irr {:#04x} isr {:#04x} imr {:#04x}",
            p.irr, p.isr, p.imr
        ));
    }
    if let Ok(lapic) = vcpu.get_lapic() {
        let reg = |at: usize| u32::from_le_bytes(std::array::from_fn(|i| lapic.regs[at + i] as u8));
        let vectors = |base: usize| -> Vec<String> {
            (0..256)
                .filter(|v| reg(base + v / 32 * 0x10) >> (v % 32) & 1 == 1)
                .map(|v| format!("{v:#x}"))
                .collect()
        };
        parts.push(format!(
            "APIC irr [{}] isr [{}]",
            vectors(0x200).join(" "),
            vectors(0x100).join(" ")
        ));
        let lvtt = reg(0x320);
        let timer = match (lvtt >> 16 & 1, lvtt >> 17 & 3) {
            (1, _) => "masked".to_string(),
            (_, 2) => tsc_deadline(vcpu),
            (_, mode) => format!(
                "{} count {} of {}",
                if mode == 1 { "periodic" } else { "one-shot" },
                reg(0x390),
                reg(0x380)
            ),
        };
        parts.push(format!("APIC timer {timer}"));
    }
    parts.join(", ")
}

/// The TSC-deadline timer: armed for how long from now (guest TSC ticks at KVM's rate).
fn tsc_deadline(vcpu: &VcpuFd) -> String {
    const IA32_TSC: u32 = 0x10;
    const IA32_TSC_DEADLINE: u32 = 0x6e0;
    let entry = |index| kvm_msr_entry {
        index,
        ..Default::default()
    };
    let Ok(mut msrs) = Msrs::from_entries(&[entry(IA32_TSC), entry(IA32_TSC_DEADLINE)]) else {
        return "tsc-deadline".into();
    };
    if vcpu.get_msrs(&mut msrs) != Ok(2) {
        return "tsc-deadline".into();
    }
    let (now, deadline) = (msrs.as_slice()[0].data, msrs.as_slice()[1].data);
    let khz = vcpu.get_tsc_khz().unwrap_or(0) as u64;
    match deadline {
        0 => "tsc-deadline, not armed".into(),
        d if d <= now => "tsc-deadline, expired (interrupt due)".into(),
        d if khz > 0 => format!("tsc-deadline in {} ms", (d - now) / khz),
        _ => "tsc-deadline, armed".into(),
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

/// Where the run loop stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Until {
    /// When the guest stops.
    Stop,
    /// At `/init`'s `ready`, before the guest is entered again.
    Ready,
}

/// The run loop: enter the guest, serve its exit, repeat until it stops (or, with
/// [`Until::Ready`], says `ready`).
fn serve(
    vcpu: &mut TimedVcpu<'_>,
    devices: &mut Devices,
    bus: &mut Bus,
    console: &mut Console,
    host: &Host,
    exits: &mut ExitCounts,
    until: Until,
) -> Result<Stop, VmmError> {
    loop {
        let exit = vcpu.run().map_err(VmmError::Run)?;
        // The stamp of a marker is the moment its exit reached the VMM: take it first.
        let now = now_ns();
        let (cause, fault): (&'static str, Option<Fault>) = match exit {
            VcpuExit::IoOut(port, data) => {
                let what = devices.write(port, data);
                match what {
                    // The console marks `console`, the kernel's first output, itself.
                    PortWrite::Uart => host.lines(console.feed(&devices.take_output(), now)),
                    PortWrite::Marker(Marker::Ready) if until == Until::Ready => {
                        // Held here to be saved: the marker's line is the restored guest's.
                        exits.count_cause(what.cause());
                        return Ok(Stop::Ready);
                    }
                    PortWrite::Marker(m) => console.stamp(m, now),
                    PortWrite::Reset => {
                        exits.count_cause(what.cause());
                        return Ok(Stop::KeyboardReset);
                    }
                    _ => {}
                }
                (what.cause(), None)
            }
            VcpuExit::IoIn(port, data) => (devices.read(port, data), None),
            // The virtio devices' registers; elsewhere reads see all ones, writes vanish.
            VcpuExit::MmioRead(addr, data) => match bus.find(addr) {
                Some((offset, t)) => {
                    t.read(offset, data);
                    (mmio_cause(t.kind()), None)
                }
                None => {
                    data.fill(0xff);
                    ("mmio_unclaimed", None)
                }
            },
            VcpuExit::MmioWrite(addr, data) => match bus.find(addr) {
                Some((offset, t)) => {
                    t.write(offset, data);
                    // A notification that came as an exit (Notify::Exit) is counted as one.
                    if offset == QUEUE_NOTIFY {
                        (notify_cause(t.kind()), None)
                    } else {
                        (mmio_cause(t.kind()), None)
                    }
                }
                None => ("mmio_unclaimed", None),
            },
            // A kick: out of time, or (a stray signal) enter again.
            VcpuExit::Intr => {
                if vcpu.time_up() {
                    exits.count_cause("interrupted");
                    return Err(VmmError::timeout(vcpu));
                }
                ("interrupted", None)
            }
            VcpuExit::Shutdown => {
                exits.count_cause("shutdown");
                return Ok(Stop::TripleFault);
            }
            VcpuExit::SystemEvent(kind, _) => {
                exits.count_cause("system_event");
                return Ok(Stop::SystemEvent(kind));
            }
            VcpuExit::InternalError => ("internal_error", Some(Fault::InternalError)),
            VcpuExit::FailEntry(reason, _) => ("fail_entry", Some(Fault::FailEntry { reason })),
            // With KVM's in-kernel interrupt controller a halted vCPU sleeps in KVM; this exit
            // would mean the guest halted for good.
            VcpuExit::Hlt => ("hlt", Some(Fault::Halt)),
            other => ("unexpected", Some(Fault::Unexpected(format!("{other:?}")))),
        };
        exits.count_cause(cause);
        if let Some(fault) = fault {
            let detail = match fault {
                Fault::InternalError => format!(" ({})", vcpu.internal_error()),
                _ => String::new(),
            };
            let place = Place::after(vcpu.fd(), Some(&fault));
            return Err(VmmError::fault(fault, detail, place));
        }
    }
}

/// A thread that types the lab's go-ahead bytes into the guest's console: what the lab writes
/// on the control pipe goes into the UART's receive FIFO, whose interrupt wakes the guest's
/// `read(0)`. When the lab closes the pipe, one last byte goes in, so a guest waiting for the
/// host ends as a process does at end of file.
fn start_input(host: &Host, devices: &Devices) -> Result<(), VmmError> {
    let uart = std::sync::Arc::clone(&devices.uart);
    let io = |what| move |source| VmmError::Io { what, source };
    let control: OwnedFd = host
        .control()
        .try_clone_to_owned()
        .map_err(io("take the control pipe"))?;
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
        .map_err(io("start the console input thread"))
}

#[cfg(test)]
mod tests {
    use super::first_difference;

    #[test]
    fn a_refused_snapshot_names_the_first_word_its_guest_differs_in() {
        let a = "console=ttyS0 isolab.kernel=net-rr net=10.0.0.2/30 quiet";
        assert_eq!(first_difference(a, a), None);
        assert_eq!(
            first_difference(
                a,
                "console=ttyS0 isolab.kernel=net-rr net=10.0.0.6/30 quiet"
            ),
            Some(("net=10.0.0.2/30", "net=10.0.0.6/30"))
        );
        assert_eq!(first_difference("a b", "a b c"), Some(("-", "c")));
    }
}
