//! Starting a system in-process on port 0, and talking to it over HTTP.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reporting::app::{self, Listeners, Resources, Roles};
use reporting::config::Config;
use reporting_store::Store;
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::oracle::{self, Expected, Level};

/// The two backends every scenario runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    /// Embedded log + SQLite.
    Embedded,
    /// Apache Kafka + PostgreSQL.
    KafkaPostgres,
}

/// Runs a scenario `async fn name(backend: Backend)` as `name::on_embedded` and `name::on_kafka_postgres`.
macro_rules! on_both_backends {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn on_embedded() {
                super::$name(crate::system::Backend::Embedded).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn on_kafka_postgres() {
                super::$name(crate::system::Backend::KafkaPostgres).await;
            }
        }
    };
}
pub(crate) use on_both_backends;

/// A configuration of `backend` with its own data dir, or its own topic, group and database.
pub(crate) async fn config_for(backend: Backend, dir: &Path) -> Config {
    let mut c = Config {
        data_dir: dir.to_path_buf(),
        ..Config::default()
    };
    c.log.level = "warn".into();
    c.bus.partitions = 4;
    c.ingest.max_body_bytes = 1 << 20;
    c.aggregator.batch_linger_ms = 50;
    for listen in [&mut c.admin.listen, &mut c.ingest.listen, &mut c.api.listen] {
        *listen = "127.0.0.1:0".into();
    }
    if backend == Backend::KafkaPostgres {
        c.bus.brokers = Some(reporting_testkit::kafka_brokers());
        c.bus.topic = reporting_testkit::unique_name("readings");
        c.bus.group = reporting_testkit::unique_name("aggregator");
        c.store.postgres_url = Some(reporting_testkit::postgres_database().await);
        c.store.pool_size = 4;
    }
    c
}

/// How long a test waits without the aggregator advancing before it calls the aggregator stalled. Waits are
/// not timings: a slow machine makes them longer, only a stall fails them.
pub(crate) const STALL: Duration = Duration::from_secs(120);

/// A running in-process system.
pub(crate) struct System {
    pub(crate) ingest_url: String,
    pub(crate) api_url: String,
    pub(crate) admin_url: String,
    pub(crate) config: Config,
    pub(crate) resources: Resources,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
    _dir: Option<tempfile::TempDir>,
}

impl System {
    /// Every role of `backend` in this process.
    pub(crate) async fn start(backend: Backend) -> System {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = config_for(backend, dir.path()).await;
        let roles = Roles::ALL;
        System::start_with(config, roles, Some(dir)).await
    }

    /// `roles` with `config`.
    pub(crate) async fn start_with(
        config: Config,
        roles: Roles,
        dir: Option<tempfile::TempDir>,
    ) -> System {
        reporting_testkit::init_logs();
        let listeners = Listeners {
            admin: app::bind("admin", &config.admin.listen)
                .await
                .expect("bind admin"),
            ingest: Some(
                app::bind("ingest", &config.ingest.listen)
                    .await
                    .expect("bind ingest"),
            ),
            api: Some(
                app::bind("api", &config.api.listen)
                    .await
                    .expect("bind api"),
            ),
        };
        let url = |l: &Option<tokio::net::TcpListener>| {
            format!(
                "http://{}",
                l.as_ref().expect("listener").local_addr().expect("addr")
            )
        };
        let ingest_url = url(&listeners.ingest);
        let api_url = url(&listeners.api);
        let admin_url = format!("http://{}", listeners.admin.local_addr().expect("addr"));
        let resources = Resources::open(&config, roles)
            .await
            .expect("open bus and store");
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(app::run(
            config.clone(),
            roles,
            resources.clone(),
            listeners,
            shutdown.clone(),
        ));
        System {
            ingest_url,
            api_url,
            admin_url,
            config,
            resources,
            shutdown,
            task,
            _dir: dir,
        }
    }

    /// POSTs `readings` (a JSON array) to ingest; returns status and answer.
    pub(crate) async fn send(&self, readings: &Value) -> (u16, Value) {
        let url = format!("{}/v1/readings", self.ingest_url);
        post(&url, "application/json", readings.to_string().into_bytes()).await
    }

    pub(crate) fn store(&self) -> &dyn Store {
        self.resources.store.as_deref().expect("system has a store")
    }

    /// Waits until the aggregator has applied everything on the bus, failing if it stalls (see [`STALL`]).
    pub(crate) async fn caught_up(&self) {
        let bus = self.resources.bus.clone().expect("system has a bus");
        let store = self.resources.store.clone().expect("system has a store");
        let (group, topic) = (&self.config.bus.group, &self.config.bus.topic);
        let partitions_expected = self.config.bus.partitions as usize;
        reporting_testkit::wait_while_progressing(
            "the aggregator to apply everything on the bus",
            STALL,
            || async {
                let ends = bus.end_offsets().await;
                let partitions: Vec<i32> = ends.iter().flat_map(|e| e.keys().copied()).collect();
                let stored = store.positions(group, topic, &partitions).await;
                // Every partition of the topic must be seen (an empty answer is not "nothing to do"); a
                // stored position past the end would be a bug, and counts as distance, never as done.
                let behind = match (&ends, &stored) {
                    (Ok(ends), Ok(stored)) if ends.len() == partitions_expected => Some(
                        ends.iter()
                            .map(|(p, end)| {
                                (end - stored.get(p).copied().unwrap_or(0)).unsigned_abs()
                            })
                            .sum(),
                    ),
                    _ => None,
                };
                (
                    behind,
                    format!("bus ends {ends:?}, stored positions {stored:?}"),
                )
            },
        )
        .await;
    }

    /// Stops the system and checks it shut down cleanly.
    pub(crate) async fn stop(mut self) {
        self.shutdown.cancel();
        match tokio::time::timeout(Duration::from_secs(60), &mut self.task).await {
            Ok(Ok(Ok(()))) => {}
            other => panic!("system did not stop cleanly: {other:?}"),
        }
    }
}

impl Drop for System {
    /// A test that fails half-way still stops the roles, so the runtime can shut down and the failure shows.
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// GET returning status and JSON body.
pub(crate) async fn get_json(url: &str) -> (u16, Value) {
    let response = reqwest::get(url)
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("GET {url} answered non-JSON ({e}): {text}")),
    )
}

/// GET returning status and text body.
pub(crate) async fn get_text(url: &str) -> (u16, String) {
    let response = reqwest::get(url)
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    (
        response.status().as_u16(),
        response.text().await.expect("body"),
    )
}

/// POST `body` with `content_type`, returning status and JSON body.
pub(crate) async fn post(url: &str, content_type: &str, body: Vec<u8>) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(url)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("POST {url} answered non-JSON ({e}): {text}")),
    )
}

/// The bundled station; or every `.csv.gz` of a directory named by `REPORTING_E2E_STATIONS` (`all` is the ten
/// stations in `../shared/data/beijing-air-quality`, beside the checkout).
pub(crate) fn station_files() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = match std::env::var("REPORTING_E2E_STATIONS") {
        Ok(v) if v == "all" => root.join("../shared/data/beijing-air-quality"),
        Ok(v) if !v.is_empty() => PathBuf::from(v),
        _ => {
            return vec![root
                .join("data/beijing-air-quality/PRSA_Data_Aotizhongxin_20130301-20170228.csv.gz")]
        }
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("REPORTING_E2E_STATIONS needs {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "gz"))
        .collect();
    assert!(
        !files.is_empty(),
        "no .csv.gz station files in {}",
        dir.display()
    );
    files.sort();
    files
}

/// The first `rows` data rows of the bundled station as a plain CSV in `dir`.
pub(crate) fn station_excerpt(dir: &Path, rows: usize) -> PathBuf {
    use std::io::Read as _;
    let gz = std::fs::read(&station_files()[0]).expect("bundled station");
    let mut text = String::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_string(&mut text)
        .expect("gunzip");
    let excerpt: Vec<&str> = text.lines().take(rows + 1).collect();
    let path = dir.join("excerpt.csv");
    std::fs::write(&path, excerpt.join("\n") + "\n").expect("write excerpt");
    path
}

/// Total expected readings (the oracle's count over all day buckets).
pub(crate) fn total_count(expected: &BTreeMap<oracle::Key, Expected>) -> u64 {
    expected.values().map(|e| e.count).sum()
}

/// Compares every series of `expected` at `level` with what the API at `api_url` serves; returns mismatches.
pub(crate) async fn api_mismatches(
    api_url: &str,
    expected: &BTreeMap<oracle::Key, Expected>,
    level: Level,
) -> Vec<String> {
    let mut problems = Vec::new();
    for (station, metric) in oracle::series_names(expected) {
        let url = format!(
            "{api_url}/v1/series?device={}&metric={}&interval={}",
            encode(&station),
            encode(&metric),
            level.interval()
        );
        let (status, body) = get_json(&url).await;
        if status != 200 {
            problems.push(format!("GET {url} answered {status}: {body}"));
            continue;
        }
        problems.extend(oracle::compare_series(
            expected,
            &station,
            &metric,
            ..,
            &body["buckets"],
        ));
    }
    problems
}

/// Total count of the API's day buckets over every series of `expected`.
pub(crate) async fn api_total_count(
    api_url: &str,
    expected: &BTreeMap<oracle::Key, Expected>,
) -> u64 {
    let mut total = 0;
    for (station, metric) in oracle::series_names(expected) {
        let url = format!(
            "{api_url}/v1/series?device={}&metric={}&interval=1d",
            encode(&station),
            encode(&metric)
        );
        let Ok(response) = reqwest::get(&url).await else {
            continue;
        };
        let Ok(body) = response.json::<Value>().await else {
            continue;
        };
        if let Some(buckets) = body["buckets"].as_array() {
            total += buckets
                .iter()
                .filter_map(|b| b["count"].as_u64())
                .sum::<u64>();
        }
    }
    total
}

/// Percent-encodes a query value (metric names such as `PM2.5` are safe; this keeps `+`, `&`, spaces safe too).
pub(crate) fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Imports `files` through the ingest API at `ingest_url`.
pub(crate) async fn import(
    ingest_url: &str,
    files: &[PathBuf],
    batch: usize,
) -> reporting_import::ImportSummary {
    let mut opts = reporting_import::ImportOptions::new(ingest_url, files.to_vec());
    opts.batch_size = batch;
    opts.retry.max_attempts = 60;
    opts.retry.initial_backoff = Duration::from_millis(100);
    opts.retry.max_backoff = Duration::from_secs(1);
    reporting_import::import(&opts).await.expect("import")
}
