//! The compute kernels: `cpu`, `mem`, `random`, `syscall` and `io` (the disk and network ones
//! are [`crate::disk`] and [`crate::net`]).
//!
//! Each public kernel function is `#[inline(never)]`: it stays one function in both programs that
//! link this crate, so the same machine code runs in a process, a container and a microVM, and a
//! student can find it by name in a disassembly of either binary.

use crate::common::{fill, mix, CHECK_SEED};
use crate::rng::Rng;
use crate::sum::StreamSum;
use crate::{Error, Output, Shim};

/// The `io` kernel moves data in chunks of this size (its whole arena).
pub const IO_CHUNK: usize = 64 * 1024;

/// `cpu`: `iters` rounds of integer work (xorshift, rotate, multiply) interleaved with a chaotic
/// floating-point recurrence (the logistic map). The logistic map amplifies any difference in
/// rounding, so a checksum match also proves identical floating-point behaviour.
#[inline(never)]
pub fn cpu(iters: u64, seed: u64) -> Output {
    let mut x = seed | 1;
    let mut acc = CHECK_SEED;
    let mut f = 0.123_456_789_f64;
    for i in 0..iters {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        acc = acc
            .rotate_left((i & 63) as u32)
            .wrapping_add(x)
            .wrapping_mul(0x0100_0000_01b3);
        f = 3.9 * f * (1.0 - f);
        if i & 1023 == 0 {
            acc = mix(acc, f.to_bits());
        }
    }
    Output {
        checksum: mix(acc, f.to_bits()),
        ops: iters,
        bytes: 0,
    }
}

/// Split the arena into STREAM's three arrays a, b, c.
fn triad_arrays(words: &mut [f64]) -> (&mut [f64], &mut [f64], &mut [f64]) {
    let n = words.len() / 3;
    let (a, rest) = words.split_at_mut(n);
    let (b, rest) = rest.split_at_mut(n);
    (a, b, &mut rest[..n])
}

/// `mem` set-up: write every element, which makes the kernel (or hypervisor) back every page.
#[inline(never)]
pub fn mem_init(words: &mut [f64]) {
    let (a, b, c) = triad_arrays(words);
    for (i, ((a, b), c)) in a.iter_mut().zip(b.iter_mut()).zip(c.iter_mut()).enumerate() {
        *a = 0.0;
        *b = i as f64;
        *c = (i & 0xff) as f64;
    }
}

/// `mem`: `passes` of the STREAM triad `a[i] = b[i] + s * c[i]`, which reads two arrays and
/// writes one: 24 bytes per element move between the core and memory.
#[inline(never)]
pub fn mem_triad(words: &mut [f64], passes: u64) -> Output {
    let (a, b, c) = triad_arrays(words);
    let n = a.len();
    let mut acc = CHECK_SEED;
    for pass in 0..passes {
        // A different scalar each pass, so no pass repeats another and none can be skipped.
        let s = 1.0 + pass as f64;
        for ((a, b), c) in a.iter_mut().zip(b.iter()).zip(c.iter()) {
            *a = *b + s * *c;
        }
        if n > 0 {
            acc = mix(acc, a[(pass as usize * 7919) % n].to_bits());
        }
    }
    Output {
        checksum: acc,
        ops: passes * n as u64,
        bytes: passes * n as u64 * 24,
    }
}

/// Words per node of the `random` kernel: one 64-byte cache line, so every hop is a fresh line.
pub(crate) const NODE_WORDS: usize = 8;

/// `random` set-up: link the cache lines of the arena into one random cycle (Sattolo's algorithm
/// makes a single cycle through all nodes, so the chase visits the whole working set).
/// Returns the number of nodes.
#[inline(never)]
pub fn random_init(words: &mut [u64], seed: u64) -> usize {
    let nodes = words.len() / NODE_WORDS;
    if nodes == 0 {
        return 0;
    }
    for i in 0..nodes {
        words[i * NODE_WORDS] = i as u64;
    }
    let mut rng = Rng::new(seed);
    for i in (1..nodes).rev() {
        let j = rng.below(i as u64) as usize;
        words.swap(i * NODE_WORDS, j * NODE_WORDS);
    }
    nodes
}

/// `random`: `accesses` dependent loads along the cycle. Each load's address comes from the
/// previous load, so the CPU cannot overlap them: the time per access is the full latency of a
/// cache miss plus, when the working set exceeds the TLB's reach, a page-table walk — and under
/// nested paging (a VM) that walk goes through two sets of page tables.
#[inline(never)]
pub fn random_chase(words: &[u64], nodes: usize, accesses: u64) -> Output {
    let mut at = 0usize;
    let mut acc = CHECK_SEED;
    if nodes > 0 {
        for _ in 0..accesses {
            at = words[at * NODE_WORDS] as usize;
            acc = acc.wrapping_add(at as u64);
        }
    }
    Output {
        checksum: mix(acc, at as u64),
        ops: accesses,
        bytes: accesses * 64,
    }
}

/// `syscall`: `calls` round trips across the isolation boundary.
#[inline(never)]
pub fn syscall(shim: &mut dyn Shim, calls: u64) -> Output {
    let mut acc = CHECK_SEED;
    for i in 0..calls {
        acc = acc.rotate_left(5) ^ shim.enter_kernel(i);
    }
    Output {
        checksum: acc,
        ops: calls,
        bytes: 0,
    }
}

/// `io`: write `total` bytes of pseudo-random data in [`IO_CHUNK`] pieces, fsync, read it all
/// back and check it. The checksum covers the data read back.
#[inline(never)]
pub fn io(shim: &mut dyn Shim, buf: &mut [u8], total: u64, seed: u64) -> Result<Output, Error> {
    let chunk = buf.len().min(IO_CHUNK);
    if chunk == 0 {
        return Err(Error::ArenaTooSmall {
            needed: IO_CHUNK as u64,
            available: 0,
        });
    }
    let buf = &mut buf[..chunk];
    let chunks = total.div_ceil(chunk as u64);
    let mut rng = Rng::new(seed);
    let mut written = StreamSum::new(CHECK_SEED);
    for i in 0..chunks {
        fill(buf, &mut rng);
        written.update(buf);
        shim.io_write(i * chunk as u64, buf)?;
    }
    shim.io_sync()?;
    let mut read = StreamSum::new(CHECK_SEED);
    for i in 0..chunks {
        shim.io_read(i * chunk as u64, buf)?;
        read.update(buf);
    }
    let (read, written) = (read.value(), written.value());
    if read != written {
        return Err(Error::Corrupt);
    }
    Ok(Output {
        checksum: mix(read, total),
        ops: 2 * chunks,
        bytes: 2 * chunks * chunk as u64,
    })
}
