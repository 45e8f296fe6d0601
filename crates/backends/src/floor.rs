//! `ns-floor`: the least a namespace-based container can cost.
//!
//! One `clone` with exactly the container's namespace flags (started the same cheap way as every
//! backend's first process, see [`isolab_spawn::spawn_exec`]), then `exec` of the same static
//! workload from the host's file system. No cgroup, no root file system, no capability changes,
//! no second process. Every container runtime does at least this much, so its start-up time is
//! a floor: the distance between `container` and `ns-floor` is what isolab's runtime adds, and the
//! distance between `ns-floor` and `process` is what the namespaces themselves cost.
//!
//! Having no cgroup, it has no memory figures; it exists for start-up comparisons.

use crate::instance::{Instance, Parts, Timeline};
use crate::lab::Lab;
use crate::{Availability, Backend, BackendError, Limits, Spec};
use isolab_container::namespaces;
use isolab_payload as workload;
use isolab_spawn::child;
use isolab_spawn::child::{Exec, CONTROL_FD, REPORT_FD};
use isolab_spawn::{spawn_exec, Placement};

/// The `ns-floor` backend.
#[derive(Clone, Copy, Debug, Default)]
pub struct NsFloor;

impl Backend for NsFloor {
    fn name(&self) -> &str {
        "ns-floor"
    }

    fn describe(&self) -> &str {
        "clone with the container's namespace flags + exec, nothing else (a lower bound)"
    }

    fn family(&self) -> isolab_results::Family {
        isolab_results::Family::Floor
    }

    fn availability(&self, _lab: &Lab) -> Availability {
        if namespaces::need_userns() {
            if let Some(why) = isolab_host::facts::userns_restriction() {
                return Availability::Unavailable(format!("user namespaces are restricted: {why}"));
            }
        }
        Availability::Available
    }

    /// No cgroup, so no limits: the floor is namespaces and exec, nothing else.
    fn applies_limits(&self) -> bool {
        false
    }

    /// A comparison point for start-up benchmarks, not a way to run workloads.
    fn left_out_by_default(&self) -> Option<String> {
        Some(
            "a floor for start-up times (namespaces and exec, nothing else), not a way to run \
             workloads; `--backends ns-floor` runs it"
                .into(),
        )
    }

    /// Its network namespace is a fresh, empty one: no link to the lab's peer.
    fn supports(&self, _lab: &Lab, kernel: isolab_payload::Kernel) -> Result<(), String> {
        if kernel.needs_network() {
            return Err("its fresh network namespace has no link to the peer (a floor for start-up, nothing more)".into());
        }
        Ok(())
    }

    fn start(&self, lab: &Lab, spec: &Spec, _limits: &Limits) -> Result<Instance, BackendError> {
        let timeline = Timeline::start();
        let provisions = lab.provide(spec, &lab.next_instance_name(), None)?;
        let args = workload::argv(spec, REPORT_FD, CONTROL_FD, &provisions.given(false));
        let exec = Exec::new(&lab.workload_path(), "isolab-workload", &args, &[]);
        let (ends, fds) = child::pipes(None)?;
        let flags = namespaces::flags(namespaces::need_userns());
        let pid = spawn_exec(flags, &Placement::none(), &fds, &exec)
            .map_err(BackendError::sys("clone"))?;
        Ok(Instance::new(Parts {
            backend: self.name().into(),
            spec: *spec,
            main: pid,
            helpers: Vec::new(),
            cgroup: None,
            ends,
            timeline,
            timeout: lab.settings.timeout,
            cleanup: vec![provisions.removal()],
        }))
    }
}
