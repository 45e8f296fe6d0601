//! `lab`, the command-line front of isolab. Thin: parse ([`cli`]), run the command (a file
//! each in [`commands`]), print, and map failures to exit statuses ([`output`]) — 2 for a
//! mistake in what was asked, 1 for a failure of the machine (or an instance that did not
//! complete), 128 + the signal's number after SIGINT (130), SIGTERM (143) or SIGHUP (129), 141
//! when the reader of standard output went away.

/// `println!` that does not panic: a write error on standard output ends the command through
/// [`output::Failure::Output`] (`println!` panics on a closed pipe or a full disk).
macro_rules! say {
    ($($arg:tt)*) => {
        writeln!(std::io::stdout(), $($arg)*).map_err(Failure::Output)
    };
}

/// `print!` that does not panic, as [`say!`].
macro_rules! say_raw {
    ($($arg:tt)*) => {
        write!(std::io::stdout(), $($arg)*).map_err(Failure::Output)
    };
}

/// `eprintln!` that does not panic: with standard error gone there is nobody to tell.
macro_rules! tell {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod cli;
mod commands;
mod doctor;
mod output;

use clap::Parser;
use cli::Cli;
use isolab_host::interrupt;
use output::{interrupted, one_line, Failure};
use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help, --version
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // One line, not clap's three: the first line of its message and a pointer to help.
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            tell!("{first} (see lab --help)");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = interrupt::install() {
        tell!("warning: cannot catch Ctrl-C ({e}): an interrupted run leaves its clean-up to the next lab");
    }
    raise_fd_limit();
    // What is still buffered must reach the reader too, or the command did not work.
    let result = commands::run(cli).and_then(|code| {
        std::io::stdout().flush().map_err(Failure::Output)?;
        Ok(code)
    });
    // A stop signal decides the status: whatever else happened, the run ended because it was
    // asked to, and everything it made is gone by now.
    if let Some(sig) = interrupt::requested() {
        if let Err(Failure::Usage(e) | Failure::Runtime(e)) = &result {
            // "Interrupted" is what the line below says; any other error is worth its own.
            if !interrupted(e) {
                tell!("error: {}", one_line(e));
            }
        }
        if interrupt::cleans_up() {
            tell!(
                "stopped by {}: every completed sample is kept, everything the run made is removed",
                interrupt::name(sig)
            );
        } else {
            // A report, an export or a check that made nothing on the host: nothing to remove.
            tell!("stopped by {}", interrupt::name(sig));
        }
        return ExitCode::from(interrupt::exit_status(sig));
    }
    match result {
        Ok(code) => code,
        Err(Failure::Usage(e)) => {
            tell!("error: {}", one_line(&e));
            ExitCode::from(2)
        }
        Err(Failure::Runtime(e)) => {
            tell!("error: {}", one_line(&e));
            ExitCode::from(1)
        }
        // The reader went away (`lab backends | head -1`): what a program killed by SIGPIPE
        // would report, 128 + 13, without a word — the reader asked for no more.
        Err(Failure::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            ExitCode::from(141)
        }
        Err(Failure::Output(e)) => {
            tell!("error: cannot write to standard output: {e}");
            ExitCode::from(1)
        }
    }
}

/// Each live instance holds three pipes in the lab, and the density experiment keeps hundreds
/// alive: raise the soft limit on open files to the hard limit (the soft default is often 1024).
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}
