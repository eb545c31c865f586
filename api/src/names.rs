//! Kubernetes name rules (apimachinery `validation.IsDNS1123Subdomain`, `IsValidPortName`),
//! so admission and tests reject what kube-apiserver would.

/// Why a name is not valid; the text completes "… is not a valid X: ".
pub type NameError = String;

/// A DNS-1123 subdomain: at most 253 characters of lowercase alphanumerics, `-` and `.`,
/// starting and ending with an alphanumeric. Object names of most kinds.
pub fn validate_dns1123_subdomain(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err("it must not be empty".into());
    }
    if name.len() > 253 {
        return Err(format!(
            "it is {} characters long, the limit is 253",
            name.len()
        ));
    }
    for label in name.split('.') {
        check_label_chars(label)?;
    }
    Ok(())
}

/// A DNS-1123 label: at most 63 characters of lowercase alphanumerics and `-`, starting and
/// ending with an alphanumeric. Names of namespaces.
pub fn validate_dns1123_label(name: &str) -> Result<(), NameError> {
    if name.len() > 63 {
        return Err(format!(
            "it is {} characters long, the limit is 63",
            name.len()
        ));
    }
    check_label_chars(name)
}

fn check_label_chars(label: &str) -> Result<(), NameError> {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    if label.is_empty() {
        return Err("it must not be empty or contain empty parts between dots".into());
    }
    if let Some(bad) = label.chars().find(|c| !alnum(*c) && *c != '-') {
        return Err(format!(
            "it contains {bad:?}; only lowercase letters, digits, '-' and '.' are allowed"
        ));
    }
    if !label.starts_with(alnum) || !label.ends_with(alnum) {
        return Err("it must start and end with a lowercase letter or digit".into());
    }
    Ok(())
}

/// A container port name (IANA service name): 1–15 characters of lowercase alphanumerics and
/// `-`, at least one letter, no leading, trailing or doubled `-`.
pub fn validate_port_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err("it must not be empty".into());
    }
    if name.len() > 15 {
        return Err(format!(
            "it is {} characters long, the limit is 15",
            name.len()
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !c.is_ascii_lowercase() && !c.is_ascii_digit() && *c != '-')
    {
        return Err(format!(
            "it contains {bad:?}; only lowercase letters, digits and '-' are allowed"
        ));
    }
    if !name.chars().any(|c| c.is_ascii_lowercase()) {
        return Err("it must contain at least one letter".into());
    }
    if name.starts_with('-') || name.ends_with('-') || name.contains("--") {
        return Err("it must not start or end with '-' or contain '--'".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subdomains() {
        for ok in ["a", "echo-web", "port-9000", "a.b-c.d", &"a".repeat(253)] {
            assert_eq!(validate_dns1123_subdomain(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "Echo",
            "-a",
            "a-",
            "a..b",
            "a_b",
            ".a",
            &"a".repeat(254),
        ] {
            assert!(validate_dns1123_subdomain(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn labels() {
        assert_eq!(validate_dns1123_label("team-a"), Ok(()));
        assert!(validate_dns1123_label("a.b").is_err());
        assert!(validate_dns1123_label(&"a".repeat(64)).is_err());
    }

    #[test]
    fn port_names() {
        for ok in ["web", "game-tcp", "h2c", "a1", "abcdefghijklmno"] {
            assert_eq!(validate_port_name(ok), Ok(()), "{ok}");
        }
        let bad = [
            ("", "must not be empty"),
            ("abcdefghijklmnop", "the limit is 15"),
            ("Web", "contains 'W'"),
            ("my_port", "contains '_'"),
            ("8080", "at least one letter"),
            ("-web", "must not start or end"),
            ("web-", "must not start or end"),
            ("we--b", "contain '--'"),
        ];
        for (name, expected) in bad {
            let err = validate_port_name(name).expect_err(name);
            assert!(err.contains(expected), "{name}: {err}");
        }
    }
}
