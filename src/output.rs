//! What every command shares: how a failure becomes an exit status.

use isolab_backends as backend;
use isolab_experiments::ExperimentError;
use isolab_report as report;

/// A failure, and whether it was the user's input (exit 2), the machine (exit 1), or standard
/// output that can no longer be written.
pub enum Failure {
    /// A mistake in what was asked: exit 2.
    Usage(anyhow::Error),
    /// A failure of the machine, or an instance that did not complete: exit 1.
    Runtime(anyhow::Error),
    /// Standard output can no longer be written.
    Output(std::io::Error),
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        let e = e.into();
        let is_usage = e
            .downcast_ref::<ExperimentError>()
            .is_some_and(ExperimentError::is_usage)
            || e.downcast_ref::<isolab_exercises::ExercisesError>()
                .is_some_and(isolab_exercises::ExercisesError::is_usage);
        if is_usage {
            Failure::Usage(e)
        } else {
            Failure::Runtime(e)
        }
    }
}

/// The error and its causes on one line, each cause once: many of isolab's errors already
/// quote their cause in their own message.
pub fn one_line(e: &anyhow::Error) -> String {
    let mut msg = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !msg.contains(&cause) {
            msg.push_str(": ");
            msg.push_str(&cause);
        }
    }
    msg.replace('\n', " ")
}

/// A mistake in what was asked (exit 2).
pub fn usage(e: impl Into<anyhow::Error>) -> Failure {
    Failure::Usage(e.into())
}

/// True when `e` says only that the work stopped because a stop was requested.
pub fn interrupted(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref(),
            Some(backend::BackendError::Interrupted { .. })
        ) || matches!(
            c.downcast_ref(),
            Some(ExperimentError::Instance(
                backend::BackendError::Interrupted { .. }
            ))
        ) || c
            .downcast_ref::<report::ReportError>()
            .is_some_and(report::ReportError::is_interrupted)
            || matches!(
                c.downcast_ref(),
                Some(isolab_results::ResultsError::Interrupted(_))
            )
            || matches!(
                c.downcast_ref(),
                Some(isolab_host::files::FilesError::Interrupted { .. })
            )
            || matches!(
                c.downcast_ref(),
                Some(isolab_report::export::ExportError::Interrupted)
            )
            || c.downcast_ref::<isolab_exercises::ExercisesError>()
                .is_some_and(isolab_exercises::ExercisesError::is_interrupted)
    })
}
