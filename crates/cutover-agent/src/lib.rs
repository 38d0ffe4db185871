//! The cutover agent library: what runs on a target (a device or a host).
//!
//! The git-push flow of the `cutover` binary uses the same release installer.

pub mod device;
pub mod host;
pub mod ports;
pub mod process;
pub mod release;
