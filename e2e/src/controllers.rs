//! The controller as scenarios run it: in-process (a task that can be killed between any two
//! API calls) or its command line as a process.

use std::time::Duration;

use hostport_controller::RunOptions;
use hostport_controller::context::DEFAULT_ADMISSION_GRACE;
use kube::Client;

/// A controller started for a scenario; dropping it stops it (like a crash).
#[derive(Debug)]
pub struct ControllerHandle {
    task: tokio::task::JoinHandle<hostport_controller::Result<()>>,
}

impl ControllerHandle {
    /// Kills the controller wherever it is, between or during API calls.
    pub fn kill(self) {
        self.task.abort();
    }

    /// Whether it stopped on its own (an error).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

impl Drop for ControllerHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A `hostport-controller` process; killed when dropped.
#[derive(Debug)]
pub struct ControllerProcess {
    /// The process.
    pub child: std::process::Child,
}

impl ControllerProcess {
    /// Sends SIGTERM and waits (at most `timeout`) for the exit status.
    pub fn terminate(mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for ControllerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The admission grace scenarios run with unless they set another (see
/// `Settings::admission_grace`): the webhook here answers in milliseconds, and every release
/// waits this long before its final check for pods.
pub const SCENARIO_ADMISSION_GRACE: Duration = Duration::from_secs(1);

/// Runs the controller in-process on `client` until the handle is dropped.
pub fn spawn_controller(client: Client, mut options: RunOptions) -> ControllerHandle {
    if options.settings.admission_grace == DEFAULT_ADMISSION_GRACE {
        options.settings.admission_grace = SCENARIO_ADMISSION_GRACE;
    }
    ControllerHandle {
        task: tokio::spawn(async move {
            hostport_controller::run(client, options, std::future::pending()).await
        }),
    }
}
