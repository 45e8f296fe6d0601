//! Memory: what one instance costs the host, fixed and touched.

use super::*;

/// What one instance of a backend costs in memory, for one working-set size.
///
/// The **fixed cost** is what the instance holds while it is held at `ready`, before the
/// workload has touched its working set: the runtime, the namespaces or the guest, page tables,
/// kernel structures. The **workload-touched** part is what that grew by between `ready` and
/// `done`: the working set itself, which every backend should pay alike. Both are
/// [`isolab_results::MemorySample::instance_bytes`] — the cgroup's kernel memory plus the
/// processes' anonymous PSS, counted exactly — not the cgroup's batch-rounded charge counter.
#[derive(Clone, Debug, PartialEq)]
pub struct MemoryRow {
    /// Backend name.
    pub backend: String,
    /// Name to print.
    pub label: String,
    /// Working set the workload touched, in MiB.
    pub mib: u64,
    /// Completed samples.
    pub n: usize,
    /// Samples that did not complete.
    pub failed: usize,
    /// Instance memory at `ready`, bytes.
    pub fixed: Option<Summary>,
    /// Instance memory at `done` minus at `ready`, bytes.
    pub touched: Option<Summary>,
    /// Kernel memory (of the cgroup) at `ready`, bytes.
    pub kernel_at_ready: Option<Summary>,
    /// PSS of the instance's processes at `ready`, bytes.
    pub pss_at_ready: Option<Summary>,
    /// USS of the instance's processes at `ready`, bytes.
    pub uss_at_ready: Option<Summary>,
    /// Guest RAM the VMM mapped, bytes (VMs).
    pub guest_ram: Option<Summary>,
    /// Guest RAM backed by host pages, bytes (VMs).
    pub guest_touched: Option<Summary>,
    /// VMM USS minus the guest RAM it touched, bytes (VMs).
    pub vmm_overhead: Option<Summary>,
}

/// The instance's memory at `ready`, bytes.
pub fn fixed_bytes(r: &RunRecord) -> Option<f64> {
    Some(r.memory_at_ready?.instance_bytes() as f64)
}

/// The growth of the instance's memory from `ready` to `done`, bytes (may be negative: freed
/// start-up memory).
pub fn touched_bytes(r: &RunRecord) -> Option<f64> {
    let done = r.memory_at_done?.instance_bytes() as f64;
    Some(done - fixed_bytes(r)?)
}

/// Memory figures of every (working-set size, backend) with memory samples, ordered by size,
/// then by backend in table order.
pub fn memory(results: &Results) -> Vec<MemoryRow> {
    let sizes: BTreeSet<u64> = results
        .runs
        .iter()
        .filter(|r| r.memory_at_ready.is_some())
        .map(|r| r.workload.mib)
        .collect();
    // Each backend's samples, by size, in one pass over them: (size, backend's place) → the
    // completed samples with memory figures, and how many failed.
    let mut groups: BTreeMap<(u64, usize), (Vec<&RunRecord>, usize)> = BTreeMap::new();
    for (place, backend) in results.backend_names().iter().enumerate() {
        for r in results.measured(backend) {
            if !sizes.contains(&r.workload.mib) {
                continue;
            }
            let completed = r.outcome == Outcome::Completed;
            if completed && r.memory_at_ready.is_none() {
                continue;
            }
            let (runs, failed) = groups.entry((r.workload.mib, place)).or_default();
            if completed {
                runs.push(r);
            } else {
                *failed += 1;
            }
        }
    }
    let names = results.backend_names();
    let mut rows = Vec::new();
    for ((mib, place), (runs, failed)) in groups {
        if isolab_host::interrupt::work_stopped() {
            break;
        }
        let backend = &names[place];
        let of = |f: &dyn Fn(&RunRecord) -> Option<f64>| {
            Summary::of(&runs.iter().filter_map(|r| f(r)).collect::<Vec<_>>())
        };
        rows.push(MemoryRow {
            label: backends::label(results, backend),
            mib,
            n: runs.len(),
            failed,
            fixed: of(&fixed_bytes),
            touched: of(&touched_bytes),
            kernel_at_ready: of(&|r| r.memory_at_ready?.cgroup?.kernel_bytes.map(|b| b as f64)),
            pss_at_ready: of(&|r| Some(r.memory_at_ready?.processes.pss_bytes as f64)),
            uss_at_ready: of(&|r| Some(r.memory_at_ready?.processes.uss_bytes as f64)),
            guest_ram: of(&|r| Some(r.facts.guest_ram_bytes? as f64)),
            guest_touched: of(&|r| Some(r.facts.guest_ram_touched_bytes? as f64)),
            vmm_overhead: of(&|r| Some(r.facts.vmm_overhead_bytes? as f64)),
            backend: backend.clone(),
        });
    }
    rows
}
