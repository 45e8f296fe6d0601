//! `isolab-guest`: the workload as a bare microVM guest, with no operating system at all.
//!
//! This is the same program as `isolab-workload`, minus Linux. It links the same
//! `isolab-kernels` crate, compiled with the same profile and code-generation flags (build.rs),
//! so the `cpu` kernel here is the same machine code as in a process or a container. What differs
//! is only the [`shim::BareShim`] under the kernels: hypercalls instead of system calls.
//!
//! # How it starts
//!
//! There is no loader, no C runtime, no `main` in the usual sense. The VMM puts the program's
//! segments into guest RAM at the addresses they were linked for (`link.ld`), builds page tables
//! and a GDT, sets the vCPU's registers — long mode, **ring 3**, RSP at the top of the stack,
//! RIP at [`_start`] — and runs it. The guest's first instructions are the `ready` hypercall,
//! which the VMM stamps with the host clock.
//!
//! The guest stays in ring 3 all its life. It needs nothing from ring 0: no interrupts (RFLAGS.IF
//! is clear, and there is no interrupt controller), no system calls. Its first exception is fatal
//! by design: the CPU enters the VMM's own tiny ring-0 handler for it, which does one hypercall
//! to report the fault and never returns, and the VMM reports where the guest was. On nested PVM
//! that matters, because PVM emulates guest ring 0 instruction by instruction; on real
//! VT-x/AMD-V it costs nothing and keeps one code path.
//!
//! # What it does
//!
//! ```text
//!   ready ─► read the boot page ─► [hold] ─► run the kernel ─► done ─► [hold] ─► exit
//! ```
//!
//! mirroring `workload/src/main.rs` step for step.

#![no_std]
#![no_main]

mod hypercall;
mod mem;
mod shim;

use core::fmt::Write;
use isolab_kernels::hypercall::{encode_error, BootInfo, Call, BOOT_ADDR, PORT};
use isolab_kernels::{Error, Kernel, Output, Shim};
use shim::BareShim;

/// The entry point: the VMM sets RIP here and RSP to the top of the guest's stack.
///
/// Naked, because no Rust function can be the first code to run: it would assume a caller had
/// left a return address on an aligned stack. Its first three instructions are the `ready`
/// hypercall, so `ready` is stamped at the guest's very first instructions, before it has touched
/// its stack. Then it makes the stack look like the System V ABI expects at a call (RSP aligned
/// to 16 before the `call`), clears RBP so that a debugger's stack walk ends here, and calls
/// [`guest_main`], which never returns.
#[unsafe(naked)]
#[no_mangle]
#[link_section = ".text._start"]
pub extern "C" fn _start() -> ! {
    core::arch::naked_asm!(
        "mov dx, {port}",
        "mov eax, {ready}",
        "out dx, eax",
        "and rsp, -16",
        "xor ebp, ebp",
        "call {main}",
        "ud2",
        port = const PORT,
        ready = const Call::Ready.code(),
        main = sym guest_main,
    )
}

/// The workload, after `_start` has reported `ready`: everything before that marker (creating
/// the VM, loading this program, entering the guest) was start-up; everything after it is the
/// workload.
extern "C" fn guest_main() -> ! {
    let boot = match read_boot_info() {
        Ok(boot) => boot,
        Err(e) => panic!("the boot page holds no valid boot info: {e:?}"),
    };
    let spec = boot.spec;
    let mut shim = BareShim;
    if spec.hold {
        let _ = shim.wait_host();
    }

    let result = if spec.kernel == Kernel::Probe {
        probe()
    } else {
        // SAFETY: the VMM gave us this range of guest RAM for the kernel's working memory; it is
        // mapped read-write, 2 MiB aligned, and nothing else in the guest uses it.
        let arena = unsafe {
            core::slice::from_raw_parts_mut(boot.arena_addr as *mut u8, boot.arena_len as usize)
        };
        isolab_kernels::run(&spec, &mut shim, arena)
    };
    match result {
        Ok(out) => {
            hypercall::marker(Call::Done, [out.checksum, out.ops, out.bytes]);
            if spec.hold {
                let _ = shim.wait_host();
            }
            hypercall::exit()
        }
        Err(e) => fail(e),
    }
}

/// Read the boot page the VMM wrote before our first instruction.
fn read_boot_info() -> Result<BootInfo, isolab_kernels::hypercall::BootError> {
    let mut words = [0u64; BootInfo::WORDS];
    for (i, w) in words.iter_mut().enumerate() {
        // SAFETY: the boot page is mapped read-only for us at a fixed address (the ABI) and
        // holds BootInfo::WORDS words.
        *w = unsafe { (BOOT_ADDR as *const u64).add(i).read_volatile() };
    }
    BootInfo::from_words(words)
}

/// The `probe` kernel. A bare guest has no operating system to ask what it can see, so the VMM
/// answers: it reports the facts of the machine it built. Like the workload, the checksum counts
/// the facts.
fn probe() -> Result<Output, Error> {
    let facts = hypercall::call(Call::Probe, []).map_err(|s| Error::Platform(s as u32))?;
    Ok(Output {
        checksum: facts,
        ops: facts,
        bytes: 0,
    })
}

/// Report the kernel's error; the VMM ends the run.
fn fail(e: Error) -> ! {
    hypercall::marker(Call::Fail, encode_error(e));
    hypercall::exit()
}

/// A panic message, formatted into a buffer on the stack (there is no heap).
struct Message {
    bytes: [u8; 240],
    len: usize,
}

impl Write for Message {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let room = self.bytes.len() - self.len;
        let n = s.len().min(room);
        self.bytes[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// The unwinder's personality routine, which is never called.
///
/// The prebuilt `core` library was compiled for programs that unwind, so its unwind tables name
/// `rust_eh_personality`, and the linker wants the symbol to exist. This program never unwinds
/// (`panic = "abort"`: a panic goes straight to [`panic()`] below), so no one calls it; if anything
/// ever did, `ud2` would end the run with a fault the VMM reports.
#[no_mangle]
extern "C" fn rust_eh_personality() -> ! {
    loop {
        // SAFETY: `ud2` raises #UD, which ends the run.
        unsafe { core::arch::asm!("ud2", options(nomem, nostack)) };
    }
}

/// A panic ends the guest: the message goes to the VMM by address and length (the VMM checks
/// both before reading it), and the VMM ends the run.
#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    let mut msg = Message {
        bytes: [0; 240],
        len: 0,
    };
    let _ = write!(msg, "{info}");
    hypercall::marker(Call::Panic, [msg.bytes.as_ptr() as u64, msg.len as u64]);
    hypercall::exit()
}
