//! The judge of "a program runs as fast in a container as a plain process".

use super::evidence::*;
use super::*;

/// What a container pays on `resource` that a plain process does not.
fn process_costs(resource: Resource) -> &'static str {
    match resource {
        Resource::Compute | Resource::Memory => {
            "A container's instructions and memory are a process's: nothing to pay."
        }
        Resource::SystemCalls => {
            "Docker's seccomp filter runs on every system call a container makes: a few BPF \
             instructions each."
        }
        Resource::Disk => {
            "The same file on the same file system; a bind mount adds nothing on the way."
        }
        Resource::Network => {
            "Both reach the peer over a veth pair of their own (the process in a network \
             namespace the lab made, like the container's): the same kind of link."
        }
    }
}
/// The judge of the `native` claim.
#[derive(Debug)]
pub(super) struct Native;

impl Judge for Native {
    fn judge(&self, claim: Claim, files: &Files) -> Assessment {
        let s = sides(files, |_, r, b| {
            has_runs(r, b, |x| summary::rate(x).is_some())
        });
        // The baseline of each file, as an entrant to pair with.
        let baselines: Vec<Entrant> = files
            .files
            .iter()
            .enumerate()
            .filter_map(|(file, r)| {
                let name = r.baseline()?;
                has_runs(r, &name, |x| summary::rate(x).is_some()).then(|| Entrant {
                    file,
                    label: crate::backends::label(r, &name),
                    name,
                    family: Family::Process,
                    kind: None,
                })
            })
            .collect();
        if baselines.is_empty() {
            return Assessment::no_data(
                claim,
                "The process baseline has no throughput samples here.",
            );
        }
        if s.containers.is_empty() {
            return Assessment::no_data(claim, "No container has throughput samples here.");
        }
        let pair = |a: &Entrant, b: &Entrant| ratio_pairs(files, a, b, true, |_| true, rate);
        let pairs = pairs_with(&s.containers, &baselines, Scope::File, pair);
        if pairs.is_empty() {
            return Assessment::no_data(
                claim,
                "No round ran one workload as both a container and a process (or every such \
                 workload failed its checksum check).",
            );
        }
        let mut figures: Vec<String> = pairs.iter().map(|p| p.text.clone()).collect();
        let parts = by_resource(&pairs, |resource, pairs| {
            let called: Vec<&Pair> = pairs.iter().filter(|p| p.side != Side::TooFew).collect();
            let slower: Vec<&Pair> = called
                .iter()
                .copied()
                .filter(|p| p.side == Side::Below)
                .collect();
            let (verdict, outcome) = if called.is_empty() {
                (Verdict::NoData, "too few paired rounds to call".to_string())
            } else if slower.is_empty() {
                (
                    Verdict::Supported,
                    "no container clearly slower".to_string(),
                )
            } else if slower.len() == called.len() {
                (
                    Verdict::NotSupported,
                    "every container clearly slower".to_string(),
                )
            } else {
                (
                    Verdict::Depends,
                    format!("clearly slower on {}", briefs(slower.into_iter())),
                )
            };
            Part {
                resource: resource.name(),
                verdict,
                why: format!(
                    "{}: {outcome}. {}",
                    format::capitalise(resource.name()),
                    process_costs(resource)
                ),
            }
        });
        let (too_few, called): (Vec<Pair>, Vec<Pair>) =
            pairs.into_iter().partition(|p| p.side == Side::TooFew);
        if called.is_empty() {
            return not_called(claim, too_few);
        }
        let slower = called.iter().filter(|p| p.side == Side::Below).count();
        let (verdict, mut why) = if slower == 0 {
            (
                Verdict::Supported,
                "No kernel ran clearly slower in a container than as a plain process: a container is \
                 a process, its system calls go to the same kernel."
                    .to_string(),
            )
        } else if slower == called.len() {
            (
                Verdict::NotSupported,
                "Every kernel ran clearly slower in every container.".to_string(),
            )
        } else {
            (
                Verdict::Depends,
                format!(
                    "Clearly slower in a container on: {}.",
                    briefs(called.iter().filter(|p| p.side == Side::Below))
                ),
            )
        };
        if !too_few.is_empty() {
            why.push_str(&format!(
                " Not called, too few rounds: {}.",
                briefs(&too_few)
            ));
        }
        for sb in &s.sandboxes {
            let sp = pairs_with(std::slice::from_ref(sb), &baselines, Scope::File, pair);
            if sp.is_empty() {
                continue;
            }
            let slow = sp.iter().filter(|p| p.side == Side::Below).count();
            why.push_str(&format!(
                " {} is a sandbox (its system calls go to a kernel in user space), counted as \
                 neither: clearly slower than a process on {slow} of {} kernels.",
                sb.label,
                sp.len()
            ));
            figures.extend(sp.into_iter().map(|p| p.text));
        }
        let mut caveats = files.check_caveats();
        if !s.unplaced.is_empty() {
            caveats.push(format!(
                "Left out: {} (its results do not say what kind of backend it is).",
                names(&s.unplaced)
            ));
        }
        Assessment {
            claim,
            verdict,
            figures,
            why,
            caveats,
            parts,
        }
    }
}
