//! Summary statistics for timing samples.
//!
//! Start-up times are skewed (a long tail of slow runs when the machine is busy), so isolab
//! reports the **median** and the 5th/95th percentiles rather than a mean and standard deviation,
//! and a **bootstrap** 95% confidence interval of the median: resample the runs with replacement
//! many times, take each resample's median, and keep the middle 95% of those medians. The
//! resampling uses a fixed seed, so the same samples always give the same interval and a report
//! rendered twice is identical.
//!
//! An interval needs enough samples to mean anything: below [`MIN_CI_SAMPLES`] a summary has no
//! interval ([`Summary::ci`] is `None`), and reports say "n too small" where it would be.

use isolab_kernels::rng::Rng;
use serde::{Deserialize, Serialize};

/// Resamples drawn for a bootstrap interval.
pub const BOOTSTRAP_RESAMPLES: usize = 2000;

/// The seed of every bootstrap, for reproducible reports. It is the report's own: neither the
/// seed of the kernels' random data (the workload's `seed=`) nor the seed of the order in which
/// an experiment ran its backends (the results' `shuffle_seed`).
pub const BOOTSTRAP_SEED: u64 = 0x15_01ab;

/// Fewer samples than this, and a summary gives no 95% confidence interval of its median.
///
/// Whatever its true median, each sample falls below it or above it with probability ½, so all
/// n samples fall on one side with probability 2 × 0.5ⁿ. The widest interval the samples can
/// give, from the smallest to the largest, therefore holds the true median with probability
/// 1 − 2 × 0.5ⁿ: 0.875 for 4 samples, 0.9375 for 5, 0.969 for 6. Below 6, *no* interval drawn
/// from the samples holds the median 95% of the time, and a bootstrap interval (always inside
/// that widest one) would claim a confidence the data cannot give — for one sample it is the
/// sample itself, "363–363 ms". It is the same arithmetic as the sign test behind the claims
/// ledger's six paired rounds.
pub const MIN_CI_SAMPLES: usize = 6;

/// What reports write where an interval would be, when [`Summary::ci`] has none.
pub const N_TOO_SMALL: &str = "n too small";

/// The summary of one set of samples.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Number of samples.
    pub n: usize,
    /// Median.
    pub median: f64,
    /// 5th percentile.
    pub p5: f64,
    /// 95th percentile.
    pub p95: f64,
    /// Lower end of the bootstrap 95% confidence interval of the median. Below
    /// [`MIN_CI_SAMPLES`] samples it means nothing: read the interval through [`Summary::ci`].
    pub ci_low: f64,
    /// Upper end of the bootstrap 95% confidence interval of the median (see `ci_low`).
    pub ci_high: f64,
    /// Smallest sample.
    pub min: f64,
    /// Largest sample.
    pub max: f64,
    /// Samples outside Tukey's fences (more than 1.5 inter-quartile ranges beyond a quartile).
    pub outliers: usize,
}

impl Summary {
    /// Summarise `samples`; `None` when there are none.
    pub fn of(samples: &[f64]) -> Option<Summary> {
        let mut sorted: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
        if sorted.is_empty() {
            return None;
        }
        sorted.sort_by(f64::total_cmp);
        let (ci_low, ci_high) = bootstrap_median_ci(&sorted);
        let (q1, q3) = (percentile(&sorted, 25.0), percentile(&sorted, 75.0));
        let iqr = q3 - q1;
        let (lo, hi) = (q1 - 1.5 * iqr, q3 + 1.5 * iqr);
        Some(Summary {
            n: sorted.len(),
            median: percentile(&sorted, 50.0),
            p5: percentile(&sorted, 5.0),
            p95: percentile(&sorted, 95.0),
            ci_low,
            ci_high,
            min: sorted[0],
            max: sorted[sorted.len() - 1],
            outliers: sorted.iter().filter(|&&x| x < lo || x > hi).count(),
        })
    }

    /// The bootstrap 95% confidence interval of the median, `(low, high)`, when there are
    /// enough samples for one ([`MIN_CI_SAMPLES`]); `None` otherwise: say [`N_TOO_SMALL`].
    pub fn ci(&self) -> Option<(f64, f64)> {
        (self.n >= MIN_CI_SAMPLES).then_some((self.ci_low, self.ci_high))
    }
}

/// The `p`th percentile of sorted samples, interpolating linearly between neighbours (the
/// definition used by NumPy's default and by most spreadsheets).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        1 => sorted[0],
        n => {
            let rank = (p / 100.0).clamp(0.0, 1.0) * (n - 1) as f64;
            let (below, frac) = (rank.floor() as usize, rank.fract());
            let above = (below + 1).min(n - 1);
            sorted[below] + frac * (sorted[above] - sorted[below])
        }
    }
}

/// The median of `samples` (non-finite values left out); `None` when there are none. For a
/// figure that needs no interval: cheaper than a whole [`Summary`].
pub fn median(samples: &[f64]) -> Option<f64> {
    let mut sorted: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    Some(percentile(&sorted, 50.0))
}

/// Bootstrap 95% confidence interval of the median (percentile method).
///
/// A resample never needs sorting: it is drawn from `sorted`, so it is fully described by how
/// many times each sample was drawn, and its k-th smallest value is found by walking those
/// counts in order. That makes each resample O(n) instead of O(n log n) and gives exactly the
/// interval that sorting each resample would.
fn bootstrap_median_ci(sorted: &[f64]) -> (f64, f64) {
    let n = sorted.len();
    if n < 2 {
        return (sorted[0], sorted[0]);
    }
    let mut rng = Rng::new(BOOTSTRAP_SEED ^ n as u64);
    let mut counts = vec![0u32; n];
    let mut medians = Vec::with_capacity(BOOTSTRAP_RESAMPLES);
    for _ in 0..BOOTSTRAP_RESAMPLES {
        // A stop request (`lab report`, `lab check`) ends the loop; the interval is then
        // meaningless, and every caller that asked for the stop discards it (see
        // `crate::interrupt::work_stopped`).
        if crate::interrupt::work_stopped() {
            return (f64::NAN, f64::NAN);
        }
        counts.fill(0);
        for _ in 0..n {
            counts[rng.below(n as u64) as usize] += 1;
        }
        medians.push(counted_median(sorted, &counts));
    }
    medians.sort_by(f64::total_cmp);
    (percentile(&medians, 2.5), percentile(&medians, 97.5))
}

/// The median of the resample that holds `sorted[i]` `counts[i]` times, interpolated as
/// [`percentile`] does.
fn counted_median(sorted: &[f64], counts: &[u32]) -> f64 {
    let total: usize = counts.iter().map(|&c| c as usize).sum();
    let rank = 0.5 * (total - 1) as f64;
    let (below, frac) = (rank.floor() as usize, rank.fract());
    // Walk the counts to the sample at 0-based rank `below` of the resample; the one after it
    // is the same sample if it was drawn more often than that, else the next one drawn.
    let mut seen = 0;
    let mut i = 0;
    while seen + counts[i] as usize <= below {
        seen += counts[i] as usize;
        i += 1;
    }
    let low = sorted[i];
    let high = if seen + (counts[i] as usize) > below + 1 {
        low
    } else {
        let next = (i + 1..counts.len()).find(|&j| counts[j] > 0);
        next.map_or(low, |j| sorted[j])
    };
    low + frac * (high - low)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_interpolate() {
        let s = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(percentile(&s, 50.0), 3.0);
        assert_eq!(percentile(&s, 0.0), 1.0);
        assert_eq!(percentile(&s, 100.0), 5.0);
        assert_eq!(percentile(&s, 25.0), 2.0);
        assert_eq!(percentile(&[1.0, 2.0], 50.0), 1.5);
    }

    /// Walking the counts finds exactly the median that sorting the resample finds, for odd
    /// and even sizes, with ties and with samples never drawn.
    #[test]
    fn a_counted_resample_has_the_median_of_the_sorted_one() {
        let mut rng = Rng::new(7);
        for n in [2usize, 3, 4, 5, 10, 11, 64, 101] {
            let mut sorted: Vec<f64> = (0..n).map(|_| rng.below(20) as f64).collect();
            sorted.sort_by(f64::total_cmp);
            for _ in 0..200 {
                let mut counts = vec![0u32; n];
                let mut resample = Vec::with_capacity(n);
                for _ in 0..n {
                    let i = rng.below(n as u64) as usize;
                    counts[i] += 1;
                    resample.push(sorted[i]);
                }
                resample.sort_by(f64::total_cmp);
                assert_eq!(
                    counted_median(&sorted, &counts),
                    percentile(&resample, 50.0),
                    "{sorted:?} {counts:?}"
                );
            }
        }
        assert_eq!(median(&[3.0, f64::NAN, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[f64::INFINITY]), None);
    }

    #[test]
    fn summary_of_a_known_sample() {
        let samples: Vec<f64> = (1..=101).map(f64::from).collect();
        let s = Summary::of(&samples).unwrap();
        assert_eq!(s.n, 101);
        assert_eq!(s.median, 51.0);
        assert_eq!(s.p5, 6.0);
        assert_eq!(s.p95, 96.0);
        assert!(s.ci_low < 51.0 && s.ci_high > 51.0, "{s:?}");
        assert!(s.ci_low > 40.0 && s.ci_high < 62.0, "{s:?}");
        assert_eq!(s.outliers, 0);
    }

    #[test]
    fn outliers_are_counted_and_the_median_ignores_them() {
        let mut samples = vec![10.0; 20];
        samples.push(1000.0);
        let s = Summary::of(&samples).unwrap();
        assert_eq!(s.outliers, 1);
        assert_eq!(s.median, 10.0);
    }

    #[test]
    fn the_bootstrap_is_reproducible() {
        let samples = [3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0];
        assert_eq!(Summary::of(&samples), Summary::of(&samples));
    }

    #[test]
    fn empty_and_single_samples() {
        assert_eq!(Summary::of(&[]), None);
        let one = Summary::of(&[7.0]).unwrap();
        assert_eq!((one.n, one.median), (1, 7.0));
        assert_eq!(one.ci(), None, "one sample is no interval");
    }

    /// The minimum is where the widest interval the samples give (smallest to largest) first
    /// holds the median 95% of the time: 1 − 2 × 0.5ⁿ.
    #[test]
    fn an_interval_needs_six_samples() {
        let coverage = |n: i32| 1.0 - 2.0 * 0.5f64.powi(n);
        assert!(coverage(MIN_CI_SAMPLES as i32) >= 0.95);
        assert!(coverage(MIN_CI_SAMPLES as i32 - 1) < 0.95);
        let samples = [5.0, 3.0, 9.0, 4.0, 8.0, 6.0, 7.0];
        let five = Summary::of(&samples[..5]).unwrap();
        assert_eq!(five.ci(), None);
        let six = Summary::of(&samples[..6]).unwrap();
        let (low, high) = six.ci().expect("six samples give an interval");
        assert!(low <= six.median && six.median <= high, "{six:?}");
        assert!(low >= six.min && high <= six.max, "{six:?}");
    }
}
