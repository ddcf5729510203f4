//! Reading request bodies within the configured size and time limits.

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Body;

use super::error::ApiError;
use crate::config::Limits;

/// Reads the whole body: 413 when it is larger than `maxBodyBytes`, 408 when it
/// does not arrive within `bodyReadTimeoutMs` (a body trickled forever is cut off).
pub async fn read_to_bytes<B>(body: B, limits: &Limits) -> Result<Bytes, ApiError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if body.size_hint().lower() > limits.max_body_bytes as u64 {
        return Err(too_large(limits));
    }
    let limited = Limited::new(body, limits.max_body_bytes);
    match tokio::time::timeout(limits.body_read_timeout, limited.collect()).await {
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "request body not received within {} ms (ButlerEdge.limits.bodyReadTimeoutMs)",
                limits.body_read_timeout.as_millis()
            ),
        )),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large(limits)),
        Ok(Err(e)) => Err(ApiError::bad_request(format!(
            "cannot read the request body: {e}"
        ))),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
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
