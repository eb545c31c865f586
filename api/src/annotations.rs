//! The pod annotations of the compatibility contract:
//! `claim.hostport.rmb938.com/<portName>: <claimName>` (input, written by the user) and
//! `port.hostport.rmb938.com/<portName>: "<port>"` (output, written by the webhook), plus
//! this project's `class.hostport.rmb938.com/<portName>: <className>` (input: a claim made
//! for the pod by the webhook).

use std::collections::BTreeMap;

use crate::PortPolicy;
use crate::names::{validate_dns1123_subdomain, validate_port_name};

/// Prefix of the annotations that name a claim for a container port.
pub const CLAIM_PREFIX: &str = "claim.hostport.rmb938.com/";
/// Prefix of the annotations the webhook writes with the bound port.
pub const PORT_PREFIX: &str = "port.hostport.rmb938.com/";
/// Prefix of the annotations that ask for a claim of a class made for the pod.
pub const CLASS_PREFIX: &str = "class.hostport.rmb938.com/";

/// Prefix of the annotations that ask for a port policy for the claim made for the pod
/// (`port-policy.hostport.rmb938.com/<portName>: Passthrough`, beside a class annotation).
pub const PORT_POLICY_PREFIX: &str = "port-policy.hostport.rmb938.com/";

/// Prefix of the annotations that say how many ports a port's block has: written by the
/// webhook beside the port annotation for a block claim (`count.hostport.rmb938.com/<portName>:
/// "10"`, the first port being the port annotation's), and beside a class annotation by you to
/// ask for a block made for the pod.
pub const COUNT_PREFIX: &str = "count.hostport.rmb938.com/";
/// Prefix of the annotations that ask for the alignment of a block made for the pod
/// (`alignment.hostport.rmb938.com/<portName>: "2"`, beside a class and a count annotation).
pub const ALIGNMENT_PREFIX: &str = "alignment.hostport.rmb938.com/";

/// Prefix of the annotations `hostport-publisher` keeps on each pod it publishes: where the
/// port is reachable from outside (`external.hostport.rmb938.com/<portName>:
/// 198.51.100.1:9000,[2001:db8::1]:9000`). Read through a downward-API volume, which the
/// kubelet refreshes when they change. Only the publishers may write them.
pub const EXTERNAL_PREFIX: &str = "external.hostport.rmb938.com/";

/// Service annotation (value `"true"`) that asks `hostport-publisher` in edge mode to
/// forward the Service's ports.
pub const FORWARD_SERVICE_ANNOTATION: &str = "hostport.rmb938.com/forward";

const CLAIM_USAGE: &str = "claim.hostport.rmb938.com/<containerPortName>: <claimName>";
const CLASS_USAGE: &str = "class.hostport.rmb938.com/<containerPortName>: <className>";
const PORT_POLICY_USAGE: &str = "port-policy.hostport.rmb938.com/<containerPortName>: Passthrough";

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

/// One `class.hostport.rmb938.com/<portName>: <className>` annotation, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClassAnnotation {
    /// Name of the container port that gets the host port.
    pub port_name: String,
    /// Name of the HostPortClass the pod's claim is made of.
    pub class_name: String,
}

/// One `port-policy.hostport.rmb938.com/<portName>: <policy>` annotation, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortPolicyAnnotation {
    /// Name of the container port whose claim gets the policy.
    pub port_name: String,
    /// The policy.
    pub policy: PortPolicy,
}

/// Why a claim or class annotation is unusable. Messages quote the annotation and say how to
/// fix it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AnnotationError {
    /// A prefix with nothing after the slash.
    #[error("annotation {key:?} has no port name after the prefix: use \"{usage}\"")]
    EmptyPortName {
        /// The annotation key.
        key: String,
        /// The annotation's form.
        usage: &'static str,
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
    /// A class annotation's value is empty.
    #[error("annotation {key:?} has an empty value: set it to the name of a HostPortClass")]
    EmptyClassName {
        /// The annotation key.
        key: String,
    },
    /// A class annotation's value is not a valid object name.
    #[error(
        "annotation {key:?} names class {class_name:?}, which is not a valid HostPortClass name: {reason}"
    )]
    InvalidClassName {
        /// The annotation key.
        key: String,
        /// The class name given.
        class_name: String,
        /// Which rule it breaks.
        reason: String,
    },
    /// A count or alignment annotation's value is not a number between 1 and 1024.
    #[error("annotation {key:?} is {value:?}: it must be a number between 1 and 1024")]
    InvalidBlockNumber {
        /// The annotation key.
        key: String,
        /// The value given.
        value: String,
    },
    /// A port policy annotation's value is not a policy.
    #[error("annotation {key:?}: {reason}")]
    InvalidPortPolicy {
        /// The annotation key.
        key: String,
        /// What is wrong and the values that are right.
        reason: String,
    },
}

/// `claim.hostport.rmb938.com/<port_name>`.
pub fn claim_annotation_key(port_name: &str) -> String {
    format!("{CLAIM_PREFIX}{port_name}")
}

/// `class.hostport.rmb938.com/<port_name>`.
pub fn class_annotation_key(port_name: &str) -> String {
    format!("{CLASS_PREFIX}{port_name}")
}

/// `port.hostport.rmb938.com/<port_name>`.
pub fn port_annotation_key(port_name: &str) -> String {
    format!("{PORT_PREFIX}{port_name}")
}

/// `external.hostport.rmb938.com/<port_name>`.
pub fn external_annotation_key(port_name: &str) -> String {
    format!("{EXTERNAL_PREFIX}{port_name}")
}

/// `count.hostport.rmb938.com/<port_name>`.
pub fn count_annotation_key(port_name: &str) -> String {
    format!("{COUNT_PREFIX}{port_name}")
}

/// `alignment.hostport.rmb938.com/<port_name>`.
pub fn alignment_annotation_key(port_name: &str) -> String {
    format!("{ALIGNMENT_PREFIX}{port_name}")
}

/// The number `annotations` give under `<prefix><port_name>`: `Ok(None)` when absent, an
/// error naming the annotation when it is not a number between 1 and 1024.
pub fn block_number(
    annotations: &BTreeMap<String, String>,
    prefix: &str,
    port_name: &str,
) -> Result<Option<u16>, AnnotationError> {
    let key = format!("{prefix}{port_name}");
    let Some(value) = annotations.get(&key) else {
        return Ok(None);
    };
    value
        .parse::<u16>()
        .ok()
        .filter(|n| (1..=1024).contains(n))
        .map(Some)
        .ok_or_else(|| AnnotationError::InvalidBlockNumber {
            key,
            value: value.clone(),
        })
}

/// `port-policy.hostport.rmb938.com/<port_name>`.
pub fn port_policy_annotation_key(port_name: &str) -> String {
    format!("{PORT_POLICY_PREFIX}{port_name}")
}

/// Whether `key` is a claim, class, port policy or port annotation of this project (all are
/// fixed once a pod exists).
pub fn is_hostport_annotation(key: &str) -> bool {
    [
        CLAIM_PREFIX,
        PORT_PREFIX,
        CLASS_PREFIX,
        PORT_POLICY_PREFIX,
        COUNT_PREFIX,
        ALIGNMENT_PREFIX,
    ]
    .iter()
    .any(|prefix| key.starts_with(prefix))
}

/// The valid port name after `prefix` in `key`; `Ok(None)` when `key` has another prefix.
fn port_name_after<'k>(
    prefix: &str,
    usage: &'static str,
    key: &'k str,
) -> Result<Option<&'k str>, AnnotationError> {
    let Some(port_name) = key.strip_prefix(prefix) else {
        return Ok(None);
    };
    if port_name.is_empty() {
        return Err(AnnotationError::EmptyPortName {
            key: key.to_owned(),
            usage,
        });
    }
    if let Err(reason) = validate_port_name(port_name) {
        return Err(AnnotationError::InvalidPortName {
            key: key.to_owned(),
            port_name: port_name.to_owned(),
            reason,
        });
    }
    Ok(Some(port_name))
}

/// `(port name, value)` of one `<prefix><portName>: <object name>` annotation, validated;
/// `Ok(None)` when the key has another prefix. `empty`/`invalid` build the error for a bad
/// value.
fn parse_port_annotation(
    (prefix, usage): (&str, &'static str),
    key: &str,
    value: &str,
    empty: fn(String) -> AnnotationError,
    invalid: fn(String, String, String) -> AnnotationError,
) -> Result<Option<(String, String)>, AnnotationError> {
    let Some(port_name) = port_name_after(prefix, usage, key)? else {
        return Ok(None);
    };
    if value.is_empty() {
        return Err(empty(key.to_owned()));
    }
    if let Err(reason) = validate_dns1123_subdomain(value) {
        return Err(invalid(key.to_owned(), value.to_owned(), reason));
    }
    Ok(Some((port_name.to_owned(), value.to_owned())))
}

/// Parses one annotation; `Ok(None)` when the key is not a claim annotation.
pub fn parse_claim_annotation(
    key: &str,
    value: &str,
) -> Result<Option<ClaimAnnotation>, AnnotationError> {
    let parsed = parse_port_annotation(
        (CLAIM_PREFIX, CLAIM_USAGE),
        key,
        value,
        |key| AnnotationError::EmptyClaimName { key },
        |key, claim_name, reason| AnnotationError::InvalidClaimName {
            key,
            claim_name,
            reason,
        },
    )?;
    Ok(parsed.map(|(port_name, claim_name)| ClaimAnnotation {
        port_name,
        claim_name,
    }))
}

/// Parses one annotation; `Ok(None)` when the key is not a class annotation.
pub fn parse_class_annotation(
    key: &str,
    value: &str,
) -> Result<Option<ClassAnnotation>, AnnotationError> {
    let parsed = parse_port_annotation(
        (CLASS_PREFIX, CLASS_USAGE),
        key,
        value,
        |key| AnnotationError::EmptyClassName { key },
        |key, class_name, reason| AnnotationError::InvalidClassName {
            key,
            class_name,
            reason,
        },
    )?;
    Ok(parsed.map(|(port_name, class_name)| ClassAnnotation {
        port_name,
        class_name,
    }))
}

/// Parses one annotation; `Ok(None)` when the key is not a port policy annotation.
pub fn parse_port_policy_annotation(
    key: &str,
    value: &str,
) -> Result<Option<PortPolicyAnnotation>, AnnotationError> {
    let Some(port_name) = port_name_after(PORT_POLICY_PREFIX, PORT_POLICY_USAGE, key)? else {
        return Ok(None);
    };
    let policy =
        value
            .parse::<PortPolicy>()
            .map_err(|reason| AnnotationError::InvalidPortPolicy {
                key: key.to_owned(),
                reason,
            })?;
    Ok(Some(PortPolicyAnnotation {
        port_name: port_name.to_owned(),
        policy,
    }))
}

/// Every annotation `parse` recognizes, in key order; the first bad one is the error.
fn parse_all<T>(
    annotations: &BTreeMap<String, String>,
    parse: fn(&str, &str) -> Result<Option<T>, AnnotationError>,
) -> Result<Vec<T>, AnnotationError> {
    annotations
        .iter()
        .filter_map(|(k, v)| parse(k, v).transpose())
        .collect()
}

/// Every claim annotation of a pod, in key order; the first bad one is the error.
pub fn parse_claim_annotations(
    annotations: &BTreeMap<String, String>,
) -> Result<Vec<ClaimAnnotation>, AnnotationError> {
    parse_all(annotations, parse_claim_annotation)
}

/// Every class annotation of a pod, in key order; the first bad one is the error.
pub fn parse_class_annotations(
    annotations: &BTreeMap<String, String>,
) -> Result<Vec<ClassAnnotation>, AnnotationError> {
    parse_all(annotations, parse_class_annotation)
}

/// Every port policy annotation of a pod, in key order; the first bad one is the error.
pub fn parse_port_policy_annotations(
    annotations: &BTreeMap<String, String>,
) -> Result<Vec<PortPolicyAnnotation>, AnnotationError> {
    parse_all(annotations, parse_port_policy_annotation)
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
        assert!(is_hostport_annotation("class.hostport.rmb938.com/web"));
        assert!(!is_hostport_annotation("hostport.rmb938.com/web"));
    }

    #[test]
    fn class_annotations_parse_with_their_own_errors() {
        let parsed = parse_class_annotations(&annotations(&[
            ("class.hostport.rmb938.com/game-tcp", "games"),
            ("claim.hostport.rmb938.com/web", "echo"),
        ]))
        .expect("valid");
        assert_eq!(
            parsed,
            vec![ClassAnnotation {
                port_name: "game-tcp".into(),
                class_name: "games".into()
            }]
        );
        assert_eq!(
            class_annotation_key("game-tcp"),
            "class.hostport.rmb938.com/game-tcp"
        );
        let cases = [
            (
                "class.hostport.rmb938.com/",
                "games",
                "class.hostport.rmb938.com/<containerPortName>: <className>",
            ),
            (
                "class.hostport.rmb938.com/web",
                "",
                "set it to the name of a HostPortClass",
            ),
            (
                "class.hostport.rmb938.com/Web",
                "games",
                "not a valid container port name",
            ),
            (
                "class.hostport.rmb938.com/web",
                "Games",
                "not a valid HostPortClass name",
            ),
        ];
        for (key, value, expected) in cases {
            let err = parse_class_annotation(key, value)
                .expect_err(key)
                .to_string();
            assert!(err.contains(expected), "{key}={value}: {err}");
        }
    }

    #[test]
    fn port_policy_annotations_parse_and_bad_values_say_the_right_ones() {
        let parsed = parse_port_policy_annotations(&annotations(&[
            ("port-policy.hostport.rmb938.com/game", "Passthrough"),
            ("class.hostport.rmb938.com/game", "games"),
        ]))
        .expect("valid");
        assert_eq!(
            parsed,
            vec![PortPolicyAnnotation {
                port_name: "game".into(),
                policy: PortPolicy::Passthrough
            }]
        );
        assert!(is_hostport_annotation(&port_policy_annotation_key("game")));
        let err =
            parse_port_policy_annotation("port-policy.hostport.rmb938.com/game", "passthrough")
                .expect_err("lower case")
                .to_string();
        assert!(
            err.contains(r#""passthrough" is not a port policy: use "Mapped" or "Passthrough""#),
            "{err}"
        );
        let err = parse_port_policy_annotation("port-policy.hostport.rmb938.com/", "Passthrough")
            .expect_err("no port")
            .to_string();
        assert!(err.contains(PORT_POLICY_USAGE), "{err}");
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
