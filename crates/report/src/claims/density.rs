//! The judge of "more containers than VMs fit on one host".

use super::evidence::*;
use super::*;

fn per_instance_line(prefix: &str, d: &DensitySeries, memory_bytes: u64) -> Option<String> {
    let per = d.per_instance.as_ref()?;
    let mut line = format!(
        "{prefix}{}: {} per instance",
        d.label,
        format::with_ci(per, format::bytes)
    );
    if let Some(fit) = d.projected_fit(memory_bytes) {
        line.push_str(&format!(
            " (≈ {:.0} would fit in the host's {}; {} were started",
            fit,
            format::bytes(memory_bytes as f64),
            d.max_n()
        ));
        if let Some(end) = &d.end {
            line.push_str(&format!(", stopped: {}", end.reason));
        }
        line.push(')');
    }
    Some(line)
}
/// Density compares independent samples (each backend's ladder ran alone): a container's and a
/// VM's per-instance costs are compared across the files of a host, and the two 95% intervals
/// must not overlap.
fn density_pair(
    files: &Files,
    series: &[Vec<DensitySeries>],
    a: &Entrant,
    b: &Entrant,
) -> Vec<Pair> {
    let find = |e: &Entrant| {
        series[e.file]
            .iter()
            .find(|d| d.backend == e.name)
            .and_then(|d| d.per_instance)
    };
    let (Some(x), Some(y)) = (find(a), find(b)) else {
        return vec![];
    };
    let n = x.n.min(y.n);
    let side = if n < MIN_PAIRS {
        Side::TooFew
    } else if x.ci_high < y.ci_low && x.median < y.median * (1.0 - MARGIN) {
        Side::Below
    } else if x.ci_low > y.ci_high && x.median > y.median * (1.0 + MARGIN) {
        Side::Above
    } else {
        Side::Same
    };
    let line = |a_name: &str, b_name: &str| {
        let mut t = format!(
            "{}{a_name} {} vs {}{b_name} {} per instance",
            files.prefix(a.file),
            format::bytes(x.median),
            files.prefix(b.file),
            format::bytes(y.median)
        );
        if side == Side::TooFew {
            t.push_str(&format!(
                " — {n} ladder steps, fewer than {MIN_PAIRS}: not called (a higher --max gives \
                 more)"
            ));
        }
        t
    };
    vec![Pair {
        key: format!("{} vs {}", a.name, b.name),
        file: a.file,
        kind: b.kind,
        other: b.name.clone(),
        side,
        resource: None,
        text: line(&a.label, &b.label),
        brief: line(&a.name, &b.name),
    }]
}
/// The judge of the `density` claim.
#[derive(Debug)]
pub(super) struct Density;

impl Judge for Density {
    fn judge(&self, claim: Claim, files: &Files) -> Assessment {
        let series: Vec<Vec<DensitySeries>> =
            files.files.iter().map(|r| summary::density(r)).collect();
        let s = sides(files, |_, r, b| r.density_of(b).next().is_some());
        if let Some(why) = missing(&s, "density steps") {
            return Assessment::no_data(claim, format!("{why} {}", claim.gives))
                .with(vm_caveats(files, &s, false));
        }
        let mut figures: Vec<String> = Vec::new();
        for e in s.containers.iter().chain(&s.sandboxes).chain(&s.vms) {
            let r = files.files[e.file];
            if let Some(d) = series[e.file].iter().find(|d| d.backend == e.name) {
                figures.extend(per_instance_line(
                    &files.prefix(e.file),
                    d,
                    r.header.environment.memory_bytes,
                ));
            }
        }
        // Every container with every VM of the host, whichever file each ladder is in.
        let pairs = pairs_with(&s.containers, &s.vms, Scope::Host, |a, b| {
            density_pair(files, &series, a, b)
        });
        if pairs.is_empty() {
            return Assessment::no_data(claim, "No per-instance cost could be computed.");
        }
        let d = match decide(pairs, Side::Below, true) {
            Ok(d) => d,
            Err(why) => {
                let caveats = vm_caveats(files, &s, false);
                return undecided(claim, why, "density steps", &s.emulated, figures, caveats);
            }
        };
        let why = match d.verdict {
            Verdict::Supported => format!(
                "Each container adds clearly less memory than {}, so more of them fit in the same \
                 memory: {}.",
                d.vms(false),
                d.list(|_| true)
            ),
            Verdict::NotSupported => format!(
                "No container is clearly cheaper per instance than {}: {}.",
                d.vms(true),
                d.list(|_| true)
            ),
            _ => format!(
                "Some containers are clearly cheaper per instance than {}: {}; others are not: {}.",
                d.vms(false),
                d.list(|x| x == Side::Below),
                d.list(|x| x != Side::Below)
            ),
        };
        let sandboxes = sandboxes_stand(
            &s,
            Side::Below,
            ("cheaper", "costlier"),
            Scope::Host,
            |a, b| density_pair(files, &series, a, b),
            &mut figures,
        );
        let mut caveats = vm_caveats(files, &s, false);
        caveats.push(
            "Fit is projected from memory alone; CPU, PIDs and the launch rate limit density too."
                .into(),
        );
        assess(claim, &d, why, &sandboxes, figures, caveats)
    }
}
