//! Who the allocator is. Everything that decides which port a pod gets (claim
//! `spec.hostPortName`, the status of the three kinds, the claim finalizer's removal,
//! HostPorts bound to claims) is written by the allocator identity only: the controller's
//! ServiceAccount, named after the namespace it is installed into, never a fixed string.

/// Namespace `config/default` installs into.
pub const DEFAULT_NAMESPACE: &str = "hostport-system";

/// ServiceAccount of the controller in `config/`.
pub const CONTROLLER_SERVICE_ACCOUNT: &str = "hostport-controller";

/// ServiceAccount of the webhook in `config/`.
pub const WEBHOOK_SERVICE_ACCOUNT: &str = "hostport-webhook";

/// The user name a ServiceAccount authenticates as.
pub fn service_account_user(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

/// The allocator's user name when the controller runs as `service_account` in `namespace`.
pub fn allocator_user(namespace: &str, service_account: &str) -> String {
    service_account_user(namespace, service_account)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_the_install_namespace() {
        assert_eq!(
            allocator_user(DEFAULT_NAMESPACE, CONTROLLER_SERVICE_ACCOUNT),
            "system:serviceaccount:hostport-system:hostport-controller"
        );
        assert_eq!(
            allocator_user("ports", CONTROLLER_SERVICE_ACCOUNT),
            "system:serviceaccount:ports:hostport-controller"
        );
    }
}
