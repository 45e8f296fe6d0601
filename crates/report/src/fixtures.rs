//! Results built by hand for the report's tests: every figure in them is chosen, so a test can
//! say what the report must conclude.
//!
//! A backend's family is what the lab's registry declares for that name
//! (`isolab_backends::by_name`); a backend the registry does not know is
//! [`Family::Unknown`] until a test declares it with [`Fixture::family`] — the way a new
//! backend would declare its own.

use isolab_host::facts::KvmKind;
use isolab_host::memory::ProcessMemory;
use isolab_resources::cgroup::MemoryReading;
use isolab_results::{
    DensityEnd, DensityStep, Environment, Facts, Family, Header, MemorySample, Outcome,
    OutputRecord, Record, Results, RunRecord, Timeline, WorkloadRecord, Writer, SCHEMA,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A results file under construction.
pub struct Fixture {
    header: Header,
    runs: Vec<RunRecord>,
    density: Vec<DensityStep>,
    ends: Vec<DensityEnd>,
    /// The lab's image, for `lab run images` files.
    image: Option<isolab_results::ImageRecord>,
    /// Families declared by tests for backends the registry does not know.
    declared: BTreeMap<String, Family>,
    /// Where the file pretends to be.
    path: Option<PathBuf>,
}

/// The family the lab's registry (`isolab_backends::registry`) declares for `backend`, or
/// unknown: the report reads results only, so its test files name the families themselves.
/// A restored start (`vm/restored`) is of its backend's family.
pub fn declared(backend: &str) -> Family {
    match backend.split('/').next().unwrap_or(backend) {
        "process" => Family::Process,
        "container" | "docker" => Family::Container,
        "ns-floor" => Family::Floor,
        "oci:runsc" => Family::Sandbox,
        b if b.starts_with("oci:") => Family::Container,
        "vm" => Family::VmNoOs,
        "vm-linux" | "qemu" => Family::VmGuestOs,
        _ => Family::Unknown,
    }
}

/// A fixed environment: a host with hardware KVM unless a test says otherwise.
pub fn environment(hostname: &str) -> Environment {
    Environment {
        hostname: hostname.into(),
        cpu_model: "Test CPU".into(),
        cpus: 4,
        memory_bytes: 16 << 30,
        kernel_release: "6.1.0-test".into(),
        kvm: KvmKind::HardwareVtx,
        underneath: Default::default(),
        cgroup: "v2 (controllers: memory, pids, cpu)".into(),
        uid: 0,
        lab_version: "0.1.0".into(),
        commit: "0123456789ab".into(),
        date: "2026-01-02T03:04:05Z".into(),
        machine: Default::default(),
    }
}

fn workload(kernel: &str, mib: u64, iters: u64) -> WorkloadRecord {
    WorkloadRecord {
        kernel: kernel.into(),
        mib,
        iters,
        seed: 1,
    }
}

/// A completed `ready` run whose start-up took `ns`, split into cgroup (10%), fork (20%) and the
/// rest until ready.
pub fn startup_run(backend: &str, round: u32, ns: u64) -> RunRecord {
    let mut phases = Timeline::default();
    let t0 = 1_000_000_000 + u64::from(round) * 1_000_000_000;
    phases.push("spawn", t0);
    phases.push("cgroup", t0 + ns / 10);
    phases.push("fork", t0 + ns * 3 / 10);
    phases.push("ready", t0 + ns);
    phases.push("done", t0 + ns + 1000);
    phases.push("exited", t0 + ns + 2000);
    RunRecord {
        backend: backend.into(),
        family: declared(backend),
        round,
        order: 0,
        warmup: false,
        workload: workload("ready", 0, 0),
        outcome: Outcome::Completed,
        startup_ns: Some(ns),
        work_ns: Some(1000),
        phases,
        output: Some(OutputRecord {
            checksum: "0xc0ffee1501ab0001".into(),
            ops: 0,
            bytes: 0,
        }),
        memory_at_ready: None,
        memory_at_done: None,
        cgroup_peak_bytes: None,
        cpu_ns: None,
        probe: vec![],
        facts: Facts::default(),
        neighbours: None,
        traced: None,
        children_cpu_ns: None,
    }
}

/// The same run, flagged warm-up.
pub fn warmup(mut run: RunRecord) -> RunRecord {
    run.warmup = true;
    run
}

fn sample(charged: u64) -> MemorySample {
    // Split the charge exactly as memory.stat would: mostly anonymous, some kernel.
    let kernel = charged / 8;
    MemorySample {
        cgroup: Some(MemoryReading {
            current_bytes: charged.next_multiple_of(256 << 10),
            peak_bytes: None,
            anon_bytes: Some(charged - kernel),
            file_bytes: Some(0),
            kernel_bytes: Some(kernel),
        }),
        processes: ProcessMemory {
            rss_bytes: charged,
            pss_bytes: charged - kernel,
            uss_bytes: charged - kernel,
            anon_pss_bytes: charged - kernel,
            processes: 1,
        },
    }
}

impl Fixture {
    /// An empty results file of `experiment` on host `testhost`.
    pub fn new(experiment: &str) -> Fixture {
        Fixture {
            header: Header {
                schema: SCHEMA.into(),
                experiment: experiment.into(),
                environment: environment("testhost"),
                settings: serde_json::json!({"runs": 5, "warmup": 1, "shuffle_seed": 1}),
                skipped: vec![],
            },
            runs: vec![],
            density: vec![],
            ends: vec![],
            image: None,
            declared: BTreeMap::new(),
            path: None,
        }
    }

    /// Pretend the file is at `path` (several files of one host need different directories).
    pub fn at(&mut self, path: &str) -> &mut Self {
        self.path = Some(path.into());
        self
    }

    /// Declare `backend`'s family, as its backend would.
    pub fn family(&mut self, backend: &str, family: Family) -> &mut Self {
        self.declared.insert(backend.into(), family);
        self.refresh(backend)
    }

    fn declared_family(&self, backend: &str) -> Family {
        self.declared
            .get(backend)
            .copied()
            .unwrap_or_else(|| declared(backend))
    }

    /// Give every record of `backend` the family its declaration and facts make.
    fn refresh(&mut self, backend: &str) -> &mut Self {
        let declared = self.declared_family(backend);
        let facts = self
            .runs
            .iter()
            .filter(|r| r.backend == backend)
            .map(|r| r.facts.clone())
            .chain(
                self.ends
                    .iter()
                    .filter(|e| e.backend == backend)
                    .map(|e| e.facts.clone()),
            )
            .next()
            .unwrap_or_default();
        for r in self.runs.iter_mut().filter(|r| r.backend == backend) {
            r.family = Family::of_run(declared, &r.facts);
        }
        for d in self.density.iter_mut().filter(|d| d.backend == backend) {
            d.family = Family::of_run(declared, &facts);
        }
        for e in self.ends.iter_mut().filter(|e| e.backend == backend) {
            e.family = Family::of_run(declared, &e.facts);
        }
        self
    }

    /// Change the environment.
    pub fn env(&mut self, f: impl FnOnce(&mut Environment)) -> &mut Self {
        f(&mut self.header.environment);
        self
    }

    /// Report the fact `key = value` (as the wire would) on every run and density end of
    /// `backend` so far; its family follows (an emulated VM is emulated).
    pub fn note(&mut self, backend: &str, key: &str, value: &str) -> &mut Self {
        for r in self.runs.iter_mut().filter(|r| r.backend == backend) {
            r.facts.set(key, value);
        }
        for e in self.ends.iter_mut().filter(|e| e.backend == backend) {
            e.facts.set(key, value);
        }
        self.refresh(backend)
    }

    /// Add a run, with the family its backend declares.
    pub fn push(&mut self, mut run: RunRecord) -> &mut Self {
        run.family = Family::of_run(self.declared_family(&run.backend), &run.facts);
        self.runs.push(run);
        self
    }

    /// A start-up sample.
    pub fn startup(&mut self, backend: &str, round: u32, ns: u64) -> &mut Self {
        self.push(startup_run(backend, round, ns))
    }

    /// A memory sample: the cgroup charged `ready_bytes` at ready and `done_bytes` at done.
    pub fn memory(
        &mut self,
        backend: &str,
        round: u32,
        mib: u64,
        ready_bytes: u64,
        done_bytes: u64,
    ) -> &mut Self {
        let mut run = startup_run(backend, round, 1_000_000);
        run.workload = workload("mem", mib, 1);
        run.memory_at_ready = Some(sample(ready_bytes));
        run.memory_at_done = Some(sample(done_bytes));
        self.push(run)
    }

    /// A throughput sample: `ops` operations in `work_ns`, with `checksum`.
    pub fn work(
        &mut self,
        backend: &str,
        round: u32,
        kernel: &str,
        ops: u64,
        work_ns: u64,
        checksum: &str,
    ) -> &mut Self {
        let mut run = startup_run(backend, round, 1_000_000);
        run.workload = workload(kernel, 0, ops);
        run.work_ns = Some(work_ns);
        run.output = Some(OutputRecord {
            checksum: checksum.into(),
            ops,
            bytes: 0,
        });
        self.push(run)
    }

    /// An interference sample: `victim` on `backend` in `config`, beside `count` aggressors of
    /// kind `aggressor` (none: alone), done in `work_ns`. Each aggressor reports `facts` (wire
    /// keys and values) and ends `completed`; `outcome` is the victim's.
    #[allow(clippy::too_many_arguments)]
    pub fn neighbour(
        &mut self,
        backend: &str,
        round: u32,
        victim: &str,
        config: isolab_results::Config,
        aggressor: Option<(&str, u32)>,
        work_ns: u64,
        outcome: Outcome,
        facts: &[(&str, &str)],
    ) -> &mut Self {
        let mut run = startup_run(backend, round, 1_000_000);
        run.workload = workload(victim, 0, 1000);
        run.work_ns = Some(work_ns);
        run.output = (outcome == Outcome::Completed).then(|| OutputRecord {
            checksum: "0x01".into(),
            ops: 1000,
            bytes: 0,
        });
        run.outcome = outcome;
        let mut aggressor_facts = Facts::default();
        for (k, v) in facts {
            aggressor_facts.set(k, v);
        }
        let count = aggressor.map_or(0, |(_, n)| n);
        run.neighbours = Some(isolab_results::Neighbours {
            config,
            aggressor: aggressor.map(|(a, _)| a.to_string()),
            count,
            limits: Default::default(),
            aggressor_limits: None,
            aggressors: (0..count)
                .map(|_| isolab_results::AggressorRecord {
                    workload: workload(aggressor.map_or("cpu", |(a, _)| a), 0, 0),
                    outcome: Outcome::Completed,
                    cpu_ns: None,
                    cgroup_peak_bytes: None,
                    facts: aggressor_facts.clone(),
                    evidence: Default::default(),
                })
                .collect(),
            not_measured: None,
        });
        self.push(run)
    }

    /// A density step: `n` alive after adding `added`, charging `charged` bytes in all.
    pub fn density_step(&mut self, backend: &str, n: u32, added: u32, charged: u64) -> &mut Self {
        self.density.push(DensityStep {
            backend: backend.into(),
            family: self.declared_family(backend),
            n,
            added,
            launch_ns: u64::from(added) * 2_000_000,
            instance_bytes: charged,
            charged_bytes: charged,
            kernel_bytes: charged / 8,
            pss_bytes: charged - charged / 8,
            mem_available_drop_bytes: (charged + charged / 10) as i64,
            idle_cpu_ns: u64::from(n) * 1000,
            idle_window_ns: 1_000_000_000,
            image: Default::default(),
        });
        self
    }

    /// A rung of `lab run images`: `n` instances of the lab's image holding `host` bytes of the
    /// host's memory together (KSM having merged `ksm_pages`, when on).
    pub fn image_step(
        &mut self,
        backend: &str,
        n: u32,
        host: u64,
        ksm_pages: Option<u64>,
    ) -> &mut Self {
        self.density_step(backend, n, n - n / 2, host);
        let step = self.density.last_mut().expect("just pushed");
        step.image.host_bytes = Some(host);
        step.image.image_cache_bytes = Some(64 << 20);
        step.image.start_ns = Some(5_000_000);
        step.image.ksm_pages_sharing = ksm_pages;
        self
    }

    /// The lab's image as `lab run images` records it, with Docker's build and rebuild, each
    /// step cached or not as `first` and `rebuild` say (`FROM`, base, app).
    pub fn image(&mut self, docker: Option<([bool; 3], [bool; 3])>) -> &mut Self {
        use isolab_resources::image::docker::{Build, Step};
        let build = |cached: [bool; 3]| {
            let layers = vec![
                ("COPY base".to_string(), 64u64 << 20),
                ("COPY app".to_string(), 30),
            ];
            Build {
                tag: "t".into(),
                steps: ["FROM scratch", "COPY base/ /", "COPY app/ /"]
                    .iter()
                    .zip(cached)
                    .map(|(i, c)| Step {
                        instruction: i.to_string(),
                        cached: c,
                    })
                    .collect(),
                written_bytes: layers
                    .iter()
                    .zip(&cached[1..])
                    .filter(|(_, c)| !**c)
                    .map(|(l, _)| l.1)
                    .sum(),
                layers,
                build_ns: 1_000_000_000,
            }
        };
        self.image = Some(isolab_results::ImageRecord {
            layers: vec![("base".into(), 64 << 20), ("app".into(), 30)],
            lib_mib: 64,
            vm_disk_shared: false,
            docker: docker.map(|(f, r)| isolab_results::DockerBuilds {
                first: build(f),
                rebuild: build(r),
            }),
        });
        self
    }

    /// The end of a density ladder.
    pub fn density_end(&mut self, backend: &str, n: u32, reason: &str) -> &mut Self {
        self.ends.push(DensityEnd {
            backend: backend.into(),
            family: self.declared_family(backend),
            n,
            reason: reason.into(),
            teardown_ns: u64::from(n) * 500_000,
            facts: Facts::default(),
        });
        self.refresh(backend)
    }

    /// A probe sample reporting `facts`.
    pub fn probe(&mut self, backend: &str, facts: &[(&str, &str)]) -> &mut Self {
        let mut run = startup_run(backend, 0, 1_000_000);
        run.workload = workload("probe", 0, 0);
        run.probe = facts
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.push(run)
    }

    /// The results, as if read from `/fixture/<experiment>/results.jsonl` (or where
    /// [`Fixture::at`] says).
    pub fn results(&self) -> Results {
        Results::new(
            self.path.clone().unwrap_or_else(|| {
                PathBuf::from(format!("/fixture/{}/results.jsonl", self.header.experiment))
            }),
            self.header.clone(),
            self.runs.clone(),
            self.density.clone(),
            self.ends.clone(),
            self.image.clone(),
        )
    }

    /// Write the file into `dir` and read it back.
    pub fn write(&self, dir: &Path) -> Results {
        let mut w = Writer::create(dir, &self.header).unwrap();
        for r in &self.runs {
            w.append(&Record::Run(Box::new(r.clone()))).unwrap();
        }
        for d in &self.density {
            w.append(&Record::DensityStep(Box::new(d.clone()))).unwrap();
        }
        for e in &self.ends {
            w.append(&Record::DensityEnd(Box::new(e.clone()))).unwrap();
        }
        Results::read(w.path()).unwrap()
    }
}
