//! TLS to PostgreSQL: each `sslmode` against a throwaway cluster with TLS on, a certificate
//! for `localhost` and `127.0.0.1` signed by a test CA, and TCP without TLS refused.

mod common;

use std::time::Duration;

use common::*;
use diesel::sql_types::Bool;
use diesel::QueryableByName;
use diesel_async::RunQueryDsl;
use uptimeo_agent::db::DbTarget;

#[derive(QueryableByName)]
struct Ssl {
    #[diesel(sql_type = Bool)]
    ssl: bool,
}

/// Connects with `conn_string`; `Ok(true)` when the session is encrypted.
async fn connect(conn_string: &str) -> Result<bool, String> {
    let target = DbTarget::parse(conn_string).map_err(|e| e.to_string())?;
    let mut conn = target.connect().await.map_err(|e| e.to_string())?;
    let row: Ssl = diesel::sql_query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .get_result(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    Ok(row.ssl)
}

/// Every sslmode behaves as libpq's: which connect, which are refused and why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_sslmode_connects_or_refuses_as_libpq_would() {
    let pki = TestPki::new();
    let other = TestPki::new();
    let cluster = PgCluster::start_tls(&pki);
    let ca = pki.ca_file.path().display().to_string();
    let wrong_ca = other.ca_file.path().display().to_string();

    let encrypted = [
        ("prefer, no CA", cluster.url("127.0.0.1", "sslmode=prefer")),
        ("default (prefer)", cluster.url("127.0.0.1", "")),
        (
            "require, no CA",
            cluster.url("127.0.0.2", "sslmode=require"),
        ),
        (
            "verify-full by name",
            cluster.url(
                "localhost",
                &format!("sslmode=verify-full&sslrootcert={ca}"),
            ),
        ),
        (
            "verify-ca, name not in the certificate",
            cluster.url("127.0.0.2", &format!("sslmode=verify-ca&sslrootcert={ca}")),
        ),
        (
            "verify-full, key=value form",
            format!(
                "host=localhost port={} user=postgres dbname=postgres sslmode=verify-full \
                 sslrootcert='{ca}'",
                cluster.port
            ),
        ),
    ];
    for (what, url) in &encrypted {
        assert_eq!(connect(url).await, Ok(true), "{what}: {url}");
    }

    let refused = [
        (
            "disable",
            cluster.url("127.0.0.1", "sslmode=disable"),
            "reject",
        ),
        (
            "verify-full, name not in the certificate",
            cluster.url(
                "127.0.0.2",
                &format!("sslmode=verify-full&sslrootcert={ca}"),
            ),
            "certificate",
        ),
        (
            "verify-ca, another CA",
            cluster.url(
                "localhost",
                &format!("sslmode=verify-ca&sslrootcert={wrong_ca}"),
            ),
            "certificate",
        ),
        (
            "require with sslrootcert verifies the chain",
            cluster.url(
                "localhost",
                &format!("sslmode=require&sslrootcert={wrong_ca}"),
            ),
            "certificate",
        ),
        (
            "unreadable sslrootcert",
            cluster.url(
                "localhost",
                "sslmode=verify-ca&sslrootcert=/nonexistent/ca.pem",
            ),
            "sslrootcert",
        ),
    ];
    for (what, url, reason) in &refused {
        let outcome = connect(url).await;
        let error = outcome.expect_err(what);
        assert!(error.contains(reason), "{what}: `{error}` lacks `{reason}`");
    }
}

/// The agent binary itself migrates over verify-full, and a wrong CA gives one clear error
/// line and a failure status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_connects_with_verify_full() {
    let pki = TestPki::new();
    let other = TestPki::new();
    let cluster = PgCluster::start_tls(&pki);
    let with_ca = |ca: &tempfile::NamedTempFile| {
        let params = format!("sslmode=verify-full&sslrootcert={}", ca.path().display());
        vec![("DB_CONN_STRING", cluster.url("localhost", &params))]
    };

    let mut good = AgentProcess::start(&["migrate"], &with_ca(&pki.ca_file));
    let status = good
        .wait_exit(Duration::from_secs(30))
        .await
        .expect("exits");
    assert!(status.success(), "{:?}", good.lines());
    assert!(!good.records_with("migrations applied").is_empty());

    let mut bad = AgentProcess::start(&["migrate"], &with_ca(&other.ca_file));
    let status = bad.wait_exit(Duration::from_secs(30)).await.expect("exits");
    tokio::time::sleep(Duration::from_millis(100)).await; // let the reader threads finish
    assert!(!status.success());
    let lines = bad.lines();
    assert!(lines.iter().any(|l| l.contains("certificate")), "{lines:?}");
}
