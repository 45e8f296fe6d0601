//! # isolab-host
//!
//! What the lab knows about the machine it runs on, and the few tools every other crate of the
//! lab measures and reads with. Nothing here makes anything on the host; the crate above,
//! `isolab-resources`, owns what the lab makes.
//!
//! * [`facts`] — the machine: kernel release, CPU, KVM's kind, cgroups' version, user-namespace
//!   restrictions, programs on `PATH`;
//! * [`clock`] — the host's `CLOCK_MONOTONIC`, the one clock every phase of every run is stamped
//!   on;
//! * [`memory`] — what a process costs: RSS, PSS and USS from `/proc/PID/smaps_rollup`;
//! * [`stats`] — medians, percentiles and bootstrap confidence intervals;
//! * [`format`] — numbers as people read them (times, sizes, rates, ratios);
//! * [`files`] — reading files the lab did not write with bounds, and writing into directories it
//!   does not own without following links;
//! * [`fds`] — closing every descriptor a new program must not inherit;
//! * [`interrupt`] — SIGINT, SIGTERM and SIGHUP: stop soon, clean up, exit with the truth.

pub mod clock;
pub mod facts;
pub mod fds;
pub mod files;
pub mod format;
pub mod interrupt;
pub mod memory;
pub mod procfs;
pub mod stats;
