//! The judge of "a program runs as fast in a container as in a VM".

use super::evidence::*;
use super::*;

/// The judge of the `performance` claim.
#[derive(Debug)]
pub(super) struct Performance;

impl Judge for Performance {
    fn judge(&self, claim: Claim, files: &Files) -> Assessment {
        let s = sides(files, |_, r, b| {
            has_runs(r, b, |x| summary::rate(x).is_some())
        });
        if let Some(why) = missing(&s, "throughput samples") {
            return Assessment::no_data(claim, format!("{why} {}", claim.gives))
                .with(vm_caveats(files, &s, false));
        }
        let pair = |a: &Entrant, b: &Entrant| ratio_pairs(files, a, b, true, |_| true, rate);
        let pairs = pairs_with(&s.containers, &s.vms, Scope::File, pair);
        if pairs.is_empty() {
            return Assessment::no_data(
                claim,
                "No round ran one workload in both a container and a VM (or every such workload \
                 failed its checksum check).",
            );
        }
        let mut figures: Vec<String> = pairs.iter().map(|p| p.text.clone()).collect();
        let parts = by_resource(&pairs, |resource, pairs| {
            let (verdict, outcome) = match decide(pairs, Side::Above, false) {
                Err(_) => (Verdict::NoData, "too few paired rounds to call".to_string()),
                Ok(d) => {
                    let outcome = match d.verdict {
                        Verdict::Supported => {
                            format!("containers clearly faster than {}", d.vms(false))
                        }
                        Verdict::NotSupported => {
                            format!("no container clearly faster than {}", d.vms(true))
                        }
                        _ => format!(
                            "containers clearly faster only on {}",
                            d.list(|x| x == Side::Above)
                        ),
                    };
                    (d.verdict, outcome)
                }
            };
            Part {
                resource: resource.name(),
                verdict,
                why: format!(
                    "{}: {outcome}. {}",
                    format::capitalise(resource.name()),
                    vm_costs(resource)
                ),
            }
        });
        let d = match decide(pairs, Side::Above, false) {
            Ok(d) => d,
            Err(why) => return undecided(claim, why, "", &[], figures, vec![]),
        };
        let why = match d.verdict {
            Verdict::Supported => format!(
                "Every kernel ran clearly faster in every container than in {}.",
                d.vms(false)
            ),
            Verdict::NotSupported => format!(
                "On no kernel did a container clearly outrun {}: work that stays in user mode runs \
                 at the same speed under both.",
                d.vms(true)
            ),
            _ => format!(
                "Containers are clearly faster than {} only on some kernels: {}. Elsewhere there is \
                 no clear difference, or the VM wins.",
                d.vms(false),
                d.list(|x| x == Side::Above)
            ),
        };
        let sandboxes = sandboxes_stand(
            &s,
            Side::Above,
            ("faster", "slower"),
            Scope::File,
            pair,
            &mut figures,
        );
        let mut a = assess(
            claim,
            &d,
            why,
            &sandboxes,
            figures,
            vm_caveats(files, &s, true),
        );
        a.parts = parts;
        a
    }
}
/// Where a container and a VM pay for their isolation on `resource`, and why.
fn vm_costs(resource: Resource) -> &'static str {
    match resource {
        Resource::Compute => {
            "User-mode instructions run natively in both: a VM's CPU is the host's, nothing \
             traps."
        }
        Resource::Memory => {
            "The same memory; a VM's TLB misses walk two levels of page tables (the guest's, then \
             the host's nested ones), which random access shows."
        }
        Resource::SystemCalls => {
            "A container's system calls go straight to the host's kernel; a guest's go to its own \
             kernel, without leaving the VM (a bare guest's become VM exits)."
        }
        Resource::Disk => {
            "A container's disk is a file of the host's, reached through the host's own kernel; a \
             VM's every request is a virtio notification — a VM exit — served by its VMM from the \
             same file, and its completion an interrupt injected back."
        }
        Resource::Network => {
            "A container's packets cross one veth pair into the peer's namespace; a VM's cross a \
             virtio card — a VM exit per notification — its VMM and a tap device; gVisor's go \
             through its network stack in user space."
        }
    }
}
