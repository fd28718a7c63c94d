//! Wiring: opens the bus and the store the configuration names and runs roles until shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use reporting_aggregator::{AggregatorSettings, Health, StorePositions};
use reporting_api::{ApiSettings, ApiState};
use reporting_bus::embedded::{EmbeddedConsumer, EmbeddedLog};
use reporting_bus::kafka::{ensure_topic, KafkaConsumer, KafkaPublisher, KafkaSettings};
use reporting_bus::{Consumer, Publisher};
use reporting_core::clock::SystemClock;
use reporting_core::validate::Limits;
use reporting_ingest::{IngestSettings, IngestState};
use reporting_observe::admin::Readiness;
use reporting_store::postgres::PostgresStore;
use reporting_store::sqlite::SqliteStore;
use reporting_store::Store;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// The bus as configured.
#[derive(Clone)]
pub enum Bus {
    /// The embedded log under `data_dir/log`.
    Embedded(EmbeddedLog),
    /// Kafka.
    Kafka(KafkaSettings),
}

impl Bus {
    /// Opens the configured bus.
    pub fn open(config: &Config) -> anyhow::Result<Bus> {
        match config.kafka_brokers() {
            Some(brokers) => Ok(Bus::Kafka(KafkaSettings {
                brokers: brokers.to_string(),
                topic: config.bus.topic.clone(),
                properties: config.kafka_properties(),
            })),
            None => {
                let dir = config.data_dir.join("log");
                let log = EmbeddedLog::open(&dir, config.bus.partitions)
                    .with_context(|| format!("opening the embedded log in {}", dir.display()))?;
                Ok(Bus::Embedded(log))
            }
        }
    }

    /// A publisher on this bus.
    pub fn publisher(&self, config: &Config) -> anyhow::Result<Arc<dyn Publisher>> {
        Ok(match self {
            Bus::Embedded(log) => Arc::new(log.clone()),
            Bus::Kafka(settings) => Arc::new(
                KafkaPublisher::new(
                    settings,
                    Duration::from_secs(config.bus.publish_timeout_secs),
                )
                .context("creating the Kafka producer")?,
            ),
        })
    }

    /// The next offset of every partition (how far the aggregator must get to have read everything).
    pub async fn end_offsets(&self) -> anyhow::Result<std::collections::HashMap<i32, i64>> {
        match self {
            Bus::Embedded(log) => Ok((0..log.partition_count() as i32)
                .map(|p| (p, log.end_offset(p)))
                .collect()),
            Bus::Kafka(settings) => {
                let settings = settings.clone();
                Ok(tokio::task::spawn_blocking(move || {
                    reporting_bus::kafka::end_offsets(&settings)
                })
                .await??)
            }
        }
    }

    /// Creates the Kafka topic when missing (no-op for the embedded log).
    pub async fn prepare(&self, config: &Config) -> anyhow::Result<()> {
        if let Bus::Kafka(settings) = self {
            let partitions = i32::try_from(config.bus.partitions).context("bus.partitions")?;
            let replication =
                i32::try_from(config.bus.replication_factor).context("bus.replication_factor")?;
            ensure_topic(settings, partitions, replication)
                .await
                .with_context(|| format!("creating topic {}", settings.topic))?;
        }
        Ok(())
    }
}

/// Opens the configured store and applies migrations when `migrate` is set.
pub async fn open_store(config: &Config, migrate: bool) -> anyhow::Result<Arc<dyn Store>> {
    let store: Arc<dyn Store> = match config.postgres_url().map_err(anyhow::Error::msg)? {
        Some(url) => Arc::new(
            PostgresStore::connect(&url, config.store.pool_size)
                .context("configuring PostgreSQL")?,
        ),
        None => {
            std::fs::create_dir_all(&config.data_dir)
                .with_context(|| format!("creating {}", config.data_dir.display()))?;
            let path = config.data_dir.join("reporting.sqlite");
            Arc::new(
                SqliteStore::open(&path).with_context(|| format!("opening {}", path.display()))?,
            )
        }
    };
    if migrate {
        store.migrate().await.context("applying migrations")?;
    }
    Ok(store)
}

/// Listeners bound before the roles start (tests bind port 0 and read the addresses).
pub struct Listeners {
    /// Admin endpoints.
    pub admin: TcpListener,
    /// Ingest HTTP (roles `up` and `ingest`).
    pub ingest: Option<TcpListener>,
    /// API HTTP (roles `up` and `api`).
    pub api: Option<TcpListener>,
}

/// Binds an address from the configuration.
pub async fn bind(what: &str, addr: &str) -> anyhow::Result<TcpListener> {
    let addr: SocketAddr = addr
        .parse()
        .with_context(|| format!("{what} address {addr:?}"))?;
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {what} on {addr}"))
}

fn ingest_state(config: &Config, publisher: Arc<dyn Publisher>) -> IngestState {
    IngestState {
        settings: Arc::new(IngestSettings {
            max_body_bytes: config.ingest.max_body_bytes,
            limits: Limits {
                max_future_ms: config.ingest.max_future_secs.saturating_mul(1000),
                max_past_ms: config.ingest.max_past_days.saturating_mul(86_400_000),
                max_name_bytes: 256,
            },
            default_tenant: config.tenant.clone(),
        }),
        publisher,
        clock: Arc::new(SystemClock),
    }
}

fn api_state(config: &Config, store: Arc<dyn Store>) -> ApiState {
    ApiState {
        settings: Arc::new(ApiSettings {
            default_tenant: config.tenant.clone(),
            max_buckets: config.api.max_buckets,
        }),
        store,
    }
}

fn store_check(store: Arc<dyn Store>) -> reporting_observe::admin::Check {
    Arc::new(move || {
        let store = store.clone();
        Box::pin(async move { store.ping().await.map_err(|e| e.to_string()) })
    })
}

fn bus_check(publisher: Arc<dyn Publisher>) -> reporting_observe::admin::Check {
    Arc::new(move || {
        let publisher = publisher.clone();
        Box::pin(async move { publisher.check_ready().await.map_err(|e| e.to_string()) })
    })
}

/// Which roles a process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    /// HTTP ingest.
    pub ingest: bool,
    /// Bus → store.
    pub aggregator: bool,
    /// Reports.
    pub api: bool,
    /// Apply store migrations and create the Kafka topic at start (`up`); microservices leave that to
    /// `reporting migrate`.
    pub prepare: bool,
}

impl Roles {
    /// Every role, migrating and creating the topic at start: `reporting up`.
    pub const ALL: Roles = Roles {
        ingest: true,
        aggregator: true,
        api: true,
        prepare: true,
    };
}

/// A named task that is awaited on shutdown.
struct Task {
    name: &'static str,
    handle: JoinHandle<anyhow::Result<()>>,
}

/// The bus and store a process uses, opened before the roles start (tests keep clones to look inside).
#[derive(Clone, Default)]
pub struct Resources {
    /// The bus (needed by ingest and the aggregator).
    pub bus: Option<Bus>,
    /// The store (needed by the aggregator and the API).
    pub store: Option<Arc<dyn Store>>,
}

impl Resources {
    /// Opens what `roles` need; with `roles.prepare`, migrates the store and creates the Kafka topic.
    pub async fn open(config: &Config, roles: Roles) -> anyhow::Result<Resources> {
        let store = if roles.aggregator || roles.api {
            Some(open_store(config, roles.prepare).await?)
        } else {
            None
        };
        let bus = if roles.ingest || roles.aggregator {
            Some(Bus::open(config)?)
        } else {
            None
        };
        if let (true, Some(bus)) = (roles.prepare, &bus) {
            bus.prepare(config).await?;
        }
        Ok(Resources { bus, store })
    }
}

/// Runs `roles` until `shutdown` is cancelled, then stops them in order: ingest stops accepting and drains,
/// the aggregator commits its batch in flight, the API finishes its requests.
pub async fn run(
    config: Config,
    roles: Roles,
    resources: Resources,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let Resources { bus, store } = resources;
    let mut readiness = Readiness::default();
    if let Some(store) = &store {
        readiness = readiness.with_dependency("store", store_check(store.clone()));
    }

    let ingest_stop = CancellationToken::new();
    let aggregator_stop = CancellationToken::new();
    let api_stop = CancellationToken::new();
    let mut tasks: Vec<Task> = Vec::new();

    if let (true, Some(bus), Some(listener)) = (roles.ingest, &bus, listeners.ingest) {
        let publisher = bus.publisher(&config)?;
        readiness = readiness.with_dependency("bus", bus_check(publisher.clone()));
        let state = ingest_state(&config, publisher);
        let stop = ingest_stop.clone();
        tracing::info!(addr = %listener.local_addr()?, "ingest listening");
        tasks.push(Task {
            name: "ingest",
            handle: tokio::spawn(async move {
                reporting_ingest::serve(listener, state, async move { stop.cancelled().await })
                    .await
                    .context("ingest server")
            }),
        });
    }
    if let (true, Some(bus @ Bus::Embedded(_)), Some(store)) = (roles.aggregator, &bus, &store) {
        check_log_covers_positions(bus, store.as_ref(), &config).await?;
    }
    if let (true, Some(bus), Some(store)) = (roles.aggregator, &bus, &store) {
        let settings = AggregatorSettings {
            group: config.bus.group.clone(),
            topic: config.bus.topic.clone(),
            batch: reporting_bus::BatchLimits {
                max_messages: config.aggregator.batch_max_records,
                max_bytes: config.aggregator.batch_max_bytes,
                linger: Duration::from_millis(config.aggregator.batch_linger_ms),
            },
        };
        let health = Health::default();
        let check_health = health.clone();
        readiness = readiness.with_check(
            "aggregator",
            Arc::new(move || {
                let result = check_health.check(Duration::from_secs(30));
                Box::pin(async move { result })
            }),
        );
        let handle = tokio::runtime::Handle::current();
        let store = store.clone();
        let bus = bus.clone();
        let stop = aggregator_stop.clone();
        tasks.push(Task {
            name: "aggregator",
            handle: tokio::task::spawn_blocking(move || {
                let positions = Arc::new(StorePositions::new(
                    store.clone(),
                    &settings.group,
                    &settings.topic,
                    handle.clone(),
                    stop.clone(),
                ));
                let mut consumer: Box<dyn Consumer> = match &bus {
                    Bus::Embedded(log) => Box::new(EmbeddedConsumer::new(log.clone(), positions)),
                    Bus::Kafka(k) => Box::new(
                        KafkaConsumer::new(k, &settings.group, positions)
                            .context("creating the Kafka consumer")?,
                    ),
                };
                reporting_aggregator::run(
                    consumer.as_mut(),
                    store,
                    &handle,
                    &settings,
                    &health,
                    &stop,
                );
                Ok(())
            }),
        });
    }
    if let (true, Some(store), Some(listener)) = (roles.api, &store, listeners.api) {
        let state = api_state(&config, store.clone());
        let stop = api_stop.clone();
        tracing::info!(addr = %listener.local_addr()?, "api listening");
        tasks.push(Task {
            name: "api",
            handle: tokio::spawn(async move {
                reporting_api::serve(listener, state, async move { stop.cancelled().await })
                    .await
                    .context("api server")
            }),
        });
    }

    let admin_stop = CancellationToken::new();
    let admin = {
        let router = reporting_observe::admin::router(readiness.clone());
        let stop = admin_stop.clone();
        tracing::info!(addr = %listeners.admin.local_addr()?, "admin listening");
        tokio::spawn(async move {
            axum::serve(listeners.admin, router)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
        })
    };

    // Wait for shutdown, or for a role to fail on its own.
    let failed = tokio::select! {
        () = shutdown.cancelled() => None,
        name = first_finished(&tasks) => Some(name),
    };
    if let Some(name) = failed {
        tracing::error!(
            component = name,
            "a role stopped on its own; shutting the process down"
        );
    }
    tracing::info!("shutting down");
    readiness.start_draining();
    let drain = Duration::from_secs(config.ingest.drain_secs);
    let mut result = Ok(());
    for (name, stop) in [
        ("ingest", &ingest_stop),
        ("aggregator", &aggregator_stop),
        ("api", &api_stop),
    ] {
        stop.cancel();
        for task in tasks.iter_mut().filter(|t| t.name == name) {
            match tokio::time::timeout(drain, &mut task.handle).await {
                Ok(Ok(Ok(()))) => tracing::info!(component = name, "role stopped"),
                Ok(Ok(Err(e))) => {
                    tracing::error!(component = name, error = %format!("{e:#}"), "role failed");
                    result = Err(e);
                }
                Ok(Err(join)) => {
                    tracing::error!(component = name, error = %join, "role task panicked");
                    result = Err(anyhow::anyhow!("{name} task failed: {join}"));
                }
                Err(_) => {
                    tracing::warn!(
                        component = name,
                        drain_secs = drain.as_secs(),
                        "role did not stop within the drain time"
                    );
                    task.handle.abort();
                }
            }
        }
    }
    admin_stop.cancel();
    let _admin_done = admin.await;
    if failed.is_some() && result.is_ok() {
        result = Err(anyhow::anyhow!(
            "role {} stopped unexpectedly",
            failed.unwrap_or("?")
        ));
    }
    result
}

/// Refuses to start when the embedded log ends before what the store has applied: the log was deleted or
/// truncated, new records would reuse offsets the aggregator treats as done, and their readings would be
/// skipped although ingest acknowledged them.
async fn check_log_covers_positions(
    bus: &Bus,
    store: &dyn Store,
    config: &Config,
) -> anyhow::Result<()> {
    let ends = bus.end_offsets().await?;
    let partitions: Vec<i32> = ends.keys().copied().collect();
    let stored = store
        .positions(&config.bus.group, &config.bus.topic, &partitions)
        .await
        .context("reading stored positions")?;
    let mut behind: Vec<String> = Vec::new();
    for (p, end) in &ends {
        if let Some(pos) = stored.get(p).filter(|pos| **pos > *end) {
            behind.push(format!(
                "partition {p} ends at offset {end} but the store has applied up to {pos}"
            ));
        }
    }
    if behind.is_empty() {
        return Ok(());
    }
    behind.sort();
    anyhow::bail!(
        "the embedded log in {} is behind the store ({}): it was deleted, truncated or damaged. Readings sent now \
         would be skipped. Restore the log directory, or move both the log and {}/reporting.sqlite aside to start \
         with empty data",
        config.data_dir.join("log").display(),
        behind.join("; "),
        config.data_dir.display()
    )
}

/// Resolves with the name of the first task that finished.
async fn first_finished(tasks: &[Task]) -> &'static str {
    loop {
        for t in tasks {
            if t.handle.is_finished() {
                return t.name;
            }
        }
        if tasks.is_empty() {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
