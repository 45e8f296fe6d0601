//! The judge of "instances of one image share it".

use super::evidence::*;
use super::*;

/// The judge of the `sharing` claim.
#[derive(Debug)]
pub(super) struct Sharing;

impl Judge for Sharing {
    fn judge(&self, claim: Claim, files: &Files) -> Assessment {
        let mut containers: Vec<(String, f64)> = Vec::new();
        let mut vms: Vec<(String, f64, bool)> = Vec::new();
        let mut figures = Vec::new();
        for (i, r) in files.files.iter().enumerate() {
            for d in summary::density(r) {
                let Some(per) = d.per_instance_on_image else {
                    continue;
                };
                let ksm = d.steps.iter().any(|s| s.image.ksm_pages_sharing.is_some());
                let family = r.family(&d.backend);
                figures.push(format!(
                    "{}{}: {} per more instance{}",
                    files.prefix(i),
                    d.label,
                    format::with_ci(&per, format::bytes),
                    if ksm { ", with KSM" } else { "" }
                ));
                if family == Family::Container {
                    containers.push((d.label.clone(), per.median));
                } else if family.is_vm() || family == Family::Emulated {
                    vms.push((d.label.clone(), per.median, ksm));
                }
            }
        }
        if containers.is_empty() {
            return Assessment::no_data(
                claim,
                "No container climbed a ladder on the lab's image here.",
            );
        }
        let plain: Vec<&(String, f64, bool)> = vms.iter().filter(|v| !v.2).collect();
        if plain.is_empty() {
            let mut a = Assessment::no_data(
                claim,
                "No VM climbed a ladder on the lab's image here without KSM: there is nothing to \
                 compare the containers with.",
            );
            a.figures = figures;
            return a;
        }
        let worst = containers.iter().map(|c| c.1).fold(f64::MIN, f64::max);
        let cheapest_vm = plain.iter().map(|v| v.1).fold(f64::MAX, f64::min);
        let verdict = if worst < cheapest_vm / 10.0 {
            Verdict::Supported
        } else if worst >= cheapest_vm {
            Verdict::NotSupported
        } else {
            Verdict::Depends
        };
        let mut why = match verdict {
            Verdict::Supported => "Every more container costs the host less than a tenth of what every more VM costs: the containers read the image's pages from one page cache, each VM into its own memory.".to_string(),
            Verdict::NotSupported => "Some container costs as much as a VM: what it keeps of its own outweighs the image they share.".to_string(),
            _ => "Every more container costs less than every more VM, but not by ten times.".to_string(),
        };
        for (label, per, _) in vms.iter().filter(|v| v.2) {
            why.push_str(&format!(
                " With KSM, {label} costs {} per more VM ({:.0}% of the cheapest VM without it).",
                format::bytes(*per),
                100.0 * per / cheapest_vm
            ));
        }
        Assessment {
            claim,
            verdict,
            figures,
            why,
            caveats: vec![],
            parts: vec![],
        }
    }
}
