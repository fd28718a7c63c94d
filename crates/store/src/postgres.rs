//! PostgreSQL backend: array-based set statements (`unnest`), one transaction per batch.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, PoisonError};

use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use futures::future::BoxFuture;
use futures::FutureExt;
use postgres_openssl::MakeTlsConnector;
use reporting_core::reading::{Reading, SeriesKey};
use reporting_core::rollup::{fold_into_buckets, Rollup};
use reporting_core::time::Interval;
use tokio_postgres::{NoTls, Row, Transaction};

use crate::migrations::{pending, rollup_table, POSTGRES};
use crate::pg_tls;
use crate::recompute::{plan, source_of};
use crate::{
    ApplyBatch, ApplyOutcome, Bucket, Device, SeriesQuery, SnapshotRow, Store, StoreError,
};

/// The PostgreSQL store.
pub struct PostgresStore {
    pool: Pool,
    /// Series ids known to be committed (ids never change once committed).
    series_ids: Mutex<HashMap<SeriesKey, i64>>,
}

fn pg(context: &'static str) -> impl FnOnce(tokio_postgres::Error) -> StoreError {
    move |source| StoreError::Postgres { context, source }
}

fn ts(ms: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_millis(ms).ok_or(StoreError::TimestampOutOfRange(ms))
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

impl PostgresStore {
    /// Checks `url` without connecting: its syntax, its TLS parameters and the root certificate file they name.
    pub fn check_url(url: &str) -> Result<(), StoreError> {
        parse_url(url).map(|_| ())
    }

    /// A pool of at most `pool_size` connections to `url` (connections open lazily). TLS is chosen in the URL
    /// with libpq's `sslmode` and `sslrootcert` (see `pg_tls`: `require` verifies the server's certificate).
    pub fn connect(url: &str, pool_size: usize) -> Result<Self, StoreError> {
        let (config, tls, connector) = parse_url(url)?;
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match connector {
            Some(connector) => Manager::from_config(config, connector, manager_config),
            None => Manager::from_config(config, NoTls, manager_config),
        };
        tracing::info!(tls = %tls.describe(), "postgres connections");
        let pool = Pool::builder(manager)
            .max_size(pool_size.max(1))
            .build()
            .map_err(|e| StoreError::Pool {
                context: "building the pool",
                source: Box::new(e),
            })?;
        Ok(PostgresStore {
            pool,
            series_ids: Mutex::new(HashMap::new()),
        })
    }

    /// Whether this store's connections are encrypted (asks the server about one of them).
    pub async fn connection_is_encrypted(&self) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT coalesce((SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()), false)",
                &[],
            )
            .await
            .map_err(pg("asking whether the connection is encrypted"))?;
        Ok(row.get(0))
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(|e| StoreError::Pool {
            context: "getting a connection",
            source: Box::new(e),
        })
    }

    async fn migrate_inner(&self) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(pg("beginning migration"))?;
        tx.batch_execute(
            "SELECT pg_advisory_xact_lock(727001);
             CREATE TABLE IF NOT EXISTS schema_migrations (
                 version bigint PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now());",
        )
        .await
        .map_err(pg("preparing schema_migrations"))?;
        let current: i64 = tx
            .query_one(
                "SELECT coalesce(max(version), 0) FROM schema_migrations",
                &[],
            )
            .await
            .map_err(pg("reading the schema version"))?
            .get(0);
        for m in pending(POSTGRES, current)? {
            tx.batch_execute(m.sql)
                .await
                .map_err(pg("applying a migration"))?;
            tx.execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                &[&m.version, &m.name],
            )
            .await
            .map_err(pg("recording a migration"))?;
            tracing::info!(version = m.version, name = m.name, "migration applied");
        }
        tx.commit().await.map_err(pg("committing migrations"))
    }

    async fn apply_inner(&self, batch: ApplyBatch) -> Result<ApplyOutcome, StoreError> {
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(pg("beginning a batch"))?;
        // Batch statements are many cheap index probes that PostgreSQL costs high enough to compile (JIT): on
        // the stalled test's database, 283 ms of compiling for a 30 ms read-back of 5,000 minutes.
        tx.batch_execute("SET LOCAL jit = off")
            .await
            .map_err(pg("configuring a batch"))?;
        let mut advances = batch.advances.clone();
        advances.sort_by_key(|a| a.partition);
        // Positions first: the row lock serialises a zombie and the new owner before any rollup work.
        for a in &advances {
            let n = match a.expected {
                Some(expected) => tx
                    .execute(
                        "UPDATE consumer_positions SET next_offset = $4, updated_at = now()
                         WHERE group_id = $1 AND topic = $2 AND partition = $3 AND next_offset = $5",
                        &[&batch.group, &batch.topic, &a.partition, &a.next, &expected],
                    )
                    .await
                    .map_err(pg("advancing a position"))?,
                None => tx
                    .execute(
                        "INSERT INTO consumer_positions (group_id, topic, partition, next_offset)
                         VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                        &[&batch.group, &batch.topic, &a.partition, &a.next],
                    )
                    .await
                    .map_err(pg("creating a position"))?,
            };
            if n == 0 {
                tx.rollback()
                    .await
                    .map_err(pg("rolling back a fenced batch"))?;
                return Ok(ApplyOutcome::Fenced {
                    partition: a.partition,
                });
            }
        }
        if batch.readings.is_empty() {
            tx.commit().await.map_err(pg("committing a batch"))?;
            return Ok(ApplyOutcome::Applied { changed: 0 });
        }
        let (ids, new_ids) = self.series_ids(&tx, &batch.readings).await?;
        let (inserted, replaced) = upsert_readings(&tx, &batch.readings, &ids).await?;
        // Level by level (minutes first: hours are recomputed from written minutes, days from hours).
        for (interval, level) in Interval::ALL.into_iter().zip(plan(&inserted, &replaced)) {
            if !level.recompute.is_empty() {
                let rollups = match source_of(interval) {
                    None => fold_into_buckets(interval, raw_in(&tx, &level.recompute).await?),
                    Some(src) => fold_into_buckets(
                        interval,
                        rollups_in(&tx, src, interval, &level.recompute).await?,
                    ),
                };
                write_rollups(&tx, interval, &rollups, Write::Replace).await?;
            }
            write_rollups(&tx, interval, &level.merge, Write::Merge).await?;
        }
        tx.commit().await.map_err(pg("committing a batch"))?;
        self.series_ids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(new_ids);
        Ok(ApplyOutcome::Applied {
            changed: inserted.len() + replaced.len(),
        })
    }

    /// Ids of every series in `readings`, creating missing ones. Returns all ids and the ones not yet cached.
    async fn series_ids(
        &self,
        tx: &Transaction<'_>,
        readings: &[Reading],
    ) -> Result<(HashMap<SeriesKey, i64>, Vec<(SeriesKey, i64)>), StoreError> {
        let wanted: BTreeSet<SeriesKey> = readings.iter().map(Reading::series).collect();
        let mut ids = HashMap::new();
        let mut missing = Vec::new();
        {
            let cache = self
                .series_ids
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            for k in wanted {
                match cache.get(&k) {
                    Some(id) => {
                        ids.insert(k, *id);
                    }
                    None => missing.push(k),
                }
            }
        }
        if missing.is_empty() {
            return Ok((ids, Vec::new()));
        }
        // Sorted (BTreeSet order) so concurrent batches lock new keys in the same order.
        let tenants: Vec<&str> = missing.iter().map(|k| k.tenant.as_str()).collect();
        let devices: Vec<&str> = missing.iter().map(|k| k.device.as_str()).collect();
        let metrics: Vec<&str> = missing.iter().map(|k| k.metric.as_str()).collect();
        tx.execute(
            "INSERT INTO series (tenant, device, metric)
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[]) ON CONFLICT DO NOTHING",
            &[&tenants, &devices, &metrics],
        )
        .await
        .map_err(pg("creating series"))?;
        let rows = tx
            .query(
                "SELECT s.id, s.tenant, s.device, s.metric FROM series s
                 JOIN unnest($1::text[], $2::text[], $3::text[]) AS k(tenant, device, metric)
                   ON s.tenant = k.tenant AND s.device = k.device AND s.metric = k.metric",
                &[&tenants, &devices, &metrics],
            )
            .await
            .map_err(pg("reading series ids"))?;
        let mut new_ids = Vec::with_capacity(rows.len());
        for row in rows {
            let key = SeriesKey {
                tenant: row.get(1),
                device: row.get(2),
                metric: row.get(3),
            };
            let id: i64 = row.get(0);
            ids.insert(key.clone(), id);
            new_ids.push((key, id));
        }
        Ok((ids, new_ids))
    }
}

/// The driver's configuration for `url`, its TLS choice and the connector for it (`None`: plain TCP).
fn parse_url(
    url: &str,
) -> Result<
    (
        tokio_postgres::Config,
        pg_tls::Tls,
        Option<MakeTlsConnector>,
    ),
    StoreError,
> {
    let (url, tls) = pg_tls::split(url)?;
    let config = url.parse().map_err(StoreError::InvalidUrl)?;
    let connector = pg_tls::connector(&tls)?;
    Ok((config, tls, connector))
}

/// Readings a batch stored as new `(series_id, ts, value)`, and those whose value it replaced `(series_id, ts)`.
type Upserted = (Vec<(i64, i64, f64)>, Vec<(i64, i64)>);

/// Upserts raw readings (unique identities: the aggregator deduplicates each batch); returns those inserted and
/// those whose value changed. Repeats of a stored value are neither.
async fn upsert_readings(
    tx: &Transaction<'_>,
    readings: &[Reading],
    ids: &HashMap<SeriesKey, i64>,
) -> Result<Upserted, StoreError> {
    let mut sids = Vec::with_capacity(readings.len());
    let mut times = Vec::with_capacity(readings.len());
    let mut values = Vec::with_capacity(readings.len());
    for r in readings {
        let key = r.series();
        let Some(id) = ids.get(&key) else { continue };
        sids.push(*id);
        times.push(ts(r.ts_ms)?);
        values.push(r.value);
    }
    let rows = tx
        .query(
            "INSERT INTO readings (series_id, ts, value)
             SELECT * FROM unnest($1::bigint[], $2::timestamptz[], $3::float8[])
             ON CONFLICT (series_id, ts) DO UPDATE SET value = EXCLUDED.value
               WHERE readings.value IS DISTINCT FROM EXCLUDED.value
             RETURNING series_id, ts, value, xmax = 0",
            &[&sids, &times, &values],
        )
        .await
        .map_err(pg("upserting readings"))?;
    // A row version this statement inserted has no deleting or locking transaction (`xmax` 0); one it updated
    // carries this transaction's id there.
    let (mut inserted, mut replaced) = (Vec::new(), Vec::new());
    for r in &rows {
        let (sid, at) = (r.get::<_, i64>(0), ms(r.get(1)));
        if r.get::<_, bool>(3) {
            inserted.push((sid, at, r.get(2)));
        } else {
            replaced.push((sid, at));
        }
    }
    Ok((inserted, replaced))
}

/// Parallel arrays `(series ids, bucket starts, bucket ends)` for `unnest`.
type BucketArrays = (Vec<i64>, Vec<DateTime<Utc>>, Vec<DateTime<Utc>>);

fn bucket_arrays(
    interval: Interval,
    buckets: &BTreeSet<(i64, i64)>,
) -> Result<BucketArrays, StoreError> {
    let mut sids = Vec::with_capacity(buckets.len());
    let mut starts = Vec::with_capacity(buckets.len());
    let mut ends = Vec::with_capacity(buckets.len());
    for (sid, start) in buckets {
        sids.push(*sid);
        starts.push(ts(*start)?);
        ends.push(ts(start + interval.len_ms())?);
    }
    Ok((sids, starts, ends))
}

/// Raw readings inside the given minute buckets, as single-reading rollups.
///
/// One index range scan per bucket, forced: as a plain join, PostgreSQL estimates the range condition at a
/// third of each series and picks a merge or hash join on `series_id` alone, which compares every bucket with
/// every reading of its series (measured: 41 s for 5,000 buckets over 305,000 readings, against 30 ms this
/// way). `OFFSET 0` keeps the planner from flattening the lateral subquery back into that join.
async fn raw_in(
    tx: &Transaction<'_>,
    buckets: &BTreeSet<(i64, i64)>,
) -> Result<Vec<(i64, i64, Rollup)>, StoreError> {
    let (sids, starts, ends) = bucket_arrays(Interval::Minute, buckets)?;
    let rows = tx
        .query(
            "SELECT b.sid, r.ts, r.value
             FROM unnest($1::bigint[], $2::timestamptz[], $3::timestamptz[]) AS b(sid, start, stop)
             CROSS JOIN LATERAL (
               SELECT ts, value FROM readings WHERE series_id = b.sid AND ts >= b.start AND ts < b.stop
               OFFSET 0) r",
            &[&sids, &starts, &ends],
        )
        .await
        .map_err(pg("reading raw readings of touched minutes"))?;
    Ok(rows
        .iter()
        .map(|r| {
            let t = ms(r.get(1));
            (r.get::<_, i64>(0), t, Rollup::of_reading(t, r.get(2)))
        })
        .collect())
}

fn rollup_of(row: &Row, offset: usize) -> Rollup {
    Rollup {
        count: row.get(offset),
        sum: row.get(offset + 1),
        min: row.get(offset + 2),
        max: row.get(offset + 3),
        first_ts: ms(row.get(offset + 4)),
        first: row.get(offset + 5),
        last_ts: ms(row.get(offset + 6)),
        last: row.get(offset + 7),
    }
}

/// About 4368 BC and 255,000 AD: inside what `timestamptz` holds.
const PG_MIN_MS: i64 = -200_000_000_000_000;
const PG_MAX_MS: i64 = 8_000_000_000_000_000;

const ROLLUP_COLUMNS: &str = "count, sum, min, max, first_at, first_value, last_at, last_value";

/// Rollups of level `src` inside the given buckets of level `parent` (one index range scan per bucket, for
/// the reason given at [`raw_in`]).
async fn rollups_in(
    tx: &Transaction<'_>,
    src: Interval,
    parent: Interval,
    buckets: &BTreeSet<(i64, i64)>,
) -> Result<Vec<(i64, i64, Rollup)>, StoreError> {
    let (sids, starts, ends) = bucket_arrays(parent, buckets)?;
    let sql = format!(
        "SELECT b.sid, m.bucket, m.count, m.sum, m.min, m.max, m.first_at, m.first_value, m.last_at, m.last_value
         FROM unnest($1::bigint[], $2::timestamptz[], $3::timestamptz[]) AS b(sid, start, stop)
         CROSS JOIN LATERAL (
           SELECT bucket, {ROLLUP_COLUMNS} FROM {} WHERE series_id = b.sid AND bucket >= b.start AND bucket < b.stop
           OFFSET 0) m",
        rollup_table(src)
    );
    let rows = tx
        .query(&sql, &[&sids, &starts, &ends])
        .await
        .map_err(pg("reading rollups of touched buckets"))?;
    Ok(rows
        .iter()
        .map(|r| (r.get::<_, i64>(0), ms(r.get(1)), rollup_of(r, 2)))
        .collect())
}

/// How [`write_rollups`] treats a stored rollup of the same bucket.
#[derive(Clone, Copy)]
enum Write {
    /// Overwrite it (the rollup was recomputed from the level below).
    Replace,
    /// Merge into it (the rollup covers only new readings): the SQL twin of [`Rollup::merge`]. New readings
    /// never share a timestamp with stored ones of their series, so first and last need no tie-break.
    Merge,
}

async fn write_rollups(
    tx: &Transaction<'_>,
    interval: Interval,
    rollups: &BTreeMap<(i64, i64), Rollup>,
    mode: Write,
) -> Result<(), StoreError> {
    if rollups.is_empty() {
        return Ok(());
    }
    let n = rollups.len();
    let (mut sids, mut buckets, mut counts, mut sums, mut mins, mut maxs) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut first_at, mut firsts, mut last_at, mut lasts) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for ((sid, bucket), r) in rollups {
        sids.push(*sid);
        buckets.push(ts(*bucket)?);
        counts.push(r.count);
        sums.push(r.sum);
        mins.push(r.min);
        maxs.push(r.max);
        first_at.push(ts(r.first_ts)?);
        firsts.push(r.first);
        last_at.push(ts(r.last_ts)?);
        lasts.push(r.last);
    }
    let update = match mode {
        Write::Replace => {
            "count = EXCLUDED.count, sum = EXCLUDED.sum, min = EXCLUDED.min, max = EXCLUDED.max,
             first_at = EXCLUDED.first_at, first_value = EXCLUDED.first_value,
             last_at = EXCLUDED.last_at, last_value = EXCLUDED.last_value"
        }
        // Every expression reads the stored row as it was before this update.
        Write::Merge => {
            "count = t.count + EXCLUDED.count, sum = t.sum + EXCLUDED.sum,
             min = LEAST(t.min, EXCLUDED.min), max = GREATEST(t.max, EXCLUDED.max),
             first_at = CASE WHEN EXCLUDED.first_at < t.first_at THEN EXCLUDED.first_at ELSE t.first_at END,
             first_value = CASE WHEN EXCLUDED.first_at < t.first_at THEN EXCLUDED.first_value ELSE t.first_value END,
             last_at = CASE WHEN EXCLUDED.last_at > t.last_at THEN EXCLUDED.last_at ELSE t.last_at END,
             last_value = CASE WHEN EXCLUDED.last_at > t.last_at THEN EXCLUDED.last_value ELSE t.last_value END"
        }
    };
    let sql = format!(
        "INSERT INTO {} AS t (series_id, bucket, {ROLLUP_COLUMNS})
         SELECT * FROM unnest($1::bigint[], $2::timestamptz[], $3::bigint[], $4::float8[], $5::float8[],
                              $6::float8[], $7::timestamptz[], $8::float8[], $9::timestamptz[], $10::float8[])
         ON CONFLICT (series_id, bucket) DO UPDATE SET {update}",
        rollup_table(interval)
    );
    tx.execute(
        &sql,
        &[
            &sids, &buckets, &counts, &sums, &mins, &maxs, &first_at, &firsts, &last_at, &lasts,
        ],
    )
    .await
    .map_err(pg("writing rollups"))?;
    Ok(())
}

impl Store for PostgresStore {
    fn migrate(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        self.migrate_inner().boxed()
    }

    fn positions<'a>(
        &'a self,
        group: &'a str,
        topic: &'a str,
        partitions: &'a [i32],
    ) -> BoxFuture<'a, Result<HashMap<i32, i64>, StoreError>> {
        async move {
            let client = self.client().await?;
            let rows = client
                .query(
                    "SELECT partition, next_offset FROM consumer_positions
                     WHERE group_id = $1 AND topic = $2 AND partition = ANY($3)",
                    &[&group, &topic, &partitions],
                )
                .await
                .map_err(pg("reading positions"))?;
            Ok(rows
                .iter()
                .map(|r| (r.get::<_, i32>(0), r.get::<_, i64>(1)))
                .collect())
        }
        .boxed()
    }

    fn apply(&self, batch: ApplyBatch) -> BoxFuture<'_, Result<ApplyOutcome, StoreError>> {
        self.apply_inner(batch).boxed()
    }

    fn series(&self, q: SeriesQuery) -> BoxFuture<'_, Result<Vec<Bucket>, StoreError>> {
        async move {
            let client = self.client().await?;
            // Clamped into PostgreSQL's timestamptz range (4713 BC to 294276 AD).
            let from = ts(q.from_ms.unwrap_or(PG_MIN_MS).clamp(PG_MIN_MS, PG_MAX_MS))?;
            let to = ts(q.to_ms.unwrap_or(PG_MAX_MS).clamp(PG_MIN_MS, PG_MAX_MS))?;
            let limit = i64::try_from(q.limit).unwrap_or(i64::MAX);
            let sql = format!(
                "SELECT r.bucket, r.count, r.sum, r.min, r.max, r.first_at, r.first_value, r.last_at, r.last_value
                 FROM {} r JOIN series s ON s.id = r.series_id
                 WHERE s.tenant = $1 AND s.device = $2 AND s.metric = $3 AND r.bucket >= $4 AND r.bucket < $5
                 ORDER BY r.bucket LIMIT $6",
                rollup_table(q.interval)
            );
            let rows = client
                .query(&sql, &[&q.tenant, &q.device, &q.metric, &from, &to, &limit])
                .await
                .map_err(pg("reading a series"))?;
            Ok(rows.iter().map(|r| Bucket { start_ms: ms(r.get(0)), rollup: rollup_of(r, 1) }).collect())
        }
        .boxed()
    }

    fn snapshot(&self, interval: Interval) -> BoxFuture<'_, Result<Vec<SnapshotRow>, StoreError>> {
        async move {
            let client = self.client().await?;
            let sql = format!(
                "SELECT s.tenant, s.device, s.metric, r.bucket, {ROLLUP_COLUMNS}
                 FROM {} r JOIN series s ON s.id = r.series_id ORDER BY 1, 2, 3, 4",
                rollup_table(interval)
            );
            let rows = client
                .query(&sql, &[])
                .await
                .map_err(pg("reading a snapshot"))?;
            Ok(rows
                .iter()
                .map(|r| {
                    (
                        r.get(0),
                        r.get(1),
                        r.get(2),
                        Bucket {
                            start_ms: ms(r.get(3)),
                            rollup: rollup_of(r, 4),
                        },
                    )
                })
                .collect())
        }
        .boxed()
    }

    fn devices(&self) -> BoxFuture<'_, Result<Vec<Device>, StoreError>> {
        async move {
            let client = self.client().await?;
            let rows = client
                .query(
                    "SELECT DISTINCT tenant, device FROM series ORDER BY 1, 2",
                    &[],
                )
                .await
                .map_err(pg("listing devices"))?;
            Ok(rows
                .iter()
                .map(|r| Device {
                    tenant: r.get(0),
                    device: r.get(1),
                })
                .collect())
        }
        .boxed()
    }

    fn metrics<'a>(
        &'a self,
        tenant: &'a str,
        device: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<String>, StoreError>> {
        async move {
            let client = self.client().await?;
            let rows = client
                .query(
                    "SELECT DISTINCT metric FROM series WHERE tenant = $1 AND ($2::text IS NULL OR device = $2) ORDER BY 1",
                    &[&tenant, &device],
                )
                .await
                .map_err(pg("listing metrics"))?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        }
        .boxed()
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        async move {
            let client = self.client().await?;
            client.simple_query("SELECT 1").await.map_err(pg("ping"))?;
            Ok(())
        }
        .boxed()
    }
}
