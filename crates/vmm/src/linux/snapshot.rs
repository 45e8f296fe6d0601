//! Snapshots of a Linux guest: the machine saved at `/init`'s `ready`, restored any number of
//! times without booting the kernel again.
//!
//! The bare guest's snapshot ([`crate::snapshot`]) is a vCPU and RAM. A Linux guest's machine
//! holds much more state, and every piece of it must come back exactly, or the restored kernel
//! notices — a timer that never fires, an interrupt that was in service forever, a clock that
//! jumps back:
//!
//! ```text
//!  vCPU   general and special registers, the FPU/SSE/AVX state (XSAVE, with XCR0), debug
//!         registers, every MSR KVM lists (the TSC, the system-call entry points, KVM's clock
//!         and async-PF MSRs, the TSC deadline), pending events (an exception, NMI or
//!         interrupt being injected), the run state (running or halted), and the LOCAL APIC —
//!         its timer, its in-service and requested vectors
//!  VM     the two 8259 PICs and the I/O APIC (KVM_CREATE_IRQCHIP's), the 8254 PIT
//!         (KVM_CREATE_PIT2's), and KVM's clock (the guest's kvmclock time base)
//!  VMM    the 16550 UART (its registers and the bytes waiting for the guest), the CMOS
//!         clock's selected register, the console's unfinished line, and each virtio device:
//!         its registers and its queues' positions
//!  RAM    as the bare guest's: the snapshot file's pages, mapped MAP_PRIVATE
//! ```
//!
//! # When it is taken
//!
//! At `/init`'s `ready`: the workload writes the marker port from user mode (`out dx, al`,
//! one byte, `0xee`), the vCPU exits to the VMM, and instead of entering it again the VMM
//! finishes the exit (`KVM_RUN` with `immediate_exit`, as [`crate::vmm::finish_pending_exit`]
//! explains), moves RIP back onto that `out` — checked through the guest's own page tables
//! (`KVM_TRANSLATE`) — and saves everything above. A restored guest's first instruction is that
//! `out` again: its first act is to say `ready` itself, on the restored machine.
//!
//! # Order on restore
//!
//! KVM checks some state against other state, so it goes back in an order: the interrupt
//! controllers and PIT of the VM before the vCPU exists; then CPUID (the same the cold boot
//! gave), run state, registers, special registers (they set the mode the rest is read in),
//! XSAVE and XCR0, debug registers, the local APIC (whose base address is in the special
//! registers), the MSRs — the TSC first, since the TSC deadline is a point on it — the pending
//! events, and last KVM's clock, right after the TSC it must agree with.
//!
//! # What is refused
//!
//! The state is read as hostile, as the file it comes from: every piece must be exactly the
//! size of its KVM structure, counts are bounded, and the command line in the snapshot must be
//! the one the lab would boot now — the same kernel arguments, hence the same workload.

use crate::snapshot::{bytes_of, from_bytes, Plain, SnapshotError};
use kvm_bindings::{
    kvm_clock_data, kvm_debugregs, kvm_fpu, kvm_irqchip, kvm_lapic_state, kvm_mp_state,
    kvm_msr_entry, kvm_pit_state2, kvm_regs, kvm_sregs, kvm_vcpu_events, kvm_xcrs, kvm_xsave, Msrs,
    KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE,
};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use vm_superio::serial::SerialState;

/// The layout of the state below (inside a [`crate::snapshot`] file of the Linux kind).
const STATE_VERSION: u32 = 1;
/// The most MSRs a state may hold (KVM lists about a hundred).
const MAX_MSRS: usize = 1024;
/// The most bytes of any variable-length piece (a command line, a device's state).
const MAX_PIECE: usize = 64 * 1024;
/// The most virtio devices (the machine has a disk and a network card at most).
const MAX_DEVICES: usize = 8;
/// The legacy XSAVE area's size in 32-bit words (KVM_GET_XSAVE's 4 KiB).
const XSAVE_WORDS: usize = 1024;
/// A 64-bit TSS's type in its descriptor: busy (the task register holds it) and available.
const TSS_BUSY: u8 = 0xb;
const TSS_AVAILABLE: u8 = 0x9;
/// `IA32_TSC`: restored first, since other MSRs (the TSC deadline) are points on it.
const IA32_TSC: u32 = 0x10;
/// `IA32_TSC_DEADLINE`: restored after the TSC and the local APIC it arms.
const IA32_TSC_DEADLINE: u32 = 0x6e0;

impl Plain for kvm_lapic_state {}
impl Plain for kvm_irqchip {}
impl Plain for kvm_pit_state2 {}
impl Plain for kvm_clock_data {}
impl Plain for kvm_vcpu_events {}
impl Plain for kvm_mp_state {}
impl Plain for kvm_debugregs {}
impl Plain for kvm_xcrs {}

fn ioctl(op: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> SnapshotError {
    move |source| SnapshotError::Ioctl { op, source }
}

fn malformed(what: &str) -> SnapshotError {
    SnapshotError::Malformed(format!("the Linux guest's {what}"))
}

/// The vCPU's state.
#[derive(Clone, Default)]
pub struct VcpuState {
    regs: kvm_regs,
    sregs: kvm_sregs,
    fpu: kvm_fpu,
    /// The XSAVE area (x87, SSE, AVX...: `kvm_xsave`'s 4 KiB), where KVM has XSAVE; else the
    /// FPU above is all.
    xsave: Option<Box<[u32; XSAVE_WORDS]>>,
    xcrs: Option<kvm_xcrs>,
    debugregs: kvm_debugregs,
    lapic: kvm_lapic_state,
    events: kvm_vcpu_events,
    mp_state: kvm_mp_state,
    /// (index, value), the TSC first.
    msrs: Vec<(u32, u64)>,
}

/// The VM's in-kernel devices.
#[derive(Clone, Default)]
pub struct VmState {
    pic_master: kvm_irqchip,
    pic_slave: kvm_irqchip,
    ioapic: kvm_irqchip,
    pit: kvm_pit_state2,
    clock: kvm_clock_data,
}

/// The VMM's own devices.
#[derive(Clone, Debug, Default)]
pub struct DeviceState {
    /// The UART.
    pub serial: SerialState,
    /// The CMOS register the guest selected.
    pub rtc_index: u8,
    /// The console line the guest had begun and not finished.
    pub console_partial: Vec<u8>,
    /// Each virtio device, in slot order: its kind's id and its transport's encoded state.
    pub virtio: Vec<(u32, Vec<u8>)>,
}

/// Everything a Linux guest's snapshot holds besides RAM.
#[derive(Clone, Default)]
pub struct LinuxState {
    /// The kernel command line it was booted with.
    pub cmdline: String,
    /// The vCPU.
    pub vcpu: VcpuState,
    /// The in-kernel interrupt controllers, PIT and clock.
    pub vm: VmState,
    /// The VMM's devices.
    pub devices: DeviceState,
}

/// The MSRs KVM can save for this vCPU: those of `KVM_GET_MSR_INDEX_LIST` that it reads back
/// (the list names some a given CPU lacks), the TSC first.
fn saved_msrs(kvm: &Kvm, vcpu: &VcpuFd) -> Result<Vec<(u32, u64)>, SnapshotError> {
    let list = kvm
        .get_msr_index_list()
        .map_err(ioctl("KVM_GET_MSR_INDEX_LIST"))?;
    let mut indices: Vec<u32> = list.as_slice().to_vec();
    in_restore_order(&mut indices);
    let mut saved = Vec::with_capacity(indices.len());
    let mut rest: &[u32] = &indices;
    // KVM_GET_MSRS stops at the first MSR it cannot read and says how many it read: save
    // those, skip the one it refused, go on from the next.
    while !rest.is_empty() {
        let entries: Vec<kvm_msr_entry> = rest
            .iter()
            .map(|&index| kvm_msr_entry {
                index,
                ..Default::default()
            })
            .collect();
        let mut msrs =
            Msrs::from_entries(&entries).map_err(|e| malformed(&format!("MSR list ({e:?})")))?;
        let read = vcpu.get_msrs(&mut msrs).map_err(ioctl("KVM_GET_MSRS"))?;
        saved.extend(msrs.as_slice()[..read].iter().map(|m| (m.index, m.data)));
        rest = &rest[(read + 1).min(rest.len())..];
    }
    Ok(saved)
}

/// Sort MSR indices as they are saved and restored: the TSC first, its deadline last.
fn in_restore_order(indices: &mut Vec<u32>) {
    indices.sort_by_key(|&i| (i != IA32_TSC, i == IA32_TSC_DEADLINE, i));
    indices.dedup();
}

impl VcpuState {
    /// Read the state of a vCPU that has finished its last exit (see the module documentation).
    pub fn of(kvm: &Kvm, vcpu: &VcpuFd) -> Result<VcpuState, SnapshotError> {
        let xsave = if kvm.check_extension(kvm_ioctls::Cap::Xsave) {
            Some(Box::new(
                vcpu.get_xsave().map_err(ioctl("KVM_GET_XSAVE"))?.region,
            ))
        } else {
            None
        };
        let xcrs = if kvm.check_extension(kvm_ioctls::Cap::Xcrs) {
            Some(vcpu.get_xcrs().map_err(ioctl("KVM_GET_XCRS"))?)
        } else {
            None
        };
        let mut sregs = vcpu.get_sregs().map_err(ioctl("KVM_GET_SREGS"))?;
        if crate::cpu::Vendor::of_host() == crate::cpu::Vendor::Amd && sregs.tr.type_ == TSS_BUSY {
            // AMD-V keeps the task register in the VMCB without the TSS's busy bit, and KVM's
            // SVM code adds it to what KVM_GET_SREGS reports (so that the value is valid on
            // VT-x, which requires it). Put back what the VMCB held: an emulated AMD CPU
            // (QEMU's) refuses user-mode port I/O — `/init`'s marker writes — through a task
            // register it does not find "available".
            sregs.tr.type_ = TSS_AVAILABLE;
        }
        Ok(VcpuState {
            regs: vcpu.get_regs().map_err(ioctl("KVM_GET_REGS"))?,
            sregs,
            fpu: vcpu.get_fpu().map_err(ioctl("KVM_GET_FPU"))?,
            xsave,
            xcrs,
            debugregs: vcpu.get_debug_regs().map_err(ioctl("KVM_GET_DEBUGREGS"))?,
            lapic: vcpu.get_lapic().map_err(ioctl("KVM_GET_LAPIC"))?,
            events: vcpu
                .get_vcpu_events()
                .map_err(ioctl("KVM_GET_VCPU_EVENTS"))?,
            mp_state: vcpu.get_mp_state().map_err(ioctl("KVM_GET_MP_STATE"))?,
            msrs: saved_msrs(kvm, vcpu)?,
        })
    }

    /// Where the vCPU is: its instruction pointer.
    pub fn rip(&self) -> u64 {
        self.regs.rip
    }

    /// Move the instruction pointer (onto the `out` of `ready`).
    pub fn set_rip(&mut self, rip: u64) {
        self.regs.rip = rip;
    }

    /// Give this state to `vcpu`, whose CPUID is set, in the order of the module documentation.
    pub fn apply(&self, vcpu: &VcpuFd) -> Result<(), SnapshotError> {
        vcpu.set_mp_state(self.mp_state)
            .map_err(ioctl("KVM_SET_MP_STATE"))?;
        vcpu.set_regs(&self.regs).map_err(ioctl("KVM_SET_REGS"))?;
        vcpu.set_sregs(&self.sregs)
            .map_err(ioctl("KVM_SET_SREGS"))?;
        match &self.xsave {
            Some(region) => {
                let xsave = kvm_xsave {
                    region: **region,
                    ..Default::default()
                };
                // SAFETY: a whole legacy `kvm_xsave` (4 KiB, no part beyond it), as
                // KVM_SET_XSAVE reads it; KVM checks its contents against the vCPU's CPUID.
                unsafe { vcpu.set_xsave(&xsave) }.map_err(ioctl("KVM_SET_XSAVE"))?
            }
            None => vcpu.set_fpu(&self.fpu).map_err(ioctl("KVM_SET_FPU"))?,
        }
        if let Some(xcrs) = &self.xcrs {
            vcpu.set_xcrs(xcrs).map_err(ioctl("KVM_SET_XCRS"))?;
        }
        vcpu.set_debug_regs(&self.debugregs)
            .map_err(ioctl("KVM_SET_DEBUGREGS"))?;
        vcpu.set_lapic(&self.lapic)
            .map_err(ioctl("KVM_SET_LAPIC"))?;
        let entries: Vec<kvm_msr_entry> = self
            .msrs
            .iter()
            .map(|&(index, data)| kvm_msr_entry {
                index,
                data,
                ..Default::default()
            })
            .collect();
        let msrs =
            Msrs::from_entries(&entries).map_err(|e| malformed(&format!("MSR list ({e:?})")))?;
        let set = vcpu.set_msrs(&msrs).map_err(ioctl("KVM_SET_MSRS"))?;
        if set != entries.len() {
            return Err(SnapshotError::Malformed(format!(
                "KVM refused to restore MSR {:#x}",
                entries[set].index
            )));
        }
        vcpu.set_vcpu_events(&self.events)
            .map_err(ioctl("KVM_SET_VCPU_EVENTS"))
    }
}

fn irqchip(vm: &VmFd, chip_id: u32) -> Result<kvm_irqchip, SnapshotError> {
    let mut chip = kvm_irqchip {
        chip_id,
        ..Default::default()
    };
    vm.get_irqchip(&mut chip)
        .map_err(ioctl("KVM_GET_IRQCHIP"))?;
    Ok(chip)
}

impl VmState {
    /// Read the VM's interrupt controllers, PIT and clock.
    pub fn of(vm: &VmFd) -> Result<VmState, SnapshotError> {
        Ok(VmState {
            pic_master: irqchip(vm, KVM_IRQCHIP_PIC_MASTER)?,
            pic_slave: irqchip(vm, KVM_IRQCHIP_PIC_SLAVE)?,
            ioapic: irqchip(vm, KVM_IRQCHIP_IOAPIC)?,
            pit: vm.get_pit2().map_err(ioctl("KVM_GET_PIT2"))?,
            clock: vm.get_clock().map_err(ioctl("KVM_GET_CLOCK"))?,
        })
    }

    /// Give the interrupt controllers and the PIT to `vm`, whose irqchip and PIT exist and
    /// which has no vCPU yet.
    pub fn apply(&self, vm: &VmFd) -> Result<(), SnapshotError> {
        vm.set_pit2(&self.pit).map_err(ioctl("KVM_SET_PIT2"))?;
        for (chip, id) in [
            (&self.pic_master, KVM_IRQCHIP_PIC_MASTER),
            (&self.pic_slave, KVM_IRQCHIP_PIC_SLAVE),
            (&self.ioapic, KVM_IRQCHIP_IOAPIC),
        ] {
            if chip.chip_id != id {
                return Err(malformed("interrupt controllers"));
            }
            vm.set_irqchip(chip).map_err(ioctl("KVM_SET_IRQCHIP"))?;
        }
        Ok(())
    }

    /// Give KVM's clock back — last, just after the vCPU's TSC: the guest's kvmclock counts
    /// from KVM's clock and its TSC together, and the kernel's clocksource watchdog compares
    /// them. Set apart by the rest of the restore (milliseconds, on a slow host), they would
    /// disagree by that much, and the guest would call its TSC unstable.
    pub fn apply_clock(&self, vm: &VmFd) -> Result<(), SnapshotError> {
        // Only the time is restored; the flags KVM_GET_CLOCK reported (whether the clock is
        // stable, which fields are valid) are not inputs.
        let clock = kvm_clock_data {
            clock: self.clock.clock,
            ..Default::default()
        };
        vm.set_clock(&clock).map_err(ioctl("KVM_SET_CLOCK"))
    }
}

/// Little-endian pieces, each with its length first.
struct Writer(Vec<u8>);

impl Writer {
    fn piece(&mut self, bytes: &[u8]) {
        self.0
            .extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        self.0.extend_from_slice(bytes);
    }

    fn plain<T: Plain>(&mut self, value: &T) {
        self.piece(bytes_of(value));
    }

    fn u32(&mut self, value: u32) {
        self.piece(&value.to_le_bytes());
    }
}

/// The other way, refusing anything that is not exactly what [`Writer`] wrote.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn piece(&mut self, what: &str) -> Result<&'a [u8], SnapshotError> {
        let (len, rest) = self.0.split_at_checked(4).ok_or_else(|| malformed(what))?;
        let len = u32::from_le_bytes(len.try_into().map_err(|_| malformed(what))?) as usize;
        if len > MAX_PIECE {
            return Err(malformed(what));
        }
        let (piece, rest) = rest.split_at_checked(len).ok_or_else(|| malformed(what))?;
        self.0 = rest;
        Ok(piece)
    }

    fn plain<T: Plain>(&mut self, what: &str) -> Result<T, SnapshotError> {
        from_bytes(self.piece(what)?).ok_or_else(|| malformed(what))
    }

    fn u32(&mut self, what: &str) -> Result<u32, SnapshotError> {
        let bytes = self.piece(what)?;
        Ok(u32::from_le_bytes(
            bytes.try_into().map_err(|_| malformed(what))?,
        ))
    }

    fn u8(&mut self, what: &str) -> Result<u8, SnapshotError> {
        match self.piece(what)? {
            [b] => Ok(*b),
            _ => Err(malformed(what)),
        }
    }
}

impl LinuxState {
    /// The state as the snapshot file holds it.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer(Vec::with_capacity(16 * 1024));
        w.u32(STATE_VERSION);
        w.piece(self.cmdline.as_bytes());
        let v = &self.vcpu;
        w.plain(&v.regs);
        w.plain(&v.sregs);
        w.plain(&v.fpu);
        match &v.xsave {
            Some(region) => {
                let bytes: Vec<u8> = region.iter().flat_map(|w| w.to_le_bytes()).collect();
                w.piece(&bytes)
            }
            None => w.piece(&[]),
        }
        match &v.xcrs {
            Some(x) => w.plain(x),
            None => w.piece(&[]),
        }
        w.plain(&v.debugregs);
        w.plain(&v.lapic);
        w.plain(&v.events);
        w.plain(&v.mp_state);
        w.u32(v.msrs.len() as u32);
        for (index, value) in &v.msrs {
            let mut entry = index.to_le_bytes().to_vec();
            entry.extend_from_slice(&value.to_le_bytes());
            w.piece(&entry);
        }
        let m = &self.vm;
        for chip in [&m.pic_master, &m.pic_slave, &m.ioapic] {
            w.plain(chip);
        }
        w.plain(&m.pit);
        w.plain(&m.clock);
        let d = &self.devices;
        let s = &d.serial;
        w.piece(&[
            s.baud_divisor_low,
            s.baud_divisor_high,
            s.interrupt_enable,
            s.interrupt_identification,
            s.line_control,
            s.line_status,
            s.modem_control,
            s.modem_status,
            s.scratch,
        ]);
        w.piece(&s.in_buffer);
        w.piece(&[d.rtc_index]);
        w.piece(&d.console_partial);
        w.u32(d.virtio.len() as u32);
        for (kind, state) in &d.virtio {
            w.u32(*kind);
            w.piece(state);
        }
        w.0
    }

    /// The state from a snapshot's bytes, checked piece by piece.
    pub fn decode(bytes: &[u8]) -> Result<LinuxState, SnapshotError> {
        let mut r = Reader(bytes);
        let version = r.u32("state version")?;
        if version != STATE_VERSION {
            return Err(SnapshotError::Malformed(format!(
                "a Linux guest's state of version {version}, this VMM reads {STATE_VERSION}"
            )));
        }
        let cmdline = String::from_utf8(r.piece("command line")?.to_vec())
            .map_err(|_| malformed("command line"))?;
        let regs = r.plain("registers")?;
        let sregs = r.plain("special registers")?;
        let fpu = r.plain("FPU state")?;
        let xsave = match r.piece("XSAVE area")? {
            [] => None,
            bytes if bytes.len() == XSAVE_WORDS * 4 => {
                let mut region = Box::new([0u32; XSAVE_WORDS]);
                for (word, b) in region.iter_mut().zip(bytes.chunks_exact(4)) {
                    *word = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                }
                Some(region)
            }
            _ => return Err(malformed("XSAVE area")),
        };
        let xcrs = match r.piece("XCRs")? {
            [] => None,
            bytes => Some(from_bytes::<kvm_xcrs>(bytes).ok_or_else(|| malformed("XCRs"))?),
        };
        let debugregs = r.plain("debug registers")?;
        let lapic = r.plain("local APIC")?;
        let events = r.plain("vCPU events")?;
        let mp_state = r.plain("run state")?;
        let count = r.u32("MSR count")? as usize;
        if count > MAX_MSRS {
            return Err(malformed("MSR count"));
        }
        let mut msrs = Vec::with_capacity(count);
        for _ in 0..count {
            let entry = r.piece("MSRs")?;
            if entry.len() != 12 {
                return Err(malformed("MSRs"));
            }
            let index = u32::from_le_bytes(entry[..4].try_into().map_err(|_| malformed("MSRs"))?);
            let value = u64::from_le_bytes(entry[4..].try_into().map_err(|_| malformed("MSRs"))?);
            msrs.push((index, value));
        }
        let pic_master = r.plain("master PIC")?;
        let pic_slave = r.plain("slave PIC")?;
        let ioapic = r.plain("I/O APIC")?;
        let pit = r.plain("PIT")?;
        let clock = r.plain("clock")?;
        let regs_uart = r.piece("UART")?;
        let [baud_divisor_low, baud_divisor_high, interrupt_enable, interrupt_identification, line_control, line_status, modem_control, modem_status, scratch] =
            <[u8; 9]>::try_from(regs_uart).map_err(|_| malformed("UART"))?;
        let serial = SerialState {
            baud_divisor_low,
            baud_divisor_high,
            interrupt_enable,
            interrupt_identification,
            line_control,
            line_status,
            modem_control,
            modem_status,
            scratch,
            in_buffer: r.piece("UART's input")?.to_vec(),
        };
        let rtc_index = r.u8("CMOS clock")?;
        let console_partial = r.piece("console line")?.to_vec();
        let devices = r.u32("virtio device count")? as usize;
        if devices > MAX_DEVICES {
            return Err(malformed("virtio device count"));
        }
        let mut virtio = Vec::with_capacity(devices);
        for _ in 0..devices {
            let kind = r.u32("virtio device")?;
            virtio.push((kind, r.piece("virtio device")?.to_vec()));
        }
        if !r.0.is_empty() {
            return Err(malformed("state (bytes after its end)"));
        }
        Ok(LinuxState {
            cmdline,
            vcpu: VcpuState {
                regs,
                sregs,
                fpu,
                xsave,
                xcrs,
                debugregs,
                lapic,
                events,
                mp_state,
                msrs,
            },
            vm: VmState {
                pic_master,
                pic_slave,
                ioapic,
                pit,
                clock,
            },
            devices: DeviceState {
                serial,
                rtc_index,
                console_partial,
                virtio,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> LinuxState {
        let mut s = LinuxState {
            cmdline: "console=ttyS0 isolab.kernel=mem".into(),
            ..Default::default()
        };
        s.vcpu.regs.rip = 0x4000_1234;
        s.vcpu.xsave = Some(Box::new([7; XSAVE_WORDS]));
        s.vcpu.msrs = vec![(IA32_TSC, 42), (0xc000_0082, 0xffff_ffff_8100_0000)];
        s.vm.pic_slave.chip_id = KVM_IRQCHIP_PIC_SLAVE;
        s.vm.ioapic.chip_id = KVM_IRQCHIP_IOAPIC;
        s.vm.clock.clock = 123_456_789;
        s.devices.serial.in_buffer = b"go".to_vec();
        s.devices.console_partial = b"isolab pha".to_vec();
        s.devices.virtio = vec![(2, vec![1, 2, 3])];
        s
    }

    #[test]
    fn a_state_reads_back_as_written() {
        let s = sample();
        let bytes = s.encode();
        let back = LinuxState::decode(&bytes).unwrap();
        assert_eq!(back.encode(), bytes);
        assert_eq!(back.cmdline, s.cmdline);
        assert_eq!(back.vcpu.rip(), 0x4000_1234);
        assert_eq!(back.vcpu.msrs, s.vcpu.msrs);
        assert_eq!(back.vm.clock.clock, 123_456_789);
        assert_eq!(back.devices.serial.in_buffer, b"go");
        assert_eq!(back.devices.console_partial, b"isolab pha");
        assert_eq!(back.devices.virtio, vec![(2, vec![1, 2, 3])]);
    }

    #[test]
    fn every_cut_and_a_foreign_version_are_refused_without_a_panic() {
        let bytes = sample().encode();
        // Every prefix is refused: no piece may run past the end.
        for len in 0..bytes.len() {
            assert!(LinuxState::decode(&bytes[..len]).is_err(), "cut at {len}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(LinuxState::decode(&longer).is_err());
        let mut other = bytes.clone();
        other[4..8].copy_from_slice(&9u32.to_le_bytes());
        let e = LinuxState::decode(&other).err().unwrap().to_string();
        assert!(e.contains("version 9"), "{e}");
        // A length that claims more than a piece may hold.
        let mut huge = bytes;
        huge[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(LinuxState::decode(&huge).is_err());
    }

    #[test]
    fn the_tsc_is_restored_first_and_its_deadline_after_the_rest() {
        let mut indices = vec![0xc000_0082u32, IA32_TSC_DEADLINE, 0x1b, IA32_TSC, 0x1b];
        in_restore_order(&mut indices);
        assert_eq!(indices, [IA32_TSC, 0x1b, 0xc000_0082, IA32_TSC_DEADLINE]);
    }
}
