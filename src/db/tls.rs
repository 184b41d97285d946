//! TLS to PostgreSQL over rustls, with libpq's `sslmode` and `sslrootcert`.
//!
//! tokio-postgres knows `sslmode` `disable`, `prefer` and `require` only, and no
//! `sslrootcert`, so [`TlsSettings::extract`] takes both out of the connection string first and
//! hands tokio-postgres a string it accepts. The connector then verifies as libpq does:
//!
//! | sslmode | TLS | certificate checked |
//! |---|---|---|
//! | `disable` | never | - |
//! | `prefer` (default) | when the server offers it | no |
//! | `require` | always | no; as `verify-ca` when `sslrootcert` is given (as libpq) |
//! | `verify-ca` | always | chain to a trusted root |
//! | `verify-full` | always | chain, and the host name (or IP) in the certificate |
//!
//! Trusted roots: the PEM file `sslrootcert` names; without it (or with `sslrootcert=system`),
//! the system bundle and the webpki roots (libpq would read `~/.postgresql/root.crt`).
//! Client certificates (`sslcert`, `sslkey`) and channel binding are not supported.

mod connector;
mod verify;

use std::sync::Arc;

pub use connector::RustlsConnect;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use super::DbError;

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Result<Self, DbError> {
        Ok(match value {
            "disable" => SslMode::Disable,
            "allow" | "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(DbError::InvalidConnString(format!(
                    "unknown sslmode `{other}` (disable, prefer, require, verify-ca, verify-full)"
                )))
            }
        })
    }

    /// The mode tokio-postgres is given: it only decides whether TLS is attempted.
    fn for_tokio_postgres(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => "require",
        }
    }
}

/// What the connection string says about TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub mode: SslMode,
    /// `sslrootcert`, when given.
    pub root_cert: Option<String>,
}

impl TlsSettings {
    /// Takes `sslmode` and `sslrootcert` out of a URL or key=value connection string; returns
    /// them and the string tokio-postgres is to parse.
    pub fn extract(conn_string: &str) -> Result<(Self, String), DbError> {
        let is_url =
            conn_string.starts_with("postgres://") || conn_string.starts_with("postgresql://");
        let (base, pairs) = if is_url {
            let (base, query) = conn_string.split_once('?').unwrap_or((conn_string, ""));
            let pairs = query
                .split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (k.to_string(), v.to_string())
                })
                .collect();
            (Some(base), pairs)
        } else {
            (None, split_key_values(conn_string)?)
        };

        let mut settings = TlsSettings {
            mode: SslMode::Prefer,
            root_cert: None,
        };
        let mut kept = Vec::with_capacity(pairs.len());
        for (key, value) in pairs {
            match key.as_str() {
                "sslmode" => settings.mode = SslMode::parse(&percent_decode(&value, is_url))?,
                "sslrootcert" => settings.root_cert = Some(percent_decode(&value, is_url)),
                _ => kept.push((key, value)),
            }
        }
        kept.push((
            "sslmode".to_string(),
            settings.mode.for_tokio_postgres().to_string(),
        ));
        let rebuilt = match base {
            Some(base) => join_url(base, &kept),
            None => join_key_values(&kept),
        };
        Ok((settings, rebuilt))
    }

    /// The connector for these settings; reads `sslrootcert`.
    pub fn connector(&self) -> Result<RustlsConnect, DbError> {
        let roots = match self.root_cert.as_deref() {
            Some(path) if path != "system" => {
                let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                    .and_then(|certs| certs.collect::<Result<_, _>>())
                    .map_err(|e| {
                        DbError::InvalidConnString(format!("cannot read sslrootcert {path}: {e}"))
                    })?;
                if certs.is_empty() {
                    return Err(DbError::InvalidConnString(format!(
                        "sslrootcert {path} holds no certificate"
                    )));
                }
                certs
            }
            _ => Vec::new(),
        };
        let verify = match self.mode {
            SslMode::Disable | SslMode::Prefer => verify::Verify::Nothing,
            SslMode::Require if self.root_cert.is_none() => verify::Verify::Nothing,
            SslMode::Require | SslMode::VerifyCa => verify::Verify::Chain,
            SslMode::VerifyFull => verify::Verify::ChainAndName,
        };
        let config = verify::client_config(verify, roots)?;
        Ok(RustlsConnect::new(Arc::new(config)))
    }
}

fn join_url(base: &str, pairs: &[(String, String)]) -> String {
    let query: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{base}?{}", query.join("&"))
}

/// Splits libpq key=value pairs (values may be single-quoted, with backslash escapes).
fn split_key_values(text: &str) -> Result<Vec<(String, String)>, DbError> {
    let invalid = |why: &str| DbError::InvalidConnString(why.to_string());
    let mut pairs = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(pairs);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(invalid("expected `=` after a key"));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    Some('\'') => break,
                    Some('\\') => value.push(chars.next().ok_or_else(|| invalid("dangling \\"))?),
                    Some(c) => value.push(c),
                    None => return Err(invalid("unterminated quoted value")),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                value.push(c);
            }
        }
        pairs.push((key, value));
    }
}

fn join_key_values(pairs: &[(String, String)]) -> String {
    let quoted: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}='{}'", v.replace('\\', "\\\\").replace('\'', "\\'")))
        .collect();
    quoted.join(" ")
}

/// Decodes `%XX` escapes of a URL query value (key=value strings have none).
fn percent_decode(value: &str, is_url: bool) -> String {
    if !is_url {
        return value.to_string();
    }
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_modes_are_taken_out_of_urls() {
        let url = concat!(
            "postgres://u:p@db:5432/x",
            "?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&connect_timeout=3"
        );
        let (tls, rest) = TlsSettings::extract(url).unwrap();
        assert_eq!(tls.mode, SslMode::VerifyFull);
        assert_eq!(tls.root_cert.as_deref(), Some("/etc/ca.pem"));
        assert_eq!(
            rest,
            "postgres://u:p@db:5432/x?connect_timeout=3&sslmode=require"
        );
    }

    #[test]
    fn verify_modes_are_taken_out_of_key_values() {
        let (tls, rest) = TlsSettings::extract(
            r"host=db user=app password='it\'s' sslmode = verify-ca sslrootcert='/a b/ca.pem'",
        )
        .unwrap();
        assert_eq!(tls.mode, SslMode::VerifyCa);
        assert_eq!(tls.root_cert.as_deref(), Some("/a b/ca.pem"));
        assert_eq!(
            rest,
            r"host='db' user='app' password='it\'s' sslmode='require'"
        );
    }

    #[test]
    fn prefer_is_the_default_and_unknown_modes_are_refused() {
        let (tls, _) = TlsSettings::extract("postgres://db/x").unwrap();
        assert_eq!(tls.mode, SslMode::Prefer);
        assert!(TlsSettings::extract("host=db sslmode=sometimes").is_err());
        assert!(TlsSettings::extract("host=db sslmode='unterminated").is_err());
    }
}
