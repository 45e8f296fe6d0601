//! The disk kernels: `disk-seq` and `disk-rand`.
//!
//! Both talk to the instance's **disk**: a file of the host's, the same size for every backend,
//! on the same host file system. A process opens the file itself, a container sees it bind-
//! mounted, a VM sees it as `/dev/vda`, a virtio block device its VMM serves from the file. The
//! bytes end on the same disk; only the path between the workload and the file differs — which
//! is what these kernels measure. Every access uses `O_DIRECT`, so neither the instance's page
//! cache nor a guest's can answer in the host disk's place: a VM that read from its own page
//! cache would seem faster than the disk for reasons that have nothing to do with isolation.
//!
//! `O_DIRECT` wants offsets, lengths and buffers aligned to the disk's logical block: offsets
//! are multiples of [`BLOCK`] and buffers come from the page-aligned arena.

use crate::common::{fill, mix, CHECK_SEED};
use crate::rng::Rng;
use crate::sum::StreamSum;
use crate::{Error, Output, Shim};

/// The unit of `O_DIRECT` transfers and of `disk-rand`'s reads: 4 KiB, a page and the logical
/// block of every current disk.
pub const BLOCK: usize = 4096;

/// `disk-seq` moves data in requests of this size (its arena): 1 MiB, large enough that the
/// per-request cost of any path (a system call, a VM exit) is small beside the transfer.
pub const CHUNK: usize = 1 << 20;

/// Seeds the read order of `disk-rand` apart from the data it wrote.
const READ_ORDER: u64 = 0xD15C_0000_0000_0001;

fn check_size(shim: &mut dyn Shim, needed: u64) -> Result<(), Error> {
    let available = shim.disk_bytes()?;
    if available < needed {
        return Err(Error::DiskTooSmall { needed, available });
    }
    Ok(())
}

/// Time one request: the nanoseconds `request` took by the instance's clock (0 when it has
/// none), and its result.
fn timed<T>(
    shim: &mut dyn Shim,
    request: impl FnOnce(&mut dyn Shim) -> Result<T, Error>,
) -> Result<(T, Option<u64>), Error> {
    let t0 = shim.now_ns();
    let out = request(shim)?;
    let t1 = shim.now_ns();
    Ok((out, t0.zip(t1).map(|(a, b)| b.saturating_sub(a))))
}

/// New data for every request, cheaply: the buffer holds one block of random bytes made once
/// (the *base*), each request's data is the base with every word XORed with that request's own
/// random key. No two requests, and no two [`BLOCK`]s or sectors on the disk, hold the same bytes,
/// so storage that takes repeated data faster (the disk under a cloud VM takes a repeated block at
/// twice the speed of a new one: with a new word at the start of each block and the rest
/// repeated, the write came out at 1.6–1.9× fio's) sees only new data, as with fio's
/// `--refill_buffers` — yet a MiB costs one XOR pass, not a MiB of random numbers.
struct Keys {
    rng: Rng,
    /// The key the buffer holds now (0: the base itself).
    current: u64,
}

impl Keys {
    fn new(seed: u64) -> Keys {
        Keys {
            rng: Rng::new(seed ^ REQUEST_KEYS),
            current: 0,
        }
    }

    /// Turn `buf` (the base XORed with the current key) into the next request's data.
    fn next(&mut self, buf: &mut [u8]) {
        let key = self.rng.next_u64();
        let change = (self.current ^ key).to_le_bytes();
        self.current = key;
        for word in buf.chunks_exact_mut(8) {
            for (b, c) in word.iter_mut().zip(change) {
                *b ^= c;
            }
        }
    }
}

/// Seeds the requests' keys apart from the base they change.
const REQUEST_KEYS: u64 = 0xB10C_0000_0000_0001;

/// Write `total` bytes of the stream of `seed` from offset 0 in [`CHUNK`]s, then sync. Returns
/// the sum of what was written, the number of requests, and the time spent in the requests and
/// the sync alone (`None` without a clock).
///
/// Between two timed requests the kernel does only what fio does: put new data in the buffer
/// ([`Keys`]). The sum of the whole stream is taken first, untimed, by making the same chunks
/// once before. Making a MiB of random numbers and summing it between requests (some 0.5 ms of
/// CPU) held the write in a container to 0.70–0.81× fio's in three validations on a busy
/// machine (`lab validate`): a task that has just used the CPU is woken later when its request
/// completes.
fn write_all(
    shim: &mut dyn Shim,
    buf: &mut [u8],
    total: u64,
    seed: u64,
) -> Result<(u64, u64, Option<u64>), Error> {
    if buf.is_empty() {
        return Err(Error::ArenaTooSmall {
            needed: BLOCK as u64,
            available: 0,
        });
    }
    // Each pass starts from the base and the first key.
    let base = |buf: &mut [u8]| {
        fill(buf, &mut Rng::new(seed));
        Keys::new(seed)
    };
    let step = buf.len();
    // The requests: (offset, length), a whole buffer each but the last.
    let chunks = || {
        let mut offset = 0;
        core::iter::from_fn(move || {
            let n = step.min(total.saturating_sub(offset) as usize);
            let at = offset;
            offset += n as u64;
            (n > 0).then_some((at, n))
        })
    };
    // The sum of everything the timed loop will write, made untimed.
    let mut sum = StreamSum::new(CHECK_SEED);
    let mut k = base(buf);
    for (_, n) in chunks() {
        k.next(&mut buf[..n]);
        sum.update(&buf[..n]);
    }
    let mut requests = 0;
    let mut ns = Some(0);
    let mut k = base(buf);
    for (offset, n) in chunks() {
        k.next(&mut buf[..n]);
        let chunk = &buf[..n];
        let ((), took) = timed(shim, |s| s.disk_write(offset, chunk))?;
        ns = ns.zip(took).map(|(a, b)| a + b);
        requests += 1;
    }
    let ((), took) = timed(shim, |s| s.disk_sync())?;
    ns = ns.zip(took).map(|(a, b)| a + b);
    Ok((sum.value(), requests, ns))
}

/// `disk-seq`'s timed reads look at one word of every this many bytes (16 in a MiB: each a
/// cache miss, since the disk wrote the data to memory behind the CPU's caches).
const GLANCE: usize = 64 * 1024;

/// Fold into `sum` the first word of every [`GLANCE`] bytes of `data`.
fn glance_at(sum: &mut StreamSum, data: &[u8]) {
    for piece in data.chunks(GLANCE) {
        sum.update(&piece[..piece.len().min(8)]);
    }
}

/// `disk-seq`: write `total` bytes (a multiple of [`BLOCK`]) sequentially, sync, read them back
/// (timed), read them again and compare (untimed), `passes` times over (the interference experiment's disk writer is this kernel
/// with many passes). Reports `write_ns` and `read_ns`, the time spent in the write requests
/// with the sync and in the read requests (see [`write_all`]: the data's making and checking
/// are in the run's whole time, not in these); the checksum covers the data read back.
#[inline(never)]
pub fn sequential(
    shim: &mut dyn Shim,
    buf: &mut [u8],
    total: u64,
    passes: u64,
    seed: u64,
) -> Result<Output, Error> {
    let len = CHUNK.min(buf.len());
    let buf = &mut buf[..len];
    check_size(shim, total)?;
    shim.mark_start();
    let (mut write_ns, mut read_ns, mut timed_all) = (0, 0, true);
    let (mut sum, mut writes) = (0, 0);
    for _ in 0..passes {
        let (written, requests, wrote_ns) = write_all(shim, buf, total, seed)?;
        // The timed reads: one request after the other, as fio reads. Summing each MiB between
        // them (some 100 µs of CPU) made the next request slower on a busy machine — a task
        // that has just used the CPU is woken later when its request completes — and the reads
        // came out at 0.6–0.7× fio's (`lab validate`). So between two requests the kernel only
        // glances at the data: one word of every GLANCE bytes.
        let mut glance = StreamSum::new(CHECK_SEED);
        let mut offset = 0;
        let mut reads_ns = Some(0);
        while offset < total {
            let n = buf.len().min((total - offset) as usize);
            let chunk = &mut buf[..n];
            let ((), took) = timed(shim, |s| s.disk_read(offset, chunk))?;
            reads_ns = reads_ns.zip(took).map(|(a, b)| a + b);
            glance_at(&mut glance, &buf[..n]);
            offset += n as u64;
        }
        // Untimed: read it all again and check every byte against what was written, and the
        // words glanced at against the timed reads': those returned the same data.
        let mut read = StreamSum::new(CHECK_SEED);
        let mut again = StreamSum::new(CHECK_SEED);
        let mut offset = 0;
        while offset < total {
            let n = buf.len().min((total - offset) as usize);
            shim.disk_read(offset, &mut buf[..n])?;
            read.update(&buf[..n]);
            glance_at(&mut again, &buf[..n]);
            offset += n as u64;
        }
        if read.value() != written || again.value() != glance.value() {
            return Err(Error::Corrupt);
        }
        match (wrote_ns, reads_ns) {
            (Some(w), Some(r)) => {
                write_ns += w;
                read_ns += r;
            }
            _ => timed_all = false,
        }
        sum = read.value();
        writes += requests;
    }
    if timed_all {
        shim.figure("write_ns", write_ns);
        shim.figure("read_ns", read_ns);
    }
    // One pass keeps the checksum every earlier version of the lab computed.
    let checksum = match passes {
        0 | 1 => mix(sum, total),
        n => mix(mix(sum, total), n),
    };
    Ok(Output {
        checksum,
        ops: 2 * writes,
        bytes: 2 * total * passes,
    })
}

/// `disk-rand`: write `total` bytes (set-up, not measured), then `reads` random [`BLOCK`]
/// reads, each timed alone. Reports `latency_p50_ns` and `latency_p99_ns`; the checksum covers
/// every block read, in order.
///
/// `arena` holds the request buffer ([`CHUNK`] bytes), then one `u64` latency per read.
#[inline(never)]
pub fn random(
    shim: &mut dyn Shim,
    arena: &mut [u8],
    total: u64,
    reads: u64,
    seed: u64,
) -> Result<Output, Error> {
    let (buf, rest) = arena.split_at_mut(CHUNK.min(arena.len()));
    let latencies = crate::common::as_words::<u64>(rest);
    let blocks = total / BLOCK as u64;
    if blocks == 0 {
        return Err(Error::DiskTooSmall {
            needed: BLOCK as u64,
            available: total,
        });
    }
    check_size(shim, total)?;
    write_all(shim, buf, total, seed)?;
    let block = &mut buf[..BLOCK];
    let mut order = Rng::new(seed ^ READ_ORDER);
    let mut sum = StreamSum::new(CHECK_SEED);
    shim.mark_start();
    for i in 0..reads as usize {
        let at = order.next_u64() % blocks * BLOCK as u64;
        let t0 = shim.now_ns().ok_or(Error::Unsupported)?;
        shim.disk_read(at, block)?;
        let t1 = shim.now_ns().ok_or(Error::Unsupported)?;
        if let Some(slot) = latencies.get_mut(i) {
            *slot = t1.saturating_sub(t0);
        }
        sum.update(block);
    }
    let n = (reads as usize).min(latencies.len());
    crate::common::report_percentiles(shim, &mut latencies[..n]);
    Ok(Output {
        checksum: mix(sum.value(), reads),
        ops: reads,
        bytes: reads * BLOCK as u64,
    })
}
