//! The endpoints: the route table (`route`), the router that checks enablement and
//! permissions and dispatches (`router`, the HTTP layer's `Handler`), what every endpoint can
//! reach (`state`), what keeps browsers out (`browser`), and one module per endpoint group. Endpoints validate input, call the
//! layers below (`kv`, `tasks`) and render Butler's response shapes; their typed errors become
//! statuses in `http::error`.

pub mod admin_store;
pub mod browser;
pub mod health;
pub mod kv;
pub mod kv_input;
pub mod ping;
pub mod route;
pub mod router;
pub mod start_task;
pub mod state;
pub mod update;
