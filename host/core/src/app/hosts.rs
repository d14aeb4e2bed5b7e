//! Host patterns: `scheme://host[:port]` as written in an `http` grant or a
//! secret's `hosts`, parsed with the fix for what is wrong, and matched
//! against a request's destination. Pure data: it may not resolve names or
//! open connections (the HTTP capability does, and asks a pattern whether it
//! names an address explicitly).

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

/// Which scheme a pattern allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `http://`
    Http,
    /// `https://`
    Https,
}

impl Scheme {
    /// `http` or `https`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    /// The port a URL of this scheme means without one.
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

/// Which hosts a pattern allows.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HostMatch {
    /// `*`: any host name or address (never a private address: see
    /// [`HostPattern::names_address`]).
    Any,
    /// `api.example.com`, lowercased.
    Name(String),
    /// `*.example.com`: one or more labels before the suffix (stored with its dot).
    Subdomains(String),
    /// `127.0.0.1`, `[::1]`, or a range `10.0.0.0/8`.
    Addresses(IpNet),
}

/// Which ports a pattern allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PortMatch {
    Any,
    Range(u16, u16),
}

/// One allowed destination pattern, e.g. `https://*.mail.example:8443`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    text: String,
    scheme: Scheme,
    host: HostMatch,
    port: PortMatch,
}

/// Why a pattern cannot be read, and how to write it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternError {
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub help: String,
}

fn problem(message: impl Into<String>, help: impl Into<String>) -> PatternError {
    PatternError {
        message: message.into(),
        help: help.into(),
    }
}

const FORM: &str = "write scheme://host[:port], e.g. \"https://api.example.com\", \"https://*.example.com:8443\", \"http://127.0.0.1:*\" or \"http://10.0.0.0/8:8000..8100\"";

impl HostPattern {
    /// Reads a pattern.
    pub fn parse(text: &str) -> Result<HostPattern, PatternError> {
        let Some((scheme, rest)) = text.split_once("://") else {
            return Err(problem(
                format!("'{text}' has no scheme"),
                format!("say which scheme it may use: \"https://{text}\" (or \"http://{text}\")"),
            ));
        };
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            other => {
                return Err(problem(
                    format!("'{other}' is not a scheme a step may use"),
                    "use http:// or https://",
                ));
            }
        };
        if rest.contains(['?', '#', '@']) {
            return Err(problem(
                format!("'{text}' has more than scheme, host and port"),
                format!("a grant names hosts, not URLs: {FORM}"),
            ));
        }
        let (authority, path) = split_path(rest);
        if !path.is_empty() {
            let without = format!("{}://{authority}", scheme.as_str());
            return Err(problem(
                format!("'{text}' has a path"),
                format!("a grant allows a whole host, not a path on it: write \"{without}\""),
            ));
        }
        let (host_text, port) = split_port(authority)?;
        let host = parse_host(host_text, text)?;
        let port = match port {
            None => {
                let p = scheme.default_port();
                PortMatch::Range(p, p)
            }
            Some("*") => PortMatch::Any,
            Some(port) => parse_ports(port, text)?,
        };
        Ok(HostPattern {
            text: text.to_string(),
            scheme,
            host,
            port,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether a request to `scheme://host:port` is allowed; `host` is the
    /// URL's host (a name, or an address with IPv6 brackets removed).
    pub fn matches(&self, scheme: Scheme, host: &str, port: u16) -> bool {
        if scheme != self.scheme {
            return false;
        }
        let ports = match self.port {
            PortMatch::Any => true,
            PortMatch::Range(low, high) => (low..=high).contains(&port),
        };
        if !ports {
            return false;
        }
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        match &self.host {
            HostMatch::Any => true,
            HostMatch::Name(name) => *name == host,
            HostMatch::Subdomains(suffix) => host.len() > suffix.len() && host.ends_with(suffix),
            HostMatch::Addresses(net) => host.parse::<IpAddr>().is_ok_and(|ip| net.contains(&ip)),
        }
    }

    /// Whether this pattern names `address` (or a range holding it) itself:
    /// the only way a request may reach a private address.
    pub fn names_address(&self, address: IpAddr) -> bool {
        match &self.host {
            HostMatch::Addresses(net) => net.contains(&address),
            _ => false,
        }
    }

    /// Whether the host part is an address or a range of them.
    pub fn is_address(&self) -> bool {
        matches!(self.host, HostMatch::Addresses(_))
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Splits `authority[/path]`; the `/8` of an address range belongs to the
/// authority (`10.0.0.0/8:80`).
fn split_path(rest: &str) -> (&str, &str) {
    let Some(slash) = rest.find('/') else {
        return (rest, "");
    };
    if rest[..slash].parse::<IpAddr>().is_ok() {
        let after = &rest[slash + 1..];
        let bits = after
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(after.len());
        if bits > 0 {
            let end = slash + 1 + bits;
            // A port may follow the prefix; the path starts at the next '/'.
            let path = rest[end..].find('/').map_or(rest.len(), |i| end + i);
            return (&rest[..path], &rest[path..]);
        }
    }
    (&rest[..slash], &rest[slash..])
}

/// Splits `host[:port]`, with an IPv6 address in brackets.
fn split_port(authority: &str) -> Result<(&str, Option<&str>), PatternError> {
    if let Some(inner) = authority.strip_prefix('[') {
        let Some((address, after)) = inner.split_once(']') else {
            return Err(problem(
                format!("'{authority}' has no closing ']'"),
                "write an IPv6 address in brackets, e.g. \"http://[::1]:8080\"",
            ));
        };
        return match after.strip_prefix(':') {
            Some(port) => Ok((address, Some(port))),
            None if after.is_empty() => Ok((address, None)),
            None => Err(problem(
                format!("'{after}' after an IPv6 address is not a port"),
                FORM,
            )),
        };
    }
    if authority.matches(':').count() > 1 {
        return Err(problem(
            format!("'{authority}' is an IPv6 address without brackets"),
            "write it in brackets, e.g. \"http://[::1]:8080\"",
        ));
    }
    Ok(match authority.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    })
}

fn parse_host(host: &str, text: &str) -> Result<HostMatch, PatternError> {
    if host.is_empty() {
        return Err(problem(format!("'{text}' has no host"), FORM));
    }
    if host == "*" {
        return Ok(HostMatch::Any);
    }
    if let Ok(net) = host.parse::<IpNet>() {
        return Ok(HostMatch::Addresses(net.trunc()));
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(HostMatch::Addresses(IpNet::from(ip)));
    }
    let lower = host.to_ascii_lowercase();
    let (suffix, wildcard) = match lower.strip_prefix("*.") {
        Some(suffix) => (suffix, true),
        None => (lower.as_str(), false),
    };
    let valid_label = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    if suffix.is_empty() || !suffix.split('.').all(valid_label) {
        let help = if suffix.contains('*') {
            "'*' stands for a whole label, and only the first: \"https://*.example.com\""
                .to_string()
        } else {
            FORM.to_string()
        };
        return Err(problem(format!("'{host}' is not a host name"), help));
    }
    Ok(if wildcard {
        HostMatch::Subdomains(format!(".{suffix}"))
    } else {
        HostMatch::Name(suffix.to_string())
    })
}

fn parse_ports(port: &str, text: &str) -> Result<PortMatch, PatternError> {
    let number = |p: &str| p.parse::<u16>().ok().filter(|p| *p > 0);
    let bad = || {
        problem(
            format!("'{port}' in '{text}' is not a port"),
            "write a port (8080), a range (8000..8100) or * for any port",
        )
    };
    match port.split_once("..") {
        Some((low, high)) => match (number(low), number(high)) {
            (Some(low), Some(high)) if low <= high => Ok(PortMatch::Range(low, high)),
            _ => Err(bad()),
        },
        None => number(port).map(|p| PortMatch::Range(p, p)).ok_or_else(bad),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allows(pattern: &str, scheme: Scheme, host: &str, port: u16) -> bool {
        HostPattern::parse(pattern)
            .unwrap()
            .matches(scheme, host, port)
    }

    #[test]
    fn patterns_match_scheme_host_and_port() {
        use Scheme::*;
        assert!(allows(
            "https://api.pay.example",
            Https,
            "api.pay.example",
            443
        ));
        assert!(allows(
            "https://API.pay.example",
            Https,
            "api.PAY.example.",
            443
        ));
        assert!(!allows(
            "https://api.pay.example",
            Http,
            "api.pay.example",
            443
        ));
        assert!(!allows(
            "https://api.pay.example",
            Https,
            "api.pay.example",
            8443
        ));
        assert!(!allows(
            "https://api.pay.example",
            Https,
            "evil-api.pay.example",
            443
        ));
        assert!(allows(
            "https://*.mail.example:8443",
            Https,
            "eu.mail.example",
            8443
        ));
        assert!(allows(
            "https://*.mail.example:8443",
            Https,
            "a.b.mail.example",
            8443
        ));
        assert!(!allows(
            "https://*.mail.example:8443",
            Https,
            "mail.example",
            8443
        ));
        assert!(!allows(
            "https://*.mail.example:8443",
            Https,
            "evilmail.example",
            8443
        ));
        assert!(allows("http://127.0.0.1:*", Http, "127.0.0.1", 9));
        assert!(allows("http://[::1]:8080", Http, "::1", 8080));
        assert!(allows(
            "http://10.0.0.0/8:8000..8100",
            Http,
            "10.2.3.4",
            8050
        ));
        assert!(!allows(
            "http://10.0.0.0/8:8000..8100",
            Http,
            "10.2.3.4",
            8101
        ));
        assert!(!allows("http://10.0.0.0/8:*", Http, "11.0.0.1", 80));
        assert!(allows("https://*", Https, "anything.example", 443));
    }

    #[test]
    fn only_address_patterns_name_addresses() {
        let loopback: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(
            HostPattern::parse("http://127.0.0.1:*")
                .unwrap()
                .names_address(loopback)
        );
        assert!(
            HostPattern::parse("http://127.0.0.0/8")
                .unwrap()
                .names_address(loopback)
        );
        assert!(
            !HostPattern::parse("http://*:*")
                .unwrap()
                .names_address(loopback)
        );
        assert!(
            !HostPattern::parse("http://localhost:*")
                .unwrap()
                .names_address(loopback)
        );
    }

    #[test]
    fn bad_patterns_say_how_to_write_them() {
        let error = |p: &str| HostPattern::parse(p).unwrap_err();
        let e = error("api.pay.example");
        assert_eq!(e.message, "'api.pay.example' has no scheme");
        assert!(e.help.contains("\"https://api.pay.example\""), "{}", e.help);
        let e = error("https://api.pay.example/v1/charges");
        assert_eq!(e.message, "'https://api.pay.example/v1/charges' has a path");
        assert!(e.help.contains("\"https://api.pay.example\""), "{}", e.help);
        let e = error("https://api.pay.example:8443/v1");
        assert!(
            e.help.contains("\"https://api.pay.example:8443\""),
            "{}",
            e.help
        );
        assert!(error("ftp://x.example").message.contains("not a scheme"));
        assert!(error("https://x.example:0").message.contains("not a port"));
        assert!(
            error("https://x.example:9..8")
                .message
                .contains("not a port")
        );
        assert!(error("https://api.*.example").help.contains("whole label"));
        assert!(error("https://x.example?a=1").message.contains("more than"));
        assert!(error("https://").message.contains("no host"));
        assert!(error("http://::1").message.contains("without brackets"));
    }
}
