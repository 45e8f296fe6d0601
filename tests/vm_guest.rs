//! The bare guest runs the **same compiled kernels** as the Linux workload.
//!
//! Both programs link `isolab-kernels`, built by build.rs with one profile and one set of
//! code-generation flags; the guest adds only link arguments. This test reads the symbol tables
//! of the two executables `lab` carries and compares the machine code of every kernel function:
//! the same length, and the same bytes except the 32-bit address fields that point at each
//! program's own constants (the two are linked at different addresses).

use isolab_payload::{GUEST_ELF, WORKLOAD_ELF};
use std::collections::BTreeMap;

fn u16_at(b: &[u8], at: usize) -> usize {
    u16::from_le_bytes(b[at..at + 2].try_into().unwrap()) as usize
}
fn u32_at(b: &[u8], at: usize) -> usize {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize
}
fn u64_at(b: &[u8], at: usize) -> usize {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap()) as usize
}

/// The code of every function of `isolab_kernels::compute`, by name without its hash suffix.
fn kernel_functions(elf: &'static [u8]) -> BTreeMap<String, &'static [u8]> {
    // Section headers: (address, file offset, size, link, type).
    let (shoff, shentsize, shnum) = (u64_at(elf, 0x28), u16_at(elf, 0x3a), u16_at(elf, 0x3c));
    let sections: Vec<[usize; 5]> = (0..shnum)
        .map(|i| {
            let h = shoff + i * shentsize;
            [
                u64_at(elf, h + 16),
                u64_at(elf, h + 24),
                u64_at(elf, h + 32),
                u32_at(elf, h + 40),
                u32_at(elf, h + 4),
            ]
        })
        .collect();
    const SHT_SYMTAB: usize = 2;
    let symtab = sections
        .iter()
        .find(|s| s[4] == SHT_SYMTAB)
        .expect("a symbol table");
    let strtab = sections[symtab[3]];
    let mut found = BTreeMap::new();
    for sym in (symtab[1]..symtab[1] + symtab[2]).step_by(24) {
        let name_at = strtab[1] + u32_at(elf, sym);
        let name_end = name_at + elf[name_at..].iter().position(|&b| b == 0).unwrap();
        let name = std::str::from_utf8(&elf[name_at..name_end]).unwrap();
        let (shndx, value, size) = (
            u16_at(elf, sym + 6),
            u64_at(elf, sym + 8),
            u64_at(elf, sym + 16),
        );
        if !name.contains("14isolab_kernels7compute") || size == 0 || shndx >= sections.len() {
            continue;
        }
        let section = sections[shndx];
        let at = section[1] + (value - section[0]);
        // Mangled names end in a hash of the crate's metadata, which differs between builds.
        let bare = name.split("17h").next().unwrap().to_string();
        found.insert(bare, &elf[at..at + size]);
    }
    found
}

#[test]
fn the_guest_runs_the_same_machine_code_as_the_workload() {
    let guest = kernel_functions(GUEST_ELF);
    let workload = kernel_functions(WORKLOAD_ELF);
    // At least the kernels every program needs: cpu, mem, random, syscall, io.
    for name in ["3cpu", "9mem_triad", "12random_chase", "7syscall", "2io"] {
        assert!(
            guest.keys().any(|k| k.ends_with(name)),
            "{name} is not in the guest"
        );
    }
    for (name, code) in &guest {
        let other = workload
            .get(name)
            .unwrap_or_else(|| panic!("{name} is in the guest but not in the workload"));
        assert_eq!(code.len(), other.len(), "{name}: different length");
        // Differences come only in runs of at most 4 bytes: 32-bit displacements or addresses.
        let mut run = 0;
        for (a, b) in code.iter().zip(other.iter()) {
            run = if a == b { 0 } else { run + 1 };
            assert!(run <= 4, "{name}: more than an address differs");
        }
        let differing = code
            .iter()
            .zip(other.iter())
            .filter(|(a, b)| a != b)
            .count();
        assert!(
            differing * 10 <= code.len(),
            "{name}: {differing} of {} bytes differ",
            code.len()
        );
    }
}
