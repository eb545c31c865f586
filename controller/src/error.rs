//! The controller's errors: each says which object and which call failed, and maps to a
//! fixed reason used as a metric label.

/// A reconcile or start-up failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An API call failed.
    #[error("{action} {kind} {name}: {source}")]
    Api {
        /// What was being done, e.g. `creating`.
        action: &'static str,
        /// Kind of the object.
        kind: &'static str,
        /// `namespace/name` or `name`.
        name: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },
    /// Another writer changed the object first (409 Conflict): a fresh copy resolves it.
    #[error("{action} {kind} {name}: changed by another writer first; retrying on a fresh copy")]
    Conflict {
        /// What was being done, e.g. `binding`.
        action: &'static str,
        /// Kind of the object.
        kind: &'static str,
        /// `namespace/name` or `name`.
        name: String,
    },
    /// A guarded patch found our copy outdated (its JSON-patch `test` failed, 422): a fresh
    /// copy resolves it.
    #[error("{action} {kind} {name}: our copy was outdated; retrying on a fresh copy")]
    StaleCopy {
        /// What was being done, e.g. `adding the finalizer to`.
        action: &'static str,
        /// Kind of the object.
        kind: &'static str,
        /// `namespace/name` or `name`.
        name: String,
    },
    /// An object lacks a field the API server always sets.
    #[error("{kind} {name} has no {field}; it cannot be reconciled")]
    MissingField {
        /// Kind of the object.
        kind: &'static str,
        /// Its name.
        name: String,
        /// The field, e.g. `metadata.uid`.
        field: &'static str,
    },
    /// Every pick of a port lost a race with another writer.
    #[error(
        "HostPortClaim {name}: {attempts} ports in a row were taken by others while allocating; retrying"
    )]
    AllocationContended {
        /// The claim.
        name: String,
        /// Picks tried.
        attempts: usize,
    },
    /// The CRDs are not installed on the cluster.
    #[error(
        "the hostport.rmb938.com CRDs are not installed ({source}): install them with `kubectl apply -k config/crd` (or `kubectl apply -f crds/`)"
    )]
    CrdsMissing {
        /// The failed probe.
        #[source]
        source: kube::Error,
    },
    /// Leader election failed: leadership was lost and the process must stop working.
    #[error(transparent)]
    LeadershipLost(#[from] hostport_process::leader::LeaseError),
    /// Serializing a patch failed (a bug).
    #[error("serializing a patch for {name}: {source}")]
    Serialize {
        /// The object.
        name: String,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
}

impl Error {
    /// A fixed PascalCase reason (metric label, Event reason).
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Conflict { .. } => "Conflict",
            Error::StaleCopy { .. } => "StaleCopy",
            Error::Api {
                source: kube::Error::Api(status),
                ..
            } if status.code == 422 => "Invalid",
            Error::Api {
                source: kube::Error::Api(status),
                ..
            } if status.code >= 500 => "ServerError",
            Error::Api { .. } => "ApiError",
            Error::MissingField { .. } => "MissingField",
            Error::AllocationContended { .. } => "AllocationContended",
            Error::CrdsMissing { .. } => "CrdsMissing",
            Error::LeadershipLost(_) => "LeadershipLost",
            Error::Serialize { .. } => "Serialize",
        }
    }

    /// A race with another writer that a reconcile on a fresh copy resolves: retried
    /// quietly, not worth a warning.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Conflict { .. } | Error::StaleCopy { .. })
    }

    /// The error of API call `action` on `kind` `name`: `Conflict` for a 409, `Api` else.
    pub fn api(
        action: &'static str,
        kind: &'static str,
        name: impl Into<String>,
    ) -> impl FnOnce(kube::Error) -> Error {
        let name = name.into();
        move |source| match status_code(&source) {
            Some(409) => Error::Conflict { action, kind, name },
            _ => Error::Api {
                action,
                kind,
                name,
                source,
            },
        }
    }
}

/// HTTP status of an API error, if it is one.
pub fn status_code(error: &kube::Error) -> Option<u16> {
    match error {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

/// The controller's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
