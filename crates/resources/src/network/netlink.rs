//! Just enough rtnetlink to build the lab's links: what `ip link add … type veth`, `ip addr add`
//! and `ip link set … up` send to the kernel.
//!
//! `ip` does not configure interfaces through files or `ioctl`s but by sending **messages** on a
//! `NETLINK_ROUTE` socket: a 16-byte header (`nlmsghdr`: length, type such as `RTM_NEWLINK`,
//! flags, sequence number), a fixed structure for the object (`ifinfomsg` for a link, `ifaddrmsg`
//! for an address), then attributes — type-length-value records (`rtattr`), each padded to 4
//! bytes, which may nest. The kernel answers every request that asks for it (`NLM_F_ACK`) with
//! an `NLMSG_ERROR` message whose error is 0 on success. A netlink socket belongs to the network
//! namespace of the thread that opened it, so the same code configures whichever namespace it
//! runs in ([`crate::network::netns::Netns::run`]).

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// `VETH_INFO_PEER` (linux/veth.h): inside a veth's `IFLA_INFO_DATA`, the peer's own link
/// message.
const VETH_INFO_PEER: u16 = 1;
/// Set on attributes that contain attributes.
const NLA_F_NESTED: u16 = 0x8000;

/// A message under construction: header, fixed part, attributes.
struct Message {
    buf: Vec<u8>,
    /// Offsets of the nested attributes still open, whose lengths are written when they close.
    open: Vec<usize>,
}

impl Message {
    fn new(kind: u16, flags: u16) -> Message {
        let mut m = Message {
            buf: Vec::with_capacity(256),
            open: Vec::new(),
        };
        m.put_u32(0); // length, written by `finish`
        m.put_u16(kind);
        m.put_u16(flags | libc::NLM_F_REQUEST as u16 | libc::NLM_F_ACK as u16);
        m.put_u32(1); // sequence number: one request at a time
        m.put_u32(0); // port id: 0 is the kernel
        m
    }

    fn put_u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_ne_bytes());
    }

    fn put_u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_ne_bytes());
    }

    /// `ifinfomsg`: which link (`index`, 0 for a new one) and which flags to change.
    fn link(&mut self, index: u32, flags: u32, change: u32) {
        self.buf.push(libc::AF_UNSPEC as u8);
        self.buf.push(0);
        self.put_u16(0); // device type: chosen by the kernel
        self.put_u32(index);
        self.put_u32(flags);
        self.put_u32(change);
    }

    fn pad(&mut self) {
        while self.buf.len() % 4 != 0 {
            self.buf.push(0);
        }
    }

    fn attr(&mut self, kind: u16, data: &[u8]) {
        self.put_u16((4 + data.len()) as u16);
        self.put_u16(kind);
        self.buf.extend_from_slice(data);
        self.pad();
    }

    fn attr_str(&mut self, kind: u16, s: &str) {
        let mut data = s.as_bytes().to_vec();
        data.push(0);
        self.attr(kind, &data);
    }

    fn begin(&mut self, kind: u16) {
        self.open.push(self.buf.len());
        self.put_u16(0);
        self.put_u16(kind | NLA_F_NESTED);
    }

    fn end(&mut self) {
        let start = self.open.pop().expect("a nested attribute is open");
        let len = (self.buf.len() - start) as u16;
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    }

    fn finish(mut self) -> Vec<u8> {
        let len = self.buf.len() as u32;
        self.buf[..4].copy_from_slice(&len.to_ne_bytes());
        self.buf
    }
}

/// A `NETLINK_ROUTE` socket in the calling thread's network namespace.
pub struct Rtnl {
    fd: OwnedFd,
}

impl Rtnl {
    /// Open one.
    pub fn open() -> io::Result<Rtnl> {
        // SAFETY: socket with constant arguments; the result is checked.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Rtnl { fd })
    }

    /// Send one request and wait for the kernel's acknowledgement.
    fn request(&self, message: Message, what: &str) -> io::Result<()> {
        let bytes = message.finish();
        // SAFETY: a valid buffer of its length.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), bytes.as_ptr().cast(), bytes.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut answer = [0u8; 4096];
        // SAFETY: a valid, writable buffer of its length.
        let n = unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                answer.as_mut_ptr().cast(),
                answer.len(),
                0,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        // nlmsghdr (16 bytes), then for NLMSG_ERROR a negative errno (or 0) as an i32.
        let kind = u16::from_ne_bytes([answer[4], answer[5]]);
        if n < 20 || kind != libc::NLMSG_ERROR as u16 {
            return Err(io::Error::other(format!(
                "{what}: unexpected netlink answer"
            )));
        }
        let errno = i32::from_ne_bytes([answer[16], answer[17], answer[18], answer[19]]);
        if errno == 0 {
            Ok(())
        } else {
            let e = io::Error::from_raw_os_error(-errno);
            Err(io::Error::new(e.kind(), format!("{what}: {e}")))
        }
    }

    /// `ip link add NAME type veth peer name PEER netns PEER_NS`: a veth pair — two interfaces
    /// joined like the ends of a cable, what one sends the other receives — with `name` here and
    /// `peer` in the namespace of `peer_ns`.
    pub fn add_veth(&self, name: &str, peer: &str, peer_ns: RawFd) -> io::Result<()> {
        let flags = (libc::NLM_F_CREATE | libc::NLM_F_EXCL) as u16;
        let mut m = Message::new(libc::RTM_NEWLINK, flags);
        m.link(0, 0, 0);
        m.attr_str(libc::IFLA_IFNAME, name);
        m.begin(libc::IFLA_LINKINFO);
        m.attr_str(libc::IFLA_INFO_KIND, "veth");
        m.begin(libc::IFLA_INFO_DATA);
        m.begin(VETH_INFO_PEER);
        m.link(0, 0, 0);
        m.attr_str(libc::IFLA_IFNAME, peer);
        m.attr(libc::IFLA_NET_NS_FD, &(peer_ns as u32).to_ne_bytes());
        m.end();
        m.end();
        m.end();
        self.request(m, &format!("create the veth pair {name}/{peer}"))
    }

    /// `ip addr add IP/PREFIX dev NAME`.
    pub fn add_address(&self, name: &str, ip: Ipv4Addr, prefix: u8) -> io::Result<()> {
        let index = index_of(name)?;
        let flags = (libc::NLM_F_CREATE | libc::NLM_F_EXCL) as u16;
        let mut m = Message::new(libc::RTM_NEWADDR, flags);
        // ifaddrmsg: family, prefix length, flags, scope (universe), interface.
        m.buf
            .extend_from_slice(&[libc::AF_INET as u8, prefix, 0, 0]);
        m.put_u32(index);
        m.attr(libc::IFA_LOCAL, &ip.octets());
        m.attr(libc::IFA_ADDRESS, &ip.octets());
        self.request(m, &format!("add {ip}/{prefix} to {name}"))
    }

    /// `ip link set NAME up`.
    pub fn set_up(&self, name: &str) -> io::Result<()> {
        let index = index_of(name)?;
        let mut m = Message::new(libc::RTM_NEWLINK, 0);
        let up = libc::IFF_UP as u32;
        m.link(index, up, up);
        self.request(m, &format!("bring {name} up"))
    }
}

/// The index of interface `name` in the calling thread's namespace.
pub fn index_of(name: &str) -> io::Result<u32> {
    let c = std::ffi::CString::new(name).map_err(io::Error::other)?;
    // SAFETY: a valid NUL-terminated name.
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => Err(io::Error::other(format!("no interface {name}"))),
        i => Ok(i),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::netns::Netns;
    use std::os::fd::AsFd;

    #[test]
    fn a_veth_pair_joins_two_namespaces_and_carries_a_connection() {
        let (a, b) = (Netns::new().unwrap(), Netns::new().unwrap());
        let b_fd = b.as_fd().as_raw_fd();
        a.run(|| {
            let rtnl = Rtnl::open()?;
            rtnl.add_veth("va", "vb", b_fd)?;
            rtnl.add_address("va", Ipv4Addr::new(10, 9, 0, 1), 24)?;
            rtnl.set_up("va")?;
            rtnl.set_up("lo")
        })
        .unwrap()
        .unwrap();
        b.run(|| {
            let rtnl = Rtnl::open()?;
            rtnl.add_address("vb", Ipv4Addr::new(10, 9, 0, 2), 24)?;
            rtnl.set_up("vb")
        })
        .unwrap()
        .unwrap();
        let listener = a
            .run(|| std::net::TcpListener::bind("10.9.0.1:0"))
            .unwrap()
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let sent = b
            .run(move || {
                use std::io::Write;
                let mut c = std::net::TcpStream::connect(("10.9.0.1", port))?;
                c.write_all(b"over the cable")
            })
            .unwrap();
        sent.unwrap();
        let (mut conn, from) = listener.accept().unwrap();
        assert_eq!(from.ip(), Ipv4Addr::new(10, 9, 0, 2));
        let mut got = String::new();
        std::io::Read::read_to_string(&mut conn, &mut got).unwrap();
        assert_eq!(got, "over the cable");
        // The host's namespace never saw either end.
        assert!(index_of("va").is_err() && index_of("vb").is_err());
    }

    #[test]
    fn a_refused_request_says_what_it_was() {
        let ns = Netns::new().unwrap();
        let e = ns
            .run(|| Rtnl::open()?.add_address("nope0", Ipv4Addr::LOCALHOST, 8))
            .unwrap()
            .unwrap_err();
        assert!(e.to_string().contains("nope0"), "{e}");
    }
}
