//! Images: N instances of one layered image.

use super::*;

/// The image a backend starts from.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageRow {
    /// Backend name.
    pub backend: String,
    /// Name to print.
    pub label: String,
    /// Its family.
    pub family: Family,
    /// The OS it boots, if it said (what an emulated machine is, for the images claim).
    pub guest_os: Option<GuestOs>,
    /// Size in bytes (fact `image_bytes`).
    pub bytes: u64,
    /// What it consists of (fact `image`).
    pub what: Option<String>,
}

/// The image of every backend that reported one, over all `files`, each backend once (the
/// first report wins), in table order (by family, then name).
pub fn images(files: &[&Results]) -> Vec<ImageRow> {
    let mut rows: Vec<ImageRow> = Vec::new();
    let mut seen: HashSet<&str> = HashSet::new();
    for results in files {
        for r in &results.runs {
            let Some(bytes) = r.facts.image_bytes else {
                continue;
            };
            if !seen.insert(&r.backend) {
                continue;
            }
            rows.push(ImageRow {
                backend: r.backend.clone(),
                label: backends::label(results, &r.backend),
                family: r.family,
                guest_os: r.facts.guest_os,
                bytes,
                what: r.facts.image.clone(),
            });
        }
    }
    rows.sort_by(|a, b| (a.family, &a.backend).cmp(&(b.family, &b.backend)));
    rows
}
