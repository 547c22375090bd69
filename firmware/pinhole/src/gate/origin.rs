//! Where a request comes from: the client behind a trusted proxy, the names the device answers
//! to (`Host`), and which web pages may read its answers (CORS).
//!
//! - [`client_address`]: the peer's address, unless the peer is one of the configured trusted
//!   proxies (`[lan] trusted_proxies`); then the right-most address in `X-Forwarded-For` (or,
//!   without that header, `Forwarded: for=`) that is not itself a trusted proxy. Guess limiting
//!   keys on it, so behind one proxy each client has its own bucket. Without the setting the
//!   headers are ignored: anyone could write them.
//! - [`Names::host_allowed`]: on an open LAN listener, a request must name the device in
//!   `Host`: one of its addresses (the one the connection reached, or loopback), `pinhole.local`,
//!   its host name (and `HOSTNAME.local`), `localhost`, or a configured name (`[lan] hosts`).
//!   Else `421`: a page on another site whose name an attacker re-points at the camera (DNS
//!   rebinding) reads nothing.
//! - [`Names::cors_allowed`]: the LL-HLS files and `/api/time` may be read by pages on the
//!   owner's network: an origin whose host is a private-range (10/8, 172.16/12, 192.168/16,
//!   fc00::/7), link-local (169.254/16, fe80::/10) or loopback address, a `.local` name, one of
//!   the device's names above, or an origin in `[lan] cors_origins`. Mainsail and Fluidd on the
//!   printer's host play pinhole's LL-HLS from their own origin this way. Any other origin gets
//!   no `Access-Control-Allow-Origin`, so the browser keeps the answer from its page.

use std::net::IpAddr;

use http::HeaderMap;

/// An address block: `10.0.0.0/8`, `fd00::/8`, or one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let net: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{s:?}: not an IP address or ADDRESS/PREFIX"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.trim().parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(format!("{s:?}: the prefix length must be 0..={max}")),
            },
        };
        Ok(Cidr { net, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The client a request is from: `peer`, or, when `peer` is a trusted proxy, the right-most
/// address its forwarding headers name that is not a trusted proxy too. A header that does not
/// parse there (a proxy that writes something else) leaves `peer`.
pub fn client_address(peer: IpAddr, headers: &HeaderMap, trusted: &[Cidr]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let mut hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    if hops.is_empty() {
        hops = headers
            .get_all(http::header::FORWARDED)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|elem| {
                elem.split(';').find_map(|pair| {
                    let (k, v) = pair.split_once('=')?;
                    k.trim().eq_ignore_ascii_case("for").then_some(v.trim())
                })
            })
            .collect();
    }
    for hop in hops.iter().rev() {
        let Some(ip) = parse_hop(hop) else {
            return peer;
        };
        if !is_trusted(ip) {
            return canonical(ip);
        }
    }
    peer
}

/// `203.0.113.7`, `203.0.113.7:4711`, `"[2001:db8::1]:4711"`, `2001:db8::1`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let h = hop.trim().trim_matches('"');
    if let Ok(ip) = h.parse() {
        return Some(ip);
    }
    if let Some(rest) = h.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    h.rsplit_once(':')?.0.parse().ok()
}

/// The names the device answers to and the origins that may read its LL-HLS.
#[derive(Debug, Clone, Default)]
pub struct Names {
    /// Lower case, without a trailing dot: pinhole.local, localhost, the host name and
    /// HOSTNAME.local, and `[lan] hosts`.
    names: Vec<String>,
    /// `[lan] cors_origins`, as given (scheme://host[:port]), lower case.
    origins: Vec<String>,
}

impl Names {
    /// The built-in names, the machine's `hostname`, and the configured ones.
    pub fn new(hostname: Option<&str>, hosts: &[String], origins: &[String]) -> Names {
        let mut names = vec!["pinhole.local".to_string(), "localhost".to_string()];
        if let Some(h) = hostname.map(str::trim).filter(|h| !h.is_empty()) {
            let h = h.trim_end_matches('.').to_ascii_lowercase();
            names.push(format!("{h}.local"));
            names.push(h);
        }
        names.extend(
            hosts
                .iter()
                .map(|h| h.trim().trim_end_matches('.').to_ascii_lowercase()),
        );
        Names {
            names,
            origins: origins
                .iter()
                .map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase())
                .collect(),
        }
    }

    /// The running machine's names (`/proc/sys/kernel/hostname`) with the configured ones.
    pub fn of_this_host(hosts: &[String], origins: &[String]) -> Names {
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").ok();
        Names::new(hostname.as_deref(), hosts, origins)
    }

    fn is_name(&self, host: &str) -> bool {
        let h = host.trim_end_matches('.').to_ascii_lowercase();
        self.names.contains(&h)
    }

    /// Whether `host` (a `Host` header: name or address, with or without a port) names this
    /// device, reached at `local` (the address the connection came in on).
    pub fn host_allowed(&self, host: &str, local: IpAddr) -> bool {
        let name = host_of(host);
        match name.parse::<IpAddr>() {
            Ok(ip) => {
                let ip = canonical(ip);
                ip == canonical(local) || ip.is_loopback() || ip.is_unspecified()
            }
            Err(_) => self.is_name(name),
        }
    }

    /// Whether a page of `origin` (an `Origin` header) may read the answer; `local` as above.
    pub fn cors_allowed(&self, origin: &str, local: IpAddr) -> bool {
        let o = origin.trim().to_ascii_lowercase();
        if self.origins.contains(&o) {
            return true;
        }
        let Some((scheme, rest)) = o.split_once("://") else {
            return false; // "null" (a file, a sandboxed frame) and garbage
        };
        if scheme != "http" && scheme != "https" {
            return false;
        }
        let host = host_of(rest);
        match host.parse::<IpAddr>() {
            Ok(ip) => on_owners_network(ip) || canonical(ip) == canonical(local),
            Err(_) => host.ends_with(".local") || self.is_name(host),
        }
    }
}

/// The host of `host[:port]` or `[v6]:port`, without brackets.
fn host_of(s: &str) -> &str {
    let s = s.trim();
    if let Some(rest) = s.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match s.rsplit_once(':') {
        // One colon: a port; more: a bare IPv6 address.
        Some((h, _)) if !h.contains(':') => h,
        _ => s,
    }
}

/// Private-range, link-local and loopback addresses: the owner's network and the device.
pub fn on_owners_network(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => v4.is_private() || v4.is_link_local() || v4.is_loopback(),
        IpAddr::V6(v6) => {
            let seg0 = v6.segments()[0];
            v6.is_loopback() || (seg0 & 0xfe00) == 0xfc00 || (seg0 & 0xffc0) == 0xfe80
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn address_blocks_parse_and_match() {
        let c = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(c.contains(ip("10.1.200.3")) && !c.contains(ip("10.2.0.1")));
        assert!(c.contains(ip("::ffff:10.1.0.9")));
        assert!(Cidr::parse("127.0.0.1").unwrap().contains(ip("127.0.0.1")));
        assert!(Cidr::parse("0.0.0.0/0")
            .unwrap()
            .contains(ip("203.0.113.1")));
        assert!(Cidr::parse("fd00::/8").unwrap().contains(ip("fd12::1")));
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("proxy.lan").is_err());
    }

    #[test]
    fn forwarding_headers_count_only_from_a_trusted_proxy() {
        // Why: behind a reverse proxy every client shared its address, so one guesser kept
        // everyone at 429; but a header from anyone else must mean nothing.
        let trusted = [Cidr::parse("127.0.0.1").unwrap()];
        let xff = headers(&[("x-forwarded-for", "198.51.100.4, 192.168.1.23")]);
        assert_eq!(
            client_address(ip("127.0.0.1"), &xff, &trusted),
            ip("192.168.1.23")
        );
        assert_eq!(
            client_address(ip("192.168.1.50"), &xff, &trusted),
            ip("192.168.1.50"),
            "not a trusted proxy: its header is ignored"
        );
        assert_eq!(
            client_address(ip("127.0.0.1"), &xff, &[]),
            ip("127.0.0.1"),
            "no trusted proxies configured"
        );
        // Hops that are trusted proxies themselves are skipped, right to left.
        let chain = [
            Cidr::parse("127.0.0.1").unwrap(),
            Cidr::parse("10.0.0.0/8").unwrap(),
        ];
        let two = headers(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "192.168.1.7, 10.0.0.2"),
        ]);
        assert_eq!(
            client_address(ip("127.0.0.1"), &two, &chain),
            ip("192.168.1.7")
        );
        let fwd = headers(&[(
            "forwarded",
            "for=192.0.2.60;proto=http, for=\"[2001:db8::7]:4711\"",
        )]);
        assert_eq!(
            client_address(ip("127.0.0.1"), &fwd, &trusted),
            ip("2001:db8::7")
        );
        let junk = headers(&[("x-forwarded-for", "unknown")]);
        assert_eq!(
            client_address(ip("127.0.0.1"), &junk, &trusted),
            ip("127.0.0.1")
        );
    }

    #[test]
    fn the_device_s_names_and_addresses_are_accepted_as_host_and_others_are_not() {
        // Why: nothing checked Host, so a rebound name (DNS rebinding) read everything.
        let n = Names::new(Some("printer\n"), &["cam.example.net".into()], &[]);
        let lan = ip("192.168.1.50");
        for h in [
            "pinhole.local",
            "PINHOLE.LOCAL:8080",
            "printer",
            "printer.local.",
            "cam.example.net",
            "192.168.1.50:8080",
            "127.0.0.1:8080",
            "localhost:8080",
            "[::1]:8080",
        ] {
            assert!(n.host_allowed(h, lan), "{h}");
        }
        for h in [
            "attacker.example",
            "192.168.1.51",
            "pinhole.local.attacker.example",
        ] {
            assert!(!n.host_allowed(h, lan), "{h}");
        }
    }

    #[test]
    fn pages_on_the_owner_s_network_may_read_and_others_may_not() {
        // Why: `Access-Control-Allow-Origin: *` let a page on any site read the stream.
        let n = Names::new(
            Some("printer"),
            &[],
            &["https://mainsail.example.com".into()],
        );
        let lan = ip("192.168.1.50");
        for o in [
            "http://192.168.1.20",
            "http://10.0.0.3:8080",
            "http://172.20.0.1",
            "http://169.254.3.4",
            "http://[fd00::1]:80",
            "http://[fe80::1]",
            "http://127.0.0.1:7125",
            "http://mainsailos.local",
            "http://printer",
            "https://mainsail.example.com",
        ] {
            assert!(n.cors_allowed(o, lan), "{o}");
        }
        for o in [
            "https://evil.example",
            "http://203.0.113.9",
            "http://172.32.0.1",
            "null",
            "file://",
            "https://mainsail.example.com.evil.example",
            "http://local",
        ] {
            assert!(!n.cors_allowed(o, lan), "{o}");
        }
    }
}
