//! The pure heart of cutover: domain types, the configuration schema, the
//! rollout engine and the protocol messages.
//!
//! **Architecture invariant:** this crate does no IO and never reads the clock.
//! Time comes in as an argument, configuration comes in as text, and decisions
//! go out as values. Its `Cargo.toml` has no tokio, sqlx or axum, so the
//! compiler keeps it that way.

pub mod config;
pub mod engine;
pub mod protocol;
