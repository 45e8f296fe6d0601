//! The judge of "a container is less isolated than a VM".

use super::evidence::*;
use super::*;

/// The judge of the `isolation` claim.
#[derive(Debug)]
pub(super) struct Isolation;

impl Judge for Isolation {
    fn judge(&self, claim: Claim, files: &Files) -> Assessment {
        let (all, s) = probed(files);
        if all.is_empty() {
            return Assessment::no_data(claim, "No backend ran the probe here.");
        }
        let containers: Vec<&Probed> = all.iter().filter(|p| p.is(Role::Container)).collect();
        let vms: Vec<&Probed> = all.iter().filter(|p| p.is(Role::Vm)).collect();
        if containers.is_empty() || vms.is_empty() {
            return Assessment::no_data(
                claim,
                "The probe needs at least one container and one VM to compare.",
            );
        }
        let placed: Vec<&Probed> = all
            .iter()
            .filter(|p| p.is(Role::Container) || p.is(Role::Sandbox) || p.is(Role::Vm))
            .collect();
        let figures: Vec<String> = placed
            .iter()
            .map(|p| {
                let root = p
                    .root_on_host()
                    .map(|r| format!("; root on the host: {r}"))
                    .unwrap_or_default();
                format!(
                    "{}{}: {} of {} facts equal the host's{root}",
                    files.prefix(p.entrant.file),
                    p.entrant.label,
                    p.shared(),
                    p.iso.rows.len()
                )
            })
            .collect();
        let vm_on_host_kernel = vms.iter().any(|p| p.shares_host_kernel());
        let min_c = containers.iter().map(|p| p.shared()).min().unwrap_or(0);
        let max_c = containers.iter().map(|p| p.shared()).max().unwrap_or(0);
        let max_v = vms.iter().map(|p| p.shared()).max().unwrap_or(0);
        let min_v = vms.iter().map(|p| p.shared()).min().unwrap_or(0);
        let verdict = if max_v < min_c && !vm_on_host_kernel {
            Verdict::Supported
        } else if min_v >= max_c {
            Verdict::NotSupported
        } else {
            Verdict::Depends
        };
        let mut why = match verdict {
            Verdict::Supported => "Every VM's workload sees less of the host than every container's, and none of them talks to the host's kernel.",
            Verdict::NotSupported => "The VMs see as much of the host as the containers do.",
            _ => "Some containers see as little of the host as some VMs: how much is hidden depends on the configuration, not only on the model.",
        }
        .to_string();
        for p in all.iter().filter(|p| p.is(Role::Sandbox)) {
            let n = p.shared();
            let place = if n < min_v {
                "fewer than every VM"
            } else if n >= max_c && n > max_v {
                "as many as the containers"
            } else if n < min_c && n > max_v {
                "between the containers and the VMs"
            } else {
                "within the range of the containers and VMs"
            };
            why.push_str(&format!(
                " {} is a sandbox (a kernel of its own, in user space), counted as neither: it \
                 shares {n} facts with the host, {place}.",
                p.entrant.name
            ));
        }
        // Whose root a container's root is: the same view can hide the host's root or a nobody.
        let root_is_hosts = |yes: bool| -> Vec<&str> {
            all.iter()
                .filter(|p| p.is(Role::Container) || p.is(Role::Sandbox))
                .filter(|p| {
                    p.root_on_host()
                        .is_some_and(|r| r.starts_with("yes") == yes)
                })
                .map(|p| p.entrant.name.as_str())
                .collect()
        };
        let (hosts, mapped) = (root_is_hosts(true), root_is_hosts(false));
        if !hosts.is_empty() {
            why.push_str(&format!(
                " Root inside is the host's root in {}: whatever escapes, or whatever such a \
                 container writes where the host can reach it, is root's.",
                hosts.join(", ")
            ));
        }
        if !mapped.is_empty() {
            why.push_str(&format!(
                " In {}, root inside is an unprivileged uid on the host (a user namespace).",
                mapped.join(", ")
            ));
        }
        let mut caveats = vec![
            "What an instance can see is a proxy: the boundary an attacker must cross is the host \
             kernel's system-call interface for a container, the VMM's exits for a VM."
                .to_string(),
        ];
        if !s.unplaced.is_empty() {
            caveats.push(format!(
                "Left out: {} (its results do not say what kind of backend it is).",
                names(&s.unplaced)
            ));
        }
        Assessment {
            claim,
            verdict,
            figures,
            why,
            caveats,
            parts: vec![],
        }
    }
}
