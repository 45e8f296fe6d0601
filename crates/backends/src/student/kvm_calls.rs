//! Which KVM calls a student's VMM makes, seen from outside through seccomp.
//!
//! A VMM's first steps leave little to look at from outside: step 1 opens `/dev/kvm` and asks
//! two questions, step 2 hands KVM some of its memory as the guest's RAM. A program could print
//! the answers without asking, or map memory and never hand it over, and `/proc` would not tell.
//! The kernel can: a **seccomp filter with user notification** (`SECCOMP_RET_USER_NOTIF`, Linux
//! 5.0) stops the VMM at each of those `ioctl`s and tells the lab, which reads the call's
//! arguments — the file descriptor, the command, the memory region it points to — and lets it
//! go on unchanged (`SECCOMP_USER_NOTIF_FLAG_CONTINUE`, Linux 5.5):
//!
//! ```text
//!  VMM: ioctl(fd, KVM_SET_USER_MEMORY_REGION, &region) ─► seccomp filter: a KVM command?
//!                                                            │ yes: USER_NOTIF, the VMM waits
//!  lab: SECCOMP_IOCTL_NOTIF_RECV ◄────────────────────────────┘
//!       /proc/PID/fd/FD → anon_inode:kvm-vm;  /proc/PID/mem at &region → slot, size, address
//!       SECCOMP_IOCTL_NOTIF_SEND (CONTINUE) ─► the kernel runs the ioctl as asked
//! ```
//!
//! The filter is installed in the VMM's process just before its `exec`, after it became the uid
//! it runs as (so with `no_new_privs`: an unprivileged process may install a filter only so).
//! The listener fd goes to the lab over a socket, and the VMM never holds it. Only the commands
//! of the first two steps stop; `KVM_RUN`, the hot path, never does.
//!
//! What this proves: the VMM asked KVM the questions whose answers it reports, on a `/dev/kvm`
//! file descriptor, and registered a region of its own memory with a VM. What it does not: that
//! the call succeeded (the lab lets the kernel answer the VMM, not itself) — the checks compare
//! the arguments with what must succeed instead.

use nix::errno::Errno;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// `KVM_GET_API_VERSION`: `_IO(0xAE, 0x00)`, on the `/dev/kvm` fd.
pub const KVM_GET_API_VERSION: u32 = 0xAE00;
/// `KVM_CREATE_VM`: `_IO(0xAE, 0x01)`.
pub const KVM_CREATE_VM: u32 = 0xAE01;
/// `KVM_CHECK_EXTENSION`: `_IO(0xAE, 0x03)`, its argument the capability.
pub const KVM_CHECK_EXTENSION: u32 = 0xAE03;
/// `KVM_CREATE_VCPU`: `_IO(0xAE, 0x41)`, on the VM fd, its argument the vCPU id.
pub const KVM_CREATE_VCPU: u32 = 0xAE41;
/// `KVM_SET_USER_MEMORY_REGION`: `_IOW(0xAE, 0x46, struct kvm_userspace_memory_region)`, 32
/// bytes: the size is part of the command number.
pub const KVM_SET_USER_MEMORY_REGION: u32 = 0x4020_AE46;
/// `KVM_SET_USER_MEMORY_REGION2`: the same with guest_memfd fields, 160 bytes; its first 32
/// bytes are laid out as the first's.
pub const KVM_SET_USER_MEMORY_REGION2: u32 = 0x40A0_AE49;

const WATCHED: [u32; 6] = [
    KVM_GET_API_VERSION,
    KVM_CREATE_VM,
    KVM_CHECK_EXTENSION,
    KVM_CREATE_VCPU,
    KVM_SET_USER_MEMORY_REGION,
    KVM_SET_USER_MEMORY_REGION2,
];

/// A memory region as the VMM handed it to KVM (`struct kvm_userspace_memory_region`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    /// The slot number.
    pub slot: u32,
    /// `KVM_MEM_LOG_DIRTY_PAGES`, `KVM_MEM_READONLY`, …
    pub flags: u32,
    /// Where the guest sees it.
    pub guest_phys_addr: u64,
    /// Its size in bytes (0 deletes the slot).
    pub memory_size: u64,
    /// Where it is in the VMM's own memory.
    pub userspace_addr: u64,
}

/// One watched `ioctl` of the VMM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvmCall {
    /// The command (one of the constants above).
    pub cmd: u32,
    /// What its fd was at the time: `/dev/kvm`, `anon_inode:kvm-vm`, … (readlink of
    /// `/proc/PID/fd/FD`), empty when it could not be read.
    pub fd_target: String,
    /// The device number of the fd's file, when it is a character device (`/dev/kvm` is 10:232
    /// wherever its node is).
    pub fd_rdev: Option<u64>,
    /// The integer argument (a capability, a vCPU id).
    pub arg: u64,
    /// The region, for the memory-region commands whose argument could be read.
    pub region: Option<Region>,
}

/// The child's half, prepared before the fork: the filter and the socket the listener goes to.
pub(super) struct Prepared {
    filter: Vec<libc::sock_filter>,
    parent: OwnedFd,
    /// Where the child's end of the socket is in the child (see [`Prepared::new`]).
    child: RawFd,
}

impl Prepared {
    /// The filter, a socket, and the socket's child end: `keep` puts that end where the child
    /// will find it and returns its number there.
    pub(super) fn new(
        keep: impl FnOnce(OwnedFd) -> Result<RawFd, Errno>,
    ) -> Result<Prepared, Errno> {
        let mut ends = [0; 2];
        // SAFETY: socketpair writes two fds into the array.
        Errno::result(unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
                0,
                ends.as_mut_ptr(),
            )
        })?;
        // SAFETY: both fds were just created and are ours alone.
        let (parent, child) =
            unsafe { (OwnedFd::from_raw_fd(ends[0]), OwnedFd::from_raw_fd(ends[1])) };
        Ok(Prepared {
            filter: filter(),
            parent,
            child: keep(child)?,
        })
    }

    /// **In the child**, last before exec: no new privileges, the filter, and its listener
    /// sent to the lab. System calls on data prepared before the fork only.
    pub(super) fn install(&self) -> Result<(), (&'static str, Errno)> {
        let sock = self.child;
        let prog = libc::sock_fprog {
            len: self.filter.len() as u16,
            filter: self.filter.as_ptr().cast_mut(),
        };
        // SAFETY: prctl with integers; seccomp with a filter program that lives in `self`.
        let listener = unsafe {
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                return Err(("no_new_privs", Errno::last()));
            }
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
                &prog as *const libc::sock_fprog,
            )
        };
        if listener < 0 {
            return Err(("seccomp listener", Errno::last()));
        }
        let listener = listener as RawFd;
        // One byte with the listener as SCM_RIGHTS: the kernel passes the file itself, so it
        // stays the lab's after this process closes its copy and execs. Buffers on this stack.
        let mut byte = [0u8; 1];
        let mut iov = libc::iovec {
            iov_base: byte.as_mut_ptr().cast(),
            iov_len: 1,
        };
        let mut control = [0u64; 4];
        // SAFETY: msghdr is plain data; the CMSG helpers compute pointers inside `control`,
        // which is large enough for one fd (CMSG_SPACE(4) is 24 bytes); sendmsg reads them.
        let sent = unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = libc::CMSG_SPACE(4) as usize;
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(4) as usize;
            std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), listener);
            let sent = libc::sendmsg(sock, &msg, 0);
            libc::close(listener);
            libc::close(sock);
            sent
        };
        if sent != 1 {
            return Err(("send the seccomp listener", Errno::last()));
        }
        Ok(())
    }

    /// **In the lab**, after the spawn: the listener, and a thread that watches through it.
    pub(super) fn watch(self) -> Result<KvmCalls, Errno> {
        let mut byte = [0u8; 1];
        let mut iov = libc::iovec {
            iov_base: byte.as_mut_ptr().cast(),
            iov_len: 1,
        };
        let mut control = [0u64; 4];
        // The child ran until its exec before the spawn returned (`CLONE_VFORK`): the listener
        // is in the socket already, or the child failed and it never will be. No waiting.
        // SAFETY: as in `install`, receiving into buffers of this frame.
        let fd = unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = std::mem::size_of_val(&control);
            if libc::recvmsg(
                self.parent.as_raw_fd(),
                &mut msg,
                libc::MSG_CMSG_CLOEXEC | libc::MSG_DONTWAIT,
            ) != 1
            {
                return Err(Errno::last());
            }
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            if cmsg.is_null() || (*cmsg).cmsg_type != libc::SCM_RIGHTS {
                return Err(Errno::EPROTO);
            }
            OwnedFd::from_raw_fd(std::ptr::read_unaligned(
                libc::CMSG_DATA(cmsg).cast::<RawFd>(),
            ))
        };
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("kvm-calls".into())
                .spawn(move || serve(&fd, &stop))
                .map_err(|_| Errno::EAGAIN)?
        };
        Ok(KvmCalls { stop, thread })
    }
}

/// `AUDIT_ARCH_X86_64` (`EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE`): the architecture
/// seccomp reports for an x86-64 system call.
const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;

/// The filter: every `ioctl` whose command is one of [`WATCHED`] stops for the lab; everything
/// else, and every other architecture's call, runs as usual.
fn filter() -> Vec<libc::sock_filter> {
    const LD_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    const JEQ: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    const RET: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
    let op = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    // Offsets in `struct seccomp_data`: nr at 0, arch at 4, args[i] at 16 + 8i; an ioctl's
    // command is args[1], whose low 32 bits come first on x86-64.
    let n = WATCHED.len() as u8;
    let mut f = vec![
        op(LD_ABS, 0, 0, 4),
        // Not x86-64: jump over the rest to ALLOW (the last but one instruction).
        op(JEQ, 0, 3 + n, AUDIT_ARCH_X86_64),
        op(LD_ABS, 0, 0, 0),
        op(JEQ, 0, 1 + n, libc::SYS_ioctl as u32),
        op(LD_ABS, 0, 0, 24),
    ];
    for (i, cmd) in WATCHED.iter().enumerate() {
        // Equal: jump to NOTIFY, past the remaining comparisons and ALLOW.
        f.push(op(JEQ, n - i as u8, 0, *cmd));
    }
    f.push(op(RET, 0, 0, libc::SECCOMP_RET_ALLOW));
    f.push(op(RET, 0, 0, libc::SECCOMP_RET_USER_NOTIF));
    f
}

/// The lab's watcher of one VMM: what it saw, when the VMM is gone.
#[derive(Debug)]
pub struct KvmCalls {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<KvmCall>>,
}

impl KvmCalls {
    /// Stop watching (the VMM has ended, or is ended) and return the calls seen, in order.
    pub fn finish(self) -> Vec<KvmCall> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

/// Receive each notification, read the call's arguments, let the call go on; until no process
/// uses the filter any more (`POLLHUP`) or the lab says stop.
fn serve(listener: &OwnedFd, stop: &AtomicBool) -> Vec<KvmCall> {
    let mut calls = Vec::new();
    loop {
        let mut pfd = libc::pollfd {
            fd: listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll on one pollfd of ours, 50 ms at most.
        let n = unsafe { libc::poll(&mut pfd, 1, 50) };
        if n == 0 {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            continue;
        }
        if n < 0 {
            if Errno::last() == Errno::EINTR {
                continue;
            }
            break;
        }
        if pfd.revents & libc::POLLIN == 0 {
            // POLLHUP: every process of the filter has exited.
            break;
        }
        // SAFETY: seccomp_notif is plain data the kernel fills (it must be zeroed first).
        let mut notif: libc::seccomp_notif = unsafe { std::mem::zeroed() };
        // SAFETY: the RECV ioctl writes one seccomp_notif into ours.
        if unsafe {
            libc::ioctl(
                listener.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_RECV,
                &mut notif,
            )
        } != 0
        {
            // ENOENT: the caller died (was killed) before we got to it.
            continue;
        }
        let call = read_call(&notif);
        let mut id = notif.id;
        // SAFETY: ID_VALID reads one u64. The call is recorded only if its process is still
        // waiting in it (the fd and memory read above were that process's).
        let valid = unsafe {
            libc::ioctl(
                listener.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_ID_VALID,
                &mut id,
            )
        } == 0;
        if valid {
            calls.push(call);
        }
        let mut resp = libc::seccomp_notif_resp {
            id: notif.id,
            val: 0,
            error: 0,
            flags: libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32,
        };
        // SAFETY: the SEND ioctl reads our seccomp_notif_resp.
        unsafe {
            libc::ioctl(
                listener.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_SEND,
                &mut resp,
            )
        };
    }
    calls
}

/// The call of a notification, read through `/proc/PID` while its thread waits in it.
fn read_call(notif: &libc::seccomp_notif) -> KvmCall {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let args = notif.data.args;
    let cmd = args[1] as u32;
    let fd_path = format!("/proc/{}/fd/{}", notif.pid, args[0] as i32);
    let fd_target = std::fs::read_link(&fd_path)
        .map(|t| t.to_string_lossy().into_owned())
        .unwrap_or_default();
    let fd_rdev = std::fs::metadata(&fd_path)
        .ok()
        .filter(|m| m.file_type().is_char_device())
        .map(|m| m.rdev());
    let region = (cmd == KVM_SET_USER_MEMORY_REGION || cmd == KVM_SET_USER_MEMORY_REGION2)
        .then(|| {
            let mem = std::fs::File::open(format!("/proc/{}/mem", notif.pid)).ok()?;
            let mut b = [0u8; 32];
            mem.read_exact_at(&mut b, args[2]).ok()?;
            let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap_or_default());
            let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or_default());
            Some(Region {
                slot: u32_at(0),
                flags: u32_at(4),
                guest_phys_addr: u64_at(8),
                memory_size: u64_at(16),
                userspace_addr: u64_at(24),
            })
        })
        .flatten();
    KvmCall {
        cmd,
        fd_target,
        fd_rdev,
        arg: args[2],
        region,
    }
}
