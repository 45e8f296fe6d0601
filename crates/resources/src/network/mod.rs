//! The lab's own network: a peer in a namespace of its own, and a link to it for each instance
//! that runs a network kernel.
//!
//! ```text
//!   peer namespace (one per lab)                  an instance's namespace (one per instance)
//!  ┌───────────────────────────────────────┐     ┌──────────────────────────────┐
//!  │ peer: echo :7, sink :9 (lab threads)   │     │ workload (process/container) │
//!  │ v0  10.64.0.1/24 ──────── veth ───────────────── eth0 10.64.0.2/24          │
//!  │ v1  10.64.1.1/24 ──────── veth ─────── …       └──────────────────────────────┘
//!  │ t2  10.64.2.1/24 ──────── tap ──── a VMM's virtio-net ──── guest eth0 10.64.2.2/24
//!  └───────────────────────────────────────┘
//! ```
//!
//! Each instance gets a /24 of its own and a point-to-point link to the peer: a **veth pair**
//! for a process or a container (one end in the peer's namespace, `eth0` in the instance's),
//! the same link Docker gives a container on its default bridge — without the bridge and
//! without NAT, whose costs would be Docker's, not the isolation model's; a **tap** device for
//! a VM, whose other side is the VMM's virtual network card. gVisor's `runsc` takes over the veth
//! end of its namespace with its own network stack, in user space. Every namespace here is
//! anonymous ([`netns`]): when the lab ends, however it ends, the kernel removes them and every
//! interface in them, and the host's own network is never touched.

pub mod netlink;
pub mod netns;
pub mod peer;
pub mod tap;

use netlink::Rtnl;
use netns::Netns;
use peer::{Peer, Received};
use std::net::{Ipv4Addr, TcpListener};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicU32, Ordering};

/// Errors of the lab's network.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// The lab may not make network namespaces or interfaces.
    #[error(
        "the network kernels need CAP_NET_ADMIN to build the lab's own network (run the lab as \
         root; `lab doctor` says what runs without it): {0}"
    )]
    NotPermitted(std::io::Error),
    /// A step of building it failed.
    #[error("{step}: {source}")]
    Step {
        /// What the lab was doing.
        step: &'static str,
        /// Why it failed.
        source: std::io::Error,
    },
}

fn step(step: &'static str) -> impl FnOnce(std::io::Error) -> NetworkError {
    move |source| {
        if source.kind() == std::io::ErrorKind::PermissionDenied {
            NetworkError::NotPermitted(source)
        } else {
            NetworkError::Step { step, source }
        }
    }
}

/// The length of every link's prefix: a /24 per instance.
pub const PREFIX: u8 = 24;

/// The lab's network: the peer's namespace, the peer, and a counter of links.
#[derive(Debug)]
pub struct Network {
    ns: Netns,
    peer: Peer,
    next: AtomicU32,
}

/// The addresses of link `n`: the peer's end and the instance's, in 10.64.0.0/10 (16384 links).
pub fn addresses(n: u32) -> (Ipv4Addr, Ipv4Addr) {
    let n = n % (1 << 14);
    let (hi, lo) = (64 + (n >> 8) as u8, (n & 0xff) as u8);
    (Ipv4Addr::new(10, hi, lo, 1), Ipv4Addr::new(10, hi, lo, 2))
}

impl Network {
    /// Make the peer's namespace and start the peer in it.
    pub fn start() -> Result<Network, NetworkError> {
        let ns = Netns::new().map_err(step("make the peer's network namespace"))?;
        let (sink, echo) = ns
            .run(|| -> std::io::Result<(TcpListener, TcpListener)> {
                Rtnl::open()?.set_up("lo")?;
                let any = Ipv4Addr::UNSPECIFIED;
                Ok((
                    TcpListener::bind((any, isolab_kernels::Service::Sink.port()))?,
                    TcpListener::bind((any, isolab_kernels::Service::Echo.port()))?,
                ))
            })
            .map_err(step("start the peer"))?
            .map_err(step("start the peer"))?;
        let peer = Peer::serve(sink, echo).map_err(step("start the peer"))?;
        Ok(Network {
            ns,
            peer,
            next: AtomicU32::new(0),
        })
    }

    /// A new namespace with a veth link to the peer: `eth0` there, configured and up.
    pub fn link(&self) -> Result<Link, NetworkError> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let (peer_ip, ip) = addresses(n);
        let ns = Netns::new().map_err(step("make the instance's network namespace"))?;
        let ns_fd = ns.as_fd().as_raw_fd();
        let outside = format!("v{n}");
        self.ns
            .run(|| -> std::io::Result<()> {
                let rtnl = Rtnl::open()?;
                rtnl.add_veth(&outside, "eth0", ns_fd)?;
                rtnl.add_address(&outside, peer_ip, PREFIX)?;
                rtnl.set_up(&outside)
            })
            .map_err(step("link the instance to the peer"))?
            .map_err(step("link the instance to the peer"))?;
        ns.run(|| -> std::io::Result<()> {
            let rtnl = Rtnl::open()?;
            rtnl.add_address("eth0", ip, PREFIX)?;
            rtnl.set_up("eth0")?;
            rtnl.set_up("lo")
        })
        .map_err(step("configure the instance's eth0"))?
        .map_err(step("configure the instance's eth0"))?;
        Ok(Link { ns, ip, peer_ip })
    }

    /// A tap in the peer's namespace, addressed and up: a VM's cable to the peer. Its other end
    /// is the descriptor, which the VMM (or QEMU) holds; the guest sets up its own `eth0` with
    /// the instance's address (see [`TapLink`]).
    pub fn tap_link(&self) -> Result<TapLink, NetworkError> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let (peer_ip, ip) = addresses(n);
        let name = format!("t{n}");
        let tap = self
            .ns
            .run(|| -> std::io::Result<tap::Tap> {
                let tap = tap::Tap::create(&name).map_err(std::io::Error::other)?;
                Rtnl::open()?.add_address(&name, peer_ip, PREFIX)?;
                tap.set_up().map_err(std::io::Error::other)?;
                Ok(tap)
            })
            .map_err(step("make the VM's tap"))?
            .map_err(step("make the VM's tap"))?;
        Ok(TapLink { tap, ip, peer_ip })
    }

    /// What the peer received from `ip`, connection by connection.
    pub fn received_from(&self, ip: Ipv4Addr) -> Vec<Received> {
        self.peer.received_from(ip)
    }

    /// The peer's namespace (a VM's tap goes there).
    pub fn peer_namespace(&self) -> &Netns {
        &self.ns
    }

    /// Start `command` beside the peer, in its namespace: a server of the field's tools
    /// (`netserver`, `iperf3 -s`) that the instances reach over the same links as the peer
    /// (`lab validate`). Between `fork` and `exec` the child joins the namespace and asks to be
    /// killed when the thread that started it ends (`PR_SET_PDEATHSIG`): a lab killed with
    /// SIGKILL takes its servers with it. The caller stops it when done.
    pub fn spawn_beside_peer(
        &self,
        command: &mut std::process::Command,
    ) -> std::io::Result<std::process::Child> {
        use std::os::unix::process::CommandExt;
        let fd = self.ns.as_fd().as_raw_fd();
        // SAFETY: between fork and exec the closure makes only system calls (setns, prctl) on
        // a descriptor that stays open while `self` lives, which outlasts the spawn.
        unsafe {
            command.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0
                    || libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            })
        };
        command.spawn()
    }

    /// True once something in the peer's namespace accepts TCP connections on `port`.
    pub fn peer_listens(&self, port: u16) -> bool {
        self.ns
            .run(|| std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok())
            .unwrap_or(false)
    }
}

/// A VM's link to the peer: the tap (its cable), the address its guest sets up, the peer's.
#[derive(Debug)]
pub struct TapLink {
    /// The tap, in the peer's namespace; its descriptor goes to the VMM.
    pub tap: tap::Tap,
    /// The guest's address.
    pub ip: Ipv4Addr,
    /// The peer's address on this link.
    pub peer_ip: Ipv4Addr,
}

/// One instance's link to the peer: its network namespace, its address, the peer's.
#[derive(Debug)]
pub struct Link {
    /// The instance's network namespace, `eth0` up and addressed.
    pub ns: Netns,
    /// The instance's address.
    pub ip: Ipv4Addr,
    /// The peer's address on this link.
    pub peer_ip: Ipv4Addr,
}

#[cfg(test)]
mod tests {
    use super::*;
    use isolab_kernels::common::CHECK_SEED;
    use isolab_kernels::sum::StreamSum;
    use isolab_kernels::Service;
    use std::io::{Read, Write};

    #[test]
    fn links_get_distinct_subnets() {
        assert_eq!(
            addresses(0),
            (Ipv4Addr::new(10, 64, 0, 1), Ipv4Addr::new(10, 64, 0, 2))
        );
        assert_eq!(addresses(257).1, Ipv4Addr::new(10, 65, 1, 2));
        assert_eq!(addresses(16383).0, Ipv4Addr::new(10, 127, 255, 1));
    }

    #[test]
    fn an_instance_reaches_the_sink_and_the_echo_over_its_link() {
        let net = Network::start().unwrap();
        let link = net.link().unwrap();
        let peer = link.peer_ip;
        let data: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        let (answer, echoed) = link
            .ns
            .run(|| -> std::io::Result<(u64, Vec<u8>)> {
                let mut sink = std::net::TcpStream::connect((peer, Service::Sink.port()))?;
                sink.write_all(&data)?;
                sink.shutdown(std::net::Shutdown::Write)?;
                let mut sum = [0u8; 8];
                sink.read_exact(&mut sum)?;
                let mut echo = std::net::TcpStream::connect((peer, Service::Echo.port()))?;
                echo.write_all(b"ping")?;
                let mut back = vec![0u8; 4];
                echo.read_exact(&mut back)?;
                Ok((u64::from_le_bytes(sum), back))
            })
            .unwrap()
            .unwrap();
        let mut expected = StreamSum::new(CHECK_SEED);
        expected.update(&data);
        assert_eq!(answer, expected.value());
        assert_eq!(echoed, b"ping");
        // The sink wrote its connection down before answering; the echo's is written down
        // once it ends, which its thread sees a moment after the close (longer on a loaded
        // machine: this waits up to 10 s for it).
        let mut log = Vec::new();
        for _ in 0..1000 {
            log = net.received_from(link.ip);
            if log.len() == 2 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(log.len(), 2, "{log:?}");
        assert_eq!((log[0].bytes, log[0].sum), (100_000, expected.value()));
        drop(net);
    }
}
