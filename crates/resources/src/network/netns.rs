//! Network namespaces the lab makes: anonymous, held by a descriptor.
//!
//! A network namespace is a private copy of the whole network stack: interfaces, addresses,
//! routes, sockets, firewall rules. `ip netns add NAME` makes one and *names* it by bind-mounting
//! it under `/run/netns/`, where it outlives every process in it. The lab never names one: it
//! keeps a descriptor (`/proc/thread-self/ns/net`, opened by the thread that made it), and the
//! kernel frees the namespace — with every interface in it, veth ends and taps included — when
//! the last descriptor closes and the last process in it is gone. A lab killed with SIGKILL
//! therefore leaves no namespace and no interface behind, and the host's own network is never
//! touched: nothing the lab does happens in the host's namespace.
//!
//! A network namespace belongs to a *thread*, not a process: `unshare(CLONE_NEWNET)` and
//! `setns(fd, CLONE_NEWNET)` move only the calling thread. So everything here runs on a
//! short-lived thread of its own, and the rest of the lab stays where it was.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

/// A network namespace made by the lab (see the module docs).
#[derive(Debug)]
pub struct Netns {
    fd: OwnedFd,
}

impl Netns {
    /// A new, empty network namespace: only a loopback interface, down.
    pub fn new() -> io::Result<Netns> {
        on_thread(|| {
            // SAFETY: unshare with a flag only; it affects this thread alone.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error());
            }
            let fd = File::open("/proc/thread-self/ns/net")?;
            Ok(Netns { fd: fd.into() })
        })?
    }

    /// Run `f` on a thread inside this namespace: the sockets it opens, the interfaces it
    /// creates, the addresses it asks about are this namespace's.
    pub fn run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> io::Result<R> {
        let fd = self.fd.as_raw_fd();
        on_thread(move || {
            // SAFETY: setns with a namespace descriptor we hold; it moves this thread alone.
            if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(f())
        })?
    }

    /// A copy of the descriptor, for a child that joins the namespace (`setns`) or a runtime
    /// given its path.
    pub fn try_clone_fd(&self) -> io::Result<OwnedFd> {
        self.fd.try_clone()
    }
}

impl AsFd for Netns {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Run `f` on a new thread and wait for it: the thread's namespaces end with it.
fn on_thread<R: Send>(f: impl FnOnce() -> R + Send) -> io::Result<R> {
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("isolab-netns".into())
            .spawn_scoped(s, f)?
            .join()
            .map_err(|_| io::Error::other("a network namespace thread panicked"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn inode(path: &str) -> u64 {
        std::fs::metadata(path).unwrap().ino()
    }

    #[test]
    fn a_new_namespace_is_not_ours_and_runs_code_inside() {
        let ns = Netns::new().unwrap();
        let ours = inode("/proc/self/ns/net");
        let inside = ns.run(|| inode("/proc/thread-self/ns/net")).unwrap();
        assert_ne!(inside, ours);
        assert_eq!(
            inside,
            File::from(ns.try_clone_fd().unwrap())
                .metadata()
                .unwrap()
                .ino()
        );
        // The lab's own thread never moved.
        assert_eq!(inode("/proc/thread-self/ns/net"), ours);
        // A fresh stack: its loopback is its first interface.
        let lo = ns
            .run(|| {
                let name = std::ffi::CString::new("lo").unwrap();
                // SAFETY: a valid NUL-terminated name.
                unsafe { libc::if_nametoindex(name.as_ptr()) }
            })
            .unwrap();
        assert_eq!(lo, 1, "loopback is interface 1 of a fresh namespace");
    }
}
