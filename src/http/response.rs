//! Successful answers: the one place response bodies and content types are built.
//!
//! Butler (Fastify) answers JSON with `application/json; charset=utf-8`; callers such as
//! Sense's REST connector look at that header, so every JSON answer goes through [`json`]
//! or [`json_bytes`], and every error through [`butler_error`] (which [`super::error`] calls).
//! A body too large to hold (a store export) is [`streamed`] as it is produced.

use std::io::Write;

use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::channel::{Channel, Sender};
use http_body_util::{Either, Full};

/// The body type of every response butler-edge sends: small and complete, or [`streamed`].
pub type ResponseBody = Either<Full<Bytes>, Channel<Bytes, std::io::Error>>;

fn full(bytes: impl Into<Bytes>) -> ResponseBody {
    Either::Left(Full::new(bytes.into()))
}

const JSON: &str = "application/json; charset=utf-8";

/// A JSON response with Fastify's content type.
pub fn json<T: serde::Serialize>(status: StatusCode, body: &T) -> Response<ResponseBody> {
    match serde_json::to_vec(body) {
        Ok(bytes) => json_bytes(status, bytes),
        Err(e) => butler_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("cannot encode the response: {e}"),
        ),
    }
}

/// An error in Butler's (Fastify's) shape:
/// `{"statusCode":400,"error":"Bad Request","message":"…"}`.
pub fn butler_error(status: StatusCode, message: &str) -> Response<ResponseBody> {
    #[derive(serde::Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Body<'a> {
        status_code: u16,
        error: &'a str,
        message: &'a str,
    }
    let body = Body {
        status_code: status.as_u16(),
        error: status.canonical_reason().unwrap_or("Error"),
        message,
    };
    json_bytes(status, serde_json::to_vec(&body).unwrap_or_default())
}

/// Already encoded JSON (a stored Idempotency-Key answer, an error body).
pub fn json_bytes(status: StatusCode, body: impl Into<Bytes>) -> Response<ResponseBody> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON));
    response
}

/// A text response (200) with the given content type (`GET /metrics`).
pub fn text(content_type: &'static str, body: String) -> Response<ResponseBody> {
    let mut response = Response::new(full(body));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// An empty response (204).
pub fn empty(status: StatusCode) -> Response<ResponseBody> {
    let mut response = Response::new(full(Bytes::new()));
    *response.status_mut() = status;
    response
}

/// How many chunks a streamed body holds between its producer and the connection: with
/// [`STREAM_CHUNK_BYTES`], the most a slow reader makes the server hold.
const STREAM_CHUNKS: usize = 4;

/// The size of a streamed body's chunks.
const STREAM_CHUNK_BYTES: usize = 64 << 10;

/// A 200 whose body `produce` writes, on a blocking thread, while the connection sends it:
/// at most [`STREAM_CHUNKS`] chunks are held, so a body of any size costs the same memory,
/// and `produce` waits while the caller reads slowly. When `produce` fails, or the caller
/// goes away (its writes then fail), the body is cut off with an error, so the caller
/// never mistakes a part for the whole (hyper closes the connection or resets the stream).
pub fn streamed<F>(content_type: &'static str, produce: F) -> Response<ResponseBody>
where
    F: FnOnce(&mut dyn Write) -> std::io::Result<()> + Send + 'static,
{
    let (sender, body) = Channel::new(STREAM_CHUNKS);
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let mut out = ChannelWriter {
            sender: Some(sender),
            buffer: BytesMut::with_capacity(STREAM_CHUNK_BYTES),
            runtime,
        };
        let outcome = produce(&mut out).and_then(|()| out.flush());
        if let (Err(e), Some(sender)) = (outcome, out.sender.take()) {
            tracing::warn!(error = %e, "a streamed response was cut off before its end");
            sender.abort(e);
        }
    });
    let mut response = Response::new(Either::Right(body));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// The producer's side of a [`streamed`] body: fills a chunk, then waits for room in the
/// channel (the blocking thread may wait on the runtime; the reactor never waits on it).
struct ChannelWriter {
    sender: Option<Sender<Bytes, std::io::Error>>,
    buffer: BytesMut,
    runtime: tokio::runtime::Handle,
}

impl ChannelWriter {
    fn send_buffer(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = self.buffer.split().freeze();
        let gone = || std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the caller went away");
        let sender = self.sender.as_mut().ok_or_else(gone)?;
        self.runtime
            .block_on(sender.send_data(chunk))
            .map_err(|_| gone())
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        if self.buffer.len() >= STREAM_CHUNK_BYTES {
            self.send_buffer()?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send_buffer()
    }
}
