//! Where rules are applied: on this host, or on another one over SSH (the system `ssh`
//! client: its keys, its `known_hosts`, host key checking on).

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// Runs a program with a script on its stdin.
#[derive(Clone, Debug)]
pub enum Executor {
    /// On this host; `prefix` is put before the program (e.g. `ip netns exec router`).
    Local {
        /// Command words before the program.
        prefix: Vec<String>,
    },
    /// On `destination` (`user@host`) through `ssh`, with extra `options` (`-i key`, `-p 2222`,
    /// `-o UserKnownHostsFile=…`). Never asks for a password and never accepts an unknown host
    /// key (`BatchMode=yes`, `StrictHostKeyChecking=yes`).
    Ssh {
        /// `user@host`.
        destination: String,
        /// Extra ssh options.
        options: Vec<String>,
    },
}

/// A program that failed or could not run.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// It could not be started.
    #[error("could not run {program}: {source}")]
    Spawn {
        /// The command.
        program: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// It exited with an error.
    #[error("{program} failed ({status}): {stderr}")]
    Failed {
        /// The command.
        program: String,
        /// Exit status.
        status: String,
        /// What it said.
        stderr: String,
    },
    /// It did not finish in time (it was killed).
    #[error("{program} did not finish within {timeout:?}")]
    Timeout {
        /// The command.
        program: String,
        /// The limit.
        timeout: Duration,
    },
}

impl Executor {
    /// This host, as it is.
    pub fn local() -> Self {
        Self::Local { prefix: vec![] }
    }

    /// Runs `program args…` with `script` on stdin, within `timeout`.
    pub async fn run(
        &self,
        program: &[&str],
        script: &str,
        timeout: Duration,
    ) -> Result<(), ExecError> {
        let mut command = match self {
            Self::Local { prefix } => {
                let mut words = prefix
                    .iter()
                    .map(String::as_str)
                    .chain(program.iter().copied());
                let mut command = Command::new(words.next().unwrap_or("true"));
                command.args(words);
                command
            }
            Self::Ssh {
                destination,
                options,
            } => {
                let mut command = Command::new("ssh");
                command
                    .args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"])
                    .args(options)
                    .arg("--")
                    .arg(destination)
                    .args(program);
                command
            }
        };
        let shown = program.join(" ");
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().map_err(|source| ExecError::Spawn {
            program: shown.clone(),
            source,
        })?;
        let mut stdin = child.stdin.take();
        let work = async {
            if let Some(stdin) = stdin.as_mut() {
                // A program that exits early closes its stdin: its exit status tells why.
                let _ = stdin.write_all(script.as_bytes()).await;
            }
            drop(stdin);
            child.wait_with_output().await
        };
        let output = match tokio::time::timeout(timeout, work).await {
            Ok(output) => output.map_err(|source| ExecError::Spawn {
                program: shown.clone(),
                source,
            })?,
            Err(_) => {
                return Err(ExecError::Timeout {
                    program: shown,
                    timeout,
                });
            }
        };
        if output.status.success() {
            Ok(())
        } else {
            Err(ExecError::Failed {
                program: shown,
                status: output.status.to_string(),
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            })
        }
    }
}
