//! The command line.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::app::{self, bind, Bus, Listeners, Resources, Roles};
use crate::config::{Config, Role};

/// Reporting: telemetry readings in, exact rollups and reports out.
///
/// Every role reads the same configuration: defaults, then `--config FILE` (TOML), then environment
/// variables `REPORTING__SECTION__KEY` (e.g. `REPORTING__BUS__BROKERS=kafka:9092`).
#[derive(Debug, Parser)]
#[command(name = "reporting", version)]
pub struct Cli {
    /// TOML configuration file.
    #[arg(long, global = true, env = "REPORTING_CONFIG")]
    pub config: Option<PathBuf>,
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The roles and tools.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Every role in one process. With no configuration it needs neither Kafka nor PostgreSQL: a durable
    /// embedded log and SQLite under `data_dir` (default ./reporting-data) take their place, with the same
    /// guarantees. With bus.brokers and store.postgres_url set, the same roles use Kafka and PostgreSQL.
    Up {
        /// Import these Beijing air-quality CSV files (plain or .gz) through the ingest API once started.
        #[arg(long, num_args = 1..)]
        import: Vec<PathBuf>,
    },
    /// HTTP ingest: validates readings and publishes them to Kafka; acknowledges once Kafka has them (acks=all).
    Ingest,
    /// The time-series service: a Kafka consumer group member writing raw readings and 1m/1h/1d rollups to
    /// PostgreSQL exactly once (positions are stored in the same transaction as the rows).
    Aggregator,
    /// The reports API: /v1/series (JSON or CSV), /v1/devices, /v1/metrics.
    Api,
    /// Applies database migrations (and creates the Kafka topic when brokers are configured), then exits.
    Migrate,
    /// Sends Beijing air-quality CSV files (plain or .gz) to an ingest API, with progress and a summary.
    Import {
        /// Base URL of the ingest API.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// Readings per request.
        #[arg(long, default_value_t = reporting_import::DEFAULT_BATCH_SIZE)]
        batch: usize,
        /// Requests in flight.
        #[arg(long, default_value_t = reporting_import::DEFAULT_CONCURRENCY)]
        concurrency: usize,
        /// Tenant to send the readings for (default: the server's default tenant).
        #[arg(long)]
        tenant: Option<String>,
        /// The CSV files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Prints the effective configuration as TOML (secrets redacted; reusable as a config file) and any
    /// problems with it.
    Config {
        /// Print JSON instead of TOML.
        #[arg(long)]
        json: bool,
    },
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let role = match &cli.command {
        Command::Up { .. } => Some((Role::Up, "up")),
        Command::Ingest => Some((Role::Ingest, "ingest")),
        Command::Aggregator => Some((Role::Aggregator, "aggregator")),
        Command::Api => Some((Role::Api, "api")),
        Command::Migrate => Some((Role::Migrate, "migrate")),
        Command::Import { .. } | Command::Config { .. } => None,
    };
    let config = match Config::load_for(cli.config.as_deref(), role.map(|r| r.0)) {
        Ok(c) => c,
        Err(problems) => anyhow::bail!("invalid configuration:\n  - {}", problems.join("\n  - ")),
    };
    let log_format = match config.log.format.as_str() {
        "auto" if std::io::IsTerminal::is_terminal(&std::io::stderr()) => "text",
        "auto" => "json",
        other => other,
    };
    reporting_observe::logging::init(log_format, &config.log.level, role.map_or("cli", |r| r.1));
    if let Some((role, _)) = role {
        let problems = config.problems(role);
        if !problems.is_empty() {
            anyhow::bail!("invalid configuration:\n  - {}", problems.join("\n  - "));
        }
    }
    match cli.command {
        Command::Up { import } => up(config, import).await,
        Command::Ingest => {
            serve(
                config,
                Roles {
                    ingest: true,
                    aggregator: false,
                    api: false,
                    prepare: false,
                },
            )
            .await
        }
        Command::Aggregator => {
            serve(
                config,
                Roles {
                    ingest: false,
                    aggregator: true,
                    api: false,
                    prepare: false,
                },
            )
            .await
        }
        Command::Api => {
            serve(
                config,
                Roles {
                    ingest: false,
                    aggregator: false,
                    api: true,
                    prepare: false,
                },
            )
            .await
        }
        Command::Migrate => migrate(&config).await,
        Command::Import {
            url,
            batch,
            concurrency,
            tenant,
            files,
        } => {
            let mut opts = reporting_import::ImportOptions::new(url, files);
            opts.batch_size = batch;
            opts.concurrency = concurrency;
            opts.tenant = tenant;
            opts.progress = true;
            let summary = reporting_import::import(&opts)
                .await
                .context("import failed")?;
            let _ignored = writeln!(std::io::stdout(), "{summary}");
            Ok(())
        }
        Command::Config { json } => {
            let problems = config.problems(Role::Up);
            let redacted = config.redacted();
            let text = if json {
                serde_json::to_string_pretty(&redacted).context("rendering the configuration")?
            } else {
                toml::to_string_pretty(&redacted).context("rendering the configuration")?
            };
            let mut out = std::io::stdout();
            let _ignored = writeln!(out, "{text}");
            if !problems.is_empty() {
                anyhow::bail!(
                    "problems for `reporting up`:\n  - {}",
                    problems.join("\n  - ")
                );
            }
            Ok(())
        }
    }
}

async fn migrate(config: &Config) -> anyhow::Result<()> {
    app::open_store(config, true).await?;
    tracing::info!("store migrations applied");
    if config.bus.brokers.is_some() {
        Bus::open(config)?.prepare(config).await?;
        tracing::info!(topic = %config.bus.topic, "kafka topic ready");
    }
    Ok(())
}

/// A token cancelled on SIGINT or SIGTERM.
fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            _ = ctrl_c => tracing::info!(signal = "SIGINT", "shutdown requested"),
            () = term => tracing::info!(signal = "SIGTERM", "shutdown requested"),
        }
        t.cancel();
    });
    token
}

async fn serve(config: Config, roles: Roles) -> anyhow::Result<()> {
    let listeners = Listeners {
        admin: bind("admin", &config.admin.listen).await?,
        ingest: if roles.ingest {
            Some(bind("ingest", &config.ingest.listen).await?)
        } else {
            None
        },
        api: if roles.api {
            Some(bind("api", &config.api.listen).await?)
        } else {
            None
        },
    };
    let resources = Resources::open(&config, roles).await?;
    app::run(config, roles, resources, listeners, shutdown_on_signal()).await
}

async fn up(config: Config, import: Vec<PathBuf>) -> anyhow::Result<()> {
    let listeners = Listeners {
        admin: bind("admin", &config.admin.listen).await?,
        ingest: Some(bind("ingest", &config.ingest.listen).await?),
        api: Some(bind("api", &config.api.listen).await?),
    };
    let ingest_url = local_url(
        listeners
            .ingest
            .as_ref()
            .map(|l| l.local_addr())
            .transpose()?,
    );
    let api_url = local_url(listeners.api.as_ref().map(|l| l.local_addr()).transpose()?);
    let admin_url = local_url(Some(listeners.admin.local_addr()?));
    let shutdown = shutdown_on_signal();
    // What Bus::open and Resources::open will choose.
    let kafka = config.kafka_brokers().is_some();
    let postgres = matches!(config.postgres_url(), Ok(Some(_)));
    let mode = match (kafka, postgres) {
        (true, true) => "Kafka + PostgreSQL",
        (true, false) => "Kafka + SQLite",
        (false, true) => "embedded log + PostgreSQL",
        (false, false) => "embedded log + SQLite",
    };
    let data_dir = config.data_dir.display().to_string();
    let roles = Roles::ALL;
    let resources = Resources::open(&config, roles).await?;
    let system = tokio::spawn(app::run(
        config,
        roles,
        resources,
        listeners,
        shutdown.clone(),
    ));
    let mut out = std::io::stdout();
    let _ignored = writeln!(
        out,
        "reporting is up ({mode}, data in {data_dir})\n  ingest:  POST {ingest_url}/v1/readings\n  reports: {api_url}/v1/devices\n  admin:   {admin_url}/metrics\nstop with Ctrl-C"
    );
    let mut import_failure: Option<String> = None;
    if !import.is_empty() {
        let mut opts = reporting_import::ImportOptions::new(ingest_url.clone(), import);
        opts.progress = true;
        // Ctrl-C during the import stops it at once rather than letting it retry against a stopped ingest.
        let outcome = tokio::select! {
            result = reporting_import::import(&opts) => Some(result),
            () = shutdown.cancelled() => None,
        };
        match outcome {
            Some(Ok(summary)) => {
                let _ignored = writeln!(out, "{summary}");
                let _ignored = writeln!(
                    out,
                    "see the report (the aggregator may still be catching up for a few seconds):\n  {api_url}/v1/devices\n  {api_url}/v1/metrics\n  {api_url}/v1/series?device=Aotizhongxin&metric=PM2.5&interval=1d&from=2013-03-01T00:00:00Z&to=2013-04-01T00:00:00Z\n  {api_url}/v1/series?device=Aotizhongxin&metric=PM2.5&interval=1d&format=csv"
                );
            }
            Some(Err(e)) => {
                tracing::error!(error = %format!("{e:#}"), "import failed");
                let _ignored = writeln!(
                    std::io::stderr(),
                    "import failed: {e:#} (reporting keeps running)"
                );
                import_failure = Some(format!("{e:#}"));
            }
            None => import_failure = Some("cancelled by shutdown before it finished".into()),
        }
    }
    system.await.context("system task")??;
    match import_failure {
        Some(why) => anyhow::bail!("the import did not complete: {why}"),
        None => Ok(()),
    }
}

fn local_url(addr: Option<std::net::SocketAddr>) -> String {
    match addr {
        Some(a) if a.ip().is_unspecified() => format!("http://127.0.0.1:{}", a.port()),
        Some(a) => format!("http://{a}"),
        None => String::new(),
    }
}
