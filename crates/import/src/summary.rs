//! The counts an import ends with, and their human-readable rendering.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// What an import did. Every data row is either malformed or mapped; every metric value of a mapped row is either
/// missing (`NA` or empty) or sent; every sent reading is either accepted or rejected by ingest.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ImportSummary {
    /// Files read to the end.
    pub files: usize,
    /// Data rows read (header excluded), malformed rows included.
    pub rows: u64,
    /// Readings posted to ingest and answered with 200 or 422.
    pub readings_sent: u64,
    /// Readings ingest accepted.
    pub accepted: u64,
    /// Readings ingest rejected, by its reason (`non_finite_value`, …).
    pub rejected_by_reason: BTreeMap<String, u64>,
    /// Metric values that were missing (`NA` or empty) and so sent as nothing, never as zero.
    pub skipped_missing: u64,
    /// Rows that yielded no readings, by reason: `bad_date`, `bad_number`, `non_finite_number`,
    /// `missing_station`, `wrong_field_count`, `invalid_utf8`.
    pub malformed_rows_by_reason: BTreeMap<String, u64>,
    /// Wall-clock time of the whole import.
    pub elapsed: Duration,
}

impl ImportSummary {
    /// Readings ingest rejected, all reasons together.
    pub fn rejected(&self) -> u64 {
        self.rejected_by_reason.values().sum()
    }

    /// Rows that yielded no readings, all reasons together.
    pub fn malformed_rows(&self) -> u64 {
        self.malformed_rows_by_reason.values().sum()
    }

    /// Readings sent per second of elapsed time (0 when no time elapsed).
    pub fn readings_per_second(&self) -> f64 {
        let seconds = self.elapsed.as_secs_f64();
        if seconds > 0.0 {
            self.readings_sent as f64 / seconds
        } else {
            0.0
        }
    }
}

impl fmt::Display for ImportSummary {
    /// A few aligned lines, e.g.
    ///
    /// ```text
    /// imported 1 file (35,064 rows) in 4.2 s
    ///   readings sent   382,168  (90,992 readings/s)
    ///   accepted        382,168
    ///   rejected        0
    ///   skipped (NA)    3,536
    ///   malformed rows  0
    /// ```
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plural = if self.files == 1 { "" } else { "s" };
        writeln!(
            f,
            "imported {} file{plural} ({} rows) in {:.1} s",
            self.files,
            grouped(self.rows),
            self.elapsed.as_secs_f64()
        )?;
        writeln!(
            f,
            "  readings sent   {}  ({} readings/s)",
            grouped(self.readings_sent),
            grouped(self.readings_per_second().round() as u64)
        )?;
        writeln!(f, "  accepted        {}", grouped(self.accepted))?;
        writeln!(
            f,
            "  rejected        {}{}",
            grouped(self.rejected()),
            by_reason(&self.rejected_by_reason)
        )?;
        writeln!(f, "  skipped (NA)    {}", grouped(self.skipped_missing))?;
        write!(
            f,
            "  malformed rows  {}{}",
            grouped(self.malformed_rows()),
            by_reason(&self.malformed_rows_by_reason)
        )
    }
}

/// ` (reason: n, reason: n)`, or nothing when there are no reasons.
fn by_reason(counts: &BTreeMap<String, u64>) -> String {
    if counts.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = counts
        .iter()
        .map(|(reason, n)| format!("{reason}: {}", grouped(*n)))
        .collect();
    format!("  ({})", parts.join(", "))
}

/// `n` with a comma between groups of three digits: `1234567` → `1,234,567`.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_are_grouped_by_thousands() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1000), "1,000");
        assert_eq!(grouped(35_064), "35,064");
        assert_eq!(grouped(4_208_000), "4,208,000");
    }

    #[test]
    fn rate_is_readings_sent_over_elapsed_seconds() {
        let summary = ImportSummary {
            readings_sent: 1000,
            elapsed: Duration::from_millis(500),
            ..Default::default()
        };
        assert_eq!(summary.readings_per_second(), 2000.0);
        assert_eq!(ImportSummary::default().readings_per_second(), 0.0);
    }

    #[test]
    fn display_names_every_count_the_reasons_and_the_rate() {
        let summary = ImportSummary {
            files: 2,
            rows: 70_128,
            readings_sent: 1_500_000,
            accepted: 1_499_990,
            rejected_by_reason: BTreeMap::from([
                ("too_old".to_owned(), 7),
                ("non_finite_value".to_owned(), 3),
            ]),
            skipped_missing: 12_345,
            malformed_rows_by_reason: BTreeMap::from([("bad_date".to_owned(), 2)]),
            elapsed: Duration::from_secs(20),
        };
        assert_eq!(
            summary.to_string(),
            "imported 2 files (70,128 rows) in 20.0 s\n\
             \x20 readings sent   1,500,000  (75,000 readings/s)\n\
             \x20 accepted        1,499,990\n\
             \x20 rejected        10  (non_finite_value: 3, too_old: 7)\n\
             \x20 skipped (NA)    12,345\n\
             \x20 malformed rows  2  (bad_date: 2)"
        );
    }
}
