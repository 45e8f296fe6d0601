//! The peer: the far end of every network kernel, run by the lab itself.
//!
//! Two classic TCP services, each on its old port: **echo** (7) sends back every byte it
//! receives — `net-rr`'s round trips — and a **sink** (9, the port of "discard") that reads
//! until the sender closes its side, then answers with the [`StreamSum`] of everything that
//! arrived — `net-stream`'s bandwidth, and the host's own check that every byte got through
//! intact. The listening sockets are opened inside the peer's network namespace (a socket
//! belongs to the namespace it was made in); the threads that serve them can run anywhere.
//!
//! Every connection is written down ([`Received`]): who sent how many bytes, and their sum, so
//! the lab checks on its side what each instance's kernel claims to have sent.

use isolab_kernels::common::CHECK_SEED;
use isolab_kernels::sum::StreamSum;
use isolab_kernels::Service;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// What one connection brought.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Received {
    /// The instance's address.
    pub from: Ipv4Addr,
    /// Which service it talked to.
    pub service: Service,
    /// Bytes received.
    pub bytes: u64,
    /// Their [`StreamSum`] from [`CHECK_SEED`] (what a kernel's own sum starts from).
    pub sum: u64,
}

/// State the serving threads share with the lab.
#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    log: Mutex<Vec<Received>>,
    /// Connections being served (by a number of their own), so that stopping the peer can
    /// end them.
    live: Mutex<Vec<(u64, TcpStream)>>,
}

/// The running peer.
pub struct Peer {
    shared: Arc<Shared>,
    listeners: Vec<TcpListener>,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer").finish_non_exhaustive()
    }
}

/// How long a connection may stay silent before the peer gives up on it: an instance killed
/// mid-run cannot close its side, and its thread must not wait forever.
const IDLE: Duration = Duration::from_secs(120);

impl Peer {
    /// Serve the sink and the echo on `listeners` (bound to their ports, in the peer's namespace).
    pub fn serve(sink: TcpListener, echo: TcpListener) -> io::Result<Peer> {
        let shared = Arc::new(Shared::default());
        let mut threads = Vec::new();
        let mut listeners = Vec::new();
        for (listener, service) in [(sink, Service::Sink), (echo, Service::Echo)] {
            listeners.push(listener.try_clone()?);
            let shared = shared.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("isolab-peer-{}", service.port()))
                    .spawn(move || accept(listener, service, shared))?,
            );
        }
        Ok(Peer {
            shared,
            listeners,
            threads,
        })
    }

    /// Every connection from `from` that has ended, in order.
    pub fn received_from(&self, from: Ipv4Addr) -> Vec<Received> {
        let log = self.shared.log.lock().unwrap_or_else(|p| p.into_inner());
        log.iter().copied().filter(|r| r.from == from).collect()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // `shutdown` on a listening socket wakes the thread blocked in `accept`, with an error.
        for l in &self.listeners {
            shutdown(l);
        }
        for c in self
            .shared
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = c.1.shutdown(Shutdown::Both);
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn shutdown(l: &TcpListener) {
    use std::os::fd::AsRawFd;
    // SAFETY: shutdown on a socket we hold.
    unsafe { libc::shutdown(l.as_raw_fd(), libc::SHUT_RDWR) };
}

/// Accept connections until the peer stops; one thread per connection.
fn accept(listener: TcpListener, service: Service, shared: Arc<Shared>) {
    let mut workers: Vec<JoinHandle<()>> = Vec::new();
    let mut next = 0u64;
    while !shared.stop.load(Ordering::SeqCst) {
        let Ok((conn, from)) = listener.accept() else {
            continue;
        };
        let IpAddr::V4(from) = from.ip() else {
            continue;
        };
        let _ = conn.set_nodelay(true);
        let _ = conn.set_read_timeout(Some(IDLE));
        next += 1;
        let id = next;
        if let Ok(copy) = conn.try_clone() {
            shared
                .live
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((id, copy));
        }
        let shared = shared.clone();
        workers.retain(|w| !w.is_finished());
        if let Ok(w) = std::thread::Builder::new()
            .name("isolab-peer-conn".into())
            .spawn(move || serve(conn, id, from, service, shared))
        {
            workers.push(w);
        }
    }
    for w in workers {
        let _ = w.join();
    }
}

/// Serve one connection to its end, then write it down.
fn serve(mut conn: TcpStream, id: u64, from: Ipv4Addr, service: Service, shared: Arc<Shared>) {
    let mut sum = StreamSum::new(CHECK_SEED);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                sum.update(&buf[..n]);
                if service == Service::Echo && conn.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    // Written down before the sink answers: whoever holds the sink's answer (the lab, checking
    // an instance that has ended) then always finds the connection in the log.
    shared
        .log
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(Received {
            from,
            service,
            bytes: sum.bytes(),
            sum: sum.value(),
        });
    if service == Service::Sink {
        let _ = conn.write_all(&sum.value().to_le_bytes());
    }
    let _ = conn.shutdown(Shutdown::Both);
    shared
        .live
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .retain(|(n, _)| *n != id);
}
