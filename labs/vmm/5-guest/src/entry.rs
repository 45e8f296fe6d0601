//! Step 4: the guest's entry into 64-bit long mode, **ring 3** — everything about how the guest
//! starts is in this file.
//!
//! A real PC climbs from real mode to long mode with a boot loader: load a GDT, enable paging,
//! set EFER.LME, far-jump into a 64-bit code segment. A VMM can skip the climb: `KVM_SET_SREGS`
//! writes the control registers and the segment registers' *hidden caches* (base, limit, type,
//! privilege level — what the CPU would have loaded from a descriptor) directly, so the guest's
//! first instruction already runs in long mode. What must exist in guest memory is only what the
//! CPU reads from there by itself: the **page tables** (every address is translated through
//! them) and the **TSS** (for the I/O-permission bitmap, below). A guest that never reloads a
//! segment register and takes no exception needs no GDT and no IDT.
//!
//! Why ring 3? On machines with VT-x or AMD-V it makes no difference. On nested PVM (KVM
//! without hardware virtualization) guest ring 3 runs natively and ring 0 is emulated, a
//! thousand times slower and without SSE, which the bare guest's kernels use. A guest that needs
//! nothing from ring 0 — no interrupts, no system calls, no exception handlers — runs fast
//! everywhere in ring 3. The price: `out` is privileged, so the TSS must grant the one I/O port
//! the guest talks to the VMM through.
//!
//! # Busy or available: the one field where Intel and AMD disagree
//!
//! A TSS descriptor's type says whether its task is *available* (9) or *busy* (11; `ltr` marks
//! a TSS busy when it loads it into TR). Since this VMM writes TR's hidden cache itself, it picks
//! the type, and the two vendors' hardware virtualization want different ones:
//!
//! * **Intel VT-x** checks the whole guest state at every VM entry and, in long mode, wants TR
//!   to hold a *busy* 64-bit TSS. With 9, `KVM_RUN` fails before the first instruction
//!   (`KVM_EXIT_FAIL_ENTRY`, "invalid guest state"). Nested PVM on an Intel host is happy with 11
//!   too.
//! * **AMD-V** checks no segment types when it enters the guest, and a real AMD CPU finds the
//!   I/O bitmap through TR's base and limit whatever the type. But QEMU's emulated AMD CPU —
//!   the machine the lab tests AMD-V on — reads the bitmap only for an *available* TSS (the
//!   state its `ltr` would leave), and raises #GP at the guest's first `out` with a busy one.
//!   Type 9 satisfies both.
//!
//! So the type depends on the CPU vendor, and the vendor is in CPUID leaf 0: the twelve bytes
//! of EBX, EDX, ECX spell `GenuineIntel` or `AuthenticAMD` (`HygonGenuine` is AMD's design).
//! KVM's supported CPUID, which this VMM hands the guest anyway, carries the host's leaf 0, so
//! the vendor is read from there. The lab's own VMM makes the same choice
//! (`src/backend/vm/cpu.rs`, `Vendor::tss_type`).

use super::{fail, Machine, Report};
use kvm_bindings::{kvm_dtable, kvm_regs, kvm_segment};
use kvm_ioctls::Kvm;

/// The page tables: PML4, PDPT and one page directory (so at most 1 GiB of RAM).
const PML4: u64 = 0x1_0000;
const PDPT: u64 = 0x1_1000;
const PD: u64 = 0x1_2000;
/// The task-state segment.
const TSS: u64 = 0x4000;
/// The guest's first stack pointer: its stack grows down from here.
pub const STACK_TOP: u64 = 0x8_0000;

/// Page-table entry bits: present, writable, user (ring 3 may use it), and in a page directory
/// entry "this maps a 2 MiB page itself".
const PRESENT: u64 = 1;
const WRITABLE: u64 = 1 << 1;
const USER: u64 = 1 << 2;
const HUGE: u64 = 1 << 7;

/// TSS types for TR (see the module comment): available on AMD, busy on Intel.
const TSS_AVAILABLE: u8 = 0x9;
const TSS_BUSY: u8 = 0xb;

/// A 64-bit TSS: 0x68 bytes, then the I/O-permission bitmap (one bit per port, 0 = allowed) for
/// ports 0..0x400, then the 0xff byte the CPU requires after the bitmap.
const TSS_HEADER: usize = 0x68;
const TSS_SIZE: usize = TSS_HEADER + 0x400 / 8 + 1;

/// Put the vCPU into long mode, ring 3, at `entry`, with every byte of RAM identity-mapped
/// (virtual address = physical address).
pub fn enter_long_mode(kvm: &Kvm, machine: &mut Machine, entry: u64, report: Report) {
    let ram = machine.ram.size();
    if ram > 1 << 30 {
        fail(report, "page tables", "this VMM maps at most 1 GiB");
    }
    // Identity map with 2 MiB pages, every level marked USER: ring 3 may only use a page if
    // every entry on the way to it says so.
    let flags = PRESENT | WRITABLE | USER;
    machine.ram.write_u64(PML4, PDPT | flags);
    machine.ram.write_u64(PDPT, PD | flags);
    for i in 0..ram.div_ceil(2 << 20) {
        machine.ram.write_u64(PD + 8 * i, (i << 21) | flags | HUGE);
    }
    // The TSS: its I/O-permission bitmap allows the four ports a 4-byte `out` to the hypercall
    // port touches, and nothing else. (RFLAGS.IOPL = 3 would open every port, and on PVM it
    // does not even survive the first exit.)
    let mut tss = [0u8; TSS_SIZE];
    tss[0x66..0x68].copy_from_slice(&(TSS_HEADER as u16).to_le_bytes());
    tss[TSS_HEADER..].fill(0xff);
    let port = labkit::isolab_kernels::hypercall::PORT as usize;
    for p in port..port + 4 {
        tss[TSS_HEADER + p / 8] &= !(1 << (p % 8));
    }
    machine.ram.write(TSS, &tss);

    let vcpu = &machine.vcpu;
    // The guest's CPUID: what KVM can offer on this host (SSE and friends). Without it the vCPU
    // reports no features, and KVM refuses CR4 bits the guest CPU "does not have".
    let cpuid = kvm
        .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
        .unwrap_or_else(|e| fail(report, "KVM_GET_SUPPORTED_CPUID", &e.to_string()));
    vcpu.set_cpuid2(&cpuid)
        .unwrap_or_else(|e| fail(report, "KVM_SET_CPUID2", &e.to_string()));

    let mut sregs = vcpu
        .get_sregs()
        .unwrap_or_else(|e| fail(report, "KVM_GET_SREGS", &e.to_string()));
    let segment = |selector: u16, type_: u8, long: bool| kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_,
        present: 1,
        dpl: 3,
        db: !long as u8,
        s: 1,
        l: long as u8,
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    };
    // Code: execute/read (type 0xb), 64-bit (L), DPL 3; its selector's low bits (RPL) are 3 too.
    sregs.cs = segment(0x1b, 0xb, true);
    // Data and stack: read/write (type 3), DPL 3 (SS's DPL must equal the CPL).
    let data = segment(0x23, 0x3, false);
    (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss) = (data, data, data, data, data);
    // TR: a 64-bit TSS, a system segment (S = 0), busy on Intel and available on AMD.
    let tss_type = if is_amd(&cpuid) {
        TSS_AVAILABLE
    } else {
        TSS_BUSY
    };
    sregs.tr = kvm_segment {
        base: TSS,
        limit: TSS_SIZE as u32 - 1,
        selector: 0x28,
        type_: tss_type,
        present: 1,
        dpl: 0,
        db: 0,
        s: 0,
        l: 0,
        g: 0,
        avl: 0,
        unusable: 0,
        padding: 0,
    };
    // No GDT and no IDT in memory: nothing reloads a segment, and an exception has nowhere to
    // go — it becomes a triple fault, KVM_EXIT_SHUTDOWN.
    sregs.gdt = kvm_dtable::default();
    sregs.idt = kvm_dtable::default();
    // CR0: PE (protected mode), MP, ET, NE (a modern FPU), WP, AM, PG (paging).
    sregs.cr0 = 0x8005_0033;
    // CR4: PAE (long mode needs it), OSFXSR and OSXMMEXCPT (without them SSE raises #UD).
    sregs.cr4 = 0x620;
    // EFER: LME (long mode enabled) and LMA (active: paging is on).
    sregs.efer = 0x500;
    sregs.cr3 = PML4;
    vcpu.set_sregs(&sregs)
        .unwrap_or_else(|e| fail(report, "KVM_SET_SREGS", &e.to_string()));
    let regs = kvm_regs {
        rip: entry,
        rsp: STACK_TOP,
        rflags: 2, // interrupts off, IOPL 0
        ..Default::default()
    };
    vcpu.set_regs(&regs)
        .unwrap_or_else(|e| fail(report, "KVM_SET_REGS", &e.to_string()));
}

/// Is this an AMD CPU (or Hygon's, which is AMD's design)? CPUID leaf 0 spells the vendor in
/// EBX, EDX, ECX, four ASCII bytes each, lowest byte first.
fn is_amd(cpuid: &kvm_bindings::CpuId) -> bool {
    let Some(leaf0) = cpuid.as_slice().iter().find(|e| e.function == 0) else {
        return false;
    };
    let mut vendor = [0u8; 12];
    vendor[0..4].copy_from_slice(&leaf0.ebx.to_le_bytes());
    vendor[4..8].copy_from_slice(&leaf0.edx.to_le_bytes());
    vendor[8..12].copy_from_slice(&leaf0.ecx.to_le_bytes());
    matches!(&vendor, b"AuthenticAMD" | b"HygonGenuine")
}
