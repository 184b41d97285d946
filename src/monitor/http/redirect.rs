//! Following redirects: which answers redirect, where they point, and what the next request
//! is (method, body and credentials), as browsers and `curl -L` do.

use http::{Method, StatusCode};

use super::target::Target;

/// True for the statuses whose `Location` is followed.
pub(super) fn is_redirect(status: StatusCode) -> bool {
    matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308)
}

/// The request of one hop of a check.
#[derive(Debug, Clone)]
pub(super) struct Hop {
    pub target: Target,
    pub method: Method,
    /// False once a redirect turned the request into a GET.
    pub send_body: bool,
    /// False once a redirect left the origin of the monitor's URL: `Authorization`, `Cookie`
    /// and `Proxy-Authorization` are then not sent.
    pub send_credentials: bool,
}

impl Hop {
    /// The monitor's own request.
    pub fn first(url: &str, method: &Method) -> Result<Self, String> {
        Ok(Self {
            target: Target::parse(url)?,
            method: method.clone(),
            send_body: true,
            send_credentials: true,
        })
    }

    /// The request a redirect answer asks for. 303, and 301/302 after a POST, become a GET
    /// without body; 307 and 308 repeat the request as it was.
    pub fn follow(&self, status: StatusCode, location: &str) -> Result<Self, String> {
        let url = resolve(&self.target.uri.to_string(), location)?;
        let mut target = Target::parse(&url)?;
        let to_get = match status.as_u16() {
            303 => self.method != Method::HEAD,
            301 | 302 => self.method == Method::POST,
            _ => false,
        };
        let same_origin = target.https == self.target.https
            && target.host.eq_ignore_ascii_case(&self.target.host)
            && target.port == self.target.port;
        // The URL's credentials follow a redirect within the origin, as curl's do.
        if target.credentials.is_none() && same_origin {
            target.credentials = self.target.credentials.clone();
        }
        Ok(Self {
            target,
            method: if to_get {
                Method::GET
            } else {
                self.method.clone()
            },
            send_body: self.send_body && !to_get,
            send_credentials: self.send_credentials && same_origin,
        })
    }
}

/// `location` (absolute, or relative to `base`) as an absolute URL without fragment.
fn resolve(base: &str, location: &str) -> Result<String, String> {
    let base = url::Url::parse(base).map_err(|e| format!("invalid URL `{base}`: {e}"))?;
    let mut next = base
        .join(location.trim())
        .map_err(|e| format!("invalid redirect location `{location}`: {e}"))?;
    next.set_fragment(None);
    Ok(next.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hop(url: &str, method: Method) -> Hop {
        Hop::first(url, &method).expect("valid")
    }

    #[test]
    fn locations_resolve_against_the_current_url() {
        let base = "http://a.test:8080/x/y?q=1";
        assert_eq!(resolve(base, "/z").unwrap(), "http://a.test:8080/z");
        assert_eq!(resolve(base, "z#top").unwrap(), "http://a.test:8080/x/z");
        assert_eq!(
            resolve(base, "//b.test/p").unwrap(),
            "http://b.test/p",
            "scheme-relative"
        );
        assert_eq!(resolve(base, "https://c.test/").unwrap(), "https://c.test/");
    }

    #[test]
    fn see_other_turns_a_post_into_a_get_and_307_keeps_it() {
        let post = hop("http://a.test/form", Method::POST);
        let next = post.follow(StatusCode::SEE_OTHER, "/done").unwrap();
        assert_eq!((next.method, next.send_body), (Method::GET, false));
        let next = post
            .follow(StatusCode::TEMPORARY_REDIRECT, "/again")
            .unwrap();
        assert_eq!((next.method, next.send_body), (Method::POST, true));
        let put = hop("http://a.test/", Method::PUT);
        let next = put.follow(StatusCode::FOUND, "/b").unwrap();
        assert_eq!(next.method, Method::PUT);
    }

    #[test]
    fn credentials_stay_on_the_first_origin() {
        let first = hop("https://a.test/", Method::GET);
        assert!(
            first
                .follow(StatusCode::FOUND, "/b")
                .unwrap()
                .send_credentials
        );
        let away = first.follow(StatusCode::FOUND, "https://b.test/").unwrap();
        assert!(!away.send_credentials);
        let back = away.follow(StatusCode::FOUND, "https://a.test/").unwrap();
        assert!(!back.send_credentials, "once dropped, never sent again");
        let plain = first.follow(StatusCode::FOUND, "http://a.test/").unwrap();
        assert!(!plain.send_credentials, "another scheme is another origin");
    }
}
