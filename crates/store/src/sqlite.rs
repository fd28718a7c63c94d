//! SQLite backend for embedded mode: WAL journal with `synchronous=FULL` (a committed batch survives a crash),
//! one writer connection and one reader connection, each used from blocking tasks.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use futures::future::BoxFuture;
use futures::FutureExt;
use reporting_core::reading::{Reading, SeriesKey};
use reporting_core::rollup::{fold_into_buckets, Rollup};
use reporting_core::time::Interval;
use rusqlite::{params, Connection, OptionalExtension, Row, Transaction, TransactionBehavior};

use crate::migrations::{pending, rollup_table, SQLITE};
use crate::recompute::{source_of, touched};
use crate::{
    ApplyBatch, ApplyOutcome, Bucket, Device, SeriesQuery, SnapshotRow, Store, StoreError,
};

/// The SQLite store.
#[derive(Clone)]
pub struct SqliteStore {
    writer: Arc<Mutex<Connection>>,
    reader: Arc<Mutex<Connection>>,
    /// Series ids known to be committed.
    series_ids: Arc<Mutex<HashMap<SeriesKey, i64>>>,
}

fn sq(context: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |source| StoreError::Sqlite { context, source }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn open(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path).map_err(sq("opening the database"))?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = FULL;
         PRAGMA busy_timeout = 10000;
         PRAGMA cache_size = -65536;",
    )
    .map_err(sq("setting pragmas"))?;
    Ok(conn)
}

const ROLLUP_COLUMNS: &str = "count, sum, min, max, first_at, first_value, last_at, last_value";

fn rollup_of(row: &Row<'_>, offset: usize) -> rusqlite::Result<Rollup> {
    Ok(Rollup {
        count: row.get(offset)?,
        sum: row.get(offset + 1)?,
        min: row.get(offset + 2)?,
        max: row.get(offset + 3)?,
        first_ts: row.get(offset + 4)?,
        first: row.get(offset + 5)?,
        last_ts: row.get(offset + 6)?,
        last: row.get(offset + 7)?,
    })
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let writer = open(path)?;
        let reader = open(path)?;
        Ok(SqliteStore {
            writer: Arc::new(Mutex::new(writer)),
            reader: Arc::new(Mutex::new(reader)),
            series_ids: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&SqliteStore) -> Result<T, StoreError> + Send + 'static,
    ) -> BoxFuture<'static, Result<T, StoreError>> {
        let this = self.clone();
        async move {
            tokio::task::spawn_blocking(move || f(&this))
                .await
                .map_err(StoreError::Task)?
        }
        .boxed()
    }

    fn migrate_sync(&self) -> Result<(), StoreError> {
        let mut conn = lock(&self.writer);
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sq("beginning migration"))?;
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL);",
        )
        .map_err(sq("preparing schema_migrations"))?;
        let current: i64 = tx
            .query_row(
                "SELECT coalesce(max(version), 0) FROM schema_migrations",
                [],
                |r| r.get(0),
            )
            .map_err(sq("reading the schema version"))?;
        for m in pending(SQLITE, current)? {
            tx.execute_batch(m.sql)
                .map_err(sq("applying a migration"))?;
            tx.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, unixepoch())",
                params![m.version, m.name],
            )
            .map_err(sq("recording a migration"))?;
            tracing::info!(version = m.version, name = m.name, "migration applied");
        }
        tx.commit().map_err(sq("committing migrations"))
    }

    fn apply_sync(&self, batch: &ApplyBatch) -> Result<ApplyOutcome, StoreError> {
        let mut conn = lock(&self.writer);
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sq("beginning a batch"))?;
        for a in &batch.advances {
            let n = match a.expected {
                Some(expected) => tx
                    .execute(
                        "UPDATE consumer_positions SET next_offset = ?4, updated_at = unixepoch()
                         WHERE group_id = ?1 AND topic = ?2 AND partition = ?3 AND next_offset = ?5",
                        params![batch.group, batch.topic, a.partition, a.next, expected],
                    )
                    .map_err(sq("advancing a position"))?,
                None => tx
                    .execute(
                        "INSERT INTO consumer_positions (group_id, topic, partition, next_offset, updated_at)
                         VALUES (?1, ?2, ?3, ?4, unixepoch()) ON CONFLICT DO NOTHING",
                        params![batch.group, batch.topic, a.partition, a.next],
                    )
                    .map_err(sq("creating a position"))?,
            };
            if n == 0 {
                return Ok(ApplyOutcome::Fenced {
                    partition: a.partition,
                });
            }
        }
        let mut new_ids = Vec::new();
        let changed = self.upsert_readings(&tx, &batch.readings, &mut new_ids)?;
        let mut points: BTreeSet<(i64, i64)> = changed.iter().copied().collect();
        for interval in Interval::ALL {
            let buckets = touched(interval, points);
            let items = match source_of(interval) {
                None => raw_in(&tx, &buckets)?,
                Some(src) => rollups_in(&tx, src, interval, &buckets)?,
            };
            write_rollups(&tx, interval, &fold_into_buckets(interval, items))?;
            points = buckets;
        }
        tx.commit().map_err(sq("committing a batch"))?;
        lock(&self.series_ids).extend(new_ids);
        Ok(ApplyOutcome::Applied {
            changed: changed.len(),
        })
    }

    fn upsert_readings(
        &self,
        tx: &Transaction<'_>,
        readings: &[Reading],
        new_ids: &mut Vec<(SeriesKey, i64)>,
    ) -> Result<Vec<(i64, i64)>, StoreError> {
        let known: HashMap<SeriesKey, i64> = {
            let cache = lock(&self.series_ids);
            readings
                .iter()
                .filter_map(|r| cache.get(&r.series()).map(|id| (r.series(), *id)))
                .collect()
        };
        let mut ids = known;
        let mut insert_series = tx
            .prepare_cached("INSERT INTO series (tenant, device, metric) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING")
            .map_err(sq("preparing series insert"))?;
        let mut select_series = tx
            .prepare_cached(
                "SELECT id FROM series WHERE tenant = ?1 AND device = ?2 AND metric = ?3",
            )
            .map_err(sq("preparing series lookup"))?;
        let mut upsert = tx
            .prepare_cached(
                "INSERT INTO readings (series_id, ts, value) VALUES (?1, ?2, ?3)
                 ON CONFLICT (series_id, ts) DO UPDATE SET value = excluded.value
                   WHERE readings.value IS NOT excluded.value",
            )
            .map_err(sq("preparing reading upsert"))?;
        let mut changed = Vec::new();
        for r in readings {
            let key = r.series();
            let id = match ids.get(&key) {
                Some(id) => *id,
                None => {
                    insert_series
                        .execute(params![key.tenant, key.device, key.metric])
                        .map_err(sq("creating a series"))?;
                    let id: i64 = select_series
                        .query_row(params![key.tenant, key.device, key.metric], |row| {
                            row.get(0)
                        })
                        .map_err(sq("reading a series id"))?;
                    new_ids.push((key.clone(), id));
                    ids.insert(key, id);
                    id
                }
            };
            if upsert
                .execute(params![id, r.ts_ms, r.value])
                .map_err(sq("upserting a reading"))?
                > 0
            {
                changed.push((id, r.ts_ms));
            }
        }
        Ok(changed)
    }
}

fn raw_in(
    tx: &Transaction<'_>,
    buckets: &BTreeSet<(i64, i64)>,
) -> Result<Vec<(i64, i64, Rollup)>, StoreError> {
    let mut stmt = tx
        .prepare_cached(
            "SELECT ts, value FROM readings WHERE series_id = ?1 AND ts >= ?2 AND ts < ?3",
        )
        .map_err(sq("preparing raw lookup"))?;
    let mut out = Vec::new();
    for (sid, start) in buckets {
        let rows = stmt
            .query_map(
                params![sid, start, start + Interval::Minute.len_ms()],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, f64>(1)?)),
            )
            .map_err(sq("reading raw readings of touched minutes"))?;
        for row in rows {
            let (t, v) = row.map_err(sq("reading a raw reading"))?;
            out.push((*sid, t, Rollup::of_reading(t, v)));
        }
    }
    Ok(out)
}

fn rollups_in(
    tx: &Transaction<'_>,
    src: Interval,
    parent: Interval,
    buckets: &BTreeSet<(i64, i64)>,
) -> Result<Vec<(i64, i64, Rollup)>, StoreError> {
    let sql = format!(
        "SELECT bucket, {ROLLUP_COLUMNS} FROM {} WHERE series_id = ?1 AND bucket >= ?2 AND bucket < ?3",
        rollup_table(src)
    );
    let mut stmt = tx
        .prepare_cached(&sql)
        .map_err(sq("preparing rollup lookup"))?;
    let mut out = Vec::new();
    for (sid, start) in buckets {
        let rows = stmt
            .query_map(params![sid, start, start + parent.len_ms()], |r| {
                Ok((r.get::<_, i64>(0)?, rollup_of(r, 1)?))
            })
            .map_err(sq("reading rollups of touched buckets"))?;
        for row in rows {
            let (bucket, rollup) = row.map_err(sq("reading a rollup"))?;
            out.push((*sid, bucket, rollup));
        }
    }
    Ok(out)
}

fn write_rollups(
    tx: &Transaction<'_>,
    interval: Interval,
    rollups: &BTreeMap<(i64, i64), Rollup>,
) -> Result<(), StoreError> {
    let sql = format!(
        "INSERT INTO {} (series_id, bucket, {ROLLUP_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
         ON CONFLICT (series_id, bucket) DO UPDATE SET
           count = excluded.count, sum = excluded.sum, min = excluded.min, max = excluded.max,
           first_at = excluded.first_at, first_value = excluded.first_value,
           last_at = excluded.last_at, last_value = excluded.last_value",
        rollup_table(interval)
    );
    let mut stmt = tx
        .prepare_cached(&sql)
        .map_err(sq("preparing rollup upsert"))?;
    for ((sid, bucket), r) in rollups {
        stmt.execute(params![
            sid, bucket, r.count, r.sum, r.min, r.max, r.first_ts, r.first, r.last_ts, r.last
        ])
        .map_err(sq("writing a rollup"))?;
    }
    Ok(())
}

impl Store for SqliteStore {
    fn migrate(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        self.blocking(|s| s.migrate_sync())
    }

    fn positions<'a>(
        &'a self,
        group: &'a str,
        topic: &'a str,
        partitions: &'a [i32],
    ) -> BoxFuture<'a, Result<HashMap<i32, i64>, StoreError>> {
        let (group, topic, partitions) = (group.to_owned(), topic.to_owned(), partitions.to_vec());
        self.blocking(move |s| {
            let conn = lock(&s.writer);
            let mut stmt = conn
                .prepare_cached(
                    "SELECT next_offset FROM consumer_positions WHERE group_id = ?1 AND topic = ?2 AND partition = ?3",
                )
                .map_err(sq("preparing position lookup"))?;
            let mut out = HashMap::new();
            for p in partitions {
                let pos: Option<i64> =
                    stmt.query_row(params![group, topic, p], |r| r.get(0)).optional().map_err(sq("reading a position"))?;
                if let Some(pos) = pos {
                    out.insert(p, pos);
                }
            }
            Ok(out)
        })
    }

    fn apply(&self, batch: ApplyBatch) -> BoxFuture<'_, Result<ApplyOutcome, StoreError>> {
        self.blocking(move |s| s.apply_sync(&batch))
    }

    fn series(&self, q: SeriesQuery) -> BoxFuture<'_, Result<Vec<Bucket>, StoreError>> {
        self.blocking(move |s| {
            let conn = lock(&s.reader);
            let sql = format!(
                "SELECT r.bucket, r.{} FROM {} r JOIN series s ON s.id = r.series_id
                 WHERE s.tenant = ?1 AND s.device = ?2 AND s.metric = ?3 AND r.bucket >= ?4 AND r.bucket < ?5
                 ORDER BY r.bucket LIMIT ?6",
                ROLLUP_COLUMNS.replace(", ", ", r."),
                rollup_table(q.interval)
            );
            let mut stmt = conn.prepare_cached(&sql).map_err(sq("preparing a series query"))?;
            let limit = i64::try_from(q.limit).unwrap_or(i64::MAX);
            let rows = stmt
                .query_map(
                    params![q.tenant, q.device, q.metric, q.from_ms.unwrap_or(i64::MIN), q.to_ms.unwrap_or(i64::MAX), limit],
                    |r| Ok(Bucket { start_ms: r.get(0)?, rollup: rollup_of(r, 1)? }),
                )
                .map_err(sq("reading a series"))?;
            rows.collect::<Result<Vec<_>, _>>().map_err(sq("reading a bucket"))
        })
    }

    fn snapshot(&self, interval: Interval) -> BoxFuture<'_, Result<Vec<SnapshotRow>, StoreError>> {
        self.blocking(move |s| {
            let conn = lock(&s.reader);
            let sql = format!(
                "SELECT s.tenant, s.device, s.metric, r.bucket, r.{} FROM {} r JOIN series s ON s.id = r.series_id
                 ORDER BY 1, 2, 3, 4",
                ROLLUP_COLUMNS.replace(", ", ", r."),
                rollup_table(interval)
            );
            let mut stmt = conn.prepare(&sql).map_err(sq("preparing a snapshot"))?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, Bucket { start_ms: r.get(3)?, rollup: rollup_of(r, 4)? }))
                })
                .map_err(sq("reading a snapshot"))?;
            rows.collect::<Result<Vec<_>, _>>().map_err(sq("reading a snapshot row"))
        })
    }

    fn devices(&self) -> BoxFuture<'_, Result<Vec<Device>, StoreError>> {
        self.blocking(|s| {
            let conn = lock(&s.reader);
            let mut stmt = conn
                .prepare_cached("SELECT DISTINCT tenant, device FROM series ORDER BY 1, 2")
                .map_err(sq("listing devices"))?;
            let rows = stmt
                .query_map([], |r| {
                    Ok(Device {
                        tenant: r.get(0)?,
                        device: r.get(1)?,
                    })
                })
                .map_err(sq("listing devices"))?;
            rows.collect::<Result<Vec<_>, _>>()
                .map_err(sq("reading a device"))
        })
    }

    fn metrics<'a>(
        &'a self,
        tenant: &'a str,
        device: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<String>, StoreError>> {
        let (tenant, device) = (tenant.to_owned(), device.map(str::to_owned));
        self.blocking(move |s| {
            let conn = lock(&s.reader);
            let mut stmt = conn
                .prepare_cached(
                    "SELECT DISTINCT metric FROM series WHERE tenant = ?1 AND (?2 IS NULL OR device = ?2) ORDER BY 1",
                )
                .map_err(sq("listing metrics"))?;
            let rows = stmt.query_map(params![tenant, device], |r| r.get(0)).map_err(sq("listing metrics"))?;
            rows.collect::<Result<Vec<_>, _>>().map_err(sq("reading a metric"))
        })
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        self.blocking(|s| {
            lock(&s.reader)
                .query_row("SELECT 1", [], |_| Ok(()))
                .map_err(sq("ping"))
        })
    }
}
