//! The bus record format, version 1 (`readings.v1`).
//!
//! One record carries readings of one `(tenant, device)`, so the record key `tenant/device` keeps each device's
//! readings in order in one partition. The value is UTF-8 JSON:
//!
//! ```json
//! {"v":1,"tenant":"default","device":"Dongsi","readings":[["PM2.5",1362067200000,4.0],["TEMP",1362067200000,-0.7]]}
//! ```
//!
//! `v` is the format version (a consumer refuses versions it does not know); each reading is
//! `[metric, epoch milliseconds UTC, value]` with a finite value printed so that it parses back to the same
//! 64-bit float. New optional fields may be added within version 1; anything else needs `v: 2`.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::reading::Reading;

/// The format version this code writes.
pub const VERSION: u32 = 1;
/// The name of the format, also sent as the `format` record header on Kafka.
pub const FORMAT_NAME: &str = "readings.v1";
/// Most readings one record carries (keeps records well under Kafka's default 1 MiB limit).
pub const MAX_READINGS_PER_RECORD: usize = 5_000;

/// A record that could not be decoded.
#[derive(Debug, Error)]
pub enum RecordError {
    /// The bytes are not a v1 record.
    #[error("record is not valid readings JSON")]
    Malformed(#[source] serde_json::Error),
    /// The record declares a version this code does not know.
    #[error("record format version {0} is not supported (this build reads version {VERSION})")]
    UnsupportedVersion(u32),
}

/// A record as written.
#[derive(Serialize)]
struct Wire<'a> {
    v: u32,
    tenant: &'a str,
    device: &'a str,
    readings: Vec<(&'a str, i64, f64)>,
}

/// A record as read (its version already checked): owned strings, since names with escapes (`"`, `\\`,
/// control characters) cannot be borrowed from the bytes.
#[derive(Deserialize)]
struct WireIn {
    tenant: String,
    device: String,
    readings: Vec<(String, i64, f64)>,
}

#[derive(Deserialize)]
struct Version {
    v: u32,
}

/// The record key of a device: `tenant/device`.
pub fn key(tenant: &str, device: &str) -> Vec<u8> {
    format!("{tenant}/{device}").into_bytes()
}

/// Encodes readings that all share `tenant` and `device`.
pub fn encode(tenant: &str, device: &str, readings: &[&Reading]) -> Vec<u8> {
    let wire = Wire {
        v: VERSION,
        tenant,
        device,
        readings: readings
            .iter()
            .map(|r| (r.metric.as_str(), r.ts_ms, r.value))
            .collect(),
    };
    // Serialising plain strings and finite floats cannot fail.
    serde_json::to_vec(&wire).unwrap_or_default()
}

/// Decodes one record into its readings.
pub fn decode(bytes: &[u8]) -> Result<Vec<Reading>, RecordError> {
    let version: Version = serde_json::from_slice(bytes).map_err(RecordError::Malformed)?;
    if version.v != VERSION {
        return Err(RecordError::UnsupportedVersion(version.v));
    }
    let wire: WireIn = serde_json::from_slice(bytes).map_err(RecordError::Malformed)?;
    Ok(wire
        .readings
        .into_iter()
        .map(|(metric, ts_ms, value)| Reading {
            tenant: wire.tenant.clone(),
            device: wire.device.clone(),
            metric,
            ts_ms,
            value,
        })
        .collect())
}

/// Groups readings by `(tenant, device)` into records of at most [`MAX_READINGS_PER_RECORD`] readings each,
/// returning `(key, value)` pairs. Readings of one device keep their request order.
pub fn encode_by_device(readings: &[Reading]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut groups: Vec<((&str, &str), Vec<&Reading>)> = Vec::new();
    let mut index: std::collections::HashMap<(&str, &str), usize> =
        std::collections::HashMap::new();
    for r in readings {
        let k = (r.tenant.as_str(), r.device.as_str());
        let i = *index.entry(k).or_insert_with(|| {
            groups.push((k, Vec::new()));
            groups.len() - 1
        });
        groups[i].1.push(r);
    }
    let mut out = Vec::new();
    for ((tenant, device), rs) in groups {
        for chunk in rs.chunks(MAX_READINGS_PER_RECORD) {
            out.push((key(tenant, device), encode(tenant, device, chunk)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(device: &str, metric: &str, ts_ms: i64, value: f64) -> Reading {
        Reading {
            tenant: "t".into(),
            device: device.into(),
            metric: metric.into(),
            ts_ms,
            value,
        }
    }

    #[test]
    fn record_round_trips_values_bit_for_bit() {
        let readings = vec![
            r("d", "PM2.5", 1, 0.1 + 0.2),
            r("d", "TEMP", 2, -1e-300),
            r("d", "x", 3, 1.7976931348623157e308),
        ];
        let refs: Vec<&Reading> = readings.iter().collect();
        let decoded = decode(&encode("t", "d", &refs)).expect("decodes");
        assert_eq!(decoded, readings);
    }

    #[test]
    fn documented_example_decodes() {
        let example = br#"{"v":1,"tenant":"default","device":"Dongsi","readings":[["PM2.5",1362067200000,4.0],["TEMP",1362067200000,-0.7]]}"#;
        let rs = decode(example).expect("example is valid");
        assert_eq!(rs.len(), 2);
        assert_eq!((rs[1].metric.as_str(), rs[1].value), ("TEMP", -0.7));
    }

    #[test]
    fn unknown_version_is_refused() {
        assert!(matches!(
            decode(br#"{"v":2,"whatever":true}"#),
            Err(RecordError::UnsupportedVersion(2))
        ));
        assert!(matches!(decode(b"garbage"), Err(RecordError::Malformed(_))));
    }

    #[test]
    fn readings_are_grouped_per_device_in_order() {
        let rs = vec![
            r("a", "m", 1, 1.0),
            r("b", "m", 1, 2.0),
            r("a", "m", 2, 3.0),
        ];
        let records = encode_by_device(&rs);
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].0, b"t/a".to_vec());
        let a = decode(&records[0].1).expect("decodes");
        assert_eq!(a.iter().map(|r| r.ts_ms).collect::<Vec<_>>(), vec![1, 2]);
    }

    #[test]
    fn names_with_quotes_backslashes_and_control_characters_survive_a_round_trip() {
        let readings = [
            r("back\\slash", "deg\"C", 1, 2.0),
            r("back\\slash", "tab\tand\u{1}", 3, 4.0),
            r("back\\slash", "é/µ", 5, 6.0),
        ];
        let refs: Vec<&Reading> = readings.iter().collect();
        let decoded = decode(&encode("t", "back\\slash", &refs)).expect("decodes");
        assert_eq!(decoded, readings);
    }

    proptest::proptest! {
        #[test]
        fn any_names_survive_a_round_trip(
            tenant in ".{0,12}", device in ".{0,12}", metric in ".{0,12}", ts_ms: i64, value in -1e100f64..1e100,
        ) {
            let reading = Reading { tenant: tenant.clone(), device: device.clone(), metric, ts_ms, value };
            let decoded = decode(&encode(&tenant, &device, &[&reading])).expect("decodes");
            proptest::prop_assert_eq!(decoded, vec![reading]);
        }
    }
}
