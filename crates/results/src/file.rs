//! A results file: written a record per line as samples complete ([`Writer`]), read with bounds
//! and converted from older versions ([`Results`]), and asked about per backend through an
//! index built once ([`crate::index`]).

use crate::*;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Errors of reading and writing results.
#[derive(Debug, thiserror::Error)]
pub enum ResultsError {
    /// A file or directory could not be used.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A line is not a valid record.
    #[error("{path} line {line}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// Why.
        source: serde_json::Error,
    },
    /// A line longer than any record (a file that is not results, or garbage without newlines).
    #[error("{path} line {line}: longer than {max} bytes: not an isolab results file")]
    LineTooLong {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The limit.
        max: usize,
    },
    /// The file could not be opened, or was refused before it was read: not a regular file (a
    /// directory without results, a FIFO, a device such as /dev/zero), or larger than
    /// [`MAX_FILE`].
    #[error(transparent)]
    Files(#[from] isolab_host::files::FilesError),
    /// A stop was requested while the file was read ([`isolab_host::interrupt::work_stopped`]).
    #[error("stopped while reading {0}")]
    Interrupted(PathBuf),
    /// The file does not start with an environment record of a schema this version reads.
    #[error(
        "{path}: not an isolab results file (expected a first line with \"schema\":\"{SCHEMA}\" or \"{}\")",
        v1::SCHEMA
    )]
    NotResults {
        /// The file.
        path: PathBuf,
    },
}

impl ResultsError {
    /// True for a file the user named that is not results the lab can read (exit status 2):
    /// not a results file, a line that is not a record, a file refused by its kind or size, a
    /// path that does not exist.
    pub fn is_usage(&self) -> bool {
        match self {
            ResultsError::NotResults { .. }
            | ResultsError::Parse { .. }
            | ResultsError::LineTooLong { .. } => true,
            ResultsError::Files(e) => e.is_usage(),
            ResultsError::Io { source, .. } => isolab_host::files::is_path_problem(source),
            ResultsError::Interrupted(_) => false,
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ResultsError + '_ {
    move |source| ResultsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Appends records to a results file, one flushed line each.
#[derive(Debug)]
pub struct Writer {
    path: PathBuf,
    file: File,
}

impl Writer {
    /// Make a new directory `<out>/<UTC timestamp>-<label>/` (with `-2`, `-3`, ... if two runs
    /// start within one second).
    ///
    /// The directory is claimed by `mkdir(2)` itself, which fails with EEXIST when the name is
    /// taken: asking "does it exist?" first and creating it after would let two labs starting in
    /// the same second both see it free and both write into it.
    pub fn new_dir(out: &Path, label: &str) -> Result<PathBuf, ResultsError> {
        fs::create_dir_all(out).map_err(io_err(out))?;
        let stamp = jiff::Timestamp::now().strftime("%Y%m%d-%H%M%S").to_string();
        let mut last = io::Error::from(io::ErrorKind::AlreadyExists);
        for n in 1..=10_000 {
            let dir = match n {
                1 => out.join(format!("{stamp}-{label}")),
                n => out.join(format!("{stamp}-{label}-{n}")),
            };
            match fs::create_dir(&dir) {
                Ok(()) => return Ok(dir),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = e,
                Err(e) => return Err(io_err(&dir)(e)),
            }
        }
        Err(io_err(out)(last))
    }

    /// Start `<dir>/results.jsonl` with `header`. The file must not exist yet.
    ///
    /// `--out` may name a directory an ordinary user can write to, and the lab usually runs as
    /// root: a link planted as `results.jsonl` must not make root append to the file it points
    /// to. O_CREAT|O_EXCL creates the file or fails, whatever is at that name (a link included,
    /// dangling or not); O_NOFOLLOW says the same for a reader who does not know that rule.
    pub fn create(dir: &Path, header: &Header) -> Result<Writer, ResultsError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let path = dir.join(RESULTS_FILE);
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .map_err(io_err(&path))?;
        let mut writer = Writer { path, file };
        writer.append(&Record::Environment(Box::new(header.clone())))?;
        Ok(writer)
    }

    /// Go on appending to the results file at `path` that a [`Writer`] of this lab started
    /// (an experiment that writes more records after its samples). The file must exist and be
    /// a regular file, not a link (O_NOFOLLOW; see [`Writer::create`]).
    pub fn reopen(path: &Path) -> Result<Writer, ResultsError> {
        let file = fs::OpenOptions::new()
            .append(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
            .map_err(io_err(path))?;
        Ok(Writer {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Append one record and flush it to the kernel, so it survives the lab being killed.
    pub fn append(&mut self, record: &Record) -> Result<(), ResultsError> {
        let mut line = serde_json::to_vec(record).expect("records always serialise");
        line.push(b'\n');
        self.file.write_all(&line).map_err(io_err(&self.path))
    }

    /// The file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// One line of a file of version 2, or of version 1 converted to version 2's shape.
fn parse_line(line: &[u8], version_1: bool) -> Result<Record, serde_json::Error> {
    if !version_1 {
        return serde_json::from_slice(line);
    }
    let mut value: serde_json::Value = serde_json::from_slice(line)?;
    v1::upgrade(&mut value);
    serde_json::from_value(value)
}

/// A results file, read back.
///
/// Read only, once made: the questions asked per backend ([`Results::backends`],
/// [`Results::runs_of`], [`Results::family`], ...) are answered from an index of the records
/// built on the first question (`src/results/index.rs`), which describes the records as they
/// were then.
#[derive(Clone, Debug, PartialEq)]
pub struct Results {
    /// Where it was read from.
    pub path: PathBuf,
    /// Its first line.
    pub header: Header,
    /// Its samples, in file order.
    pub runs: Vec<RunRecord>,
    /// Density steps, in file order.
    pub density: Vec<DensityStep>,
    /// Ends of density ladders.
    pub density_ends: Vec<DensityEnd>,
    /// The lab's layered image, when the file measured one.
    pub image: Option<ImageRecord>,
    /// The figures of `lab validate`, when the file is a validation.
    pub validations: Vec<ValidationRecord>,
    /// The snapshots `lab run restore` took.
    pub snapshots: Vec<SnapshotRecord>,
    /// The steps of `lab run restore`'s memory ladder.
    pub restore_steps: Vec<RestoreStep>,
    /// Where each backend's records are, built on first use.
    index: index::Lazy,
}

impl Results {
    /// Results made of these records (the reader's, or a test's).
    pub fn new(
        path: PathBuf,
        header: Header,
        runs: Vec<RunRecord>,
        density: Vec<DensityStep>,
        density_ends: Vec<DensityEnd>,
        image: Option<ImageRecord>,
    ) -> Results {
        Results {
            path,
            header,
            runs,
            density,
            density_ends,
            image,
            validations: Vec::new(),
            snapshots: Vec::new(),
            restore_steps: Vec::new(),
            index: index::Lazy::default(),
        }
    }

    fn index(&self) -> &index::Index {
        self.index.get(self)
    }

    /// Read a results file.
    ///
    /// Every line must be a valid record, with one exception: a last line without its newline,
    /// which a lab killed in the middle of writing it leaves, is ignored (its sample was never
    /// complete). A complete line — newline and all — that is not a record is an error, last or
    /// not: something other than the lab wrote it.
    ///
    /// The file is not the lab's own, so it is read with bounds: only a regular file (a FIFO
    /// would block, `/dev/zero` never ends) of at most [`MAX_FILE`] bytes, judged from its size
    /// before anything is read, and no line longer than [`MAX_LINE`] bytes. A stop request
    /// ([`isolab_host::interrupt::work_stopped`]) ends the reading between two lines.
    pub fn read(path: &Path) -> Result<Results, ResultsError> {
        let (file, _) = isolab_host::files::open_regular(path, MAX_FILE, "results file")?;
        // One byte more than the limit, in case the file grows while it is read.
        let mut reader = BufReader::new(file.take(MAX_FILE + 1));
        let mut total = 0;
        let mut header = None;
        let mut runs = Vec::new();
        let mut density = Vec::new();
        let mut density_ends = Vec::new();
        let mut image = None;
        let mut validations = Vec::new();
        let (mut snapshots, mut restore_steps) = (Vec::new(), Vec::new());
        let mut line = Vec::new();
        // The environment record is the same in every version; the others follow its schema.
        let mut version_1 = false;
        for number in 1.. {
            if isolab_host::interrupt::work_stopped() {
                return Err(ResultsError::Interrupted(path.to_path_buf()));
            }
            line.clear();
            let n = (&mut reader)
                .take(MAX_LINE as u64 + 1)
                .read_until(b'\n', &mut line)
                .map_err(io_err(path))?;
            if n == 0 {
                break;
            }
            total += n as u64;
            if total > MAX_FILE {
                return Err(isolab_host::files::FilesError::Grew {
                    what: "results file".into(),
                    path: path.to_path_buf(),
                    limit: MAX_FILE,
                }
                .into());
            }
            let complete = line.last() == Some(&b'\n');
            if !complete && line.len() > MAX_LINE {
                return Err(ResultsError::LineTooLong {
                    path: path.to_path_buf(),
                    line: number,
                    max: MAX_LINE,
                });
            }
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let record: Record = match parse_line(&line, version_1) {
                Ok(r) => r,
                // Torn: the last line, cut short by a lab that was killed while writing it.
                Err(_) if !complete && header.is_some() => break,
                Err(_) if number == 1 => {
                    return Err(ResultsError::NotResults {
                        path: path.to_path_buf(),
                    });
                }
                Err(source) => {
                    return Err(ResultsError::Parse {
                        path: path.to_path_buf(),
                        line: number,
                        source,
                    })
                }
            };
            match record {
                Record::Environment(h) if number == 1 && READABLE.contains(&h.schema.as_str()) => {
                    version_1 = h.schema == v1::SCHEMA;
                    header = Some(*h);
                }
                Record::Environment(_) => {
                    return Err(ResultsError::NotResults {
                        path: path.to_path_buf(),
                    })
                }
                Record::Run(r) => runs.push(*r),
                Record::DensityStep(d) => density.push(*d),
                Record::DensityEnd(d) => density_ends.push(*d),
                Record::Image(i) => image = Some(*i),
                Record::Validation(v) => validations.push(*v),
                Record::Snapshot(s) => snapshots.push(*s),
                Record::RestoreStep(s) => restore_steps.push(*s),
            }
            if header.is_none() {
                return Err(ResultsError::NotResults {
                    path: path.to_path_buf(),
                });
            }
        }
        let header = header.ok_or_else(|| ResultsError::NotResults {
            path: path.to_path_buf(),
        })?;
        if version_1 {
            v1::assign_families(&mut runs, &mut density, &mut density_ends);
        }
        let mut results = Results::new(
            path.to_path_buf(),
            header,
            runs,
            density,
            density_ends,
            image,
        );
        results.validations = validations;
        results.snapshots = snapshots;
        results.restore_steps = restore_steps;
        Ok(results)
    }

    /// Every results file at `path`: the file itself, or all `results.jsonl` files under a
    /// directory (`lab run all` writes one per experiment), in name order.
    pub fn read_all(path: &Path) -> Result<Vec<Results>, ResultsError> {
        if !path.is_dir() {
            return Ok(vec![Results::read(path)?]);
        }
        let mut files = Vec::new();
        // Directories are followed only as directories, never through symbolic links (a link
        // to `..` would make the walk endless), and only so deep.
        let mut stack = vec![(path.to_path_buf(), 0)];
        while let Some((dir, depth)) = stack.pop() {
            if isolab_host::interrupt::work_stopped() {
                return Err(ResultsError::Interrupted(dir));
            }
            for entry in fs::read_dir(&dir).map_err(io_err(&dir))?.flatten() {
                let p = entry.path();
                let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
                if is_dir && depth < 8 {
                    stack.push((p, depth + 1));
                } else if p.file_name().is_some_and(|n| n == RESULTS_FILE) {
                    files.push(p);
                }
            }
        }
        if files.is_empty() {
            return Err(ResultsError::NotResults {
                path: path.to_path_buf(),
            });
        }
        files.sort();
        files.iter().map(|f| Results::read(f)).collect()
    }

    /// The samples of `backend`, warm-up included, in file order.
    pub fn runs_of<'a>(&'a self, backend: &str) -> impl Iterator<Item = &'a RunRecord> + 'a {
        self.index()
            .runs(backend)
            .iter()
            .map(move |&i| &self.runs[i])
    }

    /// The density steps of `backend`, in file order.
    pub fn density_of<'a>(&'a self, backend: &str) -> impl Iterator<Item = &'a DensityStep> + 'a {
        self.index()
            .density(backend)
            .iter()
            .map(move |&i| &self.density[i])
    }

    /// The ends of `backend`'s density ladders, in file order.
    pub fn ends_of<'a>(&'a self, backend: &str) -> impl Iterator<Item = &'a DensityEnd> + 'a {
        self.index()
            .ends(backend)
            .iter()
            .map(move |&i| &self.density_ends[i])
    }

    /// The measured (non-warm-up) samples of `backend`.
    pub fn measured<'a>(&'a self, backend: &str) -> impl Iterator<Item = &'a RunRecord> + 'a {
        self.runs_of(backend).filter(|r| !r.warmup)
    }

    /// Backends with samples, grouped by family in table order (process, containers,
    /// sandboxes, VMs, emulated machines, the rest: [`Family`]) and by name within a family, so
    /// tables read the same way whatever order the shuffled rounds ran in.
    pub fn backends(&self) -> Vec<String> {
        self.backend_names().to_vec()
    }

    /// [`Results::backends`], without a copy.
    pub fn backend_names(&self) -> &[String] {
        self.index().backends()
    }

    /// The isolation family of `backend`: what its first record says (run records, then
    /// density steps, then ends), or [`Family::Unknown`] if it has none.
    pub fn family(&self, backend: &str) -> Family {
        self.index().family(backend)
    }

    /// The first fact `get` finds in any record of `backend` (run records first, then the ends
    /// of density ladders, which have no runs).
    pub fn fact<T>(&self, backend: &str, get: impl Fn(&Facts) -> Option<T>) -> Option<T> {
        self.runs_of(backend)
            .map(|r| &r.facts)
            .chain(self.ends_of(backend).map(|d| &d.facts))
            .find_map(get)
    }

    /// The baseline: the first backend of the [`Family::Process`] family, if one ran.
    pub fn baseline(&self) -> Option<String> {
        self.index().baseline().map(str::to_string)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeline_measures_startup_and_orders_phases_by_time() {
        let mut t = Timeline::default();
        t.push("spawn", 100);
        t.push("ready", 900);
        t.push("namespaces", 400);
        t.push("done", 1000);
        assert_eq!(t.startup_ns(), Some(800));
        assert_eq!(
            t.durations(),
            vec![
                ("namespaces".to_string(), 300),
                ("ready".to_string(), 500),
                ("done".to_string(), 100)
            ]
        );
        assert_eq!(t.between("ready", "spawn"), None);
    }

    fn header() -> Header {
        Header {
            schema: SCHEMA.into(),
            experiment: "startup".into(),
            environment: Environment::capture("v1"),
            settings: serde_json::json!({"runs": 1}),
            skipped: vec![],
        }
    }

    fn run(backend: &str, family: Family) -> RunRecord {
        let mut phases = Timeline::default();
        phases.push("spawn", 1);
        phases.push("ready", 11);
        RunRecord {
            backend: backend.into(),
            family,
            round: 0,
            order: 0,
            warmup: false,
            workload: WorkloadRecord {
                kernel: "ready".into(),
                mib: 0,
                iters: 0,
                seed: 1,
            },
            outcome: Outcome::Completed,
            startup_ns: Some(10),
            work_ns: None,
            phases,
            output: Some(OutputRecord {
                checksum: format!("{:#018x}", u64::MAX),
                ops: 0,
                bytes: 0,
            }),
            memory_at_ready: None,
            memory_at_done: None,
            cgroup_peak_bytes: Some(4096),
            cpu_ns: None,
            probe: vec![],
            facts: Facts::default(),
            neighbours: None,
        }
    }

    #[test]
    fn a_file_round_trips_and_a_torn_last_line_is_dropped() {
        let dir = std::env::temp_dir().join(format!("isolab-results-test-{}", std::process::id()));
        let mut w = Writer::create(&Writer::new_dir(&dir, "startup").unwrap(), &header()).unwrap();
        w.append(&Record::Run(Box::new(run("container", Family::Container))))
            .unwrap();
        w.append(&Record::Run(Box::new(run("process", Family::Process))))
            .unwrap();
        let path = w.path().to_path_buf();
        drop(w);
        // Simulate a lab killed in the middle of writing a line.
        let mut f = fs::OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"record\":\"run\",\"backe").unwrap();
        let back = Results::read(&path).unwrap();
        assert_eq!(back.header, header_with_date(&back.header));
        assert_eq!(
            back.runs,
            vec![
                run("container", Family::Container),
                run("process", Family::Process)
            ]
        );
        // Tables list the baseline first, whatever order the round ran in.
        assert_eq!(back.backends(), vec!["process", "container"]);
        assert_eq!(back.baseline().as_deref(), Some("process"));
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("{\"record\":\"environment\""));
        assert!(text.contains("\"schema\":\"isolab-results/2\""));
        assert!(text.contains("\"family\":\"container\""));
        assert!(text.contains("\"startup_ns\":10"));
        fs::remove_dir_all(&dir).unwrap();
    }

    fn header_with_date(read: &Header) -> Header {
        let mut h = header();
        h.environment.date = read.environment.date.clone();
        h
    }

    #[test]
    fn a_complete_invalid_last_line_is_an_error_and_an_overlong_one_too() {
        let dir = std::env::temp_dir().join(format!("isolab-results-bad-{}", std::process::id()));
        let mut w = Writer::create(&Writer::new_dir(&dir, "startup").unwrap(), &header()).unwrap();
        w.append(&Record::Run(Box::new(run("process", Family::Process))))
            .unwrap();
        let path = w.path().to_path_buf();
        drop(w);
        let good = fs::read(&path).unwrap();
        // Complete (it ends in a newline) but not a record: someone else wrote it.
        let mut bad = good.clone();
        bad.extend_from_slice(b"{\"record\":\"run\"}\n");
        fs::write(&path, &bad).unwrap();
        assert!(matches!(
            Results::read(&path),
            Err(ResultsError::Parse { line: 3, .. })
        ));
        // A line longer than any record, without a newline in sight.
        let mut long = good.clone();
        long.extend(std::iter::repeat_n(b'x', MAX_LINE + 10));
        fs::write(&path, &long).unwrap();
        assert!(matches!(
            Results::read(&path),
            Err(ResultsError::LineTooLong { line: 3, .. })
        ));
        // A torn last line is still only a sample never completed.
        let mut torn = good;
        torn.extend_from_slice(b"{\"record\":\"ru");
        fs::write(&path, &torn).unwrap();
        assert_eq!(Results::read(&path).unwrap().runs.len(), 1);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_file_over_the_size_limit_is_refused_from_its_size() {
        let dir = std::env::temp_dir().join(format!("isolab-results-huge-{}", std::process::id()));
        let w = Writer::create(&Writer::new_dir(&dir, "startup").unwrap(), &header()).unwrap();
        let path = w.path().to_path_buf();
        drop(w);
        // A valid first line, then a sparse gigabyte: zeros a reader would take minutes over.
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(1 << 30)
            .unwrap();
        let e = Results::read(&path).unwrap_err();
        assert!(
            matches!(
                &e,
                ResultsError::Files(isolab_host::files::FilesError::TooLarge { size, limit, .. })
                    if *size == 1 << 30 && *limit == MAX_FILE
            ),
            "{e}"
        );
        assert!(e.is_usage());
        assert_eq!(
            e.to_string(),
            format!(
                "results file {} is 1 GiB; the limit is 64 MiB",
                path.display()
            )
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_link_planted_as_the_results_file_is_not_followed() {
        let dir = std::env::temp_dir().join(format!("isolab-results-link-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("run")).unwrap();
        let victim = dir.join("victim");
        fs::write(&victim, "precious\n").unwrap();
        std::os::unix::fs::symlink(&victim, dir.join("run").join(RESULTS_FILE)).unwrap();
        let e = Writer::create(&dir.join("run"), &header()).unwrap_err();
        assert!(
            matches!(&e, ResultsError::Io { source, .. } if source.kind() == io::ErrorKind::AlreadyExists),
            "{e}"
        );
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious\n");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn labs_starting_in_the_same_second_get_different_directories() {
        let out = std::env::temp_dir().join(format!("isolab-results-race-{}", std::process::id()));
        let _ = fs::remove_dir_all(&out);
        let barrier = std::sync::Barrier::new(16);
        let dirs: Vec<PathBuf> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..16)
                .map(|_| {
                    s.spawn(|| {
                        barrier.wait();
                        Writer::new_dir(&out, "startup").unwrap()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let unique: std::collections::BTreeSet<_> = dirs.iter().collect();
        assert_eq!(unique.len(), dirs.len(), "each claimed its own: {dirs:?}");
        fs::remove_dir_all(&out).unwrap();
    }

    #[test]
    fn a_file_that_is_not_results_is_refused() {
        let path = std::env::temp_dir().join(format!("isolab-not-results-{}", std::process::id()));
        fs::write(&path, "hello\n").unwrap();
        assert!(matches!(
            Results::read(&path),
            Err(ResultsError::NotResults { .. })
        ));
        fs::remove_file(&path).unwrap();
    }

    /// Two lines as isolab 1 wrote them: a bare `vm` with its facts as strings, and a `vm`
    /// from before runs recorded their guest OS.
    const VERSION_1: &str = r#"{"record":"environment","schema":"isolab-results/1","experiment":"startup","environment":{"hostname":"h","cpu_model":"c","cpus":2,"memory_bytes":1,"kernel_release":"6.1","kvm":"nested-pvm","cgroup":"v2","uid":0,"lab_version":"0.1.0","commit":"x","date":"2026-01-01T00:00:00Z"},"settings":{},"skipped":[]}
{"record":"run","backend":"vm","round":0,"order":0,"warmup":false,"workload":{"kernel":"ready","mib":0,"iters":0,"seed":1},"outcome":{"kind":"completed"},"startup_ns":10,"work_ns":1,"phases":[],"output":null,"memory_at_ready":null,"memory_at_done":null,"cgroup_peak_bytes":null,"cpu_ns":null,"info":{"guest_os":"none","image_bytes":"26624","exits_total":"3"}}
{"record":"run","backend":"vm-old","round":0,"order":1,"warmup":false,"workload":{"kernel":"ready","mib":0,"iters":0,"seed":1},"outcome":{"kind":"completed"},"startup_ns":10,"work_ns":1,"phases":[],"output":null,"memory_at_ready":null,"memory_at_done":null,"cgroup_peak_bytes":null,"cpu_ns":null}
{"record":"density-step","backend":"qemu","n":1,"added":1,"launch_ns":1,"charged_bytes":1,"kernel_bytes":1,"pss_bytes":1,"mem_available_drop_bytes":1,"idle_cpu_ns":0,"idle_window_ns":1}
"#;

    #[test]
    fn a_version_1_file_is_read_with_typed_facts_and_families() {
        let dir = std::env::temp_dir().join(format!("isolab-results-v1-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join(RESULTS_FILE);
        fs::write(&path, VERSION_1).unwrap();
        let r = Results::read(&path).unwrap();
        assert_eq!(r.header.schema, v1::SCHEMA);
        assert_eq!(r.runs[0].family, Family::VmNoOs);
        assert_eq!(r.runs[0].facts.guest_os, Some(GuestOs::None));
        assert_eq!(r.runs[0].facts.image_bytes, Some(26624));
        assert_eq!(r.runs[0].facts.exits["total"], 3);
        // Unknown stays unknown: no guest OS recorded is not "linux".
        assert_eq!(r.runs[1].family, Family::Vm);
        assert_eq!(r.runs[1].facts.guest_os, None);
        // A ladder cut short before its end record: nothing says whether qemu was emulated.
        assert_eq!(r.density[0].family, Family::Unknown);
        assert_eq!(r.family("qemu"), Family::Unknown);
        fs::remove_dir_all(&dir).unwrap();
    }
}

/// Property tests of the reader: whatever the lab wrote reads back as written, and a file cut
/// anywhere keeps every sample whose line is whole.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn text() -> impl Strategy<Value = String> {
        // Any Unicode, including newlines, quotes and backslashes, which JSON must escape.
        proptest::string::string_regex("(.|\n|\"|\\\\){0,24}").unwrap()
    }

    fn outcome() -> impl Strategy<Value = Outcome> {
        prop_oneof![
            Just(Outcome::Completed),
            Just(Outcome::OomKilled),
            Just(Outcome::Stopped),
            text().prop_map(|reason| Outcome::Failed { reason }),
        ]
    }

    prop_compose! {
        fn run_record()(
            backend in text(),
            round in any::<u32>(),
            order in any::<u32>(),
            warmup in any::<bool>(),
            kernel in text(),
            mib in any::<u64>(),
            iters in any::<u64>(),
            seed in any::<u64>(),
            outcome in outcome(),
            startup_ns in any::<Option<u64>>(),
            work_ns in any::<Option<u64>>(),
            phases in proptest::collection::vec((text(), any::<u64>()), 0..6),
            checksum in any::<Option<u64>>(),
            peak in any::<Option<u64>>(),
            cpu_ns in any::<Option<u64>>(),
            probe in proptest::collection::vec((text(), text()), 0..4),
            facts in proptest::collection::vec((text(), text()), 0..4),
            family in proptest::sample::select(Family::ALL.to_vec()),
        ) -> RunRecord {
            // Facts as a backend reports them on the wire: known keys become typed fields,
            // the rest stay text.
            let mut typed = Facts::default();
            for (key, value) in &facts {
                typed.set(key, value);
            }
            RunRecord {
                backend,
                family,
                round,
                order,
                warmup,
                workload: WorkloadRecord { kernel, mib, iters, seed },
                outcome,
                startup_ns,
                work_ns,
                phases: Timeline {
                    phases: phases
                        .into_iter()
                        .map(|(name, t_ns)| Phase { name, t_ns })
                        .collect(),
                },
                output: checksum.map(|c| OutputRecord {
                    checksum: format!("{c:#018x}"),
                    ops: c / 3,
                    bytes: c / 5,
                }),
                memory_at_ready: None,
                memory_at_done: None,
                cgroup_peak_bytes: peak,
                cpu_ns,
                probe,
                facts: typed,
                neighbours: None,
            }
        }
    }

    fn header() -> Header {
        Header {
            schema: SCHEMA.into(),
            experiment: "startup".into(),
            environment: Environment::capture("v2"),
            settings: serde_json::json!({"runs": 1}),
            skipped: vec![],
        }
    }

    /// A fresh results file holding `runs`; returns its path and the byte offset where each
    /// line ends.
    fn write(dir: &Path, runs: &[RunRecord]) -> (PathBuf, Vec<usize>) {
        let _ = fs::remove_dir_all(dir);
        let mut w = Writer::create(dir, &header()).unwrap();
        for r in runs {
            w.append(&Record::Run(Box::new(r.clone()))).unwrap();
        }
        let path = w.path().to_path_buf();
        let bytes = fs::read(&path).unwrap();
        let ends = bytes
            .iter()
            .enumerate()
            .filter(|(_, &b)| b == b'\n')
            .map(|(i, _)| i + 1)
            .collect();
        (path, ends)
    }

    fn scratch(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("isolab-prop-{name}-{}", std::process::id()))
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            failure_persistence: None,
            ..ProptestConfig::with_cases(64)
        })]

        #[test]
        fn what_is_written_reads_back(runs in proptest::collection::vec(run_record(), 0..6)) {
            let dir = scratch("roundtrip");
            let (path, _) = write(&dir, &runs);
            let back = Results::read(&path).unwrap();
            prop_assert_eq!(back.runs, runs);
            fs::remove_dir_all(&dir).unwrap();
        }

        /// A lab killed at any byte of a write: every sample whose line is whole is kept, the
        /// cut one is not, and nothing is an error once the first line is whole.
        #[test]
        fn a_file_cut_anywhere_keeps_every_whole_line(
            runs in proptest::collection::vec(run_record(), 1..5),
            cut in any::<proptest::sample::Index>(),
        ) {
            let dir = scratch("cut");
            let (path, ends) = write(&dir, &runs);
            let bytes = fs::read(&path).unwrap();
            let at = cut.index(bytes.len() + 1);
            fs::write(&path, &bytes[..at]).unwrap();
            match Results::read(&path) {
                Ok(back) => {
                    // Lines 2.. are runs; the one cut short may still parse if only its
                    // newline is missing.
                    let whole = ends.iter().skip(1).filter(|&&e| e <= at).count();
                    prop_assert!(at >= ends[0] - 1, "no header, but read: {at}");
                    prop_assert!(back.runs.len() == whole || back.runs.len() == whole + 1);
                    prop_assert_eq!(&back.runs[..], &runs[..back.runs.len()]);
                }
                Err(e) => prop_assert!(at < ends[0], "cut at {at} after the header: {e}"),
            }
            fs::remove_dir_all(&dir).unwrap();
        }

        /// Anything at all after a valid file: an error or more records, never a panic, and a
        /// complete line that is not a record is always an error.
        #[test]
        fn garbage_after_a_valid_file_is_never_a_panic(
            runs in proptest::collection::vec(run_record(), 0..3),
            tail in proptest::collection::vec(any::<u8>(), 0..512),
        ) {
            let dir = scratch("garbage");
            let (path, _) = write(&dir, &runs);
            let mut bytes = fs::read(&path).unwrap();
            bytes.extend_from_slice(&tail);
            fs::write(&path, &bytes).unwrap();
            if let Ok(back) = Results::read(&path) {
                prop_assert_eq!(&back.runs[..runs.len()], &runs[..]);
                let lines = tail.split(|&b| b == b'\n').count() - 1;
                if lines > 0 {
                    // Every complete garbage line that read fine must have been a record.
                    let complete = &tail[..tail.iter().rposition(|&b| b == b'\n').unwrap() + 1];
                    for line in complete.split(|&b| b == b'\n') {
                        if !line.iter().all(u8::is_ascii_whitespace) {
                            prop_assert!(serde_json::from_slice::<Record>(line).is_ok());
                        }
                    }
                }
            }
            fs::remove_dir_all(&dir).unwrap();
        }
    }
}
