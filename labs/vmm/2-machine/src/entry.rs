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
    let _ = (kvm, machine, entry);
    // TODO(step 4): page tables, a TSS with an I/O bitmap, CPUID, then long mode in ring 3
    // through KVM_SET_SREGS and the entry point through KVM_SET_REGS.
    report.todo(4, "long mode, ring 3");
    std::process::exit(0);
}

/// Is this an AMD CPU (or Hygon's, which is AMD's design)? CPUID leaf 0 spells the vendor in
/// EBX, EDX, ECX, four ASCII bytes each, lowest byte first.
fn is_amd(cpuid: &kvm_bindings::CpuId) -> bool {
    // TODO(step 4): find leaf 0 (function 0) in `cpuid` and compare EBX, EDX, ECX with
    // "AuthenticAMD" and "HygonGenuine".
    let _ = cpuid;
    false
}
