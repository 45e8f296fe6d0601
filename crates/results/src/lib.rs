//! The results schema: what every experiment writes and every report reads.
//!
//! A results file is JSON lines (`results.jsonl`): one JSON object per line, appended and
//! flushed as each sample completes, so a run that is interrupted keeps every finished sample
//! and a file can be read while it grows. The first line describes the environment once; every
//! other line is one sample. Each object says what it is in its `record` field.
//!
//! ```text
//! {"record":"environment","schema":"isolab-results/2","experiment":"startup",...}
//! {"record":"run","backend":"container","family":"container","round":0,"startup_ns":1436000,...}
//! ```
//!
//! Field names carry their unit (`startup_ns`, `peak_bytes`): a number is never ambiguous.
//! Reports use only these types, never the backends, so a report can be rendered later, on
//! another machine, from the files alone. Every record says which isolation [`Family`] its run
//! belongs to, and what the run reported about itself is typed ([`Facts`]), so a report never
//! interprets a backend's name nor looks facts up by strings. Version history of [`SCHEMA`]:
//!
//! * `isolab-results/1` — first version. Still read: see [`v1`] for how its records are
//!   converted (its string map of facts, and the families of the names it wrote).
//! * `isolab-results/2` — every run, density step and density end records its `family`; a
//!   run's facts are typed (`facts`, was the string map `info`). Since `lab validate`, a file
//!   of the `validate` experiment also holds `validation` records ([`ValidationRecord`]); files
//!   of every other experiment are unchanged, and read as before.
//!
//! The pieces: [`records`] (the schema), [`info`] (the wire names of the facts backends
//! report), [`facts`] and [`family`] (what a run says about itself, and its isolation model),
//! [`file`] (writing and reading a file), [`v1`] (reading the first version).

pub mod facts;
pub mod family;
pub mod file;
mod index;
pub mod info;
pub mod records;
pub mod v1;

pub use facts::{Facts, GuestOs};
pub use family::{Family, VmKind};
pub use file::*;
pub use records::*;

/// The name of every results file.
pub const RESULTS_FILE: &str = "results.jsonl";

/// The schema identifier written in every environment record.
pub const SCHEMA: &str = "isolab-results/2";

/// Every schema this version reads, oldest first.
pub const READABLE: [&str; 2] = [v1::SCHEMA, SCHEMA];

/// The longest line a results file may have. Records are a few KiB (a probe's facts, a Linux
/// guest's facts); a longer line is not one the lab wrote.
pub const MAX_LINE: usize = 1 << 20;

/// The largest results file the lab reads. A sample is one line of about 1 KiB (0.6 KiB for a
/// process's start-up, 1.9 KiB for a Linux guest's memory sample), so the 30 rounds of five
/// backends in `reports/sample` make files of 160–330 KiB, and 64 MiB holds some 50,000
/// samples: 10,000 rounds of five backends. A report reads a file whole and resamples each
/// backend's samples 2,000 times for its confidence intervals, so a much larger file — a
/// gigabyte named by mistake, or by someone who wants the lab (run by root) to spend minutes and
/// gigabytes on it — is refused from its size before a byte of it is read.
pub const MAX_FILE: u64 = 64 << 20;
