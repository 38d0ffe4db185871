//! The cutover control plane: REST API, authentication, orchestrator, MQTT,
//! scheduler, notifier, metrics and the web UI, served by `cutover serve`.
//!
//! The API half lives here: [`app::build_router`] for tests that call it without a
//! socket, [`app::serve`] for a real listener, [`settings`] for what it is configured with.

pub mod app;
pub mod auth;
pub mod dto;
pub mod fleet;
pub mod health_checks;
pub mod metrics;
pub mod net;
pub mod openapi;
pub mod problem;
pub mod quality_gates;
pub mod ratelimit;
pub mod read_cache;
pub mod routes;
pub mod settings;
pub mod state;
pub mod validate;
pub mod web;

pub use app::{Server, build_router, serve, sync_environments};
pub use settings::ServerSettings;
pub use state::{AppState, ExecutionWaker};
