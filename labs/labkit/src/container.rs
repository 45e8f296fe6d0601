//! What `lab` asks of a container runtime.
//!
//! ```text
//! RUNTIME --rootfs DIR --hostname NAME --cgroup DIR [--memory-limit BYTES] --caps N,N,...
//!         -- /workload ARG...
//! ```
//!
//! * `--rootfs`: a directory on the host that holds the container's whole file system: the
//!   workload at `DIR/workload`, empty `proc/`, `dev/` and `tmp/`, and a file whose name `lab`
//!   chose at random. It becomes the container's `/`.
//! * `--hostname`: the container's host name (random in `lab check`).
//! * `--cgroup`: a cgroup directory `lab` created for this container (on cgroup v1, the one of
//!   the memory controller). Your runtime is already in it, and so is every process it starts.
//! * `--memory-limit`: the memory limit to set, in bytes (absent: no limit).
//! * `--caps`: the capability numbers the container keeps (Docker's set, plus what `lab check`
//!   adds at random).
//! * after `--`: the program to run *inside* the container and its arguments. The path is
//!   inside the new root (`/workload`).
//!
//! File descriptors 3 and 4 belong to the workload: leave them open for it.

use crate::{from_env, last, number, split_options, UsageError};
use std::path::PathBuf;

/// One container to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The directory that becomes the container's root.
    pub rootfs: PathBuf,
    /// The container's host name.
    pub hostname: String,
    /// The cgroup directory the runtime and the container live in.
    pub cgroup: PathBuf,
    /// The memory limit in bytes, if any.
    pub memory_limit: Option<u64>,
    /// Capability numbers to keep (e.g. 0 = `CAP_CHOWN`); every other one is dropped.
    pub caps: Vec<u32>,
    /// The program to run in the container (a path inside the new root) and its arguments.
    pub command: Vec<String>,
}

impl Request {
    /// Read the request from this process's command line; on a mistake, say why and exit 2.
    pub fn from_args() -> Request {
        from_env(Request::parse)
    }

    /// Parse the arguments after the program name.
    pub fn parse(args: &[String]) -> Result<Request, UsageError> {
        let known = ["rootfs", "hostname", "cgroup", "memory-limit", "caps"];
        let (options, command) = split_options(args, &known)?;
        let get = |key: &str| last(&options, key);
        let required =
            |key: &str| get(key).ok_or_else(|| UsageError(format!("--{key} is required")));
        let caps = match get("caps") {
            None | Some("") => Vec::new(),
            Some(list) => list
                .split(',')
                .map(|c| number("caps", c).map(|n| n as u32))
                .collect::<Result<_, _>>()?,
        };
        if command.is_empty() {
            return Err(UsageError("no program after --".into()));
        }
        Ok(Request {
            rootfs: required("rootfs")?.into(),
            hostname: required("hostname")?.into(),
            cgroup: required("cgroup")?.into(),
            memory_limit: get("memory-limit")
                .map(|v| number("memory-limit", v))
                .transpose()?,
            caps,
            command,
        })
    }

    /// The program's path as seen from the host, before the container has its own root: the
    /// root directory joined with the path inside it.
    pub fn program_on_host(&self) -> PathBuf {
        self.rootfs.join(self.command[0].trim_start_matches('/'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split(' ').map(str::to_string).collect()
    }

    #[test]
    fn parses_what_lab_sends() {
        let r = Request::parse(&words(
            "--rootfs /r --hostname h --cgroup /c --memory-limit 1024 --caps 0,1,3 -- /workload kernel=ready",
        ))
        .unwrap();
        assert_eq!(r.memory_limit, Some(1024));
        assert_eq!(r.caps, [0, 1, 3]);
        assert_eq!(r.command, ["/workload", "kernel=ready"]);
        assert_eq!(r.program_on_host(), PathBuf::from("/r/workload"));
    }

    #[test]
    fn refuses_what_lab_never_sends() {
        assert!(Request::parse(&words("--rootfs /r -- /w")).is_err());
        assert!(Request::parse(&words("--nope 1 -- /w")).is_err());
        assert!(Request::parse(&words("--rootfs /r --hostname h --cgroup /c")).is_err());
    }
}
