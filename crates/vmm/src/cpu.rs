//! The vCPU's first state: 64-bit long mode, **ring 3**, and the CPUID it reports.
//!
//! A real PC starts in 16-bit real mode, and firmware and a boot loader spend thousands of
//! instructions climbing to long mode: load a GDT, enable paging, set EFER.LME, far-jump into a
//! 64-bit code segment. A VMM can skip all of it. `KVM_SET_SREGS` writes the control registers and
//! the segment registers' *hidden caches* (base, limit, type, DPL — what the CPU would have loaded
//! from a descriptor) directly, so the guest's first instruction already runs in long mode.
//!
//! # Why ring 3
//!
//! The guest runs at privilege level 3 from its first instruction to its last, like a Linux
//! process. On hosts with VT-x or AMD-V it would make no difference; on this lab's machines
//! `/dev/kvm` is **PVM**, which runs guest ring 3 natively but *emulates* guest ring 0 (about a
//! thousand times slower, and it cannot emulate SSE, x87 or XSAVE there). A bare guest needs
//! nothing from ring 0 — no interrupts, no system calls — so ring 3 keeps one code path that is
//! fast everywhere. The price is small and explicit:
//!
//! * **U/S bit** at every page-table level (see [`crate::memory`]);
//! * **port I/O from ring 3**, because the hypercall instruction is `out`. See below;
//! * **an IDT** pointing at the VMM's own ring-0 handlers ([`crate::idt`]), which report an
//!   exception and never return — so a crash is reported with where it happened, on every vendor;
//!   the CPU finds the ring-0 stack for them in the TSS (`RSP0`).
//!
//! # Letting ring 3 use one I/O port: the TSS I/O-permission bitmap
//!
//! `out` is privileged: the CPU allows it when CPL ≤ RFLAGS.IOPL, and otherwise consults the
//! **I/O-permission bitmap** at the end of the task-state segment — one bit per port, 0 =
//! allowed. Setting IOPL = 3 would open *every* port (and `cli`/`sti`) to ring 3, and it does not
//! even work under PVM: there the guest's ring 3 runs in the host's ring 3 with the host's IOPL 0,
//! `out` traps as #GP, and KVM's instruction emulator performs the permission check — with
//! RFLAGS as reloaded from the hardware at the last exit, so a guest IOPL of 3 is lost at its
//! first page fault. The bitmap is read from guest memory instead, by the CPU on VT-x/AMD-V and by
//! the emulator on PVM, so it works on both. This VMM's TSS grants exactly the four ports a 4-byte
//! `out` to the hypercall port touches, and nothing else.
//!
//! # One TSS, two types: what each vendor accepts
//!
//! A TSS descriptor's type says whether the task is *busy* (11: `ltr` marks it so when it loads
//! TR) or *available* (9). The two vendors' virtualization disagree about which a VMM may put in
//! TR ([`Vendor::tss_type`]):
//!
//! * **VT-x** checks the guest state at every VM entry and requires TR to hold a *busy* 64-bit
//!   TSS in long mode; with 9 the entry fails (`KVM_EXIT_FAIL_ENTRY`, invalid guest state);
//! * **AMD-V** checks no segment types at `VMRUN`, and a real AMD CPU finds the bitmap through
//!   TR's base and limit whatever its type. But QEMU's model of AMD-V — the emulated AMD
//!   machine the lab's CI tests on — honours the bitmap only for an *available* TSS, as its model
//!   of `ltr` leaves one, and raises #GP on the guest's first `out` with a busy one.
//!
//! So the TSS is busy on Intel and available on AMD; each passes the vendor's rules, which
//! [`crate::checks`] writes down, and the tests show the AMD state breaking exactly one VT-x rule.
//! (A hypercall by a store to an unbacked page would need no bitmap, hence no TSS type at all;
//! `isolab_kernels::hypercall` says why the lab keeps port I/O.)
//!
//! # The state as data
//!
//! [`bare_guest`] returns the whole register state the VMM gives the vCPU — every control
//! register, every segment's hidden cache, the descriptor tables, RIP, RSP, RFLAGS — as one
//! value, built from nothing (not from what `KVM_GET_SREGS` happens to return), and
//! [`GuestState::apply`] hands it to KVM. Being data, it can be checked without a CPU: the
//! [`crate::checks`] module holds the rules VT-x's VM entry and AMD-V's VMRUN apply to it, and its
//! tests run both rule sets on every state this VMM (and the Linux VMM) sets. That is how the lab
//! knows the bare guest would enter on an Intel machine, which cannot be emulated here.

use crate::idt;
use crate::layout::{GDT_ADDR, IDT_ADDR, RING0_STACK_TOP, STACK_TOP, TSS_ADDR};
use isolab_kernels::hypercall;
use kvm_bindings::{kvm_dtable, kvm_regs, kvm_segment, kvm_sregs, CpuId};
use kvm_ioctls::VcpuFd;

/// CR0.PE: protected mode.
pub const CR0_PE: u64 = 1 << 0;
/// CR0.MP: `wait`/`fwait` honour CR0.TS (set with NE for a modern FPU).
pub const CR0_MP: u64 = 1 << 1;
/// CR0.ET: a math coprocessor is present (hard-wired to 1 on every CPU since the 486).
pub const CR0_ET: u64 = 1 << 4;
/// CR0.NE: report x87 errors as exceptions, not through the legacy PC IRQ 13.
pub const CR0_NE: u64 = 1 << 5;
/// CR0.WP: read-only pages are read-only for ring 0 too.
pub const CR0_WP: u64 = 1 << 16;
/// CR0.AM: allow alignment checking (only where RFLAGS.AC is also set, which it is not).
pub const CR0_AM: u64 = 1 << 18;
/// CR0.PG: paging. Long mode requires it.
pub const CR0_PG: u64 = 1 << 31;

/// CR4.PAE: 64-bit page-table entries. Long mode requires it.
pub const CR4_PAE: u64 = 1 << 5;
/// CR4.OSFXSR: the OS saves SSE state with FXSAVE. Without it the first SSE instruction raises
/// #UD, and Rust code for x86-64 uses SSE for every floating-point operation.
pub const CR4_OSFXSR: u64 = 1 << 9;
/// CR4.OSXMMEXCPT: SSE floating-point exceptions raise #XM instead of #UD.
pub const CR4_OSXMMEXCPT: u64 = 1 << 10;

/// EFER.LME: long mode enabled.
pub const EFER_LME: u64 = 1 << 8;
/// EFER.LMA: long mode active (set by the CPU once LME and paging are on; KVM wants both).
pub const EFER_LMA: u64 = 1 << 10;

/// RFLAGS bit 1 is reserved and always 1.
pub const RFLAGS_RESERVED: u64 = 1 << 1;

/// The guest's control registers: protected mode with paging and a usable FPU/SSE.
pub const CR0: u64 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_AM | CR0_PG;
/// The guest's CR4.
pub const CR4: u64 = CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT;
/// The guest's EFER.
pub const EFER: u64 = EFER_LME | EFER_LMA;
/// The guest's first RFLAGS: IOPL 0 (ring 3 may use no I/O port), interrupts off (there is no
/// interrupt controller), DF = 0.
pub const RFLAGS: u64 = RFLAGS_RESERVED;

/// Bytes of a 64-bit TSS before the I/O-permission bitmap: RSP0..2, IST1..7 and the I/O map base
/// (Intel SDM vol. 3, §8.7).
const TSS_HEADER: usize = 0x68;
/// Offset of RSP0: the stack pointer the CPU loads when an exception takes it to ring 0.
const TSS_RSP0: usize = 0x04;
/// The TSS field (offset 0x66) that gives the bitmap's offset from the TSS base.
const TSS_IOMAP_BASE: usize = 0x66;
/// Ports the bitmap describes: 0..0x400, enough to reach the hypercall port. Ports past the end
/// of the bitmap (beyond the TSS limit) are denied by the CPU without a bit.
const IO_PORTS: usize = 0x400;
/// The TSS: header, one bit per port, and the all-ones byte the CPU requires after the bitmap
/// (it reads two bytes for every check).
pub const TSS_SIZE: usize = TSS_HEADER + IO_PORTS / 8 + 1;

/// Whose hardware virtualization runs the guest: the rules of its state differ (see the module
/// documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vendor {
    /// Intel's VT-x (and VIA/Zhaoxin's, which is VT-x): `kvm_intel`, and PVM on Intel hosts.
    Intel,
    /// AMD-V (and Hygon's, which is AMD-V): `kvm_amd`.
    Amd,
}

impl Vendor {
    /// The vendor of this host's CPU, from CPUID leaf 0 — the vendor KVM's guests get too.
    pub fn of_host() -> Vendor {
        let leaf = std::arch::x86_64::__cpuid(0);
        let id: Vec<u8> = [leaf.ebx, leaf.edx, leaf.ecx]
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .collect();
        match &id[..] {
            b"AuthenticAMD" | b"HygonGenuine" => Vendor::Amd,
            _ => Vendor::Intel,
        }
    }

    /// The TSS type this vendor's virtualization accepts in TR: busy (11) for VT-x, available
    /// (9) for AMD-V.
    pub const fn tss_type(self) -> u8 {
        match self {
            Vendor::Intel => 0xb,
            Vendor::Amd => 0x9,
        }
    }
}

/// A segment descriptor, written once here and used twice: encoded into the GDT in guest memory
/// ([`Descriptor::encode`]) and loaded into a segment register's hidden cache through
/// `KVM_SET_SREGS` ([`Descriptor::segment`]). Deriving both from one value keeps them equal, as
/// they would be had the guest loaded the register itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Descriptor {
    /// Index in the GDT.
    pub index: u16,
    /// Type: for code/data `0xb` = execute/read, accessed; `0x3` = read/write, accessed. For a
    /// system segment `0xb` = busy 64-bit TSS, `0x9` = available 64-bit TSS, `0x2` = LDT.
    pub kind: u8,
    /// S: 1 for code/data, 0 for system segments (TSS).
    pub code_or_data: bool,
    /// Descriptor privilege level.
    pub dpl: u8,
    /// L: a 64-bit code segment.
    pub long: bool,
    /// Base address (ignored in long mode except for FS, GS and the TSS).
    pub base: u64,
    /// Limit (ignored in long mode except for the TSS).
    pub limit: u32,
}

/// Ring-0 code (selector 0x08): the code segment of the exception handlers.
pub const KERNEL_CODE: Descriptor = Descriptor {
    index: 1,
    kind: 0xb,
    code_or_data: true,
    dpl: 0,
    long: true,
    base: 0,
    limit: 0xf_ffff,
};
/// Ring-0 data (selector 0x10): unused (in 64-bit mode the handlers need no data segment).
pub const KERNEL_DATA: Descriptor = Descriptor {
    index: 2,
    kind: 0x3,
    code_or_data: true,
    dpl: 0,
    long: false,
    base: 0,
    limit: 0xf_ffff,
};
/// Ring-3 64-bit code: CS = 0x1b (index 3, RPL 3). The CPU's privilege level *is* CS's DPL.
pub const USER_CODE: Descriptor = Descriptor {
    index: 3,
    kind: 0xb,
    code_or_data: true,
    dpl: 3,
    long: true,
    base: 0,
    limit: 0xf_ffff,
};
/// Ring-3 data: SS = DS = ES = FS = GS = 0x23 (index 4, RPL 3). SS's DPL must equal CS's.
pub const USER_DATA: Descriptor = Descriptor {
    index: 4,
    kind: 0x3,
    code_or_data: true,
    dpl: 3,
    long: false,
    base: 0,
    limit: 0xf_ffff,
};
/// The task-state segment (selector 0x28, two GDT slots). A 64-bit CPU reads it for two things:
/// the ring-0 stack when an exception leaves ring 3, and the I/O-permission bitmap (every
/// hypercall). Its type is the vendor's ([`Vendor::tss_type`]); this is Intel's.
pub const TSS: Descriptor = Descriptor {
    index: 5,
    kind: 0xb,
    code_or_data: false,
    dpl: 0,
    long: false,
    base: TSS_ADDR,
    limit: TSS_SIZE as u32 - 1,
};

/// The TSS descriptor for `vendor`.
pub const fn tss_for(vendor: Vendor) -> Descriptor {
    Descriptor {
        kind: vendor.tss_type(),
        ..TSS
    }
}

/// The TSS's bytes: RSP0 at the top of the ring-0 stack, no interrupt stacks, and an
/// I/O-permission bitmap in which every port is denied except the four bytes of the hypercall
/// port.
pub fn tss() -> [u8; TSS_SIZE] {
    let mut tss = [0u8; TSS_SIZE];
    tss[TSS_RSP0..TSS_RSP0 + 8].copy_from_slice(&RING0_STACK_TOP.to_le_bytes());
    tss[TSS_IOMAP_BASE..TSS_IOMAP_BASE + 2].copy_from_slice(&(TSS_HEADER as u16).to_le_bytes());
    let bitmap = &mut tss[TSS_HEADER..];
    bitmap.fill(0xff);
    // A 4-byte `out dx, eax` touches ports dx..dx+3: each of their bits must be clear.
    for port in hypercall::PORT as usize..hypercall::PORT as usize + 4 {
        bitmap[port / 8] &= !(1 << (port % 8));
    }
    tss
}

/// The LDT register of a guest that has no LDT: KVM's reset value (selector 0, a present,
/// empty-based LDT descriptor of limit 0xffff). Long mode never consults it unless a selector
/// names the LDT, and none does; VT-x checks only that it is well-formed.
pub const LDTR: kvm_segment = kvm_segment {
    base: 0,
    limit: 0xffff,
    selector: 0,
    type_: 0x2,
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

/// The local APIC's base MSR at reset: the APIC at its standard address 0xfee0_0000, enabled
/// (bit 11), on the bootstrap processor (bit 8). The state every x86 CPU powers on with.
pub const APIC_BASE_RESET: u64 = 0xfee0_0000 | 1 << 11 | 1 << 8;

impl Descriptor {
    /// The selector that names this descriptor, with RPL = DPL.
    pub const fn selector(&self) -> u16 {
        self.index << 3 | self.dpl as u16
    }

    /// Limits above 1 MiB are counted in 4 KiB units (granularity bit).
    const fn granular(&self) -> bool {
        self.code_or_data
    }

    /// The 8-byte GDT entry (the low half, for a system segment).
    pub const fn encode(&self) -> u64 {
        let (base, limit) = (self.base, self.limit as u64);
        (limit & 0xffff)
            | (base & 0xff_ffff) << 16
            | (self.kind as u64 & 0xf) << 40
            | (self.code_or_data as u64) << 44
            | (self.dpl as u64 & 3) << 45
            | 1 << 47 // present
            | (limit >> 16 & 0xf) << 48
            | (self.long as u64) << 53
            | ((self.code_or_data && !self.long) as u64) << 54 // D/B: 32-bit default for data
            | (self.granular() as u64) << 55
            | (base >> 24 & 0xff) << 56
    }

    /// The segment register's hidden cache, as `KVM_SET_SREGS` takes it.
    pub const fn segment(&self) -> kvm_segment {
        kvm_segment {
            base: self.base,
            // The cache holds the limit in bytes, after scaling by the granularity.
            limit: if self.granular() {
                (self.limit << 12) | 0xfff
            } else {
                self.limit
            },
            selector: self.selector(),
            type_: self.kind,
            present: 1,
            dpl: self.dpl,
            db: (self.code_or_data && !self.long) as u8,
            s: self.code_or_data as u8,
            l: self.long as u8,
            g: self.granular() as u8,
            avl: 0,
            unusable: 0,
            padding: 0,
        }
    }
}

/// A global descriptor table of `N` eight-byte slots holding `descriptors`, each in the slot its
/// index names, every other slot null (slot 0 must be: selector 0 is the "null selector"). The
/// one way both VMMs write their GDT. A system descriptor (the TSS) is 16 bytes in long mode: it
/// takes two slots, and the upper one holds bits 32..63 of its base.
pub fn gdt_table<const N: usize>(descriptors: &[Descriptor]) -> [u64; N] {
    let mut table = [0u64; N];
    for d in descriptors {
        let slot = d.index as usize;
        table[slot] = d.encode();
        if !d.code_or_data {
            table[slot + 1] = d.base >> 32;
        }
    }
    table
}

/// The bare guest's GDT for `vendor`: null, ring-0 code and data, ring-3 code and data, and the
/// TSS.
pub fn gdt(vendor: Vendor) -> [u64; 7] {
    gdt_table(&[
        KERNEL_CODE,
        KERNEL_DATA,
        USER_CODE,
        USER_DATA,
        tss_for(vendor),
    ])
}

/// Errors of setting up a vCPU (both VMMs).
#[derive(Debug, thiserror::Error)]
pub enum CpuError {
    /// An ioctl failed.
    #[error("{op}: {source}")]
    Ioctl {
        /// Which.
        op: &'static str,
        /// Why.
        source: kvm_ioctls::Error,
    },
    /// Writing a table (GDT, page tables) into guest memory failed.
    #[error("writing the {what} into guest memory: {detail}")]
    Write {
        /// Which.
        what: &'static str,
        /// Why.
        detail: String,
    },
}

/// The error of the ioctl `op`.
pub fn ioctl(op: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> CpuError {
    move |source| CpuError::Ioctl { op, source }
}

/// The whole register state of a vCPU at its first instruction: what `KVM_SET_SREGS` and
/// `KVM_SET_REGS` receive. The general registers a VMM does not name are zero.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct GuestState {
    /// Control registers, segments, descriptor tables, EFER, the APIC base.
    pub sregs: kvm_sregs,
    /// RIP, RSP, RFLAGS and the general registers.
    pub regs: kvm_regs,
}

impl GuestState {
    /// Give the state to the vCPU: two ioctls, nothing read back.
    pub fn apply(&self, vcpu: &VcpuFd) -> Result<(), CpuError> {
        vcpu.set_sregs(&self.sregs)
            .map_err(ioctl("KVM_SET_SREGS"))?;
        vcpu.set_regs(&self.regs).map_err(ioctl("KVM_SET_REGS"))
    }
}

/// The mode a vCPU starts in: its control registers and EFER.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mode {
    /// CR0.
    pub cr0: u64,
    /// CR3: the page tables (0 without paging).
    pub cr3: u64,
    /// CR4.
    pub cr4: u64,
    /// EFER.
    pub efer: u64,
}

/// A descriptor table register: `entries` entries of `entry_bytes` at `base`.
pub fn table(base: u64, entries: usize, entry_bytes: usize) -> kvm_dtable {
    kvm_dtable {
        base,
        limit: (entries * entry_bytes).saturating_sub(1) as u16,
        padding: [0; 3],
    }
}

/// Special registers as a VMM sets them for flat segments — `code` in CS, `data` in every data
/// segment, `tss` in TR, no LDT — with the GDT and IDT registers `gdt` and `idt`, the mode
/// `mode`, and the APIC at its reset state. Both of the lab's VMMs build their vCPU's state so.
pub fn flat_sregs(
    code: Descriptor,
    data: Descriptor,
    tss: Descriptor,
    gdt: kvm_dtable,
    idt: kvm_dtable,
    mode: Mode,
) -> kvm_sregs {
    let data = data.segment();
    kvm_sregs {
        cs: code.segment(),
        ds: data,
        es: data,
        fs: data,
        gs: data,
        ss: data,
        tr: tss.segment(),
        ldt: LDTR,
        gdt,
        idt,
        cr0: mode.cr0,
        cr2: 0,
        cr3: mode.cr3,
        cr4: mode.cr4,
        cr8: 0,
        efer: mode.efer,
        apic_base: APIC_BASE_RESET,
        interrupt_bitmap: [0; 4],
    }
}

/// The bare guest's first state on `vendor`'s CPU: long mode with the page tables at `cr3`, ring
/// 3, RIP at `entry`, RSP at the top of the stack, interrupts off, the GDT, IDT and TSS of
/// [`crate::memory`].
pub fn bare_guest(cr3: u64, entry: u64, vendor: Vendor) -> GuestState {
    let sregs = flat_sregs(
        USER_CODE,
        USER_DATA,
        tss_for(vendor),
        table(GDT_ADDR, gdt(vendor).len(), 8),
        table(IDT_ADDR, idt::VECTORS, idt::GATE_BYTES),
        Mode {
            cr0: CR0,
            cr3,
            cr4: CR4,
            efer: EFER,
        },
    );
    let regs = kvm_regs {
        rip: entry,
        rsp: STACK_TOP,
        rflags: RFLAGS,
        ..Default::default()
    };
    GuestState { sregs, regs }
}

/// The guest's CPUID: `supported`, with the initial APIC ID of vCPU 0.
///
/// The VMM passes on `supported`, what KVM can virtualise on this host
/// (`KVM_GET_SUPPORTED_CPUID`, see [`crate::kvm::supported_cpuid`]) — the honest answer for a
/// guest that, like the Linux workload, should see the same CPU as a process would.
pub fn guest_cpuid(supported: &CpuId) -> CpuId {
    let mut cpuid = supported.clone();
    for leaf in cpuid.as_mut_slice() {
        // Leaf 1, EBX bits 24..31: the initial APIC ID. KVM leaves it for the VMM to fill; this
        // is vCPU 0.
        if leaf.function == 1 {
            leaf.ebx &= 0x00ff_ffff;
        }
    }
    cpuid
}

/// Give the vCPU its CPUID, then its state.
///
/// CPUID first: KVM checks CR4 bits against the CPUID the guest has (CR4.OSXSAVE, say, needs
/// XSAVE in CPUID), and a vCPU with no CPUID set reports no features at all.
pub fn configure(vcpu: &VcpuFd, cpuid: &CpuId, state: &GuestState) -> Result<(), CpuError> {
    vcpu.set_cpuid2(cpuid).map_err(ioctl("KVM_SET_CPUID2"))?;
    state.apply(vcpu)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bare_guest_starts_in_the_state_verified_on_pvm() {
        // GUIDE §6: CS 0x1b (DPL 3, L=1, type 0xb), SS/DS 0x23 (DPL 3, type 3), CR0 0x80050033,
        // EFER 0x500. RFLAGS is 0x2, not GUIDE's 0x3002: IOPL 3 does not survive PVM's first exit
        // (see the module documentation); the TSS bitmap grants the hypercall port instead.
        let GuestState { sregs, regs } = bare_guest(0x1_0000, 0x10_0000, Vendor::Intel);
        assert_eq!(
            (sregs.cs.selector, sregs.cs.dpl, sregs.cs.l, sregs.cs.type_),
            (0x1b, 3, 1, 0xb)
        );
        for s in [sregs.ss, sregs.ds, sregs.es, sregs.fs, sregs.gs] {
            assert_eq!((s.selector, s.dpl, s.type_, s.present), (0x23, 3, 3, 1));
        }
        assert_eq!(sregs.cr0, 0x8005_0033);
        assert_eq!(sregs.cr4, 0x620);
        assert_eq!(sregs.efer, 0x500);
        assert_eq!(
            (regs.rip, regs.rsp, regs.rflags),
            (0x10_0000, STACK_TOP, 0x2)
        );
        assert_eq!(
            (sregs.tr.selector, sregs.tr.type_, sregs.tr.s, sregs.tr.base),
            (0x28, 0xb, 0, TSS_ADDR)
        );
        assert_eq!((sregs.idt.base, sregs.idt.limit), (IDT_ADDR, 32 * 16 - 1));
        // On AMD the same, but an available TSS.
        let amd = bare_guest(0x1_0000, 0x10_0000, Vendor::Amd).sregs;
        assert_eq!((amd.tr.type_, amd.tr.base), (0x9, TSS_ADDR));
        assert_eq!(amd.cs, sregs.cs);
    }

    #[test]
    fn the_tss_grants_exactly_the_hypercall_port_and_holds_the_ring_0_stack() {
        let tss = tss();
        let rsp0 = u64::from_le_bytes(tss[4..12].try_into().unwrap());
        assert_eq!(rsp0, RING0_STACK_TOP);
        let base = u16::from_le_bytes([tss[0x66], tss[0x67]]) as usize;
        // The CPU's check: for each port the instruction touches, the bit at base + port/8 must be
        // clear, and the bytes must lie within the TSS limit.
        let allowed = |port: usize| {
            base + port / 8 < TSS.limit as usize && tss[base + port / 8] & (1 << (port % 8)) == 0
        };
        let open: Vec<usize> = (0..0x1_0000).filter(|&p| allowed(p)).collect();
        let p = hypercall::PORT as usize;
        assert_eq!(open, [p, p + 1, p + 2, p + 3]);
        assert_eq!(
            tss[TSS_SIZE - 1],
            0xff,
            "the bitmap ends in an all-ones byte"
        );
        assert_eq!(TSS.segment().limit as usize, TSS_SIZE - 1);
    }

    #[test]
    fn gdt_entries_decode_to_the_cached_segments() {
        // Decode each GDT entry the way the CPU does and compare with what KVM_SET_SREGS loads.
        let table = gdt(Vendor::Intel);
        for d in [KERNEL_CODE, KERNEL_DATA, USER_CODE, USER_DATA, TSS] {
            let e = table[d.index as usize];
            let s = d.segment();
            let raw_limit = (e & 0xffff) | (e >> 48 & 0xf) << 16;
            let g = e >> 55 & 1;
            let limit = if g == 1 {
                raw_limit << 12 | 0xfff
            } else {
                raw_limit
            };
            let mut base = (e >> 16 & 0xff_ffff) | (e >> 56 & 0xff) << 24;
            if d.code_or_data {
                assert_eq!(e >> 47 & 1, 1);
            } else {
                base |= table[d.index as usize + 1] << 32;
            }
            assert_eq!(base, s.base, "{d:?}");
            assert_eq!(limit, s.limit as u64, "{d:?}");
            assert_eq!(e >> 40 & 0xf, s.type_ as u64, "{d:?}");
            assert_eq!(e >> 44 & 1, s.s as u64, "{d:?}");
            assert_eq!(e >> 45 & 3, s.dpl as u64, "{d:?}");
            assert_eq!(e >> 53 & 1, s.l as u64, "{d:?}");
            assert_eq!(e >> 54 & 1, s.db as u64, "{d:?}");
            assert_eq!(d.selector() >> 3, d.index);
        }
        // The well-known encoding of a flat 64-bit ring-3 code segment.
        assert_eq!(USER_CODE.encode(), 0x00af_fb00_0000_ffff);
        assert_eq!(USER_DATA.encode(), 0x00cf_f300_0000_ffff);
    }
}
