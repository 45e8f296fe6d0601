//! ACPI tables: how a distribution kernel learns about the VMM's virtio devices.
//!
//! A kernel finds memory-mapped devices only if something describes them. `lab kernel build`'s
//! kernel takes them from its command line (`virtio_mmio.device=4K@0xd0000000:5`, which needs
//! `CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES`); Debian's kernel lacks that option, but like every PC
//! kernel it reads **ACPI** — the firmware's description of the machine — and its `virtio_mmio`
//! driver binds to ACPI devices with the hardware ID `LNRO0005` (drivers/virtio/virtio_mmio.c,
//! `virtio_mmio_acpi_match`). So for such kernels the VMM writes what a PC's firmware would, the
//! smallest set that says "no legacy PC hardware, these interrupt controllers, these devices"
//! (as QEMU's `microvm` machine and Firecracker do):
//!
//! ```text
//!  0xe0000  RSDP "RSD PTR "  the root pointer: where the kernel starts (it scans 0xe0000–0xfffff
//!     │                      for it on 16-byte boundaries, or takes it from the boot protocol)
//!     ▼
//!  XSDT     the list of the other tables (64-bit addresses)
//!     ├──► FADT "FACP"  fixed hardware: HW_REDUCED_ACPI — no PM timer, no SCI, no legacy PIC
//!     │       └──► DSDT  the device tree in AML bytecode:
//!     │                   \_SB.COM1  PNP0501  I/O 0x3f8–0x3ff, IRQ 4        (the console UART)
//!     │                   \_SB.VR00  LNRO0005 memory 0xd0000000, 4 KiB, IRQ 5 (virtio-mmio)
//!     │                   \_SB.VR01  LNRO0005 memory 0xd0001000, 4 KiB, IRQ 6
//!     └──► MADT "APIC"  local APIC 0 (the one vCPU), I/O APIC 1 at 0xfec00000, GSIs from 0
//! ```
//!
//! Every table starts with a 36-byte header (signature, length, checksum, OEM IDs) and its
//! bytes add up to zero. The rust-vmm `acpi_tables` crate writes the tables and the AML.
//!
//! # What ACPI changes for the kernel
//!
//! A kernel that finds ACPI tables takes its interrupt controllers from the **MADT** and ignores
//! the MP table ([`crate::linux::mptable`], still written for kernels without ACPI): both describe the
//! same I/O APIC, so interrupts keep their pins. `HW_REDUCED_ACPI` tells it the machine has no
//! legacy PC chipset: it sets up no 8259 PIC and no PIT timer (the local APIC's TSC-deadline
//! timer and kvm-clock do the work) and reserves no ISA interrupts, so the UART's IRQ 4 must be
//! declared too — hence `COM1` in the DSDT, which the kernel's `8250_pnp` driver binds. The
//! kernel learns the virtio devices' interrupts from their `_CRS` (edge-triggered, active high,
//! as the irqfd pulses them).

use crate::linux::virtio::{Slot, MMIO_SIZE};
use acpi_tables::aml;
use acpi_tables::fadt::{FADTBuilder, Flags};
use acpi_tables::madt::{
    EnabledStatus, IoApic, LocalInterruptController, ProcessorLocalApic, MADT,
};
use acpi_tables::rsdp::Rsdp;
use acpi_tables::sdt::Sdt;
use acpi_tables::xsdt::XSDT;
use acpi_tables::Aml;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Where the tables start: the BIOS area the kernel scans for the RSDP (reserved in the e820
/// map, so the kernel never reuses it).
pub const RSDP_ADDR: u64 = 0xe_0000;
/// The end of the area the tables may fill.
const END: u64 = 0x10_0000;

const OEM_ID: [u8; 6] = *b"ISOLAB";
const OEM_TABLE_ID: [u8; 8] = *b"MICROVM ";
const OEM_REVISION: u32 = 1;

/// The I/O APIC KVM emulates (as in the MP table).
const IOAPIC_ID: u8 = 1;
const IOAPIC_ADDR: u32 = 0xfec0_0000;
const LAPIC_ADDR: u32 = 0xfee0_0000;
/// The console UART.
const COM1_PORT: u16 = 0x3f8;
const COM1_IRQ: u32 = 4;

/// FADT "IA-PC boot architecture" flags: no VGA (bit 2), no MSI (bit 3), no ASPM control (bit 4).
/// Bit 1 (an i8042 is present) stays clear: the kernel probes no keyboard; `reboot=k` still
/// writes the reset command itself.
const IAPC_BOOT_ARCH: u16 = 1 << 2 | 1 << 3 | 1 << 4;

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum AcpiError {
    /// The tables do not fit below 1 MiB.
    #[error("the ACPI tables ({0} bytes) do not fit in the BIOS area")]
    TooLarge(u64),
    /// Writing into guest memory failed.
    #[error("writing the ACPI tables: {0}")]
    Write(#[from] vm_memory::GuestMemoryError),
}

/// The DSDT: the UART and one `LNRO0005` device per virtio-mmio slot.
pub fn dsdt(devices: &[Slot]) -> Vec<u8> {
    let mut body: Vec<u8> = Vec::new();
    let (com1_io, com1_irq) = (
        aml::IO::new(COM1_PORT, COM1_PORT, 1, 8),
        aml::Interrupt::new(true, true, false, false, COM1_IRQ),
    );
    let com1_crs = aml::ResourceTemplate::new(vec![&com1_io, &com1_irq]);
    aml::Device::new(
        "\\_SB_.COM1".into(),
        vec![
            &aml::Name::new("_HID".into(), &aml::EISAName::new("PNP0501")),
            &aml::Name::new("_UID".into(), &aml::ZERO),
            &aml::Name::new("_CRS".into(), &com1_crs),
        ],
    )
    .to_aml_bytes(&mut body);
    for (i, slot) in devices.iter().enumerate() {
        let window = aml::Memory32Fixed::new(true, slot.base as u32, MMIO_SIZE as u32);
        // Consumer, edge-triggered, active high, exclusive.
        let irq = aml::Interrupt::new(true, true, false, false, slot.irq);
        let crs = aml::ResourceTemplate::new(vec![&window, &irq]);
        let uid = i as u8;
        let path = format!("\\_SB_.VR{i:02}");
        aml::Device::new(
            path.as_str().into(),
            vec![
                &aml::Name::new("_HID".into(), &"LNRO0005"),
                &aml::Name::new("_UID".into(), &uid),
                &aml::Name::new("_CRS".into(), &crs),
            ],
        )
        .to_aml_bytes(&mut body);
    }
    let mut table = Sdt::new(*b"DSDT", 36, 6, OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    table.append_slice(&body);
    table.update_checksum();
    table.as_slice().to_vec()
}

/// The MADT: one local APIC (the one vCPU) and KVM's I/O APIC, its pins from GSI 0.
pub fn madt() -> Vec<u8> {
    let mut madt = MADT::new(
        OEM_ID,
        OEM_TABLE_ID,
        OEM_REVISION,
        LocalInterruptController::Address(LAPIC_ADDR),
    );
    madt.add_structure(ProcessorLocalApic::new(0, 0, EnabledStatus::Enabled));
    madt.add_structure(IoApic::new(IOAPIC_ID, IOAPIC_ADDR, 0));
    let mut bytes = Vec::new();
    madt.to_aml_bytes(&mut bytes);
    bytes
}

/// The FADT of a hardware-reduced machine whose DSDT is at `dsdt`.
pub fn fadt(dsdt: u64) -> Vec<u8> {
    let mut fadt = FADTBuilder::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION)
        .flag(Flags::HwReducedAcpi)
        .flag(Flags::PwrButton)
        .flag(Flags::SlpButton)
        .dsdt_64(dsdt);
    fadt.iapc_boot_arch = IAPC_BOOT_ARCH.into();
    let mut bytes = Vec::new();
    fadt.finalize().to_aml_bytes(&mut bytes);
    bytes
}

/// Every table and where it goes, RSDP first, for a machine with `devices`.
pub fn tables(devices: &[Slot]) -> Result<Vec<(u64, Vec<u8>)>, AcpiError> {
    let align = |a: u64| a.div_ceil(16) * 16;
    let rsdp_len = Rsdp::len() as u64;
    let xsdt_at = align(RSDP_ADDR + rsdp_len);
    // XSDT: a header and three 8-byte pointers.
    let fadt_at = align(xsdt_at + 36 + 3 * 8);
    let madt_at = align(fadt_at + acpi_tables::fadt::FADT::len() as u64);
    let madt = madt();
    let dsdt_at = align(madt_at + madt.len() as u64);
    let dsdt = dsdt(devices);
    let end = dsdt_at + dsdt.len() as u64;
    if end > END {
        return Err(AcpiError::TooLarge(end - RSDP_ADDR));
    }
    let mut xsdt = XSDT::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    for at in [fadt_at, madt_at, dsdt_at] {
        // The DSDT is reached through the FADT, but listing it is harmless and helps readers.
        if at != dsdt_at {
            xsdt.add_entry(at);
        }
    }
    let mut xsdt_bytes = Vec::new();
    xsdt.to_aml_bytes(&mut xsdt_bytes);
    let mut rsdp = Vec::new();
    Rsdp::new(OEM_ID, xsdt_at).to_aml_bytes(&mut rsdp);
    Ok(vec![
        (RSDP_ADDR, rsdp),
        (xsdt_at, xsdt_bytes),
        (fadt_at, fadt(dsdt_at)),
        (madt_at, madt),
        (dsdt_at, dsdt),
    ])
}

/// Write the tables for `devices` into guest memory; the RSDP's address.
pub fn write(mem: &GuestMemoryMmap, devices: &[Slot]) -> Result<u64, AcpiError> {
    for (at, bytes) in tables(devices)? {
        mem.write_slice(&bytes, GuestAddress(at))?;
    }
    Ok(RSDP_ADDR)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(bytes: &[u8]) -> u8 {
        bytes.iter().fold(0u8, |s, b| s.wrapping_add(*b))
    }

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
    }

    fn u64_at(b: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
    }

    #[test]
    fn every_table_adds_up_to_zero_and_says_its_length() {
        let t = tables(&[Slot::nth(0), Slot::nth(1)]).unwrap();
        let (_, rsdp) = &t[0];
        assert_eq!(&rsdp[..8], b"RSD PTR ");
        assert_eq!(sum(&rsdp[..20]), 0, "the ACPI 1.0 checksum");
        assert_eq!(sum(rsdp), 0, "the extended checksum");
        for (_, table) in &t[1..] {
            assert_eq!(u32_at(table, 4) as usize, table.len(), "{:?}", &table[..4]);
            assert_eq!(sum(table), 0, "{:?}", &table[..4]);
        }
        let sigs: Vec<&[u8]> = t[1..].iter().map(|(_, b)| &b[..4]).collect();
        assert_eq!(sigs, [b"XSDT", b"FACP", b"APIC", b"DSDT"]);
    }

    #[test]
    fn the_pointers_lead_from_the_rsdp_to_every_table() {
        let t = tables(&[Slot::nth(0)]).unwrap();
        let at = |addr: u64| &t.iter().find(|(a, _)| *a == addr).unwrap().1;
        let xsdt = at(u64_at(&t[0].1, 24));
        assert_eq!(&xsdt[..4], b"XSDT");
        let fadt = at(u64_at(xsdt, 36));
        assert_eq!(&fadt[..4], b"FACP");
        let madt = at(u64_at(xsdt, 44));
        assert_eq!(&madt[..4], b"APIC");
        // FADT: the flags at 112 say hardware-reduced (bit 20); X_DSDT at 140.
        assert_ne!(u32_at(fadt, 112) & 1 << 20, 0);
        assert_eq!(&at(u64_at(fadt, 140))[..4], b"DSDT");
        assert!(t
            .iter()
            .all(|(a, b)| *a >= RSDP_ADDR && a + b.len() as u64 <= END));
    }

    #[test]
    fn the_madt_has_the_vcpu_and_the_io_apic() {
        let m = madt();
        assert_eq!(u32_at(&m, 36), LAPIC_ADDR);
        // Entries after the 44-byte header: type, length, ...
        let (mut at, mut kinds) = (44, Vec::new());
        while at < m.len() {
            kinds.push(m[at]);
            if m[at] == 1 {
                assert_eq!(m[at + 2], IOAPIC_ID);
                assert_eq!(u32_at(&m, at + 4), IOAPIC_ADDR);
                assert_eq!(u32_at(&m, at + 8), 0, "GSI base");
            }
            at += m[at + 1] as usize;
        }
        assert_eq!(kinds, [0, 1], "a local APIC, then the I/O APIC");
    }

    #[test]
    fn the_dsdt_names_each_virtio_device_with_its_window_and_interrupt() {
        let d = dsdt(&[Slot::nth(0), Slot::nth(1)]);
        let find = |needle: &[u8]| d.windows(needle.len()).filter(|w| *w == needle).count();
        assert_eq!(find(b"LNRO0005\0"), 2, "one _HID string per device");
        assert_eq!(find(b"VR00"), 1);
        assert_eq!(find(b"VR01"), 1);
        // Memory32Fixed descriptors (0x86) with each base, and the extended interrupts (0x89).
        for slot in [Slot::nth(0), Slot::nth(1)] {
            let mut mem = vec![0x86, 9, 0, 1];
            mem.extend((slot.base as u32).to_le_bytes());
            mem.extend((MMIO_SIZE as u32).to_le_bytes());
            assert_eq!(find(&mem), 1, "{slot:?}");
            let mut irq = vec![0x89, 6, 0, 0b0011, 1];
            irq.extend(slot.irq.to_le_bytes());
            assert_eq!(find(&irq), 1, "{slot:?}");
        }
        // The UART, PNP0501 as an EISA ID, with IRQ 4.
        let mut irq4 = vec![0x89, 6, 0, 0b0011, 1];
        irq4.extend(4u32.to_le_bytes());
        assert_eq!(find(&irq4), 1);
    }

    #[test]
    fn the_tables_land_in_guest_memory() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        assert_eq!(write(&mem, &[Slot::nth(0)]).unwrap(), RSDP_ADDR);
        let mut sig = [0u8; 8];
        mem.read_slice(&mut sig, GuestAddress(RSDP_ADDR)).unwrap();
        assert_eq!(&sig, b"RSD PTR ");
        assert_eq!(RSDP_ADDR % 16, 0);
    }
}
