//! TLS for the HTTP probe: the trusted roots, the verifier that accepts any certificate (used
//! only by checks that ask to skip verification), and what the served certificate says.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{Resumption, WebPkiServerVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, ProtocolVersion, SignatureScheme};

use crate::monitor::{ProbeConfig, ProbeSetupError};

/// The client configurations of the HTTP probe. Each check gets its own copy whose verifier
/// also keeps the leaf certificate served, so that a handshake that fails on that certificate
/// (expired, say) still reports its expiry.
pub(super) struct TlsConfigs {
    /// Verifies the chain against the trusted roots and the name against the URL's host.
    verified: Base,
    /// Accepts any certificate (handshake signatures are still checked).
    unverified: Base,
}

/// A configuration and the verifier it was built with.
struct Base {
    config: ClientConfig,
    verifier: Arc<dyn ServerCertVerifier>,
}

/// The leaf certificate one check's verifier was shown (kept as received: parsing it would
/// add to the timed handshake).
pub(super) type SeenLeaf = Arc<Mutex<Option<CertificateDer<'static>>>>;

impl TlsConfigs {
    /// Trusts the webpki roots, the system's CA bundle and `config.extra_roots`; offers ALPN
    /// h2 and http/1.1; never resumes a session, so every check makes a full handshake as a
    /// new client would.
    pub fn new(config: &ProbeConfig) -> Result<Self, ProbeSetupError> {
        let roots = crate::monitor::net::root_store(config)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let webpki: Arc<dyn ServerCertVerifier> =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| ProbeSetupError::Tls(e.to_string()))?;
        let any: Arc<dyn ServerCertVerifier> = Arc::new(AcceptAnyCertificate {
            provider: provider.clone(),
        });
        let build = |verifier: Arc<dyn ServerCertVerifier>| {
            let mut config = ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map_err(|e| ProbeSetupError::Tls(e.to_string()))?
                .dangerous()
                .with_custom_certificate_verifier(verifier.clone())
                .with_no_client_auth();
            config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            config.resumption = Resumption::disabled();
            Ok::<_, ProbeSetupError>(Base { config, verifier })
        };
        Ok(Self {
            verified: build(webpki)?,
            unverified: build(any)?,
        })
    }

    /// The configuration of one check, with the slot its verifier records the leaf in.
    pub fn for_check(&self, verify: bool) -> (Arc<ClientConfig>, SeenLeaf) {
        let base = if verify {
            &self.verified
        } else {
            &self.unverified
        };
        let seen = SeenLeaf::default();
        let mut config = base.config.clone();
        config
            .dangerous()
            .set_certificate_verifier(Arc::new(RecordLeaf {
                inner: base.verifier.clone(),
                seen: seen.clone(),
            }));
        (Arc::new(config), seen)
    }
}

/// Keeps the leaf certificate, then lets `inner` decide.
#[derive(Debug)]
struct RecordLeaf {
    inner: Arc<dyn ServerCertVerifier>,
    seen: SeenLeaf,
}

impl ServerCertVerifier for RecordLeaf {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Ok(mut seen) = self.seen.lock() {
            *seen = Some(end_entity.clone().into_owned());
        }
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Accepts every certificate chain and name, as `curl --insecure` does. Only the signatures
/// of the handshake itself are checked, so the session is still with the key's holder.
#[derive(Debug)]
struct AcceptAnyCertificate {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The end of a certificate's validity, or `None` when it cannot be parsed.
pub(super) fn not_after(cert: &CertificateDer<'_>) -> Option<DateTime<Utc>> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    DateTime::from_timestamp(parsed.validity().not_after.timestamp(), 0)
}

/// `TLSv1.2`, `TLSv1.3`.
pub(super) fn version_name(version: ProtocolVersion) -> String {
    match version {
        ProtocolVersion::TLSv1_2 => "TLSv1.2".to_string(),
        ProtocolVersion::TLSv1_3 => "TLSv1.3".to_string(),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_expiry_is_read_from_the_certificate() {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(vec!["a.test".into()]).expect("params");
        params.not_after = rcgen::date_time_ymd(2031, 5, 17);
        let cert = params.self_signed(&key).expect("cert");
        let end = not_after(cert.der()).expect("parsed");
        assert_eq!(end.to_rfc3339(), "2031-05-17T00:00:00+00:00");
        assert_eq!(not_after(&CertificateDer::from(vec![1, 2, 3])), None);
    }
}
