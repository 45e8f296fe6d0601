//! What `lab` asks of a virtual machine monitor.
//!
//! ```text
//! VMM [--ram-mib N] [--guest real:FILE | long:FILE | elf:FILE] [--scratch DIR]
//!     -- kernel=NAME mib=N iters=N hold=0|1 seed=N
//! ```
//!
//! * `--ram-mib`: guest RAM to give the VM, in MiB (a multiple of 2).
//! * `--guest`: what to run, and how it wants to start:
//!   * `real:FILE` — flat 16-bit machine code, to load at guest-physical [`REAL_MODE_LOAD`] and
//!     start in real mode at that address;
//!   * `long:FILE` — flat 64-bit machine code, to load at [`LONG_MODE_LOAD`] and start in long
//!     mode, ring 3;
//!   * `elf:FILE` — the lab's bare guest, a static ELF executable, to load and run over the
//!     hypercall ABI (`isolab_kernels::hypercall`).
//! * `--scratch`: a directory for the `io` kernel's file (only if you serve its hypercalls).
//! * after `--`: the workload, as the words of [`Spec::parse`]; it goes on the boot page.
//!
//! Without `--guest` there is nothing to run yet: build what you can, report `ready`, and wait
//! for the go-ahead ([`crate::wait_for_go`]) so `lab` can look at your VMM from outside.

use crate::{from_env, last, number, split_options, UsageError};
pub use isolab_kernels::Spec;
use std::path::PathBuf;

/// Where `real:` code is loaded and entered (CS base 0, IP = this address).
pub const REAL_MODE_LOAD: u64 = 0x1000;

/// Where `long:` code is loaded and entered: the image base of the bare guest, 1 MiB.
pub const LONG_MODE_LOAD: u64 = isolab_kernels::hypercall::IMAGE_BASE;

/// The guest to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Guest {
    /// Nothing yet: build the machine and wait.
    None,
    /// 16-bit code for real mode.
    Real(Vec<u8>),
    /// 64-bit code for long mode, ring 3.
    Long(Vec<u8>),
    /// The bare guest ELF.
    Elf(Vec<u8>),
}

/// One VM to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// Guest RAM in bytes, if `lab` said how much.
    pub ram_bytes: Option<u64>,
    /// What to run.
    pub guest: Guest,
    /// The workload the bare guest should run (what goes on its boot page).
    pub spec: Option<Spec>,
    /// Where the `io` kernel's scratch file may go.
    pub scratch: Option<PathBuf>,
}

impl Request {
    /// Read the request from this process's command line; on a mistake, say why and exit 2.
    pub fn from_args() -> Request {
        from_env(Request::parse)
    }

    /// Parse the arguments after the program name (and read the guest file).
    pub fn parse(args: &[String]) -> Result<Request, UsageError> {
        let (options, words) = split_options(args, &["ram-mib", "guest", "scratch"])?;
        let get = |key: &str| last(&options, key);
        let guest = match get("guest") {
            None => Guest::None,
            Some(g) => {
                let (kind, path) = g
                    .split_once(':')
                    .ok_or_else(|| UsageError(format!("--guest {g:?}: expected KIND:FILE")))?;
                let bytes = std::fs::read(path)
                    .map_err(|e| UsageError(format!("--guest: cannot read {path}: {e}")))?;
                match kind {
                    "real" => Guest::Real(bytes),
                    "long" => Guest::Long(bytes),
                    "elf" => Guest::Elf(bytes),
                    _ => return Err(UsageError(format!("--guest: unknown kind {kind:?}"))),
                }
            }
        };
        let spec = if words.is_empty() {
            None
        } else {
            Some(
                Spec::parse(words.iter().map(|w| w.as_bytes()))
                    .map_err(|e| UsageError(format!("workload: {e}")))?,
            )
        };
        Ok(Request {
            ram_bytes: get("ram-mib")
                .map(|v| number("ram-mib", v).map(|m| m << 20))
                .transpose()?,
            guest,
            spec,
            scratch: get("scratch").map(PathBuf::from),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_lab_sends() {
        let args: Vec<String> = ["--ram-mib", "4", "--", "kernel=cpu", "iters=5"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let r = Request::parse(&args).unwrap();
        assert_eq!(r.ram_bytes, Some(4 << 20));
        assert_eq!(r.guest, Guest::None);
        assert_eq!(r.spec.unwrap().iters, 5);
        assert!(Request::parse(&["--guest".into(), "odd".into()]).is_err());
    }
}
