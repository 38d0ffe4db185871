//! The cutover control plane: REST API, authentication, orchestrator, MQTT,
//! scheduler, notifier, metrics and the web UI, served by `cutover serve`.

pub mod fleet;
