//! The device side of the agent: the shared state machine ([`agent`]), the
//! A/B slot store ([`slots`]), download and verification ([`http`],
//! [`verify`]), the real slot device and the simulated one, and the two
//! transports (MQTT and HTTP polling).

pub mod agent;
pub mod config;
pub mod http;
pub mod mac;
pub mod mqtt;
pub mod poll;
pub mod sim;
pub mod slot_device;
pub mod slots;
pub mod verify;

pub use agent::{Agent, Device, Failure, Identity, JobRecord, Outgoing};
pub use config::AgentConfig;
