//! Sending one batch to `POST {url}/v1/readings`, with bounded retries.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::header::CONTENT_TYPE;
use reqwest::{StatusCode, Url};
use serde::Deserialize;

use crate::row::Reading;
use crate::{ImportError, Retry};

/// Longest wait for one request's response before it counts as a failed attempt.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// How much of an error response body is kept for the error message.
const BODY_EXCERPT_CHARS: usize = 500;

/// What ingest made of one batch.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct BatchOutcome {
    /// Readings in the batch.
    pub(crate) sent: u64,
    /// Readings ingest accepted.
    pub(crate) accepted: u64,
    /// Readings ingest rejected, by its reason.
    pub(crate) rejected_by_reason: BTreeMap<String, u64>,
}

/// The body of a 200 or 422 response.
#[derive(Debug, Deserialize)]
struct IngestResponse {
    accepted: u64,
    #[serde(default)]
    rejected: Vec<Rejection>,
}

/// One rejected reading in an [`IngestResponse`].
#[derive(Debug, Deserialize)]
struct Rejection {
    index: usize,
    reason: String,
    #[serde(default)]
    message: String,
}

/// A client of one ingest endpoint.
#[derive(Debug)]
pub(crate) struct IngestClient {
    http: reqwest::Client,
    endpoint: String,
    retry: Retry,
}

/// A failed attempt that may succeed when tried again.
enum Transient {
    Unavailable { body: String },
    Transport(reqwest::Error),
}

impl IngestClient {
    /// A client for the ingest role whose base URL is `url` (plain `http`).
    pub(crate) fn new(url: &str, retry: Retry) -> Result<IngestClient, ImportError> {
        let endpoint = endpoint(url)?;
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(ImportError::Client)?;
        Ok(IngestClient {
            http,
            endpoint,
            retry,
        })
    }

    /// The full URL readings are posted to.
    pub(crate) fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Posts `batch` as a JSON array, retrying a 503 or a connection failure up to the retry policy's bound.
    pub(crate) async fn send(&self, batch: &[Reading]) -> Result<BatchOutcome, ImportError> {
        let body = serde_json::to_vec(batch).map_err(ImportError::Encode)?;
        let mut attempt = 1;
        loop {
            let response = self
                .http
                .post(&self.endpoint)
                .header(CONTENT_TYPE, "application/json")
                .body(body.clone())
                .send()
                .await;
            let transient = match response {
                Ok(response) => match response.status() {
                    status @ (StatusCode::OK | StatusCode::UNPROCESSABLE_ENTITY) => {
                        match response.bytes().await {
                            Ok(bytes) => return self.decode(status, &bytes, batch),
                            Err(error) => Transient::Transport(error),
                        }
                    }
                    StatusCode::SERVICE_UNAVAILABLE => Transient::Unavailable {
                        body: excerpt(response).await,
                    },
                    StatusCode::PAYLOAD_TOO_LARGE => {
                        let body = excerpt(response).await;
                        let url = self.endpoint.clone();
                        return Err(ImportError::BodyTooLarge {
                            url,
                            readings: batch.len(),
                            body,
                        });
                    }
                    status => {
                        let body = excerpt(response).await;
                        let url = self.endpoint.clone();
                        return Err(ImportError::Refused {
                            url,
                            status: status.as_u16(),
                            body,
                        });
                    }
                },
                Err(error) if error.is_connect() || error.is_timeout() || error.is_request() => {
                    Transient::Transport(error)
                }
                Err(source) => {
                    return Err(ImportError::Unreachable {
                        url: self.endpoint.clone(),
                        attempts: attempt,
                        source,
                    })
                }
            };

            if attempt >= self.retry.max_attempts {
                let url = self.endpoint.clone();
                return Err(match transient {
                    Transient::Unavailable { body } => ImportError::Unavailable {
                        url,
                        attempts: attempt,
                        body,
                    },
                    Transient::Transport(source) => ImportError::Unreachable {
                        url,
                        attempts: attempt,
                        source,
                    },
                });
            }
            let pause = self.retry.backoff(attempt);
            match &transient {
                Transient::Unavailable { .. } => {
                    tracing::warn!(
                        attempt,
                        pause_ms = pause.as_millis() as u64,
                        "ingest unavailable, retrying"
                    );
                }
                Transient::Transport(error) => {
                    tracing::warn!(attempt, pause_ms = pause.as_millis() as u64, error = %error, "ingest unreachable, retrying");
                }
            }
            tokio::time::sleep(pause).await;
            attempt += 1;
        }
    }

    /// Decodes the body of a 200 or 422 response into counts.
    fn decode(
        &self,
        status: StatusCode,
        body: &[u8],
        batch: &[Reading],
    ) -> Result<BatchOutcome, ImportError> {
        let decoded: IngestResponse =
            serde_json::from_slice(body).map_err(|source| ImportError::InvalidResponse {
                url: self.endpoint.clone(),
                status: status.as_u16(),
                source,
            })?;

        let mut outcome = BatchOutcome {
            sent: batch.len() as u64,
            accepted: decoded.accepted,
            ..Default::default()
        };
        for rejection in &decoded.rejected {
            *outcome
                .rejected_by_reason
                .entry(rejection.reason.clone())
                .or_default() += 1;
        }
        if let Some(first) = decoded.rejected.first() {
            let reading = batch.get(first.index);
            tracing::warn!(
                rejected = decoded.rejected.len(),
                reason = %first.reason,
                message = %first.message,
                device = reading.map(|r| r.device.as_str()),
                metric = reading.map(|r| r.metric),
                timestamp_ms = reading.map(|r| r.timestamp),
                "ingest rejected readings",
            );
        }
        let answered = decoded.accepted + decoded.rejected.len() as u64;
        if answered != outcome.sent {
            tracing::warn!(
                sent = outcome.sent,
                answered,
                "ingest answered for a different number of readings"
            );
        }
        Ok(outcome)
    }
}

/// `{url}/v1/readings`, checking that `url` is an `http` URL.
fn endpoint(url: &str) -> Result<String, ImportError> {
    let invalid = |source: Box<dyn std::error::Error + Send + Sync>| ImportError::InvalidUrl {
        url: url.to_owned(),
        source,
    };
    let parsed = Url::parse(url).map_err(|error| invalid(Box::new(error)))?;
    if parsed.scheme() != "http" {
        let problem = format!("scheme {:?} is not supported; use http://", parsed.scheme());
        return Err(invalid(problem.into()));
    }
    Ok(format!("{}/v1/readings", url.trim_end_matches('/')))
}

/// The start of a response body, for an error message.
async fn excerpt(response: reqwest::Response) -> String {
    let text = response.text().await.unwrap_or_default();
    text.chars().take(BODY_EXCERPT_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use super::endpoint;
    use crate::ImportError;

    #[test]
    fn endpoint_appends_the_readings_path_once() {
        assert_eq!(
            endpoint("http://127.0.0.1:8080").ok().as_deref(),
            Some("http://127.0.0.1:8080/v1/readings")
        );
        assert_eq!(
            endpoint("http://ingest:8080/").ok().as_deref(),
            Some("http://ingest:8080/v1/readings")
        );
    }

    #[test]
    fn https_and_garbage_urls_are_refused_up_front() {
        assert!(matches!(
            endpoint("https://ingest:8080"),
            Err(ImportError::InvalidUrl { .. })
        ));
        assert!(matches!(
            endpoint("127.0.0.1:8080"),
            Err(ImportError::InvalidUrl { .. })
        ));
        assert!(matches!(
            endpoint("not a url"),
            Err(ImportError::InvalidUrl { .. })
        ));
    }
}
