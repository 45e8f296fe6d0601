//! A **tap** device: a virtual Ethernet interface whose wire is a file descriptor.
//!
//! ```text
//!  guest eth0 ── virtio-net ── VMM ── write(tap fd) ──► host kernel: a frame received on `tapN`
//!                                  ◄── read(tap fd)  ── host kernel: a frame sent out of `tapN`
//! ```
//!
//! Opening `/dev/net/tun` gives a file descriptor attached to nothing; the `TUNSETIFF` ioctl
//! creates a network interface in the calling thread's network namespace and binds the descriptor
//! to it. From then on, each `write` of a whole Ethernet frame looks to the host's network stack
//! as if the frame had arrived on the interface's cable, and each frame the stack sends out of the
//! interface is queued for a `read`. One `read` or `write` is always exactly one frame.
//!
//! The flags the lab uses, and why:
//!
//! * `IFF_TAP` — Ethernet frames (layer 2), as a NIC sees them; `IFF_TUN` would be bare IP packets;
//! * `IFF_NO_PI` — no 4-byte "packet information" prefix (flags and protocol) before each frame;
//! * `IFF_VNET_HDR` — instead, a **virtio-net header** before each frame: the same 12-byte
//!   `virtio_net_hdr_v1` a virtio-net driver puts before its frames (`TUNSETVNETHDRSZ` sets the
//!   size; 10 bytes is the legacy header, 12 adds `num_buffers`). The VMM can then pass the guest's
//!   buffers to the tap and back without rewriting a byte: checksum-offload and segmentation
//!   hints, when negotiated, travel in that header.
//!
//! Without `TUNSETPERSIST` the interface belongs to its descriptor: when the last descriptor
//! closes (the VMM exits, or is killed), the kernel deletes the interface. Nothing outlives the
//! lab.

use std::ffi::CStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// `IFNAMSIZ`: an interface name holds at most 15 bytes and a NUL.
pub const IFNAMSIZ: usize = 16;

/// The bytes of `virtio_net_hdr_v1` the tap puts before every frame (see the module docs).
pub const VNET_HDR_LEN: usize = 12;

// The ioctls of <linux/if_tun.h>: _IOW('T', nr, int). Written out because they are part of the
// kernel's ABI and never change: direction write (1 << 30), size 4 (<< 16), type 'T', number.
const fn iow_t(nr: u64) -> u64 {
    (1 << 30) | (4 << 16) | ((b'T' as u64) << 8) | nr
}
const TUNSETIFF: u64 = iow_t(202);
const TUNSETOFFLOAD: u64 = iow_t(208);
const TUNSETVNETHDRSZ: u64 = iow_t(216);
const TUNGETIFF: u64 = (2 << 30) | (4 << 16) | ((b'T' as u64) << 8) | 210;

/// `TUNSETOFFLOAD` flags (<linux/if_tun.h>).
pub mod offload {
    /// Frames may carry a partial checksum, to be completed by the reader.
    pub const CSUM: u32 = 0x01;
    /// TCP over IPv4 segments larger than the MTU.
    pub const TSO4: u32 = 0x02;
    /// TCP over IPv6 segments larger than the MTU.
    pub const TSO6: u32 = 0x04;
    /// ... with the ECN bits set (congestion-window-reduced).
    pub const TSO_ECN: u32 = 0x08;
}

const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    /// The name does not fit an interface name.
    #[error("tap name {0:?}: an interface name is 1 to 15 bytes, without '/', ':' or spaces")]
    BadName(String),
    /// `/dev/net/tun` could not be opened.
    #[error("open /dev/net/tun: {0} (the tun module: modprobe tun; needs CAP_NET_ADMIN)")]
    Open(io::Error),
    /// An ioctl failed.
    #[error("{op} on tap {name}: {source}")]
    Ioctl {
        /// Which request.
        op: &'static str,
        /// The interface.
        name: String,
        /// Why.
        source: io::Error,
    },
}

/// `struct ifreq` with the two members the tap ioctls use: the name and the flags.
#[repr(C)]
struct IfReq {
    name: [u8; IFNAMSIZ],
    flags: libc::c_short,
    // The rest of the union (24 bytes in all on x86-64).
    _pad: [u8; 22],
}

impl IfReq {
    fn named(name: &str) -> IfReq {
        let mut req = IfReq {
            name: [0; IFNAMSIZ],
            flags: 0,
            _pad: [0; 22],
        };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        req
    }
}

/// A tap interface and the descriptor that is its wire.
#[derive(Debug)]
pub struct Tap {
    fd: OwnedFd,
    name: String,
}

impl Tap {
    /// Create the tap interface `name` in the calling thread's network namespace, with a
    /// 12-byte virtio-net header before every frame and no offloads. The descriptor is
    /// non-blocking (a VMM polls it) and close-on-exec (QEMU gets it by an explicit `dup2`).
    pub fn create(name: &str) -> Result<Tap, TapError> {
        if name.is_empty()
            || name.len() >= IFNAMSIZ
            || name
                .bytes()
                .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0)
        {
            return Err(TapError::BadName(name.into()));
        }
        let path: &CStr = c"/dev/net/tun";
        // SAFETY: a NUL-terminated path and plain flags; the result is checked.
        let raw = unsafe {
            libc::open(
                path.as_ptr(),
                libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(TapError::Open(io::Error::last_os_error()));
        }
        // SAFETY: `raw` is a descriptor just opened and owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut req = IfReq::named(name);
        req.flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
        let ioctl_err = |op| {
            let name = name.to_string();
            move |source| TapError::Ioctl { op, name, source }
        };
        // SAFETY: TUNSETIFF reads (and writes back the name into) a whole `struct ifreq`.
        let rc = unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF as _, &mut req) };
        if rc < 0 {
            return Err(ioctl_err("TUNSETIFF")(io::Error::last_os_error()));
        }
        let hdr: libc::c_int = VNET_HDR_LEN as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads one int.
        let rc = unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETVNETHDRSZ as _, &hdr) };
        if rc < 0 {
            return Err(ioctl_err("TUNSETVNETHDRSZ")(io::Error::last_os_error()));
        }
        // No offloads: every frame is a complete, checksummed Ethernet frame of at most the MTU.
        // SAFETY: TUNSETOFFLOAD takes an unsigned long by value.
        let rc = unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETOFFLOAD as _, 0 as libc::c_ulong) };
        if rc < 0 {
            return Err(ioctl_err("TUNSETOFFLOAD")(io::Error::last_os_error()));
        }
        // The kernel may have completed a name pattern (`tap%d`): take the name it chose.
        let end = req.name.iter().position(|&b| b == 0).unwrap_or(IFNAMSIZ);
        let name = String::from_utf8_lossy(&req.name[..end]).into_owned();
        Ok(Tap { fd, name })
    }

    /// The tap `name` whose descriptor a process inherited as `fd` (a VMM forked from the lab
    /// gets its tap at a fixed number).
    pub fn inherited(fd: OwnedFd, name: &str) -> Tap {
        Tap {
            fd,
            name: name.into(),
        }
    }

    /// Which offloaded frames the host's stack may hand this descriptor (`TUNSETOFFLOAD`,
    /// [`offload`] flags): frames whose checksum is still to be computed (`CSUM`), and TCP
    /// segments of up to 64 KiB that the reader will cut to the MTU itself (`TSO4`, `TSO6`,
    /// `TSO_ECN`). The reader must understand the virtio-net header that says so — a virtio-net
    /// driver that negotiated the matching guest features does. Frames *written* with such a
    /// header are accepted whatever this says.
    pub fn set_offload(&self, flags: u32) -> Result<(), TapError> {
        // SAFETY: TUNSETOFFLOAD takes an unsigned long by value.
        let rc = unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                TUNSETOFFLOAD as _,
                flags as libc::c_ulong,
            )
        };
        if rc < 0 {
            return Err(TapError::Ioctl {
                op: "TUNSETOFFLOAD",
                name: self.name.clone(),
                source: io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    /// The interface's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The interface's flags as the kernel reports them (`TUNGETIFF`): a check that the
    /// descriptor is still bound to a tap with a virtio-net header.
    pub fn flags(&self) -> Result<i16, TapError> {
        let mut req = IfReq::named("");
        // SAFETY: TUNGETIFF writes a whole `struct ifreq`.
        let rc = unsafe { libc::ioctl(self.fd.as_raw_fd(), TUNGETIFF as _, &mut req) };
        if rc < 0 {
            return Err(TapError::Ioctl {
                op: "TUNGETIFF",
                name: self.name.clone(),
                source: io::Error::last_os_error(),
            });
        }
        Ok(req.flags)
    }

    /// Bring the interface up (`SIOCSIFFLAGS` with `IFF_UP`) in the calling thread's network
    /// namespace, which must be the one it was created in. Until it is up, the host's stack
    /// neither sends out of it nor accepts frames from it.
    pub fn set_up(&self) -> Result<(), TapError> {
        let err = |op| {
            let name = self.name.clone();
            move |source| TapError::Ioctl { op, name, source }
        };
        // Interface flags are set through any socket of the namespace.
        // SAFETY: plain socket(2) arguments; the result is checked.
        let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if sock < 0 {
            return Err(err("socket")(io::Error::last_os_error()));
        }
        // SAFETY: a descriptor just created and owned by nobody else.
        let sock = unsafe { OwnedFd::from_raw_fd(sock) };
        let mut req = IfReq::named(&self.name);
        // SAFETY: SIOCGIFFLAGS fills the flags of a whole `struct ifreq`.
        if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS as _, &mut req) } < 0 {
            return Err(err("SIOCGIFFLAGS")(io::Error::last_os_error()));
        }
        req.flags |= libc::IFF_UP as libc::c_short;
        // SAFETY: SIOCSIFFLAGS reads a whole `struct ifreq`.
        if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS as _, &req) } < 0 {
            return Err(err("SIOCSIFFLAGS")(io::Error::last_os_error()));
        }
        Ok(())
    }

    /// The interface index (`if_nametoindex`) in the calling thread's namespace.
    pub fn index(&self) -> Option<u32> {
        let name = std::ffi::CString::new(self.name.as_str()).ok()?;
        // SAFETY: a NUL-terminated name.
        let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
        (index != 0).then_some(index)
    }

    /// A second descriptor of the same interface (for a thread of its own, or for QEMU).
    pub fn try_clone_fd(&self) -> io::Result<OwnedFd> {
        self.fd.try_clone()
    }

    /// The descriptor as a file, for `read`/`write`.
    pub fn file(&self) -> io::Result<File> {
        self.fd.try_clone().map(File::from)
    }
}

impl AsFd for Tap {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }
}

/// Run `f` in a thread that has a network namespace of its own (so the host's interfaces are
/// never touched); the namespace goes with the thread. For tests of TAP devices and what uses
/// them (the VMM's virtio-net).
pub fn in_new_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .expect("unshare(CLONE_NEWNET) needs root");
        f()
    })
    .join()
    .expect("the namespace thread")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_names_are_refused_before_anything_is_made() {
        for bad in ["", "a-name-far-too-long", "a/b", "a b", "x:1"] {
            assert!(
                matches!(Tap::create(bad), Err(TapError::BadName(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_tap_exists_while_its_descriptor_is_open_and_goes_with_it() {
        in_new_netns(|| {
            let tap = Tap::create("isolab-t0").expect("create a tap");
            assert_eq!(tap.name(), "isolab-t0");
            let flags = tap.flags().unwrap();
            assert_eq!(flags & IFF_TAP, IFF_TAP);
            assert_eq!(flags & IFF_VNET_HDR, IFF_VNET_HDR);
            assert_eq!(flags & IFF_NO_PI, IFF_NO_PI);
            assert!(tap.index().is_some(), "the interface exists");
            tap.set_up().unwrap();
            drop(tap);
            let name = std::ffi::CString::new("isolab-t0").unwrap();
            // SAFETY: a NUL-terminated name.
            let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
            assert_eq!(
                index, 0,
                "a non-persistent tap vanishes with its descriptor"
            );
        });
    }

    #[test]
    fn a_kernel_chosen_name_is_reported() {
        in_new_netns(|| {
            let tap = Tap::create("isolab%d").unwrap();
            assert_eq!(tap.name(), "isolab0");
        });
    }
}
