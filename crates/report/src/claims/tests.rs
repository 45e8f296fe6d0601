//! The ledger's rules, one results fixture per rule and verdict.
//!
//! Every row of [`cases`] is a hand-made host (one or more results files) whose figures imply
//! one verdict of one claim, and says what the ledger must answer and which words its sentence
//! must hold. The rows cover every claim × {supported, not supported, depends, no data}, the
//! boundaries of the rules (the 5% margin, the minimum of 6 paired rounds, which VMs decide)
//! and the failures these rules were written against:
//!
//! 1. a VM without an OS must not stand for VMs in general (start-up, images, density, memory);
//! 2. data whose checksums disagree never decide;
//! 3. one or a few rounds are never "clear";
//! 4. a VM that does not say whether it runs a guest OS is not assumed to run one;
//! 5. the memory sentence of mixed pairs says they are mixed;
//! 6. files of one host are judged together, not "disagreeing";
//! 7. an emulated machine is known from every record, not from a density ladder's end.
//!
//! (The terminal's caveats and the escaping of results text are tested with the renderings, in
//! `report/tests.rs`.)

use crate::claims::*;
use crate::fixtures::Fixture;
use isolab_results::{info, Family};

/// One row of the table.
struct Case {
    /// What the row shows.
    name: &'static str,
    /// The claim judged.
    claim: &'static str,
    /// The host's files.
    files: fn() -> Vec<Results>,
    /// The verdict the figures imply.
    verdict: Verdict,
    /// Words the "why" must hold.
    why: &'static [&'static str],
    /// Words it must not hold.
    not_why: &'static [&'static str],
    /// Words the caveats must hold (all caveats joined).
    caveats: &'static [&'static str],
}

const fn case(
    name: &'static str,
    claim: &'static str,
    files: fn() -> Vec<Results>,
    verdict: Verdict,
    why: &'static [&'static str],
) -> Case {
    Case {
        name,
        claim,
        files,
        verdict,
        why,
        not_why: &[],
        caveats: &[],
    }
}

impl Case {
    const fn not(mut self, words: &'static [&'static str]) -> Case {
        self.not_why = words;
        self
    }
    const fn caveat(mut self, words: &'static [&'static str]) -> Case {
        self.caveats = words;
        self
    }
}

// ---------------------------------------------------------------------------------------------
// Building hosts.

/// A round's noise, the same for every backend of the round: ratios stay exact.
fn noise(round: u32) -> f64 {
    1.0 + f64::from(round % 3) * 0.01
}

/// Start-up samples: each backend's start-up in ms, over `rounds` rounds.
fn startup(rounds: u32, backends: &[(&str, f64)]) -> Fixture {
    let mut f = Fixture::new("startup");
    for round in 0..rounds {
        for (b, ms) in backends {
            f.startup(b, round, (ms * 1e6 * noise(round)) as u64);
        }
    }
    f
}

/// Memory samples: each backend's fixed cost in KiB, with a 16 MiB working set.
fn memory(rounds: u32, backends: &[(&str, u64)]) -> Fixture {
    let mut f = Fixture::new("memory");
    for round in 0..rounds {
        for (b, kib) in backends {
            let fixed = (*kib as f64 * 1024.0 * noise(round)) as u64;
            f.memory(b, round, 16, fixed, fixed + (16 << 20));
        }
    }
    f
}

/// One kernel's samples: its name, the time of 1000 operations in ns, its checksum.
type Kernel<'a> = (&'a str, u64, &'a str);

/// Throughput samples: per backend, its kernels.
fn throughput(rounds: u32, backends: &[(&str, &[Kernel])]) -> Fixture {
    let mut f = Fixture::new("throughput");
    for round in 0..rounds {
        for (b, kernels) in backends {
            for (kernel, ns, sum) in *kernels {
                f.work(
                    b,
                    round,
                    kernel,
                    1000,
                    (*ns as f64 * noise(round)) as u64,
                    sum,
                );
            }
        }
    }
    f
}

/// Density ladders of `steps` steps (1, 2, 4, ...): each backend's cost per instance in KiB.
fn density(steps: u32, backends: &[(&str, u64)]) -> Fixture {
    let mut f = Fixture::new("density");
    for (b, kib) in backends {
        let mut n = 1u32;
        for step in 0..steps {
            let added = if step == 0 { 1 } else { n / 2 };
            let wobble = u64::from(step % 3) * 1024;
            f.density_step(b, n, added, u64::from(n) * kib * 1024 + wobble);
            n *= 2;
        }
    }
    f
}

/// The probe of a process (the host's view) and of `backends`, each with its kernel release,
/// host name and visible PIDs.
fn probe(backends: &[(&str, &str, &str, &str)]) -> Fixture {
    let mut f = Fixture::new("isolation");
    f.probe(
        "process",
        &[
            ("kernel_release", "6.1.0-test"),
            ("hostname", "testhost"),
            ("pids_visible", "90"),
        ],
    );
    for (b, release, hostname, pids) in backends {
        f.probe(
            b,
            &[
                ("kernel_release", release),
                ("hostname", hostname),
                ("pids_visible", pids),
            ],
        );
    }
    f
}

/// `lab run images`: each backend's ladder (one rung) on the layered image, its end reporting
/// the size of what it started from in bytes.
fn images(backends: &[(&str, u64)]) -> Fixture {
    let mut f = Fixture::new("images");
    for (b, bytes) in backends {
        f.image_step(b, 1, 64 << 20, None)
            .density_end(b, 1, "reached --max 1")
            .note(b, info::IMAGE_BYTES, &bytes.to_string());
    }
    f
}

/// `lab run images` ladders (1, 2, 4, 8): each backend's host memory per more instance in KiB,
/// KSM on for the backends named with a `+ksm`.
fn image_ladders(backends: &[(&str, u64)]) -> Fixture {
    let mut f = Fixture::new("images");
    for (b, kib) in backends {
        let (name, ksm) = match b.strip_suffix("+ksm") {
            Some(n) => (n, Some(100)),
            None => (*b, None),
        };
        for n in [1u32, 2, 4, 8] {
            f.image_step(name, n, (64 << 20) + u64::from(n) * kib * 1024, ksm);
        }
    }
    f
}

/// An images file whose Docker steps (`FROM`, base, app) were cached or not.
fn docker_builds(first: [bool; 3], rebuild: [bool; 3]) -> Fixture {
    let mut f = Fixture::new("images");
    f.image(Some((first, rebuild)));
    f
}

/// One aggressor beside a backend's victim: its name, and the victim's slowdown beside two of
/// them unlimited and limited (0: the victim did not complete).
type Beside<'a> = (&'a str, f64, f64);

/// `lab run interference` samples over `rounds` rounds: per backend, its aggressors. The victim
/// takes 100 ms alone; bombs report forks refused at pids.max, hogs OOM kills.
fn neighbours(rounds: u32, backends: &[(&str, &[Beside])]) -> Fixture {
    use isolab_results::{Config, Outcome};
    let mut f = Fixture::new("interference");
    for round in 0..rounds {
        for (b, aggressors) in backends {
            for (config, pick) in [(Config::Unlimited, 0), (Config::Limited, 1)] {
                let alone = 100_000_000.0 * noise(round);
                for (a, slow_u, slow_l) in *aggressors {
                    f.neighbour(
                        b,
                        round,
                        "cpu",
                        config,
                        None,
                        alone as u64,
                        Outcome::Completed,
                        &[],
                    );
                    let slow = if pick == 0 { *slow_u } else { *slow_l };
                    let outcome = if slow == 0.0 {
                        Outcome::Failed {
                            reason: "instance did not reach done".into(),
                        }
                    } else {
                        Outcome::Completed
                    };
                    let facts: &[(&str, &str)] = match *a {
                        "fork" => &[(info::PIDS_MAX_REFUSED, "900"), (info::FORKS, "127")],
                        "oom" => &[(info::OOM_KILLS, "2"), (info::HOG_BYTES, "536870912")],
                        _ => &[],
                    };
                    f.neighbour(
                        b,
                        round,
                        "cpu",
                        config,
                        Some((a, 2)),
                        (alone * slow.max(1.0)) as u64,
                        outcome,
                        facts,
                    );
                }
            }
        }
    }
    f
}

fn one(f: &Fixture) -> Vec<Results> {
    vec![f.results()]
}

// ---------------------------------------------------------------------------------------------
// The table.

fn cases() -> Vec<Case> {
    use Verdict::*;
    vec![
        // ---- start-up
        case("startup: sooner than a VM with a guest OS", "startup",
            || one(&startup(8, &[("process", 0.6), ("container", 2.0), ("vm-linux", 20.0)])),
            Supported, &["clearly sooner than the VM with a guest OS (vm-linux)"]),
        case("startup: slower than a VM with a guest OS", "startup",
            || one(&startup(8, &[("container", 30.0), ("vm-linux", 5.0)])),
            NotSupported, &["No container started clearly sooner than the VM with a guest OS"]),
        case("startup: one runtime sooner, one later", "startup",
            || one(&startup(8, &[("container", 2.0), ("oci:runc", 30.0), ("vm-linux", 10.0)])),
            Depends, &["Some containers start clearly sooner", "oci:runc ÷ vm-linux"]),
        case("startup: no VM", "startup",
            || one(&startup(8, &[("process", 0.6), ("container", 2.0)])),
            NoData, &["No VM has start-up samples here."]),
        case("startup: within the 5% margin is the same", "startup",
            || one(&startup(8, &[("container", 10.0), ("vm-linux", 10.4)])),
            NotSupported, &["0.962×"]),
        case("startup: just beyond the 5% margin is sooner", "startup",
            || one(&startup(8, &[("container", 10.0), ("vm-linux", 10.8)])),
            Supported, &["0.926×"]),
        // Case 3: a minimum number of paired rounds.
        case("startup (3): one round calls nothing", "startup",
            || one(&startup(1, &[("container", 2.0), ("vm-linux", 20.0)])),
            NoData, &["Too few paired rounds", "at least 6"]),
        case("startup (3): five rounds call nothing", "startup",
            || one(&startup(5, &[("container", 2.0), ("vm-linux", 20.0)])),
            NoData, &["Too few paired rounds"]),
        case("startup (3): six rounds are enough", "startup",
            || one(&startup(6, &[("container", 2.0), ("vm-linux", 20.0)])),
            Supported, &["VM with a guest OS"]),
        // Case 1: which VM.
        case("startup (1): only a VM without an OS, as fast as a container", "startup",
            || {
                let mut f = startup(8, &[("process", 0.6), ("container", 1.37), ("vm", 1.36)]);
                f.env(|e| e.kvm = KvmKind::NestedPvm);
                one(&f)
            },
            NoData, &[
                "No VM with a guest OS has start-up samples here",
                "the VM without an OS (vm) cannot stand for one. For comparison only: container ÷ vm",
                "`lab run startup --backends process,container,vm-linux,qemu` gives them",
            ])
            .not(&["faster on hardware", "slower than on hardware virtualization."])
            .caveat(&["a VM without an OS runs only in user mode and is barely affected"]),
        case("startup: VMs measured on an emulated machine carry its caveat", "startup",
            || {
                let mut f = startup(8, &[("container", 2.0), ("vm-linux", 20.0)]);
                f.env(|e| {
                    e.kvm = KvmKind::HardwareAmdV;
                    e.underneath = isolab_host::facts::Underneath::classify(
                        b"TCGTCGTCGTCG",
                        "QEMU Virtual CPU version 2.5+",
                    );
                });
                one(&f)
            },
            Supported, &["sooner than the VM with a guest OS (vm-linux)"])
            .caveat(&["inside an emulated machine"]),
        case("startup (1): only a VM without an OS, slower than a container", "startup",
            || one(&startup(8, &[("container", 2.0), ("vm", 20.0)])),
            NoData, &["the VM without an OS (vm) cannot stand for one", "lab run startup"]),
        case("startup (1): VMs of one kind are named in one phrase", "startup",
            || one(&startup(8, &[("container", 2.0), ("vm", 20.0), ("vm/restored", 20.0)])),
            NoData, &["the VM without an OS (vm, vm/restored) cannot stand for one"]),
        case("startup (1): the VM with a guest OS decides when one ran", "startup",
            || one(&startup(8, &[("container", 2.0), ("vm", 2.02), ("vm-linux", 20.0)])),
            Supported, &[
                "sooner than the VM with a guest OS (vm-linux)",
                "VMs without an OS do not decide",
                "container ÷ vm 0.990×",
            ]),
        case("startup (1): two VMs with a guest OS are named in one singular phrase", "startup",
            || one(&startup(8, &[("container", 2.0), ("vm-linux", 20.0), ("qemu", 40.0)])),
            Supported, &["sooner than every VM with a guest OS ("])
            .not(&["VMs with a guest OS ("]),
        // Case 4: a VM that does not say whether it runs a guest OS.
        case("startup (4): a VM of unrecorded kind is not a VM with a guest OS", "startup",
            || {
                let mut f = startup(8, &[("container", 2.0), ("vm", 20.0)]);
                f.family("vm", Family::Vm);
                one(&f)
            },
            NoData, &["the VM whose results do not say whether it runs a guest OS (vm) cannot stand for one"]),
        // Case 6: two files of one host, one per kind of VM.
        case("startup (6): a bare-VM file and a vm-linux file are judged together", "startup",
            || {
                let mut a = startup(8, &[("container", 1.4), ("vm", 1.36)]);
                a.at("/fixture/20260101-startup/results.jsonl");
                let mut b = startup(8, &[("container", 1.4), ("vm-linux", 40.0)]);
                b.at("/fixture/20260102-startup/results.jsonl");
                vec![a.results(), b.results()]
            },
            Supported, &["sooner than the VM with a guest OS (vm-linux)", "VMs without an OS do not decide"])
            .not(&["disagree"]),
        // Two runs started in the same second (labs side by side) are two runs, not one.
        case("startup (6): two runs on two sides are one set of samples, not clearly apart", "startup",
            || {
                let mut a = startup(8, &[("container", 2.0), ("vm-linux", 20.0)]);
                a.at("/fixture/a/results.jsonl");
                let mut b = startup(8, &[("container", 30.0), ("vm-linux", 5.0)]);
                b.at("/fixture/b/results.jsonl");
                vec![a.results(), b.results()]
            },
            NotSupported, &["No container started clearly sooner", "container ÷ vm-linux 3.05× (0.100–6.00)"])
            .not(&["disagree"]),
        // Case 7: emulation.
        case("startup (7): only an emulated machine", "startup",
            || {
                let mut f = startup(8, &[("container", 2.0), ("qemu", 900.0)]);
                f.note("qemu", info::EMULATED, "tcg");
                one(&f)
            },
            NoData, &["Only an emulated machine (qemu)"]),
        case("startup: a new backend counts by its family, whatever its name", "startup",
            || {
                let mut f = startup(8, &[("container", 2.0), ("firecracker", 20.0)]);
                f.family("firecracker", Family::VmGuestOs);
                one(&f)
            },
            Supported, &["VM with a guest OS (firecracker)"]),
        case("startup: a backend of unrecorded kind takes no side", "startup",
            || {
                let mut f = startup(8, &[("container", 2.0), ("vm-linux", 20.0), ("qemu", 1.0)]);
                f.family("qemu", Family::Unknown);
                one(&f)
            },
            Supported, &["(vm-linux)"])
            .caveat(&["Left out: qemu (its results do not say what kind of backend it is"]),
        case("startup: a sandbox stands between containers and VMs", "startup",
            || one(&startup(8, &[("container", 2.0), ("oci:runsc", 8.0), ("vm-linux", 20.0)])),
            Supported, &[
                "oci:runsc (sandbox) is a sandbox",
                "clearly later than the containers and clearly sooner than the VMs",
            ]),
        // ---- memory
        case("memory: below a VM with a guest OS", "memory",
            || one(&memory(6, &[("container", 600), ("vm-linux", 9000)])),
            Supported, &["clearly below that of the VM with a guest OS (vm-linux)"]),
        case("memory: above a VM with a guest OS", "memory",
            || one(&memory(6, &[("container", 9000), ("vm-linux", 600)])),
            NotSupported, &["No container costs clearly less than the VM with a guest OS"]),
        case("memory: one runtime below, one above", "memory",
            || one(&memory(6, &[("container", 600), ("oci:runc", 3000), ("vm-linux", 1000)])),
            Depends, &["Some containers cost clearly less than the VM with a guest OS"]),
        case("memory: no VM", "memory",
            || one(&memory(6, &[("container", 600)])),
            NoData, &["No VM has memory samples here."]),
        case("memory (1): below a VM without an OS: no data on a guest OS", "memory",
            || one(&memory(6, &[("container", 600), ("vm", 9000)])),
            NoData, &["No VM with a guest OS has memory samples here", "lab run memory --backends"]),
        // Case 5: mixed pairs.
        case("memory (5): mixed pairs with a VM with a guest OS say they are mixed", "memory",
            || one(&memory(6, &[("container", 250), ("oci:runc", 3000), ("vm-linux", 1080), ("vm", 100)])),
            Depends, &["Some containers cost clearly less than the VM with a guest OS (vm-linux)", "others do not: oci:runc ÷ vm-linux", "for comparison: container ÷ vm"])
            .not(&["Containers cost less here"]),
        // Case 4.
        case("memory (4): a VM of unrecorded kind does not test the guest OS", "memory",
            || {
                let mut f = memory(6, &[("container", 600), ("vm", 9000)]);
                f.family("vm", Family::Vm);
                one(&f)
            },
            NoData, &["cannot stand for one"]),
        case("memory (3): too few rounds", "memory",
            || one(&memory(3, &[("container", 600), ("vm-linux", 9000)])),
            NoData, &["Too few paired rounds"]),
        // ---- layers
        case("layers: only the changed layer is rebuilt", "layers",
            || one(&docker_builds([false, false, false], [false, true, false])),
            Supported, &["built only the changed layer again"]),
        case("layers: an unchanged layer is rebuilt", "layers",
            || one(&docker_builds([false, false, false], [false, false, false])),
            NotSupported, &["did not change"]),
        case("layers: the cache served all, nothing changed", "layers",
            || one(&docker_builds([false, false, false], [false, true, true])),
            Depends, &["not write only what changed"]),
        case("layers: no Docker build", "layers",
            || { let mut f = Fixture::new("images"); f.image(None); one(&f) },
            NoData, &["Docker did not build the lab's image here"]),
        // ---- sharing
        case("sharing: a container costs a fraction of a VM", "sharing",
            || one(&image_ladders(&[("container", 400), ("qemu", 90_000)])),
            Supported, &["less than a tenth"]),
        case("sharing: a container costs as much as a VM", "sharing",
            || one(&image_ladders(&[("container", 90_000), ("qemu", 60_000)])),
            NotSupported, &["costs as much as a VM"]),
        case("sharing: less, not ten times less", "sharing",
            || one(&image_ladders(&[("container", 30_000), ("vm-linux+ksm", 40_000), ("qemu", 60_000)])),
            Depends, &["not by ten times", "With KSM"]),
        case("sharing: no VM", "sharing",
            || one(&image_ladders(&[("container", 400)])),
            NoData, &["nothing to compare the containers with"]),
        // ---- performance
        case("performance: faster on every kernel", "performance",
            || one(&throughput(6, &[
                ("container", &[("cpu", 1_000_000, "0x1"), ("syscall", 1_000_000, "0x2")]),
                ("vm-linux", &[("cpu", 1_200_000, "0x1"), ("syscall", 50_000_000, "0x2")]),
            ])),
            Supported, &["faster in every container than in the VM with a guest OS (vm-linux)"]),
        case("performance: the same speed", "performance",
            || one(&throughput(6, &[
                ("container", &[("cpu", 1_000_000, "0x1")]),
                ("vm-linux", &[("cpu", 1_010_000, "0x1")]),
            ])),
            NotSupported, &["On no kernel did a container clearly outrun"]),
        case("performance: faster on some kernels", "performance",
            || one(&throughput(6, &[
                ("container", &[("cpu", 1_000_000, "0x1"), ("syscall", 1_000_000, "0x2")]),
                ("vm", &[("cpu", 1_010_000, "0x1"), ("syscall", 50_000_000, "0x2")]),
            ])),
            Depends, &["only on some kernels", "on syscall ×1000"]),
        case("performance: no VM", "performance",
            || one(&throughput(6, &[("process", &[("cpu", 1_000_000, "0x1")]), ("container", &[("cpu", 1_000_000, "0x1")])])),
            NoData, &["No VM has throughput samples here."]),
        // Case 2: checksums.
        case("performance (2): a workload whose checksums disagree decides nothing", "performance",
            || one(&throughput(6, &[
                ("container", &[("cpu", 1_000_000, "0x1"), ("syscall", 1_000_000, "0x2")]),
                ("vm-linux", &[("cpu", 9_000_000, "0xbad"), ("syscall", 1_010_000, "0x2")]),
            ])),
            NotSupported, &["On no kernel did a container clearly outrun"])
            .not(&["cpu"])
            .caveat(&["Left out: cpu ×1000 — its checksums disagree (container 0x1, vm-linux (VM + guest OS) 0xbad)"]),
        case("performance (2): nothing left once the check fails", "performance",
            || one(&throughput(6, &[
                ("container", &[("cpu", 1_000_000, "0x1")]),
                ("vm-linux", &[("cpu", 9_000_000, "0x2")]),
            ])),
            NoData, &["failed its checksum check"]),
        case("performance (3): one round", "performance",
            || one(&throughput(1, &[
                ("container", &[("cpu", 1_000_000, "0x1")]),
                ("vm-linux", &[("cpu", 9_000_000, "0x1")]),
            ])),
            NoData, &["Too few paired rounds"]),
        // ---- density
        case("density: cheaper than a VM with a guest OS", "density",
            || one(&density(7, &[("container", 1024), ("vm-linux", 20 * 1024)])),
            Supported, &["clearly less memory than the VM with a guest OS (vm-linux)"]),
        case("density: costlier than a VM with a guest OS", "density",
            || one(&density(7, &[("container", 20 * 1024), ("vm-linux", 1024)])),
            NotSupported, &["No container is clearly cheaper per instance"]),
        case("density: one runtime cheaper, one costlier", "density",
            || one(&density(7, &[("container", 1024), ("oci:runc", 40 * 1024), ("vm-linux", 20 * 1024)])),
            Depends, &["Some containers are clearly cheaper per instance"]),
        case("density: no VM", "density",
            || one(&density(7, &[("container", 1024)])),
            NoData, &["No VM has density steps here."]),
        case("density (1): cheaper than a VM without an OS: no data on a guest OS", "density",
            || one(&density(7, &[("container", 238), ("vm", 842)])),
            NoData, &["the VM without an OS (vm) cannot stand for one", "lab run density --backends"]),
        case("density (3): five steps call nothing", "density",
            || one(&density(5, &[("container", 1024), ("vm-linux", 20 * 1024)])),
            NoData, &["Too few"]),
        case("density (3): six steps are enough", "density",
            || one(&density(6, &[("container", 1024), ("vm-linux", 20 * 1024)])),
            Supported, &["VM with a guest OS"]),
        // Case 7: the steps say the machine was emulated; no end record is needed.
        case("density (7): an emulated ladder cut short takes no side", "density",
            || {
                let mut f = density(7, &[("container", 20 * 1024), ("qemu", 1024)]);
                f.family("qemu", Family::Emulated);
                one(&f)
            },
            NoData, &["Only an emulated machine (qemu)"]),
        case("density (7): a version-1 ladder that does not say takes no side", "density",
            || {
                let mut f = density(7, &[("container", 20 * 1024), ("qemu", 1024)]);
                f.family("qemu", Family::Unknown);
                one(&f)
            },
            NoData, &["No VM has density steps here."])
            .caveat(&["Left out: qemu"]),
        // ---- kernel
        case("kernel: containers share it, VMs do not", "kernel",
            || one(&probe(&[("container", "6.1.0-test", "box", "1"), ("vm", "none: bare guest, no OS", "-", "0"), ("vm-linux", "6.6.0-guest", "guest", "15")])),
            Supported, &["every VM with another", "vm runs no kernel at all"]),
        case("kernel: the VM reports the host's release", "kernel",
            || one(&probe(&[("container", "6.1.0-test", "box", "1"), ("vm-linux", "6.1.0-test", "guest", "15")])),
            NotSupported, &["Every VM reported the host's kernel release"]),
        case("kernel: a container with a kernel of its own", "kernel",
            || {
                let mut f = probe(&[("container", "6.1.0-test", "box", "1"), ("oci:kata", "5.10-kata", "box", "1"), ("vm-linux", "6.6.0-guest", "guest", "15")]);
                f.family("oci:kata", Family::Container);
                one(&f)
            },
            Depends, &["break the pattern"]),
        case("kernel: no probe", "kernel",
            || one(&startup(8, &[("container", 2.0)])),
            NoData, &["no isolation results"]),
        case("kernel: a sandbox answers with its own kernel", "kernel",
            || one(&probe(&[("container", "6.1.0-test", "box", "1"), ("oci:runsc", "4.4.0", "box", "1"), ("vm-linux", "6.6.0-guest", "guest", "15")])),
            Supported, &["oci:runsc is a sandbox, not counted as a container", "answered 4.4.0, not the host's release"]),
        // ---- isolation
        case("isolation: every VM sees less", "isolation",
            || one(&probe(&[("container", "6.1.0-test", "box", "1"), ("vm-linux", "6.6.0-guest", "guest", "15")])),
            Supported, &["Every VM's workload sees less of the host"]),
        case("isolation: the VM sees as much", "isolation",
            || one(&probe(&[("container", "6.1.0-test", "box", "1"), ("vm-linux", "6.1.0-test", "box", "1")])),
            NotSupported, &["as much of the host"]),
        case("isolation: a container hides as much as a VM", "isolation",
            || one(&probe(&[("container", "6.1.0-test", "testhost", "90"), ("oci:runc", "6.2", "box", "1"), ("vm-linux", "6.6.0-guest", "guest", "15")])),
            Depends, &["depends on the configuration"]),
        case("isolation: no container", "isolation",
            || one(&probe(&[("vm-linux", "6.6.0-guest", "guest", "15")])),
            NoData, &["at least one container and one VM"]),
        case("isolation: a sandbox is placed between", "isolation",
            || one(&probe(&[("container", "6.1.0-test", "testhost", "1"), ("oci:runsc", "4.4.0", "testhost", "1"), ("vm-linux", "6.6.0-guest", "guest", "15")])),
            Supported, &["oci:runsc is a sandbox", "shares 1 facts with the host, between the containers and the VMs"]),
        // ---- images
        case("images: image sizes of a startup run are not the claim's answer", "images",
            || {
                let mut f = startup(1, &[("process", 0.6), ("container", 2.0), ("vm", 1.3)]);
                f.note("container", info::IMAGE_BYTES, "1445224").note("vm", info::IMAGE_BYTES, "25600");
                one(&f)
            },
            NoData, &[
                "This report has no images results. The startup results here record such figures too",
                "`lab run images --backends container,qemu` gives them",
            ]),
        case("images: smaller than a VM with a guest OS", "images",
            || one(&images(&[("container", 1_445_224), ("vm-linux", 12_000_000)])),
            Supported, &["smaller than the image of the VM with a guest OS (vm-linux)"]),
        case("images: larger than a VM with a guest OS", "images",
            || one(&images(&[("container", 1_445_224), ("vm-linux", 1_000_000)])),
            NotSupported, &["No container image is smaller"]),
        case("images: one runtime smaller, one larger", "images",
            || one(&images(&[("container", 1_445_224), ("oci:runc", 20_000_000), ("vm-linux", 12_000_000)])),
            Depends, &["Not every container image is smaller", "oci:runc 19.1 MiB vs vm-linux 11.4 MiB"]),
        case("images: no VM image", "images",
            || one(&images(&[("container", 1_445_224)])),
            NoData, &["at least one container and one VM", "lab run images"]),
        case("images (1): only a VM without an OS, smaller", "images",
            || one(&images(&[("container", 1_445_224), ("vm", 25_600)])),
            NoData, &["No VM with a guest OS has an image size here", "the VM without an OS (vm) cannot stand for one", "container 1.38 MiB vs vm 25.0 KiB", "lab run images --backends container,qemu"]),
        case("images (1): only a VM without an OS, larger", "images",
            || one(&images(&[("container", 1_445_224), ("vm", 9_000_000)])),
            NoData, &["cannot stand for one"]),
        case("images (1): the VM with a guest OS decides when one ran", "images",
            || one(&images(&[("container", 1_445_224), ("vm", 25_600), ("vm-linux", 12_000_000)])),
            Supported, &["(vm-linux)", "VMs without an OS do not decide", "container 1.38 MiB vs vm 25.0 KiB"]),
        case("images (7): an emulated machine's image counts, with the OS it booted", "images",
            || {
                let mut f = images(&[("container", 1_445_224), ("vm", 25_600), ("qemu", 2_360_369)]);
                f.note("qemu", info::EMULATED, "tcg").note("qemu", info::GUEST_OS, "linux");
                one(&f)
            },
            Supported, &["the VM with a guest OS (qemu)"]),
        case("images (4): a VM of unrecorded kind is not a VM with a guest OS", "images",
            || {
                let mut f = images(&[("container", 1_445_224), ("vm", 12_000_000)]);
                f.family("vm", Family::Vm);
                one(&f)
            },
            NoData, &["cannot stand for one"]),
        // ---- native
        case("native: as fast as a process", "native",
            || one(&throughput(6, &[("process", &[("cpu", 1_000_000, "0x1")]), ("container", &[("cpu", 1_010_000, "0x1")])])),
            Supported, &["a container is a process"]),
        case("native: slower on every kernel", "native",
            || one(&throughput(6, &[("process", &[("cpu", 1_000_000, "0x1")]), ("container", &[("cpu", 1_300_000, "0x1")])])),
            NotSupported, &["Every kernel ran clearly slower"]),
        case("native: slower on one kernel", "native",
            || one(&throughput(6, &[
                ("process", &[("cpu", 1_000_000, "0x1"), ("syscall", 1_000_000, "0x2")]),
                ("container", &[("cpu", 1_000_000, "0x1"), ("syscall", 1_300_000, "0x2")]),
            ])),
            Depends, &["Clearly slower in a container on: container ÷ process on syscall ×1000"]),
        case("native: no baseline", "native",
            || one(&throughput(6, &[("container", &[("cpu", 1_000_000, "0x1")])])),
            NoData, &["process baseline"]),
        case("native (2): the slower workload failed its check", "native",
            || one(&throughput(6, &[
                ("process", &[("cpu", 1_000_000, "0x1"), ("syscall", 1_000_000, "0x2")]),
                ("container", &[("cpu", 1_000_000, "0x1"), ("syscall", 1_300_000, "0xbad")]),
            ])),
            Supported, &["a container is a process"])
            .caveat(&["Left out: syscall ×1000 — its checksums disagree"]),
        case("native (3): five rounds", "native",
            || one(&throughput(5, &[("process", &[("cpu", 1_000_000, "0x1")]), ("container", &[("cpu", 1_300_000, "0x1")])])),
            NoData, &["Too few paired rounds"]),
        // ---- neighbours
        case("neighbours: nothing reaches a container or a VM", "neighbours",
            || one(&neighbours(6, &[
                ("container", &[("cpu", 1.0, 1.0), ("fork", 1.01, 1.0)]),
                ("vm-linux", &[("cpu", 1.02, 1.0), ("oom", 1.0, 1.0)]),
            ])),
            Supported, &["No neighbour's CPU, fork bomb and memory hog reached the victim"])
            .not(&["Limits were what held back"])
            .caveat(&["ran under the lab's own limits in both configurations"]),
        case("neighbours: a CPU hog held back only by limits", "neighbours",
            || one(&neighbours(6, &[("container", &[("cpu", 2.0, 1.0)]), ("vm-linux", &[("cpu", 1.9, 1.02)])])),
            Supported, &["Limits were what held back: CPU"]),
        case("neighbours: memory bandwidth reaches everyone, limits or not", "neighbours",
            || one(&neighbours(6, &[("container", &[("mem", 1.5, 1.4)]), ("vm-linux", &[("mem", 1.6, 1.3)])])),
            NotSupported, &["Every neighbour's memory bandwidth reached the victim in every backend"]),
        case("neighbours: a hog that kills the victim reaches it", "neighbours",
            || one(&neighbours(6, &[("container", &[("oom", 0.0, 0.0)])])),
            NotSupported, &["memory hog"]),
        case("neighbours: the CPU is held, memory bandwidth is not", "neighbours",
            || one(&neighbours(6, &[
                ("container", &[("cpu", 2.0, 1.0), ("mem", 1.5, 1.5)]),
                ("vm-linux", &[("cpu", 2.0, 1.0), ("mem", 1.5, 1.5)]),
            ])),
            Depends, &["did not reach the victim", "CPU", "Its memory bandwidth did, in every backend", "Limits were what held back: CPU"]),
        case("neighbours: a VM's victim survives a bomb, a container's does not", "neighbours",
            || one(&neighbours(6, &[("container", &[("fork", 0.0, 1.0), ("oom", 0.0, 0.0)]), ("vm-linux", &[("oom", 1.0, 1.0)])])),
            Depends, &["reached the victim in some backends and not in others"]),
        case("neighbours: no interference file", "neighbours",
            || one(&startup(6, &[("container", 1.0)])),
            NoData, &["no interference results"]),
        case("neighbours (3): five rounds call nothing", "neighbours",
            || one(&neighbours(5, &[("container", &[("cpu", 2.0, 2.0)])])),
            NoData, &["Too few paired rounds"]),
        case("neighbours (7): only an emulated machine", "neighbours",
            || {
                let mut f = neighbours(6, &[("qemu", &[("cpu", 2.0, 2.0)])]);
                f.note("qemu", info::EMULATED, "tcg");
                one(&f)
            },
            NoData, &["Only an emulated machine (qemu)"]),
    ]
}

#[test]
fn every_rule_gives_the_verdict_its_data_imply() {
    let mut failures = Vec::new();
    let table = cases();
    for c in &table {
        let files = (c.files)();
        let refs: Vec<&Results> = files.iter().collect();
        let a = ledger(&refs)
            .into_iter()
            .find(|a| a.claim.id == c.claim)
            .unwrap();
        let caveats = a.caveats.join(" | ");
        let mut wrong = Vec::new();
        if a.verdict != c.verdict {
            wrong.push(format!("verdict {:?}, expected {:?}", a.verdict, c.verdict));
        }
        wrong.extend(
            c.why
                .iter()
                .filter(|w| !a.why.contains(*w))
                .map(|w| format!("why lacks {w:?}")),
        );
        wrong.extend(
            c.not_why
                .iter()
                .filter(|w| a.why.contains(*w))
                .map(|w| format!("why holds {w:?}")),
        );
        wrong.extend(
            c.caveats
                .iter()
                .filter(|w| !caveats.contains(*w))
                .map(|w| format!("caveats lack {w:?}")),
        );
        if !wrong.is_empty() {
            failures.push(format!(
                "{}: {}\n    why: {}\n    caveats: {caveats}\n    figures: {:?}",
                c.name,
                wrong.join("; "),
                a.why,
                a.figures
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows wrong:\n{}",
        failures.len(),
        table.len(),
        failures.join("\n")
    );
}

#[test]
fn every_claim_has_a_row_for_every_verdict() {
    let table = cases();
    for claim in CLAIMS {
        for verdict in [
            Verdict::Supported,
            Verdict::NotSupported,
            Verdict::Depends,
            Verdict::NoData,
        ] {
            assert!(
                table
                    .iter()
                    .any(|c| c.claim == claim.id && c.verdict == verdict),
                "no row for {} {:?}",
                claim.id,
                verdict
            );
        }
    }
    // And a row for each numbered case of the module docs.
    for n in 1..=7 {
        assert!(
            table.iter().any(|c| c.name.contains(&format!("({n})"))),
            "no row for case {n}"
        );
    }
}

#[test]
fn the_printed_rules_state_the_constants_they_use() {
    let margin = format!("{}%", MARGIN * 100.0);
    assert!(COMMON_RULE.contains(&margin), "{COMMON_RULE}");
    assert!(
        COMMON_RULE.contains(&format!("at least {MIN_PAIRS} paired rounds")),
        "{COMMON_RULE}"
    );
    let density = CLAIMS.iter().find(|c| c.id == "density").unwrap();
    assert!(density
        .rule
        .contains(&format!("at least {MIN_PAIRS} steps")));
    assert!(density.rule.contains(&margin));
}

#[test]
fn speed_claims_are_judged_resource_by_resource() {
    let files = one(&throughput(
        6,
        &[
            (
                "process",
                &[
                    ("cpu", 1_000_000, "0x1"),
                    ("disk-rand", 1_000_000, "0x2"),
                    ("net-rr", 1_000_000, "0x3"),
                ],
            ),
            (
                "container",
                &[
                    ("cpu", 1_000_000, "0x1"),
                    ("disk-rand", 1_000_000, "0x2"),
                    ("net-rr", 2_000_000, "0x3"),
                ],
            ),
            (
                "vm-linux",
                &[
                    ("cpu", 1_010_000, "0x1"),
                    ("disk-rand", 3_000_000, "0x2"),
                    ("net-rr", 4_000_000, "0x3"),
                ],
            ),
        ],
    ));
    let refs: Vec<&Results> = files.iter().collect();
    let judged = ledger(&refs);
    let claim = |id: &str| judged.iter().find(|a| a.claim.id == id).unwrap();
    let part = |a: &Assessment, r: &str| {
        a.parts
            .iter()
            .find(|p| p.resource == r)
            .unwrap_or_else(|| panic!("no {r} part: {:?}", a.parts))
            .clone()
    };
    // Container against VM: the same on compute, faster on disk and network.
    let perf = claim("performance");
    assert_eq!(perf.verdict, Verdict::Depends, "{perf:?}");
    assert_eq!(part(perf, "compute").verdict, Verdict::NotSupported);
    assert_eq!(part(perf, "disk").verdict, Verdict::Supported);
    assert!(part(perf, "disk").why.contains("virtio notification"));
    assert_eq!(part(perf, "network").verdict, Verdict::Supported);
    assert!(
        perf.parts.iter().all(|p| p.resource != "memory"),
        "no memory kernel ran"
    );
    // Container against process: as fast on compute and disk, slower on the network.
    let native = claim("native");
    assert_eq!(part(native, "compute").verdict, Verdict::Supported);
    assert_eq!(part(native, "disk").verdict, Verdict::Supported);
    assert_eq!(part(native, "network").verdict, Verdict::NotSupported);
    assert!(part(native, "network").why.contains("veth"));
}

/// The same samples give the same ledger, byte for byte, whichever files hold them: one file,
/// its rounds split over two files, its backends split within each round, files named in
/// another order, a file named twice.
#[test]
fn the_same_samples_split_over_files_give_the_same_ledger() {
    // One host, one run of each sampled experiment, with a VM of each kind.
    let mut runs: Vec<Fixture> = vec![
        startup(
            8,
            &[
                ("process", 0.6),
                ("container", 2.0),
                ("vm", 1.3),
                ("vm-linux", 20.0),
            ],
        ),
        memory(8, &[("container", 600), ("vm", 700), ("vm-linux", 9000)]),
        throughput(
            8,
            &[
                ("process", &[("cpu", 1_000_000, "0x1")]),
                ("container", &[("cpu", 1_010_000, "0x1")]),
                ("vm-linux", &[("cpu", 1_300_000, "0x1")]),
            ],
        ),
        neighbours(
            8,
            &[
                ("container", &[("cpu", 2.0, 1.0)]),
                ("vm-linux", &[("cpu", 1.9, 1.02)]),
            ],
        ),
    ];
    for (i, f) in runs.iter_mut().enumerate() {
        f.env(|e| e.date = format!("2026-01-0{}T10:00:00Z", i + 1));
    }
    let json = |files: &[Results]| {
        let refs: Vec<&Results> = files.iter().collect();
        serde_json::to_string_pretty(&ledger(&refs)).unwrap()
    };
    // Every run's records, split by `part` (record → which file) into files of their own.
    let split = |parts: usize, part: &dyn Fn(&RunRecord) -> usize| -> Vec<Results> {
        let mut out = Vec::new();
        for f in &runs {
            let whole = f.results();
            for p in 0..parts {
                let mut r = whole.clone();
                r.runs.retain(|run| part(run) == p);
                r.path = format!("/fixture/{}-{p}/results.jsonl", whole.header.experiment).into();
                out.push(Results::new(r.path, r.header, r.runs, vec![], vec![], None));
            }
        }
        out
    };
    let whole: Vec<Results> = runs.iter().map(Fixture::results).collect();
    let reference = json(&whole);
    // The reference judges what it should: the startup claim from vm-linux, not the bare vm.
    assert!(reference.contains("sooner than the VM with a guest OS (vm-linux)"));

    let by_rounds = split(2, &|r| usize::from(r.round >= 4));
    let by_backend = split(2, &|r| usize::from(r.backend.contains("vm")));
    let by_parity = split(3, &|r| (r.round % 3) as usize);
    let mut reversed = by_parity.clone();
    reversed.reverse();
    let mut twice = whole.clone();
    twice.push(whole[0].clone());
    for (how, files) in [
        ("rounds split in two", &by_rounds),
        ("backends split within each round", &by_backend),
        ("rounds dealt over three files", &by_parity),
        ("the same, named in reverse", &reversed),
        ("a file named twice", &twice),
    ] {
        let got = json(files);
        let first = got.lines().zip(reference.lines()).position(|(a, b)| a != b);
        assert!(got == reference, "{how}: first differing line {first:?}");
    }
}
