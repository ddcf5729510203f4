//! Reading request bodies within the configured size, time and memory limits.
//!
//! Each body is bounded by `maxBodyBytes` and `bodyReadTimeoutMs`, but many bodies at once
//! (10,000 connections, 32 streams each) would still be more memory than the machine has.
//! So every body byte held is also taken from one process-wide [`BodyBudget`]
//! (`maxBodyBytesInFlight`) and given back when the request is answered: a request whose
//! next chunk finds the budget spent gets a 503 at once, never an out-of-memory kill.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::StatusCode;
use http_body_util::BodyExt;
use hyper::body::Body;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::ApiError;
use crate::config::Limits;

/// The body bytes all requests together may hold (`ButlerEdge.limits.maxBodyBytesInFlight`).
#[derive(Clone)]
pub struct BodyBudget {
    bytes: Arc<Semaphore>,
    limit: usize,
}

impl BodyBudget {
    pub fn new(limits: &Limits) -> BodyBudget {
        // A semaphore holds at most `Semaphore::MAX_PERMITS` (usize::MAX >> 3) permits.
        let limit = limits.max_body_bytes_in_flight.min(Semaphore::MAX_PERMITS);
        BodyBudget {
            bytes: Arc::new(Semaphore::new(limit)),
            limit,
        }
    }

    /// Body bytes held by requests right now.
    pub fn in_use(&self) -> usize {
        self.limit - self.bytes.available_permits()
    }

    fn take(&self, n: usize) -> Result<OwnedSemaphorePermit, ApiError> {
        let n = u32::try_from(n).map_err(|_| self.spent())?;
        self.bytes
            .clone()
            .try_acquire_many_owned(n)
            .map_err(|_| self.spent())
    }

    fn spent(&self) -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the server is receiving {} bytes of request bodies already, its limit \
                 (ButlerEdge.limits.maxBodyBytesInFlight); try again shortly",
                self.limit
            ),
        )
    }
}

/// A whole request body and its share of the [`BodyBudget`], given back when dropped.
pub struct ReadBody {
    pub bytes: Bytes,
    _held: Option<OwnedSemaphorePermit>,
}

impl std::ops::Deref for ReadBody {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

/// Reads the whole body: 413 when it is larger than `maxBodyBytes`, 408 when it
/// does not arrive within `bodyReadTimeoutMs` (a body trickled forever is cut off), 503
/// when the [`BodyBudget`] has no room for its next chunk.
pub async fn read_to_bytes<B>(
    body: B,
    limits: &Limits,
    budget: &BodyBudget,
) -> Result<ReadBody, ApiError>
where
    B: Body<Data = Bytes>,
    B::Error: std::fmt::Display,
{
    if body.size_hint().lower() > limits.max_body_bytes as u64 {
        return Err(too_large(limits));
    }
    match tokio::time::timeout(limits.body_read_timeout, collect(body, limits, budget)).await {
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "request body not received within {} ms (ButlerEdge.limits.bodyReadTimeoutMs)",
                limits.body_read_timeout.as_millis()
            ),
        )),
        Ok(result) => result,
    }
}

/// The body's data frames, each paid for from the budget before it is kept.
async fn collect<B>(body: B, limits: &Limits, budget: &BodyBudget) -> Result<ReadBody, ApiError>
where
    B: Body<Data = Bytes>,
    B::Error: std::fmt::Display,
{
    let mut body = std::pin::pin!(body);
    let mut buffer = BytesMut::new();
    let mut held: Option<OwnedSemaphorePermit> = None;
    while let Some(frame) = body.frame().await {
        let frame = frame
            .map_err(|e| ApiError::bad_request(format!("cannot read the request body: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers: nothing to keep
        };
        if buffer.len() + data.len() > limits.max_body_bytes {
            return Err(too_large(limits));
        }
        let permit = budget.take(data.len())?;
        match &mut held {
            Some(all) => all.merge(permit),
            None => held = Some(permit),
        }
        buffer.extend_from_slice(&data);
    }
    Ok(ReadBody {
        bytes: buffer.freeze(),
        _held: held,
    })
}

fn too_large(limits: &Limits) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "request body is larger than the limit of {} bytes (ButlerEdge.limits.maxBodyBytes)",
            limits.max_body_bytes
        ),
    )
}

/// A request body too large to hold (a store restore), read as [`std::io::Read`] on a
/// blocking thread while [`pump_body`] feeds it: at most [`PUMP_CHUNKS`] chunks are held.
pub struct BodyReader {
    chunks: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
    current: Bytes,
}

/// How many received chunks wait for a [`BodyReader`].
const PUMP_CHUNKS: usize = 16;

impl std::io::Read for BodyReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.chunks.blocking_recv() {
                None => return Ok(0),
                Some(chunk) => self.current = chunk?,
            }
        }
        let n = out.len().min(self.current.len());
        out[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// A body's limits when it is streamed: its most bytes, the setting that says so (for the
/// 413), and how long it may send nothing (`bodyReadTimeoutMs`: a large body takes longer
/// than that as a whole, but a stalled one is cut off).
pub struct StreamLimits {
    pub max_bytes: u64,
    pub setting: &'static str,
    pub idle_timeout: std::time::Duration,
}

/// Splits a request body into a [`BodyReader`] for a blocking consumer and the future that
/// feeds it, which the handler awaits beside the consumer. The future ends `Ok` with the
/// bytes passed on when the body ended or the reader was dropped (the consumer stopped
/// early), and `Err` with 413, 408 or 400 when a limit was hit or the body failed; the
/// reader then gets an error too, so the consumer never takes a part for the whole.
pub fn pump_body<B>(
    body: B,
    limits: StreamLimits,
) -> (
    impl std::future::Future<Output = Result<u64, ApiError>>,
    BodyReader,
)
where
    B: Body<Data = Bytes>,
    B::Error: std::fmt::Display,
{
    let (sender, chunks) = tokio::sync::mpsc::channel(PUMP_CHUNKS);
    let reader = BodyReader {
        chunks,
        current: Bytes::new(),
    };
    let pump = async move {
        let mut body = std::pin::pin!(body);
        let mut passed: u64 = 0;
        let failed = loop {
            let frame = match tokio::time::timeout(limits.idle_timeout, body.frame()).await {
                Err(_) => {
                    break ApiError::new(
                        StatusCode::REQUEST_TIMEOUT,
                        format!(
                            "the request body sent nothing for {} ms \
                             (ButlerEdge.limits.bodyReadTimeoutMs)",
                            limits.idle_timeout.as_millis()
                        ),
                    );
                }
                Ok(None) => return Ok(passed),
                Ok(Some(Err(e))) => {
                    break ApiError::bad_request(format!("cannot read the request body: {e}"));
                }
                Ok(Some(Ok(frame))) => frame,
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            passed += data.len() as u64;
            if passed > limits.max_bytes {
                break ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!(
                        "request body is larger than the limit of {} bytes ({})",
                        limits.max_bytes, limits.setting
                    ),
                );
            }
            if sender.send(Ok(data)).await.is_err() {
                return Ok(passed);
            }
        };
        let _ = sender
            .send(Err(std::io::Error::other(failed.message.clone())))
            .await;
        Err(failed)
    };
    (pump, reader)
}
