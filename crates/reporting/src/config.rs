//! Typed, layered configuration: defaults → `--config FILE` (TOML) → `REPORTING__SECTION__KEY` environment.
//! Unknown keys are errors; [`Config::problems`] lists every problem at once before anything starts.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Embedded mode keeps its log and database here.
    pub data_dir: PathBuf,
    /// Tenant of readings and queries that name none.
    pub tenant: String,
    /// Logging.
    pub log: LogConfig,
    /// Admin endpoints.
    pub admin: AdminConfig,
    /// Ingest role.
    pub ingest: IngestConfig,
    /// API role.
    pub api: ApiConfig,
    /// The bus (Kafka or the embedded log).
    pub bus: BusConfig,
    /// The store (PostgreSQL or SQLite).
    pub store: StoreConfig,
    /// Aggregator role.
    pub aggregator: AggregatorConfig,
}

/// `[log]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `json` (flat, for fluent-bit/Graylog), `text`, or `auto` (text on a terminal, JSON otherwise).
    pub format: String,
    /// `tracing` filter, e.g. `info` or `info,reporting_aggregator=debug`.
    pub level: String,
}

/// `[admin]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Address of `/healthz`, `/readyz`, `/metrics`.
    pub listen: String,
}

/// `[ingest]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// HTTP address.
    pub listen: String,
    /// Largest request body in bytes.
    pub max_body_bytes: usize,
    /// Readings further ahead of now are rejected (seconds).
    pub max_future_secs: i64,
    /// Readings older than this are rejected (days).
    pub max_past_days: i64,
    /// Time given to in-flight requests on shutdown (seconds).
    pub drain_secs: u64,
}

/// `[api]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// HTTP address.
    pub listen: String,
    /// Most buckets per series request.
    pub max_buckets: usize,
}

/// `[bus]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BusConfig {
    /// Kafka bootstrap servers; unset → the embedded log under `data_dir`.
    pub brokers: Option<String>,
    /// Topic of readings.
    pub topic: String,
    /// Partitions of a topic created by `migrate`/`up`, and of a new embedded log.
    pub partitions: u32,
    /// Replication factor of a topic created by `migrate`/`up`.
    pub replication_factor: u32,
    /// Consumer group of the aggregator.
    pub group: String,
    /// Seconds a publish may take before ingest answers 503.
    pub publish_timeout_secs: u64,
    /// Extra librdkafka properties (TLS, SASL); `_` in a key stands for `.` so environment variables work.
    pub kafka: BTreeMap<String, String>,
}

/// `[store]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// PostgreSQL URL; unset (and no file) → SQLite under `data_dir`.
    pub postgres_url: Option<String>,
    /// File holding the PostgreSQL URL (a mounted secret).
    pub postgres_url_file: Option<PathBuf>,
    /// Largest number of PostgreSQL connections.
    pub pool_size: usize,
}

/// `[aggregator]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AggregatorConfig {
    /// Most bus records per batch (a record holds up to 5,000 readings of one device).
    pub batch_max_records: usize,
    /// Most record payload bytes per batch (bounds memory and transaction size; ≈ 30 bytes per reading).
    pub batch_max_bytes: usize,
    /// How long a poll waits for records (milliseconds).
    pub batch_linger_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("reporting-data"),
            tenant: "default".into(),
            log: LogConfig::default(),
            admin: AdminConfig::default(),
            ingest: IngestConfig::default(),
            api: ApiConfig::default(),
            bus: BusConfig::default(),
            store: StoreConfig::default(),
            aggregator: AggregatorConfig::default(),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: "auto".into(),
            level: "info".into(),
        }
    }
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: "127.0.0.1:9464".into(),
        }
    }
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            listen: "127.0.0.1:8080".into(),
            max_body_bytes: 8 * 1024 * 1024,
            max_future_secs: 300,
            max_past_days: 10_000,
            drain_secs: 20,
        }
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: "127.0.0.1:8081".into(),
            max_buckets: 200_000,
        }
    }
}

impl Default for BusConfig {
    fn default() -> Self {
        BusConfig {
            brokers: None,
            topic: "reporting.readings.v1".into(),
            partitions: 12,
            replication_factor: 1,
            group: "reporting-aggregator".into(),
            publish_timeout_secs: 15,
            kafka: BTreeMap::new(),
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            postgres_url: None,
            postgres_url_file: None,
            pool_size: 8,
        }
    }
}

impl Default for AggregatorConfig {
    fn default() -> Self {
        AggregatorConfig {
            batch_max_records: 1000,
            batch_max_bytes: 4 << 20,
            batch_linger_ms: 200,
        }
    }
}

/// Which role is starting (decides what must be configured).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// All roles in one process.
    Up,
    /// HTTP ingest.
    Ingest,
    /// Bus → store.
    Aggregator,
    /// Reports.
    Api,
    /// Migrations.
    Migrate,
}

impl Config {
    /// Loads defaults, then `file` (if any), then the environment. Every unknown key is reported, not just
    /// the first.
    pub fn load(file: Option<&Path>) -> Result<Config, Vec<String>> {
        Config::load_for(file, None)
    }

    /// [`Config::load`], and when values have the wrong type, every such key is named (each is checked on its
    /// own) and, for `role`, the [`Config::problems`] of the well-typed rest are listed too.
    pub fn load_for(file: Option<&Path>, role: Option<Role>) -> Result<Config, Vec<String>> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(f) = file {
            if !f.exists() {
                return Err(vec![format!("config file {} does not exist", f.display())]);
            }
            figment = figment.merge(Toml::file(f));
        }
        figment = figment.merge(Env::prefixed("REPORTING__").split("__"));
        let mut problems = Vec::new();
        // The known keys as given, and the defaults: what the per-key type check needs if extraction fails.
        let mut untyped = None;
        match (
            figment.extract::<serde_json::Value>(),
            serde_json::to_value(Config::default()),
        ) {
            (Ok(actual), Ok(known)) => {
                let mut leaves = Vec::new();
                walk_keys(&actual, &known, "", &mut problems, &mut leaves);
                untyped = Some((leaves, known));
            }
            (Err(e), _) => problems.extend(e.into_iter().map(|e| e.to_string())),
            (_, Err(e)) => problems.push(format!("internal: cannot describe the defaults: {e}")),
        }
        match figment.extract::<Config>() {
            Ok(c) if problems.is_empty() => Ok(c),
            Ok(_) => Err(problems),
            Err(e) => {
                match untyped {
                    Some((leaves, known)) => {
                        let partial = type_problems(leaves, &known, &mut problems);
                        if let (Some(partial), Some(role)) = (partial, role) {
                            problems.extend(partial.problems(role));
                        }
                    }
                    None => problems.extend(e.into_iter().map(|e| e.to_string())),
                }
                Err(problems)
            }
        }
    }

    /// The PostgreSQL URL, from `postgres_url` or the file named by `postgres_url_file`.
    pub fn postgres_url(&self) -> Result<Option<String>, String> {
        match (&self.store.postgres_url, &self.store.postgres_url_file) {
            (Some(url), None) => Ok(Some(url.clone())),
            (None, Some(file)) => std::fs::read_to_string(file)
                .map(|s| Some(s.trim().to_string()))
                .map_err(|e| format!("store.postgres_url_file {}: {e}", file.display())),
            (None, None) => Ok(None),
            (Some(_), Some(_)) => {
                Err("set store.postgres_url or store.postgres_url_file, not both".into())
            }
        }
    }

    /// The Kafka bootstrap servers, unless unset or blank (then the bus is the embedded log).
    pub fn kafka_brokers(&self) -> Option<&str> {
        self.bus.brokers.as_deref().filter(|b| !b.trim().is_empty())
    }

    /// Librdkafka properties with `_` read as `.`.
    pub fn kafka_properties(&self) -> BTreeMap<String, String> {
        self.bus
            .kafka
            .iter()
            .map(|(k, v)| (k.replace('_', "."), v.clone()))
            .collect()
    }

    /// Every problem with this configuration for `role` (empty when it can start).
    pub fn problems(&self, role: Role) -> Vec<String> {
        let mut p = Vec::new();
        let mut addr = |name: &str, value: &str| {
            if value.parse::<SocketAddr>().is_err() {
                p.push(format!(
                    "{name} = {value:?} is not an address like 0.0.0.0:8080"
                ));
            }
        };
        addr("admin.listen", &self.admin.listen);
        addr("ingest.listen", &self.ingest.listen);
        addr("api.listen", &self.api.listen);
        if !["json", "text", "auto"].contains(&self.log.format.as_str()) {
            p.push(format!(
                "log.format = {:?} must be json, text or auto",
                self.log.format
            ));
        }
        if self.ingest.max_body_bytes == 0 || self.ingest.max_body_bytes > 1 << 30 {
            p.push("ingest.max_body_bytes must be between 1 and 1073741824".into());
        }
        if self.ingest.max_future_secs < 0 || self.ingest.max_past_days <= 0 {
            p.push("ingest.max_future_secs must be ≥ 0 and ingest.max_past_days > 0".into());
        }
        if self.api.max_buckets == 0 {
            p.push("api.max_buckets must be positive".into());
        }
        if !(1..=10_000).contains(&self.bus.partitions) {
            p.push("bus.partitions must be between 1 and 10000".into());
        }
        if self.bus.topic.trim().is_empty() || self.bus.group.trim().is_empty() {
            p.push("bus.topic and bus.group must not be blank".into());
        }
        if self.aggregator.batch_max_records == 0 || self.aggregator.batch_max_bytes == 0 {
            p.push(
                "aggregator.batch_max_records and aggregator.batch_max_bytes must be positive"
                    .into(),
            );
        }
        if self.store.pool_size == 0 {
            p.push("store.pool_size must be positive".into());
        }
        let postgres = match self.postgres_url() {
            Ok(Some(url)) => {
                if let Err(e) = reporting_store::postgres::PostgresStore::check_url(&url) {
                    p.push(format!(
                        "store.postgres_url: {}",
                        reporting_observe::logging::error_chain(&e)
                    ));
                }
                true
            }
            Ok(None) => false,
            Err(e) => {
                p.push(e);
                true
            }
        };
        if let Err(e) = reporting_observe::logging::check_filter(&self.log.level) {
            p.push(format!(
                "log.level = {:?} is not a valid filter: {e}",
                self.log.level
            ));
        }
        if self.tenant.trim().is_empty() {
            p.push("tenant must not be blank".into());
        }
        let kafka = self.kafka_brokers().is_some();
        match role {
            Role::Ingest if !kafka => p.push("the ingest role needs bus.brokers (REPORTING__BUS__BROKERS); use `reporting up` for the embedded mode".into()),
            Role::Aggregator if !(kafka && postgres) => p.push(
                "the aggregator role needs bus.brokers and store.postgres_url (or postgres_url_file); use `reporting up` for the embedded mode".into(),
            ),
            Role::Api if !postgres => p.push("the api role needs store.postgres_url (or postgres_url_file); use `reporting up` for the embedded mode".into()),
            _ => {}
        }
        p
    }

    /// The configuration as TOML with secrets redacted.
    pub fn redacted(&self) -> Config {
        let mut c = self.clone();
        if let Some(url) = &c.store.postgres_url {
            c.store.postgres_url = Some(redact_url(url));
        }
        for (k, v) in c.bus.kafka.iter_mut() {
            let k = k.to_ascii_lowercase();
            if ["pass", "secret", "key", "token", "credential", "pem"]
                .iter()
                .any(|s| k.contains(s))
            {
                *v = "<redacted>".into();
            }
        }
        c
    }
}

/// Walks the keys of `actual` against the defaults `known`: adds `unknown key a.b` to `unknown` for every key
/// `known` lacks, and `(path, value)` to `leaves` for every other leaf. `bus.kafka` is a free map of librdkafka
/// properties: one leaf.
fn walk_keys(
    actual: &serde_json::Value,
    known: &serde_json::Value,
    prefix: &str,
    unknown: &mut Vec<String>,
    leaves: &mut Vec<(String, serde_json::Value)>,
) {
    let (Some(actual), Some(known)) = (actual.as_object(), known.as_object()) else {
        return;
    };
    for (key, value) in actual {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match known.get(key) {
            None => unknown.push(format!(
                "unknown key {path} (see docs/interfaces.md for the keys)"
            )),
            Some(k) if k.is_object() && value.is_object() && path != "bus.kafka" => {
                walk_keys(value, k, &path, unknown, leaves)
            }
            Some(_) => leaves.push((path, value.clone())),
        }
    }
}

/// Checks every known leaf `(path, value)` on its own over the defaults `known`, adding `key: problem` for
/// each value of the wrong type. Returns the configuration made of the defaults and the well-typed values.
fn type_problems(
    leaves: Vec<(String, serde_json::Value)>,
    known: &serde_json::Value,
    out: &mut Vec<String>,
) -> Option<Config> {
    let extract = |value: serde_json::Value| {
        Figment::from(Serialized::defaults(value))
            .extract::<Config>()
            .map_err(Box::new)
    };
    let mut good = known.clone();
    for (path, value) in leaves {
        let mut one = known.clone();
        set_path(&mut one, &path, value.clone());
        match extract(one) {
            Ok(_) => set_path(&mut good, &path, value),
            Err(e) => {
                for e in *e {
                    let text = format!("{path}: {}", e.kind);
                    if !out.contains(&text) {
                        out.push(text);
                    }
                }
            }
        }
    }
    extract(good).ok()
}

/// Sets `a.b.c` in `root` (whose objects along the path exist: it is the defaults).
fn set_path(root: &mut serde_json::Value, path: &str, value: serde_json::Value) {
    let mut node = root;
    let mut keys = path.split('.').peekable();
    while let Some(key) = keys.next() {
        let Some(map) = node.as_object_mut() else {
            return;
        };
        if keys.peek().is_none() {
            map.insert(key.to_string(), value);
            return;
        }
        match map.get_mut(key) {
            Some(next) => node = next,
            None => return,
        }
    }
}

/// `postgres://user:secret@host/db` → `postgres://user:<redacted>@host/db` (also `password=` parameters).
pub fn redact_url(url: &str) -> String {
    let mut out = url.to_string();
    if let Some(scheme_end) = out.find("://") {
        let rest = &out[scheme_end + 3..];
        if let Some(at) = rest.find('@') {
            if let Some(colon) = rest[..at].find(':') {
                let start = scheme_end + 3 + colon + 1;
                out.replace_range(start..scheme_end + 3 + at, "<redacted>");
            }
        }
    }
    if let Some(i) = out.find("password=") {
        let end = out[i..].find([' ', '&']).map_or(out.len(), |e| i + e);
        out.replace_range(i + 9..end, "<redacted>");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_for_the_embedded_mode() {
        assert_eq!(Config::default().problems(Role::Up), Vec::<String>::new());
    }

    #[test]
    fn microservice_roles_name_what_they_miss() {
        let c = Config::default();
        assert!(c.problems(Role::Ingest)[0].contains("bus.brokers"));
        assert!(c.problems(Role::Api)[0].contains("postgres_url"));
        assert!(c.problems(Role::Migrate).is_empty());
    }

    #[test]
    fn every_problem_is_listed_at_once() {
        let mut c = Config::default();
        c.admin.listen = "nowhere".into();
        c.log.format = "xml".into();
        c.bus.partitions = 0;
        c.store.postgres_url = Some("postgres://a".into());
        c.store.postgres_url_file = Some("/x".into());
        assert_eq!(c.problems(Role::Up).len(), 4, "{:?}", c.problems(Role::Up));
    }

    #[test]
    fn invalid_log_filter_is_a_problem() {
        let mut c = Config::default();
        c.log.level = "!!!".into();
        assert!(c.problems(Role::Up).iter().any(|p| p.contains("log.level")));
    }

    #[test]
    fn kafka_secrets_are_redacted() {
        let mut c = Config::default();
        for k in ["ssl_key_pem", "sasl.password", "sasl.username"] {
            c.bus.kafka.insert(k.into(), "value".into());
        }
        let r = c.redacted();
        assert_eq!(r.bus.kafka["ssl_key_pem"], "<redacted>");
        assert_eq!(r.bus.kafka["sasl.password"], "<redacted>");
        assert_eq!(r.bus.kafka["sasl.username"], "value");
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://rep:s3cret@db:5432/r"),
            "postgres://rep:<redacted>@db:5432/r"
        );
        assert_eq!(
            redact_url("host=db password=s3cret user=x"),
            "host=db password=<redacted> user=x"
        );
        assert_eq!(redact_url("postgres://db/r"), "postgres://db/r");
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Error inside the Jail closure
    fn file_and_environment_layer_over_defaults_and_unknown_keys_fail() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "r.toml",
                "tenant = \"acme\"\n[ingest]\nmax_body_bytes = 1000\n",
            )?;
            jail.set_env("REPORTING__INGEST__MAX_BODY_BYTES", "2000");
            jail.set_env("REPORTING__BUS__BROKERS", "k:9092");
            let c = Config::load(Some(Path::new("r.toml"))).map_err(|e| e.join("; "))?;
            assert_eq!((c.tenant.as_str(), c.ingest.max_body_bytes), ("acme", 2000));
            assert_eq!(c.bus.brokers.as_deref(), Some("k:9092"));
            jail.set_env("REPORTING__INGEST__MAX_BODY_BYTE", "1");
            let problems = Config::load(Some(Path::new("r.toml"))).expect_err("unknown key");
            assert!(
                problems.iter().any(|p| p.contains("max_body_byte")),
                "{problems:?}"
            );
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Error inside the Jail closure
    fn every_value_of_the_wrong_type_is_named_and_value_checks_still_run() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("r.toml", "[ingest]\nmax_body_bytes = \"big\"\n")?;
            jail.set_env("REPORTING__API__MAX_BUCKETS", "x");
            jail.set_env("REPORTING__BUS__PARTITIONS", "0");
            jail.set_env("REPORTING__INGEST__LISTEN", "not an address");
            let problems = Config::load_for(Some(Path::new("r.toml")), Some(Role::Up))
                .expect_err("two type errors");
            let named = |key: &str| problems.iter().any(|p| p.starts_with(&format!("{key}: ")));
            assert!(
                named("ingest.max_body_bytes") && named("api.max_buckets"),
                "{problems:?}"
            );
            assert!(
                problems.iter().any(|p| p.contains("partitions")),
                "value checks of the rest: {problems:?}"
            );
            assert!(
                problems.iter().any(|p| p.contains("not an address")),
                "{problems:?}"
            );
            Ok(())
        });
    }

    #[test]
    fn postgres_tls_settings_are_checked_with_the_rest_of_the_configuration() {
        let mut c = Config::default();
        c.store.postgres_url = Some("postgres://u@db/r?sslmode=allow".into());
        let problems = c.problems(Role::Api);
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("store.postgres_url: ") && p.contains("sslmode=allow")),
            "{problems:?}"
        );
        c.store.postgres_url =
            Some("postgres://u@db/r?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem".into());
        assert!(c
            .problems(Role::Api)
            .iter()
            .any(|p| p.contains("not a readable file")));
        c.store.postgres_url = Some("postgres://u@db/r?sslmode=disable".into());
        assert_eq!(c.problems(Role::Api), Vec::<String>::new());
    }
}
