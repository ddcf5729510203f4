//! The route table: which method and path is which endpoint, its name and its group.
//!
//! Adding an endpoint is a handler file in `api`, a variant here with its line in
//! [`Route::recognise`] and its arm in `describe` (name and endpoint group), and its arm in
//! the router's dispatch. Every match but `recognise` is exhaustive, so the compiler asks
//! for the rest; the access log and metrics learn the route from here (through
//! [`Route::info`]), never by decoding the path a second time.

use http::Method;

use crate::authz::EndpointGroup;
use crate::http::handler::RouteInfo;

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
    AdminStoreExport,
    AdminStoreRestore,
    AdminUpdate,
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
            (&Method::GET, ["v4", "admin", "store"]) => Route::AdminStoreExport,
            (&Method::PUT, ["v4", "admin", "store"]) => Route::AdminStoreRestore,
            (&Method::PUT, ["v4", "admin", "update"]) => Route::AdminUpdate,
            _ => return None,
        };
        Some(route)
    }

    /// The route's name (the `endpoint` label in metrics and logs) and its endpoint group
    /// (the unit of enablement and permission). One arm per route: the compiler makes a new
    /// route say both.
    fn describe(&self) -> (&'static str, EndpointGroup) {
        use EndpointGroup as G;
        match self {
            Route::ButlerPing => ("butlerPing", G::Ping),
            Route::EndpointsEnabled => ("endpointsEnabled", G::EndpointsEnabled),
            Route::KvNamespaces => ("kvNamespaces", G::KvRead),
            Route::KvGet { .. } => ("kvGet", G::KvRead),
            Route::KvExists { .. } => ("kvExists", G::KvRead),
            Route::KvPost { .. } => ("kvPost", G::KvWrite),
            Route::KvDeleteNamespace { .. } => ("kvDeleteNamespace", G::KvWrite),
            Route::KvDeleteKey { .. } => ("kvDeleteKey", G::KvWrite),
            Route::KvKeyList { .. } => ("kvKeyList", G::KvRead),
            Route::StartTask { .. } => ("startTask", G::StartTask),
            Route::Health => ("health", G::Health),
            Route::Metrics => ("metrics", G::Metrics),
            Route::AdminStoreExport => ("adminStoreExport", G::Admin),
            Route::AdminStoreRestore => ("adminStoreRestore", G::Admin),
            Route::AdminUpdate => ("adminUpdate", G::Admin),
        }
    }

    pub fn group(&self) -> EndpointGroup {
        self.describe().1
    }

    /// The endpoint's name in metrics labels and the access log.
    pub fn name(&self) -> &'static str {
        self.describe().0
    }

    /// What the access log and metrics record about this route.
    pub fn info(&self) -> RouteInfo {
        RouteInfo {
            endpoint: self.name(),
            mutates: self.group().mutates(),
            task_id: match self {
                Route::StartTask { task_id } => Some(task_id.to_string()),
                _ => None,
            },
            namespace: self.namespace().map(str::to_string),
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
            | Route::Metrics
            | Route::AdminStoreExport
            | Route::AdminStoreRestore
            | Route::AdminUpdate => None,
        }
    }
}
