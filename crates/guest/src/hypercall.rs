//! The guest's half of the hypercall ABI (`isolab_kernels::hypercall`): write the arguments into
//! the mailbox, `out` the call code to the hypercall port, read the answer from the mailbox.

use core::arch::asm;
use isolab_kernels::hypercall::{mailbox, status, Call, MAILBOX_ADDR, PORT};

/// The mailbox word at byte offset `offset`.
fn word(offset: u64) -> *mut u64 {
    (MAILBOX_ADDR + offset) as *mut u64
}

/// Make hypercall `call` with `args` in the mailbox. Returns the call's value, or its non-zero
/// status (an errno value) as the error.
#[inline(always)]
pub fn call<const N: usize>(call: Call, args: [u64; N]) -> Result<u64, u64> {
    const { assert!(N <= mailbox::ARGS) };
    for (i, arg) in args.into_iter().enumerate() {
        // SAFETY: the mailbox is a page of guest RAM the VMM maps read-write for us at a fixed
        // address (the ABI); volatile, because the VMM reads it behind the compiler's back.
        unsafe { word(mailbox::arg(i)).write_volatile(arg) };
    }
    // `out` from ring 3 is allowed for this one port by the I/O-permission bitmap in the VMM's
    // TSS; KVM stops the vCPU on it and KVM_RUN returns to the VMM with the port and the value of
    // EAX. When the VMM runs the vCPU again, execution continues with the next instruction, the
    // call answered.
    //
    // The asm block is deliberately *not* `nomem`: to the compiler it may read and write any
    // memory, so every store before it (arguments, an `io` buffer) is done before the exit, and
    // nothing read after it (the result, a buffer the VMM filled) is taken from a register.
    // SAFETY: port I/O on the hypercall port only leaves the guest for the VMM; no register but
    // the two inputs is involved, and the flags are untouched.
    unsafe {
        asm!(
            "out dx, eax",
            in("dx") PORT,
            in("eax") call.code(),
            options(nostack, preserves_flags),
        )
    };
    // SAFETY: as above; the VMM wrote both words before resuming us.
    let (ret, status) = unsafe {
        (
            word(mailbox::RET).read_volatile(),
            word(mailbox::STATUS).read_volatile(),
        )
    };
    if status == status::OK {
        Ok(ret)
    } else {
        Err(status)
    }
}

/// A call that cannot fail (the markers): its status is not looked at.
#[inline(always)]
pub fn marker<const N: usize>(which: Call, args: [u64; N]) {
    let _ = call(which, args);
}

/// Stop for good: tell the VMM we are finished. The VMM never resumes a guest after
/// [`Call::Exit`]; if one did, `ud2` would fault and the VMM would report that instead of the
/// guest running on.
pub fn exit() -> ! {
    marker(Call::Exit, []);
    loop {
        // SAFETY: `ud2` raises #UD, which ends the run (there is no exception handler).
        unsafe { asm!("ud2", options(nomem, nostack)) };
    }
}
