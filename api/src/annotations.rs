//! The pod annotations of the compatibility contract:
//! `claim.hostport.rmb938.com/<portName>: <claimName>` (input, written by the user) and
//! `port.hostport.rmb938.com/<portName>: "<port>"` (output, written by the webhook).

use std::collections::BTreeMap;

use crate::names::{validate_dns1123_subdomain, validate_port_name};

/// Prefix of the annotations that name a claim for a container port.
pub const CLAIM_PREFIX: &str = "claim.hostport.rmb938.com/";
/// Prefix of the annotations the webhook writes with the bound port.
pub const PORT_PREFIX: &str = "port.hostport.rmb938.com/";

/// One `claim.hostport.rmb938.com/<portName>: <claimName>` annotation, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimAnnotation {
    /// Name of the container port that gets the host port.
    pub port_name: String,
    /// Name of the HostPortClaim in the pod's namespace.
    pub claim_name: String,
}

impl ClaimAnnotation {
    /// The annotation key this came from.
    pub fn key(&self) -> String {
        claim_annotation_key(&self.port_name)
    }
}

/// Why a claim annotation is unusable. Messages quote the annotation and say how to fix it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AnnotationError {
    /// `claim.hostport.rmb938.com/` with nothing after the slash.
    #[error(
        "annotation {key:?} has no port name after the prefix: use \"{CLAIM_PREFIX}<containerPortName>: <claimName>\""
    )]
    EmptyPortName {
        /// The annotation key.
        key: String,
    },
    /// The part after the prefix is not a valid container port name.
    #[error(
        "annotation {key:?} names port {port_name:?}, which is not a valid container port name: {reason}"
    )]
    InvalidPortName {
        /// The annotation key.
        key: String,
        /// The port name given.
        port_name: String,
        /// Which rule it breaks.
        reason: String,
    },
    /// The annotation's value is empty.
    #[error(
        "annotation {key:?} has an empty value: set it to the name of a HostPortClaim in the pod's namespace"
    )]
    EmptyClaimName {
        /// The annotation key.
        key: String,
    },
    /// The annotation's value is not a valid object name.
    #[error(
        "annotation {key:?} names claim {claim_name:?}, which is not a valid HostPortClaim name: {reason}"
    )]
    InvalidClaimName {
        /// The annotation key.
        key: String,
        /// The claim name given.
        claim_name: String,
        /// Which rule it breaks.
        reason: String,
    },
}

/// `claim.hostport.rmb938.com/<port_name>`.
pub fn claim_annotation_key(port_name: &str) -> String {
    format!("{CLAIM_PREFIX}{port_name}")
}

/// `port.hostport.rmb938.com/<port_name>`.
pub fn port_annotation_key(port_name: &str) -> String {
    format!("{PORT_PREFIX}{port_name}")
}

/// Whether `key` is a claim or port annotation of this project (both are owned by the
/// webhook once a pod exists).
pub fn is_hostport_annotation(key: &str) -> bool {
    key.starts_with(CLAIM_PREFIX) || key.starts_with(PORT_PREFIX)
}

/// Parses one annotation; `Ok(None)` when the key is not a claim annotation.
pub fn parse_claim_annotation(
    key: &str,
    value: &str,
) -> Result<Option<ClaimAnnotation>, AnnotationError> {
    let Some(port_name) = key.strip_prefix(CLAIM_PREFIX) else {
        return Ok(None);
    };
    let key = key.to_owned();
    if port_name.is_empty() {
        return Err(AnnotationError::EmptyPortName { key });
    }
    if let Err(reason) = validate_port_name(port_name) {
        return Err(AnnotationError::InvalidPortName {
            key,
            port_name: port_name.to_owned(),
            reason,
        });
    }
    if value.is_empty() {
        return Err(AnnotationError::EmptyClaimName { key });
    }
    if let Err(reason) = validate_dns1123_subdomain(value) {
        return Err(AnnotationError::InvalidClaimName {
            key,
            claim_name: value.to_owned(),
            reason,
        });
    }
    Ok(Some(ClaimAnnotation {
        port_name: port_name.to_owned(),
        claim_name: value.to_owned(),
    }))
}

/// Every claim annotation of a pod, in key order; the first bad one is the error.
pub fn parse_claim_annotations(
    annotations: &BTreeMap<String, String>,
) -> Result<Vec<ClaimAnnotation>, AnnotationError> {
    annotations
        .iter()
        .filter_map(|(k, v)| parse_claim_annotation(k, v).transpose())
        .collect()
}

/// Names of the claims a pod's annotations refer to, without validation: what keeps a
/// deleting claim alive must not depend on the pod's annotations being well-formed.
pub fn referenced_claim_names(
    annotations: &BTreeMap<String, String>,
) -> impl Iterator<Item = &str> {
    annotations
        .iter()
        .filter(|(k, v)| k.starts_with(CLAIM_PREFIX) && !v.is_empty())
        .map(|(_, v)| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn go_readme_annotation_parses() {
        let parsed = parse_claim_annotations(&annotations(&[
            ("claim.hostport.rmb938.com/web", "echo-web"),
            ("unrelated/annotation", "x"),
        ]))
        .expect("valid");
        assert_eq!(
            parsed,
            vec![ClaimAnnotation {
                port_name: "web".into(),
                claim_name: "echo-web".into()
            }]
        );
        assert_eq!(parsed[0].key(), "claim.hostport.rmb938.com/web");
        assert_eq!(port_annotation_key("web"), "port.hostport.rmb938.com/web");
    }

    #[test]
    fn two_ports_may_name_one_claim() {
        let parsed = parse_claim_annotations(&annotations(&[
            ("claim.hostport.rmb938.com/game-tcp", "game"),
            ("claim.hostport.rmb938.com/game-udp", "game"),
        ]))
        .expect("valid");
        assert_eq!(parsed.len(), 2);
        assert!(parsed.iter().all(|a| a.claim_name == "game"));
    }

    #[test]
    fn every_bad_case_has_a_precise_error() {
        let cases = [
            (
                "claim.hostport.rmb938.com/",
                "echo",
                r#"annotation "claim.hostport.rmb938.com/" has no port name after the prefix"#,
            ),
            (
                "claim.hostport.rmb938.com/web",
                "",
                r#"annotation "claim.hostport.rmb938.com/web" has an empty value: set it to the name of a HostPortClaim"#,
            ),
            (
                "claim.hostport.rmb938.com/Web",
                "echo",
                r#"names port "Web", which is not a valid container port name: it contains 'W'"#,
            ),
            (
                "claim.hostport.rmb938.com/http_port",
                "echo",
                "it contains '_'",
            ),
            (
                "claim.hostport.rmb938.com/a-very-long-port-name",
                "echo",
                "the limit is 15",
            ),
            (
                "claim.hostport.rmb938.com/8080",
                "echo",
                "at least one letter",
            ),
            (
                "claim.hostport.rmb938.com/web",
                "Echo_Web",
                r#"names claim "Echo_Web", which is not a valid HostPortClaim name: it contains 'E'"#,
            ),
            (
                "claim.hostport.rmb938.com/web",
                "-echo",
                "must start and end",
            ),
        ];
        for (key, value, expected) in cases {
            let err = parse_claim_annotation(key, value)
                .expect_err(key)
                .to_string();
            assert!(err.contains(expected), "{key}={value}: {err}");
        }
    }

    #[test]
    fn other_annotations_are_ignored() {
        assert_eq!(
            parse_claim_annotation("port.hostport.rmb938.com/web", "9000"),
            Ok(None)
        );
        assert_eq!(
            parse_claim_annotation("claim.hostport.rmb938.com", "x"),
            Ok(None)
        );
        assert!(is_hostport_annotation("port.hostport.rmb938.com/web"));
        assert!(is_hostport_annotation("claim.hostport.rmb938.com/web"));
        assert!(!is_hostport_annotation("hostport.rmb938.com/web"));
    }

    #[test]
    fn referenced_names_are_lenient() {
        let a = annotations(&[
            ("claim.hostport.rmb938.com/Bad_Port", "echo"),
            ("claim.hostport.rmb938.com/web", ""),
            ("port.hostport.rmb938.com/web", "9000"),
        ]);
        assert_eq!(referenced_claim_names(&a).collect::<Vec<_>>(), vec!["echo"]);
    }
}
