//! Request paths and query parameters, parsed into what the handlers act on.

use std::collections::HashMap;

/// A request for objects of one resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourcePath {
    /// API group ("" for core).
    pub group: String,
    /// API version.
    pub version: String,
    /// Resource plural.
    pub plural: String,
    /// Namespace from the path, for namespaced requests.
    pub namespace: Option<String>,
    /// Object name, for single-object requests.
    pub name: Option<String>,
    /// `status` (or another subresource).
    pub subresource: Option<String>,
}

/// What a path asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// `/api`.
    CoreVersions,
    /// `/apis`.
    Groups,
    /// `/apis/<group>`.
    Group(String),
    /// `/api/v1` or `/apis/<group>/<version>`.
    Resources(String, String),
    /// `/version`.
    Version,
    /// `/healthz`, `/readyz`, `/livez`.
    Health,
    /// Objects.
    Resource(ResourcePath),
}

/// Parses a request path.
pub fn parse_path(path: &str) -> Option<Route> {
    let segments: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let (group, version, rest) = match segments.as_slice() {
        ["api"] => return Some(Route::CoreVersions),
        ["apis"] => return Some(Route::Groups),
        ["apis", group] => return Some(Route::Group((*group).to_owned())),
        ["api", version] => return Some(Route::Resources(String::new(), (*version).to_owned())),
        ["apis", group, version] => {
            return Some(Route::Resources((*group).to_owned(), (*version).to_owned()));
        }
        ["version"] => return Some(Route::Version),
        ["healthz" | "readyz" | "livez", ..] => return Some(Route::Health),
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return None,
    };
    let owned = |s: &&str| (*s).to_owned();
    let (namespace, rest) = match rest {
        // `/api/v1/namespaces/<name>/status` is the Namespace's own subresource.
        ["namespaces", _, "status" | "finalize"] if group.is_empty() => (None, rest),
        ["namespaces", ns, tail @ ..] if !tail.is_empty() => (Some((*ns).to_owned()), tail),
        _ => (None, rest),
    };
    let (plural, name, subresource) = match rest {
        [plural] => (owned(plural), None, None),
        [plural, name] => (owned(plural), Some(owned(name)), None),
        [plural, name, sub] => (owned(plural), Some(owned(name)), Some(owned(sub))),
        _ => return None,
    };
    Some(Route::Resource(ResourcePath {
        group: group.to_owned(),
        version: version.to_owned(),
        plural,
        namespace,
        name,
        subresource,
    }))
}

/// Query parameters, last value wins.
#[derive(Clone, Debug, Default)]
pub struct Query(HashMap<String, String>);

impl Query {
    /// Parses a raw query string.
    pub fn parse(raw: Option<&str>) -> Self {
        Self(
            raw.map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
                .unwrap_or_default(),
        )
    }

    /// One parameter.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// A `true`/`false` parameter.
    pub fn flag(&self, key: &str) -> bool {
        self.get(key) == Some("true")
    }

    /// `dryRun=All`.
    pub fn dry_run(&self) -> bool {
        self.get("dryRun") == Some("All")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(path: &str) -> ResourcePath {
        match parse_path(path) {
            Some(Route::Resource(r)) => r,
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn paths() {
        let claim = resource(
            "/apis/hostport.rmb938.com/v1alpha1/namespaces/default/hostportclaims/echo-web/status",
        );
        assert_eq!(claim.group, "hostport.rmb938.com");
        assert_eq!(claim.namespace.as_deref(), Some("default"));
        assert_eq!(claim.name.as_deref(), Some("echo-web"));
        assert_eq!(claim.subresource.as_deref(), Some("status"));

        let all_pods = resource("/api/v1/pods");
        assert_eq!(
            (all_pods.plural.as_str(), all_pods.namespace, all_pods.name),
            ("pods", None, None)
        );

        let ns = resource("/api/v1/namespaces/team-a");
        assert_eq!(
            (ns.plural.as_str(), ns.name.as_deref()),
            ("namespaces", Some("team-a"))
        );
        let ns_status = resource("/api/v1/namespaces/team-a/status");
        assert_eq!(ns_status.namespace, None);
        assert_eq!(ns_status.subresource.as_deref(), Some("status"));
        let pods = resource("/api/v1/namespaces/team-a/pods");
        assert_eq!(
            (pods.plural.as_str(), pods.namespace.as_deref()),
            ("pods", Some("team-a"))
        );

        assert_eq!(parse_path("/apis"), Some(Route::Groups));
        assert_eq!(
            parse_path("/api/v1"),
            Some(Route::Resources(String::new(), "v1".into()))
        );
        assert_eq!(parse_path("/nonsense"), None);
        assert_eq!(parse_path("/api/v1/a/b/c/d"), None);
    }

    #[test]
    fn query() {
        let q = Query::parse(Some("watch=true&labelSelector=a%3Db&resourceVersion="));
        assert!(q.flag("watch"));
        assert_eq!(q.get("labelSelector"), Some("a=b"));
        assert_eq!(q.get("resourceVersion"), None);
    }
}
