//! Who a request is from: bearer tokens the server hands out map to users, so scenarios can
//! run clients as different service accounts (and webhooks see `userInfo`).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use serde::Serialize;

/// An authenticated user, as in `AdmissionReview.request.userInfo`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UserInfo {
    /// User name, e.g. `system:serviceaccount:hostport-system:hostport-controller`.
    pub username: String,
    /// UID of the user (the token's).
    pub uid: String,
    /// Groups, e.g. `system:authenticated`.
    pub groups: Vec<String>,
}

/// The cluster-admin identity requests without a known token get.
pub const ADMIN_USER: &str = "system:admin";

impl UserInfo {
    /// The administrator (requests without a token).
    pub fn admin() -> Self {
        Self {
            username: ADMIN_USER.into(),
            uid: "admin".into(),
            groups: vec!["system:masters".into(), "system:authenticated".into()],
        }
    }

    /// A service account `namespace/name`.
    pub fn service_account(namespace: &str, name: &str) -> Self {
        Self {
            username: format!("system:serviceaccount:{namespace}:{name}"),
            uid: format!("sa-{namespace}-{name}"),
            groups: vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{namespace}"),
                "system:authenticated".into(),
            ],
        }
    }
}

/// Token → user.
#[derive(Debug, Default)]
pub struct Tokens(Mutex<HashMap<String, UserInfo>>);

impl Tokens {
    /// A token for `user` (the same user always gets the same token).
    pub fn issue(&self, user: UserInfo) -> String {
        let token = format!("token-{}", user.username.replace(':', "-"));
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(token.clone(), user);
        token
    }

    /// The user of an `Authorization` header value.
    pub fn authenticate(&self, authorization: Option<&str>) -> UserInfo {
        authorization
            .and_then(|h| h.strip_prefix("Bearer "))
            .and_then(|token| {
                self.0
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get(token.trim())
                    .cloned()
            })
            .unwrap_or_else(UserInfo::admin)
    }
}
