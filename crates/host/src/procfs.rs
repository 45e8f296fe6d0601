//! Walking `/proc`: its numbered entries are processes (`/proc`) or threads (`/proc/PID/task`).

use std::path::Path;

/// The numbered entries of `dir` — the process ids under `/proc`, the thread ids under
/// `/proc/PID/task` — in no particular order. Empty when `dir` cannot be read (the process has
/// ended); an entry that vanishes while it is read is simply missing: `/proc` changes as it is
/// walked.
pub fn numbered(dir: impl AsRef<Path>) -> Vec<i32> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_among_the_processes_and_its_thread_among_its_tasks() {
        let me = std::process::id() as i32;
        assert!(numbered("/proc").contains(&me));
        let tasks = numbered("/proc/self/task");
        assert!(tasks.contains(&me), "{tasks:?}");
        assert!(numbered("/proc/self/fdinfo-not-a-dir").is_empty());
    }
}
