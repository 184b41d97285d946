//! Where a hop goes: the target parsed from its URL. (Connecting to the first of its
//! addresses that accepts is shared with the other probes: `monitor::net`.)

use http::Uri;

/// The parts of a monitor URL the check needs.
#[derive(Debug, Clone)]
pub(super) struct Target {
    /// The URL without its user information, as sent, stored and logged.
    pub uri: Uri,
    pub https: bool,
    /// Without IPv6 brackets.
    pub host: String,
    pub port: u16,
    /// `user:password@` of the URL, percent-decoded: sent as Basic authorization, as curl
    /// does, and never stored or logged.
    pub credentials: Option<(String, String)>,
}

impl Target {
    pub fn parse(url: &str) -> Result<Self, String> {
        let shown = crate::monitor::redacted_url(url);
        let uri: Uri = url
            .parse()
            .map_err(|e| format!("invalid URL `{shown}`: {e}"))?;
        let (uri, credentials) =
            without_userinfo(uri).map_err(|e| format!("invalid URL `{shown}`: {e}"))?;
        let url = shown;
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
        // `Uri::port_u16` is `None` for a port it cannot parse, which would check the default
        // port instead: `:99999` and `:8o99` are errors, an empty `host:` is the default.
        let authority = uri.authority().map_or("", |a| a.as_str());
        let after_host = authority
            .rfind(']')
            .map_or(authority, |i| &authority[i + 1..]);
        let port = match after_host.rsplit_once(':') {
            None | Some((_, "")) => {
                if https {
                    443
                } else {
                    80
                }
            }
            Some((_, port)) => port
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| {
                    format!("invalid URL `{url}`: port `{port}` is not a number from 1 to 65535")
                })?,
        };
        Ok(Self {
            uri,
            https,
            host,
            port,
            credentials,
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

    /// The `Authorization` value of the URL's credentials.
    pub fn basic_authorization(&self) -> Option<String> {
        use base64::Engine as _;
        let (user, password) = self.credentials.as_ref()?;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        Some(format!("Basic {token}"))
    }
}

/// `uri` without `user[:password]@`, and those credentials, percent-decoded.
fn without_userinfo(uri: Uri) -> Result<(Uri, Option<(String, String)>), String> {
    let Some((userinfo, host)) = uri.authority().and_then(|a| a.as_str().rsplit_once('@')) else {
        return Ok((uri, None));
    };
    let decode = |text: &str| {
        percent_encoding::percent_decode_str(text)
            .decode_utf8_lossy()
            .into_owned()
    };
    let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
    let credentials = Some((decode(user), decode(password)));
    let authority = host.parse().map_err(|e| format!("{e}"))?;
    let mut parts = uri.into_parts();
    parts.authority = Some(authority);
    let uri = Uri::from_parts(parts).map_err(|e| e.to_string())?;
    Ok((uri, credentials))
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
        assert_eq!(Target::parse("http://example.test:/").unwrap().port, 80);
        for bad in [
            "http://h:99999/",
            "https://h:8o99/",
            "http://h:0/",
            "http://[::1]:70000/",
        ] {
            let err = Target::parse(bad).unwrap_err();
            assert!(
                err.contains("is not a number from 1 to 65535"),
                "{bad}: {err}"
            );
        }
        assert!(Target::parse("ftp://example.test/").is_err());
        assert!(Target::parse("/relative").is_err());
    }

    #[test]
    fn credentials_leave_the_url_for_basic_authorization() {
        let t = Target::parse("http://bob:s%40cret@example.test:8080/x").unwrap();
        assert_eq!(t.uri.to_string(), "http://example.test:8080/x");
        assert_eq!(t.authority(), "example.test:8080");
        assert_eq!(t.credentials, Some(("bob".into(), "s@cret".into())));
        // base64("bob:s@cret")
        assert_eq!(
            t.basic_authorization().as_deref(),
            Some("Basic Ym9iOnNAY3JldA==")
        );
        let err = Target::parse("gopher://bob:hunter2@example.test/").unwrap_err();
        assert!(!err.contains("hunter2"), "{err}");
    }
}
