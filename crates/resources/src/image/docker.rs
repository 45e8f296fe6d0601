//! Docker's own layers: the lab's image built by `docker build`, and rebuilt.
//!
//! Each instruction of a Dockerfile that changes the file system makes one layer, identified by
//! its parent and its instruction (and, for `COPY`, a hash of what it copies). A rebuild finds
//! each step in its cache and reuses the layer as long as nothing before it and nothing it copies
//! changed; from the first step that changed on, it builds anew. The lab builds
//!
//! ```text
//! FROM scratch
//! COPY base/ /      the program and its libraries
//! COPY app/ /       the configuration, which changes from one version to the next
//! ```
//!
//! from its own layers — offline, nothing is pulled — then changes the app layer only and builds
//! again, and records which steps were rebuilt and how many bytes their layers hold: "only the
//! layers that have changed are rebuilt", measured.

use crate::image::{Image, ImageError};
use isolab_host::format::last_lines;
use std::path::Path;
use std::process::{Command, Stdio};

/// The Dockerfile of the lab's image.
pub const DOCKERFILE: &str = "FROM scratch\nCOPY base/ /\nCOPY app/ /\n";

/// One step of a build.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Step {
    /// The instruction.
    pub instruction: String,
    /// True when the builder reused the layer from its cache.
    pub cached: bool,
}

/// What one `docker build` did.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Build {
    /// The image's tag.
    pub tag: String,
    /// Each step, in order.
    pub steps: Vec<Step>,
    /// Each layer of the image (`docker history`), oldest first: instruction and bytes.
    pub layers: Vec<(String, u64)>,
    /// Bytes of the layers this build made (not taken from the cache).
    pub written_bytes: u64,
    /// How long the build took, in ns.
    pub build_ns: u64,
}

/// Build `image` (its directory holds `base/` and `app/`) as `tag` with the CLI `cli` and its
/// `env`. The legacy builder is asked for (`DOCKER_BUILDKIT=0`): it prints, step by step,
/// whether it used its cache.
pub fn build(
    cli: &Path,
    env: &[(String, String)],
    image: &Image,
    tag: &str,
) -> Result<Build, ImageError> {
    let context = image.layers[0]
        .path
        .parent()
        .ok_or_else(|| program_error("docker build", "the image has no directory"))?;
    let started = isolab_host::clock::now_ns();
    let mut child = Command::new(cli)
        .args(["build", "--rm", "--force-rm", "-t", tag, "-f", "-"])
        .arg(context)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("DOCKER_BUILDKIT", "0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| program_error("docker build", &e.to_string()))?;
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("piped");
        stdin
            .write_all(DOCKERFILE.as_bytes())
            .map_err(|e| program_error("docker build", &e.to_string()))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| program_error("docker build", &e.to_string()))?;
    let build_ns = isolab_host::clock::now_ns() - started;
    if !out.status.success() {
        return Err(program_error(
            "docker build",
            &last_lines(&String::from_utf8_lossy(&out.stderr)),
        ));
    }
    let steps = parse_steps(&String::from_utf8_lossy(&out.stdout));
    let layers = history(cli, env, tag)?;
    // `FROM scratch` makes no layer; every later step makes one, in order.
    let written_bytes = steps
        .iter()
        .filter(|s| !s.instruction.starts_with("FROM"))
        .zip(&layers)
        .filter(|(s, _)| !s.cached)
        .map(|(_, (_, bytes))| *bytes)
        .sum();
    Ok(Build {
        tag: tag.to_string(),
        steps,
        layers,
        written_bytes,
        build_ns,
    })
}

/// The steps of the legacy builder's output: `Step 2/3 : COPY base/ /`, then ` ---> Using
/// cache` when it reused the layer.
pub fn parse_steps(output: &str) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    for line in output.lines() {
        if let Some(rest) = line.strip_prefix("Step ") {
            if let Some((_, instruction)) = rest.split_once(" : ") {
                steps.push(Step {
                    instruction: instruction.trim().to_string(),
                    cached: false,
                });
            }
        } else if line.trim() == "---> Using cache" {
            if let Some(last) = steps.last_mut() {
                last.cached = true;
            }
        }
    }
    steps
}

/// `docker history`: each layer's instruction and bytes, oldest first.
fn history(
    cli: &Path,
    env: &[(String, String)],
    tag: &str,
) -> Result<Vec<(String, u64)>, ImageError> {
    let out = Command::new(cli)
        .args(["history", "--no-trunc", "--human=false", "--format"])
        .arg("{{.Size}}\t{{.CreatedBy}}")
        .arg(tag)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .output()
        .map_err(|e| program_error("docker history", &e.to_string()))?;
    if !out.status.success() {
        return Err(program_error(
            "docker history",
            &last_lines(&String::from_utf8_lossy(&out.stderr)),
        ));
    }
    let mut layers: Vec<(String, u64)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (size, by) = l.split_once('\t')?;
            Some((by.to_string(), size.trim().parse().ok()?))
        })
        .collect();
    layers.reverse();
    Ok(layers)
}

fn program_error(program: &str, detail: &str) -> ImageError {
    ImageError::Program {
        program: program.into(),
        detail: detail.into(),
    }
}

/// Remove the image `tag` (with the untagged layers only it used): the ledger's way.
pub fn remove(cli: &Path, env: &[(String, String)], tag: &str) -> Result<Vec<String>, String> {
    let out = Command::new(cli)
        .args(["rmi", "--force", tag])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", cli.display()))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        Ok(vec![format!("removed docker image {tag}")])
    } else if stderr.contains("No such image") {
        Ok(Vec::new())
    } else {
        Err(format!("docker rmi --force {tag}: {}", last_lines(&stderr)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_legacy_builders_steps_say_what_came_from_its_cache() {
        let out = "Sending build context to Docker daemon  67.1MB\r\n\
                   Step 1/3 : FROM scratch\n ---> \n\
                   Step 2/3 : COPY base/ /\n ---> Using cache\n ---> 3f1c\n\
                   Step 3/3 : COPY app/ /\n ---> 9a2b\nSuccessfully built 9a2b\n";
        let steps = parse_steps(out);
        assert_eq!(
            steps
                .iter()
                .map(|s| (s.instruction.as_str(), s.cached))
                .collect::<Vec<_>>(),
            [
                ("FROM scratch", false),
                ("COPY base/ /", true),
                ("COPY app/ /", false)
            ]
        );
    }
}
