//! Booting Linux: where everything goes in guest memory, and what the kernel is told about it.
//!
//! A PC's firmware hands a kernel two things: a **memory map** (BIOS interrupt 0x15, function
//! 0xE820 — hence "the e820 map") and, through the boot loader, a **command line** and an
//! **initramfs**. A microVM has no firmware, so the VMM writes all of it into guest memory itself
//! and points the kernel at it, in one of two formats:
//!
//! * the **Linux boot protocol** (bzImage): a `boot_params` structure, "the zero page", holding
//!   the bzImage's own setup header (copied from the file and completed by the loader) and the
//!   e820 table; the 64-bit entry point gets its address in RSI;
//! * the **PVH boot protocol** (an ELF vmlinux with a PVH note): a small `hvm_start_info`
//!   structure pointing at a separate memory-map table, the command line and a module list whose
//!   first entry is the initramfs; the 32-bit entry point gets its address in EBX.
//!
//! linux-loader does the file formats (`Elf::load`, `BzImage::load`) and writes the structures
//! (`LinuxBootConfigurator`, `PvhBootConfigurator`); this module decides what they say.
//!
//! # The layout
//!
//! ```text
//!  0x0000_0500  GDT                     the boot segments (see crate::linux::cpu)
//!  0x0000_6000  hvm_start_info          PVH: the start of everything
//!  0x0000_6040  hvm_modlist_entry[1]    PVH: the initramfs
//!  0x0000_6100  hvm_memmap_table_entry  PVH: the memory map
//!  0x0000_7000  boot_params             Linux boot protocol: the zero page
//!  0x0000_8ff0  initial stack           (grows down; the kernel switches to its own at once)
//!  0x0000_9000  PML4, PDPT, PD          64-bit entry: identity map of the first GiB
//!  0x0002_0000  command line            NUL-terminated, at most 2 KiB
//!  0x0009_fc00  ── reserved ──          where a PC's extended BIOS data area would be, up to
//!  0x0010_0000  kernel                  1 MiB: VGA memory and BIOS ROMs on a PC
//!    ...
//!  end of RAM − initramfs, page-aligned: the initramfs
//! ```

use crate::layout::linux as layout;
use crate::layout::PAGE;
use isolab_linux_guest::cmdline::MAX_LEN as CMDLINE_MAX;
use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::pvh::PvhBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::{boot_params, setup_header};
use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use linux_loader::loader::elf::PvhBootCapability;
use linux_loader::loader::{load_cmdline, BzImage, Cmdline, Elf, KernelLoader};
use std::fs::File;
use std::io::Read;
use std::path::Path;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// The e820 types the lab uses (the kernel knows a few more: ACPI, NVS, unusable, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum E820Kind {
    /// Usable RAM.
    Ram = 1,
    /// Not for the kernel: here, the legacy PC hole below 1 MiB.
    Reserved = 2,
}

/// One range of the memory map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct E820Entry {
    /// First byte.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// What it is.
    pub kind: E820Kind,
}

impl E820Entry {
    /// The line Linux prints for this entry at boot (`e820__print_table`, arch/x86/kernel/e820.c):
    /// `BIOS-e820: [mem 0x…-0x…] usable`, with the *last* byte, not the end.
    pub fn linux_line(&self) -> String {
        let kind = match self.kind {
            E820Kind::Ram => "usable",
            E820Kind::Reserved => "reserved",
        };
        format!(
            "BIOS-e820: [mem {:#018x}-{:#018x}] {kind}",
            self.addr,
            self.addr + self.size - 1
        )
    }
}

/// The memory map of a guest with `ram_bytes` of RAM at guest-physical 0: conventional memory
/// below the EBDA, the legacy hole up to 1 MiB reserved, and the rest usable. The kernel keeps
/// its hands off the hole because real PCs map VGA memory and ROMs there.
pub fn e820_map(ram_bytes: u64) -> Vec<E820Entry> {
    vec![
        E820Entry {
            addr: 0,
            size: layout::EBDA,
            kind: E820Kind::Ram,
        },
        E820Entry {
            addr: layout::EBDA,
            size: layout::HIMEM - layout::EBDA,
            kind: E820Kind::Reserved,
        },
        E820Entry {
            addr: layout::HIMEM,
            size: ram_bytes - layout::HIMEM,
            kind: E820Kind::Ram,
        },
    ]
}

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// The kernel file could not be opened or read.
    #[error("cannot read the kernel {path}: {source}")]
    Open {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// linux-loader refused the kernel.
    #[error("loading the kernel: {0}")]
    Load(#[from] linux_loader::loader::Error),
    /// An ELF kernel without a PVH entry point cannot be booted by this VMM.
    #[error("this vmlinux has no PVH entry point (build it with CONFIG_PVH=y, or boot a bzImage)")]
    NoPvhEntry,
    /// The command line is too long or malformed.
    #[error("the kernel command line: {0}")]
    Cmdline(String),
    /// The initramfs does not fit between the kernel and the end of RAM.
    #[error("the initramfs ({size} bytes) does not fit in guest RAM above the kernel (end {kernel_end:#x}, limit {limit:#x})")]
    InitrdTooLarge {
        /// Its size.
        size: u64,
        /// Where the kernel ends.
        kernel_end: u64,
        /// The highest address the initramfs may reach.
        limit: u64,
    },
    /// Writing a boot structure into guest memory failed.
    #[error("writing the {what} into guest memory: {detail}")]
    Write {
        /// Which structure.
        what: &'static str,
        /// What went wrong.
        detail: String,
    },
}

/// How the vCPU must start, once the kernel is in memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    /// PVH: 32-bit protected mode, paging off, EBX = the `hvm_start_info` address.
    Pvh {
        /// The entry point from the ELF note.
        rip: u64,
    },
    /// The Linux boot protocol's 64-bit entry: long mode, identity paging, RSI = the zero page.
    Linux64 {
        /// `code32_start`'s 64-bit sibling: the load address + 0x200.
        rip: u64,
    },
}

/// What [`load`] put where.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Loaded {
    /// Where and how to start.
    pub entry: Entry,
    /// The first byte after the kernel.
    pub kernel_end: u64,
    /// The initramfs: address and size.
    pub initrd: (u64, u64),
}

/// Where the initramfs goes: as high as allowed, page-aligned, above the kernel.
pub fn place_initrd(
    ram_bytes: u64,
    size: u64,
    kernel_end: u64,
    max: u64,
) -> Result<u64, BootError> {
    let limit = ram_bytes.min(max.saturating_add(1));
    let too_large = || BootError::InitrdTooLarge {
        size,
        kernel_end,
        limit,
    };
    let addr = limit.checked_sub(size).ok_or_else(too_large)? & !(PAGE - 1);
    if addr < kernel_end {
        return Err(too_large());
    }
    Ok(addr)
}

/// The zero page for a bzImage: its own setup header, completed as a boot loader must
/// (Documentation/arch/x86/boot.rst, "Details of header fields"), and the e820 map.
pub fn linux_boot_params(
    header: setup_header,
    ram_bytes: u64,
    initrd: (u64, u64),
    cmdline_len: usize,
) -> boot_params {
    let mut params = boot_params {
        hdr: header,
        ..Default::default()
    };
    // 0xff: "a boot loader without an assigned id". The kernel checks only that it is set.
    params.hdr.type_of_loader = 0xff;
    params.hdr.boot_flag = 0xaa55;
    params.hdr.header = u32::from_le_bytes(*b"HdrS");
    params.hdr.cmd_line_ptr = layout::CMDLINE as u32;
    params.hdr.cmdline_size = cmdline_len as u32;
    params.hdr.ramdisk_image = initrd.0 as u32;
    params.hdr.ramdisk_size = initrd.1 as u32;
    let map = e820_map(ram_bytes);
    for (slot, e) in params.e820_table.iter_mut().zip(&map) {
        slot.addr = e.addr;
        slot.size = e.size;
        slot.r#type = e.kind as u32;
    }
    params.e820_entries = map.len() as u8;
    params
}

/// The PVH start info, its memory map and its module list (the initramfs).
pub fn pvh_start_info(
    ram_bytes: u64,
    initrd: (u64, u64),
) -> (
    hvm_start_info,
    Vec<hvm_memmap_table_entry>,
    Vec<hvm_modlist_entry>,
) {
    let memmap: Vec<hvm_memmap_table_entry> = e820_map(ram_bytes)
        .iter()
        .map(|e| hvm_memmap_table_entry {
            addr: e.addr,
            size: e.size,
            type_: e.kind as u32,
            reserved: 0,
        })
        .collect();
    let modules = vec![hvm_modlist_entry {
        paddr: initrd.0,
        size: initrd.1,
        cmdline_paddr: 0,
        reserved: 0,
    }];
    let info = hvm_start_info {
        // "xEn3" with the high bit of the last byte set: XEN_HVM_START_MAGIC_VALUE.
        magic: 0x336e_c578,
        // Version 1 has the memory map fields.
        version: 1,
        flags: 0,
        nr_modules: modules.len() as u32,
        modlist_paddr: layout::PVH_MODLIST,
        cmdline_paddr: layout::CMDLINE,
        rsdp_paddr: 0,
        memmap_paddr: layout::PVH_MEMMAP,
        memmap_entries: memmap.len() as u32,
        reserved: 0,
    };
    (info, memmap, modules)
}

/// Load `kernel` (a bzImage, or an ELF vmlinux with a PVH note), the initramfs and the command
/// line into `mem`, and write the boot structures of the kernel's protocol.
pub fn load(
    mem: &GuestMemoryMmap,
    ram_bytes: u64,
    kernel: &Path,
    initrd: &[u8],
    cmdline: &str,
    rsdp: Option<u64>,
) -> Result<Loaded, BootError> {
    let open_err = |source| BootError::Open {
        path: kernel.display().to_string(),
        source,
    };
    let mut file = File::open(kernel).map_err(open_err)?;
    let mut magic = [0u8; 4];
    file.read_exact(&mut magic).map_err(open_err)?;
    let himem = Some(GuestAddress(layout::HIMEM));
    let write_err = |what: &'static str| {
        move |e: linux_loader::configurator::Error| BootError::Write {
            what,
            detail: e.to_string(),
        }
    };

    let cmd =
        Cmdline::try_from(cmdline, CMDLINE_MAX).map_err(|e| BootError::Cmdline(e.to_string()))?;
    load_cmdline(mem, GuestAddress(layout::CMDLINE), &cmd)?;
    let cmdline_len = cmdline.len();

    let put_initrd = |kernel_end: u64, max: u64| -> Result<(u64, u64), BootError> {
        let size = initrd.len() as u64;
        let addr = place_initrd(ram_bytes, size, kernel_end, max)?;
        mem.write_slice(initrd, GuestAddress(addr))
            .map_err(|e| BootError::Write {
                what: "initramfs",
                detail: e.to_string(),
            })?;
        Ok((addr, size))
    };

    if &magic == b"\x7fELF" {
        let result = Elf::load(mem, None, &mut file, himem)?;
        let PvhBootCapability::PvhEntryPresent(entry) = result.pvh_boot_cap else {
            return Err(BootError::NoPvhEntry);
        };
        // PVH starts in 32-bit mode: everything it is handed must lie below 4 GiB.
        let initrd = put_initrd(result.kernel_end, u32::MAX as u64)?;
        let (mut info, memmap, modules) = pvh_start_info(ram_bytes, initrd);
        // ACPI tables, when the VMM wrote any: the kernel need not scan for the RSDP.
        info.rsdp_paddr = rsdp.unwrap_or(0);
        let mut params = BootParams::new(&info, GuestAddress(layout::PVH_START_INFO));
        params.set_sections(&memmap, GuestAddress(layout::PVH_MEMMAP));
        params.set_modules(&modules, GuestAddress(layout::PVH_MODLIST));
        PvhBootConfigurator::write_bootparams::<GuestMemoryMmap>(&params, mem)
            .map_err(write_err("PVH start info"))?;
        Ok(Loaded {
            entry: Entry::Pvh { rip: entry.0 },
            kernel_end: result.kernel_end,
            initrd,
        })
    } else {
        let result = BzImage::load(mem, None, &mut file, himem)?;
        let header = result.setup_header.ok_or(BootError::Write {
            what: "zero page",
            detail: "the bzImage has no setup header".into(),
        })?;
        let initrd = put_initrd(result.kernel_end, header.initrd_addr_max as u64)?;
        let mut params = linux_boot_params(header, ram_bytes, initrd, cmdline_len);
        params.acpi_rsdp_addr = rsdp.unwrap_or(0);
        LinuxBootConfigurator::write_bootparams::<GuestMemoryMmap>(
            &BootParams::new(&params, GuestAddress(layout::ZERO_PAGE)),
            mem,
        )
        .map_err(write_err("zero page"))?;
        Ok(Loaded {
            // The 64-bit entry point is 0x200 bytes into the protected-mode code.
            entry: Entry::Linux64 {
                rip: result.kernel_load.0 + 0x200,
            },
            kernel_end: result.kernel_end,
            initrd,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_e820_map_covers_ram_and_reserves_the_legacy_hole() {
        let map = e820_map(256 << 20);
        assert_eq!(map.len(), 3);
        // Contiguous, no overlap, ending at the end of RAM.
        for w in map.windows(2) {
            assert_eq!(w[0].addr + w[0].size, w[1].addr);
        }
        assert_eq!(map[2].addr + map[2].size, 256 << 20);
        let usable: u64 = map
            .iter()
            .filter(|e| e.kind == E820Kind::Ram)
            .map(|e| e.size)
            .sum();
        assert_eq!(usable, (256 << 20) - (layout::HIMEM - layout::EBDA));
        // Exactly what Linux prints for it.
        assert_eq!(
            map[0].linux_line(),
            "BIOS-e820: [mem 0x0000000000000000-0x000000000009fbff] usable"
        );
        assert_eq!(
            map[1].linux_line(),
            "BIOS-e820: [mem 0x000000000009fc00-0x00000000000fffff] reserved"
        );
        assert_eq!(
            map[2].linux_line(),
            "BIOS-e820: [mem 0x0000000000100000-0x000000000fffffff] usable"
        );
    }

    #[test]
    fn the_boot_structures_stay_out_of_each_others_way() {
        use layout::*;
        let pvh = [
            (PVH_START_INFO, std::mem::size_of::<hvm_start_info>() as u64),
            (PVH_MODLIST, std::mem::size_of::<hvm_modlist_entry>() as u64),
            (
                PVH_MEMMAP,
                3 * std::mem::size_of::<hvm_memmap_table_entry>() as u64,
            ),
            (ZERO_PAGE, std::mem::size_of::<boot_params>() as u64),
            (PML4, 3 * PAGE),
            (CMDLINE, CMDLINE_MAX as u64),
        ];
        for w in pvh.windows(2) {
            assert!(
                w[0].0 + w[0].1 <= w[1].0,
                "{:#x} overlaps {:#x}",
                w[0].0,
                w[1].0
            );
        }
        assert_eq!(
            std::mem::size_of::<boot_params>(),
            4096,
            "the zero page is a page"
        );
        const { assert!(CMDLINE + CMDLINE_MAX as u64 <= EBDA) };
        const { assert!(STACK_TOP < PML4 && STACK_TOP > ZERO_PAGE + PAGE) };
    }

    #[test]
    fn the_zero_page_says_where_everything_is() {
        let header = setup_header {
            version: 0x020f,
            initrd_addr_max: 0x7fff_ffff,
            ..Default::default()
        };
        let p = linux_boot_params(header, 256 << 20, (0xf00_0000, 0x12345), 99);
        // Copy the packed fields out before comparing.
        let (cmd, size, image, rd) = (
            p.hdr.cmd_line_ptr,
            p.hdr.cmdline_size,
            p.hdr.ramdisk_image,
            p.hdr.ramdisk_size,
        );
        assert_eq!((cmd, size), (layout::CMDLINE as u32, 99));
        assert_eq!((image, rd), (0xf00_0000, 0x12345));
        let (flag, magic, loader, version) = (
            p.hdr.boot_flag,
            p.hdr.header,
            p.hdr.type_of_loader,
            p.hdr.version,
        );
        assert_eq!((flag, magic, loader), (0xaa55, 0x5372_6448, 0xff));
        assert_eq!(version, 0x020f, "the kernel's own header is kept");
        assert_eq!(p.e820_entries, 3);
        let map = e820_map(256 << 20);
        for (slot, e) in p.e820_table.iter().zip(&map) {
            let (addr, sz, ty) = (slot.addr, slot.size, slot.r#type);
            assert_eq!((addr, sz, ty), (e.addr, e.size, e.kind as u32));
        }
    }

    #[test]
    fn pvh_start_info_points_at_the_map_the_modules_and_the_command_line() {
        let (info, memmap, modules) = pvh_start_info(128 << 20, (0x0700_0000, 4096));
        assert_eq!(info.magic, 0x336e_c578);
        assert_eq!(info.version, 1);
        assert_eq!(info.cmdline_paddr, layout::CMDLINE);
        assert_eq!(
            (info.memmap_paddr, info.memmap_entries as usize),
            (layout::PVH_MEMMAP, memmap.len())
        );
        assert_eq!(
            (info.modlist_paddr, info.nr_modules),
            (layout::PVH_MODLIST, 1)
        );
        assert_eq!((modules[0].paddr, modules[0].size), (0x0700_0000, 4096));
        assert_eq!(
            memmap.last().unwrap().addr + memmap.last().unwrap().size,
            128 << 20
        );
    }

    #[test]
    fn the_initramfs_goes_high_page_aligned_and_above_the_kernel() {
        let ram = 256 << 20;
        let addr = place_initrd(ram, 5000, 0x200_0000, u32::MAX as u64).unwrap();
        assert_eq!(addr % PAGE, 0);
        assert!(addr + 5000 <= ram && addr + 5000 + PAGE > ram);
        // A kernel's initrd_addr_max below the end of RAM wins.
        let low = place_initrd(ram, 5000, 0x200_0000, 0x7ff_ffff).unwrap();
        assert!(low + 5000 <= 0x800_0000);
        assert!(matches!(
            place_initrd(ram, ram, 0x200_0000, u32::MAX as u64),
            Err(BootError::InitrdTooLarge { .. })
        ));
    }

    #[test]
    fn the_command_line_lands_nul_terminated_where_the_kernel_looks() {
        let mem: GuestMemoryMmap =
            GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let line = "console=ttyS0 quiet -- kernel=cpu iters=5";
        let cmd = Cmdline::try_from(line, CMDLINE_MAX).unwrap();
        load_cmdline(&mem, GuestAddress(layout::CMDLINE), &cmd).unwrap();
        let mut buf = vec![0u8; line.len() + 1];
        mem.read_slice(&mut buf, GuestAddress(layout::CMDLINE))
            .unwrap();
        assert_eq!(&buf[..line.len()], line.as_bytes());
        assert_eq!(buf[line.len()], 0);
        let too_long = "x".repeat(CMDLINE_MAX);
        assert!(Cmdline::try_from(&too_long, CMDLINE_MAX).is_err());
    }
}
