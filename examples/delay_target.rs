//! A loopback target with known delays in each phase, for `bench/curl_compare.sh`: a DNS
//! server that answers after D1, and an HTTPS server that holds the TLS handshake D2, sends
//! the response head D3 after the request and trickles the body over D4.
//!
//! ```text
//! delay_target DNS_ADDR HTTPS_PORT OUT_DIR D1_MS D2_MS D3_MS D4_MS
//! ```
//!
//! `delay.test` resolves to 127.0.0.1 (no AAAA record: an empty answer, after the same delay).
//! The certificate for `delay.test` is signed by a CA written to `OUT_DIR/ca.pem`. Prints
//! `ready` once both servers listen, then serves until killed.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

// Shared with the tests, which also use what this server does not (truncated answers).
#[path = "../tests/common/dns.rs"]
#[allow(dead_code)]
mod dns;

const NAME: &str = "delay.test.";
const BODY_PIECES: u32 = 10;

#[derive(Clone, Copy)]
struct Delays {
    dns: Duration,
    handshake: Duration,
    head: Duration,
    body: Duration,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 8 {
        eprintln!("usage: delay_target DNS_ADDR HTTPS_PORT OUT_DIR D1_MS D2_MS D3_MS D4_MS");
        std::process::exit(2);
    }
    let dns_addr: SocketAddr = args[1].parse().expect("DNS_ADDR is ip:port");
    let port: u16 = args[2].parse().expect("HTTPS_PORT is a port");
    let out_dir = std::path::PathBuf::from(&args[3]);
    let ms = |i: usize| Duration::from_millis(args[i].parse().expect("delays are whole ms"));
    let delays = Delays {
        dns: ms(4),
        handshake: ms(5),
        head: ms(6),
        body: ms(7),
    };

    let dns = Arc::new(
        tokio::net::UdpSocket::bind(dns_addr)
            .await
            .expect("bind the DNS address"),
    );
    let https = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind the HTTPS port");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config(&out_dir)));

    tokio::spawn(serve_dns(dns, delays.dns));
    println!("ready");
    while let Ok((stream, _)) = https.accept().await {
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            tokio::time::sleep(delays.handshake).await;
            if let Ok(tls) = acceptor.accept(stream).await {
                respond(tls, delays).await;
            }
        });
    }
}

/// A CA and a `delay.test` leaf; the CA goes to `out_dir/ca.pem`.
fn server_config(out_dir: &std::path::Path) -> rustls::ServerConfig {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // Distinct names: OpenSSL takes a leaf whose issuer name is its own subject for
    // self-signed.
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "uptimeo bench CA");
    let ca = ca_params.self_signed(&ca_key).expect("ca");
    std::fs::write(out_dir.join("ca.pem"), ca.pem()).expect("write ca.pem");
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().expect("leaf key");
    let mut leaf_params =
        CertificateParams::new(vec!["delay.test".to_string()]).expect("leaf params");
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, "delay.test");
    let leaf = leaf_params.signed_by(&key, &issuer).expect("leaf");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(leaf.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .expect("server config");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config
}

/// Answers every query after `delay`: `delay.test` A is 127.0.0.1, anything else is empty.
async fn serve_dns(socket: Arc<tokio::net::UdpSocket>, delay: Duration) {
    let mut buf = vec![0u8; 4096];
    while let Ok((n, peer)) = socket.recv_from(&mut buf).await {
        let (socket, packet) = (socket.clone(), buf[..n].to_vec());
        tokio::spawn(async move {
            let received = Instant::now();
            let table = [(NAME.to_string(), IpAddr::V4(Ipv4Addr::LOCALHOST))];
            let Some(answer) = dns::dns_answer(&packet, &table) else {
                return;
            };
            tokio::time::sleep_until((received + delay).into()).await;
            let _ = socket.send_to(&answer, peer).await;
        });
    }
}

/// Reads the request head, waits, sends the head, then the body in pieces at fixed deadlines
/// (so that timer overshoot does not add up).
async fn respond<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(mut s: S, d: Delays) {
    let mut request = Vec::new();
    let mut buf = [0u8; 2048];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    let received = Instant::now();
    let piece = "x".repeat(100);
    let head = format!(
        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\ncontent-type: text/plain\r\n\
         connection: close\r\n\r\n",
        piece.len() * BODY_PIECES as usize
    );
    tokio::time::sleep_until((received + d.head).into()).await;
    let _ = s.write_all(head.as_bytes()).await;
    let _ = s.flush().await;
    let sent = Instant::now();
    for i in 1..=BODY_PIECES {
        tokio::time::sleep_until((sent + d.body * i / BODY_PIECES).into()).await;
        let _ = s.write_all(piece.as_bytes()).await;
        let _ = s.flush().await;
    }
    let _ = s.shutdown().await;
}
