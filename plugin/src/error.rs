//! What the plugin reports instead of an answer.

/// A failed command: the message names the object and what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused or could not be reached.
    #[error("{action}: {source}")]
    Api {
        /// What was being done, e.g. `listing HostPorts`.
        action: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },
    /// No kubeconfig, or one that does not work.
    #[error("no usable Kubernetes configuration: {0}")]
    Config(String),
    /// A named object does not exist.
    #[error("{kind} {name:?} not found{hint}")]
    NotFound {
        /// Its kind.
        kind: &'static str,
        /// Its name (`namespace/name` for namespaced kinds).
        name: String,
        /// What to check, with a leading separator, or empty.
        hint: String,
    },
    /// A request the plugin refuses, with the reason and the fix.
    #[error("{0}")]
    Refused(String),
}

impl Error {
    /// An API error while doing `action`.
    pub fn api(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Self {
        let action = action.into();
        move |source| Self::Api { action, source }
    }
}
