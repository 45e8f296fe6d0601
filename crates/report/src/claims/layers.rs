//! The judge of "images are layered: a change rebuilds only its layer".

use super::evidence::*;
use super::*;

/// The judge of the `layers` claim.
#[derive(Debug)]
pub(super) struct Layers;

impl Judge for Layers {
    fn judge(&self, claim: Claim, files: &Files) -> Assessment {
        let Some((file, builds)) = files
            .files
            .iter()
            .enumerate()
            .find_map(|(i, r)| Some((i, r.image.as_ref()?.docker.as_ref()?)))
        else {
            return Assessment::no_data(
                claim,
                "Docker did not build the lab's image here (lab run images with the docker backend \
                 does).",
            );
        };
        let prefix = files.prefix(file);
        // `FROM scratch` makes no layer; the app layer is the last step.
        let layer_steps = |b: &isolab_resources::image::docker::Build| -> Vec<(String, bool)> {
            b.steps
                .iter()
                .filter(|s| !s.instruction.starts_with("FROM"))
                .map(|s| (s.instruction.clone(), s.cached))
                .collect()
        };
        let rebuilt = layer_steps(&builds.rebuild);
        let figures: Vec<String> = rebuilt
            .iter()
            .map(|(step, cached)| {
                format!(
                    "{prefix}rebuild, {step}: {}",
                    if *cached {
                        "from the cache"
                    } else {
                        "built again"
                    }
                )
            })
            .chain([format!(
                "{prefix}bytes written: first build {}, rebuild {}",
                format::bytes(builds.first.written_bytes as f64),
                format::bytes(builds.rebuild.written_bytes as f64)
            )])
            .collect();
        let Some(((_, top_cached), below)) = rebuilt.split_last() else {
            return Assessment::no_data(claim, "Docker's build printed no steps.");
        };
        let below_cached = below.iter().all(|(_, c)| *c);
        let small = builds.rebuild.written_bytes * 10 < builds.first.written_bytes.max(1);
        let (verdict, why) = if below_cached && !top_cached && small {
            (
                Verdict::Supported,
                "Docker took every layer below the changed one from its cache and built only the \
                 changed layer again: a rebuild writes what changed, not the image.",
            )
        } else if !below_cached {
            (
                Verdict::NotSupported,
                "Docker built again a layer whose inputs did not change.",
            )
        } else {
            (
                Verdict::Depends,
                "The layers below the change came from the cache, but the rebuild did not write \
                 only what changed.",
            )
        };
        Assessment {
            claim,
            verdict,
            figures,
            why: why.into(),
            caveats: vec![],
            parts: vec![],
        }
    }
}
