//! A HostPort's name as the controller's book keys it: a `port-<n>` name (every HostPort the
//! allocator makes) is its port, two bytes instead of a string on the heap; any other name
//! (the Go project's `hpc-<claimUID>`, an admin's reservation) is kept as written.

use std::fmt;

use hostport_api::HostPort;

/// A HostPort's name.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HostPortName {
    /// `port-<n>` in its canonical spelling ([`HostPort::port_from_name`]).
    Port(u16),
    /// Any other name.
    Other(Box<str>),
}

impl HostPortName {
    /// `name` as compactly as it reads back.
    pub fn new(name: &str) -> Self {
        match HostPort::port_from_name(name) {
            Some(port) => Self::Port(port),
            None => Self::Other(name.into()),
        }
    }
}

impl fmt::Display for HostPortName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Port(port) => f.write_str(&HostPort::name_for_port(*port)),
            Self::Other(name) => f.write_str(name),
        }
    }
}

impl fmt::Debug for HostPortName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_reads_back_as_written() {
        for name in [
            "port-1",
            "port-9000",
            "port-65535",
            "port-09000",
            "port-65536",
            "port-",
            "port-0",
            "hpc-0f3c2a4e-9b1d-4c7e-8a55-12ab34cd56ef",
            "reserved-ssh",
        ] {
            assert_eq!(HostPortName::new(name).to_string(), name);
        }
        assert_eq!(HostPortName::new("port-9000"), HostPortName::Port(9000));
        assert!(matches!(
            HostPortName::new("port-09000"),
            HostPortName::Other(_)
        ));
    }
}
