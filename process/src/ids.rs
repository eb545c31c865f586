//! An object's UID and resourceVersion held inline instead of as strings on the heap: caches
//! keep one of each per object (the controller's port book a UID per HostPort's claim too),
//! 64,512 of each at a full class. Both read back exactly as the API server wrote them.

use std::fmt;

/// A UID as the API server wrote it: the canonical lowercase UUID form (every UID a
/// kube-apiserver makes) as its bytes, anything else as written, so it always reads back
/// exactly as it came.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Uid {
    /// A canonical `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` UUID in lowercase hex.
    Uuid([u8; 16]),
    /// Any other spelling.
    Other(Box<str>),
}

/// Where the hyphens of a canonical UUID are.
const HYPHENS: [usize; 4] = [8, 13, 18, 23];

fn hex_digit(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        _ => None,
    }
}

fn canonical_uuid(text: &str) -> Option<[u8; 16]> {
    let text = text.as_bytes();
    if text.len() != 36 || HYPHENS.iter().any(|&i| text[i] != b'-') {
        return None;
    }
    let mut digits = text
        .iter()
        .enumerate()
        .filter(|(i, _)| !HYPHENS.contains(i))
        .map(|(_, byte)| hex_digit(*byte));
    let mut bytes = [0u8; 16];
    for byte in &mut bytes {
        let (high, low) = (digits.next()??, digits.next()??);
        *byte = high << 4 | low;
    }
    Some(bytes)
}

impl Uid {
    /// `text` held as compactly as it reads back.
    pub fn new(text: &str) -> Self {
        match canonical_uuid(text) {
            Some(bytes) => Self::Uuid(bytes),
            None => Self::Other(text.into()),
        }
    }

    /// Whether this is the UID `text` (no allocation).
    pub fn is(&self, text: &str) -> bool {
        match self {
            Self::Uuid(bytes) => canonical_uuid(text).as_ref() == Some(bytes),
            Self::Other(own) => **own == *text,
        }
    }
}

impl From<&str> for Uid {
    fn from(text: &str) -> Self {
        Self::new(text)
    }
}

impl fmt::Display for Uid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Uuid(bytes) => {
                for (i, byte) in bytes.iter().enumerate() {
                    if matches!(i, 4 | 6 | 8 | 10) {
                        f.write_str("-")?;
                    }
                    write!(f, "{byte:02x}")?;
                }
                Ok(())
            }
            Self::Other(text) => f.write_str(text),
        }
    }
}

impl fmt::Debug for Uid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.to_string())
    }
}

/// A `resourceVersion`: opaque to clients, but a kube-apiserver's are etcd revisions, decimal
/// numbers held here as one; anything else is kept as written.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum ResourceVersion {
    /// A decimal number in its canonical spelling (no sign, no leading zero).
    Number(u64),
    /// Any other spelling.
    Other(Box<str>),
}

impl ResourceVersion {
    /// `text` held as compactly as it reads back.
    pub fn new(text: &str) -> Self {
        match text.parse::<u64>() {
            Ok(number) if number.to_string() == text => Self::Number(number),
            _ => Self::Other(text.into()),
        }
    }
}

impl fmt::Display for ResourceVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Number(number) => write!(f, "{number}"),
            Self::Other(text) => f.write_str(text),
        }
    }
}

impl fmt::Debug for ResourceVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_reads_back_as_written() {
        for text in [
            "0f3c2a4e-9b1d-4c7e-8a55-12ab34cd56ef",
            "00000000-0000-0000-0000-000000000000",
            "ffffffff-ffff-ffff-ffff-ffffffffffff",
            // Not canonical: kept as written.
            "0F3C2A4E-9B1D-4C7E-8A55-12AB34CD56EF",
            "0f3c2a4e9b1d4c7e8a5512ab34cd56ef",
            "0f3c2a4e-9b1d-4c7e-8a55-12ab34cd56e",
            "0f3c2a4e-9b1d-4c7e-8a55-12ab34cd56efa",
            "0f3c2a4e-9b1d-4c7e-8a55_12ab34cd56ef",
            "0f3c2a4e-9b1d-4c7e-8a55-12ab34cd56eg",
            "uid-a",
            "",
            "ééééééééééééééééééé",
        ] {
            let uid = Uid::new(text);
            assert_eq!(uid.to_string(), text);
            assert!(uid.is(text), "{text}");
            assert_eq!(format!("{uid:?}"), format!("{text:?}"));
        }
    }

    #[test]
    fn canonical_uids_are_held_as_bytes_and_compare_by_value() {
        let uid = Uid::new("0f3c2a4e-9b1d-4c7e-8a55-12ab34cd56ef");
        assert!(matches!(uid, Uid::Uuid(_)));
        assert!(!uid.is("0f3c2a4e-9b1d-4c7e-8a55-12ab34cd56ee"));
        assert!(!uid.is("0F3C2A4E-9B1D-4C7E-8A55-12AB34CD56EF"));
        assert!(
            !Uid::new("0F3C2A4E-9B1D-4C7E-8A55-12AB34CD56EF")
                .is("0f3c2a4e-9b1d-4c7e-8a55-12ab34cd56ef")
        );
        assert_eq!(uid, Uid::new("0f3c2a4e-9b1d-4c7e-8a55-12ab34cd56ef"));
        assert_eq!(std::mem::size_of::<Uid>(), 24);
    }

    #[test]
    fn resource_versions_read_back_as_written() {
        for text in [
            "0",
            "1",
            "123456789",
            "18446744073709551615",
            "18446744073709551616",
            "007",
            "+1",
            "-1",
            "",
            "abc",
            "1.5",
        ] {
            assert_eq!(ResourceVersion::new(text).to_string(), text);
        }
        assert_eq!(ResourceVersion::new("42"), ResourceVersion::Number(42));
        assert!(matches!(
            ResourceVersion::new("042"),
            ResourceVersion::Other(_)
        ));
        assert_eq!(std::mem::size_of::<Option<ResourceVersion>>(), 24);
    }
}
