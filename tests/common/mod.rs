//! Fixtures shared by the integration tests: one helper per kind of fixture.
//!
//! - [`TestDb`]: a fresh database per test on the server of `TEST_DATABASE_URL`, dropped after.
//! - [`TestPki`]: a CA and a `localhost`/`127.0.0.1` certificate it signed, made per test.
//! - [`TestServer`]: an HTTP or HTTPS server on loopback that counts its requests.
//! - [`AgentProcess`]: the built binary as a child process, its JSON log lines collected.
#![allow(dead_code)]

mod dns;
use dns::{dns_answer, truncated_answer};

use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;

/// The server tests create their databases on.
pub fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

/// Runs `work` to completion on a runtime of its own, on a thread of its own, so that it can
/// be called from any test (sync, tokio or actix) and from `Drop`.
pub fn block_on_own_runtime<T: Send + 'static>(
    work: impl std::future::Future<Output = T> + Send + 'static,
) -> T {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(work)
    })
    .join()
    .expect("helper thread")
}

/// Opens a plain tokio-postgres client (the test's own view of the database).
pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// A database of its own for one test; dropped (with its connections) when the test ends.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    /// An empty database.
    pub fn empty() -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "uptimeo_test_{}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst),
            chrono::Utc::now().timestamp_micros() % 1_000_000
        );
        let admin = admin_url();
        let create = format!("CREATE DATABASE {name}");
        block_on_own_runtime(async move {
            connect(&admin)
                .await
                .batch_execute(&create)
                .await
                .expect("create database");
        });
        let url = with_dbname(&admin_url(), &name);
        Self { name, url }
    }

    /// A database with the agent's migrations applied.
    pub fn migrated() -> Self {
        let db = Self::empty();
        let target = uptimeo_agent::db::DbTarget::parse(&db.url).expect("url");
        block_on_own_runtime(async move {
            uptimeo_agent::db::migrations::run_pending(&target)
                .await
                .expect("migrate");
        });
        db
    }

    /// A client on this database.
    pub async fn client(&self) -> tokio_postgres::Client {
        connect(&self.url).await
    }

    /// Runs SQL on its own runtime (for sync tests).
    pub fn execute(&self, sql: &str) {
        let (url, sql) = (self.url.clone(), sql.to_string());
        block_on_own_runtime(async move {
            connect(&url).await.batch_execute(&sql).await.expect("sql");
        });
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let drop_sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        let admin = admin_url();
        block_on_own_runtime(async move {
            let _ = connect(&admin).await.batch_execute(&drop_sql).await;
        });
    }
}

/// Replaces the database name of a postgres URL.
pub fn with_dbname(url: &str, name: &str) -> String {
    let base = url.split('?').next().unwrap_or(url);
    let (prefix, _) = base.rsplit_once('/').expect("url with a database");
    format!("{prefix}/{name}")
}

/// The configuration every agent test starts from: datacenter 1 (va) with agents 1 and 2,
/// datacenter 2 (ny) with agent 3, and schedule 1 every second (thresholds 200/1000 ms,
/// bodies stored).
pub const BASE_CONFIG: &str = r#"
INSERT INTO regions (id, name, region_code, group_name) VALUES (1, 'North America', 'na', 'am');
INSERT INTO datacenters (id, code, name, region_id) VALUES (1, 'va', 'Virginia', 1),
    (2, 'ny', 'New York', 1);
INSERT INTO agents (id, name, datacenter_id) VALUES (1, 'va-1', 1), (2, 'va-2', 1), (3, 'ny-1', 2);
INSERT INTO schedules (id, name, interval, include_response_body, thresholds_warning,
    thresholds_critical) VALUES (1, 'every second', 1, true, 200, 1000);
"#;

/// SQL adding a monitor linked to datacenter 1.
pub fn monitor_sql(id: i32, name: &str, kind: &str, url: &str) -> String {
    format!(
        "INSERT INTO api_monitors (id, name, method, type, url, schedule_id, headers) \
         VALUES ({id}, '{name}', 'GET', '{kind}', '{url}', 1, '{{\"X-Test\": \"yes\"}}'); \
         INSERT INTO datacenter_monitors (datacenter_id, monitor_id) VALUES (1, {id});"
    )
}

/// Polls `check` until it returns `Some`, or panics with `what` after `limit`.
pub async fn wait_for<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if Instant::now() > deadline {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A test CA and a server certificate for `localhost` and `127.0.0.1` signed by it.
pub struct TestPki {
    pub ca_der: CertificateDer<'static>,
    pub ca_file: tempfile::NamedTempFile,
    pub server_chain: Vec<CertificateDer<'static>>,
    pub server_key_der: Vec<u8>,
}

impl TestPki {
    pub fn new() -> Self {
        Self::with_leaf(&["localhost", "127.0.0.1"], false)
    }

    pub fn server_config(&self) -> rustls::ServerConfig {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.server_key_der.clone()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(self.server_chain.clone(), key)
            .expect("server cert");
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        config
    }
}

/// An HTTP(S) server on 127.0.0.1. `/status/N` answers status N; any other path answers 200
/// with a small JSON body, `Server: uptimeo-test` and `X-Cache: HIT`. It echoes the request's
/// `content-type` and `x-test` headers back as `x-echo-*`.
pub struct TestServer {
    pub addr: SocketAddr,
    pub requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

/// The body the test server answers with.
pub const TEST_BODY: &str = r#"{"ok":true}"#;

impl TestServer {
    pub async fn http() -> Self {
        Self::start(None).await
    }

    pub async fn https(pki: &TestPki) -> Self {
        Self::start(Some(Arc::new(pki.server_config()))).await
    }

    pub fn url(&self, scheme: &str, host: &str, path: &str) -> String {
        format!("{scheme}://{host}:{}{path}", self.addr.port())
    }

    pub fn hits(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    async fn start(tls: Option<Arc<rustls::ServerConfig>>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = requests.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let counter = counter.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        counter.fetch_add(1, Ordering::SeqCst);
                        answer(req)
                    });
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    match tls {
                        Some(config) => {
                            let Ok(stream) =
                                tokio_rustls::TlsAcceptor::from(config).accept(stream).await
                            else {
                                return;
                            };
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                        None => {
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                    }
                });
            }
        });
        Self {
            addr,
            requests,
            task,
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let status = req
        .uri()
        .path()
        .strip_prefix("/status/")
        .and_then(|s| s.parse::<u16>().ok())
        .unwrap_or(200);
    let mut response = Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("server", "uptimeo-test")
        .header("x-cache", "HIT");
    for name in ["content-type", "x-test"] {
        if let Some(v) = req.headers().get(name) {
            response = response.header(format!("x-echo-{name}"), v.clone());
        }
    }
    Ok(response
        .body(Full::new(Bytes::from_static(TEST_BODY.as_bytes())))
        .expect("response"))
}

/// A loopback port nothing listens on (bound, then released).
pub fn refused_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// The agent binary as a child process; its stdout (JSON lines) and stderr are collected.
pub struct AgentProcess {
    pub child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    /// The spool directory made for this process by [`AgentProcess::run`], removed on drop.
    spool: Option<tempfile::TempDir>,
}

impl AgentProcess {
    /// Starts `uptimeo-agent` with `args` and the environment given (nothing inherited
    /// but PATH).
    pub fn start(args: &[&str], env: &[(&str, String)]) -> Self {
        Self::start_in(None, args, env)
    }

    /// As [`AgentProcess::start`], in the working directory `dir` when given.
    pub fn start_in(dir: Option<&std::path::Path>, args: &[&str], env: &[(&str, String)]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_uptimeo-agent"));
        if let Some(dir) = dir {
            command.current_dir(dir);
        }
        command
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("spawn agent");
        let lines = Arc::new(Mutex::new(Vec::new()));
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    lines.lock().expect("lines").push(line);
                }
            });
        }
        Self {
            child,
            lines,
            spool: None,
        }
    }

    /// Starts `run` for datacenter 1 against `db_url` with fast test settings, plus `extra`;
    /// an empty value in `extra` leaves that variable unset (the binary's default).
    /// Unless `extra` names a `SPOOL_DIR`, the process gets a new one of its own.
    pub fn run(db_url: &str, agent_id: i32, extra: &[(&str, String)]) -> Self {
        Self::run_in(None, db_url, agent_id, extra)
    }

    /// As [`AgentProcess::run`], in the working directory `dir` when given.
    pub fn run_in(
        dir: Option<&std::path::Path>,
        db_url: &str,
        agent_id: i32,
        extra: &[(&str, String)],
    ) -> Self {
        let spool = (!extra.iter().any(|(k, _)| *k == "SPOOL_DIR"))
            .then(|| tempfile::tempdir().expect("spool dir"));
        let mut env = vec![
            ("DB_CONN_STRING", db_url.to_string()),
            ("DATACENTER_ID", "1".to_string()),
            ("AGENT_ID", agent_id.to_string()),
            ("HEALTH_PORT", "0".to_string()),
            ("CONFIG_RELOAD_INTERVAL", "1".to_string()),
            ("LEASE_TTL", "3".to_string()),
            ("STANDBY_RETRY_INTERVAL", "0.5".to_string()),
            ("LOG_LEVEL", "debug".to_string()),
        ];
        if let Some(dir) = &spool {
            env.push(("SPOOL_DIR", dir.path().display().to_string()));
        }
        for (k, v) in extra {
            env.retain(|(key, _)| key != k);
            if !v.is_empty() {
                env.push((k, v.clone()));
            }
        }
        let mut process = Self::start_in(dir, &["run"], &env);
        process.spool = spool;
        process
    }

    /// Every line so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().expect("lines").clone()
    }

    /// The JSON log records so far (non-JSON lines are skipped).
    pub fn records(&self) -> Vec<serde_json::Value> {
        self.lines()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Records whose `msg` is `msg`.
    pub fn records_with(&self, msg: &str) -> Vec<serde_json::Value> {
        self.records()
            .into_iter()
            .filter(|r| r["msg"] == msg)
            .collect()
    }

    /// Waits until a record with `msg` appears, and returns it.
    pub async fn wait_for_msg(&self, msg: &str, limit: Duration) -> serde_json::Value {
        wait_for(limit, msg, || {
            let found = self.records_with(msg).into_iter().next();
            async move { found }
        })
        .await
    }

    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits for the process to exit, at most `limit`.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// Faults: a TCP proxy in front of PostgreSQL that the test can cut.

/// The `host:port` of a postgres URL.
pub fn url_host_port(url: &str) -> String {
    let after_at = url.rsplit_once('@').map_or(url, |(_, rest)| rest);
    let after_at = after_at.trim_start_matches("postgres://");
    after_at.split('/').next().unwrap_or(after_at).to_string()
}

/// The same URL through another `host:port`.
pub fn url_via(url: &str, host_port: &str) -> String {
    url.replacen(&url_host_port(url), host_port, 1)
}

/// A loopback TCP proxy. While cut, it closes every open connection and closes new ones as
/// soon as they are accepted, as a server that went away would. While blackholed, it keeps
/// every connection open but forwards nothing (no FIN, no RST), as a network that silently
/// drops packets would; what it holds is forwarded once restored.
pub struct TcpProxy {
    pub addr: SocketAddr,
    cut: Arc<std::sync::atomic::AtomicBool>,
    blackhole: Arc<std::sync::atomic::AtomicBool>,
    connections: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    /// A proxy to `target` (`host:port`), forwarding until cut.
    pub async fn start(target: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let cut = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let blackhole = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let connections = Arc::new(Mutex::new(Vec::new()));
        let (is_cut, open, held) = (cut.clone(), connections.clone(), blackhole.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    continue;
                };
                if is_cut.load(Ordering::SeqCst) {
                    continue; // dropped: closed at once
                }
                let (target, held) = (target.clone(), held.clone());
                let forward = tokio::spawn(async move {
                    if let Ok(outbound) = tokio::net::TcpStream::connect(&target).await {
                        let (from_client, to_client) = inbound.into_split();
                        let (from_server, to_server) = outbound.into_split();
                        tokio::join!(
                            pump(from_client, to_server, held.clone()),
                            pump(from_server, to_client, held)
                        );
                    }
                });
                open.lock().expect("connections").push(forward);
            }
        });
        Self {
            addr,
            cut,
            blackhole,
            connections,
            task,
        }
    }

    /// Stops forwarding, silently, until [`TcpProxy::restore`].
    pub fn blackhole(&self) {
        self.blackhole.store(true, Ordering::SeqCst);
    }

    /// `url` (a postgres URL) through this proxy.
    pub fn url(&self, url: &str) -> String {
        url_via(url, &self.addr.to_string())
    }

    /// Closes every connection and refuses new ones until [`TcpProxy::restore`].
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for connection in self.connections.lock().expect("connections").drain(..) {
            connection.abort();
        }
    }

    /// Forwards again (new connections after a cut; held data after a blackhole).
    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
        self.blackhole.store(false, Ordering::SeqCst);
    }
}

/// Copies one direction of a proxied connection, holding the data while `held` is set.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    held: Arc<std::sync::atomic::AtomicBool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        while held.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.cut();
        self.task.abort();
    }
}

// ---------------------------------------------------------------------------------------------
// Throwaway PostgreSQL clusters, for tests that need a server of their own (TLS, restarts).

/// A PostgreSQL cluster of its own on a free port of 127.0.0.1 and 127.0.0.2, in a temporary
/// directory; stopped (immediately) and removed when dropped. Run as user `postgres` when the
/// tests run as root.
pub struct PgCluster {
    pub port: u16,
    dir: tempfile::TempDir,
    ssl: bool,
}

impl PgCluster {
    /// A cluster without TLS, trusting every local connection.
    pub fn start_plain() -> Self {
        let (dir, data) = Self::init();
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhost all all 127.0.0.0/8 trust\n",
        )
        .expect("pg_hba.conf");
        Self::start_in(dir, false)
    }

    /// A cluster with TLS on, serving `pki`'s certificate, that refuses TCP connections
    /// without TLS.
    pub fn start_tls(pki: &TestPki) -> Self {
        let (dir, data) = Self::init();

        let chain: String = pki
            .server_chain
            .iter()
            .map(|c| pem("CERTIFICATE", c))
            .collect();
        std::fs::write(data.join("server.crt"), chain).expect("server.crt");
        std::fs::write(
            data.join("server.key"),
            pem("PRIVATE KEY", &pki.server_key_der),
        )
        .expect("server.key");
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\n\
             hostssl all all 127.0.0.0/8 trust\n\
             hostnossl all all 127.0.0.0/8 reject\n",
        )
        .expect("pg_hba.conf");
        own_by_postgres(dir.path());
        Command::new("chmod")
            .args(["600", path_str(&data.join("server.key"))])
            .status()
            .expect("chmod");
        Self::start_in(dir, true)
    }

    fn init() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().expect("cluster dir");
        let data = dir.path().join("data");
        pg_command(
            "initdb",
            &["-D", path_str(&data), "-U", "postgres", "-A", "trust"],
            &dir,
        );
        (dir, data)
    }

    fn start_in(dir: tempfile::TempDir, ssl: bool) -> Self {
        let cluster = Self {
            port: refused_port(),
            dir,
            ssl,
        };
        cluster.start();
        cluster
    }

    /// Starts the server (again) and waits until it accepts connections.
    pub fn start(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1,127.0.0.2 -c ssl={} -c max_connections=40",
            self.port,
            path_str(self.dir.path()),
            if self.ssl { "on" } else { "off" }
        );
        let data = self.dir.path().join("data");
        let log = self.dir.path().join("server.log");
        pg_command(
            "pg_ctl",
            &[
                "-D",
                path_str(&data),
                "-o",
                &options,
                "-l",
                path_str(&log),
                "-w",
                "start",
            ],
            &self.dir,
        );
    }

    /// Stops the server at once (no shutdown checkpoint, connections cut).
    pub fn stop(&self) {
        let data = self.dir.path().join("data");
        pg_command(
            "pg_ctl",
            &["-D", path_str(&data), "-m", "immediate", "-w", "stop"],
            &self.dir,
        );
    }

    /// A URL to database `postgres` through `host`, with `params` as its query string.
    pub fn url(&self, host: &str, params: &str) -> String {
        format!("postgres://postgres@{host}:{}/postgres?{params}", self.port)
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let _ = pg_status(
            "pg_ctl",
            &["-D", path_str(&data), "-m", "immediate", "stop"],
        );
    }
}

fn path_str(path: &std::path::Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// The newest installed PostgreSQL's `bin` directory.
fn pg_bin() -> std::path::PathBuf {
    let mut versions: Vec<u32> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL installed under /usr/lib/postgresql")
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|v| v.parse().ok()))
        .collect();
    versions.sort_unstable();
    let newest = versions.last().expect("a PostgreSQL version");
    std::path::PathBuf::from(format!("/usr/lib/postgresql/{newest}/bin"))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

fn pg_status(tool: &str, args: &[&str]) -> std::io::Result<ExitStatus> {
    let program = pg_bin().join(tool);
    let mut command = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    command
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
}

fn pg_command(tool: &str, args: &[&str], dir: &tempfile::TempDir) {
    own_by_postgres(dir.path());
    let status = pg_status(tool, args).expect(tool);
    assert!(status.success(), "{tool} {args:?} failed: {status:?}");
}

fn own_by_postgres(path: &std::path::Path) {
    if is_root() {
        let status = Command::new("chown")
            .args(["-R", "postgres", path_str(path)])
            .status()
            .expect("chown");
        assert!(status.success());
    }
}

/// PEM armour of DER bytes.
pub fn pem(label: &str, der: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut encoded = String::new();
    for chunk in der.chunks(3) {
        let bytes = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(bytes[0]) << 16) | (u32::from(bytes[1]) << 8) | u32::from(bytes[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                encoded.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                encoded.push('=');
            }
        }
    }
    let lines: Vec<&str> = encoded
        .as_bytes()
        .chunks(64)
        .map(|l| std::str::from_utf8(l).expect("ascii"))
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

/// The first column of every row `sql` returns, on the database of `url`.
pub async fn first_column<T>(url: &str, sql: &str) -> Vec<T>
where
    T: for<'a> tokio_postgres::types::FromSql<'a>,
{
    connect(url)
        .await
        .query(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// SQL for `BASE_CONFIG` plus monitors `1..=count` of datacenter 1, each checking its own
/// path (`/m<id>`) of `server`.
pub fn config_with_monitors(server: &TestServer, count: i32) -> String {
    let mut sql = BASE_CONFIG.to_string();
    for id in 1..=count {
        let url = server.url("http", "127.0.0.1", &format!("/m{id}"));
        sql.push_str(&monitor_sql(id, &format!("m{id}"), "HTTP", &url));
    }
    sql
}

/// `extra` settings for [`AgentProcess::run`] that leave the lease timing at the binary's
/// defaults (`LEASE_TTL`, `STANDBY_RETRY_INTERVAL`).
pub fn default_lease_timing() -> Vec<(&'static str, String)> {
    vec![
        ("LEASE_TTL", String::new()),
        ("STANDBY_RETRY_INTERVAL", String::new()),
    ]
}

/// Checks the agent logged as executed (succeeded or failed).
pub fn executed_checks(agent: &AgentProcess) -> usize {
    agent.records_with("check finished").len()
        + agent.records_with("Monitor execution failed").len()
}

/// SIGTERM, then waits (at most 10 s) for the exit.
pub async fn terminate(agent: &mut AgentProcess) -> ExitStatus {
    agent.signal("TERM");
    agent
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("exits within 10 s of SIGTERM")
}

// ---------------------------------------------------------------------------------------------
// Probe fixtures: certificates of any name and validity, scripted raw TCP servers, and the
// monitor spec and probe the in-process probe tests run.
// ---------------------------------------------------------------------------------------------

impl TestPki {
    /// A CA and a leaf for `names` (DNS names or IP addresses) signed by it; the leaf expired
    /// on 2021-01-01 when `expired`, else valid until rcgen's far-future default.
    pub fn with_leaf(names: &[&str], expired: bool) -> Self {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().expect("ca key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "uptimeo test CA");
        let ca_cert = ca_params.self_signed(&ca_key).expect("ca cert");
        let issuer = Issuer::new(ca_params, ca_key);

        let leaf_key = KeyPair::generate().expect("leaf key");
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut leaf_params = CertificateParams::new(names).expect("leaf params");
        if expired {
            leaf_params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            leaf_params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let leaf = leaf_params
            .signed_by(&leaf_key, &issuer)
            .expect("leaf cert");

        Self::from_parts(&ca_cert, &leaf, &leaf_key)
    }

    /// Trusts `ca` (also written to a PEM file) and serves `leaf` with `key`.
    fn from_parts(
        ca: &rcgen::Certificate,
        leaf: &rcgen::Certificate,
        key: &rcgen::KeyPair,
    ) -> Self {
        let ca_file = tempfile::NamedTempFile::new().expect("ca file");
        std::fs::write(ca_file.path(), ca.pem()).expect("write ca");
        Self {
            ca_der: ca.der().clone(),
            ca_file,
            server_chain: vec![leaf.der().clone()],
            server_key_der: key.serialize_der(),
        }
    }

    /// A self-signed CA certificate for `names` served as the server's own (what
    /// `openssl req -x509` makes by default), and trusted as a root.
    pub fn ca_as_leaf(names: &[&str]) -> Self {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
        let key = KeyPair::generate().expect("key");
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).expect("cert");
        Self::from_parts(&cert, &cert, &key)
    }
}

/// A raw TCP server on 127.0.0.1 that runs a script on each connection it accepts, and counts
/// them. For targets that misbehave below HTTP: silence, banners, endless headers.
pub struct ScriptedServer {
    pub addr: SocketAddr,
    pub connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl ScriptedServer {
    /// Starts the server; `script` gets each accepted connection and its index (0, 1, ...).
    pub async fn start<F, Fut>(script: F) -> Self
    where
        F: Fn(tokio::net::TcpStream, usize) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = connections.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let index = counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(script(stream, index));
            }
        });
        Self {
            addr,
            connections,
            task,
        }
    }

    /// Starts a server that reads each request head, then writes `bytes` and closes.
    pub async fn answering(bytes: &'static [u8]) -> Self {
        Self::start(move |mut stream, _| async move {
            use tokio::io::AsyncWriteExt;
            if read_request_head(&mut stream).await.is_some() {
                let _ = stream.write_all(bytes).await;
                let _ = stream.shutdown().await;
            }
        })
        .await
    }

    /// Starts a server that keeps each request head (in order of arrival, in the list
    /// returned) and answers it with the bytes `answer` gives for it, then closes.
    pub async fn recording(answer: fn(&str) -> &'static [u8]) -> (Self, Arc<Mutex<Vec<String>>>) {
        let heads = Arc::new(Mutex::new(Vec::new()));
        let seen = heads.clone();
        let server = Self::start(move |mut stream, _| {
            let seen = seen.clone();
            async move {
                use tokio::io::AsyncWriteExt;
                let Some(head) = read_request_head(&mut stream).await else {
                    return;
                };
                let bytes = answer(&head);
                seen.lock().expect("heads").push(head);
                let _ = stream.write_all(bytes).await;
                let _ = stream.shutdown().await;
            }
        })
        .await;
        (server, heads)
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.addr.port())
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for ScriptedServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads a request head up to its blank line; `None` if the peer closed first. Returns the
/// head as text.
pub async fn read_request_head(stream: &mut tokio::net::TcpStream) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        head.extend_from_slice(&buf[..n]);
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// A GET monitor of `url` with one header, a 10 s schedule that stores bodies, and `timeout`.
pub fn probe_spec(url: &str, timeout: Duration) -> uptimeo_agent::monitor::MonitorSpec {
    uptimeo_agent::monitor::MonitorSpec {
        id: 1,
        name: "probe test".into(),
        kind: "HTTP".into(),
        method: http::Method::GET,
        url: url.into(),
        headers: vec![("X-Test".into(), "yes".into())],
        body: None,
        schedule: uptimeo_agent::monitor::Schedule {
            id: 1,
            interval: Duration::from_secs(10),
            include_response_body: true,
            warning_ms: Some(500),
            critical_ms: Some(2000),
        },
        timeout,
        http: uptimeo_agent::monitor::HttpOptions::default(),
        ip_family: Default::default(),
        expect: Default::default(),
    }
}

/// An HTTP probe that also trusts the CA of `pki`.
pub fn http_probe(pki: Option<&TestPki>) -> Arc<uptimeo_agent::monitor::http::HttpProbe> {
    let config = uptimeo_agent::monitor::ProbeConfig {
        extra_roots: pki.map(|p| vec![p.ca_der.clone()]).unwrap_or_default(),
        ..Default::default()
    };
    Arc::new(uptimeo_agent::monitor::http::HttpProbe::new(&config).expect("probe"))
}

/// A DNS server on 127.0.0.1, UDP and TCP on one port, that answers A and AAAA queries from a
/// fixed table after a delay, and counts the queries of each transport. Names not in the table
/// get an empty answer.
pub struct TestDns {
    pub addr: SocketAddr,
    /// Queries received over UDP.
    pub queries: Arc<AtomicUsize>,
    /// Queries received over TCP.
    pub tcp_queries: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// How a [`TestDns`] answers over UDP.
#[derive(Clone, Copy, PartialEq)]
enum UdpAnswer {
    /// The answer, after the delay.
    Full,
    /// At once, no records and the truncation bit set, so the client must ask again over TCP
    /// (where the delay applies).
    Truncated,
}

impl TestDns {
    /// Serves `records` (name without trailing dot, address) after `delay`, over UDP and TCP.
    pub async fn start(records: &[(&str, &str)], delay: Duration) -> Self {
        Self::serve(records, delay, UdpAnswer::Full).await
    }

    /// Like [`TestDns::start`], but every UDP answer is truncated: only TCP gives the records.
    pub async fn start_truncating(records: &[(&str, &str)], delay: Duration) -> Self {
        Self::serve(records, delay, UdpAnswer::Truncated).await
    }

    async fn serve(records: &[(&str, &str)], delay: Duration, udp_answer: UdpAnswer) -> Self {
        let (socket, listener) = udp_and_tcp_on_one_port().await;
        let addr = socket.local_addr().expect("addr");
        let table: Arc<Vec<(String, std::net::IpAddr)>> = Arc::new(
            records
                .iter()
                .map(|(name, ip)| (format!("{name}."), ip.parse().expect("ip")))
                .collect(),
        );
        let queries = Arc::new(AtomicUsize::new(0));
        let tcp_queries = Arc::new(AtomicUsize::new(0));
        let udp = tokio::spawn(serve_dns_udp(
            socket,
            table.clone(),
            delay,
            udp_answer,
            queries.clone(),
        ));
        let tcp = tokio::spawn(serve_dns_tcp(listener, table, delay, tcp_queries.clone()));
        Self {
            addr,
            queries,
            tcp_queries,
            tasks: vec![udp, tcp],
        }
    }

    /// A probe that resolves with this server.
    pub fn probe(&self) -> Arc<uptimeo_agent::monitor::http::HttpProbe> {
        let config = uptimeo_agent::monitor::ProbeConfig {
            dns_server: Some(self.addr),
            ..Default::default()
        };
        Arc::new(uptimeo_agent::monitor::http::HttpProbe::new(&config).expect("probe"))
    }
}

impl Drop for TestDns {
    fn drop(&mut self) {
        self.tasks.iter().for_each(|task| task.abort());
    }
}

/// A UDP socket and a TCP listener bound to the same free port of 127.0.0.1.
async fn udp_and_tcp_on_one_port() -> (tokio::net::UdpSocket, TcpListener) {
    for _ in 0..50 {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind dns");
        let addr = socket.local_addr().expect("addr");
        if let Ok(listener) = TcpListener::bind(addr).await {
            return (socket, listener);
        }
    }
    panic!("no port free for both UDP and TCP");
}

/// Answers each UDP query `delay` after it arrived (a truncated answer at once).
async fn serve_dns_udp(
    socket: tokio::net::UdpSocket,
    table: Arc<Vec<(String, std::net::IpAddr)>>,
    delay: Duration,
    udp_answer: UdpAnswer,
    queries: Arc<AtomicUsize>,
) {
    let socket = Arc::new(socket);
    let mut buf = vec![0u8; 4096];
    while let Ok((n, peer)) = socket.recv_from(&mut buf).await {
        let received = Instant::now();
        queries.fetch_add(1, Ordering::SeqCst);
        let (socket, table, packet) = (socket.clone(), table.clone(), buf[..n].to_vec());
        tokio::spawn(async move {
            let answer = if udp_answer == UdpAnswer::Truncated {
                truncated_answer(&packet)
            } else {
                tokio::time::sleep_until((received + delay).into()).await;
                dns_answer(&packet, &table)
            };
            if let Some(answer) = answer {
                let _ = socket.send_to(&answer, peer).await;
            }
        });
    }
}

/// Answers DNS over TCP (each message behind its two-byte length), `delay` after each query;
/// queries pipelined on one connection are answered concurrently, as a real server does.
async fn serve_dns_tcp(
    listener: TcpListener,
    table: Arc<Vec<(String, std::net::IpAddr)>>,
    delay: Duration,
    queries: Arc<AtomicUsize>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    while let Ok((stream, _)) = listener.accept().await {
        let _ = stream.set_nodelay(true);
        let (mut reader, mut writer) = stream.into_split();
        let (answers, mut to_send) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
        tokio::spawn(async move {
            while let Some(framed) = to_send.recv().await {
                if writer.write_all(&framed).await.is_err() {
                    return;
                }
            }
        });
        let (table, queries) = (table.clone(), queries.clone());
        tokio::spawn(async move {
            loop {
                let mut len = [0u8; 2];
                if reader.read_exact(&mut len).await.is_err() {
                    return;
                }
                let mut packet = vec![0u8; u16::from_be_bytes(len) as usize];
                if reader.read_exact(&mut packet).await.is_err() {
                    return;
                }
                let received = Instant::now();
                queries.fetch_add(1, Ordering::SeqCst);
                let (table, answers) = (table.clone(), answers.clone());
                tokio::spawn(async move {
                    tokio::time::sleep_until((received + delay).into()).await;
                    if let Some(answer) = dns_answer(&packet, &table) {
                        let mut framed = (answer.len() as u16).to_be_bytes().to_vec();
                        framed.extend_from_slice(&answer);
                        let _ = answers.send(framed);
                    }
                });
            }
        });
    }
}
