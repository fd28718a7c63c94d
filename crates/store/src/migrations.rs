//! Versioned schema migrations, one list per backend. A migration is applied once, in a transaction, and
//! recorded in `schema_migrations`; a database newer than the build is refused.
//!
//! Schema (both backends; PostgreSQL uses `timestamptz`, SQLite integer epoch milliseconds):
//! - `series(id, tenant, device, metric)` — dictionary of series; readings refer to it by id.
//! - `readings(series_id, ts, value)` — raw readings keyed by identity `(series_id, ts)`.
//! - `rollup_1m`, `rollup_1h`, `rollup_1d` — `(series_id, bucket)` → count, sum, min, max, first/last with times.
//! - `consumer_positions(group_id, topic, partition, next_offset)` — the aggregator's positions.

/// One migration.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Version, strictly increasing from 1.
    pub version: i64,
    /// Short name.
    pub name: &'static str,
    /// SQL to run (several statements).
    pub sql: &'static str,
}

/// PostgreSQL migrations.
pub const POSTGRES: &[Migration] = &[Migration {
    version: 1,
    name: "initial schema",
    sql: r#"
CREATE TABLE series (
    id bigserial PRIMARY KEY,
    tenant text NOT NULL,
    device text NOT NULL,
    metric text NOT NULL,
    UNIQUE (tenant, device, metric)
);
CREATE TABLE readings (
    series_id bigint NOT NULL,
    ts timestamptz NOT NULL,
    value double precision NOT NULL,
    PRIMARY KEY (series_id, ts)
);
CREATE TABLE rollup_1m (
    series_id bigint NOT NULL,
    bucket timestamptz NOT NULL,
    count bigint NOT NULL,
    sum double precision NOT NULL,
    min double precision NOT NULL,
    max double precision NOT NULL,
    first_at timestamptz NOT NULL,
    first_value double precision NOT NULL,
    last_at timestamptz NOT NULL,
    last_value double precision NOT NULL,
    PRIMARY KEY (series_id, bucket)
);
CREATE TABLE rollup_1h (LIKE rollup_1m INCLUDING ALL);
CREATE TABLE rollup_1d (LIKE rollup_1m INCLUDING ALL);
CREATE TABLE consumer_positions (
    group_id text NOT NULL,
    topic text NOT NULL,
    partition integer NOT NULL,
    next_offset bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, topic, partition)
);
"#,
}];

/// SQLite migrations.
pub const SQLITE: &[Migration] = &[Migration {
    version: 1,
    name: "initial schema",
    sql: r#"
CREATE TABLE series (
    id INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL,
    device TEXT NOT NULL,
    metric TEXT NOT NULL,
    UNIQUE (tenant, device, metric)
);
CREATE TABLE readings (
    series_id INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    value REAL NOT NULL,
    PRIMARY KEY (series_id, ts)
) WITHOUT ROWID;
CREATE TABLE rollup_1m (
    series_id INTEGER NOT NULL,
    bucket INTEGER NOT NULL,
    count INTEGER NOT NULL,
    sum REAL NOT NULL,
    min REAL NOT NULL,
    max REAL NOT NULL,
    first_at INTEGER NOT NULL,
    first_value REAL NOT NULL,
    last_at INTEGER NOT NULL,
    last_value REAL NOT NULL,
    PRIMARY KEY (series_id, bucket)
) WITHOUT ROWID;
CREATE TABLE rollup_1h (
    series_id INTEGER NOT NULL, bucket INTEGER NOT NULL, count INTEGER NOT NULL, sum REAL NOT NULL,
    min REAL NOT NULL, max REAL NOT NULL, first_at INTEGER NOT NULL, first_value REAL NOT NULL,
    last_at INTEGER NOT NULL, last_value REAL NOT NULL, PRIMARY KEY (series_id, bucket)
) WITHOUT ROWID;
CREATE TABLE rollup_1d (
    series_id INTEGER NOT NULL, bucket INTEGER NOT NULL, count INTEGER NOT NULL, sum REAL NOT NULL,
    min REAL NOT NULL, max REAL NOT NULL, first_at INTEGER NOT NULL, first_value REAL NOT NULL,
    last_at INTEGER NOT NULL, last_value REAL NOT NULL, PRIMARY KEY (series_id, bucket)
) WITHOUT ROWID;
CREATE TABLE consumer_positions (
    group_id TEXT NOT NULL,
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (group_id, topic, partition)
);
"#,
}];

/// The migrations of `all` newer than `current`; a database newer than this build is refused.
pub(crate) fn pending(
    all: &'static [Migration],
    current: i64,
) -> Result<&'static [Migration], crate::StoreError> {
    let known = all.last().map_or(0, |m| m.version);
    if current > known {
        return Err(crate::StoreError::SchemaTooNew {
            found: current,
            known,
        });
    }
    Ok(&all[all.partition_point(|m| m.version <= current)..])
}

/// The rollup table of a level (a fixed name, never user input).
pub fn rollup_table(interval: reporting_core::time::Interval) -> &'static str {
    match interval {
        reporting_core::time::Interval::Minute => "rollup_1m",
        reporting_core::time::Interval::Hour => "rollup_1h",
        reporting_core::time::Interval::Day => "rollup_1d",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_increase_from_one_without_gaps() {
        for list in [POSTGRES, SQLITE] {
            for (i, m) in list.iter().enumerate() {
                assert_eq!(m.version, i as i64 + 1, "{}", m.name);
            }
        }
    }

    #[test]
    fn pending_migrations_are_those_newer_than_the_database() {
        assert_eq!(pending(POSTGRES, 0).expect("fresh").len(), POSTGRES.len());
        assert!(pending(SQLITE, SQLITE.len() as i64)
            .expect("current")
            .is_empty());
        assert!(matches!(
            pending(SQLITE, SQLITE.len() as i64 + 1),
            Err(crate::StoreError::SchemaTooNew { .. })
        ));
    }
}
