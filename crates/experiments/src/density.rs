//! `lab run density`: how many idle instances fit on this host, and what each one costs.
//!
//! For each backend, in turn, the lab starts idle instances (the `sleep` kernel: the workload
//! blocks in a read until the host lets it go, costing no CPU) and keeps them all alive, climbing
//! a ladder N = 1, 2, 4, … up to `--max`. At each rung it records how long the new instances took
//! to start (launch rate), what all of them cost together (the sum of their cgroups' exact
//! charges, their processes' PSS, and how far the host's MemAvailable dropped), and how much CPU
//! they burned while idle. The ladder stops early when the next rung would eat into a memory
//! reserve the host keeps, or when a launch fails; then every instance is stopped and the
//! teardown is timed. Instances are always torn down, on Ctrl-C too: a stop signal ends a launch
//! or the idle window at once.

use crate::progress::{duration, Progress};
use crate::{interrupted, open_results, select, ExperimentError};
use isolab_backends::lab::Lab;
use isolab_backends::{Backend, Instance, Limits};
use isolab_host::clock::now_ns;
use isolab_host::facts as host;
use isolab_payload::{Kernel, Spec};
use isolab_resources::cgroup::Cgroup;
use isolab_results::{DensityEnd, DensityStep, Facts, Family, Record, Writer};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// How the density experiment runs.
#[derive(Clone, Debug, Serialize)]
pub struct DensitySettings {
    /// The top of the ladder.
    pub max: u32,
    /// Stop before the host's MemAvailable would fall below this.
    pub reserve_bytes: u64,
    /// How long to watch the idle instances' CPU use at each rung.
    #[serde(rename = "idle_window_ns", serialize_with = "as_ns")]
    pub idle_window: Duration,
    /// Limits of every instance.
    pub limits: Limits,
    /// Directory under which the results directory is made.
    #[serde(skip)]
    pub out: PathBuf,
    /// Show progress: a bar on a terminal, a line per rung elsewhere ([`Progress`]).
    #[serde(skip)]
    pub progress: bool,
    /// Run on the lab's layered image and measure what sharing it saves (`lab run images`).
    pub images: Option<ImagesOptions>,
}

/// How `lab run images` climbs its ladders (see [`isolab_resources::image`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ImagesOptions {
    /// Turn KSM on for the VMs' ladders, and see what it merges.
    pub ksm: bool,
}

/// What one ladder on the lab's image measures besides the density ladder's figures.
struct ImageWatch {
    files: Vec<std::path::PathBuf>,
    ksm: Option<isolab_resources::ksm::Ksm>,
}

fn as_ns<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_nanos() as u64)
}

/// How long each step watches its idle instances' CPU use, unless told otherwise.
pub const DEFAULT_IDLE_WINDOW: Duration = Duration::from_millis(500);

/// The default reserve: a tenth of the host's memory, at least 1 GiB.
pub fn default_reserve_bytes() -> u64 {
    (host::meminfo().0 / 10).max(1 << 30)
}

/// What a density run produced.
#[derive(Debug)]
pub struct DensityOutcome {
    /// The results file.
    pub results: PathBuf,
    /// Per backend: how many instances were alive at the top, and why the ladder stopped.
    pub ends: Vec<DensityEnd>,
    /// Stopped by Ctrl-C.
    pub interrupted: bool,
}

/// Run the ladder on each of `backends` (or every default backend here), one after the other.
pub fn run(
    lab: &Lab,
    backends: Option<&[String]>,
    settings: &DensitySettings,
) -> Result<DensityOutcome, ExperimentError> {
    let mut selection = select(lab, backends, &settings.limits)?;
    // Idle instances, on the lab's image for `lab run images`: a backend that cannot run the
    // workload there (a bare guest cannot load the image's libraries) is left out, saying why.
    selection.keep_able(lab, &[Kernel::Sleep])?;
    let json = serde_json::to_value(settings).expect("settings serialise");
    let experiment = experiment_of(settings);
    let mut writer = open_results(lab, experiment, &selection, json, &settings.out)?;
    if settings.images.is_some() {
        let record = image_record(lab, selection.backends.iter().any(|b| b.name() == "docker"))?;
        writer.append(&Record::Image(Box::new(record)))?;
    }
    let mut outcome = DensityOutcome {
        results: writer.path().to_path_buf(),
        ends: Vec::new(),
        interrupted: false,
    };
    for backend in &selection.backends {
        let end = ladder(lab, backend.as_ref(), settings, &mut writer)?;
        outcome.interrupted |= end.reason == INTERRUPTED_REASON;
        writer.append(&Record::DensityEnd(Box::new(end.clone())))?;
        outcome.ends.push(end);
        if outcome.interrupted {
            break;
        }
    }
    Ok(outcome)
}

/// The experiment a ladder belongs to: `images` on the lab's layered image, else `density`.
fn experiment_of(settings: &DensitySettings) -> &'static str {
    match settings.images {
        Some(_) => "images",
        None => "density",
    }
}

/// Why a ladder stopped when a stop signal came.
pub(crate) const INTERRUPTED_REASON: &str = "interrupted (a stop signal)";

/// The lab's image as the results record it: its layers, and — when Docker is among the
/// backends — Docker's build of it, then its rebuild with only the app layer changed (a second
/// copy of the image, version 2 of its app layer, built beside the first).
fn image_record(lab: &Lab, docker: bool) -> Result<isolab_results::ImageRecord, ExperimentError> {
    let failed = |e: String| ExperimentError::Images(e);
    let image = lab
        .image()
        .map_err(|e| failed(e.to_string()))?
        .ok_or_else(|| failed("no image".into()))?;
    let mut record = isolab_results::ImageRecord {
        layers: image
            .layers
            .iter()
            .map(|l| (l.name.to_string(), l.bytes))
            .collect(),
        lib_mib: image.spec.lib_mib,
        vm_disk_shared: lab.settings.shared_image_disk,
        docker: None,
    };
    if !docker {
        return Ok(record);
    }
    let cli = isolab_backends::docker::cli()
        .ok_or_else(|| failed("the docker CLI is not installed".into()))?;
    let env = isolab_backends::docker::daemon_env();
    let build =
        |image: &isolab_resources::image::Image| -> Result<isolab_resources::image::docker::Build, ExperimentError> {
            let tag = isolab_backends::docker::layered_tag(lab.id(), image.spec.app_version);
            lab.keep(
                lab.ledger()
                    .claim(isolab_resources::ownership::Resource::DockerImage {
                        cli: cli.clone(),
                        env: env.clone(),
                        tag: tag.clone(),
                    })
                    .map_err(|e| failed(e.to_string()))?,
            );
            isolab_resources::image::docker::build(&cli, &env, image, &tag).map_err(|e| failed(e.to_string()))
        };
    let first = build(&image)?;
    let next = isolab_resources::image::ImageSpec {
        app_version: image.spec.app_version + 1,
        ..image.spec
    };
    let changed = isolab_resources::image::Image::build(
        &lab.workdir().join("image-next"),
        &next,
        isolab_payload::WORKLOAD_ELF,
    )
    .map_err(|e| failed(e.to_string()))?;
    let rebuild = build(&changed)?;
    record.docker = Some(isolab_results::DockerBuilds { first, rebuild });
    Ok(record)
}

/// One backend's ladder, its records appended to `writer`; returns how it ended.
fn ladder(
    lab: &Lab,
    backend: &dyn Backend,
    settings: &DensitySettings,
    writer: &mut Writer,
) -> Result<DensityEnd, ExperimentError> {
    let spec = Spec::default_for(Kernel::Sleep);
    // On the lab's image: its pages out of the page cache first, so the first instance starts
    // cold; KSM on for a VM's ladder when asked (the host's settings come back after).
    let image = lab
        .image()
        .map_err(|e| ExperimentError::Images(e.to_string()))?;
    let ksm_asked = settings.images.is_some_and(|o| o.ksm);
    let watch = match image {
        Some(_) => {
            let files = backend.image_files(lab)?;
            for f in &files {
                isolab_resources::image::pagecache::drop_cached(f);
            }
            let ksm = (ksm_asked && backend.family().is_vm())
                .then(|| isolab_resources::ksm::Ksm::start(lab.ledger()))
                .transpose()
                .map_err(|e| ExperimentError::Images(e.to_string()))?;
            Some(ImageWatch { files, ksm })
        }
        None => None,
    };
    let mut progress = Progress::new(
        settings.progress,
        experiment_of(settings),
        settings.max as u64,
    )
    .counting("instance");
    progress.running(&format!("{} instances alive", backend.name()));
    progress.begin(&format!(
        "{}: a ladder up to {}",
        backend.name(),
        settings.max
    ));
    let baseline_available = host::meminfo().1;
    let mut live: Vec<Instance> = Vec::new();
    let mut target = 1u32;
    let reason = 'ladder: loop {
        if let Some(why) = over_budget(&live, target, baseline_available, settings.reserve_bytes) {
            break why;
        }
        let started = now_ns();
        let before = live.len() as u32;
        while (live.len() as u32) < target {
            if interrupted() {
                break 'ladder INTERRUPTED_REASON.to_string();
            }
            let launched = backend
                .start(lab, &spec, &settings.limits)
                .and_then(|mut i| {
                    i.wait_ready()?;
                    if watch.is_some() {
                        i.wait_phase("libraries")?;
                    }
                    Ok(i)
                });
            match launched {
                Ok(instance) => live.push(instance),
                Err(_) if interrupted() => break 'ladder INTERRUPTED_REASON.to_string(),
                Err(e) => {
                    break 'ladder format!("instance {} failed to start: {e}", live.len() + 1)
                }
            }
            progress.position(live.len() as u64);
            progress.sample(
                &format!("{} instance {} of {target}", backend.name(), live.len()),
                true,
            );
        }
        let launch_ns = now_ns() - started;
        let Some(mut step) = measure(
            backend,
            &live,
            before,
            launch_ns,
            baseline_available,
            settings.idle_window,
        ) else {
            break INTERRUPTED_REASON.to_string();
        };
        if let Some(watch) = &watch {
            watch.measure(&live[before as usize..], &live, before == 0, &mut step);
        }
        writer.append(&Record::DensityStep(Box::new(step)))?;
        progress.step_done(&format!(
            "{} N={} ({} more started in {})",
            backend.name(),
            live.len(),
            live.len() as u32 - before,
            duration(Duration::from_nanos(launch_ns))
        ));
        if target >= settings.max {
            break format!("reached --max {}", settings.max);
        }
        target = target.saturating_mul(2).min(settings.max);
    };
    progress.finish();
    progress.note(&format!(
        "{}: stopped at N={}: {reason}",
        backend.name(),
        live.len()
    ));
    let n = live.len() as u32;
    // What the instances reported at start (e.g. that they are emulated), in case none of them
    // reports anything more while it stops.
    let started_facts = live.first().map(|i| i.info().clone()).unwrap_or_default();
    let (teardown_ns, mut info) = teardown(live);
    if info.is_empty() {
        info = started_facts;
    }
    let facts = Facts::from_wire(&info);
    Ok(DensityEnd {
        backend: backend.name().to_string(),
        family: Family::of_run(backend.family(), &facts),
        n,
        reason,
        teardown_ns,
        facts,
    })
}

impl ImageWatch {
    /// The image's figures of a rung: the starts of the `added` instances, what all `live` ones
    /// cost the host with the image's page cache counted once, what KSM merged.
    fn measure(&self, added: &[Instance], live: &[Instance], first: bool, step: &mut DensityStep) {
        let mut starts: Vec<u64> = added
            .iter()
            .filter_map(|i| i.timeline().between("spawn", "libraries"))
            .collect();
        if first {
            step.image.cold_start_ns = starts.first().copied();
        }
        starts.sort_unstable();
        step.image.start_ns = starts.get(starts.len() / 2).copied();
        let saved = match &self.ksm {
            Some(ksm) => {
                let (took, counters) = ksm.settle(Duration::from_secs(60));
                step.image.ksm_settle_ns = Some(took.as_nanos() as u64);
                step.image.ksm_pages_sharing = Some(counters.pages_sharing);
                counters.pages_sharing * 4096
            }
            None => 0,
        };
        let cache: u64 = self
            .files
            .iter()
            .map(|f| isolab_resources::image::pagecache::resident_bytes(f))
            .sum();
        // The instances' own memory: anonymous (a VM's guest RAM with its page cache inside)
        // and kernel. Their file pages are left out where they read a shared image, whose pages
        // are counted once, below; where they share none (a VM reads a copy of its own), their
        // file pages are theirs too.
        let shared = !self.files.is_empty();
        let own: u64 = live
            .iter()
            .filter_map(|i| i.sample_memory().cgroup)
            .map(|c| {
                let file = if shared { 0 } else { c.file_bytes.unwrap_or(0) };
                c.anon_bytes.unwrap_or(0) + c.kernel_bytes.unwrap_or(0) + file
            })
            .sum();
        step.image.image_cache_bytes = Some(cache);
        step.image.host_bytes = Some((own + cache).saturating_sub(saved));
    }
}

/// `Some(reason)` when starting `target` instances would take the host's MemAvailable below the
/// reserve, judging by what the live ones cost so far.
fn over_budget(live: &[Instance], target: u32, baseline: u64, reserve: u64) -> Option<String> {
    let (_, available) = host::meminfo();
    if available < reserve {
        return Some(format!(
            "memory budget: MemAvailable {} MiB is below the reserve of {} MiB",
            available >> 20,
            reserve >> 20
        ));
    }
    if live.is_empty() {
        return None;
    }
    let per_instance = baseline.saturating_sub(available) / live.len() as u64;
    let needed = per_instance * (target as u64 - live.len() as u64);
    (available.saturating_sub(needed) < reserve).then(|| {
        format!(
            "memory budget: {target} instances would need ~{} MiB more, leaving less than the reserve of {} MiB",
            needed >> 20,
            reserve >> 20
        )
    })
}

/// Memory and idle CPU of all live instances, and the family they belong to; `None` when a
/// stop signal cut the idle window short (a step measured over part of its window would not be
/// comparable).
fn measure(
    backend: &dyn Backend,
    live: &[Instance],
    before: u32,
    launch_ns: u64,
    baseline_available: u64,
    window: Duration,
) -> Option<DensityStep> {
    let samples: Vec<_> = live.iter().map(Instance::sample_memory).collect();
    let charged = samples
        .iter()
        .filter_map(|s| s.cgroup)
        .map(|c| c.charged_bytes())
        .sum();
    let kernel = samples
        .iter()
        .filter_map(|s| s.cgroup.and_then(|c| c.kernel_bytes))
        .sum();
    let pss = samples.iter().map(|s| s.processes.pss_bytes).sum();
    let instance = samples.iter().map(|s| s.instance_bytes()).sum();
    let (_, available) = host::meminfo();

    let cgroups: Vec<&Cgroup> = live.iter().filter_map(Instance::cgroup).collect();
    let cpu_before = cpu_time_ns(&cgroups);
    let t0 = now_ns();
    if !isolab_host::interrupt::sleep(window) {
        return None;
    }
    let idle_window_ns = now_ns() - t0;
    let idle_cpu_ns = cpu_time_ns(&cgroups).saturating_sub(cpu_before);

    // Every step says what it measured, so a ladder cut short (a killed lab) still tells an
    // emulated machine from a VM: the instances noted their facts when they started.
    let facts = live
        .first()
        .map_or_else(Facts::default, |i| Facts::from_wire(i.info()));
    Some(DensityStep {
        backend: backend.name().to_string(),
        family: Family::of_run(backend.family(), &facts),
        n: live.len() as u32,
        added: live.len() as u32 - before,
        launch_ns,
        instance_bytes: instance,
        charged_bytes: charged,
        kernel_bytes: kernel,
        pss_bytes: pss,
        mem_available_drop_bytes: baseline_available as i64 - available as i64,
        idle_cpu_ns,
        idle_window_ns,
        image: Default::default(),
    })
}

/// CPU time the instances have used, in ns: their cgroups' own counters (v2 `cpu.stat`'s
/// `usage_usec`, v1 `cpuacct.usage`). These count every thread of every process the cgroup has
/// held — a VMM's vCPU threads, QEMU's TCG threads — where `/proc/PID/schedstat` counts only one
/// thread, the one whose ID is the PID. A v1 instance without a `cpuacct` cgroup (the lab makes
/// one only with a CPU limit: every directory costs start-up time there) is counted thread by
/// thread instead, from `/proc/PID/task/TID/schedstat`.
pub fn cpu_time_ns(cgroups: &[&Cgroup]) -> u64 {
    cgroups
        .iter()
        .map(|c| {
            c.cpu_usage_ns().unwrap_or_else(|| {
                c.pids()
                    .iter()
                    .map(|pid| threads_cpu_ns(pid.as_raw()))
                    .sum()
            })
        })
        .sum()
}

/// CPU time of every thread of process `pid`, in ns (first field of each thread's schedstat).
fn threads_cpu_ns(pid: i32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// Let every instance go at once, then collect them. Returns the wall time it took and the facts
/// the backend's runtime reported for its instances (whether it was emulated, its guest OS, ...).
fn teardown(mut live: Vec<Instance>) -> (u64, BTreeMap<String, String>) {
    let started = now_ns();
    for instance in &mut live {
        instance.let_go();
    }
    let mut facts = BTreeMap::new();
    for instance in live {
        // An instance that fails to stop cleanly is still killed and removed by its Drop.
        if let Ok(run) = instance.finish() {
            if facts.is_empty() {
                facts = run.info;
            }
        }
    }
    (now_ns() - started, facts)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A process whose main thread sleeps while another thread burns CPU, as a VMM's does: the
    /// instance's CPU time must count that thread (the main thread's schedstat alone says ~0).
    #[test]
    fn idle_cpu_counts_every_thread_of_an_instance() {
        let temp = std::env::temp_dir().join(format!("isolab-density-cpu-{}", std::process::id()));
        std::fs::create_dir_all(&temp).unwrap();
        let lab = Lab::in_dir(&temp).unwrap();
        let cg = lab
            .cgroups()
            .unwrap()
            .create(&lab.next_instance_name(), &Limits::default())
            .unwrap();
        // A fork() child joins by itself (on v2 through the fallback, cgroup.procs).
        let join = isolab_resources::cgroup::Placement::of(Some(&cg)).unwrap();
        // SAFETY: the child joins the cgroup, spins a thread and _exits.
        let child = match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                let _ = join.join();
                let spin = std::thread::spawn(|| {
                    let until = std::time::Instant::now() + Duration::from_secs(3);
                    let mut x = 0u64;
                    while std::time::Instant::now() < until {
                        x = std::hint::black_box(x.wrapping_add(1));
                    }
                });
                let _ = spin.join();
                isolab_spawn::child::exit_now(0)
            }
            nix::unistd::ForkResult::Parent { child } => child,
        };
        drop(join);
        std::thread::sleep(Duration::from_millis(200));
        let before = cpu_time_ns(&[&cg]);
        std::thread::sleep(Duration::from_millis(500));
        let used = cpu_time_ns(&[&cg]) - before;
        let main_only = std::fs::read_to_string(format!("/proc/{child}/schedstat"))
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse::<u64>()
            .unwrap();
        nix::sys::wait::waitpid(child, None).unwrap();
        assert!(
            used > 100_000_000,
            "the spinning thread used most of 500 ms: {used} ns"
        );
        assert!(
            main_only < 50_000_000,
            "the main thread slept: {main_only} ns"
        );
        drop(cg);
        drop(lab);
        std::fs::remove_dir_all(&temp).unwrap();
    }
}
