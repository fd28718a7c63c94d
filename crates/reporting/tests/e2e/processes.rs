//! Scenarios with real processes: the aggregator killed with SIGKILL at random moments, and aggregator
//! replicas added and removed mid-import. The expected rollups come from the CSV (the oracle), which is what
//! an undisturbed run produces.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reporting::app::Roles;
use reporting::config::Config;

use crate::oracle::{self, Level};
use crate::system::{self, on_both_backends, Backend, System};

/// A small deterministic generator for kill moments; the seed is printed so a failure can be replayed.
struct Moments(u64);

impl Moments {
    fn new() -> Moments {
        let seed = std::env::var("REPORTING_E2E_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            });
        eprintln!("kill moments seed: REPORTING_E2E_SEED={seed}");
        Moments(seed | 1)
    }

    /// A pause between `lo` and `hi` milliseconds.
    fn next(&mut self, lo: u64, hi: u64) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        Duration::from_millis(lo + self.0 % (hi - lo))
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// The environment that gives a child process `config`'s bus, store and addresses.
fn child_env(config: &Config) -> Vec<(String, String)> {
    let mut env = vec![
        (
            "REPORTING__DATA_DIR".to_string(),
            config.data_dir.display().to_string(),
        ),
        ("REPORTING__LOG__LEVEL".into(), "warn".into()),
        ("REPORTING__LOG__FORMAT".into(), "json".into()),
        ("REPORTING__BUS__TOPIC".into(), config.bus.topic.clone()),
        ("REPORTING__BUS__GROUP".into(), config.bus.group.clone()),
        (
            "REPORTING__BUS__PARTITIONS".into(),
            config.bus.partitions.to_string(),
        ),
        ("REPORTING__AGGREGATOR__BATCH_LINGER_MS".into(), "50".into()),
        (
            "REPORTING__AGGREGATOR__BATCH_MAX_RECORDS".into(),
            "20".into(),
        ),
        (
            // Port 0: replicas running side by side each get their own admin port.
            "REPORTING__ADMIN__LISTEN".into(),
            "127.0.0.1:0".into(),
        ),
        (
            "REPORTING__INGEST__LISTEN".into(),
            config.ingest.listen.clone(),
        ),
        ("REPORTING__API__LISTEN".into(), config.api.listen.clone()),
    ];
    if let Some(b) = &config.bus.brokers {
        env.push(("REPORTING__BUS__BROKERS".into(), b.clone()));
    }
    if let Some(u) = &config.store.postgres_url {
        env.push(("REPORTING__STORE__POSTGRES_URL".into(), u.clone()));
    }
    env
}

fn spawn(role: &str, env: &[(String, String)]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_reporting"))
        .arg(role)
        .envs(env.iter().cloned())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("starting `reporting {role}`: {e}"))
}

/// Fails the test when a child exited on its own: it was meant to be doing work until now.
fn assert_running(child: &mut Child) {
    if let Ok(Some(status)) = child.try_wait() {
        panic!("a reporting process exited on its own with {status} before the test stopped it");
    }
}

fn kill(child: &mut Child) {
    assert_running(child);
    let _already_dead = child.kill(); // SIGKILL
    let _status = child.wait();
}

fn terminate(child: &mut Child) {
    assert_running(child);
    let _sent = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let status = child.wait().expect("wait");
    assert!(
        status.success(),
        "graceful shutdown on SIGTERM exits 0, got {status}"
    );
}

/// Where the aggregator runs: embedded, it is the `reporting up` process (killing it kills ingest too, and
/// the importer retries what was not acknowledged); with Kafka, ingest and API run in this process and the
/// aggregator is a `reporting aggregator` child.
struct Cluster {
    ingest_url: String,
    api_url: String,
    env: Vec<(String, String)>,
    role: &'static str,
    in_process: Option<System>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    async fn start(backend: Backend) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = system::config_for(backend, &dir.path().join("data")).await;
        match backend {
            Backend::Embedded => {
                config.ingest.listen = format!("127.0.0.1:{}", free_port());
                config.api.listen = format!("127.0.0.1:{}", free_port());
                Cluster {
                    ingest_url: format!("http://{}", config.ingest.listen),
                    api_url: format!("http://{}", config.api.listen),
                    env: child_env(&config),
                    role: "up",
                    in_process: None,
                    _dir: dir,
                }
            }
            Backend::KafkaPostgres => {
                let roles = Roles {
                    ingest: true,
                    aggregator: false,
                    api: true,
                    prepare: true,
                };
                let system = System::start_with(config.clone(), roles, None).await;
                Cluster {
                    ingest_url: system.ingest_url.clone(),
                    api_url: system.api_url.clone(),
                    env: child_env(&config),
                    role: "aggregator",
                    in_process: Some(system),
                    _dir: dir,
                }
            }
        }
    }

    fn start_aggregator(&self) -> Child {
        spawn(self.role, &self.env)
    }

    async fn wait_ready(&self) {
        reporting_testkit::wait_until(
            "the ingest API to answer",
            Duration::from_secs(60),
            || async {
                reqwest::get(format!("{}/v1/readings", self.ingest_url))
                    .await
                    .ok()
                    .map(|_| ())
            },
        )
        .await;
    }
}

async fn compare_with_csv(api_url: &str, files: &[PathBuf]) {
    let days = oracle::expected_rollups(files, Level::Day);
    let hours = oracle::expected_rollups(files, Level::Hour);
    let total = system::total_count(&days);
    reporting_testkit::wait_while_progressing(
        "the rollups to count every reading",
        system::STALL,
        || {
            let days = days.clone();
            async move {
                let counted = system::api_total_count(api_url, &days).await;
                (
                    Some(total.saturating_sub(counted)),
                    format!("{counted} of {total} readings counted"),
                )
            }
        },
    )
    .await;
    let mut problems = system::api_mismatches(api_url, &days, Level::Day).await;
    problems.extend(system::api_mismatches(api_url, &hours, Level::Hour).await);
    assert!(
        problems.is_empty(),
        "{} mismatches, first: {:#?}",
        problems.len(),
        &problems[..problems.len().min(10)]
    );
}

fn excerpt(dir: &Path) -> Vec<PathBuf> {
    // One year of one station: 8,760 rows, about 95,000 readings.
    vec![system::station_excerpt(dir, 8760)]
}

async fn aggregator_killed_at_random_moments_ends_with_exactly_the_csv_rollups(backend: Backend) {
    let cluster = Cluster::start(backend).await;
    let files = excerpt(cluster._dir.path());
    let mut moments = Moments::new();
    let mut child = cluster.start_aggregator();
    cluster.wait_ready().await;
    let ingest_url = cluster.ingest_url.clone();
    let import_files = files.clone();
    // Small batches make many records, so kills land between, inside and after batches.
    let import = tokio::spawn(async move { system::import(&ingest_url, &import_files, 500).await });
    for _ in 0..4 {
        tokio::time::sleep(moments.next(300, 2500)).await;
        kill(&mut child);
        child = cluster.start_aggregator();
    }
    let summary = import.await.expect("import task");
    assert_eq!(summary.rejected(), 0);
    compare_with_csv(&cluster.api_url, &files).await;
    terminate(&mut child);
    if let Some(system) = cluster.in_process {
        system.stop().await;
    }
}
on_both_backends!(aggregator_killed_at_random_moments_ends_with_exactly_the_csv_rollups);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn aggregator_replicas_added_and_removed_mid_import_count_everything_once() {
    let cluster = Cluster::start(Backend::KafkaPostgres).await;
    let files = excerpt(cluster._dir.path());
    let mut moments = Moments::new();
    let mut first = cluster.start_aggregator();
    cluster.wait_ready().await;
    let ingest_url = cluster.ingest_url.clone();
    let import_files = files.clone();
    let import = tokio::spawn(async move { system::import(&ingest_url, &import_files, 500).await });
    tokio::time::sleep(moments.next(500, 1500)).await;
    let mut second = cluster.start_aggregator();
    tokio::time::sleep(moments.next(2000, 4000)).await;
    terminate(&mut first);
    let mut third = cluster.start_aggregator();
    tokio::time::sleep(moments.next(1000, 3000)).await;
    kill(&mut second);
    let summary = import.await.expect("import task");
    assert_eq!(summary.rejected(), 0);
    compare_with_csv(&cluster.api_url, &files).await;
    terminate(&mut third);
    if let Some(system) = cluster.in_process {
        system.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_logs_are_flat_json_lines_that_graylog_keeps_intact() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ingest = format!("127.0.0.1:{}", free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_reporting"))
        .arg("up")
        .env("REPORTING__DATA_DIR", dir.path())
        .env("REPORTING__LOG__FORMAT", "json")
        .env("REPORTING__INGEST__LISTEN", &ingest)
        .env("REPORTING__API__LISTEN", "127.0.0.1:0")
        .env("REPORTING__ADMIN__LISTEN", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start reporting up");
    let pid = child.id();
    // A rejected request makes the ingest log an info line with extra fields.
    reporting_testkit::wait_until("ingest to answer", Duration::from_secs(60), || async {
        reqwest::Client::new()
            .post(format!("http://{ingest}/v1/readings"))
            .header("content-type", "text/plain")
            .body("x")
            .send()
            .await
            .ok()
            .map(|_| ())
    })
    .await;
    let _sent = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
    let output = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .expect("join")
        .expect("wait");
    assert!(
        output.status.success(),
        "SIGTERM exits 0: {}",
        output.status
    );
    let stdout = String::from_utf8(output.stdout).expect("UTF-8 logs");
    let lines: Vec<&str> = stdout.lines().filter(|l| l.starts_with('{')).collect();
    assert!(
        lines.len() >= 5,
        "expected start-up, request and shutdown lines, got: {stdout}"
    );
    for line in &lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        let obj = v.as_object().expect("object");
        assert!(
            obj["message"].as_str().is_some_and(|m| !m.is_empty()),
            "message: {line}"
        );
        assert!(
            obj["level"].as_u64().is_some_and(|l| l <= 7),
            "numeric syslog level: {line}"
        );
        assert!(
            obj["timestamp"].as_f64().is_some_and(|t| t > 1.6e9),
            "epoch seconds: {line}"
        );
        assert_eq!(obj["role"], "up", "{line}");
        assert!(!obj.contains_key("id"), "GELF drops `id`: {line}");
        assert!(
            obj.values().all(|x| !x.is_object() && !x.is_array()),
            "flat: {line}"
        );
    }
    let refused = lines
        .iter()
        .find(|l| l.contains("request refused"))
        .expect("a line for the refused request");
    let v: serde_json::Value = serde_json::from_str(refused).expect("json");
    assert_eq!(
        (
            v["reason"].as_str(),
            v["status"].as_u64(),
            v["level"].as_u64()
        ),
        (Some("unsupported_media_type"), Some(415), Some(6))
    );
    assert!(lines.iter().any(|l| l.contains("shutting down")));
}
