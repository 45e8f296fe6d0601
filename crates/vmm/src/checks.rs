//! The rules a CPU applies to a vCPU's state before it runs it — written down, so that the state
//! this VMM sets can be checked without the CPU.
//!
//! `KVM_SET_SREGS` accepts almost anything; the CPU is stricter. At every VM entry, Intel's VT-x
//! checks the guest-state area against a long list of rules and refuses to enter when one is
//! broken (`KVM_EXIT_FAIL_ENTRY`, "invalid guest state"); AMD's SVM checks a shorter list at
//! `VMRUN` (`VMEXIT_INVALID`). A VMM developed on one vendor can pass the other's checks or not —
//! and this lab's CI has neither (nested PVM), only an *emulated* AMD-V. VT-x cannot be emulated
//! here at all. So the rules are data and code: [`vmx`], [`svm`] and [`kvm`] each return the
//! rules a [`GuestState`] breaks, and the tests run them on every state isolab's VMMs set (the
//! bare guest, a Linux kernel at its PVH entry and at its 64-bit entry), and on deliberately
//! broken ones, so each rule is seen to fire.
//!
//! The rules are checked on the state *as the CPU receives it*: KVM adds a few bits itself that
//! the guest never sees (CR0.NE and CR4.VMXE on Intel, EFER.SVME on AMD), and those are added
//! here before checking ([`vmx_view`], [`svm_view`]).
//!
//! Sources: Intel SDM vol. 3C, "Checks on the Guest State Area" (§26.3.1 in older editions,
//! §28.3.1 in newer ones); AMD APM vol. 2, §15.5.1 "Basic Operation", the list of conditions under
//! which `VMRUN` exits with `VMEXIT_INVALID` ("Canonicalization and Consistency Checks"); Linux,
//! `arch/x86/kvm/x86.c`, `kvm_is_valid_sregs()`.

use crate::cpu::{GuestState, CR0_NE, CR0_PE, CR0_PG, CR4_PAE, EFER_LMA, EFER_LME};
use kvm_bindings::kvm_segment;

/// CR0.NW: not write-through (with CD, cache control).
const CR0_NW: u64 = 1 << 29;
/// CR0.CD: cache disable.
const CR0_CD: u64 = 1 << 30;
/// CR4.VMXE: VMX enabled. Must be 1 while in VMX operation — KVM sets it in the CR4 the CPU
/// uses and hides it from the guest (the CR4 read shadow), so a VMM never sets it.
const CR4_VMXE: u64 = 1 << 13;
/// CR4.PCIDE: process-context identifiers.
const CR4_PCIDE: u64 = 1 << 17;
/// CR4 bits that exist (VME … PKS, and LAM_SUP 28); bit 15 and the rest are reserved.
const CR4_DEFINED: u64 = 0x01ff_7fff | 1 << 28;
/// EFER bits Intel defines: SCE (0), LME (8), LMA (10), NXE (11).
const EFER_INTEL: u64 = 1 | 1 << 8 | 1 << 10 | 1 << 11;
/// EFER.SVME: SVM enabled. KVM sets it in the VMCB's copy of EFER; a VMM never sets it.
const EFER_SVME: u64 = 1 << 12;
/// EFER bits AMD defines in the range that can matter here: SCE, LME, LMA, NXE, SVME, LMSLE,
/// FFXSR, TCE (0, 8, 10..15); MCOMMIT, INTWB and the rest above are never set by a VMM.
const EFER_AMD: u64 = 1 | 1 << 8 | 0xfc00;
/// RFLAGS bits that must be zero: 63:22, 15, 5, 3.
const RFLAGS_RESERVED_ZERO: u64 = !0x3f_ffff | 1 << 15 | 1 << 5 | 1 << 3;
/// RFLAGS.VM: virtual-8086 mode.
const RFLAGS_VM: u64 = 1 << 17;
/// The fewest physical-address bits of any x86-64 CPU: a CR3 within them is valid everywhere.
const MIN_PHYS_BITS: u32 = 36;

/// True for an address whose bits 63..47 are all equal (48-bit virtual addresses).
fn canonical(addr: u64) -> bool {
    let top = addr >> 47;
    top == 0 || top == 0x1_ffff
}

/// VT-x's limit/granularity rule, for a segment's cached limit: "If any bit in the limit field in
/// the range 11:0 is 0, G must be 0. If any bit in the limit field in the range 31:20 is 1, G
/// must be 1."
fn limit_matches_granularity(s: &kvm_segment) -> bool {
    let low_all_ones = s.limit & 0xfff == 0xfff;
    let high_any = s.limit & 0xfff0_0000 != 0;
    (low_all_ones || s.g == 0) && (!high_any || s.g == 1)
}

/// The state VT-x receives: the VMM's, plus what KVM adds on Intel (CR0.NE, CR4.VMXE).
pub fn vmx_view(state: &GuestState) -> GuestState {
    let mut hw = *state;
    hw.sregs.cr0 |= CR0_NE;
    hw.sregs.cr4 |= CR4_VMXE;
    hw
}

/// The state AMD-V receives: the VMM's, plus EFER.SVME, which KVM sets in the VMCB.
pub fn svm_view(state: &GuestState) -> GuestState {
    let mut hw = *state;
    hw.sregs.efer |= EFER_SVME;
    hw
}

/// Collects the names of broken rules.
struct Rules(Vec<&'static str>);

impl Rules {
    fn check(&mut self, rule: &'static str, holds: bool) {
        if !holds {
            self.0.push(rule);
        }
    }
}

/// The VT-x guest-state rules `state` breaks, as the CPU would check them at VM entry.
///
/// KVM's VM-entry controls are assumed as KVM sets them: "IA-32e mode guest" = EFER.LMA, "load
/// IA32_EFER" on, and "unrestricted guest" on, which KVM enables on every VT-x CPU that has it
/// (all since 2010); rules that apply only without it are left out.
pub fn vmx(state: &GuestState) -> Vec<&'static str> {
    let GuestState { sregs: s, regs: r } = vmx_view(state);
    let ia32e = s.efer & EFER_LMA != 0;
    let mut rules = Rules(Vec::new());

    // --- Control registers and MSRs (SDM "Checks on Guest Control Registers, Debug Registers,
    // and MSRs") ---
    // "The CR0 field must not set any bit to a value not supported in VMX operation": bits the
    // IA32_VMX_CR0_FIXED0 MSR fixes to 1 are PE, NE and PG, and "unrestricted guest" frees PE
    // and PG — NE remains, and KVM supplies it.
    rules.check("vmx: CR0.NE fixed to 1", s.cr0 & CR0_NE != 0);
    // IA32_VMX_CR0_FIXED1: bits 63:32 of CR0 are reserved and fixed to 0.
    rules.check("vmx: CR0 bits 63:32 fixed to 0", s.cr0 >> 32 == 0);
    // "If bit 31 in the CR0 field (corresponding to PG) is 1, bit 0 in that field (PE) must also
    // be 1."
    rules.check(
        "vmx: CR0.PG requires CR0.PE",
        s.cr0 & CR0_PG == 0 || s.cr0 & CR0_PE != 0,
    );
    // "The CR4 field must not set any bit to a value not supported in VMX operation":
    // IA32_VMX_CR4_FIXED0 fixes VMXE to 1 (KVM supplies it) ...
    rules.check("vmx: CR4.VMXE fixed to 1", s.cr4 & CR4_VMXE != 0);
    // ... and IA32_VMX_CR4_FIXED1 fixes every reserved bit to 0.
    rules.check(
        "vmx: CR4 reserved bits fixed to 0",
        s.cr4 & !CR4_DEFINED == 0,
    );
    // "If the “IA-32e mode guest” VM-entry control is 1, bit 31 in the CR0 field (PG) and bit 5
    // in the CR4 field (PAE) must each be 1."
    rules.check(
        "vmx: IA-32e mode guest requires CR0.PG and CR4.PAE",
        !ia32e || (s.cr0 & CR0_PG != 0 && s.cr4 & CR4_PAE != 0),
    );
    // "If the “IA-32e mode guest” VM-entry control is 0, bit 17 in the CR4 field (PCIDE) must
    // be 0."
    rules.check(
        "vmx: CR4.PCIDE only in IA-32e mode",
        ia32e || s.cr4 & CR4_PCIDE == 0,
    );
    // "The CR3 field must be such that bits 63:52 and bits in the range 51:32 beyond the
    // processor’s physical-address width are 0."
    rules.check(
        "vmx: CR3 within the physical-address width",
        s.cr3 >> MIN_PHYS_BITS == 0,
    );
    // "If the “load IA32_EFER” VM-entry control is 1 ... Bits reserved in the IA32_EFER MSR must
    // be 0."
    rules.check("vmx: EFER reserved bits 0", s.efer & !EFER_INTEL == 0);
    // "Bit 10 (corresponding to IA32_EFER.LMA) must equal the value of the “IA-32e mode guest”
    // VM-entry control. It must also be identical to bit 8 (LME) if bit 31 in the CR0 field
    // (corresponding to CR0.PG) is 1."
    rules.check(
        "vmx: EFER.LMA equals EFER.LME when paging",
        s.cr0 & CR0_PG == 0 || (s.efer & EFER_LMA != 0) == (s.efer & EFER_LME != 0),
    );

    // --- Segment registers (SDM "Checks on Guest Segment Registers"; not virtual-8086 mode) ---
    // "TR. The TI flag (bit 2) must be 0."
    rules.check("vmx: TR selector TI = 0", s.tr.selector & 4 == 0);
    // "LDTR. If LDTR is usable, the TI flag (bit 2) must be 0."
    rules.check(
        "vmx: LDTR selector TI = 0",
        s.ldt.unusable != 0 || s.ldt.selector & 4 == 0,
    );
    // "Base-address fields: TR, FS, GS: the address must be canonical."
    rules.check("vmx: TR base canonical", canonical(s.tr.base));
    rules.check("vmx: FS base canonical", canonical(s.fs.base));
    rules.check("vmx: GS base canonical", canonical(s.gs.base));
    // "LDTR: if usable, the address must be canonical."
    rules.check(
        "vmx: LDTR base canonical",
        s.ldt.unusable != 0 || canonical(s.ldt.base),
    );
    // "CS: bits 63:32 of the address must be zero."
    rules.check("vmx: CS base bits 63:32 zero", s.cs.base >> 32 == 0);
    // "SS, DS, ES: if the register is usable, bits 63:32 of the address must be zero."
    for (rule, seg) in [
        ("vmx: SS base bits 63:32 zero", &s.ss),
        ("vmx: DS base bits 63:32 zero", &s.ds),
        ("vmx: ES base bits 63:32 zero", &s.es),
    ] {
        rules.check(rule, seg.unusable != 0 || seg.base >> 32 == 0);
    }

    // "Access-rights fields. CS: Bits 3:0 (Type) must be 9, 11, 13 or 15 (accessed code
    // segment); or 3 (accessed read/write data) if “unrestricted guest” is 1."
    rules.check(
        "vmx: CS type accessed code (or 3)",
        matches!(s.cs.type_, 9 | 11 | 13 | 15 | 3),
    );
    // "Bit 4 (S). If the register is CS or if the register is usable, S must be 1."
    rules.check("vmx: CS.S = 1", s.cs.s == 1);
    // "Bits 6:5 (DPL). CS: if the Type is 3, the DPL must be 0. If the Type is 9 or 11
    // (non-conforming code), the DPL must equal the DPL in the access-rights field for SS. If the
    // Type is 13 or 15 (conforming code), the DPL cannot be greater than the DPL for SS."
    rules.check(
        "vmx: CS.DPL agrees with its type and SS.DPL",
        match s.cs.type_ {
            3 => s.cs.dpl == 0,
            9 | 11 => s.cs.dpl == s.ss.dpl,
            13 | 15 => s.cs.dpl <= s.ss.dpl,
            _ => true,
        },
    );
    // "Bit 7 (P). CS: must be 1."
    rules.check("vmx: CS present", s.cs.present == 1);
    // "Bit 14 (D/B). For CS: if the guest will be in IA-32e mode and L (bit 13) is 1, D/B must
    // be 0."
    rules.check(
        "vmx: a 64-bit CS has D = 0",
        !(ia32e && s.cs.l == 1) || s.cs.db == 0,
    );
    rules.check(
        "vmx: CS limit and G agree",
        limit_matches_granularity(&s.cs),
    );

    // "SS: If SS is usable, the Type must be 3 or 7 (read/write, accessed, expand-up or down)."
    if s.ss.unusable == 0 {
        rules.check(
            "vmx: SS type read/write accessed",
            matches!(s.ss.type_, 3 | 7),
        );
        rules.check("vmx: SS.S = 1", s.ss.s == 1);
        // "SS: if CS Type is 3 or bit 0 in the CR0 field (PE) is 0, the DPL must be 0."
        rules.check(
            "vmx: SS.DPL 0 in real mode",
            !(s.cs.type_ == 3 || s.cr0 & CR0_PE == 0) || s.ss.dpl == 0,
        );
        rules.check("vmx: SS present", s.ss.present == 1);
        rules.check(
            "vmx: SS limit and G agree",
            limit_matches_granularity(&s.ss),
        );
    }
    // "DS, ES, FS, GS: if usable, bit 0 of the Type (accessed) must be 1; if bit 3 (code) is 1,
    // bit 1 (readable) must be 1; S must be 1; P must be 1."
    for (name, seg) in [("DS", &s.ds), ("ES", &s.es), ("FS", &s.fs), ("GS", &s.gs)] {
        if seg.unusable != 0 {
            continue;
        }
        let ok = seg.type_ & 1 == 1
            && (seg.type_ & 8 == 0 || seg.type_ & 2 != 0)
            && seg.s == 1
            && seg.present == 1
            && limit_matches_granularity(seg);
        rules.check(
            match name {
                "DS" => "vmx: DS usable data segment",
                "ES" => "vmx: ES usable data segment",
                "FS" => "vmx: FS usable data segment",
                _ => "vmx: GS usable data segment",
            },
            ok,
        );
    }
    // "TR: If the guest will be in IA-32e mode, the Type must be 11 (64-bit busy TSS); otherwise
    // 3 (16-bit busy TSS) or 11 (32-bit busy TSS)." — an available TSS (9) is refused.
    rules.check(
        "vmx: TR type busy TSS (11 in IA-32e mode)",
        if ia32e {
            s.tr.type_ == 11
        } else {
            matches!(s.tr.type_, 3 | 11)
        },
    );
    // "TR: S must be 0; P must be 1; ... TR must be usable (bit 16, unusable, must be 0)."
    rules.check("vmx: TR system segment", s.tr.s == 0);
    rules.check("vmx: TR present", s.tr.present == 1);
    rules.check("vmx: TR usable", s.tr.unusable == 0);
    rules.check(
        "vmx: TR limit and G agree",
        limit_matches_granularity(&s.tr),
    );
    // "LDTR: if usable, the Type must be 2 (LDT); S must be 0; P must be 1."
    rules.check(
        "vmx: LDTR usable LDT",
        s.ldt.unusable != 0
            || (s.ldt.type_ == 2
                && s.ldt.s == 0
                && s.ldt.present == 1
                && limit_matches_granularity(&s.ldt)),
    );

    // --- Descriptor-table registers ---
    // "The base-address fields for GDTR and IDTR must contain canonical addresses." (Their limit
    // fields' bits 31:16 must be 0: KVM's 16-bit limit cannot break that.)
    rules.check("vmx: GDTR base canonical", canonical(s.gdt.base));
    rules.check("vmx: IDTR base canonical", canonical(s.idt.base));

    // --- RIP and RFLAGS ---
    // "Bits 63:32 must be 0 if the “IA-32e mode guest” VM-entry control is 0 or if the L bit in
    // the access-rights field for CS is 0. If the processor supports N < 64 linear-address bits,
    // bits 63:N must be identical if ... IA-32e mode guest ... and ... L ... is 1."
    rules.check(
        "vmx: RIP fits the code segment's mode",
        if ia32e && s.cs.l == 1 {
            canonical(r.rip)
        } else {
            r.rip >> 32 == 0
        },
    );
    // "RFLAGS: Reserved bits 63:22, bit 15, bit 5 and bit 3 must be 0 in the field, and reserved
    // bit 1 must be 1."
    rules.check(
        "vmx: RFLAGS reserved bits",
        r.rflags & RFLAGS_RESERVED_ZERO == 0 && r.rflags & 2 != 0,
    );
    // "The VM flag (bit 17) must be 0 either if the “IA-32e mode guest” VM-entry control is 1 or
    // if bit 0 in the CR0 field (corresponding to CR0.PE) is 0."
    rules.check(
        "vmx: RFLAGS.VM 0 in IA-32e mode or real mode",
        !(ia32e || s.cr0 & CR0_PE == 0) || r.rflags & RFLAGS_VM == 0,
    );
    rules.0
}

/// The SVM `VMRUN` consistency checks `state` breaks (APM vol. 2 §15.5.1: "VMRUN exits with
/// VMEXIT_INVALID error code if any of the following conditions are true").
///
/// SVM checks far less than VT-x: nothing about segment types, so it accepts any TR — which is
/// why a state tried only on AMD can still fail on Intel. The conditions on the VMCB's control
/// area (the VMRUN intercept, the ASID, the MSR and I/O permission maps, event injection) are
/// KVM's own, not the VMM's, and left out.
pub fn svm(state: &GuestState) -> Vec<&'static str> {
    let GuestState { sregs: s, .. } = svm_view(state);
    let lme = s.efer & EFER_LME != 0;
    let pg = s.cr0 & CR0_PG != 0;
    let mut rules = Rules(Vec::new());
    // "EFER.SVME is zero." KVM sets it; checked on what the CPU receives.
    rules.check("svm: EFER.SVME set", s.efer & EFER_SVME != 0);
    // "CR0.CD is zero and CR0.NW is set."
    rules.check(
        "svm: not CR0.NW without CR0.CD",
        !(s.cr0 & CR0_CD == 0 && s.cr0 & CR0_NW != 0),
    );
    // "CR0[63:32] are not zero."
    rules.check("svm: CR0 bits 63:32 zero", s.cr0 >> 32 == 0);
    // "Any MBZ bit of CR3 is set." In long mode bits 63:52 and those beyond the physical-address
    // width are MBZ.
    rules.check("svm: CR3 MBZ bits", s.cr3 >> MIN_PHYS_BITS == 0);
    // "Any MBZ bit of CR4 is set."
    rules.check("svm: CR4 MBZ bits", s.cr4 & !CR4_DEFINED == 0);
    // "Any MBZ bit of EFER is set."
    rules.check("svm: EFER MBZ bits", s.efer & !EFER_AMD == 0);
    // "EFER.LME and CR0.PG are both set and CR4.PAE is zero."
    rules.check(
        "svm: long mode paging requires CR4.PAE",
        !(lme && pg) || s.cr4 & CR4_PAE != 0,
    );
    // "EFER.LME and CR0.PG are both non-zero and CR0.PE is zero."
    rules.check(
        "svm: long mode paging requires CR0.PE",
        !(lme && pg) || s.cr0 & CR0_PE != 0,
    );
    // "EFER.LME, CR0.PG, CR4.PAE, CS.L, and CS.D are all non-zero."
    rules.check(
        "svm: not both CS.L and CS.D in long mode",
        !(lme && pg && s.cr4 & CR4_PAE != 0 && s.cs.l == 1 && s.cs.db == 1),
    );
    // ("DR6[63:32] or DR7[63:32] are not zero": the VMM sets no debug registers.)
    rules.0
}

/// The checks KVM itself makes before it accepts `KVM_SET_SREGS` (`kvm_is_valid_sregs` and
/// the CR0/CR4 checks it calls), on every vendor: a state that breaks them never reaches a CPU.
pub fn kvm(state: &GuestState) -> Vec<&'static str> {
    let s = &state.sregs;
    let mut rules = Rules(Vec::new());
    let long = s.efer & EFER_LME != 0 && s.cr0 & CR0_PG != 0;
    // "if (sregs->efer & EFER_LME && (sregs->cr0 & X86_CR0_PG)) { if (!(sregs->cr4 &
    // X86_CR4_PAE) || !(sregs->efer & EFER_LMA)) return false; ..."
    rules.check(
        "kvm: long mode needs CR4.PAE and EFER.LMA",
        !long || (s.cr4 & CR4_PAE != 0 && s.efer & EFER_LMA != 0),
    );
    // "... if (!kvm_vcpu_is_legal_cr3(vcpu, sregs->cr3)) return false;": no CR3 bits beyond
    // the guest's physical-address width.
    rules.check(
        "kvm: CR3 within the physical-address width",
        !long || s.cr3 >> MIN_PHYS_BITS == 0,
    );
    // "... } else { if (sregs->efer & EFER_LMA || sregs->cs.l) return false; }"
    rules.check(
        "kvm: no EFER.LMA or CS.L outside long mode",
        long || (s.efer & EFER_LMA == 0 && s.cs.l == 0),
    );
    // kvm_is_valid_cr0: "if ((cr0 & X86_CR0_NW) && !(cr0 & X86_CR0_CD)) return false;
    // if ((cr0 & X86_CR0_PG) && !(cr0 & X86_CR0_PE)) return false;"
    rules.check(
        "kvm: CR0 consistent (NW needs CD, PG needs PE)",
        !(s.cr0 & CR0_NW != 0 && s.cr0 & CR0_CD == 0 || s.cr0 & CR0_PG != 0 && s.cr0 & CR0_PE == 0),
    );
    // "if (sregs->cr4 & X86_CR4_PCIDE ...) && !long mode ... return false" (CR4.PCIDE needs
    // long mode), and kvm_is_valid_cr4: reserved bits clear.
    rules.check(
        "kvm: CR4 valid",
        s.cr4 & !CR4_DEFINED == 0 && (long || s.cr4 & CR4_PCIDE == 0),
    );
    rules.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::{bare_guest, GuestState, Vendor};
    use crate::layout::{IMAGE_BASE, PAGE_TABLES};
    use crate::linux::boot::Entry;
    use crate::linux::cpu::boot_state;

    fn all(state: &GuestState) -> Vec<&'static str> {
        let mut broken = vmx(state);
        broken.extend(svm(state));
        broken.extend(kvm(state));
        broken
    }

    /// Every state isolab's VMMs set passes its vendor's rules (and KVM's). The Linux guest's
    /// states pass both vendors'; the bare guest's differ in one field, its TSS type, and the AMD
    /// one breaks exactly the VT-x rule that tells them apart.
    #[test]
    fn every_state_the_vmms_set_enters_on_intel_and_amd() {
        let intel = bare_guest(PAGE_TABLES, IMAGE_BASE, Vendor::Intel);
        let amd = bare_guest(PAGE_TABLES, IMAGE_BASE, Vendor::Amd);
        let states = [
            ("bare guest, Intel", intel),
            (
                "Linux, PVH entry",
                boot_state(Entry::Pvh { rip: 0x100_0000 }),
            ),
            (
                "Linux, 64-bit entry",
                boot_state(Entry::Linux64 { rip: 0x10_0200 }),
            ),
        ];
        for (what, state) in states {
            assert_eq!(all(&state), Vec::<&str>::new(), "{what}");
        }
        assert_eq!(
            svm(&amd),
            Vec::<&str>::new(),
            "bare guest, AMD: AMD-V's rules"
        );
        assert_eq!(
            kvm(&amd),
            Vec::<&str>::new(),
            "bare guest, AMD: KVM's rules"
        );
        assert_eq!(
            vmx(&amd),
            ["vmx: TR type busy TSS (11 in IA-32e mode)"],
            "the AMD state would not enter on Intel, for its TSS type alone"
        );
    }

    /// Break one field at a time: each rule fires, on the vendor that has it, and only there.
    #[test]
    fn each_broken_field_is_caught_by_its_rule() {
        type Breaker = fn(&mut GuestState);
        let cases: &[(&str, Breaker, &[&str])] = &[
            (
                // What QEMU's emulated AMD-V needs for port I/O from ring 3, and VT-x refuses.
                "an available (not busy) TSS",
                |g| g.sregs.tr.type_ = 9,
                &["vmx: TR type busy TSS (11 in IA-32e mode)"],
            ),
            (
                "a TSS descriptor in the LDT",
                |g| g.sregs.tr.selector |= 4,
                &["vmx: TR selector TI = 0"],
            ),
            (
                "no TSS at all",
                |g| g.sregs.tr.unusable = 1,
                &["vmx: TR usable"],
            ),
            (
                "a 64-bit code segment that is also 32-bit",
                |g| g.sregs.cs.db = 1,
                &[
                    "vmx: a 64-bit CS has D = 0",
                    "svm: not both CS.L and CS.D in long mode",
                ],
            ),
            (
                "ring-3 code on a ring-0 stack",
                |g| g.sregs.ss.dpl = 0,
                &["vmx: CS.DPL agrees with its type and SS.DPL"],
            ),
            (
                "long mode without PAE",
                |g| g.sregs.cr4 &= !CR4_PAE,
                &[
                    "vmx: IA-32e mode guest requires CR0.PG and CR4.PAE",
                    "svm: long mode paging requires CR4.PAE",
                    "kvm: long mode needs CR4.PAE and EFER.LMA",
                ],
            ),
            (
                "RFLAGS without its always-one bit",
                |g| g.regs.rflags = 0,
                &["vmx: RFLAGS reserved bits"],
            ),
            (
                "a non-canonical FS base",
                |g| g.sregs.fs.base = 0x0000_8000_0000_0000,
                &["vmx: FS base canonical"],
            ),
            (
                "a non-canonical RIP",
                |g| g.regs.rip = 0x0000_8000_0000_0000,
                &["vmx: RIP fits the code segment's mode"],
            ),
            (
                "an LDT of the wrong type",
                |g| g.sregs.ldt.type_ = 0xb,
                &["vmx: LDTR usable LDT"],
            ),
            (
                "write-through caching without cache disable",
                |g| g.sregs.cr0 |= CR0_NW,
                &[
                    "svm: not CR0.NW without CR0.CD",
                    "kvm: CR0 consistent (NW needs CD, PG needs PE)",
                ],
            ),
            (
                "a reserved EFER bit",
                |g| g.sregs.efer |= 1 << 3,
                &["vmx: EFER reserved bits 0", "svm: EFER MBZ bits"],
            ),
            (
                "a reserved CR4 bit",
                |g| g.sregs.cr4 |= 1 << 15,
                &[
                    "vmx: CR4 reserved bits fixed to 0",
                    "svm: CR4 MBZ bits",
                    "kvm: CR4 valid",
                ],
            ),
            (
                "page tables beyond every CPU's physical addresses",
                |g| g.sregs.cr3 = 1 << 52,
                &[
                    "vmx: CR3 within the physical-address width",
                    "svm: CR3 MBZ bits",
                    "kvm: CR3 within the physical-address width",
                ],
            ),
            (
                "a 4 GiB code segment counted in bytes",
                |g| g.sregs.cs.g = 0,
                &["vmx: CS limit and G agree"],
            ),
        ];
        for (what, breaker, expected) in cases {
            let mut state = bare_guest(PAGE_TABLES, IMAGE_BASE, Vendor::Intel);
            breaker(&mut state);
            assert_eq!(all(&state), *expected, "{what}");
        }
    }

    #[test]
    fn kvm_adds_what_the_cpu_requires_and_the_guest_never_sees() {
        let state = bare_guest(PAGE_TABLES, IMAGE_BASE, Vendor::Intel);
        assert_eq!(state.sregs.cr4 & CR4_VMXE, 0, "the VMM does not set VMXE");
        assert_ne!(vmx_view(&state).sregs.cr4 & CR4_VMXE, 0, "KVM does");
        assert_eq!(state.sregs.efer & EFER_SVME, 0);
        assert_ne!(svm_view(&state).sregs.efer & EFER_SVME, 0);
        // The PVH state has no CR0.NE (the protocol does not promise it); VT-x requires it, and
        // gets it from KVM.
        let pvh = boot_state(Entry::Pvh { rip: 0x100_0000 });
        assert_eq!(pvh.sregs.cr0 & CR0_NE, 0);
        assert!(vmx(&pvh).is_empty());
    }
}
