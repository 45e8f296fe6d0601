//! Putting the guest program into guest RAM.
//!
//! An ELF executable describes how it wants to be laid out in memory with **program headers**.
//! Loading a static, position-dependent one needs no dynamic linker and no relocation; it is:
//!
//! ```text
//! for each PT_LOAD header:
//!     copy p_filesz bytes from file offset p_offset to address p_paddr
//!     leave the rest up to p_memsz zero (that is .bss; fresh guest RAM is already zero)
//! start at e_entry
//! ```
//!
//! The loader checks every number it takes from the file before using it — offsets inside the
//! file, segments inside the guest program's window ([`IMAGE_BASE`]..[`IMAGE_END`]) so that a
//! wrong link address cannot overwrite the page tables, and the entry point inside a loaded
//! executable segment.
//!
//! Test fixtures skip ELF: a [`Guest::Raw`] image is a few bytes of machine code copied to
//! [`IMAGE_BASE`] and entered at its first byte.

use crate::layout::{IMAGE_BASE, IMAGE_END};
use vm_memory::{Bytes, GuestAddress, GuestMemoryError, GuestMemoryMmap};

/// A guest program.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Guest {
    /// A static x86-64 ELF executable linked inside the image window (the bare guest).
    Elf(&'static [u8]),
    /// Flat machine code, loaded at [`IMAGE_BASE`] and entered at its first byte (test fixtures).
    Raw(&'static [u8]),
}

/// Sizes, not bytes: a guest is kilobytes of machine code.
impl std::fmt::Debug for Guest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Guest::Elf(b) => write!(f, "Elf({} bytes)", b.len()),
            Guest::Raw(b) => write!(f, "Raw({} bytes)", b.len()),
        }
    }
}

/// Where a loaded program starts and ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Loaded {
    /// The entry point (RIP of the first instruction).
    pub entry: u64,
    /// One past the highest byte the program occupies (including .bss).
    pub end: u64,
}

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Not an ELF file, or not one for this machine.
    #[error("the guest is not a 64-bit little-endian x86-64 ELF executable: {0}")]
    NotElf(&'static str),
    /// A header points outside the file.
    #[error("the guest ELF is truncated or corrupt: {0}")]
    Truncated(&'static str),
    /// A segment would land outside the guest program's window.
    #[error(
        "guest segment {start:#x}..{end:#x} lies outside the image window {IMAGE_BASE:#x}..{IMAGE_END:#x}"
    )]
    OutsideWindow {
        /// First byte.
        start: u64,
        /// One past the last.
        end: u64,
    },
    /// The entry point is not in a loaded, executable segment.
    #[error("the guest entry point {0:#x} is not inside a loaded executable segment")]
    BadEntry(u64),
    /// Copying into guest RAM failed.
    #[error("cannot copy the guest into guest RAM: {0}")]
    Memory(#[from] GuestMemoryError),
}

/// ELF constants (System V ABI, x86-64 supplement).
mod elf {
    pub const MAGIC: &[u8; 4] = b"\x7fELF";
    pub const CLASS_64: u8 = 2;
    pub const DATA_LSB: u8 = 1;
    pub const TYPE_EXEC: u16 = 2;
    pub const MACHINE_X86_64: u16 = 62;
    pub const PHDR_SIZE: usize = 56;
    pub const PT_LOAD: u32 = 1;
    pub const PF_X: u32 = 1;
}

/// Load `guest` into `mem`.
pub fn load(mem: &GuestMemoryMmap, guest: &Guest) -> Result<Loaded, LoadError> {
    match guest {
        Guest::Elf(bytes) => load_elf(mem, bytes),
        Guest::Raw(code) => {
            let end = IMAGE_BASE + code.len() as u64;
            check_window(IMAGE_BASE, end)?;
            mem.write_slice(code, GuestAddress(IMAGE_BASE))?;
            Ok(Loaded {
                entry: IMAGE_BASE,
                end,
            })
        }
    }
}

fn check_window(start: u64, end: u64) -> Result<(), LoadError> {
    if start < IMAGE_BASE || end > IMAGE_END || start > end {
        return Err(LoadError::OutsideWindow { start, end });
    }
    Ok(())
}

/// Little-endian integers at checked offsets of a byte slice.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn bytes<const N: usize>(&self, at: usize) -> Result<[u8; N], LoadError> {
        at.checked_add(N)
            .and_then(|end| self.0.get(at..end))
            .and_then(|b| b.try_into().ok())
            .ok_or(LoadError::Truncated("a header field lies past the end"))
    }
    fn u16(&self, at: usize) -> Result<u16, LoadError> {
        self.bytes(at).map(u16::from_le_bytes)
    }
    fn u32(&self, at: usize) -> Result<u32, LoadError> {
        self.bytes(at).map(u32::from_le_bytes)
    }
    fn u64(&self, at: usize) -> Result<u64, LoadError> {
        self.bytes(at).map(u64::from_le_bytes)
    }
}

fn load_elf(mem: &GuestMemoryMmap, file: &[u8]) -> Result<Loaded, LoadError> {
    let r = Reader(file);
    if &r.bytes::<4>(0)? != elf::MAGIC {
        return Err(LoadError::NotElf("no ELF magic"));
    }
    if r.bytes::<1>(4)?[0] != elf::CLASS_64 || r.bytes::<1>(5)?[0] != elf::DATA_LSB {
        return Err(LoadError::NotElf("not ELF64 little-endian"));
    }
    if r.u16(16)? != elf::TYPE_EXEC {
        return Err(LoadError::NotElf(
            "not a position-dependent executable (ET_EXEC)",
        ));
    }
    if r.u16(18)? != elf::MACHINE_X86_64 {
        return Err(LoadError::NotElf("not for x86-64"));
    }
    let entry = r.u64(24)?;
    let phoff = usize::try_from(r.u64(32)?).map_err(|_| LoadError::Truncated("e_phoff"))?;
    if r.u16(54)? as usize != elf::PHDR_SIZE {
        return Err(LoadError::NotElf("unexpected program header size"));
    }
    let phnum = r.u16(56)? as usize;

    let mut loaded = Loaded { entry, end: 0 };
    let mut entry_ok = false;
    for i in 0..phnum {
        let ph = phoff + i * elf::PHDR_SIZE;
        if r.u32(ph)? != elf::PT_LOAD {
            continue;
        }
        let flags = r.u32(ph + 4)?;
        let offset = r.u64(ph + 8)?;
        let (vaddr, paddr) = (r.u64(ph + 16)?, r.u64(ph + 24)?);
        let (filesz, memsz) = (r.u64(ph + 32)?, r.u64(ph + 40)?);
        // The guest's page tables are an identity map: it must be linked where it is loaded.
        if vaddr != paddr {
            return Err(LoadError::NotElf(
                "a segment's virtual and physical addresses differ",
            ));
        }
        if filesz > memsz {
            return Err(LoadError::Truncated(
                "a segment's file size exceeds its memory size",
            ));
        }
        let end = paddr.checked_add(memsz).ok_or(LoadError::OutsideWindow {
            start: paddr,
            end: u64::MAX,
        })?;
        check_window(paddr, end)?;
        let data = usize::try_from(offset)
            .ok()
            .zip(usize::try_from(filesz).ok())
            .and_then(|(start, len)| file.get(start..start.checked_add(len)?))
            .ok_or(LoadError::Truncated(
                "a segment's bytes lie past the end of the file",
            ))?;
        mem.write_slice(data, GuestAddress(paddr))?;
        loaded.end = loaded.end.max(end);
        entry_ok |= flags & elf::PF_X != 0 && (paddr..end).contains(&entry);
    }
    if !entry_ok {
        return Err(LoadError::BadEntry(entry));
    }
    Ok(loaded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory;
    use isolab_payload::GUEST_ELF;

    fn ram() -> GuestMemoryMmap {
        memory::create(crate::layout::MIN_RAM).unwrap()
    }

    #[test]
    fn the_bare_guest_loads_inside_its_window() {
        let mem = ram();
        let loaded = load(&mem, &Guest::Elf(GUEST_ELF)).unwrap();
        assert_eq!(
            loaded.entry, IMAGE_BASE,
            "_start comes first (crates/guest/link.ld)"
        );
        assert!(loaded.end > IMAGE_BASE && loaded.end <= IMAGE_END);
        // The first instruction of _start, `mov dx, 0x3f0` (the ready hypercall), is in guest RAM
        // at the entry point.
        let mut code = [0u8; 4];
        mem.read_slice(&mut code, GuestAddress(loaded.entry))
            .unwrap();
        assert_eq!(code, [0x66, 0xba, 0xf0, 0x03]);
    }

    #[test]
    fn bad_images_are_refused() {
        let mem = ram();
        let not_elf: &'static [u8] = b"MZ\x90\x00 this is not an ELF file at all, not at all....";
        assert!(matches!(
            load(&mem, &Guest::Elf(not_elf)),
            Err(LoadError::NotElf(_))
        ));
        let truncated: &'static [u8] = &GUEST_ELF[..40];
        assert!(matches!(
            load(&mem, &Guest::Elf(truncated)),
            Err(LoadError::Truncated(_))
        ));
        // The Linux workload is linked at 0x400000: outside the window, refused.
        assert!(matches!(
            load(&mem, &Guest::Elf(isolab_payload::WORKLOAD_ELF)),
            Err(LoadError::OutsideWindow { .. })
        ));
        let huge: &'static [u8] =
            Box::leak(vec![0x90u8; (IMAGE_END - IMAGE_BASE + 1) as usize].into_boxed_slice());
        assert!(matches!(
            load(&mem, &Guest::Raw(huge)),
            Err(LoadError::OutsideWindow { .. })
        ));
    }
}
