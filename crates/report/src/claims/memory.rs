//! The judge of "a container needs less memory than a VM".

use super::evidence::*;
use super::*;

/// The judge of the `memory` claim.
#[derive(Debug)]
pub(super) struct Memory;

impl Judge for Memory {
    fn judge(&self, claim: Claim, files: &Files) -> Assessment {
        let keep = |r: &RunRecord| r.memory_at_ready.is_some();
        let s = sides(files, |_, r, b| {
            has_runs(r, b, |x| summary::fixed_bytes(x).is_some())
        });
        if let Some(why) = missing(&s, "memory samples") {
            return Assessment::no_data(claim, format!("{why} {}", claim.gives))
                .with(vm_caveats(files, &s, false));
        }
        let mut figures: Vec<String> = Vec::new();
        for (i, r) in files.files.iter().enumerate() {
            for row in summary::memory(r) {
                let shown = s.shows(i, &row.backend);
                let Some(fixed) = row.fixed.as_ref().filter(|_| shown) else {
                    continue;
                };
                let mut line = format!(
                    "{}{}, {} MiB working set: fixed cost {}",
                    files.prefix(i),
                    row.label,
                    row.mib,
                    format::with_ci(fixed, format::bytes)
                );
                if let (Some(g), Some(o)) = (row.guest_touched, row.vmm_overhead) {
                    line.push_str(&format!(
                        "; by the end of the run, guest RAM touched {} and VMM overhead {}",
                        format::bytes(g.median),
                        format::bytes(o.median)
                    ));
                }
                figures.push(line);
            }
        }
        let pair = |a: &Entrant, b: &Entrant| {
            // Paired by round and working-set size: the pair key includes the workload.
            ratio_pairs(files, a, b, false, keep, summary::fixed_bytes)
        };
        let pairs = pairs_with(&s.containers, &s.vms, Scope::File, pair);
        if pairs.is_empty() {
            return Assessment::no_data(claim, "No round measured both a container and a VM.");
        }
        figures.extend(pairs.iter().map(|p| p.text.clone()));
        let d = match decide(pairs, Side::Below, true) {
            Ok(d) => d,
            Err(why) => {
                let caveats = vm_caveats(files, &s, false);
                return undecided(claim, why, "memory samples", &s.emulated, figures, caveats);
            }
        };
        let why = match d.verdict {
            Verdict::Supported => format!(
                "Every container's fixed cost is clearly below that of {}: {}. Such a VM pays for \
                 its guest kernel's memory and a VMM besides the workload.",
                d.vms(false),
                d.list(|_| true)
            ),
            Verdict::NotSupported => format!(
                "No container costs clearly less than {}: {}.",
                d.vms(true),
                d.list(|_| true)
            ),
            _ => format!(
                "Some containers cost clearly less than {}: {}; others do not: {}. It depends on the \
                 runtime.",
                d.vms(false),
                d.list(|x| x == Side::Below),
                d.list(|x| x != Side::Below)
            ),
        };
        let sandboxes = sandboxes_stand(
            &s,
            Side::Below,
            ("smaller", "larger"),
            Scope::File,
            pair,
            &mut figures,
        );
        // Memory does not depend on how fast the guest's kernel mode runs.
        assess(
            claim,
            &d,
            why,
            &sandboxes,
            figures,
            vm_caveats(files, &s, false),
        )
    }
}
