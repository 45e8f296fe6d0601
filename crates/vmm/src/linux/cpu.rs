//! The vCPU at a Linux kernel's first instruction: the state each boot protocol promises.
//!
//! Unlike the bare guest, a Linux kernel runs in **ring 0** and sets up its own descriptor
//! tables, page tables and interrupt handlers within its first few hundred instructions. The VMM
//! only has to deliver the CPU in the state the protocol names:
//!
//! | | PVH (vmlinux) | Linux boot protocol, 64-bit (bzImage) |
//! |---|---|---|
//! | mode | 32-bit protected, paging off | 64-bit long mode, paging on |
//! | CS | flat 32-bit code, base 0, limit 4 GiB | flat 64-bit code, selector 0x10 (`__BOOT_CS`) |
//! | DS/ES/SS | flat 32-bit data | flat data, selector 0x18 (`__BOOT_DS`) |
//! | page tables | none | identity map covering the kernel, zero page and command line |
//! | pointer to the boot info | EBX = `hvm_start_info` | RSI = `boot_params` |
//! | interrupts | off | off |
//!
//! The segments come from the bare VMM's [`Descriptor`] type: one value yields both the GDT
//! entry and the hidden segment cache `KVM_SET_SREGS` loads, so they cannot disagree.
//!
//! # CPUID: "you are a KVM guest"
//!
//! The guest sees what KVM can virtualise (`KVM_GET_SUPPORTED_CPUID`), plus one thing KVM leaves
//! to the VMM: the **hypervisor bit** (leaf 1, ECX bit 31). A kernel that finds it set looks at
//! leaf 0x4000_0000 for a hypervisor's signature — KVM's is `KVMKVMKVM` — and at 0x4000_0001
//! for the paravirtual features KVM offers. The one that matters most for a boot is
//! **kvm-clock**: a page of guest memory where KVM publishes the TSC's frequency and offset, so
//! the guest reads the time without calibrating anything. Without the bit, the kernel believes
//! it runs on bare metal and measures its TSC and its delay loop against the emulated PIT, tick
//! by tick — tens of thousands of exits, and, where the host is slow or busy, a calibration that
//! fails and a boot that waits forever for a timer it cannot trust. Every serious VMM sets the bit
//! (Firecracker, QEMU, cloud-hypervisor); `lab`'s Linux guests print "Hypervisor detected: KVM".
//!
//! One more bit KVM leaves to the VMM: **TSC-deadline** mode of the local APIC timer (leaf 1,
//! ECX bit 24), which KVM emulates but does not list (`KVM_CAP_TSC_DEADLINE_TIMER` says it can).
//! With it the kernel programs its timer as "interrupt me when the TSC reaches N"; without it, it
//! must first measure the APIC timer's frequency against the PIT over a tenth of a second — a
//! measurement that, on a slow or emulated host, can come out wrong and leave the guest waiting
//! far longer than it asked for.
//!
//! # The nested-PVM workaround
//!
//! On nested PVM, guest ring 0 is *emulated*, and the emulator cannot execute XSAVE: a kernel
//! that sees XSAVE in CPUID uses it in its very first FPU set-up and the vCPU stops with an
//! internal error. Hiding XSAVE (and OSXSAVE, and AVX which needs it, and leaf 0xD which
//! describes it) makes the kernel fall back to FXSAVE and go on booting — further, at least. On
//! hardware the guest keeps everything.

use crate::cpu::{
    flat_sregs, gdt_table, ioctl, table, CpuError, Descriptor, GuestState, Mode, CR0_ET, CR0_PE,
    CR0_PG, CR4_PAE, EFER_LMA, EFER_LME, RFLAGS_RESERVED,
};
use crate::layout::linux as layout;
use crate::layout::PAGE;
use crate::linux::boot::Entry;
use crate::memory::pte;
use kvm_bindings::{kvm_cpuid_entry2, kvm_dtable, kvm_fpu, kvm_regs, CpuId};
use kvm_ioctls::VcpuFd;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// The boot protocol's 64-bit code segment (`__BOOT_CS`, 0x10).
pub const CODE64: Descriptor = Descriptor {
    index: 2,
    kind: 0xb,
    code_or_data: true,
    dpl: 0,
    long: true,
    base: 0,
    limit: 0xf_ffff,
};
/// PVH's flat 32-bit code segment (same slot: one GDT serves both protocols).
pub const CODE32: Descriptor = Descriptor {
    long: false,
    ..CODE64
};
/// Flat data (`__BOOT_DS`, 0x18).
pub const DATA: Descriptor = Descriptor {
    index: 3,
    kind: 0x3,
    code_or_data: true,
    dpl: 0,
    long: false,
    base: 0,
    limit: 0xf_ffff,
};
/// A minimal busy TSS: Intel's VM entry refuses a vCPU whose TR is unusable.
pub const TSS: Descriptor = Descriptor {
    index: 4,
    kind: 0xb,
    code_or_data: false,
    dpl: 0,
    long: false,
    base: 0,
    limit: 0x67,
};

/// CPUID leaf 1, ECX: XSAVE, OSXSAVE and AVX (which is saved by XSAVE).
const LEAF1_ECX_XSAVE: u32 = 1 << 26 | 1 << 27 | 1 << 28;
/// CPUID leaf 7, EBX: AVX2 and the AVX-512 family, all XSAVE-managed state.
const LEAF7_EBX_AVX: u32 =
    1 << 5 | 1 << 16 | 1 << 17 | 1 << 21 | 1 << 26 | 1 << 27 | 1 << 28 | 1 << 30 | 1 << 31;
/// CPUID leaf 1, ECX bit 31: "a hypervisor is present". No physical CPU sets it.
pub const LEAF1_ECX_HYPERVISOR: u32 = 1 << 31;
/// CPUID leaf 1, ECX bit 24: the local APIC timer has TSC-deadline mode.
pub const LEAF1_ECX_TSC_DEADLINE: u32 = 1 << 24;
/// The first hypervisor leaf: EAX = the highest hypervisor leaf, EBX ECX EDX = the signature.
pub const KVM_SIGNATURE_LEAF: u32 = 0x4000_0000;
/// KVM's paravirtual features: EAX = one bit per feature (`KVM_FEATURE_*`).
pub const KVM_FEATURES_LEAF: u32 = 0x4000_0001;
/// `KVMKVMKVM\0\0\0` as EBX, ECX, EDX.
const KVM_SIGNATURE: [u32; 3] = [0x4b4d_564b, 0x564b_4d56, 0x0000_004d];
/// KVM_FEATURE_CLOCKSOURCE2 (bit 3): kvm-clock at the new MSRs (0x4b564d00/01), which every
/// kernel since 2.6.35 uses; and KVM_FEATURE_CLOCKSOURCE_STABLE_BIT (bit 24): the clock never
/// goes backwards across vCPUs. What the guest needs to skip calibration, should KVM not list it.
const KVM_CLOCK_FEATURES: u32 = 1 << 3 | 1 << 24;

/// What the VMM changes in the CPUID KVM supports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuidOptions {
    /// Hide XSAVE and what depends on it (nested PVM).
    pub hide_xsave: bool,
    /// Offer TSC-deadline mode (KVM emulates it: `KVM_CAP_TSC_DEADLINE_TIMER`).
    pub tsc_deadline: bool,
}

/// The guest's CPUID: `supported`, the APIC ID of vCPU 0, the hypervisor bit and KVM's leaves,
/// TSC-deadline mode where KVM has it, and without XSAVE when asked.
pub fn guest_cpuid(supported: &CpuId, options: CpuidOptions) -> CpuId {
    let hide_xsave = options.hide_xsave;
    let mut entries: Vec<kvm_cpuid_entry2> = supported
        .as_slice()
        .iter()
        .copied()
        .filter(|leaf| !(hide_xsave && leaf.function == 0xd))
        .map(|mut leaf| {
            if leaf.function == 1 {
                // EBX bits 24..31: the initial APIC ID, which KVM leaves to the VMM.
                leaf.ebx &= 0x00ff_ffff;
                leaf.ecx |= LEAF1_ECX_HYPERVISOR;
                if options.tsc_deadline {
                    leaf.ecx |= LEAF1_ECX_TSC_DEADLINE;
                }
                if hide_xsave {
                    leaf.ecx &= !LEAF1_ECX_XSAVE;
                }
            }
            if leaf.function == 7 && leaf.index == 0 && hide_xsave {
                leaf.ebx &= !LEAF7_EBX_AVX;
            }
            leaf
        })
        .collect();
    // KVM lists both of its leaves in its supported CPUID; should a KVM not, the guest would
    // find the bit but no hypervisor. Supply them: the signature, and kvm-clock.
    if !entries.iter().any(|l| l.function == KVM_SIGNATURE_LEAF) {
        entries.push(kvm_cpuid_entry2 {
            function: KVM_SIGNATURE_LEAF,
            eax: KVM_FEATURES_LEAF,
            ebx: KVM_SIGNATURE[0],
            ecx: KVM_SIGNATURE[1],
            edx: KVM_SIGNATURE[2],
            ..Default::default()
        });
    }
    if !entries.iter().any(|l| l.function == KVM_FEATURES_LEAF) {
        entries.push(kvm_cpuid_entry2 {
            function: KVM_FEATURES_LEAF,
            eax: KVM_CLOCK_FEATURES,
            ..Default::default()
        });
    }
    CpuId::from_entries(&entries).expect("at most two entries more than KVM gave")
}

/// The GDT: null, null, code (0x10), data (0x18), TSS (0x20, two slots).
pub fn gdt(code: Descriptor) -> [u64; 6] {
    gdt_table(&[code, DATA, TSS])
}

/// An identity map of the first GiB with 2 MiB pages, for the 64-bit entry: the kernel's
/// `startup_64` runs from its load address with paging already on, and reads the zero page and
/// the command line through these mappings until it builds its own tables.
pub fn write_identity_map(mem: &GuestMemoryMmap) -> Result<u64, CpuError> {
    let write = |value: u64, at: u64| {
        mem.write_obj(value, GuestAddress(at))
            .map_err(|e| CpuError::Write {
                what: "page tables",
                detail: e.to_string(),
            })
    };
    let table = pte::PRESENT | pte::WRITABLE;
    write(layout::PDPT | table, layout::PML4)?;
    write(layout::PD | table, layout::PDPT)?;
    for i in 0..512u64 {
        write(i << 21 | table | pte::HUGE, layout::PD + i * 8)?;
    }
    debug_assert_eq!(layout::PD - layout::PML4, 2 * PAGE);
    Ok(layout::PML4)
}

/// The vCPU's whole state at `entry` (see the module documentation's table), as data.
pub fn boot_state(entry: Entry) -> GuestState {
    let code = match entry {
        Entry::Pvh { .. } => CODE32,
        Entry::Linux64 { .. } => CODE64,
    };
    let mode = match entry {
        Entry::Pvh { .. } => Mode {
            cr0: CR0_PE | CR0_ET,
            cr3: 0,
            cr4: 0,
            efer: 0,
        },
        Entry::Linux64 { .. } => Mode {
            cr0: CR0_PE | CR0_ET | CR0_PG,
            cr3: layout::PML4,
            cr4: CR4_PAE,
            efer: EFER_LME | EFER_LMA,
        },
    };
    // No IDT yet: the kernel installs its own before it enables interrupts.
    let sregs = flat_sregs(
        code,
        DATA,
        TSS,
        table(layout::GDT, gdt(code).len(), 8),
        kvm_dtable::default(),
        mode,
    );
    let mut regs = kvm_regs {
        // Bit 1 is reserved and always 1; IF = 0: interrupts stay off until the kernel is ready.
        rflags: RFLAGS_RESERVED,
        rsp: layout::STACK_TOP,
        rbp: layout::STACK_TOP,
        ..Default::default()
    };
    match entry {
        Entry::Pvh { rip } => {
            regs.rip = rip;
            regs.rbx = layout::PVH_START_INFO;
        }
        Entry::Linux64 { rip } => {
            regs.rip = rip;
            regs.rsi = layout::ZERO_PAGE;
        }
    }
    GuestState { sregs, regs }
}

/// Put the vCPU at the kernel's entry: CPUID, GDT (and page tables), FPU, special and general
/// registers, and the local APIC's two interrupt pins.
pub fn configure(
    vcpu: &VcpuFd,
    mem: &GuestMemoryMmap,
    cpuid: &CpuId,
    entry: Entry,
) -> Result<(), CpuError> {
    vcpu.set_cpuid2(cpuid).map_err(ioctl("KVM_SET_CPUID2"))?;
    let code = match entry {
        Entry::Pvh { .. } => CODE32,
        Entry::Linux64 { .. } => {
            write_identity_map(mem)?;
            CODE64
        }
    };
    mem.write_obj(gdt(code), GuestAddress(layout::GDT))
        .map_err(|e| CpuError::Write {
            what: "GDT",
            detail: e.to_string(),
        })?;
    // The x87 control word and SSE's MXCSR at their reset values: all exceptions masked.
    let fpu = kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    };
    vcpu.set_fpu(&fpu).map_err(ioctl("KVM_SET_FPU"))?;
    boot_state(entry).apply(vcpu)?;
    set_lint(vcpu)
}

/// Wire the local APIC's LINT0 to the 8259 PIC (ExtINT) and LINT1 to NMI, as a PC's firmware
/// does. Without an MP table or ACPI, Linux keeps the PIC ("virtual wire" mode), and the PIC's
/// interrupts — the PIT's timer on IRQ 0, the UART on IRQ 4 — reach the CPU through LINT0.
fn set_lint(vcpu: &VcpuFd) -> Result<(), CpuError> {
    const LVT0: usize = 0x350;
    const LVT1: usize = 0x360;
    const DELIVERY_MASK: u32 = 0x700;
    const EXTINT: u32 = 0x700;
    const NMI: u32 = 0x400;
    let mut lapic = vcpu.get_lapic().map_err(ioctl("KVM_GET_LAPIC"))?;
    let mut set = |offset: usize, mode: u32| {
        let bytes: [u8; 4] = std::array::from_fn(|i| lapic.regs[offset + i] as u8);
        let value = (u32::from_le_bytes(bytes) & !DELIVERY_MASK) | mode;
        for (i, b) in value.to_le_bytes().into_iter().enumerate() {
            lapic.regs[offset + i] = b as _;
        }
    };
    set(LVT0, EXTINT);
    set(LVT1, NMI);
    vcpu.set_lapic(&lapic).map_err(ioctl("KVM_SET_LAPIC"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvm_bindings::kvm_cpuid_entry2;

    #[test]
    fn each_protocol_gets_its_promised_state() {
        let GuestState { sregs: s, regs: r } = boot_state(Entry::Pvh { rip: 0x100_0000 });
        assert_eq!((s.cs.selector, s.cs.l, s.cs.db, s.cs.dpl), (0x10, 0, 1, 0));
        assert_eq!((s.cr0 & CR0_PG, s.efer, s.cr4), (0, 0, 0), "paging off");
        assert_eq!(s.cr0 & CR0_PE, CR0_PE);
        assert_eq!(s.ds.selector, 0x18);
        assert_eq!((r.rip, r.rbx), (0x100_0000, layout::PVH_START_INFO));

        let GuestState { sregs: s, regs: r } = boot_state(Entry::Linux64 { rip: 0x10_0200 });
        assert_eq!(
            (s.cs.selector, s.cs.l, s.cs.db),
            (0x10, 1, 0),
            "__BOOT_CS, 64-bit"
        );
        assert_eq!(s.efer, EFER_LME | EFER_LMA);
        assert_eq!((s.cr3, s.cr4), (layout::PML4, CR4_PAE));
        assert_eq!((r.rip, r.rsi, r.rflags), (0x10_0200, layout::ZERO_PAGE, 2));
    }

    #[test]
    fn the_identity_map_maps_the_first_gib_to_itself() {
        let mem: GuestMemoryMmap =
            GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let cr3 = write_identity_map(&mem).unwrap();
        // Walk it: PML4[0] → PDPT[0] → PD[i] is a 2 MiB page at i × 2 MiB.
        let read = |at: u64| mem.read_obj::<u64>(GuestAddress(at)).unwrap();
        let pdpt = read(cr3) & pte::ADDRESS;
        let pd = read(pdpt) & pte::ADDRESS;
        for i in [0u64, 1, 8, 511] {
            let e = read(pd + i * 8);
            assert_eq!(e & pte::ADDRESS, i << 21);
            assert_eq!(e & (pte::PRESENT | pte::HUGE), pte::PRESENT | pte::HUGE);
            assert_eq!(e & pte::USER, 0, "ring 0 only");
        }
    }

    #[test]
    fn hiding_xsave_removes_it_and_what_depends_on_it() {
        let leaf = |function, index, ebx, ecx| kvm_cpuid_entry2 {
            function,
            index,
            ebx,
            ecx,
            ..Default::default()
        };
        let supported = CpuId::from_entries(&[
            leaf(1, 0, 0x0a00_0800, LEAF1_ECX_XSAVE | 1),
            leaf(7, 0, 1 << 5 | 1 << 3, 0),
            leaf(0xd, 0, 0x240, 0),
        ])
        .unwrap();
        let kept = guest_cpuid(&supported, CpuidOptions::default());
        assert_eq!(kept.as_slice().len(), 5, "and KVM's two leaves");
        assert_eq!(kept.as_slice()[0].ebx, 0x0000_0800, "APIC ID 0");
        assert_eq!(
            kept.as_slice()[0].ecx,
            LEAF1_ECX_XSAVE | 1 | LEAF1_ECX_HYPERVISOR
        );
        let hidden = guest_cpuid(
            &supported,
            CpuidOptions {
                hide_xsave: true,
                tsc_deadline: false,
            },
        );
        let l = hidden.as_slice();
        assert_eq!(l.len(), 4, "leaf 0xD is gone");
        assert_eq!(
            l[0].ecx,
            1 | LEAF1_ECX_HYPERVISOR,
            "XSAVE, OSXSAVE, AVX cleared, the rest kept"
        );
        assert_eq!(l[1].ebx, 1 << 3, "AVX2 cleared, BMI1 kept");
    }

    #[test]
    fn the_guest_is_told_it_runs_on_kvm_with_kvm_clock() {
        // What KVM's own supported CPUID lists, as on every KVM: the guest keeps it.
        let supported = CpuId::from_entries(&[
            kvm_cpuid_entry2 {
                function: 1,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: KVM_SIGNATURE_LEAF,
                eax: KVM_FEATURES_LEAF,
                ebx: KVM_SIGNATURE[0],
                ecx: KVM_SIGNATURE[1],
                edx: KVM_SIGNATURE[2],
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: KVM_FEATURES_LEAF,
                eax: 0x0100_7efb,
                ..Default::default()
            },
        ])
        .unwrap();
        let cpuid = guest_cpuid(
            &supported,
            CpuidOptions {
                hide_xsave: false,
                tsc_deadline: true,
            },
        );
        let leaf = |f| cpuid.as_slice().iter().find(|l| l.function == f).unwrap();
        assert_ne!(leaf(1).ecx & LEAF1_ECX_HYPERVISOR, 0);
        assert_ne!(leaf(1).ecx & LEAF1_ECX_TSC_DEADLINE, 0);
        let sig: Vec<u8> = [
            leaf(0x4000_0000).ebx,
            leaf(0x4000_0000).ecx,
            leaf(0x4000_0000).edx,
        ]
        .iter()
        .flat_map(|w| w.to_le_bytes())
        .collect();
        assert_eq!(&sig, b"KVMKVMKVM\0\0\0");
        assert_eq!(
            leaf(KVM_FEATURES_LEAF).eax,
            0x0100_7efb,
            "KVM's own list kept"
        );
        // A KVM whose supported CPUID lacks the leaves: the VMM supplies them.
        let bare = CpuId::from_entries(&[supported.as_slice()[0]]).unwrap();
        let cpuid = guest_cpuid(&bare, CpuidOptions::default());
        let features = cpuid
            .as_slice()
            .iter()
            .find(|l| l.function == KVM_FEATURES_LEAF)
            .unwrap();
        assert_eq!(features.eax & KVM_CLOCK_FEATURES, KVM_CLOCK_FEATURES);
    }

    #[test]
    fn one_gdt_serves_both_protocols() {
        let g = gdt(CODE32);
        assert_eq!(g[2], CODE32.encode());
        assert_eq!(g[3], 0x00cf_9300_0000_ffff, "flat ring-0 data");
        assert_eq!(
            gdt(CODE64)[2],
            0x00af_9b00_0000_ffff,
            "flat 64-bit ring-0 code"
        );
        assert_eq!(CODE64.selector(), 0x10);
        assert_eq!(DATA.selector(), 0x18);
    }
}
