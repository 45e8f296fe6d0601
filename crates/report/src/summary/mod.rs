//! Figures computed from results: what the tables, plots and claims ledger show.
//!
//! Every function here is a pure function of one results file ([`Results`]). Two rules hold
//! throughout:
//!
//! * **warm-up samples are left out** ([`Results::measured`]) and so are samples that did not
//!   complete (they are counted as `failed` instead);
//! * **ratios are paired**: a sample of backend A is divided by the sample of backend B that ran
//!   in the *same round* with the *same workload*. Both ran within moments of each other, so
//!   slow drift of the machine (a warming CPU, another user's job) cancels out; the ratios are
//!   then summarised like any sample (median, bootstrap 95% CI).
//!
//! The results file is not the lab's to trust (`lab report` runs as root on files anyone can
//! write), so what a figure costs must grow with the file's length (times a log), never with
//! its square. Each function walks
//! the samples once, grouping them — by backend through the index of [`Results::runs_of`], by
//! workload or condition in a hash map — and pairs a backend with the baseline through a
//! [`Pairing`] built once: never "for each backend, scan every sample", which a file naming
//! 30,000 backends turns into 900 million visits. The loops over backends or rows ask for a
//! stop request ([`isolab_host::interrupt::work_stopped`]) as they go and end early when there was
//! one; their callers then discard what they return.

use crate::backends;
use isolab_host::stats;
use isolab_host::stats::Summary;
use isolab_payload::{Kernel, Resource};
use isolab_results::{
    Config, DensityEnd, DensityStep, Family, GuestOs, Outcome, Results, RunRecord, WorkloadRecord,
};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

mod density;
mod images;
mod interference;
mod isolation;
mod memory;
mod startup;
mod throughput;

pub use density::*;
pub use images::*;
pub use interference::*;
pub use isolation::*;
pub use memory::*;
pub use startup::*;
pub use throughput::*;

/// Phases after `ready` are not part of start-up.
const AFTER_READY: [&str; 3] = ["start", "done", "exited"];

/// Runs of different backends that are compared with each other: same round, same workload.
pub type PairKey = (u32, String, u64, u64, u64);

/// A run's [`PairKey`].
pub fn pair_key(r: &RunRecord) -> PairKey {
    (
        r.round,
        r.workload.kernel.clone(),
        r.workload.mib,
        r.workload.iters,
        r.workload.seed,
    )
}

/// The measured samples of `backend` that completed.
pub fn completed<'a>(results: &'a Results, backend: &str) -> impl Iterator<Item = &'a RunRecord> {
    results
        .measured(backend)
        .filter(|r| r.outcome == Outcome::Completed)
}

/// Measured samples of `backend` that did not complete.
fn failed(results: &Results, backend: &str, keep: impl Fn(&RunRecord) -> bool) -> usize {
    results
        .measured(backend)
        .filter(|r| r.outcome != Outcome::Completed && keep(r))
        .count()
}

/// `metric(a) / metric(b)` for every pair of completed samples of `a` and `b` from the same
/// round and workload, restricted to runs `keep` accepts.
pub fn paired_ratios(
    results: &Results,
    a: &str,
    b: &str,
    keep: impl Fn(&RunRecord) -> bool,
    metric: impl Fn(&RunRecord) -> Option<f64>,
) -> Vec<f64> {
    ratios_by(
        completed(results, a).filter(|r| keep(r)),
        completed(results, b).filter(|r| keep(r)),
        pair_key,
        metric,
    )
}

/// `metric(x) / metric(y)` for every sample `x` of `a` and the sample `y` of `b` with the same
/// `key`: the pairing of [`paired_ratios`], for samples told apart by something other than
/// their backend (a victim beside aggressors and the same victim alone).
pub fn ratios_by<'a, K: Ord>(
    a: impl Iterator<Item = &'a RunRecord>,
    b: impl Iterator<Item = &'a RunRecord>,
    key: impl Fn(&RunRecord) -> K,
    metric: impl Fn(&RunRecord) -> Option<f64>,
) -> Vec<f64> {
    Pairing::of(b, &key, &metric).ratios(a, &key, &metric)
}

/// One side of a pairing, looked up by key: the samples of `b` that [`ratios_by`] divides by,
/// kept so that many backends can be paired with one (the baseline) without reading its samples
/// again for each: each lookup is O(log n).
pub struct Pairing<K> {
    base: BTreeMap<K, f64>,
}

impl<K: Ord> Pairing<K> {
    /// The `metric` of each sample of `b`, by `key` (the last sample of a key wins).
    pub fn of<'a>(
        b: impl Iterator<Item = &'a RunRecord>,
        key: impl Fn(&RunRecord) -> K,
        metric: impl Fn(&RunRecord) -> Option<f64>,
    ) -> Pairing<K> {
        Pairing {
            base: b.filter_map(|r| Some((key(r), metric(r)?))).collect(),
        }
    }

    /// `metric(x) / metric(y)` for every sample `x` of `a` whose key has a sample `y` here.
    pub fn ratios<'a>(
        &self,
        a: impl Iterator<Item = &'a RunRecord>,
        key: impl Fn(&RunRecord) -> K,
        metric: impl Fn(&RunRecord) -> Option<f64>,
    ) -> Vec<f64> {
        a.filter_map(|r| {
            let x = metric(r)?;
            let y = self.base.get(&key(r))?;
            (*y > 0.0).then(|| x / y)
        })
        .collect()
    }
}

/// The baseline's completed samples by [`pair_key`] with their `metric`, to pair each backend's
/// samples with ([`paired_ratios`] against the baseline, for every backend at the cost of one).
/// The key holds the workload, so a backend's samples of one workload meet only the baseline's
/// of the same workload.
fn baseline_pairing(
    results: &Results,
    baseline: Option<&str>,
    metric: impl Fn(&RunRecord) -> Option<f64>,
) -> Option<Pairing<PairKey>> {
    baseline.map(|b| Pairing::of(completed(results, b), pair_key, metric))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;
    use crate::fixtures::Fixture;

    #[test]
    fn ratios_pair_samples_of_the_same_round() {
        // process: 1 ms in round 0, 2 ms in round 1; container: 3 ms, 4 ms.
        let mut f = Fixture::new("startup");
        f.startup("process", 0, 1_000_000);
        f.startup("process", 1, 2_000_000);
        f.startup("container", 0, 3_000_000);
        f.startup("container", 1, 4_000_000);
        let r = f.results();
        let mut ratios = paired_ratios(
            &r,
            "container",
            "process",
            |_| true,
            |r| r.startup_ns.map(|n| n as f64),
        );
        ratios.sort_by(f64::total_cmp);
        assert_eq!(ratios, vec![2.0, 3.0]);
    }

    #[test]
    fn a_net_rr_run_is_held_against_the_bytes_its_peer_received_warm_up_included() {
        let run = |peer_bytes: u64| {
            let mut f = Fixture::new("throughput");
            f.work("process", 0, "net-rr", 1000, 1_000_000, "0xab");
            let mut r = f.results().runs.remove(0);
            r.facts.peer_bytes = Some(peer_bytes);
            r
        };
        // 1,000 timed round trips and 100 of warm-up: 1,100 bytes reach the echo.
        assert_eq!(throughput::checked_sum(&run(1100)).as_deref(), Some("0xab"));
        assert_eq!(
            throughput::checked_sum(&run(1000)).as_deref(),
            Some("0xab (yet the peer received 1000 of 1100 bytes)")
        );
    }

    #[test]
    fn startup_rows_leave_out_warmup_and_failures() {
        let mut f = Fixture::new("startup");
        f.startup("process", 0, 1_000_000);
        f.push(fixtures::warmup(fixtures::startup_run(
            "process", 0, 50_000_000,
        )));
        let mut bad = fixtures::startup_run("process", 1, 9_000_000);
        bad.outcome = Outcome::Failed {
            reason: "test".into(),
        };
        f.push(bad);
        let rows = startup(&f.results());
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].samples_ns, vec![1_000_000.0]);
        assert_eq!(rows[0].failed, 1);
        assert_eq!(
            rows[0]
                .phases
                .iter()
                .map(|p| p.0.as_str())
                .collect::<Vec<_>>(),
            ["cgroup", "fork", "ready"]
        );
    }

    #[test]
    fn memory_splits_fixed_cost_from_what_the_workload_touched() {
        let mut f = Fixture::new("memory");
        f.memory("container", 0, 16, 1 << 20, 17 << 20);
        f.memory("container", 1, 16, 1 << 20, 17 << 20);
        let rows = memory(&f.results());
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].fixed.unwrap().median, (1 << 20) as f64);
        assert_eq!(rows[0].touched.unwrap().median, (16 << 20) as f64);
    }

    #[test]
    fn throughput_is_relative_to_the_process_of_the_same_round() {
        let mut f = Fixture::new("throughput");
        for round in 0..4 {
            f.work("process", round, "cpu", 1000, 1_000_000, "0x01");
            f.work("container", round, "cpu", 1000, 2_000_000, "0x01");
        }
        let r = f.results();
        let rows = throughput(&r);
        let c = rows.iter().find(|x| x.backend == "container").unwrap();
        assert_eq!(c.vs_process.unwrap().median, 0.5);
        assert_eq!(c.rate.unwrap().median, 500_000.0);
        assert!(checksum_mismatches(&r).is_empty());
        f.work("vm", 0, "cpu", 1000, 1_000_000, "0x02");
        let m = checksum_mismatches(&f.results());
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].workload, "cpu ×1000");
    }

    #[test]
    fn density_counts_the_marginal_cost_of_each_instance() {
        let mut f = Fixture::new("density");
        // 1 MiB shared once, then 2 MiB per instance.
        f.density_step("container", 1, 1, 3 << 20);
        f.density_step("container", 5, 4, 11 << 20);
        f.density_step("container", 9, 4, 19 << 20);
        let d = density(&f.results());
        assert_eq!(d[0].per_instance.unwrap().median, (2 << 20) as f64);
        assert_eq!(d[0].max_n(), 9);
        assert_eq!(d[0].projected_fit(1 << 30), Some(512.0));
    }

    #[test]
    fn isolation_marks_facts_shared_with_the_host() {
        let mut f = Fixture::new("isolation");
        f.probe(
            "process",
            &[("kernel_release", "6.1"), ("hostname", "host")],
        );
        f.probe(
            "container",
            &[("kernel_release", "6.1"), ("hostname", "box")],
        );
        f.probe(
            "vm-linux",
            &[("kernel_release", "6.6"), ("hostname", "guest")],
        );
        let iso = isolation(&f.results()).unwrap();
        assert_eq!(iso.shared_with_host("container"), Some(1));
        assert_eq!(iso.shared_with_host("vm-linux"), Some(0));
        assert_eq!(iso.value("vm-linux", "hostname"), Some("guest"));
    }

    #[test]
    fn what_an_instance_may_do_is_never_counted_as_the_hosts_view() {
        let mut f = Fixture::new("isolation-calls");
        let allowed = [("unshare_flags", "user:ok mnt:ok"), ("keyctl", "ok")];
        f.probe("process", &allowed);
        f.probe("vm-linux", &allowed);
        f.probe(
            "container",
            &[
                ("unshare_flags", "user:EPERM mnt:EPERM"),
                ("keyctl", "EPERM"),
            ],
        );
        let iso = isolation(&f.results()).unwrap();
        // The guest may make namespaces in its own kernel: that is no view of the host's.
        assert_eq!(iso.shared_with_host("vm-linux"), Some(0));
        assert_eq!(iso.value("container", "keyctl"), Some("EPERM"));
    }
}
