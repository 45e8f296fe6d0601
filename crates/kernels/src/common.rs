//! What every kernel shares: the checksum's seed and mixing function, the data the I/O kernels
//! move, the arena seen as words, and the latency percentiles the disk and network kernels report.

use crate::rng::Rng;
use crate::Shim;

/// One mebibyte.
pub const MIB: u64 = 1 << 20;

/// A constant folded into every checksum, so an all-zero result never looks valid.
pub const CHECK_SEED: u64 = 0xC0FF_EE15_01AB_0001;

/// Report the median and the 99th percentile of `latencies` (reordered in place) as the
/// figures `latency_p50_ns` and `latency_p99_ns`. Nothing for no latencies.
pub fn report_percentiles(shim: &mut dyn Shim, latencies: &mut [u64]) {
    let n = latencies.len();
    if n == 0 {
        return;
    }
    for (name, q) in [("latency_p50_ns", 50), ("latency_p99_ns", 99)] {
        // The nearest-rank percentile: the smallest value with at least q% of them at or below.
        let rank = (n * q).div_ceil(100).clamp(1, n) - 1;
        let (_, value, _) = latencies.select_nth_unstable(rank);
        shim.figure(name, *value);
    }
}

/// Fill `buf` with the next bytes of `rng`'s stream (the data the I/O kernels move).
pub(crate) fn fill(buf: &mut [u8], rng: &mut Rng) {
    for b in buf.chunks_mut(8) {
        let v = rng.next_u64().to_le_bytes();
        b.copy_from_slice(&v[..b.len()]);
    }
}

/// View the arena as a slice of `T` (f64 or u64), ignoring a ragged tail.
pub(crate) fn as_words<T: Copy + Default>(arena: &mut [u8]) -> &mut [T] {
    // SAFETY: f64 and u64 accept every bit pattern; `align_to_mut` only returns the correctly
    // aligned middle part, and the arena is page-aligned in both programs so the prefix is empty.
    let (_, words, _) = unsafe { arena.align_to_mut::<T>() };
    words
}

/// Mixing function for checksums (the finaliser of MurmurHash3): every input bit affects every
/// output bit, so two different results give different checksums.
#[inline]
pub(crate) fn mix(mut h: u64, v: u64) -> u64 {
    h ^= v;
    h = (h ^ (h >> 33)).wrapping_mul(0xff51_afd7_ed55_8ccd);
    h = (h ^ (h >> 33)).wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}
