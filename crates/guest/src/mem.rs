//! The four memory functions every Rust program needs from its C library.
//!
//! The compiler turns struct copies, slice copies and zeroing into calls to `memcpy`, `memmove`
//! and `memset`, and slice comparisons into `memcmp`/`bcmp`. A Linux program gets them from libc;
//! the bare guest has no libc, so here they are. The copies and fills use the x86 string
//! instructions (`rep movsb`, `rep stosb`), which modern CPUs run at full speed ("fast short
//! REP MOV") and which are allowed in ring 3. They rely on RFLAGS.DF = 0, which the System V ABI
//! guarantees at every call and the VMM sets at the first instruction.
//!
//! They must not be written as plain Rust loops over bytes: the compiler recognises such a loop
//! *as* a `memcpy` and replaces it with a call to `memcpy` — this very function.

use core::arch::asm;

/// Copy `n` bytes from `src` to `dst`; the ranges must not overlap.
///
/// # Safety
/// `src` must be readable and `dst` writable for `n` bytes, and they must not overlap.
#[no_mangle]
pub unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller guarantees both ranges; `rep movsb` copies RCX bytes from [RSI] to
    // [RDI] upwards (DF = 0) and touches nothing else.
    unsafe {
        asm!(
            "rep movsb",
            inout("rcx") n => _,
            inout("rdi") dst => _,
            inout("rsi") src => _,
            options(nostack, preserves_flags),
        )
    };
    dst
}

/// Copy `n` bytes from `src` to `dst`; the ranges may overlap.
///
/// # Safety
/// `src` must be readable and `dst` writable for `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dst as usize).wrapping_sub(src as usize) >= n {
        // `dst` is below `src` or past its end: copying upwards never overwrites a byte before
        // it is read.
        // SAFETY: as for memcpy; the upward copy is correct for this overlap.
        return unsafe { memcpy(dst, src, n) };
    }
    // `dst` lies inside `src`'s range: copy downwards, from the last byte, with DF = 1 for the
    // duration of the instruction only.
    // SAFETY: the caller guarantees both ranges; RSI/RDI start at the last byte of each, and
    // `cld` restores the DF = 0 the ABI requires.
    unsafe {
        asm!(
            "std",
            "rep movsb",
            "cld",
            inout("rcx") n => _,
            inout("rdi") dst.add(n - 1) => _,
            inout("rsi") src.add(n - 1) => _,
            options(nostack),
        )
    };
    dst
}

/// Fill `n` bytes at `dst` with the byte `c`.
///
/// # Safety
/// `dst` must be writable for `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn memset(dst: *mut u8, c: i32, n: usize) -> *mut u8 {
    // SAFETY: the caller guarantees the range; `rep stosb` stores AL into RCX bytes from [RDI].
    unsafe {
        asm!(
            "rep stosb",
            inout("rcx") n => _,
            inout("rdi") dst => _,
            in("al") c as u8,
            options(nostack, preserves_flags),
        )
    };
    dst
}

/// Compare `n` bytes: negative, zero or positive as `a` sorts before, equal to or after `b`.
///
/// # Safety
/// `a` and `b` must be readable for `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    let mut i = 0;
    while i < n {
        // SAFETY: `i < n` and the caller guarantees `n` readable bytes at both.
        let (x, y) = unsafe { (*a.add(i), *b.add(i)) };
        if x != y {
            return x as i32 - y as i32;
        }
        i += 1;
    }
    0
}

/// Compare `n` bytes for equality only (zero when equal); the compiler calls it for `==` on
/// slices.
///
/// # Safety
/// `a` and `b` must be readable for `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: same contract.
    unsafe { memcmp(a, b, n) }
}
