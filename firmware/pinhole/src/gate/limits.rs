//! Limits on what a stranger can make the daemon hold: connections per client and in total, and
//! token buckets for anything that costs work per attempt (password checks, key-set fetches).
//!
//! The HTTP-level bounds live where hyper is configured (`serve/http.rs`): [`MAX_HEADER_BYTES`] for a
//! request head, [`HEADER_TIMEOUT`] for a slow head *and* for an idle keep-alive connection (hyper
//! re-arms the header timer whenever it waits for the next request), [`TLS_HANDSHAKE_TIMEOUT`]
//! for a TLS handshake that never finishes, [`WRITE_STALL_TIMEOUT`] for a client that stops
//! reading what it asked for (the header timer does not run while hyper writes). Held LL-HLS
//! requests are bounded in `serve/hls.rs`.
//!
//! Which connections are held at all is [`Slots`]' decision: at most [`MAX_CONNECTIONS`] per
//! listener, [`MAX_CONNECTIONS_PER_CLIENT`] per client, [`MAX_UNAUTHENTICATED_PER_CLIENT`] per
//! client until one of its requests carried the right credentials (on a listener that asks for
//! them), and when the listener is full a client with fewer connections than the busiest one
//! takes the place of that one's oldest. So a few hosts cannot fill the listener and lock the
//! owner out: they would need more addresses than the listener has slots.
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
/// A response write that makes no progress for this long closes the connection: the client
/// stopped reading (a pipelined flood it never reads, a stream it never reads). A live viewer
/// that has not taken a byte for 20 s is 20 s behind and its player reconnects anyway; TCP
/// itself, retransmitting into a dead Wi-Fi link, has given up a few times over by then
/// (its 5th retransmission is ~6 s after the first). Shorter would cut viewers on a link that
/// hiccups; longer lets a stranger hold a slot for longer per connection it opens.
pub const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(20);
/// The kernel's send buffer per connection (set on the listening socket, which its connections
/// inherit; Linux doubles it for its bookkeeping). Left to autotuning, loopback and LAN sockets
/// grow theirs up to `tcp_wmem`'s 4 MiB: a client that never reads then holds 4 MiB of kernel
/// memory per connection, and a low-bitrate stream takes minutes to fill it before a write
/// even waits (so [`WRITE_STALL_TIMEOUT`] could not start). 128 KiB carries 20 Mbit/s at a
/// 100 ms round trip, more than any camera stream here, and at the test source's ~25 KB/s a
/// stream nobody reads is noticed within ~10 s of its last read.
pub const SEND_BUFFER_BYTES: u32 = 128 * 1024;
/// Open connections per listener. When it is full, a new client with fewer connections than
/// the busiest client takes the place of that one's oldest connection; otherwise it is
/// closed at once.
pub const MAX_CONNECTIONS: usize = 256;
/// Connections per client that no request has yet authenticated, on a listener that asks for
/// credentials (the LAN password): Chromium and Firefox open at most six per host, a tool with
/// Basic credentials one per request in flight. A connection stops counting here once a
/// request on it carried the right password or session.
pub const MAX_UNAUTHENTICATED_PER_CLIENT: u32 = 8;
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

/// Why [`Slots::admit`] turned a connection away (it is closed before any byte is read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turned {
    /// The client has [`Limits::per_client`] open.
    PerClient,
    /// The client has [`Limits::unauthenticated`] open that no request authenticated yet.
    Unauthenticated,
    /// The listener is full and this client holds as many as the busiest one.
    Full,
}

/// The bounds one listener enforces.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub total: usize,
    /// Per client; `None`: only the total (the tunnel listener's one client is cloudflared).
    pub per_client: Option<u32>,
    /// Per client, until a request on the connection carried credentials; `None` on a
    /// listener that asks for none.
    pub unauthenticated: Option<u32>,
}

#[derive(Debug)]
struct Held {
    key: ClientKey,
    authenticated: bool,
    close: Arc<tokio::sync::Notify>,
}

#[derive(Debug, Default, Clone, Copy)]
struct PerKey {
    open: u32,
    unauthenticated: u32,
}

#[derive(Debug, Default)]
struct SlotsInner {
    next_id: u64,
    /// Every open connection by id; ids grow, so the first of a client is its oldest.
    held: std::collections::BTreeMap<u64, Held>,
    per_key: HashMap<ClientKey, PerKey>,
}

/// The open connections of one listener, with the bounds of [`Limits`]; a [`Slot`] gives its
/// place back when dropped.
#[derive(Debug)]
pub struct Slots {
    limits: Limits,
    inner: Mutex<SlotsInner>,
}

impl Slots {
    pub fn new(limits: Limits) -> Arc<Slots> {
        Arc::new(Slots {
            limits,
            inner: Mutex::new(SlotsInner::default()),
        })
    }

    /// A place for one more connection from `ip`, or why not. 127.0.0.1 and ::1 (the device
    /// itself, where a reverse proxy sends every viewer from) are not bound per client, only
    /// by the total. When the listener is full, a client holding fewer connections than the
    /// busiest one gets in, and the busiest one's oldest connection is told to close
    /// ([`Slot::closed`]).
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Turned> {
        let key = ClientKey::of(ip);
        let counted = !is_this_host(ip);
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let mine = inner.per_key.get(&key).copied().unwrap_or_default();
        if counted {
            if self.limits.per_client.is_some_and(|m| mine.open >= m) {
                return Err(Turned::PerClient);
            }
            if self
                .limits
                .unauthenticated
                .is_some_and(|m| mine.unauthenticated >= m)
            {
                return Err(Turned::Unauthenticated);
            }
        }
        if inner.held.len() >= self.limits.total {
            // The busiest client, and its oldest connection.
            let busiest = inner
                .per_key
                .iter()
                .max_by_key(|(_, n)| n.open)
                .map(|(k, n)| (*k, n.open));
            match busiest {
                Some((victim, n)) if mine.open + 1 < n => {
                    if let Some(h) = inner.held.values().find(|h| h.key == victim) {
                        h.close.notify_one();
                    }
                }
                _ => return Err(Turned::Full),
            }
        }
        let id = inner.next_id;
        inner.next_id += 1;
        let close = Arc::new(tokio::sync::Notify::new());
        let authenticated = self.limits.unauthenticated.is_none() || !counted;
        inner.held.insert(
            id,
            Held {
                key,
                authenticated,
                close: close.clone(),
            },
        );
        let n = inner.per_key.entry(key).or_default();
        n.open += 1;
        if !authenticated {
            n.unauthenticated += 1;
        }
        Ok(Slot {
            owner: self.clone(),
            id,
            close,
        })
    }

    /// Open connections from `ip`'s client (all of them, and those not yet authenticated).
    pub fn open(&self, ip: IpAddr) -> (u32, u32) {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let n = inner
            .per_key
            .get(&ClientKey::of(ip))
            .copied()
            .unwrap_or_default();
        (n.open, n.unauthenticated)
    }

    /// Open connections on the listener.
    pub fn total(&self) -> usize {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.held.len()
    }

    fn release(&self, id: u64) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(h) = inner.held.remove(&id) else {
            return;
        };
        if let Some(n) = inner.per_key.get_mut(&h.key) {
            n.open = n.open.saturating_sub(1);
            if !h.authenticated {
                n.unauthenticated = n.unauthenticated.saturating_sub(1);
            }
            if n.open == 0 {
                inner.per_key.remove(&h.key);
            }
        }
    }

    fn authenticated(&self, id: u64) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let key = match inner.held.get_mut(&id) {
            Some(h) if !h.authenticated => {
                h.authenticated = true;
                h.key
            }
            _ => return,
        };
        if let Some(n) = inner.per_key.get_mut(&key) {
            n.unauthenticated = n.unauthenticated.saturating_sub(1);
        }
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

/// One connection's place in its listener's [`Slots`].
#[derive(Debug)]
pub struct Slot {
    owner: Arc<Slots>,
    id: u64,
    close: Arc<tokio::sync::Notify>,
}

impl Slot {
    /// A request on this connection carried the right credentials: it no longer counts
    /// against [`Limits::unauthenticated`].
    pub fn authenticated(&self) {
        self.owner.authenticated(self.id);
    }

    /// Resolves when a newcomer took this connection's place ([`Slots::admit`]).
    pub async fn closed(&self) {
        self.close.notified().await;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.owner.release(self.id);
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

    fn lan(total: usize) -> Arc<Slots> {
        Slots::new(Limits {
            total,
            per_client: Some(3),
            unauthenticated: Some(2),
        })
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn connections_per_client_are_counted_and_released_on_drop() {
        let slots = Slots::new(Limits {
            total: 100,
            per_client: Some(2),
            unauthenticated: None,
        });
        let a = ip("10.0.0.1");
        let g1 = slots.admit(a).unwrap();
        let _g2 = slots.admit(a).unwrap();
        assert_eq!(slots.admit(a).unwrap_err(), Turned::PerClient);
        assert!(slots.admit(ip("10.0.0.2")).is_ok());
        drop(g1);
        assert_eq!(slots.open(a), (1, 0));
        assert!(slots.admit(a).is_ok());
        // The device itself (a reverse proxy on it) is not limited; the rest of 127/8 is.
        let held: Vec<_> = (0..10)
            .map(|_| slots.admit(ip("127.0.0.1")).unwrap())
            .collect();
        assert_eq!(slots.open(ip("127.0.0.1")).0, 10);
        drop(held);
        let other_loopback = ip("127.0.0.2");
        let _a = slots.admit(other_loopback).unwrap();
        let _b = slots.admit(other_loopback).unwrap();
        assert!(slots.admit(other_loopback).is_err());
        assert!(slots.admit(ip("::1")).is_ok());
    }

    #[test]
    fn unauthenticated_connections_per_client_are_few_until_one_authenticates() {
        // Why: a stranger without the password may hold only a few connections per address.
        let slots = lan(100);
        let a = ip("192.168.1.9");
        let g1 = slots.admit(a).unwrap();
        let _g2 = slots.admit(a).unwrap();
        assert_eq!(slots.admit(a).unwrap_err(), Turned::Unauthenticated);
        g1.authenticated();
        g1.authenticated(); // twice counts once
        assert_eq!(slots.open(a), (2, 1));
        let _g3 = slots.admit(a).unwrap();
        assert_eq!(slots.admit(a).unwrap_err(), Turned::PerClient);
        drop(g1);
        assert_eq!(slots.open(a), (2, 2));
    }

    #[tokio::test]
    async fn a_full_listener_lets_a_lighter_client_in_in_place_of_the_busiest_ones_oldest() {
        // Why: 8 addresses x 32 connections used to fill all 256 slots and lock the owner out.
        let slots = Slots::new(Limits {
            total: 6,
            per_client: Some(3),
            unauthenticated: None,
        });
        let mut held = Vec::new();
        for (host, n) in [("10.0.0.1", 3), ("10.0.0.2", 2), ("10.0.0.3", 1)] {
            for _ in 0..n {
                held.push(slots.admit(ip(host)).unwrap());
            }
        }
        let owner = ip("10.0.0.9");
        let first = slots.admit(owner).unwrap();
        // The oldest connection of the busiest client was told to close.
        tokio::time::timeout(Duration::from_millis(100), held[0].closed())
            .await
            .expect("the busiest client's oldest connection is asked to close");
        drop(held.remove(0));
        assert_eq!(slots.total(), 6);
        // Now the busiest holds two: a second one of the owner's would make it as busy.
        assert_eq!(slots.admit(owner).unwrap_err(), Turned::Full);
        drop(first);
        assert_eq!(slots.total(), 5);
        assert!(slots.admit(owner).is_ok());
    }
}
