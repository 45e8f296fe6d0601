//! Measurement: the clock, memory readers and statistics.

pub mod clock;
pub mod memory;
pub mod stats;
