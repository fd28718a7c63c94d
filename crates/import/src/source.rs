//! Reading the CSV files into batches of readings.
//!
//! This side is blocking (file I/O, gzip, CSV parsing) and runs on a blocking thread; it hands full batches to the
//! async sender through a bounded channel, so it never runs more than a few batches ahead of the network.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::mem;
use std::path::{Path, PathBuf};

use csv::{ReaderBuilder, StringRecord, Trim};
use flate2::bufread::MultiGzDecoder;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::mpsc;

use crate::row::{Columns, Reading};
use crate::ImportError;

/// The first two bytes of every gzip stream.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Buffer between the file and the decompressor or CSV parser.
const READ_BUFFER_BYTES: usize = 256 * 1024;

/// Progress bar per file: its name, then compressed bytes read of the file's size, rate and time left.
const PROGRESS_TEMPLATE: &str =
    "{msg:40!} [{bar:30}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta}";

/// The reason counted for a row whose bytes are not UTF-8.
const INVALID_UTF8: &str = "invalid_utf8";

/// What reading the files found, apart from the readings themselves.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct ReadStats {
    /// Files read to the end.
    pub(crate) files: usize,
    /// Data rows read, malformed ones included.
    pub(crate) rows: u64,
    /// Metric values that were `NA` or empty.
    pub(crate) skipped_missing: u64,
    /// Rows that yielded no readings, by reason.
    pub(crate) malformed_rows_by_reason: BTreeMap<String, u64>,
}

/// Whether the sender still wants batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Continue,
    /// The receiving side is gone (the import failed while sending): stop reading.
    Stop,
}

/// Reads files into batches of exactly `batch_size` readings (the last one may be shorter); batches run across
/// file boundaries.
pub(crate) struct Source {
    batch_size: usize,
    tenant: Option<String>,
    show_progress: bool,
    batches: mpsc::Sender<Vec<Reading>>,
    batch: Vec<Reading>,
    stats: ReadStats,
}

impl Source {
    /// A source that sends its batches to `batches`.
    pub(crate) fn new(
        batch_size: usize,
        tenant: Option<String>,
        show_progress: bool,
        batches: mpsc::Sender<Vec<Reading>>,
    ) -> Source {
        Source {
            batch_size,
            tenant,
            show_progress,
            batches,
            batch: Vec::with_capacity(batch_size),
            stats: ReadStats::default(),
        }
    }

    /// Reads every file in order, sends the last partial batch, and returns the counts. Blocks: call it from a
    /// blocking thread. Stops early, with the counts so far, when the receiver is dropped.
    pub(crate) fn read_all(mut self, files: &[PathBuf]) -> Result<ReadStats, ImportError> {
        for path in files {
            if self.read_file(path)? == Flow::Stop {
                return Ok(self.stats);
            }
        }
        if !self.batch.is_empty() {
            let last = mem::take(&mut self.batch);
            let _ = self.batches.blocking_send(last);
        }
        Ok(self.stats)
    }

    fn read_file(&mut self, path: &Path) -> Result<Flow, ImportError> {
        let file = File::open(path).map_err(|source| ImportError::Open {
            path: path.to_owned(),
            source,
        })?;
        let length = file
            .metadata()
            .map_err(|source| ImportError::Open {
                path: path.to_owned(),
                source,
            })?
            .len();
        let bar = self.progress_bar(path, length);
        let input =
            decompressed(path, bar.wrap_read(file)).map_err(|source| ImportError::Open {
                path: path.to_owned(),
                source,
            })?;
        let mut reader = ReaderBuilder::new()
            .has_headers(true)
            .flexible(true)
            .trim(Trim::All)
            .from_reader(input);

        let header = reader.headers().map_err(|source| ImportError::Read {
            path: path.to_owned(),
            source,
        })?;
        let columns =
            Columns::from_header(header).map_err(|column| ImportError::MissingColumn {
                path: path.to_owned(),
                column,
            })?;

        let mut record = StringRecord::new();
        let mut row_readings = Vec::new();
        let mut rows = 0_u64;
        let mut malformed = 0_u64;
        loop {
            match reader.read_record(&mut record) {
                Ok(true) => {}
                Ok(false) => break,
                Err(error) if matches!(error.kind(), csv::ErrorKind::Utf8 { .. }) => {
                    rows += 1;
                    malformed += 1;
                    let line = error.position().map(|position| position.line());
                    self.count_malformed(path, line, INVALID_UTF8, &error);
                    continue;
                }
                Err(source) => {
                    bar.abandon();
                    return Err(ImportError::Read {
                        path: path.to_owned(),
                        source,
                    });
                }
            }
            rows += 1;
            match columns.map_row(&record, self.tenant.as_deref(), &mut row_readings) {
                Ok(missing) => self.stats.skipped_missing += missing,
                Err(problem) => {
                    malformed += 1;
                    let line = record.position().map(|position| position.line());
                    self.count_malformed(path, line, problem.reason(), &problem);
                }
            }
            for reading in row_readings.drain(..) {
                self.batch.push(reading);
                if self.batch.len() >= self.batch_size && self.send_batch() == Flow::Stop {
                    bar.abandon();
                    self.stats.rows += rows;
                    return Ok(Flow::Stop);
                }
            }
        }
        bar.finish();
        self.stats.files += 1;
        self.stats.rows += rows;
        if malformed > 0 {
            tracing::warn!(file = %path.display(), rows, malformed, "file read with malformed rows skipped");
        } else {
            tracing::info!(file = %path.display(), rows, "file read");
        }
        Ok(Flow::Continue)
    }

    fn send_batch(&mut self) -> Flow {
        let full = mem::replace(&mut self.batch, Vec::with_capacity(self.batch_size));
        match self.batches.blocking_send(full) {
            Ok(()) => Flow::Continue,
            Err(_) => Flow::Stop,
        }
    }

    fn count_malformed(
        &mut self,
        path: &Path,
        line: Option<u64>,
        reason: &str,
        detail: &dyn std::fmt::Display,
    ) {
        *self
            .stats
            .malformed_rows_by_reason
            .entry(reason.to_owned())
            .or_default() += 1;
        tracing::debug!(file = %path.display(), line, reason, detail = %detail, "skipped malformed row");
    }

    fn progress_bar(&self, path: &Path, length: u64) -> ProgressBar {
        if !self.show_progress {
            return ProgressBar::hidden();
        }
        let name = path
            .file_name()
            .unwrap_or(path.as_os_str())
            .to_string_lossy()
            .into_owned();
        let style = ProgressStyle::with_template(PROGRESS_TEMPLATE)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        ProgressBar::new(length)
            .with_style(style)
            .with_message(name)
    }
}

/// The file's content, gunzipped when its name ends in `.gz` or it starts with the gzip magic bytes.
fn decompressed(
    path: &Path,
    file: impl Read + Send + 'static,
) -> std::io::Result<Box<dyn Read + Send>> {
    let mut buffered = BufReader::with_capacity(READ_BUFFER_BYTES, file);
    let named_gz = path
        .extension()
        .is_some_and(|extension| extension.eq_ignore_ascii_case("gz"));
    if named_gz || buffered.fill_buf()?.starts_with(&GZIP_MAGIC) {
        Ok(Box::new(MultiGzDecoder::new(buffered)))
    } else {
        Ok(Box::new(buffered))
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use flate2::write::GzEncoder;
    use flate2::Compression;

    use super::*;

    const CSV: &str = "\"No\",\"year\",\"month\",\"day\",\"hour\",\"PM2.5\",\"PM10\",\"SO2\",\"NO2\",\"CO\",\"O3\",\"TEMP\",\"PRES\",\"DEWP\",\"RAIN\",\"wd\",\"WSPM\",\"station\"
1,2013,3,1,0,4,4,4,7,300,77,-0.7,1023,-18.8,0,\"NNW\",4.4,\"Aotizhongxin\"
2,2013,3,1,1,8,8,NA,7,300,77,-1.1,1023.2,-18.2,0,\"N\",NA,\"Aotizhongxin\"
3,2013,2,30,2,7,7,5,10,300,73,-1.1,1023.5,-18.2,0,\"NNW\",5.6,\"Aotizhongxin\"
4,2013,3,1,3,6,6,11,11,300,72,-1.4,1024.5,-19.4,0,\"NW\",3.1,\"Aotizhongxin\"
";

    /// Reads `files` with batches of `batch_size` and returns the batch sizes and the counts.
    fn read(files: &[PathBuf], batch_size: usize) -> (Vec<usize>, ReadStats) {
        let (sender, mut receiver) = mpsc::channel(1000);
        let stats = Source::new(batch_size, None, false, sender)
            .read_all(files)
            .expect("readable files");
        let mut sizes = Vec::new();
        while let Ok(batch) = receiver.try_recv() {
            sizes.push(batch.len());
        }
        (sizes, stats)
    }

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, bytes).expect("writable temp dir");
        path
    }

    fn gzip(text: &str) -> Vec<u8> {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
        encoder.write_all(text.as_bytes()).expect("in memory");
        encoder.finish().expect("in memory")
    }

    #[test]
    fn plain_file_is_counted_row_by_row() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (sizes, stats) = read(&[write(dir.path(), "a.csv", CSV.as_bytes())], 5000);
        // Rows 1 and 4 give 11 readings each, row 2 gives 9 (SO2 and WSPM are NA), row 3 (30 February) none.
        assert_eq!(sizes, [31]);
        assert_eq!(stats.files, 1);
        assert_eq!(stats.rows, 4);
        assert_eq!(stats.skipped_missing, 2);
        assert_eq!(
            stats.malformed_rows_by_reason,
            BTreeMap::from([("bad_date".to_owned(), 1)])
        );
    }

    #[test]
    fn gzip_is_detected_by_magic_bytes_as_well_as_by_extension() {
        let dir = tempfile::tempdir().expect("temp dir");
        let named = write(dir.path(), "a.csv.gz", &gzip(CSV));
        let unnamed = write(dir.path(), "b.csv", &gzip(CSV));
        let (sizes, stats) = read(&[named, unnamed], 5000);
        assert_eq!(sizes, [62]);
        assert_eq!((stats.files, stats.rows), (2, 8));
    }

    #[test]
    fn batches_are_exactly_the_batch_size_across_files() {
        let dir = tempfile::tempdir().expect("temp dir");
        let a = write(dir.path(), "a.csv", CSV.as_bytes());
        let b = write(dir.path(), "b.csv", CSV.as_bytes());
        // 31 + 31 = 62 readings in batches of 10.
        let (sizes, _) = read(&[a, b], 10);
        assert_eq!(sizes, [10, 10, 10, 10, 10, 10, 2]);
    }

    #[test]
    fn invalid_utf8_row_is_malformed_and_reading_continues() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut bytes = CSV.as_bytes().to_vec();
        bytes.extend_from_slice(
            b"5,2013,3,1,4,3,3,12,12,300,72,-2,1025.2,-19.5,0,\"N\",2,\"Aoti\xffzhongxin\"\n",
        );
        bytes.extend_from_slice(
            b"6,2013,3,1,5,5,5,18,18,400,66,-2.2,1025.6,-19.6,0,\"N\",3.7,\"Aotizhongxin\"\n",
        );
        let (sizes, stats) = read(&[write(dir.path(), "a.csv", &bytes)], 5000);
        assert_eq!(sizes, [42]);
        assert_eq!(stats.rows, 6);
        assert_eq!(stats.malformed_rows_by_reason.get("invalid_utf8"), Some(&1));
    }

    #[test]
    fn file_without_date_columns_is_an_error_naming_the_column() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = write(dir.path(), "a.csv", b"station,PM2.5\nAotizhongxin,4\n");
        let (sender, _receiver) = mpsc::channel(1);
        let result = Source::new(10, None, false, sender).read_all(&[path]);
        assert!(
            matches!(
                result,
                Err(ImportError::MissingColumn { column: "year", .. })
            ),
            "{result:?}"
        );
    }

    #[test]
    fn progress_template_is_valid() {
        assert!(ProgressStyle::with_template(PROGRESS_TEMPLATE).is_ok());
    }

    #[test]
    fn missing_file_is_an_open_error() {
        let (sender, _receiver) = mpsc::channel(1);
        let result =
            Source::new(10, None, false, sender).read_all(&[PathBuf::from("/nonexistent/a.csv")]);
        assert!(
            matches!(result, Err(ImportError::Open { .. })),
            "{result:?}"
        );
    }

    #[test]
    fn reading_stops_when_the_sender_side_is_gone() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (sender, receiver) = mpsc::channel(1);
        drop(receiver);
        let stats = Source::new(1, None, false, sender)
            .read_all(&[write(dir.path(), "a.csv", CSV.as_bytes())])
            .expect("stopping is not an error");
        assert_eq!(stats.files, 0, "the file was not read to the end");
    }
}
