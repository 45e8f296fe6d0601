//! `lab kernel build`: a minimal microVM kernel from a Linux source tree.
//!
//! A distribution kernel is built to boot any PC: it probes PCI, ACPI, dozens of buses, brings up
//! every CPU and loads modules from a disk. A microVM has none of that hardware, and every probe
//! of a missing device costs boot time (and, under virtualization, VM exits). The lab's kernel is
//! configured from nothing: `make allnoconfig` switches off every option that has a prompt, then
//! the fragment [`FRAGMENT`] (`microvm.config` in the repository) switches on only what a microVM
//! guest of the lab needs. Each of its lines says why.
//!
//! ```text
//!  source: a tree, or a tarball (Debian's linux-source package: /usr/src/linux-source-*.tar.xz)
//!    └─ tar -x                                  (only for a tarball)
//!  make O=out KCONFIG_ALLCONFIG=microvm.config allnoconfig
//!    └─ check every line of the fragment made it into out/.config
//!  nice -n 19 make O=out -jN bzImage            (vmlinux is built on the way)
//!  <cache>/kernel/{bzImage, vmlinux, config, build.txt}
//! ```
//!
//! The build writes only into the cache directory (`O=` keeps a given source tree untouched) and
//! runs at the lowest CPU priority, so the machine stays usable.

use crate::guest_kernel::{built_dir, cache_dir};
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The configuration fragment, applied on top of `allnoconfig`.
pub const FRAGMENT: &str = include_str!("microvm.config");

/// Programs the build runs, and the Debian package of each.
const TOOLS: [(&str, &str); 8] = [
    ("make", "make"),
    ("gcc", "gcc"),
    ("flex", "flex"),
    ("bison", "bison"),
    ("bc", "bc"),
    ("tar", "tar"),
    ("xz", "xz-utils"),
    ("nice", "coreutils"),
];

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// No source given, and none in /usr/src.
    #[error("no kernel source found in /usr/src (Debian/Ubuntu: sudo apt install linux-source; or pass --source DIR|TARBALL)")]
    NoSource,
    /// The source given is neither a kernel tree nor a tarball.
    #[error("{0} is neither a Linux source tree (Makefile and arch/x86/) nor a .tar.xz/.tar.gz/.tar.bz2/.tar archive")]
    BadSource(PathBuf),
    /// No cache directory (no HOME, no XDG_CACHE_HOME).
    #[error("no cache directory: set HOME or XDG_CACHE_HOME")]
    NoCache,
    /// A tool the build needs is missing.
    #[error("the kernel build needs {tool} (Debian/Ubuntu: sudo apt install {package} build-essential flex bison bc libelf-dev libssl-dev)")]
    MissingTool {
        /// The program.
        tool: &'static str,
        /// Its package.
        package: &'static str,
    },
    /// A step failed.
    #[error("{step} failed{status}; last lines of {log}:\n{tail}")]
    Step {
        /// The step.
        step: &'static str,
        /// Its exit status, as text.
        status: String,
        /// The log file.
        log: PathBuf,
        /// The log's end.
        tail: String,
    },
    /// Kconfig dropped options of the fragment (a dependency is missing in this source).
    #[error("this kernel source cannot give the microVM configuration: {0}")]
    Config(String),
    /// File I/O failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What the lab was doing.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> BuildError {
    let path = path.to_path_buf();
    move |source| BuildError::Io {
        action,
        path,
        source,
    }
}

/// What to build from, and how.
#[derive(Clone, Debug, Default)]
pub struct BuildOptions {
    /// A source tree or tarball; default: the newest `/usr/src/linux-source-*`.
    pub source: Option<PathBuf>,
    /// Parallel compile jobs; default: the number of CPUs.
    pub jobs: Option<usize>,
    /// Keep the extracted source and the object tree (for a faster rebuild, or to look inside).
    pub keep_tree: bool,
}

/// Where the source comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A source tree, used in place (read-only).
    Tree(PathBuf),
    /// An archive to extract first.
    Tarball(PathBuf),
}

/// A finished build.
#[derive(Clone, Debug)]
pub struct Built {
    /// The directory holding the results.
    pub dir: PathBuf,
    /// The kernel release (`make kernelrelease`).
    pub release: String,
    /// Where it came from.
    pub source: Source,
    /// Time spent extracting the source (zero for a tree).
    pub extract: Duration,
    /// Time spent configuring.
    pub configure: Duration,
    /// Time spent compiling.
    pub compile: Duration,
    /// Size of the bzImage and of the vmlinux.
    pub sizes: (u64, u64),
}

impl Built {
    /// Total wall time.
    pub fn total(&self) -> Duration {
        self.extract + self.configure + self.compile
    }
}

/// Decide where the source comes from.
pub fn resolve_source(given: Option<&Path>) -> Result<Source, BuildError> {
    let classify = |p: &Path| {
        if p.join("Makefile").is_file() && p.join("arch/x86").is_dir() {
            Some(Source::Tree(p.to_path_buf()))
        } else if p.is_file()
            && [".tar.xz", ".tar.gz", ".tar.bz2", ".tar", ".tgz"]
                .iter()
                .any(|ext| p.to_string_lossy().ends_with(ext))
        {
            Some(Source::Tarball(p.to_path_buf()))
        } else {
            None
        }
    };
    if let Some(p) = given {
        return classify(p).ok_or_else(|| BuildError::BadSource(p.to_path_buf()));
    }
    let mut found: Vec<PathBuf> = fs::read_dir("/usr/src")
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("linux-source-"))
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
        .iter()
        .rev()
        .find_map(|p| classify(p))
        .ok_or(BuildError::NoSource)
}

/// The fragment's settings: `CONFIG_X=value` lines, and `# CONFIG_X is not set` as "n".
pub fn fragment_settings(fragment: &str) -> Vec<(String, String)> {
    fragment
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            if let Some(name) = l
                .strip_prefix("# ")
                .and_then(|r| r.strip_suffix(" is not set"))
            {
                return Some((name.to_string(), "n".to_string()));
            }
            if l.starts_with('#') {
                return None;
            }
            let (k, v) = l.split_once('=')?;
            Some((k.to_string(), v.trim_matches('"').to_string()))
        })
        .collect()
}

/// The settings of the fragment that `config` (a `.config` file's text) does not have.
pub fn missing_settings(fragment: &str, config: &str) -> Vec<String> {
    let value = |name: &str| {
        config.lines().find_map(|l| {
            if l == format!("# {name} is not set") {
                return Some("n".to_string());
            }
            let (k, v) = l.split_once('=')?;
            (k == name).then(|| v.trim_matches('"').to_string())
        })
    };
    fragment_settings(fragment)
        .into_iter()
        .filter(|(k, v)| value(k).unwrap_or_else(|| "n".into()) != *v)
        .map(|(k, v)| format!("{k}={v}"))
        .collect()
}

/// True if `program` is on PATH.
fn on_path(program: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    std::env::split_paths(&path).any(|d| d.join(program).is_file())
}

/// Build the kernel; `say` is told what is happening, one line at a time.
pub fn build(opts: &BuildOptions, say: &mut dyn FnMut(&str)) -> Result<Built, BuildError> {
    for (tool, package) in TOOLS {
        if !on_path(tool) {
            return Err(BuildError::MissingTool { tool, package });
        }
    }
    let source = resolve_source(opts.source.as_deref())?;
    let cache = cache_dir().ok_or(BuildError::NoCache)?;
    let work = cache.join("kernel-build");
    if work.exists() {
        fs::remove_dir_all(&work).map_err(io_err("remove", &work))?;
    }
    fs::create_dir_all(&work).map_err(io_err("create", &work))?;
    let log = work.join("build.log");
    let out = work.join("out");
    fs::create_dir_all(&out).map_err(io_err("create", &out))?;

    // 1. The source tree.
    let started = Instant::now();
    let tree = match &source {
        Source::Tree(dir) => dir.clone(),
        Source::Tarball(archive) => {
            say(&format!("extracting {}", archive.display()));
            let dir = work.join("src");
            fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
            run(
                "extracting the source",
                Command::new("nice")
                    .args(["-n", "19", "tar", "--strip-components=1", "-xf"])
                    .arg(archive)
                    .arg("-C")
                    .arg(&dir),
                &log,
            )?;
            dir
        }
    };
    let extract = started.elapsed();

    // 2. The configuration: allnoconfig, then the fragment on top.
    let started = Instant::now();
    say("configuring: allnoconfig + microvm.config");
    let fragment = work.join("microvm.config");
    fs::write(&fragment, FRAGMENT).map_err(io_err("write", &fragment))?;
    run(
        "make allnoconfig",
        make(&tree, &out)
            .env("KCONFIG_ALLCONFIG", &fragment)
            .arg("allnoconfig"),
        &log,
    )?;
    let config_path = out.join(".config");
    let config = fs::read_to_string(&config_path).map_err(io_err("read", &config_path))?;
    let missing = missing_settings(FRAGMENT, &config);
    if !missing.is_empty() {
        return Err(BuildError::Config(format!(
            "Kconfig did not keep {} (their dependencies are off in this source)",
            missing.join(", ")
        )));
    }
    let configure = started.elapsed();

    // 3. The build.
    let jobs = opts
        .jobs
        .unwrap_or_else(isolab_host::facts::cpu_count)
        .max(1);
    say(&format!(
        "compiling with {jobs} job(s) at nice 19 (log: {})",
        log.display()
    ));
    let started = Instant::now();
    run(
        "make bzImage",
        Command::new("nice")
            .args(["-n", "19", "make", "-s"])
            .arg("-C")
            .arg(&tree)
            .arg(format!("O={}", out.display()))
            .arg(format!("-j{jobs}"))
            .arg("bzImage"),
        &log,
    )?;
    let compile = started.elapsed();
    let release = fs::read_to_string(out.join("include/config/kernel.release"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());

    // 4. The results, replacing any earlier build as a whole.
    let dest = built_dir().ok_or(BuildError::NoCache)?;
    let staging = cache.join("kernel.new");
    if staging.exists() {
        fs::remove_dir_all(&staging).map_err(io_err("remove", &staging))?;
    }
    fs::create_dir_all(&staging).map_err(io_err("create", &staging))?;
    for (from, to) in [
        (out.join("arch/x86/boot/bzImage"), "bzImage"),
        (out.join("vmlinux"), "vmlinux"),
        (config_path.clone(), "config"),
    ] {
        fs::copy(&from, staging.join(to)).map_err(io_err("copy", &from))?;
    }
    let built = Built {
        dir: dest.clone(),
        release,
        source,
        extract,
        configure,
        compile,
        sizes: (
            fs::metadata(staging.join("bzImage")).map_or(0, |m| m.len()),
            fs::metadata(staging.join("vmlinux")).map_or(0, |m| m.len()),
        ),
    };
    let note = staging.join("build.txt");
    fs::write(&note, describe(&built)).map_err(io_err("write", &note))?;
    if dest.exists() {
        fs::remove_dir_all(&dest).map_err(io_err("remove", &dest))?;
    }
    fs::rename(&staging, &dest).map_err(io_err("rename", &staging))?;
    if !opts.keep_tree {
        fs::remove_dir_all(&work).map_err(io_err("remove", &work))?;
    }
    Ok(built)
}

/// What a build produced and how long it took, as text (also saved as `build.txt`).
pub fn describe(b: &Built) -> String {
    let source = match &b.source {
        Source::Tree(p) | Source::Tarball(p) => p.display().to_string(),
    };
    format!(
        "release {}\nsource {source}\nbzImage {} bytes\nvmlinux {} bytes\nextract {:.1} s\nconfigure {:.1} s\ncompile {:.1} s\ntotal {:.1} s\n",
        b.release,
        b.sizes.0,
        b.sizes.1,
        b.extract.as_secs_f64(),
        b.configure.as_secs_f64(),
        b.compile.as_secs_f64(),
        b.total().as_secs_f64(),
    )
}

fn make(tree: &Path, out: &Path) -> Command {
    let mut cmd = Command::new("make");
    cmd.arg("-s")
        .arg("-C")
        .arg(tree)
        .arg(format!("O={}", out.display()));
    cmd
}

/// Run one step with its output appended to `log`; on failure, the log's last lines.
fn run(step: &'static str, cmd: &mut Command, log: &Path) -> Result<(), BuildError> {
    let file = File::options()
        .create(true)
        .append(true)
        .open(log)
        .map_err(io_err("open", log))?;
    let err_file = file.try_clone().map_err(io_err("open", log))?;
    let status = cmd
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(err_file)
        .status()
        .map_err(io_err("run", Path::new(step)))?;
    if status.success() {
        return Ok(());
    }
    let mut text = String::new();
    let _ = File::open(log).and_then(|f| BufReader::new(f).read_to_string(&mut text));
    let lines: Vec<&str> = text.lines().collect();
    Err(BuildError::Step {
        step,
        status: format!(" ({status})"),
        log: log.to_path_buf(),
        tail: lines[lines.len().saturating_sub(20)..].join("\n"),
    })
}

/// The `build.txt` of the last build, if there is one.
pub fn last_build() -> Option<String> {
    let path = built_dir()?.join("build.txt");
    let file = File::open(path).ok()?;
    Some(
        BufReader::new(file)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
            .join("\n"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fragment_asks_for_what_the_guest_needs() {
        let settings = fragment_settings(FRAGMENT);
        let on = |name: &str| settings.iter().any(|(k, v)| k == name && v == "y");
        // Boot by PVH, the initramfs, the console, the marker port.
        for name in [
            "CONFIG_PVH",
            "CONFIG_BLK_DEV_INITRD",
            "CONFIG_RD_GZIP",
            "CONFIG_SERIAL_8250_CONSOLE",
            "CONFIG_X86_IOPL_IOPERM",
            "CONFIG_PROC_FS",
            // The devices, found on the command line, and their drivers built in.
            "CONFIG_VIRTIO_MMIO",
            "CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES",
            "CONFIG_VIRTIO_BLK",
            "CONFIG_VIRTIO_NET",
            "CONFIG_INET",
            "CONFIG_DEVTMPFS",
            // The image's file system.
            "CONFIG_EXT4_FS",
        ] {
            assert!(on(name), "{name} missing from microvm.config");
        }
        assert!(settings.iter().all(|(k, _)| k.starts_with("CONFIG_")));
    }

    #[test]
    fn dropped_settings_are_found() {
        let fragment = "CONFIG_A=y\n# comment\nCONFIG_N=4\n# CONFIG_C is not set\n";
        let good = "CONFIG_A=y\nCONFIG_N=4\n";
        assert!(missing_settings(fragment, good).is_empty());
        let bad = "# CONFIG_A is not set\nCONFIG_N=1\nCONFIG_C=y\n";
        assert_eq!(
            missing_settings(fragment, bad),
            ["CONFIG_A=y", "CONFIG_N=4", "CONFIG_C=n"]
        );
    }

    #[test]
    fn sources_are_told_apart() {
        let dir = std::env::temp_dir().join(format!("isolab-src-{}", std::process::id()));
        fs::create_dir_all(dir.join("arch/x86")).unwrap();
        fs::write(dir.join("Makefile"), "").unwrap();
        assert_eq!(
            resolve_source(Some(&dir)).unwrap(),
            Source::Tree(dir.clone())
        );
        let tarball = dir.join("linux.tar.xz");
        fs::write(&tarball, "").unwrap();
        assert_eq!(
            resolve_source(Some(&tarball)).unwrap(),
            Source::Tarball(tarball.clone())
        );
        assert!(matches!(
            resolve_source(Some(&dir.join("arch"))),
            Err(BuildError::BadSource(_))
        ));
        fs::remove_dir_all(&dir).unwrap();
    }
}
