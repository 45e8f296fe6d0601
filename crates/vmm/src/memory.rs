//! Guest memory: where everything lives, the RAM itself, and the page tables over it.
//!
//! # Guest RAM is an ordinary mapping in the VMM
//!
//! Guest "physical" memory is anonymous memory of the VMM process, `mmap`ed with
//! `MAP_NORESERVE` (vm-memory's [`GuestMemoryMmap`]) and handed to KVM with
//! `KVM_SET_USER_MEMORY_REGION` as memory slot 0 at guest-physical address 0. A page costs the
//! host nothing until the guest (or the VMM) first touches it; then the host kernel allocates it,
//! exactly as for a process. That is why "guest RAM configured" and "guest RAM touched" differ,
//! and why [`resident_bytes`] asks the kernel (`mincore`) which pages are backed.
//!
//! # The layout
//!
//! Where everything lives in guest memory is [`crate::layout`]'s: every guest address of both
//! VMMs is defined there, once.
//!
//! # Page tables
//!
//! In long mode every address the guest uses is translated by a 4-level page walk:
//! `CR3 → PML4 → PDPT → PD → (PT) → page`. The VMM builds an **identity map** (virtual =
//! physical), so a guest pointer is also the guest-physical address the VMM sees in a hypercall.
//! The first 2 MiB are mapped with 4 KiB pages (one page table) so that each low page can have its
//! own permissions; everything above with 2 MiB pages (the PS bit in a PD entry), which need no
//! page tables and give the TLB a long reach. The host backs guest RAM with 4 KiB pages; under
//! nested paging a translation is cached at the smaller of the two page sizes.
//!
//! Every entry on the path to a page the guest uses has the **U/S bit** set: the CPU allows a
//! ring-3 access only if every level says "user".

use crate::cpu;
use crate::layout::*;
use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VmFd;
use vm_memory::{
    Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryError, GuestMemoryMmap, GuestMemoryRegion,
};

/// Page-table entry bits (Intel SDM vol. 3, §4.5).
pub mod pte {
    /// The entry maps something; without it every other bit is ignored and an access faults.
    pub const PRESENT: u64 = 1 << 0;
    /// Writes are allowed (ring 3 always honours it; ring 0 too, because CR0.WP is set).
    pub const WRITABLE: u64 = 1 << 1;
    /// Ring 3 may use it. Needed at every level of the walk.
    pub const USER: u64 = 1 << 2;
    /// In a PD entry: this entry maps a 2 MiB page itself (no page table below it).
    pub const HUGE: u64 = 1 << 7;
    /// The physical-address bits of an entry (bits 12..51).
    pub const ADDRESS: u64 = 0x000f_ffff_ffff_f000;
}

/// How the guest may use a page of the first 2 MiB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Not mapped: any access faults.
    None,
    /// Ring 3 may read.
    UserRead,
    /// Ring 3 may read and write.
    UserWrite,
    /// Only ring 0 may touch it.
    Supervisor,
}

impl Access {
    /// The leaf-entry bits of this access.
    const fn bits(self) -> u64 {
        match self {
            Access::None => 0,
            Access::UserRead => pte::PRESENT | pte::USER,
            Access::UserWrite => pte::PRESENT | pte::USER | pte::WRITABLE,
            Access::Supervisor => pte::PRESENT | pte::WRITABLE,
        }
    }
}

/// One named range of the first 2 MiB.
#[derive(Clone, Copy, Debug)]
pub struct Region {
    /// What lives there.
    pub name: &'static str,
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
    /// How the guest may use it.
    pub access: Access,
}

/// The map of the first 2 MiB, as the module documentation draws it. Pages that no region
/// covers are not mapped.
pub const LOW_MEMORY: [Region; 11] = [
    Region {
        name: "boot page",
        start: BOOT_ADDR,
        end: BOOT_ADDR + PAGE,
        access: Access::UserRead,
    },
    Region {
        name: "mailbox",
        start: MAILBOX_ADDR,
        end: MAILBOX_ADDR + PAGE,
        access: Access::UserWrite,
    },
    Region {
        name: "GDT",
        start: GDT_ADDR,
        end: GDT_ADDR + PAGE,
        access: Access::Supervisor,
    },
    Region {
        name: "TSS",
        start: TSS_ADDR,
        end: TSS_ADDR + PAGE,
        access: Access::Supervisor,
    },
    Region {
        name: "IDT",
        start: IDT_ADDR,
        end: IDT_ADDR + PAGE,
        access: Access::Supervisor,
    },
    Region {
        name: "exception handlers",
        start: HANDLERS_ADDR,
        end: HANDLERS_ADDR + PAGE,
        access: Access::Supervisor,
    },
    Region {
        name: "ring-0 stack",
        start: RING0_STACK,
        end: RING0_STACK_TOP,
        access: Access::Supervisor,
    },
    Region {
        name: "page tables",
        start: PAGE_TABLES,
        end: PAGE_TABLES_END,
        access: Access::Supervisor,
    },
    Region {
        name: "stack guard",
        start: STACK_GUARD,
        end: STACK_BOTTOM,
        access: Access::None,
    },
    Region {
        name: "stack",
        start: STACK_BOTTOM,
        end: STACK_TOP,
        access: Access::UserWrite,
    },
    Region {
        name: "guest program",
        start: IMAGE_BASE,
        end: IMAGE_END,
        access: Access::UserWrite,
    },
];

/// The access of the low page at `addr`.
fn low_access(addr: u64) -> Access {
    LOW_MEMORY
        .iter()
        .find(|r| (r.start..r.end).contains(&addr))
        .map_or(Access::None, |r| r.access)
}

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// The size cannot be mapped with 2 MiB pages.
    #[error("guest RAM of {0} bytes is not a multiple of 2 MiB")]
    Unaligned(u64),
    /// The size is below what the layout needs.
    #[error("guest RAM of {got} bytes is less than the {need} bytes needed")]
    TooSmall {
        /// Bytes asked for.
        got: u64,
        /// Bytes needed.
        need: u64,
    },
    /// The size is more than the reserved page tables can map.
    #[error("guest RAM of {got} bytes is more than the {max} bytes the page tables can map")]
    TooLarge {
        /// Bytes asked for.
        got: u64,
        /// The limit.
        max: u64,
    },
    /// The host would not map the RAM.
    #[error("cannot map guest RAM: {0}")]
    Mmap(#[from] vm_memory::mmap::FromRangesError),
    /// KVM refused the memory slot.
    #[error("KVM_SET_USER_MEMORY_REGION: {0}")]
    Register(kvm_ioctls::Error),
    /// Writing a VMM structure into guest RAM failed.
    #[error("cannot write the {what} into guest RAM: {source}")]
    Write {
        /// Which structure.
        what: &'static str,
        /// Why.
        source: GuestMemoryError,
    },
    /// `mincore` failed.
    #[error("mincore: {0}")]
    Resident(std::io::Error),
}

/// The guest RAM a kernel with an arena of `arena_bytes` needs: the fixed low 2 MiB plus the
/// arena, rounded up to whole 2 MiB pages.
pub fn ram_for_arena(arena_bytes: u64) -> u64 {
    ARENA_BASE + arena_bytes.div_ceil(LARGE_PAGE) * LARGE_PAGE
}

/// Check that `bytes` of guest RAM fit the layout.
pub fn check_size(bytes: u64) -> Result<(), MemoryError> {
    if bytes % LARGE_PAGE != 0 {
        return Err(MemoryError::Unaligned(bytes));
    }
    if bytes < MIN_RAM {
        return Err(MemoryError::TooSmall {
            got: bytes,
            need: MIN_RAM,
        });
    }
    if bytes > MAX_RAM {
        return Err(MemoryError::TooLarge {
            got: bytes,
            max: MAX_RAM,
        });
    }
    Ok(())
}

/// Map `bytes` of guest RAM in this process (nothing is allocated until touched).
///
/// The mapping is marked `MADV_MERGEABLE`, as QEMU marks its guests' RAM by default: KSM, the
/// kernel's same-page merging, may then find pages identical to another guest's (the same
/// libraries read from the same image, zero pages) and keep one copy of them. It does so only
/// while the host runs KSM (`/sys/kernel/mm/ksm/run`; `lab run images --ksm` turns it on for a
/// run): otherwise the mark costs nothing.
pub fn create(bytes: u64) -> Result<GuestMemoryMmap, MemoryError> {
    check_size(bytes)?;
    let len = usize::try_from(bytes).map_err(|_| MemoryError::TooLarge {
        got: bytes,
        max: MAX_RAM,
    })?;
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), len)])?;
    for region in mem.iter() {
        if let Ok(host) = mem.get_host_address(region.start_addr()) {
            // SAFETY: advice on a mapping this process owns, of exactly its length; a kernel
            // without KSM refuses it (EINVAL), which changes nothing.
            unsafe { libc::madvise(host.cast(), region.len() as usize, libc::MADV_MERGEABLE) };
        }
    }
    Ok(mem)
}

/// Give guest RAM to the VM as memory slot 0 at guest-physical address 0.
///
/// From here on KVM translates guest-physical addresses in the slot to `mem`'s host addresses:
/// when the guest touches a page, KVM faults it in through the VMM's own page tables. The VM
/// must therefore be destroyed before `mem` is unmapped ([`crate::machine::Machine`] declares
/// its fields in that order).
pub fn register(vm: &VmFd, mem: &GuestMemoryMmap) -> Result<(), MemoryError> {
    for (slot, region) in mem.iter().enumerate() {
        let host = mem
            .get_host_address(region.start_addr())
            .map_err(|source| MemoryError::Write {
                what: "memory slot",
                source,
            })?;
        let slot_def = kvm_userspace_memory_region {
            slot: slot as u32,
            flags: 0,
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: host as u64,
        };
        // SAFETY: the host range is a live mapping of exactly `memory_size` bytes owned by
        // `mem`, which outlives the VM (see above); the slot does not overlap another.
        unsafe { vm.set_user_memory_region(slot_def) }.map_err(MemoryError::Register)?;
    }
    Ok(())
}

/// The entry of a page-table page that points at the next-level table at `table`: present,
/// writable and user at every level, so that the leaf alone decides.
const fn table_entry(table: u64) -> u64 {
    table | pte::PRESENT | pte::WRITABLE | pte::USER
}

/// Write the identity-mapping page tables for `ram_bytes` of RAM and return CR3's value.
pub fn write_page_tables(mem: &GuestMemoryMmap, ram_bytes: u64) -> Result<u64, MemoryError> {
    check_size(ram_bytes)?;
    let write = |value: u64, at: u64| {
        mem.write_obj(value, GuestAddress(at))
            .map_err(|source| MemoryError::Write {
                what: "page tables",
                source,
            })
    };
    // One PML4 entry covers 512 GiB, more than MAX_RAM: entry 0 → the PDPT.
    write(table_entry(PDPT), PML4)?;
    // One PDPT entry per GiB → that GiB's page directory.
    let directories = ram_bytes.div_ceil(GIB);
    for i in 0..directories {
        write(table_entry(PD_FIRST + i * PAGE), PDPT + i * 8)?;
    }
    // The first 2 MiB: PD 0's entry 0 → the low page table, one entry per 4 KiB page.
    write(table_entry(PT_LOW), PD_FIRST)?;
    for page in 0..512 {
        let addr = page * PAGE;
        let bits = low_access(addr).bits();
        if bits != 0 {
            write(addr | bits, PT_LOW + page * 8)?;
        }
    }
    // Everything above: 2 MiB pages straight from the page directories.
    let large = pte::PRESENT | pte::WRITABLE | pte::USER | pte::HUGE;
    let mut addr = LARGE_PAGE;
    while addr < ram_bytes {
        write(addr | large, PD_FIRST + (addr / LARGE_PAGE) * 8)?;
        addr += LARGE_PAGE;
    }
    Ok(PML4)
}

/// Write the GDT (for `vendor`) and the TSS the segment registers refer to (see [`cpu`]), the
/// IDT and the exception handlers it points at (see [`crate::idt`]).
pub fn write_descriptor_tables(
    mem: &GuestMemoryMmap,
    vendor: cpu::Vendor,
) -> Result<(), MemoryError> {
    let gdt: Vec<u8> = cpu::gdt(vendor)
        .iter()
        .flat_map(|e| e.to_le_bytes())
        .collect();
    let idt = crate::idt::idt(HANDLERS_ADDR, cpu::KERNEL_CODE.selector());
    for (what, bytes, at) in [
        ("GDT", &gdt[..], GDT_ADDR),
        ("TSS", &cpu::tss()[..], TSS_ADDR),
        ("IDT", &idt[..], IDT_ADDR),
        (
            "exception handlers",
            &crate::idt::handlers()[..],
            HANDLERS_ADDR,
        ),
    ] {
        mem.write_slice(bytes, GuestAddress(at))
            .map_err(|source| MemoryError::Write { what, source })?;
    }
    Ok(())
}

/// Bytes of guest RAM that are backed by host memory now: the pages the guest or the VMM have
/// touched. Asks the kernel with `mincore(2)`, one byte per page.
pub fn resident_bytes(mem: &GuestMemoryMmap) -> Result<u64, MemoryError> {
    let mut total = 0;
    for region in mem.iter() {
        let host = mem
            .get_host_address(region.start_addr())
            .map_err(|source| MemoryError::Write {
                what: "residency query",
                source,
            })?;
        let len = region.len() as usize;
        let mut pages = vec![0u8; len.div_ceil(PAGE as usize)];
        // SAFETY: `host` is the page-aligned start of a live mapping of `len` bytes, and `pages`
        // has one byte for each of its pages, as mincore requires.
        let rc = unsafe { libc::mincore(host.cast(), len, pages.as_mut_ptr()) };
        if rc != 0 {
            return Err(MemoryError::Resident(std::io::Error::last_os_error()));
        }
        // Bit 0 of each byte: the page is resident.
        total += pages.iter().filter(|&&p| p & 1 == 1).count() as u64 * PAGE;
    }
    Ok(total)
}

/// Walk the page tables in `mem` the way the MMU does, from `cr3`: the physical address
/// `vaddr` maps to and whether ring 3 may read and write it, or `None` if it is not mapped.
pub fn translate(mem: &GuestMemoryMmap, cr3: u64, vaddr: u64) -> Option<Translation> {
    let read = |at: u64| mem.read_obj::<u64>(GuestAddress(at)).ok();
    let (mut user, mut writable) = (true, true);
    let mut table = cr3 & pte::ADDRESS;
    // Levels: PML4 (bits 39..47), PDPT (30..38), PD (21..29), PT (12..20).
    for (level, shift) in [39u32, 30, 21, 12].into_iter().enumerate() {
        let entry = read(table + ((vaddr >> shift) & 511) * 8)?;
        if entry & pte::PRESENT == 0 {
            return None;
        }
        user &= entry & pte::USER != 0;
        writable &= entry & pte::WRITABLE != 0;
        let leaf = shift == 12 || (level == 2 && entry & pte::HUGE != 0);
        if leaf {
            let offset = vaddr & ((1 << shift) - 1);
            return Some(Translation {
                paddr: (entry & pte::ADDRESS & !((1 << shift) - 1)) | offset,
                user,
                writable,
                page_size: 1 << shift,
            });
        }
        table = entry & pte::ADDRESS;
    }
    None
}

/// What [`translate`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    /// The guest-physical address.
    pub paddr: u64,
    /// Ring 3 may access it.
    pub user: bool,
    /// It may be written.
    pub writable: bool,
    /// The size of the page it lies in.
    pub page_size: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ram(bytes: u64) -> (GuestMemoryMmap, u64) {
        let mem = create(bytes).unwrap();
        let cr3 = write_page_tables(&mem, bytes).unwrap();
        (mem, cr3)
    }

    #[test]
    fn sizes_are_checked() {
        assert!(matches!(
            check_size(MIN_RAM + 1),
            Err(MemoryError::Unaligned(_))
        ));
        assert!(matches!(
            check_size(MIN_RAM - LARGE_PAGE),
            Err(MemoryError::TooSmall { .. })
        ));
        assert!(matches!(
            check_size(MAX_RAM + LARGE_PAGE),
            Err(MemoryError::TooLarge { .. })
        ));
        check_size(MIN_RAM).unwrap();
        assert_eq!(ram_for_arena(0), MIN_RAM);
        assert_eq!(ram_for_arena(1), MIN_RAM + LARGE_PAGE);
        assert_eq!(ram_for_arena(64 * MIB), MIN_RAM + 64 * MIB);
    }

    #[test]
    fn the_map_is_an_identity_map_with_the_documented_permissions() {
        let (mem, cr3) = ram(MIN_RAM + 2 * GIB + 4 * MIB);
        let t = |a| translate(&mem, cr3, a);
        // Null and the stack guard fault; so do the holes and everything past the end of RAM.
        assert_eq!(t(0), None);
        assert_eq!(t(0x8), None);
        assert_eq!(t(STACK_GUARD + 100), None);
        assert_eq!(t(0x9000), None);
        assert_eq!(t(STACK_TOP), None);
        assert_eq!(t(MIN_RAM + 2 * GIB + 4 * MIB), None);
        // The boot page is readable, not writable; the mailbox both.
        let boot = t(BOOT_ADDR + 8).unwrap();
        assert_eq!(
            (boot.paddr, boot.user, boot.writable),
            (BOOT_ADDR + 8, true, false)
        );
        let mailbox = t(MAILBOX_ADDR).unwrap();
        assert!(mailbox.user && mailbox.writable);
        // The VMM's structures are invisible to ring 3.
        for addr in [
            GDT_ADDR,
            TSS_ADDR,
            IDT_ADDR,
            HANDLERS_ADDR,
            RING0_STACK_TOP - 8,
            PAGE_TABLES,
            PAGE_TABLES_END - 1,
        ] {
            assert!(!t(addr).unwrap().user, "{addr:#x}");
        }
        // Stack top page, program, arena: user read-write, identity-mapped.
        for addr in [
            STACK_TOP - 8,
            IMAGE_BASE,
            ARENA_BASE,
            GIB + 12345,
            2 * GIB + 5 * MIB,
        ] {
            let x = t(addr).unwrap();
            assert_eq!(
                (x.paddr, x.user, x.writable),
                (addr, true, true),
                "{addr:#x}"
            );
        }
        assert_eq!(t(IMAGE_BASE).unwrap().page_size, PAGE);
        assert_eq!(t(ARENA_BASE).unwrap().page_size, LARGE_PAGE);
    }

    #[test]
    fn untouched_ram_costs_nothing_and_touched_ram_is_seen() {
        let mem = create(MIN_RAM + 64 * MIB).unwrap();
        assert_eq!(
            resident_bytes(&mem).unwrap(),
            0,
            "MAP_NORESERVE, nothing touched"
        );
        mem.write_obj(1u64, GuestAddress(ARENA_BASE)).unwrap();
        mem.write_obj(1u64, GuestAddress(ARENA_BASE + 10 * MIB))
            .unwrap();
        assert_eq!(resident_bytes(&mem).unwrap(), 2 * PAGE);
    }
}
