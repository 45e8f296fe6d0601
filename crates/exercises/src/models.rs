//! The questions of the three measuring exercises where the isolation models really differ:
//! `throughput` (disk and network), `images` (N instances of one layered image, and KSM) and
//! `neighbours` (one instance's load and failures beside another's).
//!
//! As in [`crate::measure`], every right answer is computed from the student's own results
//! file with the report's code ([`isolab_report::summary`]): the same medians and intervals the
//! tables print. The *why* — a veth hop, a VM exit per virtio notification, a page cache shared
//! or not, a cgroup's limit — is asked in the texts' written questions
//! ([`crate::written`]), which an instructor reads.
//!
//! The VM of `throughput` and `images` is whichever VM with a guest OS the results hold:
//! `vm-linux` or `qemu` on a machine with hardware virtualization, `qemu` emulated where there
//! is none (the bare `vm` has no drivers: no disk, no network card). Its answers go under
//! `[vm]` whatever its name.

use crate::answers::{Expected, Precision};
use crate::measure::Asker;
use isolab_host::stats::Summary;
use isolab_report::summary;
use isolab_results::{Config, Family, Results};

const MIB: f64 = 1024.0 * 1024.0;
const VERDICTS: [&str; 3] = ["faster", "slower", "no clear difference"];

/// The VM with a guest OS in `results`: one on KVM first, else an emulated one, else one whose
/// file does not say.
pub fn guest_os_vm(results: &Results) -> Option<String> {
    [Family::VmGuestOs, Family::Emulated, Family::Vm]
        .into_iter()
        .find_map(|family| {
            results
                .backend_names()
                .iter()
                .find(|b| results.family(b) == family)
                .cloned()
        })
}

/// A rate ratio to `process` (above 1 is faster) as a verdict: an interval holding 1 shows no
/// difference.
fn rate_verdict(s: Option<Summary>) -> Option<&'static str> {
    let s = s?;
    Some(if s.ci_low > 1.0 {
        "faster"
    } else if s.ci_high < 1.0 {
        "slower"
    } else {
        "no clear difference"
    })
}

// ---------------------------------------------------------------------------------------------
// throughput

/// The kernels the `throughput` exercise asks about: one disk and one network kernel, both a
/// stream of small requests, where each request's path through the isolation shows.
pub const THROUGHPUT_KERNELS: [&str; 2] = ["disk-rand", "net-rr"];

const RATE_TABLE: &str = "the throughput table: `× process (95% CI)`";

/// `throughput`: how fast a container and a VM serve small disk and network requests against a
/// process, and which pays more.
pub(crate) fn throughput_questions(a: &mut Asker, r: &Results) {
    let rows = summary::throughput(r);
    let vm = guest_os_vm(r);
    let vs = |kernel: &str, backend: Option<&str>| {
        let backend = backend?;
        rows.iter()
            .find(|x| x.workload.kernel == kernel && x.backend == backend)
            .and_then(|x| x.vs_process)
    };
    for kernel in THROUGHPUT_KERNELS {
        let section = kernel.replace('-', "_");
        for (who, backend) in [("container", Some("container")), ("vm", vm.as_deref())] {
            let missing = || match backend {
                Some(b) => format!("no {b} {kernel} row with a ratio to process"),
                None => "your results hold no VM with a guest OS: run the exercise's command \
                         with qemu (or vm-linux where it runs)"
                    .to_string(),
            };
            let s = vs(kernel, backend);
            a.push(
                &format!("{section}.{who}"),
                &format!("{who}'s rate on {kernel}, × process (median)"),
                RATE_TABLE,
                s.map(|s| Expected::Figure {
                    value: s.median,
                    precision: Precision::Sig3,
                })
                .ok_or_else(missing),
            );
            a.push(
                &format!("{section}.{who}_verdict"),
                &format!("is the {who} faster or slower than a process on {kernel}"),
                "does the interval of `× process` hold 1?",
                rate_verdict(s)
                    .map(|v| Expected::word(v, &VERDICTS))
                    .ok_or_else(missing),
            );
        }
        let pays = match (vs(kernel, Some("container")), vs(kernel, vm.as_deref())) {
            // The lower rate pays more; intervals that overlap show no difference.
            (Some(c), Some(v)) => Ok(Expected::word(
                if c.ci_high < v.ci_low {
                    "container"
                } else if v.ci_high < c.ci_low {
                    "vm"
                } else {
                    "no clear difference"
                },
                &["container", "vm", "no clear difference"],
            )),
            _ => Err(format!("needs container and VM rows on {kernel}")),
        };
        a.push(
            &format!("{section}.pays_more"),
            &format!("which pays more per request on {kernel}, the container or the VM"),
            "compare the two intervals of `× process`: the lower rate pays more",
            pays,
        );
    }
}

// ---------------------------------------------------------------------------------------------
// images

const IMAGE_TABLE: &str = "the image table: `host MiB per more instance (95% CI)`";

/// `images`: what one more instance of the lab's layered image costs the host, how much of the
/// image sits in the page cache once, and what KSM merged for the VMs.
pub(crate) fn images_questions(a: &mut Asker, r: &Results) {
    let series = summary::density(r);
    let vm = guest_os_vm(r);
    let of = |b: Option<&str>| series.iter().find(|s| Some(s.backend.as_str()) == b);
    let no_vm = "your results hold no VM with a guest OS: run the exercise's command with qemu \
                 (or vm-linux where it runs)";
    for (who, backend) in [("container", Some("container")), ("vm", vm.as_deref())] {
        let s = of(backend);
        let missing = || match backend {
            Some(b) => format!("no {b} ladder on the image"),
            None => no_vm.to_string(),
        };
        let per = s.and_then(|s| s.per_instance_on_image);
        a.push(
            &format!("{who}.host_mib_per_instance"),
            &format!("what one more {who} instance adds to the host (MiB, median)"),
            IMAGE_TABLE,
            per.map(|p| Expected::Figure {
                value: p.median / MIB,
                precision: Precision::Decimals(2),
            })
            .ok_or_else(missing),
        );
        a.push(
            &format!("{who}.image_cache_mib"),
            &format!(
                "the image's pages in the host's page cache at the top of the {who} ladder (MiB)"
            ),
            "the image table: `image in page cache MiB`",
            s.and_then(|s| s.top())
                .and_then(|t| t.image.image_cache_bytes)
                .map(|b| Expected::Figure {
                    value: b as f64 / MIB,
                    precision: Precision::Decimals(2),
                })
                .ok_or_else(missing),
        );
    }
    let per = |b: Option<&str>| of(b).and_then(|s| s.per_instance_on_image);
    a.push(
        "verdict.cheaper",
        "which costs the host less per more instance",
        "compare the two intervals of `host MiB per more instance`",
        match (per(Some("container")), per(vm.as_deref())) {
            (Some(c), Some(v)) => Ok(Expected::word(
                if c.ci_high < v.ci_low {
                    "container"
                } else if v.ci_high < c.ci_low {
                    "vm"
                } else {
                    "no clear difference"
                },
                &["container", "vm", "no clear difference"],
            )),
            _ => Err("needs a container and a VM ladder on the image".into()),
        },
    );
    let ksm = of(vm.as_deref())
        .and_then(|s| s.top())
        .and_then(|t| t.image.ksm_pages_sharing);
    a.push(
        "vm.ksm_saved_mib",
        "what KSM saved across the VMs at the top of their ladder (MiB)",
        "the image table: `KSM saved MiB`",
        ksm.map(|p| Expected::Figure {
            value: p as f64 * 4096.0 / MIB,
            precision: Precision::Decimals(2),
        })
        .ok_or_else(|| match &vm {
            Some(b) => format!("no KSM figure for {b}: run the exercise's command with --ksm"),
            None => no_vm.to_string(),
        }),
    );
}

// ---------------------------------------------------------------------------------------------
// neighbours

/// The aggressors the `neighbours` exercise asks about: a load and two failures.
pub const NEIGHBOUR_AGGRESSORS: [&str; 3] = ["cpu", "fork", "oom"];

const SLOWDOWN_TABLE: &str =
    "the slowdown table: `slowdown, unlimited (95% CI)` and `slowdown, limited (95% CI)`";

/// `neighbours`: how much each neighbour slowed the container's victim, with and without
/// limits, whether the victims survived, and what stopped each failure.
pub(crate) fn neighbours_questions(a: &mut Asker, r: &Results) {
    let rows = summary::interference(r);
    // The most aggressors each condition ran with: the row the question is about.
    let row = |backend: &str, aggressor: &str, config: Config| {
        rows.iter()
            .filter(|x| x.backend == backend && x.aggressor == aggressor && x.config == config)
            .max_by_key(|x| x.count)
    };
    for aggressor in NEIGHBOUR_AGGRESSORS {
        for config in Config::ALL {
            let x = row("container", aggressor, config);
            let missing = || format!("no container row beside {aggressor}, {}", config.name());
            let s = x.and_then(|x| x.slowdown);
            a.push(
                &format!("container.{aggressor}_{}", config.name()),
                &format!(
                    "the container victim's slowdown beside {aggressor}, {} (median)",
                    config.name()
                ),
                SLOWDOWN_TABLE,
                s.map(|s| Expected::Figure {
                    value: s.median,
                    precision: Precision::Sig3,
                })
                .ok_or_else(missing),
            );
            // A slowdown is a time ratio: above 1 is slower.
            a.push(
                &format!("reached.{aggressor}_{}", config.name()),
                &format!(
                    "did {aggressor} slow the container's victim down, {}",
                    config.name()
                ),
                "does the slowdown's interval hold 1?",
                s.map(|s| {
                    Expected::word(
                        if s.ci_low > 1.0 {
                            "slower"
                        } else if s.ci_high < 1.0 {
                            "faster"
                        } else {
                            "no clear difference"
                        },
                        &VERDICTS,
                    )
                })
                .ok_or_else(missing),
            );
        }
    }
    let vm_cpu = |config: Config| row("vm", "cpu", config).and_then(|x| x.slowdown);
    for config in Config::ALL {
        a.push(
            &format!("vm.cpu_{}", config.name()),
            &format!(
                "the vm victim's slowdown beside cpu, {} (median)",
                config.name()
            ),
            SLOWDOWN_TABLE,
            vm_cpu(config)
                .map(|s| Expected::Figure {
                    value: s.median,
                    precision: Precision::Sig3,
                })
                .ok_or_else(|| format!("no vm row beside cpu, {}", config.name())),
        );
    }
    let failures: Vec<&summary::InterferenceRow> = rows
        .iter()
        .filter(|x| x.backend == "container" && matches!(x.aggressor.as_str(), "fork" | "oom"))
        .collect();
    a.push(
        "failures.victims_survived",
        "did every container victim complete, with its own checksum, beside the failures",
        "the stability table: `victim completed, correct`",
        if failures.is_empty() {
            Err("no container rows beside fork or oom".into())
        } else {
            Ok(Expected::word(
                if failures.iter().all(|x| x.survived()) {
                    "yes"
                } else {
                    "no"
                },
                &["yes", "no"],
            ))
        },
    );
    let stopped = |aggressor: &str| {
        let rows: Vec<_> = failures
            .iter()
            .filter(|x| x.aggressor == aggressor)
            .collect();
        if rows.is_empty() {
            return None;
        }
        let any = |f: &dyn Fn(&summary::Stability) -> bool| rows.iter().any(|x| f(&x.stability));
        Some(match aggressor {
            "fork" if any(&|s| s.pids_max_refused > 0) => "pids.max",
            "fork" if any(&|s| s.fork_limit.is_some()) => "rlimit_nproc",
            "oom" if any(&|s| s.oom_kills > 0) => "oom killer",
            "oom" if any(&|s| s.guest_oom_kills > 0) => "guest oom killer",
            _ => "nothing",
        })
    };
    for (aggressor, vocabulary) in [
        ("fork", &["pids.max", "rlimit_nproc", "nothing"][..]),
        ("oom", &["oom killer", "guest oom killer", "nothing"][..]),
    ] {
        a.push(
            &format!("failures.{aggressor}_stopped_by"),
            &format!("what stopped the container's {aggressor} neighbour"),
            "the stability table: `what stopped the neighbour`",
            stopped(aggressor)
                .map(|w| Expected::word(w, vocabulary))
                .ok_or_else(|| format!("no container rows beside {aggressor}")),
        );
    }
}

// ---------------------------------------------------------------------------------------------
// restore

const RESTORE_TABLE: &str = "the restore table: `÷ its cold start`, `÷ cold container start`, \
                             `÷ its cold run`";

/// `restore`: a VM restored from a snapshot against its cold start and a cold container's, its
/// first run after the restore, and what each more restored VM costs the host.
pub(crate) fn restore_questions(a: &mut Asker, r: &Results) {
    use isolab_report::restore;
    let rows = restore::starts(r);
    let row = |b: &str| rows.iter().find(|x| x.backend == b);
    let ratio = |v: Option<f64>, what: &str| {
        v.map(|value| Expected::Figure {
            value,
            precision: Precision::Decimals(2),
        })
        .ok_or_else(|| format!("your results hold no {what}: run the exercise's command"))
    };
    let restored = row("vm/restored");
    let prefaulted = row("vm/restored+prefault");
    a.push(
        "vm.restored_over_cold",
        "a restored vm's start-up over a cold vm's (median over median)",
        RESTORE_TABLE,
        ratio(restored.and_then(|x| x.over_cold), "restored vm"),
    );
    a.push(
        "vm.restored_over_container",
        "a restored vm's start-up over a cold container's",
        RESTORE_TABLE,
        ratio(
            restored.and_then(|x| x.over_container),
            "restored vm and cold container",
        ),
    );
    a.push(
        "vm.first_run_over_cold",
        "the first run after a restore over a cold vm's run",
        RESTORE_TABLE,
        ratio(restored.and_then(|x| x.run_over_cold), "restored vm"),
    );
    a.push(
        "vm.prefaulted_first_run_over_cold",
        "the same after a prefaulted restore",
        RESTORE_TABLE,
        ratio(
            prefaulted.and_then(|x| x.run_over_cold),
            "prefaulted restore",
        ),
    );
    a.push(
        "vm.mib_per_more_instance",
        "what one more restored vm adds to the host at the top of the ladder (MiB)",
        "the memory table: `MiB per more instance`, its last row",
        restore::per_more_instance(r, "vm")
            .map(|b| Expected::Figure {
                value: b / MIB,
                precision: Precision::Decimals(2),
            })
            .ok_or_else(|| "your results hold no ladder of restored vms".to_string()),
    );
}
