//! Every guest-physical address of isolab's two VMMs, in one place (as Firecracker's
//! `arch/x86_64/layout.rs`): what each page of a guest's memory holds is decided here, and every
//! other module — the page tables ([`crate::memory`]), the descriptor tables ([`crate::cpu`]),
//! the loader, the Linux boot structures ([`crate::linux::boot`]) — takes its addresses from
//! here, so no two of them can disagree and none needs another's constants.
//!
//! # The bare guest (guest-physical = guest-virtual)
//!
//! ```text
//!  0x0000_0000  null page          not mapped: a null pointer faults, as in a process
//!  0x0000_1000  boot page          guest read-only: what to run (BootInfo)
//!  0x0000_2000  mailbox            guest read-write: hypercall arguments and results
//!  0x0000_3000  GDT                supervisor only
//!  0x0000_4000  TSS                supervisor only
//!  0x0001_0000  page tables        supervisor only: PML4, PDPT, PT, PDs
//!  0x0002_0000  stack guard page   not mapped: a stack overflow faults instead of corrupting
//!  0x0002_1000  stack              guest read-write, grows down from 0x8_0000
//!  0x0010_0000  guest program      guest read-write (crates/guest/link.ld), at most 1 MiB
//!  0x0020_0000  arena              guest read-write, 2 MiB pages, to the end of RAM
//! ```
//!
//! Pages no row names are not mapped at all. The structures the CPU reads on the VMM's behalf
//! (GDT, TSS, page tables) are mapped supervisor-only, so the ring-3 guest cannot rewrite its own
//! page tables by accident, yet a ring-0 handler added later could reach them.
//!
//! # A Linux guest
//!
//! [`linux`]: the boot GDT, the PVH and Linux-boot-protocol structures, the command line and the
//! legacy PC hole below 1 MiB, where a Linux kernel expects each of them.

use isolab_kernels::hypercall;

/// A small page.
pub const PAGE: u64 = 4096;
/// One mebibyte.
pub const MIB: u64 = 1 << 20;
/// A large page, mapped by one PD entry.
pub const LARGE_PAGE: u64 = 2 * MIB;
/// One gibibyte: what one page directory maps.
pub const GIB: u64 = 1 << 30;

/// The boot page (see [`hypercall::BootInfo`]).
pub const BOOT_ADDR: u64 = hypercall::BOOT_ADDR;
/// The hypercall mailbox.
pub const MAILBOX_ADDR: u64 = hypercall::MAILBOX_ADDR;
/// The global descriptor table ([`crate::cpu::gdt`]).
pub const GDT_ADDR: u64 = 0x3000;
/// The task-state segment ([`crate::cpu`] explains why a ring-3 guest needs one).
pub const TSS_ADDR: u64 = 0x4000;
/// The interrupt descriptor table ([`crate::idt`]).
pub const IDT_ADDR: u64 = 0x5000;
/// The VMM's exception handlers ([`crate::idt::handlers`]).
pub const HANDLERS_ADDR: u64 = 0x6000;
/// The ring-0 stack the CPU switches to for an exception (one page).
pub const RING0_STACK: u64 = 0x7000;
/// Its top: the TSS's RSP0.
pub const RING0_STACK_TOP: u64 = RING0_STACK + PAGE;
/// The first page-table page (the PML4); the others follow it.
pub const PAGE_TABLES: u64 = 0x1_0000;
/// The end of the room reserved for page tables.
pub const PAGE_TABLES_END: u64 = 0x2_0000;
/// The unmapped page below the stack.
pub const STACK_GUARD: u64 = 0x2_0000;
/// The lowest stack page.
pub const STACK_BOTTOM: u64 = STACK_GUARD + PAGE;
/// The initial RSP: the stack grows down from here.
pub const STACK_TOP: u64 = 0x8_0000;
/// Where the guest program is loaded.
pub const IMAGE_BASE: u64 = hypercall::IMAGE_BASE;
/// The end of the guest program's window.
pub const IMAGE_END: u64 = hypercall::IMAGE_END;
/// The kernels' arena: from here to the end of RAM.
pub const ARENA_BASE: u64 = IMAGE_END;

/// The page-table pages, in order inside [`PAGE_TABLES`]..[`PAGE_TABLES_END`].
pub const PML4: u64 = PAGE_TABLES;
pub const PDPT: u64 = PAGE_TABLES + PAGE;
/// The page table of the first 2 MiB (4 KiB pages).
pub const PT_LOW: u64 = PAGE_TABLES + 2 * PAGE;
/// The first page directory; page directory `i` maps guest RAM `i` GiB .. `i + 1` GiB.
pub const PD_FIRST: u64 = PAGE_TABLES + 3 * PAGE;
/// How many page directories fit in the reserved room.
pub const MAX_PDS: u64 = (PAGE_TABLES_END - PD_FIRST) / PAGE;

/// The least guest RAM the layout needs: everything below the arena.
pub const MIN_RAM: u64 = ARENA_BASE;
/// The most guest RAM the reserved page tables can map.
pub const MAX_RAM: u64 = MAX_PDS * GIB;

/// Guest-physical addresses of the boot structures (see the module documentation).
pub mod linux {
    /// The boot GDT.
    pub const GDT: u64 = 0x500;
    /// PVH: `hvm_start_info`.
    pub const PVH_START_INFO: u64 = 0x6000;
    /// PVH: the module list.
    pub const PVH_MODLIST: u64 = 0x6040;
    /// PVH: the memory map.
    pub const PVH_MEMMAP: u64 = 0x6100;
    /// Linux boot protocol: `boot_params`.
    pub const ZERO_PAGE: u64 = 0x7000;
    /// The initial stack pointer.
    pub const STACK_TOP: u64 = 0x8ff0;
    /// The page tables of the 64-bit entry: PML4, PDPT, PD.
    pub const PML4: u64 = 0x9000;
    /// The page-directory-pointer table.
    pub const PDPT: u64 = 0xa000;
    /// The page directory: 512 entries of 2 MiB = the first GiB.
    pub const PD: u64 = 0xb000;
    /// The command line.
    pub const CMDLINE: u64 = 0x2_0000;
    /// The end of conventional memory: a PC's extended BIOS data area starts here.
    pub const EBDA: u64 = 0x9_fc00;
    /// 1 MiB, where the kernel is loaded and "high memory" starts.
    pub const HIMEM: u64 = 0x10_0000;
}
