//! A durable embedded log: the bus of `reporting up`, with Kafka's guarantees for one process.
//!
//! Layout: `<dir>/partitions` holds the partition count (fixed when the log is created) and
//! `<dir>/partition-<n>.log` the records of partition `n`. A record is framed as
//! `[u32 length LE][u32 CRC-32 of payload LE][payload]`; its offset is its index in the file. An append writes all
//! frames of a publish and calls `fsync` before returning, so an acknowledged record survives a crash. On open,
//! each file is scanned and a torn tail (a frame cut short or failing its checksum: an append that was never
//! acknowledged) is truncated. `<dir>/lock` is held with an exclusive file lock while the log is open.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::FutureExt;

use crate::{
    BatchLimits, BusError, Consumer, Message, OutRecord, Polled, PositionSource, Publisher,
};

const HEADER: usize = 8;

/// The embedded log, shared by the publisher and the consumer of one process.
#[derive(Clone)]
pub struct EmbeddedLog {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    partitions: Vec<Mutex<PartitionFile>>,
    /// Bumped after every append; consumers wait on it.
    appended: Mutex<u64>,
    wake: Condvar,
    _lock: File,
}

struct PartitionFile {
    file: File,
    /// Byte position of each record; `positions.len()` is the next offset.
    positions: Vec<u64>,
    end: u64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl EmbeddedLog {
    /// Opens (or creates with `partitions` partitions) the log in `dir`. An existing log keeps its own count.
    pub fn open(dir: &Path, partitions: u32) -> Result<EmbeddedLog, BusError> {
        fs::create_dir_all(dir)
            .map_err(|e| BusError::io(format!("creating {}", dir.display()), e))?;
        let lock_path = dir.join("lock");
        let lock_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| BusError::io(format!("opening {}", lock_path.display()), e))?;
        if lock_file.try_lock().is_err() {
            return Err(BusError::Locked(dir.display().to_string()));
        }
        let count_path = dir.join("partitions");
        let count = match fs::read_to_string(&count_path) {
            Ok(s) => s.trim().parse::<u32>().map_err(|e| {
                BusError::io(
                    format!("reading {}", count_path.display()),
                    std::io::Error::new(std::io::ErrorKind::InvalidData, e),
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let n = partitions.max(1);
                write_synced(&count_path, format!("{n}\n").as_bytes())?;
                n
            }
            Err(e) => return Err(BusError::io(format!("reading {}", count_path.display()), e)),
        };
        if count != partitions {
            tracing::warn!(
                existing = count,
                configured = partitions,
                "embedded log keeps the partition count it was created with"
            );
        }
        let mut files = Vec::with_capacity(count as usize);
        for p in 0..count {
            files.push(Mutex::new(PartitionFile::open(
                &dir.join(format!("partition-{p}.log")),
            )?));
        }
        sync_dir(dir)?;
        Ok(EmbeddedLog {
            inner: Arc::new(Inner {
                dir: dir.to_owned(),
                partitions: files,
                appended: Mutex::new(0),
                wake: Condvar::new(),
                _lock: lock_file,
            }),
        })
    }

    /// Number of partitions.
    pub fn partition_count(&self) -> u32 {
        self.inner.partitions.len() as u32
    }

    /// The partition a key goes to (FNV-1a, stable across versions and restarts).
    pub fn partition_for(&self, key: &[u8]) -> i32 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in key {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        (h % self.inner.partitions.len() as u64) as i32
    }

    /// Appends values to their partitions and fsyncs each touched partition before returning.
    pub fn append(&self, records: &[OutRecord]) -> Result<(), BusError> {
        let mut by_partition: BTreeMap<i32, Vec<&[u8]>> = BTreeMap::new();
        for r in records {
            by_partition
                .entry(self.partition_for(&r.key))
                .or_default()
                .push(&r.value);
        }
        for (p, values) in by_partition {
            let mut part = lock(&self.inner.partitions[p as usize]);
            part.append(&values).map_err(|e| {
                BusError::io(
                    format!("appending to partition {p} in {}", self.inner.dir.display()),
                    e,
                )
            })?;
        }
        *lock(&self.inner.appended) += 1;
        self.inner.wake.notify_all();
        Ok(())
    }

    /// Next offset (number of records) of a partition.
    pub fn end_offset(&self, partition: i32) -> i64 {
        self.inner
            .partitions
            .get(partition as usize)
            .map_or(0, |p| lock(p).positions.len() as i64)
    }

    /// Reads up to `max` records of `partition` from `from`, stopping before `max_bytes` of frames (but always
    /// returning at least one record when there is one).
    pub fn read(
        &self,
        partition: i32,
        from: i64,
        max: usize,
        max_bytes: usize,
    ) -> Result<Vec<Message>, BusError> {
        let Some(part) = self.inner.partitions.get(partition as usize) else {
            return Ok(Vec::new());
        };
        let (file, start, end_pos, first) = {
            let part = lock(part);
            let first = from.max(0) as usize;
            if first >= part.positions.len() || max == 0 {
                return Ok(Vec::new());
            }
            let mut last = (first + max).min(part.positions.len());
            let start = part.positions[first];
            let end_of = |i: usize| part.positions.get(i).copied().unwrap_or(part.end);
            while last > first + 1 && (end_of(last) - start) as usize > max_bytes {
                last = first + 1 + (last - first - 1) / 2;
            }
            let end_pos = end_of(last);
            let file = part
                .file
                .try_clone()
                .map_err(|e| BusError::io("cloning a partition handle", e))?;
            (file, part.positions[first], end_pos, first)
        };
        let mut buf = vec![0u8; (end_pos - start) as usize];
        file.read_exact_at(&mut buf, start)
            .map_err(|e| BusError::io(format!("reading partition {partition}"), e))?;
        let mut out = Vec::new();
        let mut at = 0usize;
        let mut offset = first as i64;
        while at + HEADER <= buf.len() {
            let len = u32::from_le_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]) as usize;
            let value = buf[at + HEADER..at + HEADER + len].to_vec();
            out.push(Message {
                partition,
                offset,
                value,
            });
            at += HEADER + len;
            offset += 1;
        }
        Ok(out)
    }

    /// Waits until something is appended or `timeout` passes.
    fn wait_for_append(&self, seen: u64, timeout: Duration) {
        let guard = lock(&self.inner.appended);
        if *guard != seen {
            return;
        }
        let _unused = self
            .inner
            .wake
            .wait_timeout_while(guard, timeout, |g| *g == seen)
            .unwrap_or_else(PoisonError::into_inner);
    }

    fn append_generation(&self) -> u64 {
        *lock(&self.inner.appended)
    }
}

impl PartitionFile {
    fn open(path: &Path) -> Result<PartitionFile, BusError> {
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .append(true)
            .open(path)
            .map_err(|e| BusError::io(format!("opening {}", path.display()), e))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|e| BusError::io(format!("reading {}", path.display()), e))?;
        let mut positions = Vec::new();
        let mut at = 0usize;
        while at + HEADER <= bytes.len() {
            let len = u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
                as usize;
            let crc =
                u32::from_le_bytes([bytes[at + 4], bytes[at + 5], bytes[at + 6], bytes[at + 7]]);
            let Some(payload) = bytes.get(at + HEADER..at + HEADER + len) else {
                break;
            };
            if crc32fast::hash(payload) != crc {
                break;
            }
            positions.push(at as u64);
            at += HEADER + len;
        }
        if at < bytes.len() {
            tracing::warn!(
                file = %path.display(),
                kept_records = positions.len(),
                dropped_bytes = bytes.len() - at,
                "truncating the embedded log after its last intact record (at the end of the file this is an interrupted append that was never acknowledged; elsewhere the file was damaged)"
            );
            file.set_len(at as u64)
                .and_then(|()| file.sync_all())
                .map_err(|e| BusError::io(format!("truncating {}", path.display()), e))?;
        }
        Ok(PartitionFile {
            file,
            positions,
            end: at as u64,
        })
    }

    fn append(&mut self, values: &[&[u8]]) -> std::io::Result<()> {
        let total: usize = values.iter().map(|v| HEADER + v.len()).sum();
        let mut buf = Vec::with_capacity(total);
        let mut new_positions = Vec::with_capacity(values.len());
        for v in values {
            let len = u32::try_from(v.len()).map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "record larger than 4 GiB")
            })?;
            new_positions.push(self.end + buf.len() as u64);
            buf.extend_from_slice(&len.to_le_bytes());
            buf.extend_from_slice(&crc32fast::hash(v).to_le_bytes());
            buf.extend_from_slice(v);
        }
        if let Err(e) = self
            .file
            .write_all(&buf)
            .and_then(|()| self.file.sync_data())
        {
            // Cut whatever part was written so the next append starts on a frame boundary.
            let _ignored = self.file.set_len(self.end);
            return Err(e);
        }
        self.end += buf.len() as u64;
        self.positions.extend(new_positions);
        Ok(())
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), BusError> {
    let mut f =
        File::create(path).map_err(|e| BusError::io(format!("creating {}", path.display()), e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| BusError::io(format!("writing {}", path.display()), e))
}

fn sync_dir(dir: &Path) -> Result<(), BusError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| BusError::io(format!("syncing {}", dir.display()), e))
}

impl Publisher for EmbeddedLog {
    fn publish(&self, records: Vec<OutRecord>) -> BoxFuture<'_, Result<(), BusError>> {
        let log = self.clone();
        async move {
            tokio::task::spawn_blocking(move || log.append(&records))
                .await
                .map_err(|e| BusError::Unavailable {
                    context: "append task failed".into(),
                    source: Some(Box::new(e)),
                })?
        }
        .boxed()
    }

    fn check_ready(&self) -> BoxFuture<'_, Result<(), BusError>> {
        async { Ok(()) }.boxed()
    }
}

/// The single consumer of an embedded log: it owns every partition.
pub struct EmbeddedConsumer {
    log: EmbeddedLog,
    source: Arc<dyn PositionSource>,
    /// Next offset to read per partition; empty until the first poll assigns all partitions.
    next: HashMap<i32, i64>,
    /// Next offset not yet applied to the store per partition (for the lag).
    applied: HashMap<i32, i64>,
    cursor: usize,
}

impl EmbeddedConsumer {
    /// A consumer that asks `source` for the stored positions when it starts.
    pub fn new(log: EmbeddedLog, source: Arc<dyn PositionSource>) -> Self {
        EmbeddedConsumer {
            log,
            source,
            next: HashMap::new(),
            applied: HashMap::new(),
            cursor: 0,
        }
    }
}

impl Consumer for EmbeddedConsumer {
    fn poll_batch(&mut self, limits: &BatchLimits) -> Result<Polled, BusError> {
        let (max_messages, linger) = (limits.max_messages, limits.linger);
        let mut polled = Polled::default();
        if self.next.is_empty() {
            let partitions: Vec<i32> = (0..self.log.partition_count() as i32).collect();
            let stored = self
                .source
                .positions(&partitions)
                .map_err(|e| BusError::Unavailable {
                    context: format!("loading stored positions: {e}"),
                    source: None,
                })?;
            for p in partitions {
                let pos = stored.get(&p).copied();
                self.next.insert(p, pos.unwrap_or(0));
                self.applied.insert(p, pos.unwrap_or(0));
                polled.assigned.push((p, pos));
            }
        }
        let deadline = Instant::now() + linger;
        let count = self.log.partition_count() as usize;
        loop {
            let seen = self.log.append_generation();
            for i in 0..count {
                let p = ((self.cursor + i) % count) as i32;
                let room = max_messages.saturating_sub(polled.messages.len());
                let bytes: usize = polled.messages.iter().map(|m| m.value.len()).sum();
                if room == 0 || bytes >= limits.max_bytes {
                    break;
                }
                let from = self.next.get(&p).copied().unwrap_or(0);
                let got = self.log.read(p, from, room, limits.max_bytes - bytes)?;
                if let Some(last) = got.last() {
                    self.next.insert(p, last.offset + 1);
                }
                polled.messages.extend(got);
            }
            self.cursor = (self.cursor + 1) % count.max(1);
            let now = Instant::now();
            if polled.messages.len() >= max_messages
                || now >= deadline
                || !polled.messages.is_empty()
            {
                return Ok(polled);
            }
            self.log.wait_for_append(seen, deadline - now);
        }
    }

    fn seek(&mut self, partition: i32, next_offset: Option<i64>) -> Result<(), BusError> {
        self.next.insert(partition, next_offset.unwrap_or(0));
        self.applied.insert(partition, next_offset.unwrap_or(0));
        Ok(())
    }

    fn applied(&mut self, partition: i32, next_offset: i64) {
        self.applied.insert(partition, next_offset);
    }

    fn lag(&mut self) -> Vec<(i32, i64)> {
        let mut out: Vec<(i32, i64)> = self
            .applied
            .iter()
            .map(|(p, n)| (*p, (self.log.end_offset(*p) - n).max(0)))
            .collect();
        out.sort_unstable();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: BatchLimits = BatchLimits {
        max_messages: 100,
        max_bytes: 1 << 20,
        linger: Duration::from_millis(10),
    };

    struct NoPositions;
    impl PositionSource for NoPositions {
        fn positions(&self, _: &[i32]) -> Result<HashMap<i32, i64>, String> {
            Ok(HashMap::new())
        }
    }

    fn rec(key: &str, value: &str) -> OutRecord {
        OutRecord {
            key: key.as_bytes().to_vec(),
            value: value.as_bytes().to_vec(),
        }
    }

    #[test]
    fn appended_records_survive_reopening_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let log = EmbeddedLog::open(dir.path(), 3).expect("open");
            log.append(&[rec("a", "1"), rec("a", "2")]).expect("append");
            log.append(&[rec("a", "3")]).expect("append");
        }
        let log = EmbeddedLog::open(dir.path(), 8).expect("reopen");
        assert_eq!(
            log.partition_count(),
            3,
            "the count chosen at creation is kept"
        );
        let p = log.partition_for(b"a");
        let values: Vec<Vec<u8>> = log
            .read(p, 0, 10, usize::MAX)
            .expect("read")
            .into_iter()
            .map(|m| m.value)
            .collect();
        assert_eq!(values, vec![b"1".to_vec(), b"2".to_vec(), b"3".to_vec()]);
        assert_eq!(log.read(p, 1, 1, usize::MAX).expect("read")[0].offset, 1);
    }

    #[test]
    fn torn_tail_is_truncated_and_later_appends_continue_cleanly() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p;
        {
            let log = EmbeddedLog::open(dir.path(), 1).expect("open");
            p = log.partition_for(b"k");
            log.append(&[rec("k", "kept")]).expect("append");
        }
        let path = dir.path().join(format!("partition-{p}.log"));
        // A crash in the middle of an unacknowledged append: a header promising 100 bytes, 3 bytes written.
        let mut f = OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open file");
        f.write_all(&100u32.to_le_bytes())
            .and_then(|()| f.write_all(&[0, 0, 0, 0, 1, 2, 3]))
            .expect("write");
        drop(f);
        let log = EmbeddedLog::open(dir.path(), 1).expect("reopen");
        log.append(&[rec("k", "next")]).expect("append");
        let values: Vec<Vec<u8>> = log
            .read(p, 0, 10, usize::MAX)
            .expect("read")
            .into_iter()
            .map(|m| m.value)
            .collect();
        assert_eq!(values, vec![b"kept".to_vec(), b"next".to_vec()]);
    }

    #[test]
    fn corrupted_record_is_detected_by_its_checksum() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let log = EmbeddedLog::open(dir.path(), 1).expect("open");
            log.append(&[rec("k", "good"), rec("k", "flip")])
                .expect("append");
        }
        let path = dir.path().join("partition-0.log");
        let mut bytes = fs::read(&path).expect("read");
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        fs::write(&path, bytes).expect("write");
        let log = EmbeddedLog::open(dir.path(), 1).expect("reopen");
        assert_eq!(log.end_offset(0), 1);
    }

    #[test]
    fn reads_stop_at_the_byte_limit_but_return_at_least_one_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = EmbeddedLog::open(dir.path(), 1).expect("open");
        log.append(&[
            rec("k", "aaaaaaaaaa"),
            rec("k", "bbbbbbbbbb"),
            rec("k", "cccccccccc"),
        ])
        .expect("append");
        // Each frame is 8 + 10 bytes.
        assert_eq!(log.read(0, 0, 10, 36).expect("read").len(), 2);
        assert_eq!(log.read(0, 0, 10, 35).expect("read").len(), 1);
        assert_eq!(log.read(0, 0, 10, 1).expect("read").len(), 1);
        assert_eq!(log.read(0, 1, 10, usize::MAX).expect("read").len(), 2);
    }

    #[test]
    fn second_open_of_the_same_directory_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let _log = EmbeddedLog::open(dir.path(), 1).expect("open");
        assert!(matches!(
            EmbeddedLog::open(dir.path(), 1),
            Err(BusError::Locked(_))
        ));
    }

    #[test]
    fn consumer_assigns_every_partition_then_reads_from_its_positions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = EmbeddedLog::open(dir.path(), 2).expect("open");
        log.append(&[rec("x", "1"), rec("y", "2"), rec("z", "3")])
            .expect("append");
        let mut consumer = EmbeddedConsumer::new(log.clone(), Arc::new(NoPositions));
        let first = consumer.poll_batch(&LIMITS).expect("poll");
        assert_eq!(first.assigned.len(), 2);
        assert_eq!(first.messages.len(), 3);
        let empty = consumer.poll_batch(&LIMITS).expect("poll");
        assert!(empty.messages.is_empty());
        consumer
            .seek(log.partition_for(b"x"), Some(0))
            .expect("seek");
        let again = consumer.poll_batch(&LIMITS).expect("poll");
        assert!(again.messages.iter().any(|m| m.value == b"1"));
    }
}
