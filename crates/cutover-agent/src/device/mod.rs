//! The device side of the agent: transport, download and verification, A/B slots.
