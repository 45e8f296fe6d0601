//! The shape of the house, checked from Cargo's own view of it (`cargo metadata`).
//!
//! * The workspace's crates are the layers: the README's crate graph is drawn from the
//!   workspace's dependencies, and this test fails when the two disagree (run it with
//!   `ISOLAB_UPDATE_README=1` to redraw the graph in the README).
//! * The container runtime and the VMM are rooms of their own: the crate that links libseccomp
//!   and the one that links kvm-ioctls do not depend on each other, and the crate that draws the
//!   report's plots depends on neither.
//! * Every room fits in a reader's head: the `lab` binary's `main.rs` is at most 150 lines and
//!   no source file is over 1,500.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

const BEGIN: &str =
    "<!-- crate-graph:begin (drawn by tests/architecture.rs from `cargo metadata`) -->";
const END: &str = "<!-- crate-graph:end -->";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The workspace as Cargo resolves it: every package by id, and its normal dependencies.
struct Workspace {
    /// Package id → name.
    names: BTreeMap<String, String>,
    /// Package ids of the workspace's members.
    members: BTreeSet<String>,
    /// Package id → the ids it depends on (normal dependencies only: not dev, not build).
    deps: BTreeMap<String, BTreeSet<String>>,
}

impl Workspace {
    fn load() -> Workspace {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let out = Command::new(cargo)
            .args(["metadata", "--format-version", "1", "--manifest-path"])
            .arg(root().join("Cargo.toml"))
            .output()
            .expect("cargo metadata runs");
        assert!(
            out.status.success(),
            "cargo metadata: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let meta: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata is JSON");
        let names = meta["packages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["id"].as_str().unwrap().to_string(),
                    p["name"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let members = meta["workspace_members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m.as_str().unwrap().to_string())
            .collect();
        let deps = meta["resolve"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| {
                let normal = n["deps"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|d| {
                        d["dep_kinds"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .any(|k| k["kind"].is_null())
                    })
                    .map(|d| d["pkg"].as_str().unwrap().to_string())
                    .collect();
                (n["id"].as_str().unwrap().to_string(), normal)
            })
            .collect();
        Workspace {
            names,
            members,
            deps,
        }
    }

    fn id(&self, name: &str) -> String {
        self.names
            .iter()
            .find(|(_, n)| *n == name)
            .unwrap_or_else(|| panic!("no package {name}"))
            .0
            .clone()
    }

    /// Everything `id` depends on, directly or not.
    fn closure(&self, id: &str) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![id.to_string()];
        while let Some(next) = todo.pop() {
            for d in self.deps.get(&next).into_iter().flatten() {
                if seen.insert(d.clone()) {
                    todo.push(d.clone());
                }
            }
        }
        seen
    }

    /// The member that depends directly on the package `name`.
    fn user_of(&self, name: &str) -> String {
        let target = self.id(name);
        let users: Vec<&String> = self
            .members
            .iter()
            .filter(|m| self.deps[*m].contains(&target))
            .collect();
        assert_eq!(users.len(), 1, "one crate uses {name}, not {users:?}");
        self.names[users[0]].clone()
    }

    /// The members' dependencies on each other, less those another path already implies (the
    /// transitive reduction): the edges worth drawing.
    fn layer_edges(&self) -> BTreeSet<(String, String)> {
        let mut edges = BTreeSet::new();
        for m in &self.members {
            let direct: BTreeSet<&String> = self.deps[m]
                .iter()
                .filter(|d| self.members.contains(*d))
                .collect();
            for d in &direct {
                let implied = direct
                    .iter()
                    .any(|other| other != d && self.closure(other).contains(*d));
                if !implied {
                    edges.insert((self.names[m].clone(), self.names[*d].clone()));
                }
            }
        }
        edges
    }

    /// The README's crate graph: Mermaid, lower layers at the bottom.
    fn graph(&self) -> String {
        let short = |n: &str| n.trim_start_matches("isolab-").replace('-', "_");
        let mut text = String::from("```mermaid\ngraph BT\n");
        for (from, to) in self.layer_edges() {
            let from = if from == "isolab" {
                "lab".to_string()
            } else {
                short(&from)
            };
            text.push_str(&format!("    {from} --> {}\n", short(&to)));
        }
        text.push_str("```\n");
        text
    }
}

#[test]
fn the_readme_draws_the_workspace_as_it_is() {
    let ws = Workspace::load();
    let readme_path = root().join("README.md");
    let readme = std::fs::read_to_string(&readme_path).unwrap();
    let (Some(b), Some(e)) = (readme.find(BEGIN), readme.find(END)) else {
        panic!("README.md has no crate graph between {BEGIN} and {END}");
    };
    let drawn = &readme[b + BEGIN.len()..e];
    let graph = format!("\n{}", ws.graph());
    if drawn != graph {
        if std::env::var_os("ISOLAB_UPDATE_README").is_some() {
            let updated = format!("{}{graph}{}", &readme[..b + BEGIN.len()], &readme[e..]);
            std::fs::write(&readme_path, updated).unwrap();
        } else {
            panic!(
                "README.md's crate graph is not the workspace's (ISOLAB_UPDATE_README=1 redraws it):\n{graph}"
            );
        }
    }
}

#[test]
fn the_container_runtime_the_vmm_and_the_report_are_rooms_of_their_own() {
    let ws = Workspace::load();
    assert!(
        ws.members.len() >= 8,
        "{} workspace crates",
        ws.members.len()
    );
    let seccomp = ws.user_of("libseccomp");
    let kvm = ws.user_of("kvm-ioctls");
    let plots = ws.user_of("plotters");
    let (seccomp_id, kvm_id, plots_id) = (ws.id(&seccomp), ws.id(&kvm), ws.id(&plots));
    assert!(
        !ws.closure(&seccomp_id).contains(&kvm_id),
        "{seccomp} (libseccomp) depends on {kvm} (kvm-ioctls)"
    );
    assert!(
        !ws.closure(&kvm_id).contains(&seccomp_id),
        "{kvm} (kvm-ioctls) depends on {seccomp} (libseccomp)"
    );
    let report = ws.closure(&plots_id);
    for lib in ["kvm-ioctls", "libseccomp"] {
        assert!(
            !report.contains(&ws.id(lib)),
            "{plots}, which draws the plots, depends on {lib}"
        );
    }
}

/// Every `.rs` file of the project: the workspace's crates, the binary, tests, benches,
/// examples and the exercises (not build output).
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy();
        if path.is_dir() {
            if name != "target" && !name.starts_with('.') {
                sources(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_file_fits_in_a_readers_head() {
    let lines = |p: &Path| std::fs::read_to_string(p).unwrap().lines().count();
    let main = lines(&root().join("src/main.rs"));
    assert!(main <= 150, "src/main.rs has {main} lines (at most 150)");
    let mut files = Vec::new();
    for dir in ["crates", "src", "tests", "benches", "examples", "labs"] {
        sources(&root().join(dir), &mut files);
    }
    let long: Vec<String> = files
        .iter()
        .filter(|f| lines(f) > 1500)
        .map(|f| format!("{} ({} lines)", f.display(), lines(f)))
        .collect();
    assert!(long.is_empty(), "over 1,500 lines: {long:?}");
}
