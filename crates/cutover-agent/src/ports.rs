//! Ports for listeners that another process binds later.
//!
//! A port the kernel hands out for `bind(0)` comes from its ephemeral range,
//! the range every outgoing connection takes its source port from. Between
//! choosing such a port and a later process binding it, any connection on the
//! machine may take it, and the bind fails with "Address already in use". A
//! port below that range is what a configured, fixed port looks like: only a
//! process that asks for exactly that port can take it.

use std::hash::BuildHasher;
use std::net::{Ipv4Addr, TcpListener};
use std::sync::Mutex;

/// The lowest port handed out: clear of the well-known and registered ports
/// most services are configured with.
const LOWEST: u16 = 20_000;
/// Where Linux starts its ephemeral range unless configured otherwise.
const DEFAULT_EPHEMERAL_START: u16 = 32_768;
const TRIES: u64 = 200;

/// Ports this process handed out lately, so two callers never get the same
/// one while neither has bound it yet. Only the latest are kept: a daemon
/// that runs for months must not run out of ports.
const REMEMBERED: usize = 256;
static HANDED_OUT: Mutex<Vec<u16>> = Mutex::new(Vec::new());

/// A loopback port that nothing listens on now and that the kernel will not
/// give to `bind(0)` or to an outgoing connection: chosen at random below the
/// ephemeral range, checked by binding it on 127.0.0.1 and 0.0.0.0. Falls back
/// to a kernel-chosen port when the ephemeral range leaves no room below it.
pub fn fixed_port() -> std::io::Result<u16> {
    let end = ephemeral_start().unwrap_or(DEFAULT_EPHEMERAL_START);
    if end <= LOWEST {
        return kernel_port();
    }
    let span = u64::from(end - LOWEST);
    let random = std::collections::hash_map::RandomState::new();
    let candidates = (0..TRIES).map(|attempt| LOWEST + (random.hash_one(attempt) % span) as u16);
    first_free(candidates).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            format!("no free port between {LOWEST} and {end} after {TRIES} tries"),
        )
    })
}

/// The first candidate that binds and that this process has not handed out.
fn first_free(candidates: impl Iterator<Item = u16>) -> Option<u16> {
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    for port in candidates {
        if handed_out.contains(&port) || !bindable(port) {
            continue;
        }
        if handed_out.len() >= REMEMBERED {
            handed_out.remove(0);
        }
        handed_out.push(port);
        return Some(port);
    }
    None
}

fn bindable(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
        && TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).is_ok()
}

/// The first port of the kernel's ephemeral range, from
/// `/proc/sys/net/ipv4/ip_local_port_range` ("32768\t60999").
fn ephemeral_start() -> Option<u16> {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    range.split_whitespace().next()?.parse().ok()
}

/// A port chosen by the kernel, free at the moment of asking.
fn kernel_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_ports_sit_below_the_ephemeral_range_and_bind() {
        let end = ephemeral_start().unwrap_or(DEFAULT_EPHEMERAL_START);
        // Repeats are the other test's business: here they could only show up
        // by chance.
        for _ in 0..50 {
            let port = fixed_port().unwrap();
            if end > LOWEST {
                assert!(
                    (LOWEST..end).contains(&port),
                    "{port} outside {LOWEST}..{end}"
                );
            }
            TcpListener::bind((Ipv4Addr::LOCALHOST, port)).expect("a handed-out port binds");
        }
    }

    #[test]
    fn a_port_someone_listens_on_or_already_handed_out_is_skipped() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, fixed_port().unwrap())).unwrap();
        let taken = listener.local_addr().unwrap().port();
        let given = fixed_port().unwrap();
        let free = fixed_port().unwrap();
        HANDED_OUT.lock().unwrap().retain(|p| *p != free);
        assert_eq!(first_free([taken, given, free].into_iter()), Some(free));
        assert_eq!(first_free([taken, given].into_iter()), None);
    }
}
