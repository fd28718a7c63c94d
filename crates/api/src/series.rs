//! `GET /v1/series`, `GET /v1/devices`, `GET /v1/metrics`.

use std::fmt::Write as _;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use reporting_core::time::format_rfc3339_ms;
use reporting_store::{Bucket, SeriesQuery};
use serde_json::json;

use crate::query::{params, series_request};
use crate::{error, store_failed, ApiState};

fn wants_csv(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(accept_prefers_csv)
}

/// Whether an `Accept` header ranks `text/csv` above JSON (RFC 9110 quality values; JSON wins ties, and `*/*`
/// or `application/*` count for JSON, `text/*` for CSV).
fn accept_prefers_csv(accept: &str) -> bool {
    let (mut csv, mut json) = (0.0_f64, 0.0_f64);
    for item in accept.split(',') {
        let mut parts = item.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.strip_prefix("q=").or_else(|| p.strip_prefix("Q=")))
            .find_map(|v| v.parse::<f64>().ok())
            .unwrap_or(1.0);
        match media.as_str() {
            "text/csv" | "text/*" => csv = csv.max(q),
            "application/json" | "application/*" | "*/*" => json = json.max(q),
            _ => {}
        }
    }
    csv > json
}

pub(crate) async fn get_series(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    let p = match series_request(pairs, &state.settings.default_tenant, wants_csv(&headers)) {
        Ok(p) => p,
        Err(problems) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                problems.join("; "),
            );
        }
    };
    let max = state.settings.max_buckets;
    let query = SeriesQuery {
        tenant: p.tenant.clone(),
        device: p.device.clone(),
        metric: p.metric.clone(),
        interval: p.interval,
        from_ms: p.from_ms,
        to_ms: p.to_ms,
        limit: max + 1,
    };
    let buckets = match state.store.series(query).await {
        Ok(b) => b,
        Err(e) => return store_failed(&e),
    };
    if buckets.len() > max {
        return error(
            StatusCode::BAD_REQUEST,
            "too_many_buckets",
            format!(
                "the range holds more than {max} buckets at {}; narrow from/to{}",
                p.interval.as_str(),
                if p.interval == reporting_core::time::Interval::Day {
                    ""
                } else {
                    " or use a coarser interval"
                }
            ),
        );
    }
    if buckets.is_empty() {
        match state.store.metrics(&p.tenant, Some(&p.device)).await {
            Ok(metrics) if !metrics.contains(&p.metric) => {
                return error(
                    StatusCode::NOT_FOUND,
                    "unknown_series",
                    format!(
                        "no series {}/{}/{}; see /v1/devices and /v1/metrics?device=…",
                        p.tenant, p.device, p.metric
                    ),
                )
            }
            Ok(_) => {}
            Err(e) => return store_failed(&e),
        }
    }
    if p.csv {
        return (
            [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
            csv(&buckets),
        )
            .into_response();
    }
    let rows: Vec<serde_json::Value> = buckets.iter().map(bucket_json).collect();
    Json(json!({
        "tenant": p.tenant,
        "device": p.device,
        "metric": p.metric,
        "interval": p.interval.as_str(),
        "buckets": rows,
    }))
    .into_response()
}

fn bucket_json(b: &Bucket) -> serde_json::Value {
    let r = &b.rollup;
    json!({
        "start": format_rfc3339_ms(b.start_ms),
        "count": r.count,
        "sum": r.sum,
        "min": r.min,
        "max": r.max,
        "avg": r.avg(),
        "first": r.first,
        "first_at": format_rfc3339_ms(r.first_ts),
        "last": r.last,
        "last_at": format_rfc3339_ms(r.last_ts),
    })
}

fn csv(buckets: &[Bucket]) -> String {
    let mut out = String::from("start,count,sum,min,max,avg,first,first_at,last,last_at\n");
    for b in buckets {
        let r = &b.rollup;
        let _infallible = writeln!(
            out,
            "{},{},{},{},{},{},{},{},{},{}",
            format_rfc3339_ms(b.start_ms),
            r.count,
            r.sum,
            r.min,
            r.max,
            r.avg(),
            r.first,
            format_rfc3339_ms(r.first_ts),
            r.last,
            format_rfc3339_ms(r.last_ts)
        );
    }
    out
}

pub(crate) async fn get_devices(
    State(state): State<ApiState>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    if let Err(problems) = params(pairs, &[]) {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            problems.join("; "),
        );
    }
    match state.store.devices().await {
        Ok(devices) => {
            let list: Vec<_> = devices
                .iter()
                .map(|d| json!({ "tenant": d.tenant, "device": d.device }))
                .collect();
            Json(json!({ "devices": list })).into_response()
        }
        Err(e) => store_failed(&e),
    }
}

pub(crate) async fn get_metrics(
    State(state): State<ApiState>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    let q = match params(pairs, &["tenant", "device"]) {
        Ok(q) => q,
        Err(problems) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                problems.join("; "),
            )
        }
    };
    let tenant = q
        .get("tenant")
        .cloned()
        .unwrap_or_else(|| state.settings.default_tenant.clone());
    match state
        .store
        .metrics(&tenant, q.get("device").map(String::as_str))
        .await
    {
        Ok(metrics) if metrics.is_empty() && q.contains_key("device") => error(
            StatusCode::NOT_FOUND,
            "unknown_device",
            format!(
                "no device {}/{}; see /v1/devices",
                tenant,
                q.get("device").map_or("", String::as_str)
            ),
        ),
        Ok(metrics) => Json(json!({ "metrics": metrics })).into_response(),
        Err(e) => store_failed(&e),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn csv_is_chosen_only_when_the_accept_header_ranks_it_above_json() {
        assert!(super::accept_prefers_csv("text/csv"));
        assert!(super::accept_prefers_csv(
            "application/json;q=0.5, text/csv"
        ));
        assert!(!super::accept_prefers_csv(
            "application/json, text/csv;q=0.1"
        ));
        assert!(!super::accept_prefers_csv("*/*"));
        assert!(!super::accept_prefers_csv("text/csv, application/json"));
        assert!(super::accept_prefers_csv("text/*;q=0.9, */*;q=0.1"));
    }

    use super::*;
    use reporting_core::rollup::Rollup;

    #[test]
    fn csv_has_a_header_and_one_line_per_bucket() {
        let b = Bucket {
            start_ms: 0,
            rollup: Rollup::of_reading(1_000, 2.5),
        };
        let text = csv(&[b]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "start,count,sum,min,max,avg,first,first_at,last,last_at"
        );
        assert_eq!(lines[1], "1970-01-01T00:00:00Z,1,2.5,2.5,2.5,2.5,2.5,1970-01-01T00:00:01Z,2.5,1970-01-01T00:00:01Z");
    }
}
