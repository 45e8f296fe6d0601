//! The MP table: how a PC tells its kernel where the interrupt controllers are.
//!
//! KVM's in-kernel interrupt chip (`KVM_CREATE_IRQCHIP`) is a whole PC's: two 8259 PICs, an
//! I/O APIC at 0xfec0_0000 and a local APIC per vCPU. A kernel finds the I/O APIC only if the
//! firmware describes it — in ACPI's MADT, or in the older and much simpler **MP table** of
//! Intel's MultiProcessor Specification (version 1.4, 1997), which Linux still reads. Without
//! either, Linux assumes a single-CPU PC and routes every interrupt through the 8259 PIC and the
//! local APIC's LINT0 pin in "virtual wire" mode (ExtINT), the oldest path there is. That works
//! on hardware, but it is a path few guests take, and the emulated AMD-V of the lab's CI loses
//! wake-ups on it: a guest halted with the timer's and the UART's interrupts pending in the PIC
//! was never woken. With the MP table the guest uses the I/O APIC and its local APIC timer, as
//! every modern PC and VMM does (Firecracker writes the same table).
//!
//! ```text
//!  0x9fc00 (EBDA, reserved in the e820 map; Linux scans here for "_MP_")
//!   MP floating pointer, 16 bytes ──► MP configuration table "PCMP"
//!                                      processor: local APIC 0, enabled, bootstrap
//!                                      bus 0: ISA
//!                                      I/O APIC 1 at 0xfec00000
//!                                      ISA IRQ n → I/O APIC pin n (n = 0..15), as KVM routes them
//!                                      LINT0: ExtINT (the PIC), LINT1: NMI
//! ```
//!
//! Every structure carries a checksum: its bytes must add up to zero (mod 256).

use vm_memory::{Bytes, GuestAddress, GuestMemoryError, GuestMemoryMmap};

/// Where the table goes: the first byte of the extended BIOS data area, one of the places the
/// MP specification tells a kernel to search, and reserved in the lab's e820 map.
pub const MPTABLE_ADDR: u64 = crate::layout::linux::EBDA;

/// The I/O APIC KVM emulates, and where.
const IOAPIC_ID: u8 = 1;
const IOAPIC_ADDR: u32 = 0xfec0_0000;
/// The local APICs' address.
const LAPIC_ADDR: u32 = 0xfee0_0000;
/// ISA interrupts KVM routes to I/O APIC pins of the same number.
const ISA_IRQS: u8 = 16;

/// Entry types of the configuration table.
const PROCESSOR: u8 = 0;
const BUS: u8 = 1;
const IOAPIC: u8 = 2;
const IO_INTERRUPT: u8 = 3;
const LOCAL_INTERRUPT: u8 = 4;
/// Interrupt types: an ordinary vectored interrupt, NMI, the PIC's external interrupt.
const INT: u8 = 0;
const NMI: u8 = 1;
const EXTINT: u8 = 3;

/// Make the 8-bit checksum of `bytes` (with its own field still zero): the byte that makes
/// them add up to zero.
fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |s, b| s.wrapping_add(*b)))
}

/// The MP configuration table for one vCPU whose CPUID leaf 1 gives `signature` (EAX) and
/// `features` (EDX).
pub fn config_table(signature: u32, features: u32) -> Vec<u8> {
    let mut entries: Vec<u8> = Vec::new();
    let mut count = 0u16;
    // Processor: local APIC ID 0, version 0x14 (an integrated APIC), enabled (bit 0) and the
    // bootstrap processor (bit 1); then the CPU signature and feature flags, 8 reserved bytes.
    entries.extend([PROCESSOR, 0, 0x14, 0b11]);
    entries.extend(signature.to_le_bytes());
    entries.extend(features.to_le_bytes());
    entries.extend([0; 8]);
    count += 1;
    // Bus 0: ISA, the bus the legacy interrupts 0..15 belong to.
    entries.extend([BUS, 0]);
    entries.extend(*b"ISA   ");
    count += 1;
    // The I/O APIC: ID, version 0x11 (82093AA), enabled, address.
    entries.extend([IOAPIC, IOAPIC_ID, 0x11, 1]);
    entries.extend(IOAPIC_ADDR.to_le_bytes());
    count += 1;
    // ISA IRQ n → I/O APIC pin n, polarity and trigger "as the bus says" (edge, high for ISA).
    for irq in 0..ISA_IRQS {
        entries.extend([IO_INTERRUPT, INT, 0, 0, 0, irq, IOAPIC_ID, irq]);
        count += 1;
    }
    // The local APIC's pins, on every local APIC (0xff): LINT0 from the PIC, LINT1 the NMI.
    entries.extend([LOCAL_INTERRUPT, EXTINT, 0, 0, 0, 0, 0xff, 0]);
    entries.extend([LOCAL_INTERRUPT, NMI, 0, 0, 0, 0, 0xff, 1]);
    count += 2;

    let length = (44 + entries.len()) as u16;
    let mut table = Vec::with_capacity(length as usize);
    table.extend(*b"PCMP");
    table.extend(length.to_le_bytes());
    table.push(4); // specification revision 1.4
    table.push(0); // checksum, below
    table.extend(*b"ISOLAB  "); // OEM ID, 8 bytes
    table.extend(*b"microVM     "); // product ID, 12 bytes
    table.extend(0u32.to_le_bytes()); // no OEM table
    table.extend(0u16.to_le_bytes());
    table.extend(count.to_le_bytes());
    table.extend(LAPIC_ADDR.to_le_bytes());
    table.extend(0u16.to_le_bytes()); // no extended table
    table.push(0); // its checksum
    table.push(0); // reserved
    table.extend(entries);
    table[7] = checksum(&table);
    table
}

/// The 16-byte MP floating pointer that points at the configuration table at `table_addr`.
pub fn floating_pointer(table_addr: u32) -> [u8; 16] {
    let mut mpf = [0u8; 16];
    mpf[0..4].copy_from_slice(b"_MP_");
    mpf[4..8].copy_from_slice(&table_addr.to_le_bytes());
    mpf[8] = 1; // length in 16-byte paragraphs
    mpf[9] = 4; // specification revision 1.4
                // Feature byte 1 = 0: a configuration table is present (no default configuration). Feature
                // byte 2, bit 7 (IMCR present) = 0: the PC uses virtual-wire mode, no IMCR to switch.
    mpf[10] = checksum(&mpf);
    mpf
}

/// Write the floating pointer and the table at [`MPTABLE_ADDR`].
pub fn write(mem: &GuestMemoryMmap, signature: u32, features: u32) -> Result<(), GuestMemoryError> {
    let table = config_table(signature, features);
    let table_addr = MPTABLE_ADDR + 16;
    mem.write_slice(
        &floating_pointer(table_addr as u32),
        GuestAddress(MPTABLE_ADDR),
    )?;
    mem.write_slice(&table, GuestAddress(table_addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(bytes: &[u8]) -> u8 {
        bytes.iter().fold(0u8, |s, b| s.wrapping_add(*b))
    }

    #[test]
    fn both_structures_add_up_to_zero() {
        let table = config_table(0x0f6b1, 0x0781_abfd);
        assert_eq!(sum(&table), 0);
        assert_eq!(sum(&floating_pointer(0x9fc10)), 0);
    }

    #[test]
    fn the_table_reads_back_as_linux_parses_it() {
        let t = config_table(0x0f6b1, 0x0781_abfd);
        assert_eq!(&t[0..4], b"PCMP");
        assert_eq!(u16::from_le_bytes([t[4], t[5]]) as usize, t.len());
        let count = u16::from_le_bytes([t[34], t[35]]);
        assert_eq!(
            u32::from_le_bytes(t[36..40].try_into().unwrap()),
            LAPIC_ADDR
        );
        // Walk the entries as arch/x86/kernel/mpparse.c does: 20 bytes for a processor, 8 for
        // everything else.
        let (mut at, mut seen) = (44, Vec::new());
        for _ in 0..count {
            seen.push(t[at]);
            if t[at] == IO_INTERRUPT {
                assert_eq!(t[at + 5], t[at + 7], "ISA IRQ n on pin n");
            }
            at += if t[at] == PROCESSOR { 20 } else { 8 };
        }
        assert_eq!(at, t.len(), "the entries fill the table exactly");
        assert_eq!(&seen[..3], &[PROCESSOR, BUS, IOAPIC]);
        assert_eq!(seen.iter().filter(|&&k| k == IO_INTERRUPT).count(), 16);
        assert_eq!(&seen[seen.len() - 2..], &[LOCAL_INTERRUPT, LOCAL_INTERRUPT]);
    }

    #[test]
    fn the_floating_pointer_points_at_the_table() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        write(&mem, 0x600, 0x201).unwrap();
        let mut mpf = [0u8; 16];
        mem.read_slice(&mut mpf, GuestAddress(MPTABLE_ADDR))
            .unwrap();
        assert_eq!(&mpf[0..4], b"_MP_");
        let at = u32::from_le_bytes(mpf[4..8].try_into().unwrap()) as u64;
        let mut sig = [0u8; 4];
        mem.read_slice(&mut sig, GuestAddress(at)).unwrap();
        assert_eq!(&sig, b"PCMP");
        // The kernel scans the last KiB of base memory on 16-byte boundaries.
        assert_eq!(MPTABLE_ADDR % 16, 0);
        assert_eq!(MPTABLE_ADDR, 639 * 1024);
    }
}
