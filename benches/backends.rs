//! `cargo bench --bench backends`: what each isolation model costs, measured by criterion on the
//! host clock the backends themselves report.
//!
//! A backend run is a whole instance — a fork, a cgroup, maybe a VM — so wall time around it
//! would measure the lab as much as the instance. Each benchmark therefore uses
//! `Bencher::iter_custom` and returns the time the instance reported for the part that matters:
//!
//! * `launch_to_ready/<backend>` — `Run::startup_ns()`, launch requested → the workload's first
//!   instruction, summed over the iterations;
//! * `round_trip/<backend>` — one iteration is one crossing of the isolation boundary: the
//!   `syscall` kernel with `iters` calls, timed `ready → done` (`Run::work_ns()`). In `vm` each
//!   call is one hypercall, i.e. one VM exit and re-entry; in `process` one `getppid(2)`;
//! * `cpu_1M_iterations/<backend>` — one iteration is a million rounds of the `cpu` kernel,
//!   timed `ready → done`.
//!
//! For the round trip, criterion's linear sampling (samples of 1×, 2×, … n× the calls) lets its
//! regression remove what every run pays once (reading the spec, the `done` marker), leaving the
//! cost of one crossing. The other two use flat sampling: each iteration is expensive already.

use criterion::{BenchmarkGroup, Criterion, SamplingMode};
use isolab_backends as backend;
use isolab_backends::lab::Lab;
use isolab_backends::{Availability, Backend, Limits, Outcome, Run};
use isolab_payload::{Kernel, Spec};
use std::time::Duration;

/// Run one instance to completion; a failure ends the benchmark with the reason.
fn run(backend: &dyn Backend, lab: &Lab, spec: &Spec) -> Run {
    let run = backend
        .run(lab, spec, &Limits::default())
        .unwrap_or_else(|e| panic!("{} {spec}: {e}", backend.name()));
    assert_eq!(run.outcome, Outcome::Completed, "{} {spec}", backend.name());
    run
}

/// The backends named, those of them that can run here.
fn backends(lab: &Lab, names: &[&str]) -> Vec<Box<dyn Backend>> {
    names
        .iter()
        .filter_map(|name| {
            let backend = backend::by_name(name)?;
            match backend.availability(lab) {
                Availability::Available => Some(backend),
                Availability::Unavailable(why) => {
                    eprintln!("skipping {name}: {why}");
                    None
                }
            }
        })
        .collect()
}

fn expensive(group: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    // Every sample launches instances: few samples, each of one size, and no wall-clock
    // extrapolation from a tiny first guess.
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
}

fn launch_to_ready(c: &mut Criterion, lab: &Lab) {
    let mut group = c.benchmark_group("launch_to_ready");
    expensive(&mut group);
    let spec = Spec::default_for(Kernel::Ready);
    for backend in backends(lab, &["process", "container", "vm"]) {
        group.bench_function(backend.name().to_string(), |b| {
            b.iter_custom(|iters| {
                let ns: u64 = (0..iters)
                    .map(|_| run(backend.as_ref(), lab, &spec).startup_ns().unwrap())
                    .sum();
                Duration::from_nanos(ns)
            })
        });
    }
    group.finish();
}

fn round_trip(c: &mut Criterion, lab: &Lab) {
    let mut group = c.benchmark_group("round_trip");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for backend in backends(lab, &["process", "vm"]) {
        group.bench_function(backend.name().to_string(), |b| {
            b.iter_custom(|iters| {
                let spec = Spec::new(Kernel::Syscall, 0, iters);
                Duration::from_nanos(run(backend.as_ref(), lab, &spec).work_ns().unwrap())
            })
        });
    }
    group.finish();
}

fn cpu(c: &mut Criterion, lab: &Lab) {
    const ROUNDS_PER_ITERATION: u64 = 1_000_000;
    let mut group = c.benchmark_group("cpu_1M_iterations");
    expensive(&mut group);
    for backend in backends(lab, &["process", "container", "vm"]) {
        group.bench_function(backend.name().to_string(), |b| {
            b.iter_custom(|iters| {
                let spec = Spec::new(Kernel::Cpu, 0, iters * ROUNDS_PER_ITERATION);
                Duration::from_nanos(run(backend.as_ref(), lab, &spec).work_ns().unwrap())
            })
        });
    }
    group.finish();
}

fn main() {
    // One lab for every benchmark; dropping it at the end removes its work directory.
    let lab = Lab::new().expect("a work directory for the lab");
    let mut c = Criterion::default().configure_from_args();
    launch_to_ready(&mut c, &lab);
    round_trip(&mut c, &lab);
    cpu(&mut c, &lab);
    c.final_summary();
}
