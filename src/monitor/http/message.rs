//! The HTTP messages of a check: the request as sent, and the response as read (head first,
//! then the body up to the read cap).

use std::error::Error as StdError;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE, HOST, LOCATION, USER_AGENT};
use http::{Request, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Body as _;
use serde_json::{Map, Value};

use super::decode::BodyDecoder;
use super::redirect::{is_redirect, Hop};
use super::{Measurement, BODY_READ_CAP, BODY_STORE_CAP, MAX_HEAD_BYTES};
use crate::heartbeat::{CheckFailure, ErrorKind};
use crate::monitor::expect::BODY_MATCH_CAP;
use crate::monitor::{masked_header_value, MonitorSpec};

const AGENT_NAME: &str = concat!("uptimeo-agent/", env!("CARGO_PKG_VERSION"));

/// Headers that carry credentials, never sent to another origin after a redirect.
const CREDENTIAL_HEADERS: [&str; 3] = ["authorization", "cookie", "proxy-authorization"];

/// How a hop ended.
pub(super) enum HopOutcome {
    /// The response is the check's answer; its body has been read.
    Final,
    /// A redirect to follow (the body was not read).
    Redirect {
        status: StatusCode,
        location: String,
    },
}

/// The request as sent, and its headers for storage (secrets masked).
pub(super) fn build_request(
    spec: &MonitorSpec,
    hop: &Hop,
    http2: bool,
) -> Result<(Request<Full<Bytes>>, Value), CheckFailure> {
    let invalid =
        |e: http::Error| CheckFailure::new(ErrorKind::Http, format!("invalid request: {e}"));
    let (body, default_type) = match spec.body.as_ref().filter(|_| hop.send_body) {
        None => (Bytes::new(), None),
        Some(Value::String(text)) => (Bytes::from(text.clone()), None),
        Some(json) => (
            Bytes::from(serde_json::to_vec(json).unwrap_or_default()),
            Some("application/json"),
        ),
    };

    let target = &hop.target;
    let mut builder = Request::builder().method(hop.method.clone());
    builder = if http2 {
        builder.uri(target.uri.clone())
    } else {
        builder
            .uri(target.path_and_query())
            .header(HOST, target.authority())
    };
    builder = builder.header(USER_AGENT, AGENT_NAME);
    let has_content_type = spec
        .headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("content-type"));
    if let (Some(ct), false) = (default_type, has_content_type) {
        builder = builder.header(CONTENT_TYPE, ct);
    }
    let mut request = builder.body(Full::new(body)).map_err(invalid)?;

    // The row's headers replace defaults of the same name.
    let headers = request.headers_mut();
    if let (Some(auth), true) = (target.basic_authorization(), hop.send_credentials) {
        if let Ok(value) = HeaderValue::from_str(&auth) {
            headers.insert(http::header::AUTHORIZATION, value);
        }
    }
    for (name, value) in &spec.headers {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) else {
            continue; // validated when the monitor was loaded
        };
        if !hop.send_credentials && CREDENTIAL_HEADERS.contains(&name.as_str()) {
            continue;
        }
        headers.insert(name, value);
    }
    let stored = headers_json(request.headers(), true);
    Ok((request, stored))
}

/// Reads the response head, then either stops at a redirect to follow or reads the body (at
/// most [`BODY_READ_CAP`] bytes).
pub(super) async fn read_response(
    response: Result<hyper::Response<hyper::body::Incoming>, hyper::Error>,
    spec: &MonitorSpec,
    m: &mut Measurement,
) -> Result<HopOutcome, CheckFailure> {
    let response = response.map_err(http_failure)?;
    m.result.timings.first_byte = Some(m.start.elapsed());
    check_head_size(&response)?;
    m.phase = "reading the body";

    let headers = response.headers();
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let status = response.status();
    m.result.status_code = Some(status.as_u16());
    m.result.content_type = text("content-type");
    m.result.server = text("server");
    m.result.cache_status = text("cf-cache-status").or_else(|| text("x-cache"));
    m.result.response_headers = Some(headers_json(headers, false));
    m.result.details.http_version = Some(version_name(response.version()));

    // A redirect is followed without reading its body: the connection is dropped.
    if spec.http.max_redirects > 0 && is_redirect(status) {
        if let Some(location) = text(LOCATION.as_str()) {
            return Ok(HopOutcome::Redirect { status, location });
        }
    }

    let keep_body = spec.schedule.include_response_body;
    let encoding = text("content-encoding");
    let mut keep = if keep_body { BODY_STORE_CAP } else { 0 };
    if spec.expect.body.is_some() {
        keep = keep.max(BODY_MATCH_CAP);
    }
    let mut decoder = encoding
        .as_deref()
        .and_then(|e| BodyDecoder::for_encoding(e, keep));
    m.result.details.content_encoding = encoding;
    let mut kept = Vec::new();
    let mut size: u64 = 0;
    let mut body = response.into_body();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            m.result.size_bytes = Some(size);
            CheckFailure::new(
                ErrorKind::Body,
                format!("reading the body failed: {}", chain(&e)),
            )
        })?;
        let Some(data) = frame.data_ref() else {
            continue;
        };
        // Bytes past the cap are dropped unseen, even within the frame that crosses it.
        let room = usize::try_from(BODY_READ_CAP - size).unwrap_or(usize::MAX);
        let cut = data.len() > room;
        let data = &data[..data.len().min(room)];
        size += data.len() as u64;
        match decoder.as_mut() {
            Some(decoder) => decoder.write(data).map_err(|e| undecodable(m, size, &e))?,
            None if kept.len() < keep => {
                let room = keep - kept.len();
                kept.extend_from_slice(&data[..data.len().min(room)]);
            }
            None => {}
        }
        if size >= BODY_READ_CAP {
            m.result.details.body_truncated = cut || !body.is_end_stream();
            break;
        }
    }

    // A body read to its end must also end its encoding; a truncated one cannot.
    if let Some(decoder) = decoder.as_mut() {
        if !m.result.details.body_truncated {
            decoder.finish().map_err(|e| undecodable(m, size, &e))?;
        }
        let decoded = decoder.decoded();
        m.result.details.decoded_bytes = Some(decoded.size);
        m.result.details.decoded_truncated = decoded.capped;
        kept = decoder.take_kept();
    }
    m.result.timings.total = Some(m.start.elapsed());
    m.result.size_bytes = Some(size);
    if keep_body {
        m.result.body = Some(body_json(&kept[..kept.len().min(BODY_STORE_CAP)]));
    }
    // The final answer meets the monitor's expectations, status first.
    match spec
        .expect
        .check_status(status.as_u16())
        .or_else(|| spec.expect.check_body(&kept))
    {
        Some(failure) => Err(failure),
        None => Ok(HopOutcome::Final),
    }
}

/// Fails a response whose head (status line and headers, counted as on the wire) is over
/// [`MAX_HEAD_BYTES`]. hyper bounds its buffer near that size but may accept a head somewhat
/// larger when it arrives in big reads, so the limit is enforced here exactly.
fn check_head_size<B>(response: &hyper::Response<B>) -> Result<(), CheckFailure> {
    const STATUS_LINE: usize = "HTTP/1.1 200 \r\n\r\n".len();
    let size = STATUS_LINE
        + response
            .headers()
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + ": \r\n".len())
            .sum::<usize>();
    if size > MAX_HEAD_BYTES {
        return Err(CheckFailure::new(
            ErrorKind::Http,
            format!(
                "response head too large: {size} bytes, more than the limit of {MAX_HEAD_BYTES}"
            ),
        ));
    }
    Ok(())
}

/// A body whose content encoding cannot be decoded (a corrupt or cut gzip stream).
fn undecodable(m: &mut Measurement, size: u64, error: &str) -> CheckFailure {
    m.result.size_bytes = Some(size);
    let encoding = m.result.details.content_encoding.as_deref().unwrap_or("?");
    CheckFailure::new(
        ErrorKind::Body,
        format!("the body is not valid {encoding}: {error}"),
    )
}

fn version_name(version: Version) -> String {
    match version {
        Version::HTTP_2 => "HTTP/2".to_string(),
        Version::HTTP_11 => "HTTP/1.1".to_string(),
        Version::HTTP_10 => "HTTP/1.0".to_string(),
        other => format!("{other:?}"),
    }
}

/// A JSON body as JSON, any other body as a JSON string (lossy UTF-8).
fn body_json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into()))
}

/// Headers as a JSON object; repeated headers are joined with ", ".
fn headers_json(headers: &http::HeaderMap, mask: bool) -> Value {
    let mut map = Map::new();
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes());
        let value = if mask {
            masked_header_value(name.as_str(), &value)
        } else {
            value.into_owned()
        };
        match map.get_mut(name.as_str()) {
            Some(Value::String(existing)) => {
                existing.push_str(", ");
                existing.push_str(&value);
            }
            _ => {
                map.insert(name.as_str().to_string(), Value::String(value));
            }
        }
    }
    Value::Object(map)
}

/// A failed HTTP exchange: what it means for the target in words, then hyper's reason.
pub(super) fn http_failure(e: hyper::Error) -> CheckFailure {
    let cause = chain(&e);
    let meaning = if e.is_parse_too_large() {
        "the response head is too large"
    } else if e.is_parse() || e.is_parse_status() {
        "the answer is not valid HTTP"
    } else if e.is_incomplete_message() {
        "the server closed the connection without a complete response"
    } else if cause.contains("unexpected message") {
        "the server sent data before any request (not an HTTP server?)"
    } else {
        "HTTP exchange failed"
    };
    CheckFailure::new(ErrorKind::Http, format!("{meaning}: {cause}"))
}

/// An error with its sources, "outer: inner: innermost".
pub(super) fn chain(e: &(dyn StdError + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_stored_as_json_when_they_are_json() {
        assert_eq!(
            body_json(br#"{"ok":true}"#),
            serde_json::json!({"ok": true})
        );
        assert_eq!(body_json(b"plain"), Value::String("plain".into()));
    }

    #[test]
    fn credentials_are_not_sent_after_leaving_the_origin() {
        let spec = MonitorSpec {
            id: 1,
            name: "m".into(),
            kind: "HTTP".into(),
            method: http::Method::GET,
            url: "http://a.test/".into(),
            headers: vec![
                ("Authorization".into(), "Bearer s".into()),
                ("X-Test".into(), "yes".into()),
            ],
            body: None,
            schedule: crate::monitor::Schedule {
                id: 1,
                interval: std::time::Duration::from_secs(1),
                include_response_body: false,
                warning_ms: None,
                critical_ms: None,
            },
            timeout: std::time::Duration::from_secs(1),
            http: crate::monitor::HttpOptions::default(),
            ip_family: Default::default(),
            expect: Default::default(),
        };
        let first = Hop::first(&spec.url, &spec.method).unwrap();
        let away = first.follow(StatusCode::FOUND, "http://b.test/").unwrap();
        let (request, _) = build_request(&spec, &first, false).unwrap();
        assert!(request.headers().contains_key("authorization"));
        let (request, _) = build_request(&spec, &away, false).unwrap();
        assert!(!request.headers().contains_key("authorization"));
        assert_eq!(request.headers()["x-test"], "yes");
        assert_eq!(request.headers()["host"], "b.test");
    }
}
