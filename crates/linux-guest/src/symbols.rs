//! Where in the kernel a guest stopped: an address turned into `function+offset`.
//!
//! A stopped guest leaves an instruction pointer such as `0xffffffff81002f9f`. To a reader that
//! is noise; `native_safe_halt+0xf` says the guest was idle, waiting for an interrupt. The names
//! come from the kernel's symbol table, which a distribution kernel does not carry in its image:
//!
//! * **`System.map`** — the linker's list of every symbol and its address, written beside the
//!   image by `make install` (and by `lab kernel build`). Debian installs only a placeholder
//!   ("The real System.map is in the linux-image-…-dbg package"); this module recognises it.
//! * **`/proc/kallsyms`** — the same list as the *running* kernel sees it. When the host runs the
//!   very kernel build the guest boots (the emulated student machine of the lab's CI does), it
//!   names the guest's addresses too — once the host's **KASLR** offset is taken off: the host's
//!   kernel was moved to a random address at boot, while a guest booted through PVH runs at the
//!   address it was linked for (PVH skips the decompressor, which is what randomises). The
//!   offset is the host's `_text` minus the link address of `_text`, the first loadable segment
//!   of the vmlinux ELF.
//!
//! Nothing is read until a name is asked for: a guest that stops where it should costs nothing.

use crate::guest_kernel::KernelImage;
use std::fs;
use std::path::{Path, PathBuf};

/// Where a kernel's symbols can be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Symbols {
    /// A `System.map` file with link addresses.
    SystemMap(PathBuf),
    /// The running kernel's `/proc/kallsyms`, which is the same build; `vmlinux` gives the link
    /// address that undoes the host's KASLR offset.
    Kallsyms {
        /// The guest's vmlinux ELF.
        vmlinux: PathBuf,
    },
}

/// A Debian placeholder `System.map` is one line; a real one has tens of thousands.
const MIN_REAL_MAP: u64 = 4096;

/// The largest `System.map` read. A distribution kernel's has some 150,000 symbols, 5–8 MiB;
/// an `allyesconfig` build's about four times that. It sits beside the kernel image, which may
/// be in a user's directory: a file of any size there is refused before it is read.
const MAX_SYSTEM_MAP: u64 = 64 << 20;

impl Symbols {
    /// Where the symbols of `image` (booted from `vmlinux`) can be found, if anywhere.
    pub fn locate(image: &KernelImage, vmlinux: &Path) -> Option<Symbols> {
        let dir = image.path.parent()?;
        let name = image.path.file_name()?.to_string_lossy();
        let mut maps = vec![dir.join("System.map")];
        if let Some(release) = name.strip_prefix("vmlinuz-") {
            maps.insert(0, dir.join(format!("System.map-{release}")));
        }
        if let Some(map) = maps
            .into_iter()
            .find(|m| fs::metadata(m).is_ok_and(|md| md.len() >= MIN_REAL_MAP))
        {
            return Some(Symbols::SystemMap(map));
        }
        let running = fs::read_to_string("/proc/version").ok()?;
        same_build(image.version.as_deref()?, &running).then(|| Symbols::Kallsyms {
            vmlinux: vmlinux.to_path_buf(),
        })
    }

    /// Where the symbols come from, in words.
    pub fn source(&self) -> String {
        match self {
            Symbols::SystemMap(p) => p.display().to_string(),
            Symbols::Kallsyms { .. } => "/proc/kallsyms (the host runs the same kernel)".into(),
        }
    }

    /// `function+0xoffset` for the guest address `addr`, if the symbols cover it.
    pub fn name(&self, addr: u64) -> Option<String> {
        let (text, offset) = match self {
            Symbols::SystemMap(p) => (
                isolab_host::files::read_to_string_bounded(p, MAX_SYSTEM_MAP, "System.map").ok()?,
                0,
            ),
            Symbols::Kallsyms { vmlinux } => {
                let text = fs::read_to_string("/proc/kallsyms").ok()?;
                let runtime = find(&text, "_text")?;
                // Without privilege kallsyms shows every address as 0: no names then.
                if runtime == 0 {
                    return None;
                }
                (text, runtime.wrapping_sub(link_address(vmlinux)?))
            }
        };
        lookup(&text, addr.wrapping_add(offset))
    }
}

/// True when the version a bzImage carries and the running kernel's `/proc/version` name the
/// same build: the same release and the same `#N … (date)` tail.
pub fn same_build(image_version: &str, proc_version: &str) -> bool {
    let release = |s: &str| s.split_whitespace().next().map(str::to_string);
    let tail = |s: &str| s.find(" #").map(|i| s[i..].trim().to_string());
    let running = proc_version
        .strip_prefix("Linux version ")
        .unwrap_or(proc_version);
    release(image_version).is_some()
        && release(image_version) == release(running)
        && tail(image_version).is_some()
        && tail(image_version) == tail(running)
}

/// The address of the symbol `name` in a `System.map`/`kallsyms` text.
fn find(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut w = l.split_whitespace();
        let (addr, _kind, sym) = (w.next()?, w.next()?, w.next()?);
        (sym == name).then(|| u64::from_str_radix(addr, 16).ok())?
    })
}

/// The text symbol (`t`/`T`/`w`/`W`) at or below `addr`, as `name+0xoffset`.
pub fn lookup(text: &str, addr: u64) -> Option<String> {
    let mut best: Option<(u64, &str)> = None;
    for line in text.lines() {
        let mut w = line.split_whitespace();
        let (Some(a), Some(kind), Some(sym)) = (w.next(), w.next(), w.next()) else {
            continue;
        };
        // Module symbols (a fourth word, `[module]`) live elsewhere: the guest has none.
        if w.next().is_some() || !matches!(kind, "t" | "T" | "w" | "W") {
            continue;
        }
        let Ok(a) = u64::from_str_radix(a, 16) else {
            continue;
        };
        if a <= addr && best.is_none_or(|(b, _)| a > b) {
            best = Some((a, sym));
        }
    }
    let (a, sym) = best?;
    // Past the end of the kernel's text, the nearest symbol below means nothing.
    (addr - a < 1 << 20).then(|| format!("{sym}+{:#x}", addr - a))
}

/// The link address of a vmlinux's text: the virtual address of its first loadable segment.
fn link_address(vmlinux: &Path) -> Option<u64> {
    use std::io::Read;
    let mut head = vec![0u8; 4096];
    // Through the kernel's own checks: a FIFO in its place must not block the open.
    let n = crate::guest_kernel::open(vmlinux)
        .ok()?
        .read(&mut head)
        .ok()?;
    head.truncate(n);
    let u16_at = |at: usize| Some(u16::from_le_bytes(head.get(at..at + 2)?.try_into().ok()?));
    let u32_at = |at: usize| Some(u32::from_le_bytes(head.get(at..at + 4)?.try_into().ok()?));
    let u64_at = |at: usize| Some(u64::from_le_bytes(head.get(at..at + 8)?.try_into().ok()?));
    if !head.starts_with(b"\x7fELF") {
        return None;
    }
    // ELF64 header: e_phoff at 0x20, e_phentsize at 0x36, e_phnum at 0x38.
    let (phoff, size, count) = (u64_at(0x20)? as usize, u16_at(0x36)?, u16_at(0x38)?);
    (0..count as usize).find_map(|i| {
        let ph = phoff + i * size as usize;
        const PT_LOAD: u32 = 1;
        (u32_at(ph)? == PT_LOAD).then(|| u64_at(ph + 0x10))?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAP: &str = "\
ffffffff81000000 T _text
ffffffff81000000 T startup_64
ffffffff81002f90 t native_safe_halt
ffffffff81002fb0 T default_idle
ffffffff81003000 D some_data
ffffffffc0000000 t mod_fn\t[some_module]
";

    #[test]
    fn an_address_is_named_by_the_text_symbol_below_it() {
        assert_eq!(
            lookup(MAP, 0xffff_ffff_8100_2f9f).as_deref(),
            Some("native_safe_halt+0xf")
        );
        assert_eq!(
            lookup(MAP, 0xffff_ffff_8100_2fb0).as_deref(),
            Some("default_idle+0x0")
        );
        assert_eq!(lookup(MAP, 0x1000), None, "below the kernel");
        assert_eq!(
            lookup(MAP, 0xffff_ffff_c000_0010),
            None,
            "modules are skipped"
        );
        assert_eq!(find(MAP, "_text"), Some(0xffff_ffff_8100_0000));
    }

    #[test]
    fn the_same_build_is_recognised_and_another_is_not() {
        let image = "6.1.0-56-amd64 (debian-kernel@lists.debian.org) #1 SMP PREEMPT_DYNAMIC \
                     Debian 6.1.192-2 (2026-11-16)";
        let same = "Linux version 6.1.0-56-amd64 (debian-kernel@lists.debian.org) (gcc-12 \
                    (Debian 12.2.0-14+deb12u1) 12.2.0, GNU ld (GNU Binutils for Debian) 2.40) \
                    #1 SMP PREEMPT_DYNAMIC Debian 6.1.192-2 (2026-11-16)\n";
        assert!(same_build(image, same));
        let rebuilt = same.replace("6.1.192-2 (2026-11-16)", "6.1.192-3 (2026-12-01)");
        assert!(!same_build(image, &rebuilt));
        assert!(!same_build(image, "Linux version 6.18.44 (b@s) #1 SMP"));
    }

    #[test]
    fn a_debian_placeholder_map_is_not_a_map() {
        let dir = std::env::temp_dir().join(format!("isolab-symbols-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let image = dir.join("vmlinuz-9.9.9-test");
        std::fs::write(&image, b"not a kernel").unwrap();
        std::fs::write(
            dir.join("System.map-9.9.9-test"),
            "ffffffffffffffff B The real System.map is in the linux-image-<version>-dbg package\n",
        )
        .unwrap();
        let k = KernelImage {
            path: image.clone(),
            kind: crate::guest_kernel::ImageKind::Elf,
            version: None,
            origin: crate::guest_kernel::Origin::Given,
        };
        assert_eq!(Symbols::locate(&k, &image), None);
        let real: String = (0..400)
            .map(|i| format!("ffffffff81{i:06x} T f{i}\n"))
            .collect();
        std::fs::write(dir.join("System.map-9.9.9-test"), real).unwrap();
        let found = Symbols::locate(&k, &image).unwrap();
        assert_eq!(
            found.name(0xffff_ffff_8100_0102).as_deref(),
            Some("f258+0x0")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
