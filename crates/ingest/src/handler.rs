//! `POST /v1/readings`.

use std::collections::BTreeMap;
use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use reporting_bus::OutRecord;
use reporting_core::body::{split_json_array, split_ndjson, Piece};
use reporting_core::reading::Reading;
use reporting_core::record::encode_by_device;
use reporting_core::validate::validate_piece;
use reporting_observe::names;
use serde::Serialize;

use crate::IngestState;

/// Most rejections listed one by one in a response (all are counted).
const MAX_LISTED_REJECTIONS: usize = 10_000;

#[derive(Serialize)]
struct Rejected {
    index: usize,
    reason: &'static str,
    message: String,
}

#[derive(Serialize)]
struct Answer {
    accepted: usize,
    rejected_count: usize,
    rejected_by_reason: BTreeMap<&'static str, usize>,
    rejected: Vec<Rejected>,
}

fn refuse(status: StatusCode, reason: &'static str, message: String) -> Response {
    metrics::counter!(names::INGEST_REQUESTS_REJECTED, "reason" => reason).increment(1);
    tracing::info!(reason, status = status.as_u16(), detail = %message, "request refused");
    (
        status,
        Json(serde_json::json!({ "error": reason, "message": message })),
    )
        .into_response()
}

enum Format {
    JsonArray,
    NdJson,
}

fn format_of(headers: &HeaderMap, body: &[u8]) -> Result<Format, String> {
    let Some(ct) = headers.get(header::CONTENT_TYPE) else {
        // No content type: an array is JSON, anything else is taken as NDJSON.
        let first = body.iter().find(|b| !b.is_ascii_whitespace());
        return Ok(if first == Some(&b'[') {
            Format::JsonArray
        } else {
            Format::NdJson
        });
    };
    let ct = ct.to_str().unwrap_or("").to_ascii_lowercase();
    let mime = ct.split(';').next().unwrap_or("").trim();
    match mime {
        "application/json" => Ok(Format::JsonArray),
        "application/x-ndjson" | "application/ndjson" | "application/jsonl" | "application/x-jsonlines" => Ok(Format::NdJson),
        other => Err(format!(
            "content type {other:?} is not supported; send application/json (an array of readings) or application/x-ndjson"
        )),
    }
}

async fn read_limited(body: Body, limit: usize) -> Result<Vec<u8>, Response> {
    let mut stream = body.into_data_stream();
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            refuse(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                format!("could not read the request body: {e}"),
            )
        })?;
        if bytes.len() + chunk.len() > limit {
            return Err(too_large(limit));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

fn too_large(limit: usize) -> Response {
    refuse(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        format!("request body exceeds the limit of {limit} bytes; nothing was accepted, split it into smaller requests"),
    )
}

pub(crate) async fn post_readings(
    State(state): State<IngestState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let limit = state.settings.max_body_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return too_large(limit);
    }
    let bytes = match read_limited(body, limit).await {
        Ok(b) => b,
        Err(response) => return response,
    };
    let format = match format_of(&headers, &bytes) {
        Ok(f) => f,
        Err(message) => {
            return refuse(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                message,
            )
        }
    };
    let blank = bytes.iter().all(u8::is_ascii_whitespace);
    let pieces: Vec<Piece<'_>> = match format {
        // An empty body is an empty batch in either format.
        _ if blank => Vec::new(),
        Format::NdJson => split_ndjson(&bytes),
        Format::JsonArray => match split_json_array(&bytes) {
            Ok(p) => p,
            Err(e) => return refuse(StatusCode::BAD_REQUEST, "invalid_body", e.to_string()),
        },
    };

    let now = state.clock.now_ms();
    let settings = &state.settings;
    let mut readings: Vec<Reading> = Vec::with_capacity(pieces.len());
    let mut answer = Answer {
        accepted: 0,
        rejected_count: 0,
        rejected_by_reason: BTreeMap::new(),
        rejected: Vec::new(),
    };
    for piece in &pieces {
        match validate_piece(piece.bytes, &settings.default_tenant, now, &settings.limits) {
            Ok(r) => readings.push(r),
            Err(rejection) => {
                answer.rejected_count += 1;
                *answer
                    .rejected_by_reason
                    .entry(rejection.reason.as_str())
                    .or_default() += 1;
                if answer.rejected.len() < MAX_LISTED_REJECTIONS {
                    answer.rejected.push(Rejected {
                        index: piece.index,
                        reason: rejection.reason.as_str(),
                        message: rejection.message,
                    });
                }
            }
        }
    }

    if !readings.is_empty() {
        let records: Vec<OutRecord> = encode_by_device(&readings)
            .into_iter()
            .map(|(key, value)| OutRecord { key, value })
            .collect();
        let started = Instant::now();
        let published = state.publisher.publish(records).await;
        metrics::histogram!(names::BUS_PUBLISH_SECONDS).record(started.elapsed().as_secs_f64());
        if let Err(e) = published {
            tracing::warn!(
                error = &e as &dyn std::error::Error,
                readings = readings.len(),
                "publish failed"
            );
            return refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "bus_unavailable",
                format!("{e}; none of the readings in this request were acknowledged, retry later (retries are safe)"),
            );
        }
    }
    // Counted only now: acknowledged means durable, and a refused request counts in requests_rejected alone.
    for (reason, n) in &answer.rejected_by_reason {
        metrics::counter!(names::INGEST_REJECTED, "reason" => *reason).increment(*n as u64);
    }
    answer.accepted = readings.len();
    metrics::counter!(names::INGEST_ACCEPTED).increment(answer.accepted as u64);
    let status = if answer.accepted == 0 && answer.rejected_count > 0 {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    (status, Json(answer)).into_response()
}
