//! Where a hop goes: the target parsed from its URL. (Connecting to the first of its
//! addresses that accepts is shared with the other probes: `monitor::net`.)

use http::Uri;

/// The parts of a monitor URL the check needs.
#[derive(Debug, Clone)]
pub(super) struct Target {
    pub uri: Uri,
    pub https: bool,
    /// Without IPv6 brackets.
    pub host: String,
    pub port: u16,
}

impl Target {
    pub fn parse(url: &str) -> Result<Self, String> {
        let uri: Uri = url
            .parse()
            .map_err(|e| format!("invalid URL `{url}`: {e}"))?;
        let https = match uri.scheme_str() {
            Some(s) if s.eq_ignore_ascii_case("https") => true,
            Some(s) if s.eq_ignore_ascii_case("http") => false,
            _ => return Err(format!("invalid URL `{url}`: scheme must be http or https")),
        };
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| format!("invalid URL `{url}`: no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        Ok(Self {
            uri,
            https,
            host,
            port,
        })
    }

    /// `host[:port]` as written in the URL, for the Host header.
    pub fn authority(&self) -> &str {
        self.uri
            .authority()
            .map(|a| a.as_str())
            .unwrap_or(&self.host)
    }

    pub fn path_and_query(&self) -> &str {
        self.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_scheme_host_and_port() {
        let t = Target::parse("https://[::1]:8443/a?b=1").unwrap();
        assert!(t.https);
        assert_eq!((t.host.as_str(), t.port), ("::1", 8443));
        assert_eq!(t.path_and_query(), "/a?b=1");
        let t = Target::parse("http://example.test").unwrap();
        assert_eq!((t.port, t.path_and_query()), (80, "/"));
        assert!(Target::parse("ftp://example.test/").is_err());
        assert!(Target::parse("/relative").is_err());
    }
}
