//! The judge of "container images are small; VM images are large".

use super::evidence::*;
use super::*;

/// The judge of the `images` claim.
#[derive(Debug)]
pub(super) struct Images;

impl Judge for Images {
    /// Every instance of every experiment notes the size of what it starts from, but only
    /// `lab run images` starts every backend from the same layered image (a bare VM elsewhere
    /// boots the workload alone): sizes from other files are not the claim's answer.
    fn seen_in(&self, results: &Results) -> bool {
        !summary::images(&[results]).is_empty()
    }

    fn judge(&self, claim: Claim, files: &Files) -> Assessment {
        let rows = summary::images(&files.files);
        let image_line = |r: &summary::ImageRow| {
            let what = r
                .what
                .as_deref()
                .map_or(String::new(), |w| format!(" ({w})"));
            format!("{}: {}{what}", r.label, format::bytes(r.bytes as f64))
        };
        let containers: Vec<&summary::ImageRow> = rows
            .iter()
            .filter(|r| r.family == Family::Container)
            .collect();
        // An image's size does not depend on how the machine runs it: emulated machines count,
        // with the OS they booted.
        let kind = |r: &summary::ImageRow| r.family.vm_kind(r.guest_os);
        let vms: Vec<&summary::ImageRow> = rows.iter().filter(|r| kind(r).is_some()).collect();
        if containers.is_empty() || vms.is_empty() {
            return Assessment::no_data(
                claim,
                format!(
                    "Image sizes of at least one container and one VM are needed (fact \
                     image_bytes). {}",
                    claim.gives
                ),
            );
        }
        let figures: Vec<String> = rows
            .iter()
            .filter(|r| {
                r.family == Family::Container || r.family == Family::Sandbox || kind(r).is_some()
            })
            .map(image_line)
            .collect();
        // Every container image against every VM image; the VMs with a guest OS decide if any.
        let pairs: Vec<Pair> = containers
            .iter()
            .flat_map(|c| {
                vms.iter().map(move |v| Pair {
                    key: format!("{} vs {}", c.backend, v.backend),
                    file: 0,
                    kind: kind(v),
                    other: v.backend.clone(),
                    side: match c.bytes.cmp(&v.bytes) {
                        std::cmp::Ordering::Less => Side::Below,
                        std::cmp::Ordering::Greater => Side::Above,
                        std::cmp::Ordering::Equal => Side::Same,
                    },
                    resource: None,
                    text: format!(
                        "{} {} vs {} {}",
                        c.label,
                        format::bytes(c.bytes as f64),
                        v.label,
                        format::bytes(v.bytes as f64)
                    ),
                    brief: format!(
                        "{} {} vs {} {}",
                        c.backend,
                        format::bytes(c.bytes as f64),
                        v.backend,
                        format::bytes(v.bytes as f64)
                    ),
                })
            })
            .collect();
        let d = match decide(pairs, Side::Below, true) {
            Ok(d) => d,
            // Sizes need no rounds: only a missing VM with a guest OS leaves it undecided.
            Err(why) => return undecided(claim, why, "an image size", &[], figures, vec![]),
        };
        let mut why = match d.verdict {
            Verdict::Supported => format!(
                "Every container image is smaller than the image of {}.",
                d.vms(false)
            ),
            Verdict::NotSupported => format!(
                "No container image is smaller than the image of {}: {}.",
                d.vms(true),
                d.list(|_| true)
            ),
            _ => format!(
                "Not every container image is smaller than the image of {}: {}. An image's size \
                 follows what is packed in it, not the isolation model alone.",
                d.vms(false),
                d.list(|x| x != Side::Below)
            ),
        };
        why.push_str(&d.addenda());
        for sb in rows.iter().filter(|r| r.family == Family::Sandbox) {
            why.push_str(&format!(
                " {} is a sandbox, counted as neither: its image is {}.",
                sb.label,
                format::bytes(sb.bytes as f64)
            ));
        }
        Assessment {
            claim,
            verdict: d.verdict,
            figures,
            why,
            caveats: vec![],
            parts: vec![],
        }
    }
}
