//! The judge of "a container starts faster than a virtual machine".

use super::evidence::*;
use super::*;

/// The judge of the `startup` claim.
#[derive(Debug)]
pub(super) struct Startup;

impl Judge for Startup {
    fn also_reads(&self) -> &'static [&'static str] {
        &["restore"]
    }

    fn judge(&self, claim: Claim, files: &Files) -> Assessment {
        let metric = |r: &RunRecord| r.startup_ns.map(|n| n as f64);
        let s = sides(files, |_, r, b| has_runs(r, b, |x| x.startup_ns.is_some()));
        if let Some(why) = missing(&s, "start-up samples") {
            return Assessment::no_data(claim, format!("{why} {}", claim.gives))
                .with(vm_caveats(files, &s, false));
        }
        let mut figures: Vec<String> = Vec::new();
        for (i, r) in files.files.iter().enumerate() {
            for row in summary::startup(r) {
                let shown = s.shows(i, &row.backend);
                if let (true, Some(st)) = (shown, row.startup.as_ref()) {
                    figures.push(format!(
                        "{}{}, {} start: median {}",
                        files.prefix(i),
                        row.label,
                        start_kind(r, &row.backend).name(),
                        format::with_ci(st, format::duration)
                    ));
                }
            }
        }
        let pair = |a: &Entrant, b: &Entrant| ratio_pairs(files, a, b, false, |_| true, metric);
        let pairs = pairs_with(&s.containers, &s.vms, Scope::File, pair);
        if pairs.is_empty() {
            return Assessment::no_data(claim, "No round ran both a container and a VM.");
        }
        figures.extend(pairs.iter().map(|p| p.text.clone()));
        let d = match decide(pairs, Side::Below, true) {
            Ok(d) => d,
            Err(why) => {
                let caveats = vm_caveats(files, &s, true);
                return undecided(
                    claim,
                    why,
                    "start-up samples",
                    &s.emulated,
                    figures,
                    caveats,
                );
            }
        };
        let why = match d.verdict {
            Verdict::Supported => format!(
                "Every container reached its first instruction clearly sooner than {}: {}.",
                d.vms(false),
                d.list(|_| true)
            ),
            Verdict::NotSupported => format!(
                "No container started clearly sooner than {}: {}.",
                d.vms(true),
                d.list(|_| true)
            ),
            _ => format!(
                "Some containers start clearly sooner than {}: {}; others do not: {}. It depends on \
                 the runtime and the VM, not on the isolation model alone.",
                d.vms(false),
                d.list(|x| x == Side::Below),
                d.list(|x| x != Side::Below)
            ),
        };
        let sandboxes = sandboxes_stand(
            &s,
            Side::Below,
            ("sooner", "later"),
            Scope::File,
            pair,
            &mut figures,
        );
        assess(
            claim,
            &d,
            why,
            &sandboxes,
            figures,
            vm_caveats(files, &s, true),
        )
    }
}

/// How `backend`'s runs in `results` started: restored when any of them says so (a backend's
/// restored runs are recorded under a name of their own, `vm/restored`, so they never mix).
fn start_kind(results: &Results, backend: &str) -> isolab_results::StartKind {
    results
        .runs_of(backend)
        .map(|r| r.facts.start_kind())
        .max()
        .unwrap_or_default()
}
