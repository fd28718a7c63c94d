//! Per-reading validation: one body piece becomes a [`Reading`] or a [`Rejection`] that names the reason.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::reading::Reading;
use crate::time::{format_rfc3339_ms, parse_rfc3339, TimeRefusal};

/// Largest accepted magnitude of a value. Far beyond any physical measurement, and small enough that no sum
/// of readings in a bucket can overflow a 64-bit float (an overflowing sum would poison the rollups).
pub const MAX_ABS_VALUE: f64 = 1e100;

/// The window and size limits applied to each reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Readings more than this far ahead of "now" are rejected.
    pub max_future_ms: i64,
    /// Readings more than this far behind "now" are rejected.
    pub max_past_ms: i64,
    /// Longest tenant, device or metric name, in bytes.
    pub max_name_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_future_ms: 300_000,
            max_past_ms: 10_000 * 86_400_000,
            max_name_bytes: 256,
        }
    }
}

/// Why a single reading was rejected. The string form is the `reason` label of the rejection metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RejectReason {
    /// The element is not valid UTF-8.
    InvalidUtf8,
    /// The element is not valid JSON.
    InvalidJson,
    /// The element is valid JSON but not an object.
    NotAnObject,
    /// A required field is absent or null.
    MissingField,
    /// A field has the wrong type.
    InvalidField,
    /// The value is NaN or ±Infinity.
    NonFiniteValue,
    /// The value does not fit a 64-bit float (e.g. `1e999`) or exceeds ±[`MAX_ABS_VALUE`].
    ValueOutOfRange,
    /// The timestamp is neither RFC 3339 nor integer epoch milliseconds.
    InvalidTimestamp,
    /// The timestamp lies too far in the future.
    TimestampInFuture,
    /// The timestamp lies too far in the past.
    TimestampTooOld,
    /// A tenant, device or metric name is blank, too long or has control characters.
    InvalidName,
}

impl RejectReason {
    /// Every reason, for pre-registering metrics.
    pub const ALL: [RejectReason; 11] = [
        RejectReason::InvalidUtf8,
        RejectReason::InvalidJson,
        RejectReason::NotAnObject,
        RejectReason::MissingField,
        RejectReason::InvalidField,
        RejectReason::NonFiniteValue,
        RejectReason::ValueOutOfRange,
        RejectReason::InvalidTimestamp,
        RejectReason::TimestampInFuture,
        RejectReason::TimestampTooOld,
        RejectReason::InvalidName,
    ];

    /// Stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::InvalidUtf8 => "invalid_utf8",
            RejectReason::InvalidJson => "invalid_json",
            RejectReason::NotAnObject => "not_an_object",
            RejectReason::MissingField => "missing_field",
            RejectReason::InvalidField => "invalid_field",
            RejectReason::NonFiniteValue => "non_finite_value",
            RejectReason::ValueOutOfRange => "value_out_of_range",
            RejectReason::InvalidTimestamp => "invalid_timestamp",
            RejectReason::TimestampInFuture => "timestamp_in_future",
            RejectReason::TimestampTooOld => "timestamp_too_old",
            RejectReason::InvalidName => "invalid_name",
        }
    }
}

/// A rejected reading: the reason and a message a person can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Machine-readable reason.
    pub reason: RejectReason,
    /// Human-readable explanation naming the offending field and value.
    pub message: String,
}

fn reject(reason: RejectReason, message: impl Into<String>) -> Rejection {
    Rejection {
        reason,
        message: message.into(),
    }
}

#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(borrow)]
    tenant: Option<Cow<'a, str>>,
    #[serde(borrow)]
    device: Option<Cow<'a, str>>,
    #[serde(borrow)]
    metric: Option<Cow<'a, str>>,
    #[serde(borrow)]
    timestamp: Option<&'a RawValue>,
    #[serde(borrow)]
    value: Option<&'a RawValue>,
}

/// Validates one element of a request. `default_tenant` applies when the reading names none; `now_ms` anchors
/// the timestamp window.
pub fn validate_piece(
    bytes: &[u8],
    default_tenant: &str,
    now_ms: i64,
    limits: &Limits,
) -> Result<Reading, Rejection> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        reject(
            RejectReason::InvalidUtf8,
            format!(
                "reading is not valid UTF-8 (invalid byte at offset {})",
                e.valid_up_to()
            ),
        )
    })?;
    if text.is_empty() {
        return Err(reject(
            RejectReason::InvalidJson,
            "empty element (stray comma?)",
        ));
    }
    let wire: Wire<'_> = serde_json::from_str(text).map_err(|e| json_rejection(text, &e))?;

    let missing: Vec<&str> = [
        ("device", wire.device.is_none()),
        ("metric", wire.metric.is_none()),
        (
            "timestamp",
            wire.timestamp.is_none_or(|t| t.get() == "null"),
        ),
        ("value", wire.value.is_none_or(|v| v.get() == "null")),
    ]
    .into_iter()
    .filter_map(|(name, absent)| absent.then_some(name))
    .collect();
    if !missing.is_empty() {
        return Err(reject(
            RejectReason::MissingField,
            format!("missing field(s): {}", missing.join(", ")),
        ));
    }
    let (Some(device), Some(metric), Some(timestamp), Some(value)) =
        (wire.device, wire.metric, wire.timestamp, wire.value)
    else {
        return Err(reject(RejectReason::MissingField, "missing field"));
    };
    let tenant = wire.tenant.unwrap_or(Cow::Borrowed(default_tenant));
    for (field, name) in [
        ("tenant", &tenant),
        ("device", &device),
        ("metric", &metric),
    ] {
        check_name(field, name, limits)?;
    }
    let value = parse_value(value.get())?;
    let ts_ms = parse_timestamp(timestamp.get())?;
    check_window(ts_ms, timestamp.get(), now_ms, limits)?;
    Ok(Reading {
        tenant: tenant.into_owned(),
        device: device.into_owned(),
        metric: metric.into_owned(),
        ts_ms,
        value,
    })
}

fn json_rejection(text: &str, e: &serde_json::Error) -> Rejection {
    if let Some(token) = bare_non_finite_token(text) {
        return reject(
            RejectReason::NonFiniteValue,
            format!("the reading contains {token}, which is not a finite number (JSON has no NaN or Infinity; send finite numbers)"),
        );
    }
    if !text.starts_with('{') {
        return reject(RejectReason::NotAnObject, "reading must be a JSON object");
    }
    if e.is_data() {
        if e.to_string().starts_with("duplicate field") {
            return reject(
                RejectReason::InvalidJson,
                format!("reading is not valid: {e}"),
            );
        }
        return reject(RejectReason::InvalidField, format!("wrong field type: {e}"));
    }
    reject(
        RejectReason::InvalidJson,
        format!("reading is not valid JSON: {e}"),
    )
}

/// Finds `NaN`, `Infinity` or `-Infinity` outside strings.
fn bare_non_finite_token(text: &str) -> Option<&'static str> {
    let bytes = text.as_bytes();
    let mut in_string = false;
    let mut escaped = false;
    for (i, b) in bytes.iter().enumerate() {
        if in_string {
            match (escaped, *b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        if *b == b'"' {
            in_string = true;
            continue;
        }
        // Tokens start on an ASCII byte; inside a multi-byte character there is nothing to look for (and no
        // place to slice).
        let Some(rest) = text.get(i..) else {
            continue;
        };
        if rest.starts_with("NaN") {
            return Some("NaN");
        }
        if rest.starts_with("-Infinity") {
            return Some("-Infinity");
        }
        if rest.starts_with("Infinity") && !text[..i].ends_with('-') {
            return Some("Infinity");
        }
    }
    None
}

/// At most 64 characters of a raw JSON value, for messages.
fn excerpt(raw: &str) -> String {
    match raw.char_indices().nth(64) {
        Some((i, _)) => format!("{}…", &raw[..i]),
        None => raw.to_string(),
    }
}

fn check_name(field: &str, name: &str, limits: &Limits) -> Result<(), Rejection> {
    if name.trim().is_empty() {
        return Err(reject(
            RejectReason::InvalidName,
            format!("{field} is blank"),
        ));
    }
    if name.trim() != name {
        return Err(reject(
            RejectReason::InvalidName,
            format!("{field} {name:?} starts or ends with white space"),
        ));
    }
    if name.len() > limits.max_name_bytes {
        return Err(reject(
            RejectReason::InvalidName,
            format!(
                "{field} is {} bytes long; the limit is {}",
                name.len(),
                limits.max_name_bytes
            ),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(reject(
            RejectReason::InvalidName,
            format!("{field} contains control characters"),
        ));
    }
    Ok(())
}

fn parse_value(raw: &str) -> Result<f64, Rejection> {
    if raw.starts_with('"') {
        let inner = raw.trim_matches('"');
        if matches!(
            inner.to_ascii_lowercase().as_str(),
            "nan" | "infinity" | "-infinity" | "inf" | "-inf"
        ) {
            return Err(reject(
                RejectReason::NonFiniteValue,
                format!("value {} is not a finite number", excerpt(raw)),
            ));
        }
        return Err(reject(
            RejectReason::InvalidField,
            format!(
                "value must be a JSON number, got the string {}",
                excerpt(raw)
            ),
        ));
    }
    match raw.parse::<f64>() {
        Ok(v) if v.abs() <= MAX_ABS_VALUE => Ok(v),
        Ok(v) if v.is_finite() => Err(reject(
            RejectReason::ValueOutOfRange,
            format!(
                "value {} is beyond ±{MAX_ABS_VALUE:e}, the largest magnitude accepted",
                excerpt(raw)
            ),
        )),
        Ok(_) => Err(reject(
            RejectReason::ValueOutOfRange,
            format!("value {} overflows a 64-bit float", excerpt(raw)),
        )),
        Err(_) => Err(reject(
            RejectReason::InvalidField,
            format!("value must be a JSON number, got {}", excerpt(raw)),
        )),
    }
}

fn parse_timestamp(raw: &str) -> Result<i64, Rejection> {
    if raw.starts_with('"') {
        let inner: String = serde_json::from_str(raw).map_err(|e| {
            reject(
                RejectReason::InvalidTimestamp,
                format!("timestamp is not a valid string: {e}"),
            )
        })?;
        return parse_rfc3339(&inner).map_err(|refusal| {
            let message = match refusal {
                TimeRefusal::LeapSecond => format!(
                    "timestamp {} is a leap second, which UTC milliseconds cannot hold (send 23:59:59.999 or the next second)",
                    excerpt(raw)
                ),
                TimeRefusal::NotRfc3339 => format!(
                    "timestamp {} is not RFC 3339 (e.g. \"2013-03-01T00:00:00+08:00\")",
                    excerpt(raw)
                ),
            };
            reject(RejectReason::InvalidTimestamp, message)
        });
    }
    let invalid = || {
        reject(
            RejectReason::InvalidTimestamp,
            format!(
                "timestamp {} must be an RFC 3339 string or integer epoch milliseconds",
                excerpt(raw)
            ),
        )
    };
    if let Ok(ms) = raw.parse::<i64>() {
        return Ok(ms);
    }
    // JSON allows 1.3620672e12 for an integer; accept it only when it is a whole number in range.
    match raw.parse::<f64>() {
        Ok(f) if f.is_finite() && f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(f as i64),
        _ => Err(invalid()),
    }
}

fn check_window(ts_ms: i64, raw: &str, now_ms: i64, limits: &Limits) -> Result<(), Rejection> {
    let newest = now_ms.saturating_add(limits.max_future_ms);
    if ts_ms > newest {
        return Err(reject(
            RejectReason::TimestampInFuture,
            format!(
                "timestamp {} is more than {} s ahead of the server clock ({})",
                format_rfc3339_ms(ts_ms),
                limits.max_future_ms / 1000,
                format_rfc3339_ms(now_ms)
            ),
        ));
    }
    let oldest = now_ms.saturating_sub(limits.max_past_ms);
    if ts_ms < oldest {
        let numeric = !raw.starts_with('"');
        let as_seconds = ts_ms.saturating_mul(1000);
        let hint = if numeric && as_seconds >= oldest && as_seconds <= newest {
            "; it looks like epoch seconds, but numeric timestamps are epoch milliseconds"
        } else {
            ""
        };
        return Err(reject(
            RejectReason::TimestampTooOld,
            format!(
                "timestamp {} is older than the accepted window of {} days{hint}",
                format_rfc3339_ms(ts_ms),
                limits.max_past_ms / 86_400_000
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2026-12-03T00:00:00Z
    const NOW: i64 = 1_796_256_000_000;

    fn check(json: &[u8]) -> Result<Reading, Rejection> {
        validate_piece(json, "default", NOW, &Limits::default())
    }

    fn reason(json: &[u8]) -> RejectReason {
        match check(json) {
            Ok(r) => panic!("expected a rejection, got {r:?}"),
            Err(e) => e.reason,
        }
    }

    #[test]
    fn valid_reading_with_rfc3339_time_is_accepted_in_utc() {
        let r = check(br#"{"device":"Dongsi","metric":"PM2.5","timestamp":"2013-03-01T00:00:00+08:00","value":4}"#)
            .expect("valid");
        assert_eq!(r.tenant, "default");
        assert_eq!(r.ts_ms, 1_362_067_200_000);
        assert_eq!(r.value, 4.0);
    }

    #[test]
    fn epoch_milliseconds_and_explicit_tenant_are_accepted() {
        let r = check(br#"{"tenant":"acme","device":"d","metric":"m","timestamp":1362067200000,"value":-0.5}"#)
            .expect("valid");
        assert_eq!(
            (r.tenant.as_str(), r.ts_ms, r.value),
            ("acme", 1_362_067_200_000, -0.5)
        );
    }

    #[test]
    fn non_finite_and_overflowing_values_are_named() {
        assert_eq!(
            reason(br#"{"device":"d","metric":"m","timestamp":0,"value":NaN}"#),
            RejectReason::NonFiniteValue
        );
        assert_eq!(
            reason(br#"{"device":"d","metric":"m","timestamp":0,"value":-Infinity}"#),
            RejectReason::NonFiniteValue
        );
        assert_eq!(
            reason(br#"{"device":"d","metric":"m","timestamp":0,"value":"NaN"}"#),
            RejectReason::NonFiniteValue
        );
        let e = check(br#"{"device":"d","metric":"m","timestamp":1362067200000,"value":1e999}"#)
            .expect_err("overflow");
        assert_eq!(e.reason, RejectReason::ValueOutOfRange);
        assert!(e.message.contains("1e999"), "{}", e.message);
    }

    #[test]
    fn missing_fields_are_all_listed() {
        let e = check(br#"{"device":"d","value":null}"#).expect_err("missing");
        assert_eq!(e.reason, RejectReason::MissingField);
        assert_eq!(e.message, "missing field(s): metric, timestamp, value");
    }

    #[test]
    fn timestamp_in_2033_is_in_the_future() {
        let e =
            check(br#"{"device":"d","metric":"m","timestamp":"2033-01-01T00:00:00Z","value":1}"#)
                .expect_err("future");
        assert_eq!(e.reason, RejectReason::TimestampInFuture);
        assert!(e.message.contains("2033-01-01T00:00:00Z"), "{}", e.message);
    }

    #[test]
    fn seconds_sent_as_milliseconds_are_too_old_with_a_hint() {
        let e = check(br#"{"device":"d","metric":"m","timestamp":1362067200,"value":1}"#)
            .expect_err("too old");
        assert_eq!(e.reason, RejectReason::TimestampTooOld);
        assert!(e.message.contains("epoch seconds"), "{}", e.message);
    }

    #[test]
    fn malformed_elements_get_specific_reasons() {
        assert_eq!(reason(b"{\"device\":\"\xff\"}"), RejectReason::InvalidUtf8);
        assert_eq!(reason(b"{\"device\":"), RejectReason::InvalidJson);
        assert_eq!(reason(b""), RejectReason::InvalidJson);
        assert_eq!(reason(b"42"), RejectReason::NotAnObject);
        assert_eq!(
            reason(br#"{"device":1,"metric":"m","timestamp":0,"value":1}"#),
            RejectReason::InvalidField
        );
        assert_eq!(
            reason(br#"{"device":"d","metric":"m","timestamp":0,"value":"4"}"#),
            RejectReason::InvalidField
        );
        assert_eq!(
            reason(br#"{"device":"d","metric":"m","timestamp":"noon","value":1}"#),
            RejectReason::InvalidTimestamp
        );
        assert_eq!(
            reason(br#"{"device":"d","metric":"m","timestamp":1.5,"value":1}"#),
            RejectReason::InvalidTimestamp
        );
        assert_eq!(
            reason(br#"{"device":" ","metric":"m","timestamp":0,"value":1}"#),
            RejectReason::InvalidName
        );
    }

    #[test]
    fn values_too_large_to_sum_safely_are_refused() {
        // Two readings of 1.7e308 would overflow their bucket's sum to infinity.
        let e = check(br#"{"device":"d","metric":"m","timestamp":1362067200000,"value":1.7e308}"#)
            .expect_err("too big");
        assert_eq!(e.reason, RejectReason::ValueOutOfRange);
        assert!(e.message.contains("1e100"), "{}", e.message);
        assert!(
            check(br#"{"device":"d","metric":"m","timestamp":1362067200000,"value":-1e100}"#)
                .is_ok()
        );
    }

    #[test]
    fn names_with_surrounding_white_space_are_refused() {
        let e = check(br#"{"device":"sp ","metric":"m","timestamp":1362067200000,"value":1}"#)
            .expect_err("space");
        assert_eq!(e.reason, RejectReason::InvalidName);
        assert!(e.message.contains("white space"), "{}", e.message);
    }

    #[test]
    fn duplicate_keys_are_invalid_json_and_long_values_are_shortened_in_messages() {
        assert_eq!(
            reason(br#"{"device":"d","metric":"m","timestamp":1362067200000,"value":1,"value":2}"#),
            RejectReason::InvalidJson
        );
        let long = format!(
            r#"{{"device":"d","metric":"m","timestamp":1362067200000,"value":"{}"}}"#,
            "x".repeat(5000)
        );
        let e = check(long.as_bytes()).expect_err("string value");
        assert!(e.message.len() < 200, "{}", e.message);
    }

    #[test]
    fn nan_inside_a_string_is_not_mistaken_for_a_value() {
        assert_eq!(
            bare_non_finite_token(r#"{"device":"NaN-sensor","value":1}"#),
            None
        );
        assert_eq!(bare_non_finite_token(r#"{"v":Infinity}"#), Some("Infinity"));
    }

    #[test]
    fn non_ascii_text_outside_strings_is_rejected_without_panicking() {
        assert_eq!(reason("{é}".as_bytes()), RejectReason::InvalidJson);
        assert_eq!(reason("[1é]".as_bytes()), RejectReason::NotAnObject);
        assert_eq!(
            reason("{\"device\":\"é\",µNaN}".as_bytes()),
            RejectReason::NonFiniteValue
        );
    }

    proptest::proptest! {
        /// Whatever the bytes, an element gets an answer (a reading or a named rejection), never a panic.
        #[test]
        fn any_element_gets_an_answer(text in "\\PC{0,40}", bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..40)) {
            let _answer = check(text.as_bytes());
            let _answer = check(&bytes);
            let wrapped = format!("{{\"device\":\"d\",\"metric\":\"m\",\"timestamp\":0,{text}}}");
            let _answer = check(wrapped.as_bytes());
        }
    }

    #[test]
    fn a_leap_second_is_rejected_with_its_own_reason() {
        let err =
            check(br#"{"device":"d","metric":"m","timestamp":"2026-06-30T23:59:60Z","value":1}"#)
                .expect_err("leap second");
        assert_eq!(err.reason, RejectReason::InvalidTimestamp);
        assert!(err.message.contains("leap second"), "{}", err.message);
    }
}
