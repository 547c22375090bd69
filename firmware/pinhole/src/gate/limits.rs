//! Limits on what a stranger can make the daemon hold: connections per client and in total, and
//! token buckets for anything that costs work per attempt (password checks, key-set fetches).
//!
//! The HTTP-level bounds live where hyper is configured (`serve/http.rs`): [`MAX_HEADER_BYTES`] for a
//! request head, [`HEADER_TIMEOUT`] for a slow head *and* for an idle keep-alive connection (hyper
//! re-arms the header timer whenever it waits for the next request), [`TLS_HANDSHAKE_TIMEOUT`]
//! for a TLS handshake that never finishes. Held LL-HLS requests are bounded in `serve/hls.rs`.
//!
//! Clients are keyed by [`ClientKey`]: the IPv4 address, or the /64 of an IPv6 address (one
//! host usually owns a whole /64, so per-address limits would not bind it).
//!
//! Time is an input (`now: Instant`) everywhere here, so the tests drive it.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Largest request head (request line and headers) hyper buffers; a larger one is answered
/// `431 Request Header Fields Too Large`. A Cloudflare Access token plus its cookie copy and
/// Cloudflare's own headers take about 4 KB.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// How long a client may take to send a request head, and how long an idle keep-alive
/// connection is kept.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a TLS handshake may take.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Open connections per listener; more wait in the kernel's backlog.
pub const MAX_CONNECTIONS: usize = 256;
/// Open connections per client on a LAN listener; more are closed at once. A browser opens six
/// per origin, an LL-HLS player a few more for held requests. The device itself (127.0.0.1,
/// ::1) is exempt: a reverse proxy on it funnels every viewer through that one address. (The
/// tunnel listener has one client, cloudflared, so only the total applies there.)
pub const MAX_CONNECTIONS_PER_CLIENT: u32 = 32;
/// How many clients a [`Buckets`] map remembers before it forgets full (idle) ones.
const MAX_TRACKED_CLIENTS: usize = 4096;

/// A client as the limits see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientKey(u128);

impl ClientKey {
    pub fn of(ip: IpAddr) -> ClientKey {
        match ip {
            IpAddr::V4(v4) => ClientKey(u128::from(u32::from(v4))),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => ClientKey(u128::from(u32::from(v4))),
                // The /64, marked so it cannot collide with an IPv4 address.
                None => ClientKey((u128::from(v6) & !((1u128 << 64) - 1)) | 1),
            },
        }
    }
}

/// A token bucket: `capacity` tokens, one more every `period`.
#[derive(Debug, Clone, Copy)]
pub struct Rate {
    pub capacity: u32,
    pub period: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(rate: Rate, now: Instant) -> Bucket {
        Bucket {
            tokens: f64::from(rate.capacity),
            at: now,
        }
    }

    fn refill(&mut self, rate: Rate, now: Instant) {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        let per_s = 1.0 / rate.period.as_secs_f64().max(1e-9);
        self.tokens = (self.tokens + dt * per_s).min(f64::from(rate.capacity));
        self.at = now;
    }

    /// Time until one token is there (zero if one is).
    fn wait(&self, rate: Rate) -> Duration {
        if self.tokens >= 1.0 {
            Duration::ZERO
        } else {
            rate.period.mul_f64(1.0 - self.tokens)
        }
    }
}

/// One token bucket, e.g. for all clients together.
#[derive(Debug)]
pub struct Limiter {
    rate: Rate,
    bucket: Mutex<Bucket>,
}

impl Limiter {
    pub fn new(rate: Rate, now: Instant) -> Limiter {
        Limiter {
            rate,
            bucket: Mutex::new(Bucket::full(rate, now)),
        }
    }

    /// Takes a token, or says how long until one is there.
    pub fn take(&self, now: Instant) -> Result<(), Duration> {
        let mut b = self.bucket.lock().unwrap_or_else(PoisonError::into_inner);
        b.refill(self.rate, now);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(b.wait(self.rate))
        }
    }

    /// Gives a token back (an attempt that turned out not to count).
    pub fn refund(&self, now: Instant) {
        let mut b = self.bucket.lock().unwrap_or_else(PoisonError::into_inner);
        b.refill(self.rate, now);
        b.tokens = (b.tokens + 1.0).min(f64::from(self.rate.capacity));
    }
}

/// A token bucket per key (client), with the map bounded: when it is full, keys whose bucket
/// has refilled completely are forgotten (a forgotten key starts full, so nothing is lost), and
/// if every key is still draining, the new key shares the fate of an unknown one: it is refused
/// until old ones refill. That keeps memory bounded under a flood from many addresses.
#[derive(Debug)]
pub struct Buckets<K> {
    rate: Rate,
    map: Mutex<HashMap<K, Bucket>>,
    max_keys: usize,
}

impl<K: Eq + Hash + Copy> Buckets<K> {
    pub fn new(rate: Rate) -> Buckets<K> {
        Buckets::with_max_keys(rate, MAX_TRACKED_CLIENTS)
    }

    pub fn with_max_keys(rate: Rate, max_keys: usize) -> Buckets<K> {
        Buckets {
            rate,
            map: Mutex::new(HashMap::new()),
            max_keys: max_keys.max(1),
        }
    }

    /// Takes a token of `key`'s bucket, or says how long until one is there.
    pub fn take(&self, key: K, now: Instant) -> Result<(), Duration> {
        let rate = self.rate;
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if !map.contains_key(&key) && map.len() >= self.max_keys {
            let cap = f64::from(rate.capacity);
            map.retain(|_, b| {
                b.refill(rate, now);
                b.tokens < cap
            });
            if map.len() >= self.max_keys {
                return Err(rate.period);
            }
        }
        let b = map.entry(key).or_insert_with(|| Bucket::full(rate, now));
        b.refill(rate, now);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(b.wait(rate))
        }
    }

    /// Gives `key` its token back (e.g. the password was right).
    pub fn refund(&self, key: K, now: Instant) {
        let rate = self.rate;
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(b) = map.get_mut(&key) {
            b.refill(rate, now);
            b.tokens = (b.tokens + 1.0).min(f64::from(rate.capacity));
        }
    }
}

/// Counts open connections per client; a [`ConnGuard`] gives its slot back when dropped.
#[derive(Debug)]
pub struct PerClient {
    max: u32,
    open: Mutex<HashMap<ClientKey, u32>>,
}

impl PerClient {
    pub fn new(max: u32) -> Arc<PerClient> {
        Arc::new(PerClient {
            max,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for one more connection from `ip`, or `None` if it has `max` open already.
    /// 127.0.0.1 and ::1 (the device itself) always get one, uncounted.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<ConnGuard> {
        let key = ClientKey::of(ip);
        if is_this_host(ip) {
            return Some(ConnGuard { owner: None, key });
        }
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let n = open.entry(key).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(ConnGuard {
            owner: Some(self.clone()),
            key,
        })
    }

    pub fn open(&self, ip: IpAddr) -> u32 {
        let open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.get(&ClientKey::of(ip)).copied().unwrap_or(0)
    }
}

/// 127.0.0.1 or ::1 (also as an IPv4-mapped address); not the rest of 127.0.0.0/8.
fn is_this_host(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4 == std::net::Ipv4Addr::LOCALHOST,
        IpAddr::V6(v6) => {
            v6 == std::net::Ipv6Addr::LOCALHOST
                || v6.to_ipv4_mapped() == Some(std::net::Ipv4Addr::LOCALHOST)
        }
    }
}

#[derive(Debug)]
pub struct ConnGuard {
    owner: Option<Arc<PerClient>>,
    key: ClientKey,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let Some(owner) = &self.owner else { return };
        let mut open = owner.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIVE_PER_MINUTE: Rate = Rate {
        capacity: 5,
        period: Duration::from_secs(12),
    };

    #[test]
    fn a_bucket_allows_its_burst_then_one_per_period() {
        let t0 = Instant::now();
        let b = Buckets::new(FIVE_PER_MINUTE);
        for _ in 0..5 {
            assert!(b.take("a", t0).is_ok());
        }
        let wait = b.take("a", t0).unwrap_err();
        assert_eq!(wait, Duration::from_secs(12));
        // Another client is not affected.
        assert!(b.take("b", t0).is_ok());
        assert!(b.take("a", t0 + Duration::from_secs(6)).is_err());
        assert!(b.take("a", t0 + Duration::from_secs(12)).is_ok());
        assert!(b.take("a", t0 + Duration::from_secs(12)).is_err());
    }

    #[test]
    fn a_refund_gives_the_token_back_but_never_above_capacity() {
        let t0 = Instant::now();
        let b = Buckets::new(FIVE_PER_MINUTE);
        for _ in 0..5 {
            b.take(1, t0).unwrap();
        }
        b.refund(1, t0);
        assert!(b.take(1, t0).is_ok());
        let l = Limiter::new(FIVE_PER_MINUTE, t0);
        l.refund(t0);
        for _ in 0..5 {
            assert!(l.take(t0).is_ok());
        }
        assert!(l.take(t0).is_err());
    }

    #[test]
    fn the_client_map_stays_bounded_under_a_flood_of_addresses() {
        let t0 = Instant::now();
        let b = Buckets::with_max_keys(FIVE_PER_MINUTE, 100);
        for k in 0..100u32 {
            b.take(k, t0).unwrap();
        }
        // Every tracked client is still draining: a new one is refused, not added.
        assert!(b.take(1000, t0).is_err());
        assert_eq!(b.map.lock().unwrap().len(), 100);
        // Once they have refilled they are forgotten and new clients get in.
        assert!(b.take(1000, t0 + Duration::from_secs(13)).is_ok());
        assert_eq!(b.map.lock().unwrap().len(), 1);
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_64_and_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(ClientKey::of(a), ClientKey::of(b));
        assert_ne!(ClientKey::of(a), ClientKey::of(c));
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(ClientKey::of(v4), ClientKey::of(mapped));
        let zero: IpAddr = "::".parse().unwrap();
        let zero4: IpAddr = "0.0.0.0".parse().unwrap();
        assert_ne!(ClientKey::of(zero), ClientKey::of(zero4));
    }

    #[test]
    fn connections_per_client_are_counted_and_released_on_drop() {
        let pc = PerClient::new(2);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        let g1 = pc.admit(ip).unwrap();
        let _g2 = pc.admit(ip).unwrap();
        assert!(pc.admit(ip).is_none());
        assert!(pc.admit(other).is_some());
        drop(g1);
        assert_eq!(pc.open(ip), 1);
        assert!(pc.admit(ip).is_some());
        // The device itself (a reverse proxy on it) is not limited; the rest of 127/8 is.
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        let held: Vec<_> = (0..10).map(|_| pc.admit(local).unwrap()).collect();
        assert_eq!(pc.open(local), 0);
        drop(held);
        let other_loopback: IpAddr = "127.0.0.2".parse().unwrap();
        let _a = pc.admit(other_loopback).unwrap();
        let _b = pc.admit(other_loopback).unwrap();
        assert!(pc.admit(other_loopback).is_none());
        assert!(pc.admit("::1".parse().unwrap()).is_some());
    }
}
