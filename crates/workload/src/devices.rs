//! The Linux side of the disk and network kernels: a disk opened with `O_DIRECT`, a TCP
//! connection to the lab's peer, and — in a Linux guest — the network interface to set up.
//!
//! Where the disk and the peer are is the lab's business, handed over on the command line:
//! `disk=PATH` (a file of the host's for a process, the same file bind-mounted at `/dev/vda` in
//! a container, the virtio disk `/dev/vda` in a VM) and `peer=A.B.C.D` (the peer's address). A
//! process's or container's network namespace is set up by the lab before the workload starts; a
//! guest's interface only the guest can set up, so a guest's `/init` is also given
//! `net=A.B.C.D/PREFIX` and does it here, with the same `ioctl`s `ifconfig` uses.

use isolab_kernels::{Error, Service};
use std::ffi::CString;
use std::net::Ipv4Addr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

fn errno() -> Error {
    Error::Platform(std::io::Error::last_os_error().raw_os_error().unwrap_or(0) as u32)
}

/// The instance's disk, opened on first use.
pub struct Disk {
    path: Option<PathBuf>,
    fd: Option<i32>,
}

impl Disk {
    /// The disk at `path`, if the lab gave one.
    pub fn new(path: Option<PathBuf>) -> Disk {
        Disk { path, fd: None }
    }

    /// The disk's descriptor. `O_DIRECT`: every read and write goes to the device (or the
    /// file's blocks) without passing through this kernel's page cache, whose hits would
    /// measure memory, not the path to the disk.
    fn fd(&mut self) -> Result<i32, Error> {
        if let Some(fd) = self.fd {
            return Ok(fd);
        }
        let path = self.path.as_ref().ok_or(Error::Unsupported)?;
        let path = CString::new(path.as_os_str().as_bytes()).map_err(|_| Error::Platform(22))?;
        // SAFETY: a valid NUL-terminated path.
        let fd = unsafe {
            libc::open(
                path.as_ptr(),
                libc::O_RDWR | libc::O_DIRECT | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(errno());
        }
        self.fd = Some(fd);
        Ok(fd)
    }

    /// Its size: a block device's from the kernel (`BLKGETSIZE64`), a file's from `fstat`.
    pub fn bytes(&mut self) -> Result<u64, Error> {
        let fd = self.fd()?;
        // SAFETY: fstat into a zeroed, writable stat.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        if unsafe { libc::fstat(fd, &mut st) } != 0 {
            return Err(errno());
        }
        if st.st_mode & libc::S_IFMT != libc::S_IFBLK {
            return Ok(st.st_size as u64);
        }
        // _IOR(0x12, 114, size_t)
        const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;
        let mut bytes = 0u64;
        // SAFETY: BLKGETSIZE64 writes one u64 into the pointer given.
        if unsafe { libc::ioctl(fd, BLKGETSIZE64, &mut bytes) } != 0 {
            return Err(errno());
        }
        Ok(bytes)
    }

    /// Write all of `data` at `offset`.
    pub fn write(&mut self, mut offset: u64, mut data: &[u8]) -> Result<(), Error> {
        let fd = self.fd()?;
        while !data.is_empty() {
            // SAFETY: `data` is a valid buffer of its length.
            let n = unsafe { libc::pwrite(fd, data.as_ptr().cast(), data.len(), offset as i64) };
            if n <= 0 {
                return Err(if n == 0 { Error::Platform(5) } else { errno() });
            }
            data = &data[n as usize..];
            offset += n as u64;
        }
        Ok(())
    }

    /// Read exactly `data.len()` bytes at `offset`.
    pub fn read(&mut self, mut offset: u64, mut data: &mut [u8]) -> Result<(), Error> {
        let fd = self.fd()?;
        while !data.is_empty() {
            // SAFETY: `data` is a valid, writable buffer of its length.
            let n = unsafe { libc::pread(fd, data.as_mut_ptr().cast(), data.len(), offset as i64) };
            if n <= 0 {
                return Err(if n == 0 { Error::Platform(5) } else { errno() });
            }
            data = &mut data[n as usize..];
            offset += n as u64;
        }
        Ok(())
    }

    /// `fdatasync`: on a virtio disk, a flush request the device must complete before it
    /// answers; on a file, the file system's journal and the disk's write cache.
    pub fn sync(&mut self) -> Result<(), Error> {
        let fd = self.fd()?;
        // SAFETY: fdatasync on an open fd.
        if unsafe { libc::fdatasync(fd) } != 0 {
            return Err(errno());
        }
        Ok(())
    }
}

/// The connection to the lab's peer.
pub struct Net {
    peer: Option<Ipv4Addr>,
    fd: Option<i32>,
}

impl Net {
    /// The peer at `peer`, if the lab gave one.
    pub fn new(peer: Option<Ipv4Addr>) -> Net {
        Net { peer, fd: None }
    }

    /// Connect to `service` on the peer. `TCP_NODELAY`: a one-byte request goes out at once
    /// instead of waiting, by Nagle's algorithm, for more bytes or an acknowledgement.
    pub fn connect(&mut self, service: Service) -> Result<(), Error> {
        self.close();
        let peer = self.peer.ok_or(Error::Unsupported)?;
        // SAFETY: socket with constant arguments.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(errno());
        }
        self.fd = Some(fd);
        let one: libc::c_int = 1;
        // SAFETY: a valid int option value of its size.
        unsafe {
            libc::setsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_NODELAY,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        let addr = sockaddr(peer, service.port());
        // SAFETY: a valid sockaddr_in of its size.
        let r = unsafe {
            libc::connect(
                fd,
                (&addr as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        if r != 0 {
            let e = errno();
            self.close();
            return Err(e);
        }
        Ok(())
    }

    fn fd(&self) -> Result<i32, Error> {
        self.fd.ok_or(Error::Platform(libc::ENOTCONN as u32))
    }

    /// Send all of `data`.
    pub fn send(&mut self, mut data: &[u8]) -> Result<(), Error> {
        let fd = self.fd()?;
        while !data.is_empty() {
            // SAFETY: `data` is a valid buffer of its length.
            let n = unsafe { libc::send(fd, data.as_ptr().cast(), data.len(), libc::MSG_NOSIGNAL) };
            if n < 0 {
                if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(errno());
            }
            data = &data[n as usize..];
        }
        Ok(())
    }

    /// Receive exactly `data.len()` bytes; the peer closing first is `ECONNRESET`.
    pub fn recv(&mut self, mut data: &mut [u8]) -> Result<(), Error> {
        let fd = self.fd()?;
        while !data.is_empty() {
            // SAFETY: `data` is a valid, writable buffer of its length.
            let n = unsafe { libc::recv(fd, data.as_mut_ptr().cast(), data.len(), 0) };
            if n < 0 {
                if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(errno());
            }
            if n == 0 {
                return Err(Error::Platform(libc::ECONNRESET as u32));
            }
            data = &mut data[n as usize..];
        }
        Ok(())
    }

    /// Close the sending side: the peer reads end of file, and may still answer.
    pub fn finish(&mut self) -> Result<(), Error> {
        // SAFETY: shutdown on an open socket.
        if unsafe { libc::shutdown(self.fd()?, libc::SHUT_WR) } != 0 {
            return Err(errno());
        }
        Ok(())
    }

    /// Close the connection, if any.
    pub fn close(&mut self) {
        if let Some(fd) = self.fd.take() {
            // SAFETY: our socket, closed once.
            unsafe { libc::close(fd) };
        }
    }
}

fn sockaddr(ip: Ipv4Addr, port: u16) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    }
}

/// Parse `A.B.C.D/PREFIX`.
pub fn parse_net(text: &[u8]) -> Option<(Ipv4Addr, u8)> {
    let text = std::str::from_utf8(text).ok()?;
    let (ip, prefix) = text.split_once('/')?;
    let prefix: u8 = prefix.parse().ok().filter(|p| *p <= 32)?;
    Some((ip.parse().ok()?, prefix))
}

/// **In a Linux guest**: bring up `lo`, and `eth0` with `ip/prefix` — what `ifconfig eth0 ip
/// netmask … up` does, through the same `ioctl`s on an ordinary socket. A guest kernel starts
/// with every interface down and no address; without `lo` even a connection to itself fails.
pub fn configure_guest(ip: Ipv4Addr, prefix: u8) -> Result<(), (&'static str, i32)> {
    let os = || std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
    // SAFETY: socket with constant arguments.
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if sock < 0 {
        return Err(("socket for ioctls", os()));
    }
    let result = (|| {
        up(sock, "lo").map_err(|e| ("bring lo up", e))?;
        let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
        set_addr(sock, "eth0", libc::SIOCSIFADDR, ip).map_err(|e| ("set eth0's address", e))?;
        set_addr(sock, "eth0", libc::SIOCSIFNETMASK, Ipv4Addr::from(mask))
            .map_err(|e| ("set eth0's netmask", e))?;
        up(sock, "eth0").map_err(|e| ("bring eth0 up", e))
    })();
    // SAFETY: our socket, closed once.
    unsafe { libc::close(sock) };
    result
}

fn ifreq(name: &str) -> libc::ifreq {
    // SAFETY: ifreq is plain bytes; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    req
}

fn up(sock: i32, name: &str) -> Result<(), i32> {
    let mut req = ifreq(name);
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the ifreq given.
    unsafe {
        if libc::ioctl(sock, libc::SIOCGIFFLAGS, &mut req) != 0 {
            return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
        }
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        if libc::ioctl(sock, libc::SIOCSIFFLAGS, &req) != 0 {
            return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
        }
    }
    Ok(())
}

fn set_addr(sock: i32, name: &str, request: libc::c_ulong, ip: Ipv4Addr) -> Result<(), i32> {
    let mut req = ifreq(name);
    let addr = sockaddr(ip, 0);
    // SAFETY: a sockaddr_in fits the ifreq's sockaddr union member (both 16 bytes).
    unsafe {
        std::ptr::copy_nonoverlapping(
            (&addr as *const libc::sockaddr_in).cast::<u8>(),
            (&mut req.ifr_ifru.ifru_addr as *mut libc::sockaddr).cast::<u8>(),
            std::mem::size_of::<libc::sockaddr_in>(),
        );
        if libc::ioctl(sock, request, &req) != 0 {
            return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
        }
    }
    Ok(())
}
