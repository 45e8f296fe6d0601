//! The network kernels: `net-stream` and `net-rr`.
//!
//! Both talk TCP to the lab's **peer**, a small server the lab runs in a network namespace of
//! its own: a sink that sums what it receives ([`Service::Sink`]) and an echo
//! ([`Service::Echo`]). Every backend reaches it over a link of its own kind — a veth pair for a
//! process or a container, the runtime's choice for gVisor (its own network stack in user
//! space), a tap device behind a virtio network card for a VM — so what differs between them is
//! the path a packet takes, which is what these kernels measure.

use crate::common::{fill, mix, CHECK_SEED};
use crate::rng::Rng;
use crate::sum::StreamSum;
use crate::{Error, Output, Service, Shim};

/// `net-stream` sends in pieces of this size: 64 KiB, a large `send(2)` (the kernel cuts it into
/// segments; a virtio NIC may take it whole, with segmentation offload).
pub const CHUNK: usize = 64 * 1024;

/// The chunks `net-stream` sends: one block of random bytes made once, whose first word is a
/// new random number in every chunk, so that no two chunks are alike and a chunk lost or sent
/// twice changes the peer's sum. Making a whole chunk of random bytes costs some 30 µs
/// (2 GB/s), half the time a 64 KiB send takes over a veth; one word costs nothing.
struct Chunks {
    keys: Rng,
    sent: u64,
    total: u64,
}

impl Chunks {
    fn new(seed: u64, total: u64) -> Chunks {
        Chunks {
            keys: Rng::new(seed ^ KEYS),
            sent: 0,
            total,
        }
    }

    /// Make `buf` the next chunk and return its length; 0 when all `total` bytes are made.
    fn next(&mut self, buf: &mut [u8]) -> usize {
        let n = buf.len().min((self.total - self.sent) as usize);
        let key = self.keys.next_u64().to_le_bytes();
        let k = n.min(key.len());
        buf[..k].copy_from_slice(&key[..k]);
        self.sent += n as u64;
        n
    }
}

/// Seeds the first words of `net-stream`'s chunks apart from the block they start.
const KEYS: u64 = 0x57E4_0000_0000_0001;

/// `net-stream`: send `total` bytes to the sink, close the sending side, and wait for the
/// sink's sum of what it received; a sum that differs is [`Error::Corrupt`]. The time runs
/// until that answer: everything sent has arrived.
///
/// The stream's bytes and their sum are made **before** the clock starts (see [`Chunks`]): in
/// the timed loop the kernel only sends, as iperf3 does. Made inside it, at 2 GB/s, they held
/// a 1 GiB/s link to 0.55× of iperf3's figure on the same veth (`lab validate` found it).
#[inline(never)]
pub fn stream(shim: &mut dyn Shim, buf: &mut [u8], total: u64, seed: u64) -> Result<Output, Error> {
    let len = CHUNK.min(buf.len());
    let buf = &mut buf[..len];
    if buf.is_empty() {
        return Err(Error::ArenaTooSmall {
            needed: CHUNK as u64,
            available: 0,
        });
    }
    fill(buf, &mut Rng::new(seed));
    // The sum of the whole stream, untimed: the same chunks, made a first time.
    let mut sum = StreamSum::new(CHECK_SEED);
    let mut chunks = Chunks::new(seed, total);
    loop {
        let n = chunks.next(buf);
        if n == 0 {
            break;
        }
        sum.update(&buf[..n]);
    }
    shim.net_connect(Service::Sink)?;
    shim.mark_start();
    let mut chunks = Chunks::new(seed, total);
    let mut sends = 0;
    loop {
        let n = chunks.next(buf);
        if n == 0 {
            break;
        }
        shim.net_send(&buf[..n])?;
        sends += 1;
    }
    shim.net_finish()?;
    let mut answer = [0u8; 8];
    shim.net_recv(&mut answer)?;
    shim.net_close();
    if u64::from_le_bytes(answer) != sum.value() {
        return Err(Error::Corrupt);
    }
    Ok(Output {
        checksum: mix(sum.value(), total),
        ops: sends,
        bytes: total,
    })
}

/// The untimed round trips `net-rr` makes before its `round_trips` timed ones: a tenth as many.
/// The lab's peer receives one byte in each of both.
pub fn warm_up_round_trips(round_trips: u64) -> u64 {
    round_trips / 10
}

/// Seeds `net-rr`'s warm-up requests apart from its measured ones.
const WARM_UP: u64 = 0x3A2B_0000_0000_0001;

/// `net-rr`: after a tenth as many untimed round trips (a warm-up), `round_trips` times, send
/// one byte to the echo and wait for it to come back; each round trip timed alone. Reports `latency_p50_ns` and `latency_p99_ns`. `arena` holds one
/// `u64` latency per round trip.
#[inline(never)]
pub fn request_response(
    shim: &mut dyn Shim,
    arena: &mut [u8],
    round_trips: u64,
    seed: u64,
) -> Result<Output, Error> {
    let latencies = crate::common::as_words::<u64>(arena);
    shim.net_connect(Service::Echo)?;
    // Warm-up, untimed and outside the checksum: a tenth as many round trips again. The echo
    // that answers is a thread the peer starts for each connection, new to the scheduler, and
    // until the scheduler has learnt where to wake it and its client the first round trips are
    // slow: in 4 of 9 runs here the first tenth took 1.2–3× as long as the rest. netperf, the
    // field's tool, talks to a `netserver` that has already served its control connection, so
    // this is the like-for-like start. (What had held net-rr to 0.73–0.89× netperf's
    // transactions/s on an idle machine was where the scheduler put the two ends, not this:
    // see `lab validate`'s placement.)
    let mut warm = Rng::new(seed ^ WARM_UP);
    for _ in 0..warm_up_round_trips(round_trips) {
        let request = [warm.next_u64() as u8];
        let mut response = [0u8];
        shim.net_send(&request)?;
        shim.net_recv(&mut response)?;
        if response != request {
            shim.net_close();
            return Err(Error::Corrupt);
        }
    }
    shim.mark_start();
    let mut rng = Rng::new(seed);
    let mut sum = StreamSum::new(CHECK_SEED);
    for i in 0..round_trips as usize {
        let request = [rng.next_u64() as u8];
        let mut response = [0u8];
        let t0 = shim.now_ns().ok_or(Error::Unsupported)?;
        shim.net_send(&request)?;
        shim.net_recv(&mut response)?;
        let t1 = shim.now_ns().ok_or(Error::Unsupported)?;
        if response != request {
            shim.net_close();
            return Err(Error::Corrupt);
        }
        if let Some(slot) = latencies.get_mut(i) {
            *slot = t1.saturating_sub(t0);
        }
        sum.update(&response);
    }
    shim.net_close();
    let n = (round_trips as usize).min(latencies.len());
    crate::common::report_percentiles(shim, &mut latencies[..n]);
    Ok(Output {
        checksum: mix(sum.value(), round_trips),
        ops: round_trips,
        bytes: 2 * round_trips,
    })
}
