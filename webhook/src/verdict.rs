//! What admission answers: allow, allow with a patch, or deny with a fixed reason (a metric
//! label and the AdmissionReview's `status.reason`) and a message that names the field, the
//! value and the fix.

use json_patch::Patch;

/// The verdict on one admission request.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Admit unchanged.
    Allow,
    /// Admit with this patch.
    Patch(Patch),
    /// Refuse.
    Deny {
        /// One of [`reasons`].
        reason: &'static str,
        /// What is wrong and how to fix it.
        message: String,
    },
}

/// A denial.
pub fn deny(reason: &'static str, message: String) -> Verdict {
    Verdict::Deny { reason, message }
}

/// Why a request is denied. Where the controller has the same condition reason, it is the
/// same word (`hostport_api::conditions::reasons`).
pub mod reasons {
    /// A pod asks for the host network in a namespace that does not allow it.
    pub const HOST_NETWORK: &str = "HostNetwork";
    /// A claim annotation is malformed.
    pub const INVALID_ANNOTATION: &str = "InvalidAnnotation";
    /// A pod carries a port annotation it has no claim for.
    pub const STRAY_PORT_ANNOTATION: &str = "StrayPortAnnotation";
    /// A pod sets `hostPort` on a port no claim names.
    pub const HOST_PORT_WITHOUT_CLAIM: &str = "HostPortWithoutClaim";
    /// A claim annotation names a container port the pod does not have.
    pub const UNKNOWN_PORT_NAME: &str = "UnknownPortName";
    /// A claim annotation names a port name several container ports share.
    pub const DUPLICATE_PORT_NAME: &str = "DuplicatePortName";
    /// The named claim does not exist.
    pub const CLAIM_NOT_FOUND: &str = "ClaimNotFound";
    /// The named claim is not bound yet.
    pub const CLAIM_NOT_BOUND: &str = "ClaimNotBound";
    /// The named claim says it is bound, but its HostPort does not confirm it.
    pub const CLAIM_NOT_VERIFIED: &str = "ClaimNotVerified";
    /// The named claim was deleted or re-bound while the pod's admission waited.
    pub const CLAIM_CHANGED: &str = "ClaimChanged";
    /// The named claim is being deleted.
    pub const CLAIM_DELETING: &str = "ClaimDeleting";
    /// A pod's `hostPort` differs from its claim's port.
    pub const HOST_PORT_MISMATCH: &str = "HostPortMismatch";
    /// A pod update changes a hostport annotation.
    pub const ANNOTATION_CHANGED: &str = "AnnotationChanged";
    /// A class's pools are malformed.
    pub const INVALID_POOLS: &str = "InvalidPools";
    /// A claim's spec is malformed.
    pub const INVALID_CLAIM: &str = "InvalidClaim";
    /// A field that cannot change was changed.
    pub const IMMUTABLE_FIELD: &str = "ImmutableField";
    /// A claim asks for a port outside its class's pools.
    pub const PORT_OUTSIDE_POOLS: &str = hostport_api::conditions::reasons::PORT_OUTSIDE_POOLS;
    /// A claim's namespace is not selected by its class's `namespaceSelector`.
    pub const NAMESPACE_NOT_ALLOWED: &str =
        hostport_api::conditions::reasons::NAMESPACE_NOT_ALLOWED;
    /// A claim's namespace holds `maxClaimsPerNamespace` claims of its class already.
    pub const NAMESPACE_LIMIT_REACHED: &str =
        hostport_api::conditions::reasons::NAMESPACE_LIMIT_REACHED;
    /// Someone other than the allocator writes a field only the allocator writes.
    pub const ALLOCATOR_FIELD: &str = "AllocatorField";
    /// Someone other than the allocator writes what only the allocator writes.
    pub const NOT_ALLOCATOR: &str = "NotAllocator";
    /// Someone other than the allocator removes the claim finalizer.
    pub const FINALIZER_PROTECTED: &str = "FinalizerProtected";
    /// A HostPort is malformed.
    pub const INVALID_HOST_PORT: &str = "InvalidHostPort";
    /// A reservation (HostPort without claimRef) is malformed.
    pub const INVALID_RESERVATION: &str = "InvalidReservation";
    /// The request carries an object of another kind than the path admits.
    pub const WRONG_KIND: &str = "WrongKind";
    /// The request's object cannot be decoded.
    pub const UNDECODABLE: &str = "Undecodable";
    /// A class annotation names a class that does not exist.
    pub const CLASS_NOT_FOUND: &str = hostport_api::conditions::reasons::CLASS_NOT_FOUND;
    /// A class annotation names a class with no free port.
    pub const POOL_EXHAUSTED: &str = hostport_api::conditions::reasons::POOL_EXHAUSTED;
    /// The pod's claim cannot be named, or a claim of that name is someone else's.
    pub const POD_CLAIM_CONFLICT: &str = "PodClaimConflict";
    /// The webhook could not create the pod's claim.
    pub const POD_CLAIM_FAILED: &str = "PodClaimFailed";
    /// A claim asks for `portPolicy: Passthrough` of a class that does not allow it.
    pub const PASSTHROUGH_NOT_ALLOWED: &str =
        hostport_api::conditions::reasons::PASSTHROUGH_NOT_ALLOWED;
    /// A claim asks for a block larger than its class's `maxBlockSize`.
    pub const BLOCK_TOO_LARGE: &str = hostport_api::conditions::reasons::BLOCK_TOO_LARGE;
    /// A `hostNetwork` pod claims a port of a class that does not allow such pods.
    pub const HOST_NETWORK_NOT_ALLOWED: &str =
        hostport_api::conditions::reasons::HOST_NETWORK_NOT_ALLOWED;
    /// A port policy annotation on a port that gets no claim made for the pod.
    pub const STRAY_PORT_POLICY: &str = "StrayPortPolicy";
    /// An `external.hostport.rmb938.com/` annotation written by someone other than a
    /// publisher (or on a new pod).
    pub const EXTERNAL_ANNOTATION: &str = "ExternalAnnotationReserved";
}
