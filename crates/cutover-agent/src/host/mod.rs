//! The host agent: `cutover-agent` with `kind: host` installs application
//! bundles with the release installer of the git-push flow, so the server
//! rolls releases across hosts with its strategies and rolls every touched
//! host back when a rollout aborts.
//!
//! - `bundle`: a bundle unpacked safely and committed to the host's bundle
//!   repository, which the installer deploys like a pushed commit;
//! - `device`: [`HostDevice`], the agent's `Device` for a host;
//! - `daemon`: the per-host daemon (proxy + supervisor) run by the agent
//!   binary itself when no `cutover` binary is installed.

pub mod bundle;
pub mod daemon;
pub mod device;

pub use device::HostDevice;
