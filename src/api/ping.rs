//! `GET /v4/butlerping` and `GET /v4/configfile/endpointsenabled`.

use http::{Response, StatusCode};
use serde::Serialize;

use crate::config::Config;
use crate::http::response::{ResponseBody, json};

pub fn butlerping() -> Response<ResponseBody> {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Pong {
        response: &'static str,
        butler_version: &'static str,
    }
    json(
        StatusCode::OK,
        &Pong {
            response: "Butler reporting for duty",
            butler_version: env!("CARGO_PKG_VERSION"),
        },
    )
}

pub fn endpoints_enabled(config: &Config) -> Response<ResponseBody> {
    json(StatusCode::OK, &config.endpoints.names(&config.features))
}
