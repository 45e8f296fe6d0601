//! Descriptors: closing every one a new program must not inherit.

use std::os::fd::RawFd;

/// Close every fd numbered `first` or higher. Safe between fork and exec: no allocation.
pub fn close_from(first: RawFd) {
    // close_range(2) (Linux 5.9) does it in one call.
    // SAFETY: closing fds in the child; nothing after this uses them.
    let done = unsafe { libc::syscall(libc::SYS_close_range, first as u32, u32::MAX, 0) } == 0;
    if !done {
        close_from_listed(first);
    }
}

/// [`close_from`] without close_range (Linux < 5.9): close what `/proc/self/fd` lists. A loop
/// over numbers would have to go up to the soft limit on open files, which the lab raises to
/// the hard one (often 2^20: a million system calls per child) — stopping at 1024 instead would
/// leave the density experiment's pipes open in every workload. The directory is read with
/// getdents64 into a buffer on the stack: `opendir` would allocate.
pub fn close_from_listed(first: RawFd) {
    // SAFETY: open, getdents64 and close on a buffer we own; no allocation.
    unsafe {
        let dir = libc::open(
            c"/proc/self/fd".as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        );
        if dir < 0 {
            // No /proc: every number up to the limit, then.
            let mut lim = std::mem::zeroed::<libc::rlimit>();
            let top = if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
                lim.rlim_cur.min(i32::MAX as libc::rlim_t) as RawFd
            } else {
                1 << 20
            };
            for fd in first..top {
                libc::close(fd);
            }
            return;
        }
        // struct linux_dirent64: d_ino (8), d_off (8), d_reclen (2), d_type (1), d_name.
        let mut buf = [0u8; 2048];
        loop {
            let n = libc::syscall(libc::SYS_getdents64, dir, buf.as_mut_ptr(), buf.len());
            if n <= 0 {
                break;
            }
            let mut at = 0usize;
            while at + 19 < n as usize {
                let reclen = u16::from_ne_bytes([buf[at + 16], buf[at + 17]]) as usize;
                if reclen == 0 {
                    break;
                }
                let mut fd: RawFd = 0;
                let mut digits = 0;
                for &b in buf[at + 19..at + reclen].iter().take_while(|&&b| b != 0) {
                    if !b.is_ascii_digit() {
                        digits = 0;
                        break;
                    }
                    fd = fd.saturating_mul(10).saturating_add((b - b'0') as RawFd);
                    digits += 1;
                }
                if digits > 0 && fd >= first && fd != dir {
                    libc::close(fd);
                }
                at += reclen;
            }
        }
        libc::close(dir);
    }
}
