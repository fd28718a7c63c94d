//! Query-string parsing for the reports API.

use std::collections::HashMap;

use reporting_core::time::{parse_rfc3339_ms, Interval};

/// A checked `GET /v1/series` request.
#[derive(Debug, PartialEq)]
pub(crate) struct SeriesParams {
    pub(crate) tenant: String,
    pub(crate) device: String,
    pub(crate) metric: String,
    pub(crate) interval: Interval,
    pub(crate) from_ms: Option<i64>,
    pub(crate) to_ms: Option<i64>,
    pub(crate) csv: bool,
}

/// The parameters `/v1/series` knows.
pub(crate) const SERIES_PARAMS: [&str; 7] = [
    "tenant", "device", "metric", "interval", "from", "to", "format",
];

fn parse_time(name: &str, raw: &str) -> Result<i64, String> {
    if let Ok(ms) = raw.parse::<i64>() {
        return Ok(ms);
    }
    let hint = if raw.contains(' ') {
        " (a '+' in a URL must be sent as %2B)"
    } else {
        ""
    };
    parse_rfc3339_ms(raw).ok_or_else(|| {
        format!("{name}={raw:?} is neither RFC 3339 (2013-03-01T00:00:00Z) nor epoch milliseconds{hint}")
    })
}

/// The query string as a map; a parameter given twice or not in `known` is a problem.
pub(crate) fn params(
    pairs: Vec<(String, String)>,
    known: &[&str],
) -> Result<HashMap<String, String>, Vec<String>> {
    let (map, problems) = params_with_problems(pairs, known);
    if problems.is_empty() {
        Ok(map)
    } else {
        Err(problems)
    }
}

/// The known parameters, and the problems with unknown or repeated ones (so that the caller can list them with
/// the problems of the known ones).
pub(crate) fn params_with_problems(
    pairs: Vec<(String, String)>,
    known: &[&str],
) -> (HashMap<String, String>, Vec<String>) {
    let mut map = HashMap::new();
    let mut problems = Vec::new();
    for (k, v) in pairs {
        if !known.contains(&k.as_str()) {
            problems.push(format!(
                "unknown parameter {k:?} (known: {})",
                known.join(", ")
            ));
        } else if map.insert(k.clone(), v).is_some() {
            problems.push(format!("parameter {k:?} is given more than once"));
        }
    }
    (map, problems)
}

/// The parameters of `/v1/series` from the query's pairs; every problem is listed in the error, unknown and
/// repeated parameters with the problems of the known ones.
pub(crate) fn series_request(
    pairs: Vec<(String, String)>,
    default_tenant: &str,
    wants_csv_header: bool,
) -> Result<SeriesParams, Vec<String>> {
    let (q, mut problems) = params_with_problems(pairs, &SERIES_PARAMS);
    match series_params(&q, default_tenant, wants_csv_header) {
        Ok(p) if problems.is_empty() => Ok(p),
        result => {
            problems.extend(result.err().unwrap_or_default());
            Err(problems)
        }
    }
}

/// Checks the parameters; every problem is listed in the error.
pub(crate) fn series_params(
    q: &HashMap<String, String>,
    default_tenant: &str,
    wants_csv_header: bool,
) -> Result<SeriesParams, Vec<String>> {
    let mut problems = Vec::new();
    // Names are matched exactly (ingest refuses names with surrounding white space).
    let mut required = |name: &str| match q.get(name) {
        Some(v) if !v.trim().is_empty() => v.to_string(),
        _ => {
            problems.push(format!("{name} is required"));
            String::new()
        }
    };
    let device = required("device");
    let metric = required("metric");
    let interval = match q.get("interval").map(String::as_str) {
        None => Interval::Hour,
        Some(s) => Interval::parse(s).unwrap_or_else(|| {
            problems.push(format!("interval={s:?} is not one of 1m, 1h, 1d"));
            Interval::Hour
        }),
    };
    let mut time = |name: &str| match q.get(name) {
        None => None,
        Some(raw) => match parse_time(name, raw) {
            Ok(ms) => Some(ms),
            Err(p) => {
                problems.push(p);
                None
            }
        },
    };
    let from_ms = time("from");
    let to_ms = time("to");
    if let (Some(f), Some(t)) = (from_ms, to_ms) {
        if f >= t {
            problems.push("from must be before to (from is inclusive, to exclusive)".to_string());
        }
    }
    let csv = match q.get("format").map(String::as_str) {
        None => wants_csv_header,
        Some("csv") => true,
        Some("json") => false,
        Some(other) => {
            problems.push(format!("format={other:?} is not json or csv"));
            false
        }
    };
    if !problems.is_empty() {
        return Err(problems);
    }
    let tenant = q
        .get("tenant")
        .cloned()
        .unwrap_or_else(|| default_tenant.to_string());
    Ok(SeriesParams {
        tenant,
        device,
        metric,
        interval,
        from_ms,
        to_ms,
        csv,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_unknown_parameter_is_listed_with_the_problems_of_the_known_ones() {
        let pairs = vec![
            ("metric".to_string(), "temp".to_string()),
            ("interval".to_string(), "2h".to_string()),
            ("colour".to_string(), "red".to_string()),
        ];
        let problems = super::series_request(pairs, "default", false).expect_err("three problems");
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(
            problems[0].contains("unknown parameter \"colour\""),
            "{problems:?}"
        );
        assert!(
            problems.iter().any(|p| p.contains("device is required")),
            "{problems:?}"
        );
        assert!(
            problems.iter().any(|p| p.contains("interval")),
            "{problems:?}"
        );
    }

    use super::*;

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn complete_query_is_parsed_with_rfc3339_and_millisecond_times() {
        let p = series_params(
            &q(&[
                ("device", "Dongsi"),
                ("metric", "PM2.5"),
                ("interval", "1d"),
                ("from", "2013-03-01T00:00:00+08:00"),
                ("to", "1362200000000"),
            ]),
            "default",
            false,
        )
        .expect("valid");
        assert_eq!(p.interval, Interval::Day);
        assert_eq!(p.from_ms, Some(1_362_067_200_000));
        assert_eq!(p.to_ms, Some(1_362_200_000_000));
        assert_eq!(p.tenant, "default");
        assert!(!p.csv);
    }

    #[test]
    fn every_problem_is_listed() {
        let problems = series_params(&q(&[("interval", "5m"), ("from", "soon")]), "d", false)
            .expect_err("invalid");
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems.iter().any(|p| p.contains("device is required")));
    }

    #[test]
    fn unknown_and_repeated_parameters_are_problems() {
        let pairs = vec![
            ("device".to_string(), "a".to_string()),
            ("device".into(), "b".into()),
            ("colour".into(), "red".into()),
        ];
        let problems = params(pairs, &SERIES_PARAMS).expect_err("invalid");
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems.iter().any(|p| p.contains("\"colour\"")));
        assert!(problems.iter().any(|p| p.contains("more than once")));
    }

    #[test]
    fn unencoded_plus_in_a_time_gets_a_hint() {
        let query = q(&[
            ("device", "d"),
            ("metric", "m"),
            ("from", "2013-03-01T00:00:00 08:00"),
        ]);
        let problems = series_params(&query, "t", false).expect_err("invalid");
        assert!(problems[0].contains("%2B"), "{problems:?}");
    }

    #[test]
    fn reversed_range_and_csv_preference_are_handled() {
        let base = [("device", "d"), ("metric", "m")];
        let mut reversed = base.to_vec();
        reversed.extend([("from", "10"), ("to", "5")]);
        assert!(series_params(&q(&reversed), "t", false).is_err());
        assert!(series_params(&q(&base), "t", true).expect("valid").csv);
        let mut json = base.to_vec();
        json.push(("format", "json"));
        assert!(!series_params(&q(&json), "t", true).expect("valid").csv);
    }
}
