//! Request routing: method override, path → [`Route`] (the table in `route.rs`),
//! enablement, permission, dispatch to the endpoint.
//!
//! A route is recognised from the method and the decoded path segments first;
//! then its endpoint group is checked against the config (a disabled endpoint is
//! a 404, as in Butler, where it is never registered), then against the caller's
//! permissions (a 403 naming the caller, see `authz`); only then is a body read
//! and the endpoint called. To add an endpoint: see `route.rs`.

use std::sync::Arc;

use http::{HeaderMap, Method, Response, StatusCode};
use hyper::body::Incoming;

use super::browser;
use super::route::Route;
use super::state::AppState;
use crate::api;
use crate::authz::{Access, EndpointGroup};
use crate::http::body::read_to_bytes;
use crate::http::decode;
use crate::http::error::ApiError;
use crate::http::handler::{Handled, Handler, PeerAddr};
use crate::http::response::ResponseBody;

/// Whether the config enables an endpoint group.
fn enabled(state: &AppState, group: EndpointGroup) -> bool {
    let endpoints = &state.config.endpoints;
    match group {
        EndpointGroup::Ping => endpoints.butlerping,
        EndpointGroup::EndpointsEnabled => endpoints.api_list_enabled_endpoints,
        EndpointGroup::KvRead | EndpointGroup::KvWrite => state.config.features.kv_served(),
        // Enabled but waiting for QRS set-up still counts: its callers get a 503 saying why.
        EndpointGroup::StartTask => state.config.features.start_task_served(),
        EndpointGroup::Health => state.config.edge.health_endpoint,
        EndpointGroup::Metrics => state.config.edge.metrics_endpoint,
        EndpointGroup::Admin => state.config.edge.admin_endpoint,
    }
}

/// The store for the admin endpoints, which exist whether or not the key-value endpoints are
/// served: a 404 saying so when the store is off.
fn kv_store(state: &AppState) -> Result<&crate::kv::Store, ApiError> {
    state.store.as_ref().ok_or_else(|| {
        ApiError::not_found(
            "the key-value store is off (Butler.keyValueStore.enable): there is no store to \
             export or restore into",
        )
    })
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

/// The endpoints, as the HTTP layer's [`Handler`].
pub struct Router {
    pub state: Arc<AppState>,
}

impl Handler for Router {
    async fn handle(&self, req: http::Request<Incoming>, access: &Access) -> Handled {
        let (parts, body) = req.into_parts();
        let effective = effective_method(&parts.method, &parts.headers);
        // A refused override is logged under the method as sent.
        let method = effective.clone().unwrap_or_else(|_| parts.method.clone());
        let segments = decode::path_segments(parts.uri.path());
        let route = segments
            .as_ref()
            .ok()
            .and_then(|segments| Route::recognise(&method, segments));
        let info = route.as_ref().map(Route::info);
        let answer = match (effective, &segments) {
            (Err(e), _) => Err(e),
            (_, Err(e)) => Err(ApiError::bad_request(e.to_string())),
            (Ok(_), Ok(_)) => dispatch(&self.state, route, &method, &parts, body, access).await,
        };
        Handled {
            response: answer.unwrap_or_else(ApiError::into_response),
            method,
            route: info,
        }
    }
}

/// Enablement, permission, then the endpoint.
async fn dispatch(
    state: &AppState,
    route: Option<Route<'_>>,
    method: &Method,
    parts: &http::request::Parts,
    body: Incoming,
    access: &Access,
) -> Result<Response<ResponseBody>, ApiError> {
    browser::check_origin_and_host(&state.config.edge, parts)?;
    let path = parts.uri.path();
    let query = decode::query_pairs(parts.uri.query().unwrap_or(""))
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let not_found = || ApiError::not_found(format!("Route {method}:{path} not found"));
    let route = route.ok_or_else(not_found)?;
    if !enabled(state, route.group()) {
        return Err(not_found());
    }
    access.check_group(route.group(), &format!("{method} {path}"))?;
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
            let body = read_to_bytes(body, limits, &state.body_budget).await?;
            browser::require_json(&parts.headers, &body)?;
            api::kv::post(store()?, limits, namespace, &body, access.namespace_quota()).await?
        }
        Route::KvDeleteNamespace { namespace } => {
            api::kv::delete_namespace(store()?, namespace).await?
        }
        Route::KvDeleteKey { namespace, key } => {
            api::kv::delete_key(store()?, namespace, key).await?
        }
        Route::StartTask { task_id } => {
            let body = read_to_bytes(body, limits, &state.body_budget).await?;
            browser::require_json(&parts.headers, &body)?;
            let st = state.start_task.as_ref().ok_or_else(|| {
                match state.config.features.start_task_not_set_up() {
                    Some(why) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, why),
                    None => ApiError::internal("the start-task endpoint is not set up"),
                }
            })?;
            let call = api::start_task::StartCall {
                method,
                path,
                raw_query: parts.uri.query().unwrap_or(""),
                task_id,
                query: &query,
                headers: &parts.headers,
                body: &body,
                peer: parts.extensions.get::<PeerAddr>().map(|p| p.0),
            };
            let policy = access.start_task_policy(&st.policy);
            api::start_task::start(state, st, &policy, access, call).await?
        }
        Route::Health => api::health::health(state),
        Route::Metrics => api::health::metrics(state),
        Route::AdminStoreExport => api::admin_store::export(kv_store(state)?),
        Route::AdminStoreRestore => {
            api::admin_store::restore(state, kv_store(state)?, &query, body).await?
        }
        Route::AdminUpdate => api::update::put(state, access, &parts.headers, &query, body).await?,
    };
    Ok(response)
}
