//! Step 5: the lab's bare guest — the workload's kernels with no operating system — in this VMM.
//!
//! The guest is a static ELF executable (`guest/` in the lab). Its contract with a VMM is
//! `isolab_kernels::hypercall`: the VMM loads it, writes a **boot page** saying what to run,
//! enters it in long mode ring 3 (step 4), and serves its **hypercalls**: the guest writes its
//! arguments into the **mailbox** page, then `out dx, eax` with a call code to the hypercall port;
//! KVM stops the vCPU (`KVM_EXIT_IO`); the VMM does the work, writes the result into the mailbox
//! and runs the vCPU again.

use super::{entry, fail, Machine, Report};
use kvm_ioctls::{Kvm, VcpuExit};
use labkit::isolab_kernels::hypercall::{
    decode_error, mailbox, status, BootInfo, Call, BOOT_ADDR, IMAGE_BASE, IMAGE_END, MAILBOX_ADDR,
    PORT,
};
use labkit::vmm::Request;

/// The kernels' working memory: from 2 MiB to the end of RAM.
const ARENA: u64 = 2 << 20;

/// Load the bare guest, tell it what to run, and serve it until it exits.
pub fn run(kvm: &Kvm, machine: &mut Machine, elf: &[u8], request: &Request, report: Report) {
    // STEP 5 BEGIN
    let entry = load_elf(machine, elf).unwrap_or_else(|e| fail(report, "load guest", &e));
    let Some(spec) = request.spec else {
        fail(report, "boot page", "no workload after --");
    };
    let boot = BootInfo {
        spec,
        arena_addr: ARENA,
        arena_len: machine.ram.size().saturating_sub(ARENA),
    };
    for (i, word) in boot.to_words().into_iter().enumerate() {
        machine.ram.write_u64(BOOT_ADDR + 8 * i as u64, word);
    }
    entry::enter_long_mode(kvm, machine, entry, report);
    report.phase("guest_loaded");
    report.phase("first_entry");
    loop {
        let call = match machine.vcpu.run() {
            Ok(VcpuExit::IoOut(port, data)) if port == PORT && data.len() == 4 => {
                let code = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
                Call::from_code(code)
                    .unwrap_or_else(|| fail(report, "hypercall", &format!("unknown code {code}")))
            }
            Ok(other) => fail(report, "guest", &format!("stopped: {other:?}")),
            Err(e) => fail(report, "KVM_RUN", &e.to_string()),
        };
        if !serve(call, machine, &spec, report) {
            return;
        }
    }
    // STEP 5 END
    //~ let _ = (kvm, machine, elf, request, load_elf, serve);
    //~ // TODO(step 5): load the ELF (load_elf), write the BootInfo words at BOOT_ADDR, enter
    //~ // long mode at the ELF's entry point, then serve hypercalls until Call::Exit.
    //~ report.todo(5, "run the bare guest");
}

/// Copy each loadable segment of a static ELF executable to the guest-physical address it was
/// linked for; the entry point. Every number from the file is checked before use.
fn load_elf(machine: &mut Machine, elf: &[u8]) -> Result<u64, String> {
    // STEP 5 BEGIN
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    };
    // e_ident: magic, 64-bit (2), little-endian (1); e_machine x86-64 (62).
    if elf.get(..6) != Some(b"\x7fELF\x02\x01") || u16_at(18) != Some(62) {
        return Err("not a 64-bit x86-64 ELF".into());
    }
    let entry = u64_at(24).ok_or("truncated header")?;
    let phoff = u64_at(32).ok_or("truncated header")? as usize;
    let phnum = u16_at(56).ok_or("truncated header")? as usize;
    for i in 0..phnum {
        let ph = phoff + 56 * i;
        // p_type 1 = PT_LOAD; p_offset, p_paddr, p_filesz, p_memsz.
        if elf.get(ph..ph + 4) != Some(&[1, 0, 0, 0]) {
            continue;
        }
        let (offset, paddr) = (u64_at(ph + 8), u64_at(ph + 24));
        let (filesz, memsz) = (u64_at(ph + 32), u64_at(ph + 40));
        let (Some(offset), Some(paddr), Some(filesz), Some(memsz)) = (offset, paddr, filesz, memsz)
        else {
            return Err("truncated program header".into());
        };
        if paddr < IMAGE_BASE || paddr.saturating_add(memsz) > IMAGE_END || filesz > memsz {
            return Err(format!("segment at {paddr:#x} outside the image window"));
        }
        let bytes = elf
            .get(offset as usize..(offset + filesz) as usize)
            .ok_or("segment past the end of the file")?;
        // The rest up to memsz is .bss: fresh guest RAM is zero already.
        machine.ram.write(paddr, bytes);
    }
    Ok(entry)
    // STEP 5 END
    //~ let _ = (machine, elf);
    //~ Err("step 5: load_elf".into())
}

/// Serve one hypercall; false when the guest is finished.
fn serve(call: Call, machine: &mut Machine, spec: &labkit::vmm::Spec, report: Report) -> bool {
    // STEP 5 BEGIN
    let arg =
        |m: &mut Machine, i: usize| m.ram.read_u64(MAILBOX_ADDR + mailbox::arg(i)).unwrap_or(0);
    let (mut ret, mut result) = (0, status::OK);
    match call {
        // The markers: stamped now, when the exit reaches the VMM, on the host's clock.
        Call::Ready => report.ready(),
        Call::Start => report.start(),
        Call::Done => report.done(arg(machine, 0), arg(machine, 1), arg(machine, 2)),
        // The `syscall` kernel's round trip: one exit, answered with its argument.
        Call::EnterKernel => ret = arg(machine, 0),
        // Sleep in read(2) until lab says go: a waiting guest costs no CPU.
        Call::WaitHost => {
            if labkit::wait_for_go().is_err() {
                result = status::EIO;
            }
        }
        // A bare guest has no OS to ask: a VMM may answer for it (0 facts here).
        Call::Probe => ret = 0,
        // File I/O on the guest's behalf: left for you to add (see the step's text).
        Call::IoWrite | Call::IoSync | Call::IoRead => result = status::EINVAL,
        Call::Fail => {
            let words = [arg(machine, 0), arg(machine, 1), arg(machine, 2)];
            let error = decode_error(words).map_or(format!("{words:?}"), |e| format!("{e:?}"));
            fail(report, spec.kernel.name(), &error);
        }
        Call::Panic => {
            let (addr, len) = (arg(machine, 0), arg(machine, 1).min(4096) as usize);
            let msg = machine
                .ram
                .slice(addr, len)
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_else(|| "(message outside guest RAM)".into());
            fail(report, "guest panic", &msg);
        }
        Call::Exit => return false,
    }
    machine.ram.write_u64(MAILBOX_ADDR + mailbox::RET, ret);
    machine
        .ram
        .write_u64(MAILBOX_ADDR + mailbox::STATUS, result);
    true
    // STEP 5 END
    //~ let _ = (call, machine, spec, report);
    //~ false
}
