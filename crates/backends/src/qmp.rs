//! A small client of QMP, the QEMU Machine Protocol: how a program drives a running QEMU.
//!
//! QMP is JSON over a socket, one object a line. QEMU speaks first with a greeting (`{"QMP":
//! {...}}`); the client must send `qmp_capabilities` before anything else is accepted (the
//! *negotiation*, which also turns on events). After that the client sends commands
//! (`{"execute": "stop"}`, with `"arguments"` when they take some) and QEMU answers each in
//! order with `{"return": ...}` or `{"error": {"class": ..., "desc": ...}}`. In between, at
//! any time, QEMU sends *events* — `{"event": "RESUME", "timestamp": ...}` — when something
//! happens by itself (the guest stopped, resumed, a migration changed state).
//!
//! A command that takes a file descriptor (`getfd`) sends it beside the command's bytes, in
//! the same `sendmsg(2)`, as an `SCM_RIGHTS` control message: the kernel installs a copy of
//! the descriptor in QEMU, which keeps it under the name the command gives.
//!
//! Every wait here has a deadline: a QEMU that hangs is an error in one line, never a hung lab.

use isolab_host::clock::now_ns;
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, IoSlice, Write};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// What can go wrong talking to QEMU.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    /// QEMU's socket did not accept a connection in time (or QEMU ended first).
    #[error("QEMU's QMP socket {path} did not answer: {why}")]
    Connect {
        /// The socket's path.
        path: String,
        /// What happened instead.
        why: String,
    },
    /// Reading or writing the socket failed.
    #[error("QMP {doing}: {source}")]
    Io {
        /// What the client was doing.
        doing: String,
        /// The error.
        source: std::io::Error,
    },
    /// QEMU closed the socket: it ended.
    #[error("QEMU ended (its QMP socket closed) while the lab waited for {waiting_for}")]
    Closed {
        /// What the client was waiting for.
        waiting_for: String,
    },
    /// QEMU refused a command.
    #[error("QEMU refused {command}: {desc}")]
    Refused {
        /// The command.
        command: String,
        /// QEMU's reason.
        desc: String,
    },
    /// Nothing came in time.
    #[error("QEMU did not {what} within {after:?}")]
    Timeout {
        /// What it did not do.
        what: String,
        /// How long the client waited.
        after: Duration,
    },
    /// QEMU sent something that is not QMP.
    #[error("QMP: not a QMP message: {0}")]
    Protocol(String),
}

/// A negotiated QMP connection. Events that arrive while a command waits for its answer are
/// kept, with the host time they arrived at, for [`Qmp::wait_event`].
pub struct Qmp {
    stream: UnixStream,
    reader: BufReader<UnixStream>,
    events: Vec<(String, u64)>,
    limit: Duration,
}

impl Qmp {
    /// Connect to QEMU's QMP socket at `path`, retrying while QEMU has not made it yet, for at
    /// most `limit` or until `ended()` says QEMU is gone; then read the greeting and negotiate.
    /// Every later wait on this connection is bounded by `limit` too.
    pub fn connect(
        path: &Path,
        limit: Duration,
        ended: impl Fn() -> bool,
    ) -> Result<Qmp, QmpError> {
        let deadline = Instant::now() + limit;
        let connect_error = |why: String| QmpError::Connect {
            path: path.display().to_string(),
            why,
        };
        let stream = loop {
            // QEMU binds the socket early in its start-up, before it loads anything: until
            // then the path does not exist (ENOENT) or nobody listens yet (ECONNREFUSED).
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if Instant::now() >= deadline => {
                    return Err(connect_error(format!("{e} after {limit:?}")))
                }
                Err(e) if ended() => return Err(connect_error(format!("QEMU ended ({e})"))),
                Err(_) => std::thread::sleep(Duration::from_millis(1)),
            }
        };
        let reader = BufReader::new(stream.try_clone().map_err(|source| QmpError::Io {
            doing: "clone the socket".into(),
            source,
        })?);
        let mut qmp = Qmp {
            stream,
            reader,
            events: Vec::new(),
            limit,
        };
        let greeting = qmp.read_message("its greeting", deadline)?;
        if greeting.get("QMP").is_none() {
            return Err(QmpError::Protocol(greeting.to_string()));
        }
        qmp.execute("qmp_capabilities", None)?;
        Ok(qmp)
    }

    /// Run `command` (with `arguments`) and return QEMU's `return` value.
    pub fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value, QmpError> {
        self.execute_with_fd(command, arguments, None)
    }

    /// [`Qmp::execute`], passing `fd` to QEMU with the command's bytes (`SCM_RIGHTS`).
    pub fn execute_with_fd(
        &mut self,
        command: &str,
        arguments: Option<Value>,
        fd: Option<BorrowedFd<'_>>,
    ) -> Result<Value, QmpError> {
        let mut message = json!({ "execute": command });
        if let Some(arguments) = arguments {
            message["arguments"] = arguments;
        }
        let mut bytes = message.to_string().into_bytes();
        bytes.push(b'\n');
        let io = |source| QmpError::Io {
            doing: format!("send {command}"),
            source,
        };
        let sent = match fd {
            Some(fd) => {
                let fds = [fd.as_raw_fd()];
                let rights = [ControlMessage::ScmRights(&fds)];
                sendmsg::<()>(
                    self.stream.as_raw_fd(),
                    &[IoSlice::new(&bytes)],
                    &rights,
                    MsgFlags::MSG_NOSIGNAL,
                    None,
                )
                .map_err(|e| io(e.into()))?
            }
            None => 0,
        };
        // The rest (all of it without a descriptor; a short `sendmsg` rarely): plain writes.
        self.stream.write_all(&bytes[sent..]).map_err(io)?;
        let deadline = Instant::now() + self.limit;
        loop {
            let answer = self.read_message(&format!("its answer to {command}"), deadline)?;
            if let Some(value) = answer.get("return") {
                return Ok(value.clone());
            }
            if let Some(error) = answer.get("error") {
                return Err(QmpError::Refused {
                    command: command.into(),
                    desc: error
                        .get("desc")
                        .and_then(Value::as_str)
                        .unwrap_or("no reason given")
                        .to_string(),
                });
            }
            // An event (kept by read_message) or a greeting's echo: read on.
        }
    }

    /// Wait for event `name` (or find it among those that came already), and return the host
    /// time it arrived at.
    pub fn wait_event(&mut self, name: &str) -> Result<u64, QmpError> {
        let deadline = Instant::now() + self.limit;
        loop {
            if let Some(i) = self.events.iter().position(|(e, _)| e == name) {
                return Ok(self.events.remove(i).1);
            }
            self.read_message(&format!("event {name}"), deadline)?;
        }
    }

    /// Read one message, keeping it aside if it is an event.
    fn read_message(&mut self, waiting_for: &str, deadline: Instant) -> Result<Value, QmpError> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(QmpError::Timeout {
                what: format!("send {waiting_for}"),
                after: self.limit,
            });
        }
        let io = |source| QmpError::Io {
            doing: format!("wait for {waiting_for}"),
            source,
        };
        self.reader
            .get_ref()
            .set_read_timeout(Some(left))
            .map_err(io)?;
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => {
                return Err(QmpError::Closed {
                    waiting_for: waiting_for.into(),
                })
            }
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(QmpError::Timeout {
                    what: format!("send {waiting_for}"),
                    after: self.limit,
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return Err(QmpError::Closed {
                    waiting_for: waiting_for.into(),
                })
            }
            Err(e) => return Err(io(e)),
        }
        let arrived = now_ns();
        let message: Value =
            serde_json::from_str(line.trim()).map_err(|_| QmpError::Protocol(line.clone()))?;
        if let Some(event) = message.get("event").and_then(Value::as_str) {
            self.events.push((event.to_string(), arrived));
        }
        Ok(message)
    }
}
