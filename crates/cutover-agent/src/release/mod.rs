//! Application releases: export, install, start, health-check, switch, roll back.
//!
//! One installer serves both the standalone git-push flow of the `cutover`
//! binary (`cutover execute GIT_DIR SHA` from a post-receive hook) and the
//! host agent. Its parts:
//!
//! - `export`: a commit's tree (or a bundle) unpacked safely into a release dir;
//! - `layout`: where releases live, and the atomic `current`/`previous` switch;
//! - `lock`, `history`: one deploy at a time, and who deployed what when;
//! - `supervisor`, `proxy`, `static_site`, `host`, `protocol`, `client`: the
//!   built-in process manager, a per-host daemon holding the public ports;
//! - `health`: probes of a new release before traffic moves to it.

pub mod client;
pub mod export;
pub mod health;
pub mod history;
pub mod host;
pub mod install;
pub mod layout;
pub mod lock;
pub mod managers;
pub mod protocol;
pub mod proxy;
pub mod static_site;
pub mod supervisor;
