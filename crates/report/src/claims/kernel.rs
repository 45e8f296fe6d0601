//! The judge of "containers share the host's kernel; a VM has its own".

use super::evidence::*;
use super::*;

/// The judge of the `kernel` claim.
#[derive(Debug)]
pub(super) struct Kernel;

impl Judge for Kernel {
    fn judge(&self, claim: Claim, files: &Files) -> Assessment {
        let (all, s) = probed(files);
        if all.is_empty() {
            return Assessment::no_data(claim, "No backend ran the probe here.");
        }
        let with_release: Vec<&Probed> = all.iter().filter(|p| p.release().is_some()).collect();
        let containers: Vec<&&Probed> = with_release
            .iter()
            .filter(|p| p.is(Role::Container))
            .collect();
        let vms: Vec<&&Probed> = with_release.iter().filter(|p| p.is(Role::Vm)).collect();
        if containers.is_empty() || vms.is_empty() {
            return Assessment::no_data(
                claim,
                "The probe needs at least one container and one VM to compare.",
            );
        }
        let mut figures = vec![format!("host: {}", all[0].host_release)];
        figures.extend(with_release.iter().map(|p| {
            format!(
                "{}{}: {}",
                files.prefix(p.entrant.file),
                p.entrant.label,
                p.release().unwrap_or(format::NONE)
            )
        }));
        let sharing = containers.iter().filter(|p| p.shares_host_kernel()).count();
        let own = vms.iter().filter(|p| !p.shares_host_kernel()).count();
        let verdict = if sharing == containers.len() && own == vms.len() {
            Verdict::Supported
        } else if sharing == 0 || own == 0 {
            Verdict::NotSupported
        } else {
            Verdict::Depends
        };
        let mut why = match verdict {
            Verdict::Supported => "Every container answered with the host's kernel release, every VM with another.".to_string(),
            Verdict::NotSupported if sharing == 0 => "No container reported the host's kernel: this runtime puts a kernel of its own between the workload and the host.".into(),
            Verdict::NotSupported => "Every VM reported the host's kernel release: the guest booted the same release (the probe cannot tell a copy from the host's own).".into(),
            _ => "Some containers or VMs break the pattern: the kernel boundary belongs to the runtime, not to the word \"container\".".into(),
        };
        let none: Vec<&str> = vms
            .iter()
            .filter(|p| p.release().is_some_and(|r| r.starts_with("none")))
            .map(|p| p.entrant.name.as_str())
            .collect();
        if !none.is_empty() {
            why.push_str(&format!(
                " {} runs no kernel at all: its VMM answers for it, so a VM needs no guest OS.",
                none.join(", ")
            ));
        }
        for p in with_release
            .iter()
            .filter(|p| p.family() == Family::Sandbox)
        {
            why.push_str(&format!(
                " {} is a sandbox, not counted as a container: its workload's system calls go to a \
                 kernel of its own running in user space, which answered {}{} — the sandbox shares \
                 the host's kernel only for its own processes.",
                p.entrant.name,
                p.release().unwrap_or(format::NONE),
                if p.shares_host_kernel() {
                    " (the host's release: that kernel reports the host's version)"
                } else {
                    ", not the host's release"
                }
            ));
        }
        let mut caveats = Vec::new();
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
