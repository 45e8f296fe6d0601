//! `process`: the workload as a plain child process — the baseline every other backend is
//! compared with.
//!
//! Spawn (as `posix_spawn` does), join the instance's cgroup, exec. No namespaces, no private root: the process sees the
//! host exactly as the lab does. It still gets its own cgroup, so its memory is counted the same
//! way as a container's or a VMM's.

use crate::instance::{Instance, Parts, Timeline};
use crate::lab::Lab;
use crate::{Availability, Backend, BackendError, Limits, Spec};
use isolab_payload as workload;
use isolab_resources::cgroup::Placement;
use isolab_spawn::child;
use isolab_spawn::child::{Exec, CONTROL_FD, REPORT_FD};
use isolab_spawn::spawn_exec;

/// The `process` backend.
#[derive(Clone, Copy, Debug, Default)]
pub struct Process;

impl Backend for Process {
    fn name(&self) -> &str {
        "process"
    }

    fn describe(&self) -> &str {
        "plain process: spawn + exec, own cgroup, no namespaces (baseline)"
    }

    fn family(&self) -> isolab_results::Family {
        isolab_results::Family::Process
    }

    /// A process needs nothing but `clone` and `exec`; without cgroups it runs unmeasured.
    fn availability(&self, _lab: &Lab) -> Availability {
        Availability::Available
    }

    /// A process runs the tools from the lab's directory of them, on the host.
    fn carries_tools(&self) -> bool {
        true
    }

    fn start(&self, lab: &Lab, spec: &Spec, limits: &Limits) -> Result<Instance, BackendError> {
        let mut timeline = Timeline::start();
        let name = lab.next_instance_name();
        let provisions = lab.provide(spec, &name, None)?;
        let cgroup = lab.instance_cgroup(&name, limits)?;
        let placement = Placement::of(cgroup.as_ref())?;
        if cgroup.is_some() {
            timeline.mark("cgroup");
        }

        let exe = lab.workload_path();
        let args = workload::argv(spec, REPORT_FD, CONTROL_FD, &provisions.given(false));
        let exec = Exec::new(&exe, "isolab-workload", &args, &[]);
        let (ends, mut fds) = child::pipes(None)?;
        // A network kernel runs in the namespace of its link to the peer, not in the host's.
        if let Some(link) = &provisions.link {
            let ns = link
                .ns
                .try_clone_fd()
                .map_err(BackendError::io("dup the link's netns"))?;
            fds.join_netns(ns)?;
        }

        let pid = spawn_exec(0, &placement, &fds, &exec).map_err(BackendError::sys("clone"))?;
        drop(placement);
        let mut instance = Instance::new(Parts {
            backend: self.name().into(),
            spec: *spec,
            main: pid,
            helpers: Vec::new(),
            cgroup,
            ends,
            timeline,
            timeout: lab.settings.timeout,
            cleanup: Vec::new(),
        });
        provisions.hand_to(lab, &mut instance);
        Ok(instance)
    }
}
