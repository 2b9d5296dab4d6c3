//! `host:port` addresses as operators write them (`--sftp-addr`, a URL's
//! authority, `sftp.host`): one parser, so `[::1]:2222`, a bare host and a
//! missing port mean the same thing to every binary.

use std::fmt;

/// A host (name, IPv4 or IPv6 literal, without brackets) and a port.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HostPort {
    pub host: String,
    pub port: u16,
}

/// Why an address does not parse. Holds only what the caller must fix, never
/// the address itself: callers decide whether it may be shown (a URL's
/// authority can carry a password).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AddrError {
    #[error("empty address")]
    Empty,
    #[error("empty host")]
    EmptyHost,
    #[error("missing ']' after an IPv6 address")]
    UnclosedBracket,
    #[error("unexpected text after ']' (expected :PORT or nothing)")]
    AfterBracket,
    #[error("port is not a number 0-65535")]
    BadPort,
}

impl HostPort {
    /// Parses `host:port`, `host`, `[v6]:port`, `[v6]` or a bare IPv6 literal
    /// (`::1`, which cannot carry a port: write `[::1]:22`); a missing port is
    /// `default_port`. Surrounding whitespace is ignored. A scheme or a path is
    /// not stripped: that is the caller's business (`sftp://`, `http://`), so a
    /// stray one shows up as an error rather than as a strange host.
    pub fn parse(s: &str, default_port: u16) -> Result<Self, AddrError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(AddrError::Empty);
        }
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (host, after) = rest.split_once(']').ok_or(AddrError::UnclosedBracket)?;
            match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None if after.is_empty() => (host, None),
                None => return Err(AddrError::AfterBracket),
            }
        } else {
            match s.rsplit_once(':') {
                // More than one ':' without brackets: an IPv6 literal, no port.
                Some((host, _)) if host.contains(':') => (s, None),
                Some((host, port)) => (host, Some(port)),
                None => (s, None),
            }
        };
        if host.is_empty() {
            return Err(AddrError::EmptyHost);
        }
        let port = match port {
            // `+1` and ` 1` parse as u16 in Rust but are not ports anyone wrote.
            Some(p) if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) => {
                return Err(AddrError::BadPort);
            }
            Some(p) => p.parse().map_err(|_| AddrError::BadPort)?,
            None => default_port,
        };
        Ok(Self {
            host: host.to_string(),
            port,
        })
    }
}

impl fmt::Display for HostPort {
    /// `host:port`, an IPv6 host in brackets, so the text parses back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<(String, u16), AddrError> {
        HostPort::parse(s, 22).map(|a| (a.host, a.port))
    }

    #[test]
    fn forms_and_default_port() {
        assert_eq!(p("127.0.0.1:2222"), Ok(("127.0.0.1".into(), 2222)));
        assert_eq!(p(" sftp-gateway:2222 "), Ok(("sftp-gateway".into(), 2222)));
        assert_eq!(p("example.org"), Ok(("example.org".into(), 22)));
        assert_eq!(p("[::1]:2222"), Ok(("::1".into(), 2222)));
        assert_eq!(p("[::1]"), Ok(("::1".into(), 22)));
        assert_eq!(p("::1"), Ok(("::1".into(), 22)));
        assert_eq!(p("fe80::1:22"), Ok(("fe80::1:22".into(), 22)));
        assert_eq!(p("h:0"), Ok(("h".into(), 0)));
    }

    #[test]
    fn errors_say_what_is_wrong() {
        assert_eq!(p(""), Err(AddrError::Empty));
        assert_eq!(p("  "), Err(AddrError::Empty));
        assert_eq!(p(":22"), Err(AddrError::EmptyHost));
        assert_eq!(p("[]:22"), Err(AddrError::EmptyHost));
        assert_eq!(p("[::1:22"), Err(AddrError::UnclosedBracket));
        assert_eq!(p("[::1]22"), Err(AddrError::AfterBracket));
        for bad in ["h:port", "h:", "h:65536", "h:+1", "h:-1", "[::1]:x"] {
            assert_eq!(p(bad), Err(AddrError::BadPort), "{bad}");
        }
    }

    #[test]
    fn display_parses_back() {
        for s in ["h:1", "[::1]:2222", "10.0.0.1:0"] {
            let a = HostPort::parse(s, 9).expect("valid");
            assert_eq!(a.to_string(), s);
            assert_eq!(HostPort::parse(&a.to_string(), 9), Ok(a));
        }
    }
}
