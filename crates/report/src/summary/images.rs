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
/// first report wins), in table order (by family, then name). A sample reports it with its
/// facts; a ladder (`lab run images`, `lab run density`) with the facts of its end.
pub fn images(files: &[&Results]) -> Vec<ImageRow> {
    let mut rows: Vec<ImageRow> = Vec::new();
    let mut seen: HashSet<&str> = HashSet::new();
    for results in files {
        let runs = results
            .runs
            .iter()
            .map(|r| (&r.backend, r.family, &r.facts));
        let ends = (results.density_ends.iter()).map(|e| (&e.backend, e.family, &e.facts));
        for (backend, family, facts) in runs.chain(ends) {
            let Some(bytes) = facts.image_bytes else {
                continue;
            };
            if !seen.insert(backend) {
                continue;
            }
            rows.push(ImageRow {
                backend: backend.clone(),
                label: backends::label(results, backend),
                family,
                guest_os: facts.guest_os,
                bytes,
                what: facts.image.clone(),
            });
        }
    }
    rows.sort_by(|a, b| (a.family, &a.backend).cmp(&(b.family, &b.backend)));
    rows
}
