//! `cargo bench --bench cpu_ratio`: does pure computation run as fast in the microVM as in a
//! plain process?
//!
//! The method of GUIDE §5: rounds in which each backend runs the default `cpu` kernel once, in an
//! order shuffled afresh each round, so drift of a shared machine falls on both alike. The ratio
//! is taken pair by pair within a round — `process work_ns / vm work_ns`, the microVM's speed
//! relative to the process, 1.0 = equal — and summarised as the median with a bootstrap 95%
//! confidence interval.
//!
//! `ISOLAB_ROUNDS` sets the number of measured rounds (default 40; three warm-up rounds come
//! first and are left out), `ISOLAB_CPU_ITERS` the kernel's iterations (default: the kernel's
//! default, about 35 ms of work).

use isolab_backends as backend;
use isolab_backends::lab::Lab;
use isolab_backends::{Availability, Backend, Limits, Outcome};
use isolab_host::stats::Summary;
use isolab_kernels::rng::Rng;
use isolab_payload::{Kernel, Spec};

const WARMUP: usize = 3;

fn work_ns(backend: &dyn Backend, lab: &Lab, spec: &Spec) -> f64 {
    let run = backend
        .run(lab, spec, &Limits::default())
        .unwrap_or_else(|e| panic!("{}: {e}", backend.name()));
    assert_eq!(run.outcome, Outcome::Completed, "{}", backend.name());
    run.work_ns().expect("ready and done were stamped") as f64
}

fn show(label: &str, s: &Summary, unit: f64, suffix: &str) {
    println!(
        "{label:<28} median {:>8.3}{suffix}  95% CI {:.3}–{:.3}{suffix}  (p5 {:.3}, p95 {:.3}, n {})",
        s.median / unit,
        s.ci_low / unit,
        s.ci_high / unit,
        s.p5 / unit,
        s.p95 / unit,
        s.n
    );
}

fn main() {
    let env = |key: &str| std::env::var(key).ok().and_then(|v| v.parse::<u64>().ok());
    let rounds = env("ISOLAB_ROUNDS").unwrap_or(40) as usize;
    let lab = Lab::new().expect("a work directory for the lab");
    let pair: Vec<Box<dyn Backend>> = ["process", "vm"]
        .into_iter()
        .map(|name| backend::by_name(name).expect("a known backend"))
        .collect();
    for b in &pair {
        if let Availability::Unavailable(why) = b.availability(&lab) {
            println!(
                "cpu_ratio: skipped, {} is unavailable here: {why}",
                b.name()
            );
            return;
        }
    }
    let mut spec = Spec::default_for(Kernel::Cpu);
    spec.iters = env("ISOLAB_CPU_ITERS").unwrap_or(spec.iters);
    println!("cpu_ratio: {spec}, {rounds} rounds (+{WARMUP} warm-up), order shuffled each round");

    let mut rng = Rng::new(0x15_01ab_c0de);
    let mut order = [0usize, 1];
    let (mut process, mut vm, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..WARMUP + rounds {
        rng.shuffle(&mut order);
        let mut ns = [0.0; 2];
        for &i in &order {
            ns[i] = work_ns(pair[i].as_ref(), &lab, &spec);
        }
        if round >= WARMUP {
            process.push(ns[0]);
            vm.push(ns[1]);
            ratio.push(ns[0] / ns[1]);
        }
    }
    let summary = |v: &[f64]| Summary::of(v).expect("samples");
    show("process cpu kernel", &summary(&process), 1e6, " ms");
    show("vm cpu kernel", &summary(&vm), 1e6, " ms");
    show("vm speed ÷ process speed", &summary(&ratio), 1.0, "×");
}
