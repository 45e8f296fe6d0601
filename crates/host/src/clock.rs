//! The one clock every timestamp in isolab comes from.
//!
//! `CLOCK_MONOTONIC` never jumps (NTP only slews it) and is the same clock in the lab, in its
//! children and in containers, because isolab never creates a time namespace. So a timestamp
//! taken by the workload inside a container and one taken by the lab can be subtracted directly.
//! Guests have their own clocks, which isolab does not trust: the VMM, a host process, stamps
//! their markers.

/// Nanoseconds on the host's `CLOCK_MONOTONIC`.
///
/// Safe to call between `fork` and `exec` (no allocation, no locks; vDSO or one system call).
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write into; CLOCK_MONOTONIC exists on every Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The instant `after` from now, for waiting with a deadline. `Instant + Duration` panics when
/// the sum is beyond what the clock can represent (a timeout of `u64::MAX` seconds, say); such a
/// deadline is as good as never, so it becomes a century from now.
pub fn deadline(after: std::time::Duration) -> std::time::Instant {
    let now = std::time::Instant::now();
    now.checked_add(after)
        .or_else(|| now.checked_add(std::time::Duration::from_secs(100 * 365 * 86_400)))
        .unwrap_or(now)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_clock_never_goes_back() {
        let a = super::now_ns();
        let b = super::now_ns();
        assert!(b >= a && a > 0);
    }

    #[test]
    fn a_deadline_never_overflows() {
        let now = std::time::Instant::now();
        assert!(super::deadline(std::time::Duration::MAX) > now);
        assert!(super::deadline(std::time::Duration::from_secs(1)) > now);
    }
}
