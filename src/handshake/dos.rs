//! Denial-of-service defences for the proxy's handshake path.
//!
//! Order of checks for an initiation (cheapest first): exact length, MAC1
//! (a hash, no DH), then, only when the proxy is under load, MAC2 (proves the
//! source address via a cookie round trip) and a per-source token bucket.
//! Only then does the proxy spend Diffie-Hellman operations on it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Limits for the handshake path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DosConfig {
    /// Above this many initiations per second the proxy is "under load" and
    /// demands cookies.
    pub under_load_handshakes_per_s: u32,
    /// Sustained initiations per second one source may make under load.
    pub per_ip_rate_per_s: u32,
    /// Burst one source may make under load.
    pub per_ip_burst: u32,
}

impl Default for DosConfig {
    fn default() -> Self {
        Self {
            under_load_handshakes_per_s: 500,
            per_ip_rate_per_s: 20,
            per_ip_burst: 5,
        }
    }
}

/// Counts initiations per second to decide whether the proxy is under load.
#[derive(Debug)]
pub struct LoadMeter {
    threshold: u32,
    window_start: Option<Instant>,
    count: u32,
    previous: u32,
}

impl LoadMeter {
    /// A meter that reports load above `threshold` initiations per second.
    pub fn new(threshold: u32) -> Self {
        Self {
            threshold,
            window_start: None,
            count: 0,
            previous: 0,
        }
    }

    /// Records one initiation and says whether the proxy is under load.
    /// Load persists for the second after a busy one, so an attacker cannot
    /// slip in at the start of each new window.
    pub fn record(&mut self, now: Instant) -> bool {
        let start = *self.window_start.get_or_insert(now);
        let elapsed = now.saturating_duration_since(start);
        if elapsed >= Duration::from_secs(1) {
            self.previous = if elapsed >= Duration::from_secs(2) {
                0
            } else {
                self.count
            };
            self.count = 0;
            self.window_start = Some(now);
        }
        self.count = self.count.saturating_add(1);
        self.count > self.threshold || self.previous > self.threshold
    }
}

/// Key of a rate-limit bucket: an IPv4 address, or an IPv6 /64 (one host
/// usually controls a whole /64, so per-address limits would be useless).
fn bucket_key(ip: IpAddr) -> u128 {
    // A v4-mapped v6 address is the v4 client it maps, not the ::ffff:0/64
    // "network" that every such client would otherwise share.
    match ip.to_canonical() {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        // IPv4 keys are below 2^32, so an IPv6 /64 prefix with a marker bit
        // set can never collide with one.
        IpAddr::V6(v6) => (u128::from(v6) >> 64 << 64) | (1 << 32),
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// One token bucket for everything (all sources together): the bound a
/// forger spoofing many sources cannot spread out of, where per-source
/// buckets are no bound at all.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Option<Instant>,
}

impl TokenBucket {
    /// A full bucket of `burst` tokens, refilled at `rate` per second.
    pub fn new(rate: u32, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            rate: f64::from(rate),
            burst,
            tokens: burst,
            last: None,
        }
    }

    /// Takes a token; false if none is left.
    pub fn allow(&mut self, now: Instant) -> bool {
        let last = *self.last.get_or_insert(now);
        let dt = now.saturating_duration_since(last).as_secs_f64();
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        self.last = Some(now.max(last));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Per-source token buckets.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: HashMap<u128, Bucket>,
    max_entries: usize,
}

impl RateLimiter {
    /// Most sources tracked at once; beyond that new sources are refused
    /// until a sweep frees room, which fails closed under a spoofing flood.
    pub const DEFAULT_MAX_ENTRIES: usize = 1 << 16;

    /// A limiter with `rate` tokens per second and bursts of `burst`.
    pub fn new(rate: u32, burst: u32) -> Self {
        Self {
            rate: f64::from(rate),
            burst: f64::from(burst.max(1)),
            buckets: HashMap::new(),
            max_entries: Self::DEFAULT_MAX_ENTRIES,
        }
    }

    /// Takes a token for `ip`; false if it has none left.
    pub fn allow(&mut self, now: Instant, ip: IpAddr) -> bool {
        let key = bucket_key(ip);
        if !self.buckets.contains_key(&key) && self.buckets.len() >= self.max_entries {
            return false;
        }
        let burst = self.burst;
        let b = self.buckets.entry(key).or_insert(Bucket {
            tokens: burst,
            last: now,
        });
        let dt = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + dt * self.rate).min(burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Forgets sources whose buckets have refilled (they are back to the
    /// default), keeping the table small.
    pub fn sweep(&mut self, now: Instant) {
        let (rate, burst) = (self.rate, self.burst);
        self.buckets.retain(|_, b| {
            let dt = now.saturating_duration_since(b.last).as_secs_f64();
            b.tokens + dt * rate < burst
        });
    }

    /// Sources currently tracked.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// True when no source is tracked.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_meter_threshold_and_carry_over() {
        let t = Instant::now();
        let mut m = LoadMeter::new(3);
        assert!(!m.record(t));
        assert!(!m.record(t));
        assert!(!m.record(t));
        assert!(m.record(t), "fourth in one second is load");
        // The next second is still under load because the last one was busy.
        assert!(m.record(t + Duration::from_millis(1500)));
        // After a quiet second it is not.
        assert!(!m.record(t + Duration::from_millis(3600)));
    }

    #[test]
    fn one_bucket_for_all_sources() {
        let t = Instant::now();
        let mut b = TokenBucket::new(100, 3);
        assert!(b.allow(t) && b.allow(t) && b.allow(t));
        assert!(!b.allow(t));
        // 10 ms at 100/s gives one token; never more than the burst.
        assert!(b.allow(t + Duration::from_millis(10)));
        assert!(!b.allow(t + Duration::from_millis(10)));
        let later = t + Duration::from_secs(60);
        assert!((0..3).all(|_| b.allow(later)));
        assert!(!b.allow(later));
    }

    #[test]
    fn bucket_burst_then_rate() {
        let t = Instant::now();
        let mut r = RateLimiter::new(20, 5);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..5 {
            assert!(r.allow(t, ip));
        }
        assert!(!r.allow(t, ip));
        assert!(
            r.allow(t, "192.0.2.2".parse().unwrap()),
            "other sources unaffected"
        );
        // 50 ms at 20/s gives one token.
        assert!(r.allow(t + Duration::from_millis(50), ip));
        assert!(!r.allow(t + Duration::from_millis(50), ip));
    }

    #[test]
    fn ipv6_limited_per_64() {
        let t = Instant::now();
        let mut r = RateLimiter::new(1, 1);
        assert!(r.allow(t, "2001:db8::1".parse().unwrap()));
        assert!(!r.allow(t, "2001:db8::2".parse().unwrap()), "same /64");
        assert!(r.allow(t, "2001:db8:0:1::1".parse().unwrap()), "other /64");
        assert!(r.allow(t, "192.0.2.1".parse().unwrap()));
        // A v4-mapped address is its v4 client.
        assert!(!r.allow(t, "::ffff:192.0.2.1".parse().unwrap()));
        assert!(r.allow(t, "::ffff:192.0.2.9".parse().unwrap()));
    }

    #[test]
    fn sweep_forgets_refilled_sources() {
        let t = Instant::now();
        let mut r = RateLimiter::new(20, 5);
        r.allow(t, "192.0.2.1".parse().unwrap());
        assert_eq!(r.len(), 1);
        r.sweep(t + Duration::from_millis(10));
        assert_eq!(r.len(), 1);
        r.sweep(t + Duration::from_secs(1));
        assert!(r.is_empty());
    }
}
