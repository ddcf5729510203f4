//! Request routing: method override, path → [`Route`], enablement, permission, dispatch.
//!
//! A route is recognised from the method and the decoded path segments first;
//! then its endpoint group is checked against the config (a disabled endpoint is
//! a 404, as in Butler, where it is never registered), then against the caller's
//! permissions (a 403 naming the caller, see `authz`); only then is a body read
//! and the handler in `api` called. To add an endpoint: a `Route` variant, its
//! line in `Route::recognise`, its group, and its arm in `dispatch`.

use bytes::Bytes;
use http::{HeaderMap, Method, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;

use super::body::read_to_bytes;
use super::decode;
use super::error::ApiError;
use crate::api;
use crate::authz::Access;
use crate::state::AppState;

pub type ResponseBody = Full<Bytes>;

/// Endpoint groups: the unit in which endpoints are enabled (and, with client
/// certificates, permitted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointGroup {
    Ping,
    EndpointsEnabled,
    KvRead,
    KvWrite,
    StartTask,
    /// `GET /health` (`ButlerEdge.endpointsEnable.health`).
    Health,
    /// `GET /metrics` (`ButlerEdge.endpointsEnable.metrics`).
    Metrics,
}

impl EndpointGroup {
    /// Every group, for config validation (client permissions name groups).
    pub const ALL: [EndpointGroup; 7] = [
        EndpointGroup::Ping,
        EndpointGroup::EndpointsEnabled,
        EndpointGroup::KvRead,
        EndpointGroup::KvWrite,
        EndpointGroup::StartTask,
        EndpointGroup::Health,
        EndpointGroup::Metrics,
    ];

    pub fn name(self) -> &'static str {
        match self {
            EndpointGroup::Ping => "ping",
            EndpointGroup::EndpointsEnabled => "endpointsEnabled",
            EndpointGroup::KvRead => "kvRead",
            EndpointGroup::KvWrite => "kvWrite",
            EndpointGroup::StartTask => "startTask",
            EndpointGroup::Health => "health",
            EndpointGroup::Metrics => "metrics",
        }
    }
}

/// A recognised request, with its decoded path parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route<'a> {
    ButlerPing,
    EndpointsEnabled,
    KvNamespaces,
    KvGet { namespace: &'a str },
    KvExists { namespace: &'a str },
    KvPost { namespace: &'a str },
    KvDeleteNamespace { namespace: &'a str },
    KvDeleteKey { namespace: &'a str, key: &'a str },
    KvKeyList { namespace: &'a str },
    StartTask { task_id: &'a str },
    Health,
    Metrics,
}

impl<'a> Route<'a> {
    pub fn recognise(method: &Method, segments: &'a [String]) -> Option<Route<'a>> {
        let segs: Vec<&'a str> = segments.iter().map(String::as_str).collect();
        let route = match (method, segs.as_slice()) {
            (&Method::GET, ["v4", "butlerping"]) => Route::ButlerPing,
            (&Method::GET, ["v4", "configfile", "endpointsenabled"]) => Route::EndpointsEnabled,
            (&Method::GET, ["v4", "keyvaluesnamespaces"]) => Route::KvNamespaces,
            (&Method::GET, ["v4", "keyvalues", namespace]) => Route::KvGet { namespace },
            (&Method::POST, ["v4", "keyvalues", namespace]) => Route::KvPost { namespace },
            (&Method::DELETE, ["v4", "keyvalues", namespace]) => {
                Route::KvDeleteNamespace { namespace }
            }
            (&Method::GET, ["v4", "keyvalues", namespace, "keyexists"]) => {
                Route::KvExists { namespace }
            }
            (&Method::DELETE, ["v4", "keyvalues", namespace, key]) => {
                Route::KvDeleteKey { namespace, key }
            }
            (&Method::GET, ["v4", "keylist", namespace]) => Route::KvKeyList { namespace },
            (&Method::PUT | &Method::POST, ["v4", "reloadtask", task_id, "start"]) => {
                Route::StartTask { task_id }
            }
            (&Method::GET, ["health"]) => Route::Health,
            (&Method::GET, ["metrics"]) => Route::Metrics,
            _ => return None,
        };
        Some(route)
    }

    pub fn group(&self) -> EndpointGroup {
        match self {
            Route::ButlerPing => EndpointGroup::Ping,
            Route::EndpointsEnabled => EndpointGroup::EndpointsEnabled,
            Route::KvNamespaces
            | Route::KvGet { .. }
            | Route::KvExists { .. }
            | Route::KvKeyList { .. } => EndpointGroup::KvRead,
            Route::KvPost { .. } | Route::KvDeleteNamespace { .. } | Route::KvDeleteKey { .. } => {
                EndpointGroup::KvWrite
            }
            Route::StartTask { .. } => EndpointGroup::StartTask,
            Route::Health => EndpointGroup::Health,
            Route::Metrics => EndpointGroup::Metrics,
        }
    }

    /// The key-value namespace a route reads or writes, for namespace permissions.
    pub fn namespace(&self) -> Option<&'a str> {
        match self {
            Route::KvGet { namespace }
            | Route::KvExists { namespace }
            | Route::KvPost { namespace }
            | Route::KvDeleteNamespace { namespace }
            | Route::KvDeleteKey { namespace, .. }
            | Route::KvKeyList { namespace } => Some(namespace),
            Route::ButlerPing
            | Route::EndpointsEnabled
            | Route::KvNamespaces
            | Route::StartTask { .. }
            | Route::Health
            | Route::Metrics => None,
        }
    }

    /// The endpoint's name in metrics labels.
    pub fn name(&self) -> &'static str {
        match self {
            Route::ButlerPing => "butlerPing",
            Route::EndpointsEnabled => "endpointsEnabled",
            Route::KvNamespaces => "kvNamespaces",
            Route::KvGet { .. } => "kvGet",
            Route::KvExists { .. } => "kvExists",
            Route::KvPost { .. } => "kvPost",
            Route::KvDeleteNamespace { .. } => "kvDeleteNamespace",
            Route::KvDeleteKey { .. } => "kvDeleteKey",
            Route::KvKeyList { .. } => "kvKeyList",
            Route::StartTask { .. } => "startTask",
            Route::Health => "health",
            Route::Metrics => "metrics",
        }
    }
}

/// Whether the config enables an endpoint group.
fn enabled(state: &AppState, group: EndpointGroup) -> bool {
    let endpoints = &state.config.endpoints;
    match group {
        EndpointGroup::Ping => endpoints.butlerping,
        EndpointGroup::EndpointsEnabled => endpoints.api_list_enabled_endpoints,
        EndpointGroup::KvRead | EndpointGroup::KvWrite => {
            endpoints.key_value_store && state.store.is_some()
        }
        // Enabled but waiting for QRS set-up still counts: its callers get a 503 saying why.
        EndpointGroup::StartTask => {
            endpoints.sense_start_task
                && (state.start_task.is_some() || state.config.start_task.not_set_up.is_some())
        }
        EndpointGroup::Health => state.config.edge.health_endpoint,
        EndpointGroup::Metrics => state.config.edge.metrics_endpoint,
    }
}

/// The method a request is handled as. Sense's REST connector can only send GET
/// and POST, so butler_subs.qvs sends POST with `X-HTTP-Method-Override: PUT` or
/// `DELETE`; the override is honoured on POST only.
pub fn effective_method(method: &Method, headers: &HeaderMap) -> Result<Method, ApiError> {
    if method != Method::POST {
        return Ok(method.clone());
    }
    let Some(value) = headers.get("x-http-method-override") else {
        return Ok(Method::POST);
    };
    let text = value.to_str().unwrap_or("").trim();
    match text.to_ascii_uppercase().as_str() {
        "PUT" => Ok(Method::PUT),
        "DELETE" => Ok(Method::DELETE),
        "POST" => Ok(Method::POST),
        _ => Err(ApiError::bad_request(format!(
            "X-HTTP-Method-Override: expected PUT or DELETE, found {text:?}"
        ))),
    }
}

/// The route and outcome of one request, for the access log.
pub struct Handled {
    pub response: Response<ResponseBody>,
    pub method: Method,
}

pub async fn handle(req: http::Request<Incoming>, state: &AppState) -> Handled {
    let method = req.method().clone();
    match dispatch(req, state).await {
        Ok((method, response)) => Handled { response, method },
        Err(e) => Handled {
            response: e.into_response(),
            method,
        },
    }
}

async fn dispatch(
    req: http::Request<Incoming>,
    state: &AppState,
) -> Result<(Method, Response<ResponseBody>), ApiError> {
    let (parts, body) = req.into_parts();
    let method = effective_method(&parts.method, &parts.headers)?;
    let path = parts.uri.path();
    let segments = decode::path_segments(path).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let query = decode::query_pairs(parts.uri.query().unwrap_or(""))
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let not_found = || ApiError::not_found(format!("Route {method}:{path} not found"));
    let route = Route::recognise(&method, &segments).ok_or_else(not_found)?;
    if !enabled(state, route.group()) {
        return Err(not_found());
    }
    // Set by the connection for every request; absent would be a wiring fault, so the
    // fallback grants nothing.
    let access = parts
        .extensions
        .get::<Access>()
        .cloned()
        .unwrap_or_else(|| Access::Unknown {
            label: "unidentified caller".to_string(),
        });
    access.check_group(route.group(), &method, path)?;
    if let Some(namespace) = route.namespace() {
        access.check_namespace(namespace)?;
    }
    let limits = &state.config.edge.limits;
    // Routes reaching the store exist only when it is enabled (checked above).
    let store = || {
        state
            .store
            .as_ref()
            .ok_or_else(|| ApiError::internal("the key-value store is not open"))
    };
    let response = match route {
        Route::ButlerPing => api::ping::butlerping(),
        Route::EndpointsEnabled => api::ping::endpoints_enabled(&state.config),
        Route::KvNamespaces => api::kv::namespaces(store()?, |ns| access.allows_namespace(ns))?,
        Route::KvGet { namespace } => api::kv::get(store()?, namespace, &query)?,
        Route::KvExists { namespace } => api::kv::exists(store()?, namespace, &query)?,
        Route::KvKeyList { namespace } => api::kv::key_list(store()?, namespace)?,
        Route::KvPost { namespace } => {
            if let Some(guard) = &state.disk_guard {
                guard.check()?;
            }
            let body = read_to_bytes(body, limits).await?;
            api::kv::post(store()?, limits, namespace, &body).await?
        }
        Route::KvDeleteNamespace { namespace } => {
            api::kv::delete_namespace(store()?, namespace).await?
        }
        Route::KvDeleteKey { namespace, key } => {
            api::kv::delete_key(store()?, namespace, key).await?
        }
        Route::StartTask { task_id } => {
            let body = read_to_bytes(body, limits).await?;
            let st = state.start_task.as_ref().ok_or_else(|| {
                match &state.config.start_task.not_set_up {
                    Some(why) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, why.clone()),
                    None => ApiError::internal("the start-task endpoint is not set up"),
                }
            })?;
            let call = api::start_task::StartCall {
                method: &method,
                path,
                raw_query: parts.uri.query().unwrap_or(""),
                task_id,
                query: &query,
                headers: &parts.headers,
                body: &body,
            };
            let policy = access.start_task_policy(&st.policy);
            api::start_task::start(state, st, &policy, &access, call).await?
        }
        Route::Health => api::health::health(state),
        Route::Metrics => api::health::metrics(state),
    };
    Ok((method, response))
}

/// A JSON response with Fastify's content type.
pub fn json<T: serde::Serialize>(status: StatusCode, body: &T) -> Response<ResponseBody> {
    match serde_json::to_vec(body) {
        Ok(bytes) => {
            let mut response = Response::new(Full::new(Bytes::from(bytes)));
            *response.status_mut() = status;
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json; charset=utf-8"),
            );
            response
        }
        Err(e) => ApiError::internal(format!("cannot encode the response: {e}")).into_response(),
    }
}

/// An empty response (204).
pub fn empty(status: StatusCode) -> Response<ResponseBody> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    response
}
