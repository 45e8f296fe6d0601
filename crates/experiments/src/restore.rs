//! `lab run restore`: can a VM start as fast as a container? Cold starts against starts
//! restored from a snapshot, side by side.
//!
//! "Containers start faster than VMs" is measured by `lab run startup` with cold starts only.
//! The field's answer since Firecracker's snapshots is that a microVM *restored* from a snapshot
//! taken after it booted skips the boot; containers can be checkpointed and restored too
//! (CRIU). Per backend, this experiment measures:
//!
//! * **start**: a cold start and a restored one, both to the workload's own first marker
//!   (`ready`: for a restored instance, sent by the restored workload, never by the tool that
//!   restored it), and a restore whose memory was prefaulted (`--prefault`'s effect);
//! * **the first run after a restore** against a cold instance's run of the same compute kernel
//!   (`mem`, which touches its working set): a restored guest's memory comes in page by page
//!   on first touch, which is REAP's (ASPLOS'21) observation about snapshots;
//! * **the snapshot**: its bytes on disk and the time to take it (records `snapshot`);
//! * **host memory per more restored instance**, for N = 1, 2, 4 alive together (records
//!   `restore-step`): what the instances hold alone, plus the snapshot's pages in the page
//!   cache counted once, as `lab run images` counts an image's.
//!
//! Each restored run must end with the checksum of the backend's cold run of the same
//! workload; one that does not is not measured, and says why.
//!
//! Restored runs are recorded under the backend's name with `/restored` (or
//! `/restored+prefault`) appended, and with the fact `start=restored`, so every table and
//! report keeps the two kinds of start apart and says which one a figure is. Backends that
//! cannot restore still run cold (the comparison needs a cold container) and are listed with
//! the one-line reason they cannot restore.

use crate::{campaign_by, select, ExperimentError, Sample, Sampling, Settings};
use isolab_backends::lab::Lab;
use isolab_backends::{
    Availability, Backend, BackendError, Instance, Limits, Restore, RestoreOptions, Run, Snapshot,
};
use isolab_payload::{Kernel, Spec};
use isolab_results::{Record, RestoreStep, Skipped, Writer};
use std::time::{Duration, Instant};

/// 10 rounds after 1 warm-up: a round is a cold start, a restore and a prefaulted restore of
/// every backend, each running the `mem` kernel once.
pub const SAMPLING: Sampling = Sampling {
    runs: 10,
    warmup: 1,
};

/// The counts of restored instances alive together whose memory is measured.
pub const DEFAULT_COUNTS: [u32; 3] = [1, 2, 4];

/// The suffix of a restored run's backend name in results.
pub const RESTORED: &str = "/restored";
/// The suffix of a prefaulted restored run's backend name.
pub const RESTORED_PREFAULT: &str = "/restored+prefault";

/// The workload: the `mem` kernel, whose work touches its working set.
pub fn workload() -> Spec {
    Spec::default_for(Kernel::Mem)
}

/// One sample's kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Start {
    Cold,
    Restored { prefault: bool },
}

#[derive(Clone, Copy, Debug)]
struct Case {
    backend: usize,
    start: Start,
}

/// A restorable backend's snapshot, and the checksum its cold run gave.
struct Ready {
    snapshot: Snapshot,
    checksum: u64,
}

/// Run the experiment on `backends` (every default backend available, without).
pub fn run(
    lab: &Lab,
    backends: Option<&[String]>,
    counts: &[u32],
    settings: &Settings,
) -> Result<crate::Campaign, ExperimentError> {
    let spec = workload();
    crate::check_provisions(lab, &[spec])?;
    let mut selection = select(lab, backends, &settings.limits)?;
    selection.keep_able(lab, &[spec.kernel])?;
    let limits = settings.limits;

    // Take each restorable backend's snapshot first, and its cold checksum: every restored
    // sample is held against it.
    let mut ready: Vec<Option<Ready>> = Vec::new();
    for backend in &selection.backends {
        match prepare(lab, backend.as_ref(), &spec, &limits) {
            Ok(r) => ready.push(Some(r)),
            Err(reason) => {
                ready.push(None);
                selection.skipped.push(Skipped {
                    backend: format!("{}{RESTORED}", backend.name()),
                    reason,
                });
            }
        }
    }
    let cases: Vec<Case> = (0..selection.backends.len())
        .flat_map(|backend| {
            let starts: &[Start] = if ready[backend].is_some() {
                &[
                    Start::Cold,
                    Start::Restored { prefault: false },
                    Start::Restored { prefault: true },
                ]
            } else {
                &[Start::Cold]
            };
            starts.iter().map(move |&start| Case { backend, start })
        })
        .collect();
    let extra = serde_json::json!({
        "workload": spec.to_string(),
        "restored_counts": counts,
    });
    let campaign = campaign_by(
        lab,
        "restore",
        &selection,
        &cases,
        settings,
        extra,
        |case| {
            let label = match case.start {
                Start::Cold => "cold",
                Start::Restored { prefault: false } => "restored",
                Start::Restored { prefault: true } => "restored+prefault",
            };
            (case.backend, label.to_string())
        },
        |case| {
            let backend = selection.backends[case.backend].as_ref();
            let cpu_before = crate::children_cpu_ns();
            let result = match (case.start, &ready[case.backend], backend.restorer()) {
                (Start::Restored { prefault }, Some(r), Some(restorer)) => {
                    restored(lab, backend, restorer, r, &limits, prefault)
                }
                _ => backend.run(lab, &spec, &limits),
            };
            Sample {
                spec,
                result,
                neighbours: None,
                traced: None,
                children_cpu_ns: Some(crate::children_cpu_ns().saturating_sub(cpu_before)),
            }
        },
    )?;

    // The snapshots, and the memory of N restored instances alive together.
    let mut writer =
        Writer::reopen(&campaign.results).map_err(|source| ExperimentError::Output {
            dir: settings.out.clone(),
            source,
        })?;
    let mut failures = campaign.failures;
    for (i, backend) in selection.backends.iter().enumerate() {
        let (Some(r), Some(restorer)) = (&ready[i], backend.restorer()) else {
            continue;
        };
        writer.append(&Record::Snapshot(Box::new(
            r.snapshot.record(backend.family()),
        )))?;
        if crate::interrupted() {
            break;
        }
        match ladder(lab, backend.as_ref(), restorer, counts, &limits) {
            Ok(steps) => {
                for step in steps {
                    writer.append(&Record::RestoreStep(Box::new(step)))?;
                }
            }
            Err(e) => failures.push((format!("{}{RESTORED}", backend.name()), e.to_string())),
        }
    }
    Ok(crate::Campaign {
        failures,
        interrupted: campaign.interrupted || crate::interrupted(),
        ..campaign
    })
}

/// Snapshot `backend` and learn its cold checksum, or say in one line why it cannot restore.
fn prepare(
    lab: &Lab,
    backend: &dyn Backend,
    spec: &Spec,
    limits: &Limits,
) -> Result<Ready, String> {
    let Some(restorer) = backend.restorer() else {
        return Err(backend.not_restorable());
    };
    if let Availability::Unavailable(why) = restorer.restore_availability(lab) {
        return Err(why);
    }
    let cold = backend
        .run(lab, spec, limits)
        .map_err(|e| format!("its cold run failed: {e}"))?;
    let checksum = cold
        .output
        .map(|o| o.checksum)
        .ok_or_else(|| format!("its cold run did not complete: {:?}", cold.outcome))?;
    let snapshot = restorer
        .checkpoint(lab, spec, limits)
        .map_err(|e| format!("taking a snapshot failed: {e}"))?;
    Ok(Ready { snapshot, checksum })
}

/// One restored sample: restore, run to done, and hold its checksum against the cold run's.
fn restored(
    lab: &Lab,
    backend: &dyn Backend,
    restorer: &dyn Restore,
    ready: &Ready,
    limits: &Limits,
    prefault: bool,
) -> Result<Run, BackendError> {
    let mut instance =
        restorer.restore(lab, &ready.snapshot, limits, &RestoreOptions { prefault })?;
    let waited = instance.wait_ready().and_then(|()| instance.wait_done());
    let mut run = match waited {
        Ok(()) | Err(BackendError::Exited { .. }) => instance.finish()?,
        Err(e) => {
            drop(instance.stop_within(Duration::ZERO));
            return Err(e);
        }
    };
    run.backend = format!(
        "{}{}",
        backend.name(),
        if prefault {
            RESTORED_PREFAULT
        } else {
            RESTORED
        }
    );
    if let Some(out) = &run.output {
        if out.checksum != ready.checksum {
            return Err(BackendError::Instance {
                step: "restore".into(),
                detail: format!(
                    "checksum {:#018x} is not the cold run's {:#018x}: not measured",
                    out.checksum, ready.checksum
                ),
            });
        }
    }
    Ok(run)
}

/// N restored instances alive together, for each N of `counts`: all held at `done`, so each has
/// touched its working set, then measured and stopped.
fn ladder(
    lab: &Lab,
    backend: &dyn Backend,
    restorer: &dyn Restore,
    counts: &[u32],
    limits: &Limits,
) -> Result<Vec<RestoreStep>, BackendError> {
    let mut spec = workload();
    spec.hold = true;
    let snapshot = restorer.checkpoint(lab, &spec, limits)?;
    let mut steps = Vec::new();
    for &n in counts {
        if crate::interrupted() {
            break;
        }
        let mut live: Vec<Instance> = Vec::new();
        let mut held = || -> Result<(), BackendError> {
            for _ in 0..n {
                let mut instance =
                    restorer.restore(lab, &snapshot, limits, &RestoreOptions::default())?;
                // Let it run its work (released at `ready`), and keep it at `done`.
                instance.wait_ready()?;
                live.push(instance);
                let deadline = Instant::now() + lab.settings.timeout;
                live.last_mut()
                    .map_or(Ok(()), |i| i.wait_done_by(deadline))?;
            }
            Ok(())
        };
        let result = held();
        if result.is_ok() {
            steps.push(measure(backend, &snapshot, &live, n));
        }
        for instance in live {
            let _ = instance.stop_within(Duration::from_secs(5));
        }
        result?;
    }
    Ok(steps)
}

/// What `live` instances restored from `snapshot` cost the host together.
fn measure(backend: &dyn Backend, snapshot: &Snapshot, live: &[Instance], n: u32) -> RestoreStep {
    let private: u64 = live
        .iter()
        .filter_map(|i| i.sample_memory().cgroup)
        .map(|c| c.anon_bytes.unwrap_or(0) + c.kernel_bytes.unwrap_or(0))
        .sum();
    let shared = snapshot_cache_bytes(snapshot);
    RestoreStep {
        backend: backend.name().to_string(),
        family: backend.family(),
        n,
        prefault: false,
        host_bytes: private + shared,
        shared_bytes: shared,
        private_bytes: private,
    }
}

/// The snapshot's pages in the page cache (`mincore` through a fresh mapping of it).
fn snapshot_cache_bytes(snapshot: &Snapshot) -> u64 {
    use std::os::fd::AsRawFd;
    let path = match (snapshot.file(), snapshot.dir()) {
        (Some(fd), _) => format!("/proc/self/fd/{}", fd.as_raw_fd()).into(),
        (None, Some(dir)) => dir.to_path_buf(),
        (None, None) => return 0,
    };
    if path.is_dir() {
        std::fs::read_dir(&path)
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .map(|e| isolab_resources::image::pagecache::resident_bytes(&e.path()))
            .sum()
    } else {
        isolab_resources::image::pagecache::resident_bytes(&path)
    }
}
