//! What every request handler can reach: the parsed configuration and the
//! services built from it. Built once at start-up.

use std::sync::Arc;

use crate::config::Config;
use crate::kv::Store;

pub struct AppState {
    pub config: Arc<Config>,
    /// `None` when the key-value store is disabled in the config.
    pub store: Option<Store>,
}
