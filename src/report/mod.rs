//! Reports: figures, tables (and later plots and HTML) rendered from results files only.
//!
//! Nothing here runs an instance or looks at a backend: a report is a pure function of results
//! files, so it can be rendered again, later, elsewhere, and gives the same output for the same
//! files.

pub mod summary;
pub mod table;
