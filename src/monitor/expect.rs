//! What an HTTP monitor expects of the answer: its status, its body and the certificate's
//! remaining days. A check that gets an answer but not the expected one fails with
//! `error_type = assertion` and says which expectation failed and what came instead.

use chrono::{DateTime, Utc};

use crate::heartbeat::{CheckFailure, ErrorKind};

/// Most decoded body bytes a body expectation is matched against; the rest of the body is
/// still read (and measured) but not searched.
pub const BODY_MATCH_CAP: usize = 1024 * 1024;

/// The expectations of one monitor; the default expects any 2xx status and nothing else.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Expectations {
    /// Accepted status codes; `None` accepts any 2xx, and any other status then fails as
    /// `http` (as before expectations existed) rather than `assertion`.
    pub status: Option<StatusSet>,
    pub body: Option<BodyMatch>,
    /// Fail when the served certificate expires in fewer days than this.
    pub min_cert_days: Option<u32>,
}

impl Expectations {
    /// The failure for a final answer with `status`, or `None` when the status is accepted.
    pub fn check_status(&self, status: u16) -> Option<CheckFailure> {
        match &self.status {
            None => (!(200..300).contains(&status))
                .then(|| CheckFailure::new(ErrorKind::Http, format!("HTTP status {status}"))),
            Some(set) => (!set.contains(status)).then(|| {
                CheckFailure::new(
                    ErrorKind::Assertion,
                    format!("HTTP status {status}, expected {}", set.text),
                )
            }),
        }
    }

    /// The failure for a decoded body (its first [`BODY_MATCH_CAP`] bytes) that does not meet
    /// the body expectation.
    pub fn check_body(&self, body: &[u8]) -> Option<CheckFailure> {
        let rule = self.body.as_ref()?;
        let found = rule.regex.is_match(body);
        if found == rule.mode.must_match() {
            return None;
        }
        let what = if rule.mode.is_regex() {
            "match the regular expression"
        } else {
            "contain"
        };
        let verdict = if found { "should not" } else { "does not" };
        Some(CheckFailure::new(
            ErrorKind::Assertion,
            format!("the body {verdict} {what} `{}`", rule.pattern),
        ))
    }

    /// The failure for a final hop whose certificate (if any) expires too soon.
    pub fn check_certificate(
        &self,
        https: bool,
        not_after: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Option<CheckFailure> {
        let min = self.min_cert_days?;
        let fail = |message: String| Some(CheckFailure::new(ErrorKind::Assertion, message));
        match not_after {
            None if !https => fail(format!(
                "no certificate to check: the final answer came over plain HTTP, and the \
                 monitor requires {min} days of certificate validity"
            )),
            None => fail("the server's certificate has no readable expiry".into()),
            Some(at) => {
                let days = (at - now).num_days();
                (days < i64::from(min)).then(|| {
                    CheckFailure::new(
                        ErrorKind::Assertion,
                        format!(
                            "the certificate expires in {days} days ({}), fewer than the {min} \
                             required",
                            at.format("%Y-%m-%d %H:%M UTC")
                        ),
                    )
                })
            }
        }
    }
}

/// A set of status codes written as a list of codes and ranges: `200-299,301`.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusSet {
    ranges: Vec<(u16, u16)>,
    /// The list as written, for messages.
    text: String,
}

impl StatusSet {
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = |part: &str| {
            format!(
                "expected status `{text}`: `{part}` is not a status code (100-599) or a range \
                 such as 200-299"
            )
        };
        let code = |part: &str, s: &str| -> Result<u16, String> {
            s.trim()
                .parse::<u16>()
                .ok()
                .filter(|c| (100..=599).contains(c))
                .ok_or_else(|| bad(part))
        };
        let mut ranges = Vec::new();
        for part in text.split(',').map(str::trim) {
            if part.is_empty() {
                return Err(bad(part));
            }
            let range = match part.split_once('-') {
                Some((low, high)) => (code(part, low)?, code(part, high)?),
                None => {
                    let c = code(part, part)?;
                    (c, c)
                }
            };
            if range.0 > range.1 {
                return Err(format!(
                    "expected status `{text}`: the range `{part}` runs backwards"
                ));
            }
            ranges.push(range);
        }
        Ok(Self {
            ranges,
            text: text.trim().to_string(),
        })
    }

    pub fn contains(&self, status: u16) -> bool {
        self.ranges
            .iter()
            .any(|&(low, high)| (low..=high).contains(&status))
    }
}

/// How a body pattern is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyMatchMode {
    Contains,
    NotContains,
    Regex,
    NotRegex,
}

impl BodyMatchMode {
    /// Parses `api_monitors.body_match_mode`; `None` means `contains`.
    pub fn parse(text: Option<&str>) -> Result<Self, String> {
        let Some(text) = text else {
            return Ok(Self::Contains);
        };
        match text.trim().to_ascii_lowercase().as_str() {
            "" | "contains" => Ok(Self::Contains),
            "not_contains" => Ok(Self::NotContains),
            "regex" => Ok(Self::Regex),
            "not_regex" => Ok(Self::NotRegex),
            _ => Err(format!(
                "body match mode `{text}` is not one of contains, not_contains, regex, not_regex"
            )),
        }
    }

    fn must_match(self) -> bool {
        matches!(self, Self::Contains | Self::Regex)
    }

    fn is_regex(self) -> bool {
        matches!(self, Self::Regex | Self::NotRegex)
    }
}

/// A body expectation: a substring or a regular expression that must, or must not, be found.
#[derive(Debug, Clone)]
pub struct BodyMatch {
    pub pattern: String,
    pub mode: BodyMatchMode,
    /// The pattern compiled (a substring is compiled as its escaped literal).
    regex: regex::bytes::Regex,
}

impl BodyMatch {
    pub fn new(pattern: &str, mode: BodyMatchMode) -> Result<Self, String> {
        if pattern.is_empty() {
            return Err("body match is empty".into());
        }
        let source = if mode.is_regex() {
            pattern.to_string()
        } else {
            regex::escape(pattern)
        };
        let regex = regex::bytes::RegexBuilder::new(&source)
            .size_limit(1 << 20)
            .build()
            .map_err(|e| {
                format!("body match `{pattern}` is not a valid regular expression: {e}")
            })?;
        Ok(Self {
            pattern: pattern.to_string(),
            mode,
            regex,
        })
    }
}

impl PartialEq for BodyMatch {
    fn eq(&self, other: &Self) -> bool {
        self.pattern == other.pattern && self.mode == other.mode
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    #[test]
    fn status_lists_accept_codes_and_ranges() {
        let set = StatusSet::parse("200-299, 301,404").expect("valid");
        assert!(set.contains(200) && set.contains(299) && set.contains(301) && set.contains(404));
        assert!(!set.contains(300) && !set.contains(302) && !set.contains(500));
        for bad in ["", "200-", "abc", "99", "600", "299-200", "200,,301"] {
            assert!(StatusSet::parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn an_unset_status_expectation_keeps_the_2xx_rule() {
        let e = Expectations::default();
        assert!(e.check_status(204).is_none());
        assert_eq!(e.check_status(503).expect("fails").kind, ErrorKind::Http);
        let e = Expectations {
            status: Some(StatusSet::parse("503").expect("valid")),
            ..Expectations::default()
        };
        assert!(e.check_status(503).is_none());
        let failure = e.check_status(200).expect("fails");
        assert_eq!(failure.kind, ErrorKind::Assertion);
        assert_eq!(failure.message, "HTTP status 200, expected 503");
    }

    #[test]
    fn body_rules_match_substrings_and_regexes_both_ways() {
        let expect = |pattern: &str, mode| Expectations {
            body: Some(BodyMatch::new(pattern, mode).expect("valid")),
            ..Expectations::default()
        };
        let body = b"{\"status\": \"ok\", \"items\": 42}";
        assert!(expect("\"ok\"", BodyMatchMode::Contains)
            .check_body(body)
            .is_none());
        assert!(expect("items.*4", BodyMatchMode::Contains)
            .check_body(body)
            .is_some());
        assert!(expect("items\": \\d+", BodyMatchMode::Regex)
            .check_body(body)
            .is_none());
        let failure = expect("error", BodyMatchMode::Contains)
            .check_body(body)
            .expect("fails");
        assert_eq!(failure.message, "the body does not contain `error`");
        let failure = expect("\\d{2}", BodyMatchMode::NotRegex)
            .check_body(body)
            .expect("fails");
        assert_eq!(
            failure.message,
            "the body should not match the regular expression `\\d{2}`"
        );
        assert!(expect("error", BodyMatchMode::NotContains)
            .check_body(body)
            .is_none());
        assert!(BodyMatch::new("(", BodyMatchMode::Regex).is_err());
        assert!(BodyMatchMode::parse(Some("startswith")).is_err());
    }

    #[test]
    fn certificates_expiring_too_soon_fail() {
        let now = Utc::now();
        let e = Expectations {
            min_cert_days: Some(14),
            ..Expectations::default()
        };
        assert!(e
            .check_certificate(true, Some(now + Duration::days(30)), now)
            .is_none());
        let failure = e
            .check_certificate(
                true,
                Some(now + Duration::days(3) + Duration::hours(1)),
                now,
            )
            .expect("fails");
        assert!(failure
            .message
            .starts_with("the certificate expires in 3 days"));
        assert!(e.check_certificate(false, None, now).is_some());
        assert!(Expectations::default()
            .check_certificate(false, None, now)
            .is_none());
    }
}
