//! virtio-net: a network card whose cable is a tap device on the host ([`isolab_resources::network::tap`]).
//!
//! Two queues: **receive** (0), where the driver keeps empty buffers for the device to fill,
//! and **transmit** (1), where it puts frames to send. Every frame, either way, starts with the
//! 12-byte `virtio_net_hdr_v1`, whose fields say what is left to do to the frame. The tap speaks
//! the same header (`IFF_VNET_HDR`), so the device passes frames through untouched:
//!
//! ```text
//!  transmit: chain of readable buffers [hdr | frame] ── writev(tap) ──► host: frame arrives on tapN
//!  receive:  host sends out of tapN ── readv(tap) into [hdr | frame] of a writable chain ──► used ring
//! ```
//!
//! One thread serves both queues. It sleeps in `poll` on the transmit queue's notification,
//! the receive queue's notification and the tap:
//!
//! * transmit notification → send every waiting frame, return the buffers, interrupt if the
//!   driver wants to know;
//! * tap readable → fill receive buffers until the tap is empty or the buffers run out; out of
//!   buffers, the thread stops watching the tap (it would wake for nothing) and re-enables the
//!   receive queue's notifications, so the driver's next refill wakes it;
//! * receive notification → the driver added buffers: watch the tap again.
//!
//! A frame the host sends while the guest has no buffer waits in the tap's queue (up to its
//! `txqueuelen`, then the host drops it): a NIC whose ring is full drops too.
//!
//! Each wake-up serves at most [`super::BUDGET`] chains per queue; with work left, the thread
//! looks at its eventfds without sleeping and comes back. A transmit chain cut short (a loop,
//! 4 GiB of buffers) is returned unsent, a receive chain cut short is returned empty: neither
//! the wire nor the guest gets a frame nobody made.
//!
//! # Offloads: fewer, larger frames
//!
//! A TCP stream cut into 1500-byte frames costs a trip through both network stacks, a ring
//! slot and a `writev` per 1.5 KB. Real NICs take the cutting over (TCP segmentation offload)
//! and compute checksums; virtio-net lets the two kernels skip both, because no wire is between
//! them. The device offers:
//!
//! * `CSUM` and `HOST_TSO4/6/ECN`: the driver may send frames whose checksum is not yet
//!   computed, and TCP segments of up to 64 KiB, described in the header (`flags`,
//!   `gso_type`, `gso_size`, `csum_start`, `csum_offset`); the host's stack, given them through
//!   the tap, finishes or cuts them only if and where it must (a local TCP socket, as the lab's
//!   peer is, takes the 64 KiB segment whole);
//! * `GUEST_CSUM` and `GUEST_TSO4/6/ECN`: the same the other way — the tap is told
//!   (`TUNSETOFFLOAD`) it may hand over such frames, so the guest receives 64 KiB segments. Its
//!   driver then posts receive buffers large enough (one chain of pages, "big packets").

use super::{
    pop, serve_queue, wait_readable, whole_chain, Activation, Counters, Interrupt, Kind, Served,
    Stop, VirtioDevice, VirtioError, Worker, BUDGET,
};
use isolab_resources::network::tap::{offload, Tap, VNET_HDR_LEN};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_ECN, VIRTIO_NET_F_GUEST_TSO4,
    VIRTIO_NET_F_GUEST_TSO6, VIRTIO_NET_F_HOST_ECN, VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6,
    VIRTIO_NET_F_MAC, VIRTIO_NET_F_STATUS, VIRTIO_NET_S_LINK_UP,
};
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};
use virtio_queue::desc::split::Descriptor;
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap};

/// Each queue's size.
pub const QUEUE_SIZE: u16 = 256;
/// Queue indices.
pub const RX: usize = 0;
/// The transmit queue.
pub const TX: usize = 1;

/// A virtio-net device on a tap.
#[derive(Debug)]
pub struct Net {
    tap: Tap,
    mac: [u8; 6],
}

impl Net {
    /// A NIC with address `mac` whose cable is `tap`.
    pub fn new(tap: &Tap, mac: [u8; 6]) -> Result<Net, VirtioError> {
        let fd = tap.try_clone_fd().map_err(VirtioError::io("dup the tap"))?;
        Ok(Net {
            tap: Tap::inherited(fd, tap.name()),
            mac,
        })
    }
}

/// The tap's offload flags for the guest features the driver accepted: what the guest can take
/// (see the module documentation).
pub fn tap_offload(features: u64) -> u32 {
    let on = |bit: u32| features & (1 << bit) != 0;
    if !on(VIRTIO_NET_F_GUEST_CSUM) {
        return 0;
    }
    let mut flags = offload::CSUM;
    for (bit, flag) in [
        (VIRTIO_NET_F_GUEST_TSO4, offload::TSO4),
        (VIRTIO_NET_F_GUEST_TSO6, offload::TSO6),
        (VIRTIO_NET_F_GUEST_ECN, offload::TSO_ECN),
    ] {
        if on(bit) {
            flags |= flag;
        }
    }
    flags
}

impl VirtioDevice for Net {
    fn kind(&self) -> Kind {
        Kind::Net
    }

    fn features(&self) -> u64 {
        [
            VIRTIO_F_VERSION_1,
            VIRTIO_RING_F_EVENT_IDX,
            VIRTIO_RING_F_INDIRECT_DESC,
            VIRTIO_NET_F_MAC,
            VIRTIO_NET_F_STATUS,
            VIRTIO_NET_F_CSUM,
            VIRTIO_NET_F_HOST_TSO4,
            VIRTIO_NET_F_HOST_TSO6,
            VIRTIO_NET_F_HOST_ECN,
            VIRTIO_NET_F_GUEST_CSUM,
            VIRTIO_NET_F_GUEST_TSO4,
            VIRTIO_NET_F_GUEST_TSO6,
            VIRTIO_NET_F_GUEST_ECN,
        ]
        .iter()
        .fold(0, |f, bit| f | 1 << bit)
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }

    /// `struct virtio_net_config`: the MAC (6 bytes), then the link status (u16: up).
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let mut config = [0u8; 8];
        config[..6].copy_from_slice(&self.mac);
        config[6..8].copy_from_slice(&(VIRTIO_NET_S_LINK_UP as u16).to_le_bytes());
        crate::linux::virtio::block::read_slice(&config, offset, data);
    }

    fn activate(&mut self, a: Activation) -> Result<Worker, VirtioError> {
        // What the host's stack may hand the guest: only what its driver said it can take.
        self.tap
            .set_offload(tap_offload(a.features))
            .map_err(|e| VirtioError::io("set the tap's offloads")(std::io::Error::other(e)))?;
        let tap = self
            .tap
            .try_clone_fd()
            .map_err(VirtioError::io("dup the tap"))?;
        let Activation {
            mem,
            queues,
            notify,
            interrupt,
            counters,
            resume,
            ..
        } = a;
        let mut queues = queues.into_iter();
        let (Some(rx), Some(tx)) = (queues.next(), queues.next()) else {
            return Err(VirtioError::QueueNotReady(TX));
        };
        let mut notify = notify.into_iter();
        let (Some(rx_notify), Some(tx_notify)) = (notify.next(), notify.next()) else {
            return Err(VirtioError::QueueNotReady(TX));
        };
        let mut net = NetQueues {
            mem,
            rx,
            tx,
            tap,
            rx_blocked: false,
        };
        let irq = interrupt.clone();
        Worker::spawn("virtio-net".into(), &irq, move |stop| {
            // Chains left on either queue when the last wake-up's budget ran out. A card
            // restored from a snapshot looks at both once before it sleeps at all.
            let (mut tx_more, mut rx_more) = (resume, resume);
            loop {
                let block = !(tx_more || rx_more);
                let ready = if net.rx_blocked {
                    wait_readable(&[stop.as_ref(), &rx_notify, &tx_notify], block)
                } else {
                    wait_readable(&[stop.as_ref(), &rx_notify, &tx_notify, &net.tap], block)
                };
                let ready = ready.map_err(|e| e.to_string())?;
                if ready[0] || stop.requested() {
                    counters.queues_at_stop(vec![
                        crate::linux::virtio::describe(&net.rx, &net.mem),
                        crate::linux::virtio::describe(&net.tx, &net.mem),
                    ]);
                    stop.park(&[&net.rx, &net.tx]);
                    return Ok(());
                }
                if ready[1] {
                    Counters::add(
                        &counters.notifications,
                        crate::linux::virtio::drain(&rx_notify),
                    );
                    net.rx_blocked = false;
                }
                if ready[2] || tx_more {
                    if ready[2] {
                        Counters::add(
                            &counters.notifications,
                            crate::linux::virtio::drain(&tx_notify),
                        );
                    }
                    let served = net.transmit(&counters, &interrupt, &stop).map_err(|e| {
                        format!(
                            "transmit: {e} ({})",
                            crate::linux::virtio::describe(&net.tx, &net.mem)
                        )
                    })?;
                    tx_more = served.more;
                }
                rx_more = !net.rx_blocked
                    && net.receive(&counters, &interrupt, &stop).map_err(|e| {
                        format!(
                            "receive: {e} ({})",
                            crate::linux::virtio::describe(&net.rx, &net.mem)
                        )
                    })?;
            }
        })
    }
}

/// The device thread's side: both queues and the tap.
pub struct NetQueues {
    mem: GuestMemoryMmap,
    rx: Queue,
    tx: Queue,
    tap: OwnedFd,
    /// No receive buffers: the tap is not watched until the driver adds some.
    pub rx_blocked: bool,
}

/// The guest's buffers of one chain as `iovec`s, if every buffer lies in guest RAM and goes the
/// expected direction.
fn iovecs(mem: &GuestMemoryMmap, descs: &[Descriptor], writable: bool) -> Option<Vec<libc::iovec>> {
    descs
        .iter()
        .map(|d| {
            if d.is_write_only() != writable {
                return None;
            }
            let slice = mem.get_slice(d.addr(), d.len() as usize).ok()?;
            Some(libc::iovec {
                iov_base: slice.ptr_guard_mut().as_ptr().cast(),
                iov_len: d.len() as usize,
            })
        })
        .collect()
}

impl NetQueues {
    /// Send the frames waiting on the transmit queue, at most [`BUDGET`] of them.
    pub fn transmit(
        &mut self,
        counters: &Counters,
        irq: &Interrupt,
        stop: &Stop,
    ) -> Result<Served, VirtioError> {
        let (mem, tap) = (&self.mem, &self.tap);
        let served = serve_queue(&mut self.tx, mem, stop, |chain| {
            // A chain cut short would put on the wire a frame the guest never made.
            let Some(descs) = whole_chain(chain) else {
                Counters::add(&counters.malformed, 1);
                return 0;
            };
            let total: u64 = descs.iter().map(|d| d.len() as u64).sum();
            match iovecs(mem, &descs, false) {
                Some(iov) if total > VNET_HDR_LEN as u64 => {
                    // SAFETY: each iovec covers guest RAM checked by `get_slice`, mapped for
                    // the VMM's lifetime; writev only reads it.
                    let n =
                        unsafe { libc::writev(tap.as_raw_fd(), iov.as_ptr(), iov.len() as i32) };
                    // A frame the host cannot take now (EAGAIN) is dropped, as a busy wire drops.
                    let _ = n;
                    Counters::add(&counters.requests, 1);
                }
                _ => Counters::add(&counters.malformed, 1),
            }
            // Transmit buffers are only read: nothing written into the chain.
            0
        })?;
        if served.used > 0 && !stop.disowned() && self.tx.needs_notification(mem)? {
            irq.used_buffers();
        }
        Ok(served)
    }

    /// Fill receive buffers with frames from the tap, until it is empty, the buffers run out,
    /// or [`BUDGET`] chains are done; true in the last case (frames and buffers may be left).
    pub fn receive(
        &mut self,
        counters: &Counters,
        irq: &Interrupt,
        stop: &Stop,
    ) -> Result<bool, VirtioError> {
        let mut used = false;
        let mut budget = BUDGET;
        let more = loop {
            // A pause (a snapshot) takes no new buffer; a request boundary is here.
            if stop.requested() {
                break false;
            }
            if budget == 0 {
                break true;
            }
            budget -= 1;
            let Some(chain) = pop(&mut self.rx, &self.mem)? else {
                // Out of buffers: ask to be told when the driver adds some (checking once more
                // for buffers added meanwhile), and stop watching the tap until then.
                if self.rx.enable_notification(&self.mem)? {
                    continue;
                }
                self.rx_blocked = true;
                break false;
            };
            let head = chain.head_index();
            // A chain cut short, or one the device cannot fill: give it back empty.
            let iov = whole_chain(chain).and_then(|descs| {
                let total: u64 = descs.iter().map(|d| d.len() as u64).sum();
                iovecs(&self.mem, &descs, true)
                    .filter(|_| total >= VNET_HDR_LEN as u64)
                    .map(|iov| (descs, iov))
            });
            let Some((descs, iov)) = iov else {
                Counters::add(&counters.malformed, 1);
                if stop.disowned() {
                    break false;
                }
                self.rx.add_used(&self.mem, head, 0)?;
                used = true;
                continue;
            };
            if stop.requested() {
                // Stopping before the frame is read: leave it in the tap, and the buffer on the
                // ring (a pause hands the queue back with nothing taken and left unanswered).
                self.rx.go_to_previous_position();
                break false;
            }
            // SAFETY: as in `transmit`; readv writes only within the guest's buffers.
            let n = unsafe { libc::readv(self.tap.as_raw_fd(), iov.as_ptr(), iov.len() as i32) };
            if n < 0 {
                // Nothing to read (EAGAIN), or the tap is gone: the chain goes back unused.
                self.rx.go_to_previous_position();
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::WouldBlock && e.kind() != io::ErrorKind::Interrupted {
                    self.rx_blocked = true;
                }
                break false;
            }
            // The tap writes the 10-byte legacy header and skips the last two bytes: the
            // device fills in `num_buffers` (one buffer per frame without MRG_RXBUF).
            write_at(&self.mem, &descs, 10, &1u16.to_le_bytes());
            if stop.disowned() {
                break false;
            }
            // readv wrote at most the chain's length, which virtio-queue keeps within a u32.
            let Ok(written) = u32::try_from(n) else {
                break false;
            };
            self.rx.add_used(&self.mem, head, written)?;
            Counters::add(&counters.requests, 1);
            used = true;
        };
        if used && !stop.disowned() && self.rx.needs_notification(&self.mem)? {
            irq.used_buffers();
        }
        Ok(more)
    }
}

/// Write `bytes` at logical offset `at` of a chain's buffers.
fn write_at(mem: &GuestMemoryMmap, descs: &[Descriptor], mut at: usize, mut bytes: &[u8]) {
    use vm_memory::{Address, Bytes};
    for d in descs {
        let len = d.len() as usize;
        if at >= len {
            at -= len;
            continue;
        }
        let n = (len - at).min(bytes.len());
        let _ = mem.write_slice(&bytes[..n], d.addr().unchecked_add(at as u64));
        bytes = &bytes[n..];
        at = 0;
        if bytes.is_empty() {
            return;
        }
    }
}

impl AsRawFd for NetQueues {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.tap.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linux::virtio::hostile::{frame, packet_socket, send_to_guest, MAC};
    use isolab_resources::network::tap::in_new_netns;
    use std::sync::Arc;
    use virtio_bindings::virtio_ring::VRING_DESC_F_WRITE;
    use virtio_queue::desc::RawDescriptor;
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Bytes, GuestAddress};
    use vmm_sys_util::eventfd::EventFd;

    fn irq() -> (Interrupt, Arc<Counters>) {
        let counters = Arc::new(Counters::default());
        (
            Interrupt::new(
                EventFd::new(libc::EFD_NONBLOCK).unwrap(),
                Arc::clone(&counters),
            ),
            counters,
        )
    }

    fn memory() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap()
    }

    fn tap() -> Tap {
        // No IPv6 on new interfaces: its router solicitations would be frames on the tap too.
        let _ = std::fs::write("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1");
        let tap = Tap::create("isolab-vn0").unwrap();
        tap.set_up().unwrap();
        tap
    }

    #[test]
    fn a_transmitted_frame_comes_out_of_the_tap() {
        in_new_netns(|| {
            let tap = tap();
            let sock = packet_socket(tap.index().unwrap(), false);
            let mem = memory();
            let txq = MockSplitQueue::create(&mem, GuestAddress(0x1000), 16);
            let rxq = MockSplitQueue::create(&mem, GuestAddress(0x8000), 16);
            // Header and frame in two buffers, as Linux's driver often sends them.
            let f = frame(0x42, 100);
            mem.write_slice(&[0u8; VNET_HDR_LEN], GuestAddress(0x10_0000))
                .unwrap();
            mem.write_slice(&f, GuestAddress(0x11_0000)).unwrap();
            txq.add_desc_chains(
                &[
                    RawDescriptor::from(Descriptor::new(0x10_0000, 12, 1, 1)),
                    RawDescriptor::from(Descriptor::new(0x11_0000, f.len() as u32, 0, 0)),
                ],
                0,
            )
            .unwrap();
            let mut net = NetQueues {
                mem: mem.clone(),
                rx: rxq.create_queue().unwrap(),
                tx: txq.create_queue().unwrap(),
                tap: tap.try_clone_fd().unwrap(),
                rx_blocked: false,
            };
            let (irq, counters) = irq();
            let stop = Stop::new().unwrap();
            net.transmit(&counters, &irq, &stop).unwrap();
            assert_eq!(txq.used().idx().load(), 1, "the buffers are returned");
            assert_eq!(Counters::get(&counters.requests), 1);
            let mut buf = [0u8; 2048];
            // SAFETY: a valid buffer.
            let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            assert_eq!(
                &buf[..n as usize],
                &f[..],
                "the frame, without the virtio header"
            );
        });
    }

    #[test]
    fn a_frame_sent_to_the_tap_fills_a_receive_buffer() {
        in_new_netns(|| {
            let tap = tap();
            let index = tap.index().unwrap();
            let sock = packet_socket(index, false);
            let mem = memory();
            let txq = MockSplitQueue::create(&mem, GuestAddress(0x1000), 16);
            let rxq = MockSplitQueue::create(&mem, GuestAddress(0x8000), 16);
            let w = VRING_DESC_F_WRITE as u16;
            // Two receive buffers of 1526 bytes (header + a full frame).
            rxq.add_desc_chains(
                &[
                    RawDescriptor::from(Descriptor::new(0x20_0000, 1526, w, 0)),
                    RawDescriptor::from(Descriptor::new(0x21_0000, 1526, w, 0)),
                ],
                0,
            )
            .unwrap();
            mem.write_slice(&[0xee; 12], GuestAddress(0x20_0000))
                .unwrap();
            let f = frame(0x17, 100);
            send_to_guest(&sock, index, &f);
            let mut net = NetQueues {
                mem: mem.clone(),
                rx: rxq.create_queue().unwrap(),
                tx: txq.create_queue().unwrap(),
                tap: tap.try_clone_fd().unwrap(),
                rx_blocked: false,
            };
            let (irq, counters) = irq();
            // The frame is in the tap's queue once poll says so.
            wait_readable(&[&net], true).unwrap();
            let stop = Stop::new().unwrap();
            assert!(!net.receive(&counters, &irq, &stop).unwrap(), "work left");
            assert_eq!(rxq.used().idx().load(), 1, "one frame, one buffer");
            let used = rxq.used().ring().ref_at(0).unwrap().load();
            assert_eq!(used.len() as usize, VNET_HDR_LEN + f.len());
            let mut got = vec![0u8; VNET_HDR_LEN + f.len()];
            mem.read_slice(&mut got, GuestAddress(0x20_0000)).unwrap();
            assert_eq!(&got[..10], &[0; 10], "no offload hints");
            assert_eq!(&got[10..12], &[1, 0], "num_buffers = 1");
            assert_eq!(&got[12..], &f[..]);
            // The tap is empty now: the second buffer waits, and the device watches on.
            assert!(!net.rx_blocked);
            assert_eq!(Counters::get(&counters.interrupts), 1);
        });
    }

    #[test]
    fn the_tap_takes_only_the_offloads_the_guest_accepted() {
        assert_eq!(tap_offload(0), 0);
        let tso = 1 << VIRTIO_NET_F_GUEST_TSO4 | 1 << VIRTIO_NET_F_GUEST_TSO6;
        assert_eq!(tap_offload(tso), 0, "segments need checksum offload too");
        let csum = 1 << VIRTIO_NET_F_GUEST_CSUM;
        assert_eq!(tap_offload(csum), offload::CSUM);
        assert_eq!(
            tap_offload(csum | tso),
            offload::CSUM | offload::TSO4 | offload::TSO6
        );
        in_new_netns(move || {
            let tap = Tap::create("isolab-vn2").unwrap();
            tap.set_offload(tap_offload(csum | tso)).unwrap();
        });
    }

    #[test]
    fn the_config_space_has_the_mac_and_link_up() {
        in_new_netns(|| {
            let tap = Tap::create("isolab-vn1").unwrap();
            let net = Net::new(&tap, MAC).unwrap();
            let mut c = [0u8; 8];
            net.read_config(0, &mut c);
            assert_eq!(&c[..6], &MAC);
            assert_eq!(&c[6..], &[1, 0]);
            assert_eq!(net.queue_max_sizes().len(), 2);
        });
    }
}
