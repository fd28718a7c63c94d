//! One CSV row of the Beijing data set → readings.
//!
//! A row is all or nothing: when any field needed for a reading is malformed (a date that does not parse or does not
//! exist, an empty station, a metric value that is neither a number nor missing), the whole row is reported as
//! [`Malformed`] and yields no readings. Missing values (`NA` or empty) are skipped one by one and counted.

use std::fmt;

use csv::StringRecord;
use serde::Serialize;

use crate::local_time::beijing_hour_to_utc_ms;

/// The numeric columns, each of which becomes a metric of the same name. `No` (a row number) and `wd` (a compass
/// word) are not metrics.
pub(crate) const METRIC_COLUMNS: [&str; 11] = [
    "PM2.5", "PM10", "SO2", "NO2", "CO", "O3", "TEMP", "PRES", "DEWP", "RAIN", "WSPM",
];

/// A reading as the ingest API takes it (`POST /v1/readings`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Reading {
    /// Omitted from the JSON when `None`, so that ingest applies its default tenant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) tenant: Option<String>,
    /// The `station` column.
    pub(crate) device: String,
    /// The name of the column the value came from.
    pub(crate) metric: &'static str,
    /// UTC epoch milliseconds, sent as a JSON integer.
    pub(crate) timestamp: i64,
    /// The value exactly as parsed from the CSV text; always finite.
    pub(crate) value: f64,
}

/// Why a row yielded no readings.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Malformed {
    /// The row has a different number of fields than the header.
    WrongFieldCount { expected: usize, found: usize },
    /// `year`, `month`, `day` or `hour` is not a number, or together they name no local hour.
    BadDate {
        year: String,
        month: String,
        day: String,
        hour: String,
    },
    /// The `station` field is empty.
    MissingStation,
    /// A metric field is neither a number nor missing.
    BadNumber { column: &'static str, text: String },
    /// A metric field parses to infinity or NaN (`inf`, `NaN`), which no reading may carry.
    NonFiniteNumber { column: &'static str, text: String },
}

impl Malformed {
    /// The stable, machine-readable reason counted in the summary.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Malformed::WrongFieldCount { .. } => "wrong_field_count",
            Malformed::BadDate { .. } => "bad_date",
            Malformed::MissingStation => "missing_station",
            Malformed::BadNumber { .. } => "bad_number",
            Malformed::NonFiniteNumber { .. } => "non_finite_number",
        }
    }
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Malformed::WrongFieldCount { expected, found } => {
                write!(
                    f,
                    "expected {expected} fields as in the header, found {found}"
                )
            }
            Malformed::BadDate {
                year,
                month,
                day,
                hour,
            } => {
                write!(f, "no such local hour: year {year:?}, month {month:?}, day {day:?}, hour {hour:?}")
            }
            Malformed::MissingStation => write!(f, "the station field is empty"),
            Malformed::BadNumber { column, text } => {
                write!(f, "{column} is not a number: {text:?}")
            }
            Malformed::NonFiniteNumber { column, text } => {
                write!(f, "{column} is not finite: {text:?}")
            }
        }
    }
}

/// Where the needed fields sit in a file's rows, found by name in its header.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Columns {
    width: usize,
    year: usize,
    month: usize,
    day: usize,
    hour: usize,
    station: usize,
    /// Each metric column present in the header, in [`METRIC_COLUMNS`] order.
    metrics: Vec<(&'static str, usize)>,
}

impl Columns {
    /// Locates the columns by name. Fails with the name of the first missing column among `year`, `month`, `day`,
    /// `hour` and `station`; metric columns that are absent are simply not read.
    pub(crate) fn from_header(header: &StringRecord) -> Result<Columns, &'static str> {
        let find = |name: &'static str| header.iter().position(|field| field == name).ok_or(name);
        let mut metrics = Vec::new();
        for name in METRIC_COLUMNS {
            if let Ok(index) = find(name) {
                metrics.push((name, index));
            }
        }
        Ok(Columns {
            width: header.len(),
            year: find("year")?,
            month: find("month")?,
            day: find("day")?,
            hour: find("hour")?,
            station: find("station")?,
            metrics,
        })
    }

    /// Maps one data row to readings, appended to `out`, and returns how many metric values were missing. On
    /// error nothing is appended.
    pub(crate) fn map_row(
        &self,
        row: &StringRecord,
        tenant: Option<&str>,
        out: &mut Vec<Reading>,
    ) -> Result<u64, Malformed> {
        if row.len() != self.width {
            return Err(Malformed::WrongFieldCount {
                expected: self.width,
                found: row.len(),
            });
        }
        let field = |index: usize| row.get(index).unwrap_or_default();
        let timestamp = parse_local_hour(
            field(self.year),
            field(self.month),
            field(self.day),
            field(self.hour),
        )
        .ok_or_else(|| Malformed::BadDate {
            year: field(self.year).to_owned(),
            month: field(self.month).to_owned(),
            day: field(self.day).to_owned(),
            hour: field(self.hour).to_owned(),
        })?;
        let station = field(self.station);
        if station.is_empty() {
            return Err(Malformed::MissingStation);
        }

        let start = out.len();
        let mut missing = 0;
        for &(metric, index) in &self.metrics {
            let value = match parse_value(metric, field(index)) {
                Ok(Some(value)) => value,
                Ok(None) => {
                    missing += 1;
                    continue;
                }
                Err(malformed) => {
                    out.truncate(start);
                    return Err(malformed);
                }
            };
            out.push(Reading {
                tenant: tenant.map(str::to_owned),
                device: station.to_owned(),
                metric,
                timestamp,
                value,
            });
        }
        Ok(missing)
    }
}

/// UTC epoch milliseconds of the local hour named by the four date fields, or `None` if any is malformed.
fn parse_local_hour(year: &str, month: &str, day: &str, hour: &str) -> Option<i64> {
    beijing_hour_to_utc_ms(
        year.parse().ok()?,
        month.parse().ok()?,
        day.parse().ok()?,
        hour.parse().ok()?,
    )
}

/// A metric field: `Ok(None)` when missing (`NA` or empty), the parsed value otherwise.
fn parse_value(column: &'static str, text: &str) -> Result<Option<f64>, Malformed> {
    if text.is_empty() || text == "NA" {
        return Ok(None);
    }
    let value: f64 = text.parse().map_err(|_| Malformed::BadNumber {
        column,
        text: text.to_owned(),
    })?;
    if !value.is_finite() {
        return Err(Malformed::NonFiniteNumber {
            column,
            text: text.to_owned(),
        });
    }
    Ok(Some(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: [&str; 18] = [
        "No", "year", "month", "day", "hour", "PM2.5", "PM10", "SO2", "NO2", "CO", "O3", "TEMP",
        "PRES", "DEWP", "RAIN", "wd", "WSPM", "station",
    ];

    fn columns() -> Columns {
        Columns::from_header(&StringRecord::from(HEADER.to_vec())).expect("the data set's header")
    }

    fn row(line: &str) -> StringRecord {
        StringRecord::from(line.split(',').collect::<Vec<_>>())
    }

    fn map(line: &str) -> (Result<u64, Malformed>, Vec<Reading>) {
        let mut out = Vec::new();
        let result = columns().map_row(&row(line), None, &mut out);
        (result, out)
    }

    /// `2013-03-01 00:00` at UTC+8 is `2013-02-28T16:00:00Z`, 1_362_067_200 s after the epoch.
    const FIRST_HOUR_MS: i64 = 1_362_067_200_000;

    #[test]
    fn first_row_of_aotizhongxin_gives_eleven_readings_at_the_utc_instant() {
        let (result, readings) =
            map("1,2013,3,1,0,4,4,4,7,300,77,-0.7,1023,-18.8,0,NNW,4.4,Aotizhongxin");
        assert_eq!(result, Ok(0));
        let got: Vec<(&str, f64)> = readings.iter().map(|r| (r.metric, r.value)).collect();
        assert_eq!(
            got,
            vec![
                ("PM2.5", 4.0),
                ("PM10", 4.0),
                ("SO2", 4.0),
                ("NO2", 7.0),
                ("CO", 300.0),
                ("O3", 77.0),
                ("TEMP", -0.7),
                ("PRES", 1023.0),
                ("DEWP", -18.8),
                ("RAIN", 0.0),
                ("WSPM", 4.4),
            ]
        );
        for reading in &readings {
            assert_eq!(reading.device, "Aotizhongxin");
            assert_eq!(reading.timestamp, FIRST_HOUR_MS);
            assert_eq!(reading.tenant, None);
        }
    }

    #[test]
    fn missing_values_are_skipped_and_counted_never_zero() {
        let (result, readings) =
            map("7,2013,3,1,6,NA,3,,32,500,50,-2.6,1026.5,-19.1,0,NNE,NA,Aotizhongxin");
        assert_eq!(result, Ok(3));
        let metrics: Vec<&str> = readings.iter().map(|r| r.metric).collect();
        assert_eq!(
            metrics,
            ["PM10", "NO2", "CO", "O3", "TEMP", "PRES", "DEWP", "RAIN"]
        );
    }

    #[test]
    fn values_keep_every_digit_of_the_source_text() {
        let (result, readings) =
            map("1,2013,3,1,0,4,4,4,7,300,77,-2.77555756156289e-17,1023.2,-18.8,0.1,NNW,4.4,Aotizhongxin");
        assert_eq!(result, Ok(0));
        let value = |metric: &str| {
            readings
                .iter()
                .find(|r| r.metric == metric)
                .map(|r| r.value)
        };
        assert_eq!(value("TEMP"), Some(-2.77555756156289e-17));
        assert_eq!(value("PRES"), Some(1023.2));
        assert_eq!(value("RAIN"), Some(0.1));
    }

    #[test]
    fn wind_direction_and_row_number_are_not_metrics() {
        let (_, readings) =
            map("1,2013,3,1,0,4,4,4,7,300,77,-0.7,1023,-18.8,0,NNW,4.4,Aotizhongxin");
        assert!(readings
            .iter()
            .all(|r| r.metric != "wd" && r.metric != "No"));
    }

    #[test]
    fn tenant_is_carried_on_every_reading_when_given() {
        let mut out = Vec::new();
        let line = row("1,2013,3,1,0,4,4,4,7,300,77,-0.7,1023,-18.8,0,NNW,4.4,Aotizhongxin");
        columns()
            .map_row(&line, Some("acme"), &mut out)
            .expect("a good row");
        assert!(out.iter().all(|r| r.tenant.as_deref() == Some("acme")));
    }

    #[test]
    fn unparsable_number_rejects_the_whole_row() {
        let mut out = vec![];
        let line = row("1,2013,3,1,0,4,4,4,7,300,77,-0.7,1023,oops,0,NNW,4.4,Aotizhongxin");
        let result = columns().map_row(&line, None, &mut out);
        assert_eq!(
            result,
            Err(Malformed::BadNumber {
                column: "DEWP",
                text: "oops".to_owned()
            })
        );
        assert_eq!(result.map_err(|m| m.reason()), Err("bad_number"));
        assert!(
            out.is_empty(),
            "readings before the bad field must be withdrawn"
        );
    }

    #[test]
    fn infinity_and_nan_are_malformed_not_missing() {
        let (result, readings) =
            map("1,2013,3,1,0,inf,4,4,7,300,77,-0.7,1023,-18.8,0,NNW,4.4,Aotizhongxin");
        assert_eq!(result.map_err(|m| m.reason()), Err("non_finite_number"));
        assert!(readings.is_empty());
        let (result, _) =
            map("1,2013,3,1,0,4,NaN,4,7,300,77,-0.7,1023,-18.8,0,NNW,4.4,Aotizhongxin");
        assert_eq!(result.map_err(|m| m.reason()), Err("non_finite_number"));
    }

    #[test]
    fn impossible_or_unparsable_dates_are_bad_dates() {
        for line in [
            "1,2015,2,29,0,4,4,4,7,300,77,-0.7,1023,-18.8,0,NNW,4.4,Aotizhongxin",
            "1,2013,3,1,24,4,4,4,7,300,77,-0.7,1023,-18.8,0,NNW,4.4,Aotizhongxin",
            "1,2013,March,1,0,4,4,4,7,300,77,-0.7,1023,-18.8,0,NNW,4.4,Aotizhongxin",
            "1,,3,1,0,4,4,4,7,300,77,-0.7,1023,-18.8,0,NNW,4.4,Aotizhongxin",
        ] {
            let (result, readings) = map(line);
            assert_eq!(result.map_err(|m| m.reason()), Err("bad_date"), "{line}");
            assert!(readings.is_empty());
        }
    }

    #[test]
    fn row_without_station_is_malformed() {
        let (result, _) = map("1,2013,3,1,0,4,4,4,7,300,77,-0.7,1023,-18.8,0,NNW,4.4,");
        assert_eq!(result, Err(Malformed::MissingStation));
    }

    #[test]
    fn row_with_a_field_too_few_is_malformed() {
        let (result, _) = map("1,2013,3,1,0,4,4,4,7,300,77,-0.7,1023,-18.8,0,NNW,Aotizhongxin");
        assert_eq!(
            result,
            Err(Malformed::WrongFieldCount {
                expected: 18,
                found: 17
            })
        );
    }

    #[test]
    fn header_without_station_names_the_missing_column() {
        let header = StringRecord::from(vec!["year", "month", "day", "hour", "PM2.5"]);
        assert_eq!(Columns::from_header(&header), Err("station"));
    }

    #[test]
    fn columns_are_found_by_name_in_any_order() {
        let header = StringRecord::from(vec!["station", "CO", "hour", "day", "month", "year"]);
        let columns = Columns::from_header(&header).expect("all required columns");
        let mut out = Vec::new();
        let missing = columns.map_row(&row("Dongsi,1.5,8,1,3,2013"), None, &mut out);
        assert_eq!(missing, Ok(0));
        assert_eq!(
            out,
            vec![Reading {
                tenant: None,
                device: "Dongsi".to_owned(),
                metric: "CO",
                // 08:00 at UTC+8 is midnight UTC: 2013-03-01T00:00:00Z = 1_362_096_000 s.
                timestamp: 1_362_096_000_000,
                value: 1.5,
            }]
        );
    }

    #[test]
    fn reading_serializes_to_the_ingest_wire_shape() {
        let reading = Reading {
            tenant: None,
            device: "Aotizhongxin".to_owned(),
            metric: "PM2.5",
            timestamp: FIRST_HOUR_MS,
            value: 4.0,
        };
        let json = serde_json::to_string(&reading).expect("serializable");
        assert_eq!(
            json,
            r#"{"device":"Aotizhongxin","metric":"PM2.5","timestamp":1362067200000,"value":4.0}"#
        );
        let with_tenant = Reading {
            tenant: Some("acme".to_owned()),
            ..reading
        };
        let json = serde_json::to_string(&with_tenant).expect("serializable");
        assert!(json.starts_with(r#"{"tenant":"acme","device""#), "{json}");
    }
}
