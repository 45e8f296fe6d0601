//! Where each backend's records are in a results file: built in one pass, asked many times.
//!
//! A report asks the same questions of every backend — its samples, its family, a fact, the
//! baseline — and asks them inside loops over backends, workloads and claims. Answered by
//! scanning every record of the file each time, N records and B backends cost N × B: for a file
//! of 30,000 samples naming 30,000 backends (a hostile file: `lab report` runs as root on files
//! anyone can write) that is 900 million record visits, before a table is drawn. The index is
//! built once, in one pass over the records ([`Index::build`]): a hash map from each backend's
//! name to the positions of its records, in file order. After that, a backend's records cost
//! what that backend has, and the list of backends in table order costs nothing.
//!
//! `HashMap` hashes with a key chosen at random for each process (SipHash), so names chosen to
//! collide in it cannot turn its lookups back into scans.

use crate::{Family, Results};
use std::collections::HashMap;

/// One backend's records: positions in [`Results::runs`], [`Results::density`] and
/// [`Results::density_ends`], each in file order.
#[derive(Clone, Debug, Default)]
struct Entry {
    family: Option<Family>,
    runs: Vec<usize>,
    density: Vec<usize>,
    ends: Vec<usize>,
}

/// The entry of `name`, made on its first record, whose family becomes the backend's.
fn entry<'m>(map: &'m mut HashMap<String, Entry>, name: &str, family: Family) -> &'m mut Entry {
    let e = map.entry(name.to_string()).or_default();
    e.family.get_or_insert(family);
    e
}

/// The records of a [`Results`], by backend. See the module docs.
#[derive(Clone, Debug, Default)]
pub(super) struct Index {
    /// Backends with samples or density steps, in table order ([`Results::backends`]).
    backends: Vec<String>,
    /// Every backend any record names.
    by_name: HashMap<String, Entry>,
    /// The first backend of the process family in table order.
    baseline: Option<String>,
    /// How many records of each kind the index was built from: a check that it still
    /// describes its file.
    counts: (usize, usize, usize),
}

impl Index {
    /// Index the records of `results`: one pass over them, then one sort of the backends.
    pub(super) fn build(results: &Results) -> Index {
        let mut by_name: HashMap<String, Entry> = HashMap::new();
        // A backend's family is what its first record says: runs first, then density steps,
        // then ladder ends ([`Results::family`]), so the kinds are visited in that order.
        for (i, r) in results.runs.iter().enumerate() {
            entry(&mut by_name, &r.backend, r.family).runs.push(i);
        }
        for (i, d) in results.density.iter().enumerate() {
            entry(&mut by_name, &d.backend, d.family).density.push(i);
        }
        for (i, d) in results.density_ends.iter().enumerate() {
            entry(&mut by_name, &d.backend, d.family).ends.push(i);
        }
        let mut backends: Vec<(Family, &String)> = by_name
            .iter()
            .filter(|(_, e)| !e.runs.is_empty() || !e.density.is_empty())
            .map(|(name, e)| (e.family.unwrap_or(Family::Unknown), name))
            .collect();
        // Table order: by family (process, containers, ..., unknown), then by name. Names are
        // unique, so the order is total and does not depend on the hash map's.
        backends.sort_unstable();
        let baseline = backends
            .iter()
            .find(|(f, _)| *f == Family::Process)
            .map(|(_, n)| n.to_string());
        let backends = backends.into_iter().map(|(_, n)| n.clone()).collect();
        Index {
            backends,
            by_name,
            baseline,
            counts: Index::counts_of(results),
        }
    }

    fn counts_of(results: &Results) -> (usize, usize, usize) {
        (
            results.runs.len(),
            results.density.len(),
            results.density_ends.len(),
        )
    }

    /// True while the index still counts the records of `results` (no record was added or
    /// removed since it was built).
    pub(super) fn describes(&self, results: &Results) -> bool {
        self.counts == Index::counts_of(results)
    }

    pub(super) fn backends(&self) -> &[String] {
        &self.backends
    }

    pub(super) fn baseline(&self) -> Option<&str> {
        self.baseline.as_deref()
    }

    pub(super) fn family(&self, backend: &str) -> Family {
        self.by_name
            .get(backend)
            .and_then(|e| e.family)
            .unwrap_or(Family::Unknown)
    }

    pub(super) fn runs(&self, backend: &str) -> &[usize] {
        self.by_name.get(backend).map_or(&[], |e| &e.runs)
    }

    pub(super) fn density(&self, backend: &str) -> &[usize] {
        self.by_name.get(backend).map_or(&[], |e| &e.density)
    }

    pub(super) fn ends(&self, backend: &str) -> &[usize] {
        self.by_name.get(backend).map_or(&[], |e| &e.ends)
    }
}

/// A lazily built [`Index`], as a field of [`Results`]: it derives from the records, so two
/// results are equal whatever their indexes, and a clone may share the one built.
#[derive(Clone, Default)]
pub(super) struct Lazy(std::sync::OnceLock<Index>);

impl Lazy {
    pub(super) fn get(&self, results: &Results) -> &Index {
        let index = self.0.get_or_init(|| Index::build(results));
        debug_assert!(
            index.describes(results),
            "records were added to or removed from a Results after it was indexed"
        );
        index
    }
}

impl PartialEq for Lazy {
    fn eq(&self, _: &Lazy) -> bool {
        true
    }
}

impl std::fmt::Debug for Lazy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "indexed"
        } else {
            "not indexed yet"
        })
    }
}
