//! The `check` subcommand as a user runs it: the binary, a loopback target, its output and
//! exit status; and `--json` against the row `run` stores for the same target.

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::Value;

/// Runs `uptimeo-agent check ARGS...` to its end (with `SSL_CERT_FILE` when given), and
/// returns its exit code and standard output.
async fn run_check(args: &[&str], ca_file: Option<String>) -> (i32, String) {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let output = tokio::task::spawn_blocking(move || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_uptimeo-agent"));
        command.arg("check").args(&args).env_clear();
        if let Some(file) = ca_file {
            command.env("SSL_CERT_FILE", file);
        }
        command.output().expect("run check")
    })
    .await
    .expect("join");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.is_empty() || output.status.code() == Some(2),
        "{stderr}"
    );
    (output.status.code().expect("exit code"), stdout)
}

/// A healthy target: every phase line, the status, UP, exit 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_prints_a_waterfall_and_exits_zero() {
    let server = TestServer::http().await;
    let (code, out) = run_check(&[&server.url("http", "localhost", "/")], None).await;
    assert_eq!(code, 0, "{out}");
    for line in [
        "DNS lookup",
        "TCP connect",
        "server wait",
        "transfer",
        "total",
    ] {
        assert!(out.contains(line), "{line} missing:\n{out}");
    }
    let connect = out.lines().find(|l| l.contains("TCP connect")).unwrap();
    assert!(
        connect.contains(" ms") && connect.contains('#'),
        "{connect}"
    );
    assert!(out.contains("HTTP 200"), "{out}");
    assert_eq!(out.lines().last(), Some("UP"));
    assert_eq!(server.hits(), 1);
}

/// A refused port: the error is printed and the exit status is 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_check_exits_non_zero() {
    let url = format!("http://127.0.0.1:{}/", refused_port());
    let (code, out) = run_check(&[&url, "--timeout", "2"], None).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("DOWN (connect)"), "{out}");
}

/// An invalid URL or option is a usage error (exit 2), not a failed check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_url_is_a_usage_error() {
    let (code, out) = run_check(&["ftp://127.0.0.1/"], None).await;
    assert_eq!((code, out.as_str()), (2, ""));
    // So is a redirect limit beyond what a monitor row may hold.
    let (code, out) = run_check(&["http://127.0.0.1:1/", "--max-redirects", "51"], None).await;
    assert_eq!((code, out.as_str()), (2, ""));
}

/// An untrusted certificate fails; `--insecure` accepts it and still shows the certificate;
/// trusted through SSL_CERT_FILE it passes without `--insecure`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insecure_skips_verification_and_still_reports_the_certificate() {
    let pki = TestPki::new();
    let server = TestServer::https(&pki).await;
    let url = server.url("https", "localhost", "/");
    let (code, out) = run_check(&[&url], None).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("DOWN (tls)"), "{out}");

    let (code, out) = run_check(&[&url, "--insecure"], None).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("days left"), "{out}");
    assert!(
        out.contains("TLS handshake") && out.contains("over HTTP/2, TLSv1.3"),
        "{out}"
    );

    let ca = pki.ca_file.path().display().to_string();
    let (code, out) = run_check(&[&url], Some(ca)).await;
    assert_eq!(code, 0, "{out}");
}

/// `--json` prints the row `run` stores for the same target: the same columns, and the same
/// values where they do not depend on timing or on the agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_is_the_row_run_stores() {
    let db = TestDb::migrated();
    let server = TestServer::http().await;
    let url = server.url("http", "127.0.0.1", "/json");
    db.execute(BASE_CONFIG);
    db.execute(&monitor_sql(1, "same", "HTTP", &url));
    let agent = AgentProcess::run(&db.url, 1, &[]);
    let client = db.client().await;
    let stored: Value = wait_for(Duration::from_secs(20), "a heartbeat", || async {
        client
            .query_opt("SELECT to_jsonb(h) FROM api_heartbeats h LIMIT 1", &[])
            .await
            .expect("query")
            .map(|row| row.get(0))
    })
    .await;
    drop(agent);

    let (code, out) = run_check(
        &[&url, "--json", "-H", "X-Test: yes", "--include-body"],
        None,
    )
    .await;
    assert_eq!(code, 0, "{out}");
    let printed: Value = serde_json::from_str(out.trim()).expect("one JSON line");

    let keys = |v: &Value| {
        v.as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect::<BTreeSet<_>>()
    };
    let mut stored_keys = keys(&stored);
    stored_keys.remove("id");
    assert_eq!(keys(&printed), stored_keys);
    assert_eq!(keys(&printed["details"]), keys(&stored["details"]));

    for column in [
        "success",
        "status",
        "response_status_code",
        "response_size_bytes",
        "response_content_type",
        "response_server",
        "response_cache_status",
        "error_type",
        "raw_request_headers",
        "raw_response_body",
        "dns_lookup_ms",
        "tls_handshake_ms",
    ] {
        assert_eq!(printed[column], stored[column], "{column}");
    }
    for detail in [
        "http_version",
        "remote_addr",
        "final_url",
        "redirects",
        "body_truncated",
    ] {
        assert_eq!(
            printed["details"][detail], stored["details"][detail],
            "{detail}"
        );
    }
    for unknown in ["monitor_id", "agent_id", "lease_epoch", "scheduled_at"] {
        assert!(printed[unknown].is_null(), "{unknown}");
    }
}

/// The expectation flags: a 404 expected is UP; a body that lacks the text is an assertion
/// failure (exit 1, the reason printed); an invalid pattern is invalid input (exit 2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_applies_expectations() {
    let server = TestServer::http().await;
    let missing = server.url("http", "127.0.0.1", "/status/404");
    let (code, out) = run_check(&[&missing, "--expect-status", "404,500-599"], None).await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.lines().last(), Some("UP"));

    let home = server.url("http", "127.0.0.1", "/");
    let (code, out) = run_check(&[&home, "--body-match", "maintenance", "--json"], None).await;
    assert_eq!(code, 1, "{out}");
    let row: Value = serde_json::from_str(out.trim()).expect("one JSON row");
    assert_eq!(row["error_type"], "assertion");
    assert_eq!(
        row["error_message"],
        "the body does not contain `maintenance`"
    );

    let (code, _) = run_check(
        &[&home, "--body-match", "(", "--body-match-mode", "regex"],
        None,
    )
    .await;
    assert_eq!(code, 2);
    let (code, _) = run_check(&[&home, "--expect-status", "2xx"], None).await;
    assert_eq!(code, 2);
}
