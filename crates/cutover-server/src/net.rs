//! The client's address and the IP allow-list.
//!
//! The address is the socket's peer, unless that peer is a configured trusted proxy: then
//! `X-Forwarded-For` is read from the right, skipping further trusted proxies, and the first
//! address that is not one is the client. From anyone else the header is ignored, so a
//! client cannot choose its own address. IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`) are
//! turned into IPv4 before any comparison, so an allow-list of `10.0.0.0/8` matches them.

use axum::http::HeaderMap;
use ipnet::IpNet;
use std::net::IpAddr;

/// `::ffff:a.b.c.d` becomes `a.b.c.d`; everything else is unchanged.
pub fn normalise(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

fn in_any(ip: IpAddr, nets: &[IpNet]) -> bool {
    nets.iter().any(|n| n.contains(&ip))
}

/// The client's address given the socket peer, the headers and the trusted proxies.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted_proxies: &[IpNet]) -> IpAddr {
    let peer = normalise(peer);
    if !in_any(peer, trusted_proxies) {
        return peer;
    }
    let mut hops: Vec<IpAddr> = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        let Ok(text) = value.to_str() else {
            return peer;
        };
        for part in text.split(',') {
            match parse_hop(part.trim()) {
                Some(ip) => hops.push(normalise(ip)),
                // A malformed hop: believe nothing to its left.
                None => hops.clear(),
            }
        }
    }
    let mut client = peer;
    for hop in hops.iter().rev() {
        client = *hop;
        if !in_any(*hop, trusted_proxies) {
            break;
        }
    }
    client
}

/// An address as proxies write it: `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1` or `[2001:db8::1]:80`.
fn parse_hop(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sa) = s.parse::<std::net::SocketAddr>() {
        return Some(sa.ip());
    }
    s.strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .and_then(|r| r.parse().ok())
}

/// True when `ip` may call the API: the list is empty or one of its networks holds it.
pub fn allowed(ip: IpAddr, allowlist: &[IpNet]) -> bool {
    allowlist.is_empty() || in_any(normalise(ip), allowlist)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn xff(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn forwarded_for_is_only_believed_from_trusted_proxies() {
        let proxies = nets(&["10.0.0.0/8"]);
        let h = xff("203.0.113.9, 10.0.0.7");
        // From a trusted proxy: the rightmost untrusted hop.
        assert_eq!(
            client_ip("10.0.0.5".parse().unwrap(), &h, &proxies),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        // From anyone else: the peer itself.
        assert_eq!(
            client_ip("198.51.100.1".parse().unwrap(), &h, &proxies),
            "198.51.100.1".parse::<IpAddr>().unwrap()
        );
        // A spoofed left-most entry does not win.
        let h = xff("1.1.1.1, 203.0.113.9");
        assert_eq!(
            client_ip("10.0.0.5".parse().unwrap(), &h, &proxies),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn mapped_ipv6_is_normalised() {
        let peer: IpAddr = "::ffff:192.168.1.20".parse().unwrap();
        assert_eq!(
            client_ip(peer, &HeaderMap::new(), &[]),
            "192.168.1.20".parse::<IpAddr>().unwrap()
        );
        assert!(allowed(peer, &nets(&["192.168.1.0/24"])));
        assert!(!allowed(peer, &nets(&["10.0.0.0/8"])));
        assert!(allowed(peer, &[]));
        let h = xff("[::ffff:10.1.2.3]:4000");
        assert_eq!(
            client_ip("127.0.0.1".parse().unwrap(), &h, &nets(&["127.0.0.1/32"])),
            "10.1.2.3".parse::<IpAddr>().unwrap()
        );
    }
}
