//! The checks of the container track: what a student's runtime must make true, step by step.
//!
//! Each check starts the student's runtime through the `student:container` backend — the same
//! way `lab run` will measure it — with values chosen at random for this check (the host name,
//! the name of a file in the root, the capability set, the memory limit, the workload's seed),
//! so that nothing can be hard-coded. It then looks from inside (the workload's `probe`) and
//! from outside (`/proc`, the cgroup, the mount namespace) on the real kernel. Step `k` runs
//! the tests of steps 1 to `k`: a later step must not break an earlier one.

use crate::{inspect, native_output, random_seed, todo_or_fail, Test};
use isolab_backends::lab::Lab;
use isolab_backends::student::{Kind, Student};
use isolab_backends::{Backend, BackendError, Instance, Limits, Outcome, Run};
use isolab_kernels::rng::Rng;
use isolab_payload::{Kernel, Spec};
use nix::unistd::Pid;
use std::fs;
use std::path::{Path, PathBuf};

/// Capabilities `lab check` may add to Docker's set: harmless inside a container's own
/// namespaces, and absent from Docker's list, so a runtime that ignores `--caps` shows.
const EXTRA_CAPS: [u32; 4] = [12, 14, 16, 19]; // NET_ADMIN, IPC_LOCK, SYS_RESOURCE, SYS_PTRACE

/// What this check chose at random.
struct Choices {
    hostname: String,
    marker: String,
    caps: Vec<u32>,
    memory_mib: u64,
    seed: u64,
    iters: u64,
}

impl Choices {
    fn new(rng: &mut Rng) -> Choices {
        let mut caps: Vec<u32> = isolab_container::capabilities::DOCKER_DEFAULT
            .iter()
            .map(|c| c.0)
            .collect();
        caps.remove(rng.below(caps.len() as u64) as usize);
        caps.push(EXTRA_CAPS[rng.below(EXTRA_CAPS.len() as u64) as usize]);
        caps.sort_unstable();
        Choices {
            hostname: format!("box-{:06x}", rng.below(1 << 24)),
            marker: format!("isolab-{:08x}", rng.below(1 << 32)),
            caps,
            memory_mib: 48 + 4 * rng.below(12),
            seed: rng.next_u64() >> 1,
            iters: 100_000 + rng.below(400_000),
        }
    }

    fn cap_mask(&self) -> u64 {
        self.caps.iter().fold(0, |m, c| m | 1 << c)
    }
}

/// Run the tests of steps `1..=step` on the runtime at `program`; the tests, and what was
/// measured.
pub fn check(
    step: u32,
    program: &Path,
    lab: &Lab,
    say: &mut dyn FnMut(&str),
) -> (Vec<Test>, Vec<String>) {
    if !nix::unistd::geteuid().is_root() {
        return (
            vec![Test::fail(
                "running as root",
                "the container exercises create namespaces and cgroups without a user namespace: \
                 run lab as root (sudo)",
            )],
            Vec::new(),
        );
    }
    let mut rng = Rng::new(random_seed());
    let choices = Choices::new(&mut rng);
    let checker = Checker {
        program: program.to_path_buf(),
        lab,
        choices,
    };
    say("running your runtime");
    let mut tests = Vec::new();
    for s in 1..=step {
        tests.extend(checker.step(s));
    }
    (tests, checker.measure())
}

struct Checker<'a> {
    program: PathBuf,
    lab: &'a Lab,
    choices: Choices,
}

/// What the outside view of a sleeping container found.
#[derive(Default)]
struct Outside {
    runtime: Option<Pid>,
    workload: Option<Pid>,
    workload_parent: Option<Pid>,
    ns_pid: Option<String>,
    cap_bounding: Option<String>,
    host_root: Option<Result<bool, String>>,
    /// Mounts of the container seen in the mount namespace the runtime was started in, if the
    /// runtime is still there to show it.
    leaked_mounts: Option<Vec<String>>,
    limit_file: Option<(String, String)>,
}

impl Checker<'_> {
    fn backend(&self) -> Student {
        let mut b = Student::new(Kind::Container, self.program.clone(), false);
        b.options.hostname = Some(self.choices.hostname.clone());
        b.options.caps = Some(self.choices.caps.clone());
        b.options.root_marker = self.choices.marker.clone();
        // Every host alike: a `/` that is shared, as systemd makes it (see `shared_root`).
        b.options.shared_root = true;
        b
    }

    fn run(&self, backend: &Student, spec: Spec) -> Result<Run, BackendError> {
        backend.run(self.lab, &spec, &Limits::default())
    }

    /// Start a `sleep` workload, look at it from outside while it sleeps, and let it go.
    fn sleeping(&self, backend: &Student) -> (Outside, Result<Run, BackendError>) {
        let mut outside = Outside::default();
        let spec = Spec::default_for(Kernel::Sleep);
        let mut instance = match backend.start(self.lab, &spec, &Limits::default()) {
            Ok(i) => i,
            Err(e) => return (outside, Err(e)),
        };
        if instance.wait_ready().is_ok() {
            outside = look(&instance, self.lab.workdir());
        }
        (outside, instance.stop())
    }

    fn step(&self, step: u32) -> Vec<Test> {
        match step {
            1 => self.step1(),
            2 => self.step2(),
            3 => self.step3(),
            4 => self.step4(),
            5 => self.step5(),
            6 => self.step6(),
            7 => self.step7(),
            _ => Vec::new(),
        }
    }

    fn probe(&self) -> Result<Run, BackendError> {
        self.run(&self.backend(), Spec::default_for(Kernel::Probe))
    }

    fn step1(&self) -> Vec<Test> {
        let b = self.backend();
        let mut tests = Vec::new();
        let name = "1 · the workload runs in your container and reports ready";
        tests.push(match self.run(&b, Spec::default_for(Kernel::Ready)) {
            Ok(run) if run.outcome == Outcome::Completed => Test::pass(name),
            Ok(run) => todo_or_fail(name, 1, &run, || describe(&run)),
            Err(e) => Test::fail(name, e.to_string()),
        });
        let mut spec = Spec::new(Kernel::Cpu, 0, self.choices.iters);
        spec.seed = self.choices.seed;
        let expected = native_output(&spec).checksum;
        let name = "1 · it runs the command it was given (cpu kernel, a random seed)";
        tests.push(match self.run(&b, spec) {
            Ok(run) => match run.output {
                Some(o) if o.checksum == expected => Test::pass(name),
                Some(o) => Test::fail(
                    name,
                    format!(
                        "checksum {:#x}, expected {expected:#x}: pass every word after `--` to the program, unchanged",
                        o.checksum
                    ),
                ),
                None => todo_or_fail(name, 1, &run, || describe(&run)),
            },
            Err(e) => Test::fail(name, e.to_string()),
        });
        let (outside, run) = self.sleeping(&b);
        let name = "1 · the runtime is the workload's parent and waits for it";
        tests.push(match (&outside.runtime, &outside.workload, &run) {
            (Some(rt), Some(_), _) if outside.workload_parent == Some(*rt) => Test::pass(name),
            (Some(_), Some(_), _) => Test::fail(
                name,
                "the workload's parent is not your runtime: fork, exec in the child, and wait in the parent",
            ),
            (_, _, Ok(run)) => todo_or_fail(name, 1, run, || {
                "no workload process was found beside your runtime while it slept".into()
            }),
            (_, _, Err(e)) => Test::fail(name, e.to_string()),
        });
        let mut bad = b.clone();
        bad.options.workload_args = vec!["bogus=1".into()];
        let name = "1 · the runtime exits with the workload's exit status";
        tests.push(match self.run(&bad, Spec::default_for(Kernel::Ready)) {
            Ok(run) => match &run.outcome {
                Outcome::Failed { reason } if reason.contains("exited with status 2") => {
                    Test::pass(name)
                }
                _ => todo_or_fail(name, 1, &run, || {
                    format!(
                        "given a bad argument the workload exits with status 2, but your runtime {}: \
                         exit with the status waitpid reports",
                        describe(&run)
                    )
                }),
            },
            Err(e) => Test::fail(name, e.to_string()),
        });
        tests
    }

    fn step2(&self) -> Vec<Test> {
        let mut tests = Vec::new();
        let name = "2 · / holds the container's root and nothing else";
        let mut want = [
            "dev",
            "proc",
            "tmp",
            "workload",
            self.choices.marker.as_str(),
        ];
        want.sort_unstable();
        let want = want.join(",");
        tests.push(match self.probe() {
            Ok(run) => match fact(&run, "root_entries") {
                Some(got) if got == want => Test::pass(name),
                Some(got) => todo_or_fail(name, 2, &run, || {
                    format!(
                        "the workload's / holds {}: make --rootfs its root",
                        shorten(&got)
                    )
                }),
                None => todo_or_fail(name, 2, &run, || describe_step2(&run)),
            },
            Err(e) => Test::fail(name, error_step2(&e)),
        });
        let (outside, run) = self.sleeping(&self.backend());
        let name = "2 · the host's root is gone from the container's mount namespace";
        tests.push(match (&outside.host_root, &run) {
            (Some(Ok(false)), _) => Test::pass(name),
            (Some(Ok(true)), Ok(run)) => todo_or_fail(name, 2, run, || {
                "the host's / is still mounted in the container's mount namespace: a chroot can be \
                 escaped (chroot into a subdirectory, then chdir(\"..\") past the old root). Use \
                 pivot_root in a mount namespace of its own, then unmount the old root"
                    .into()
            }),
            (Some(Err(e)), _) => Test::fail(name, e.clone()),
            (_, Ok(run)) => todo_or_fail(name, 2, run, || describe_step2(run)),
            (_, Err(e)) => Test::fail(name, error_step2(e)),
        });
        let name = "2 · no mount of the container appears on the host";
        tests.push(match (&outside.leaked_mounts, &run) {
            (Some(leaked), _) if leaked.is_empty() => Test::pass(name),
            (Some(leaked), _) => Test::fail(
                name,
                format!(
                    "the mount namespace lab started your runtime in (its / shared, as systemd \
                     makes a host's) shows {}: make the new mount namespace's mounts private \
                     (MS_REC | MS_PRIVATE on /) before mounting anything",
                    leaked.join(", ")
                ),
            ),
            // Nothing to look at: the runtime failed before its workload slept.
            (None, Ok(run)) => todo_or_fail(name, 2, run, || describe_step2(run)),
            (None, Err(e)) => Test::fail(name, error_step2(e)),
        });
        tests
    }

    fn step3(&self) -> Vec<Test> {
        let name = "3 · the workload is PID 1 of its own PID namespace";
        let test = match self.probe() {
            Ok(run) => match fact(&run, "pid") {
                Some(pid) if pid == "1" => Test::pass(name),
                Some(pid) => todo_or_fail(name, 3, &run, || {
                    format!("the workload's PID is {pid}: unshare a PID namespace before you fork")
                }),
                None => todo_or_fail(name, 3, &run, || describe(&run)),
            },
            Err(e) => Test::fail(name, e.to_string()),
        };
        let (outside, run) = self.sleeping(&self.backend());
        let ns_pid: Vec<&str> = outside
            .ns_pid
            .as_deref()
            .map_or(Vec::new(), |s| s.split_whitespace().collect());
        let name = "3 · seen from the host, its PID namespace is nested in the host's";
        let outer = match run {
            _ if ns_pid.len() == 2 && ns_pid[1] == "1" => Test::pass(name),
            Ok(run) => todo_or_fail(name, 3, &run, || {
                format!(
                    "/proc/PID/status of the workload says NSpid: {}",
                    outside.ns_pid.as_deref().unwrap_or("(no workload found)")
                )
            }),
            Err(e) => Test::fail(name, e.to_string()),
        };
        vec![test, outer]
    }

    fn step4(&self) -> Vec<Test> {
        let before = isolab_host::facts::hostname();
        let probe = self.probe();
        let after = isolab_host::facts::hostname();
        let renamed = before != after;
        if renamed {
            // Put the machine's name back before anything else.
            let _ = nix::unistd::sethostname(&before);
        }
        let mut tests = Vec::new();
        let name = "4 · the container has the host name it was given";
        tests.push(match &probe {
            Ok(run) => match fact(run, "hostname") {
                Some(h) if h == self.choices.hostname => Test::pass(name),
                Some(h) => todo_or_fail(name, 4, run, || {
                    format!("the workload sees host name \"{h}\": set --hostname in a UTS namespace")
                }),
                None => todo_or_fail(name, 4, run, || describe(run)),
            },
            Err(e) => Test::fail(name, e.to_string()),
        });
        tests.push(Test::expect(
            "4 · the host's name is untouched",
            !renamed,
            || {
                format!(
                    "your runtime renamed this machine to \"{after}\" (the lab put \"{before}\" back): \
                     sethostname outside a new UTS namespace changes the host's name"
                )
            },
        ));
        let name = "4 · /proc lists only the container's processes";
        tests.push(match &probe {
            Ok(run) => match fact(run, "pids_visible") {
                Some(n) if n == "1" => Test::pass(name),
                Some(n) => todo_or_fail(name, 4, run, || {
                    format!(
                        "the workload sees {n} processes in /proc: mount a fresh proc at /proc \
                         from inside the new PID namespace"
                    )
                }),
                None => todo_or_fail(name, 4, run, || describe(run)),
            },
            Err(e) => Test::fail(name, e.to_string()),
        });
        tests
    }

    fn step5(&self) -> Vec<Test> {
        let name = "5 · the only network interface is the container's own loopback";
        vec![match self.probe() {
            Ok(run) => match fact(&run, "interfaces") {
                Some(i) if i == "lo" => Test::pass(name),
                Some(i) => todo_or_fail(name, 5, &run, || {
                    format!("the workload sees interfaces \"{i}\": give it a network namespace")
                }),
                None => todo_or_fail(name, 5, &run, || describe(&run)),
            },
            Err(e) => Test::fail(name, e.to_string()),
        }]
    }

    fn step6(&self) -> Vec<Test> {
        let limit = self.choices.memory_mib << 20;
        let mut b = self.backend();
        b.options.memory_limit = Some(limit);
        let mut tests = Vec::new();
        let (outside, run) = self.sleeping(&b);
        let name = "6 · the cgroup holds the memory limit it was given";
        tests.push(match (&outside.limit_file, &run) {
            (Some((_, value)), _) if value.trim() == limit.to_string() => Test::pass(name),
            (Some((file, value)), Ok(run)) => todo_or_fail(name, 6, run, || {
                format!("{file} holds {}, not --memory-limit {limit}", value.trim())
            }),
            (_, Ok(run)) => todo_or_fail(name, 6, run, || describe(run)),
            (_, Err(e)) => Test::fail(name, e.to_string()),
        });
        let over = Spec::new(Kernel::Mem, self.choices.memory_mib + 32, 1);
        let name = "6 · a workload that touches more than the limit is killed by the OOM killer";
        tests.push(match self.run(&b, over) {
            Ok(run) if run.outcome == Outcome::OomKilled => Test::pass(name),
            Ok(run) => todo_or_fail(name, 6, &run, || {
                format!(
                    "touching {} MiB under a {} MiB limit ended as {}",
                    over.mib,
                    self.choices.memory_mib,
                    describe(&run)
                )
            }),
            Err(e) => Test::fail(name, e.to_string()),
        });
        let under = Spec::new(Kernel::Mem, 8, 1);
        let name = "6 · a workload under the limit runs to the end";
        tests.push(match self.run(&b, under) {
            Ok(run) if run.outcome == Outcome::Completed => Test::pass(name),
            Ok(run) => Test::fail(name, format!("touching 8 MiB ended as {}", describe(&run))),
            Err(e) => Test::fail(name, e.to_string()),
        });
        tests
    }

    fn step7(&self) -> Vec<Test> {
        let mask = self.choices.cap_mask();
        let mut tests = Vec::new();
        let probe = self.probe();
        let name = "7 · the workload's effective capabilities are exactly --caps";
        tests.push(match &probe {
            Ok(run) => match fact(run, "cap_eff").and_then(|c| u64::from_str_radix(&c, 16).ok()) {
                Some(eff) if eff == mask => Test::pass(name),
                Some(eff) => todo_or_fail(name, 7, run, || {
                    format!(
                        "CapEff is {eff:016x}; --caps asked for {mask:016x} (extra: {:x}, missing: {:x})",
                        eff & !mask,
                        mask & !eff
                    )
                }),
                None => todo_or_fail(name, 7, run, || describe(run)),
            },
            Err(e) => Test::fail(name, e.to_string()),
        });
        let (outside, run) = self.sleeping(&self.backend());
        let name = "7 · its bounding set is --caps too (what root gets back after exec)";
        let bounding = outside
            .cap_bounding
            .as_deref()
            .and_then(|c| u64::from_str_radix(c, 16).ok());
        tests.push(match (bounding, &run) {
            (Some(b), _) if b == mask => Test::pass(name),
            (Some(b), Ok(run)) => todo_or_fail(name, 7, run, || {
                format!("CapBnd is {b:016x}; drop every capability not in --caps from the bounding set")
            }),
            (_, Ok(run)) => todo_or_fail(name, 7, run, || describe(run)),
            (_, Err(e)) => Test::fail(name, e.to_string()),
        });
        let name = "7 · no_new_privs is set";
        tests.push(match &probe {
            Ok(run) => match fact(run, "no_new_privs") {
                Some(n) if n == "1" => Test::pass(name),
                _ => todo_or_fail(name, 7, run, || {
                    "NoNewPrivs is not 1: prctl(PR_SET_NO_NEW_PRIVS) before exec".into()
                }),
            },
            Err(e) => Test::fail(name, e.to_string()),
        });
        tests
    }

    /// The runtime's start-up, phase by phase: what the step's text asks to look at.
    fn measure(&self) -> Vec<String> {
        let runs: Vec<Run> = (0..5)
            .filter_map(|_| {
                self.run(&self.backend(), Spec::default_for(Kernel::Ready))
                    .ok()
            })
            .filter(|r| r.outcome == Outcome::Completed)
            .collect();
        crate::startup_line("your runtime", &runs)
            .into_iter()
            .collect()
    }
}

/// What the outside view of one instance shows, while its workload sleeps.
fn look(instance: &Instance, workdir: &Path) -> Outside {
    let runtime = instance.main_pid();
    let pids = instance.cgroup().map(|c| c.pids()).unwrap_or_default();
    let workload = pids.into_iter().find(|&p| {
        let cmd = inspect::cmdline(p);
        p != runtime && cmd.contains("kernel=sleep") && !cmd.contains("--rootfs")
    });
    let limit_file = instance
        .cgroup()
        .and_then(|c| c.memory_dir())
        .and_then(|d| {
            ["memory.max", "memory.limit_in_bytes"]
                .iter()
                .map(|f| d.join(f))
                .find(|f| f.exists())
                .map(|f| {
                    let value = std::fs::read_to_string(&f).unwrap_or_default();
                    (f.display().to_string(), value)
                })
        });
    // The namespace the runtime was started in stays the runtime's own as long as it did not
    // move itself into the container's: a mount of the container there is one that propagated
    // out. A runtime that did move itself leaves only the host's namespace to look at.
    let prefix = workdir.join("student-");
    let mnt_ns = |p: Pid| fs::read_link(format!("/proc/{p}/ns/mnt")).ok();
    let leaked_mounts = workload.map(|w| {
        let outside = if mnt_ns(w).is_some() && mnt_ns(w) != mnt_ns(runtime) {
            format!("/proc/{runtime}/mountinfo")
        } else {
            "/proc/self/mountinfo".to_string()
        };
        fs::read_to_string(outside)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| m.starts_with(prefix.to_string_lossy().as_ref()))
            .map(str::to_string)
            .collect()
    });
    Outside {
        runtime: Some(runtime),
        workload,
        workload_parent: workload.and_then(inspect::parent),
        ns_pid: workload.and_then(|p| inspect::status_field(p, "NSpid")),
        cap_bounding: workload.and_then(|p| inspect::status_field(p, "CapBnd")),
        host_root: workload.map(inspect::host_root_reachable),
        leaked_mounts,
        limit_file,
    }
}

/// What a runtime that failed under the checker's shared `/` most likely missed, after `why`
/// it failed.
fn shared_root_hint(why: &str) -> &'static str {
    if why.contains("pivot_root") && (why.contains("EINVAL") || why.contains("Invalid argument")) {
        ". lab starts your runtime where / is a shared mount, as systemd makes it: pivot_root \
         refuses a shared root (EINVAL), and mounts under it propagate back out. Make the new \
         mount namespace's mounts private (MS_REC | MS_PRIVATE on /) first"
    } else {
        ""
    }
}

/// [`describe`], with [`shared_root_hint`].
fn describe_step2(run: &Run) -> String {
    let text = describe(run);
    format!("{text}{}", shared_root_hint(&text))
}

/// A backend's error, with [`shared_root_hint`].
fn error_step2(e: &BackendError) -> String {
    let text = e.to_string();
    format!("{text}{}", shared_root_hint(&text))
}

/// A probe fact of a run.
fn fact(run: &Run, key: &str) -> Option<String> {
    run.probe
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
}

/// How a run ended, in words.
pub(super) fn describe(run: &Run) -> String {
    match &run.outcome {
        Outcome::Completed => "completed".into(),
        Outcome::OomKilled => "was killed by the OOM killer".into(),
        Outcome::Stopped => "was stopped".into(),
        Outcome::Failed { reason } => format!("failed: {reason}"),
    }
}

fn shorten(s: &str) -> String {
    if s.chars().count() > 80 {
        format!("{}…", s.chars().take(80).collect::<String>())
    } else {
        s.to_string()
    }
}
