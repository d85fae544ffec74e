//! Broker-wide limits on connections and on request bytes in flight (issue 17),
//! after Kafka's `max.connections`, `max.connections.per.ip` (with
//! `max.connections.per.ip.overrides`), `max.connection.creation.rate` and
//! `queued.max.request.bytes`.
//!
//! Connections are counted across every shard's listener. A connection over
//! `max.connections` or over its address's per-IP limit is closed at once, before a
//! byte is read, and counted (Kafka closes per-IP excess the same way); new
//! connections over the creation rate wait for the acceptor instead (Kafka throttles
//! them too). Request bytes are a broker-wide budget taken before a frame's body is
//! read and given back when its answer is written, so many large produce requests at
//! once wait in the socket (TCP backpressure) rather than grow the broker's memory.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How the process's open-file limit is shared out: segment and index files get a
/// budget (a quarter of the limit unless `--log-open-files-max` says otherwise: only
/// the files of busy partitions stay open, three or four each), an eighth (at least
/// 64) is kept for what is in flight (files a write round or a read holds past the
/// budget, listeners, rings, the controller's connections), and connections get the
/// rest (10,000 of them under the common limit of 20,000). So idle connections cannot
/// take the descriptors produce needs, and 10,000 partitions cannot take the ones
/// connections need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Descriptors {
    pub limit: usize,
    pub files: usize,
    pub reserved: usize,
    pub connections: usize,
}

impl Descriptors {
    pub fn share(limit: usize, files_asked: usize) -> Descriptors {
        let reserved = (limit / 8).max(64).min(limit);
        let files = if files_asked > 0 { files_asked } else { limit / 4 };
        let files = files.min(limit - reserved).max(1);
        let connections = limit.saturating_sub(files + reserved).max(1);
        Descriptors {
            limit,
            files,
            reserved,
            connections,
        }
    }
}

/// Why a connection was closed at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `max.connections`.
    Total,
    /// `max.connections.per.ip` (or the address's override).
    PerIp,
    /// The connections' share of the open-file limit (see [`Descriptors`]).
    Descriptors,
}

impl Refusal {
    pub fn config(self) -> &'static str {
        match self {
            Refusal::Total => "max.connections",
            Refusal::PerIp => "max.connections.per.ip",
            Refusal::Descriptors => "descriptors",
        }
    }
}

pub struct Limits {
    max_total: usize,
    /// The connections' share of the descriptor budget.
    max_descriptors: usize,
    max_per_ip: usize,
    overrides: HashMap<IpAddr, usize>,
    /// New connections per second; None for no limit.
    rate: Option<f64>,
    state: Mutex<State>,
    /// `queued.max.request.bytes`; None for no limit.
    request_bytes: Option<Arc<Semaphore>>,
    request_bytes_max: usize,
}

struct State {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
    /// Token bucket of the creation rate: tokens now, and when they were counted.
    tokens: f64,
    counted_at: Instant,
}

/// The settings, as configured.
pub struct LimitsConfig {
    pub max_connections: usize,
    /// Connections the descriptor budget leaves room for.
    pub connection_descriptors: usize,
    pub max_connections_per_ip: usize,
    pub max_connections_per_ip_overrides: HashMap<IpAddr, usize>,
    pub max_connection_creation_rate: Option<u64>,
    pub queued_max_request_bytes: Option<usize>,
}

/// A connection's place in the counts; dropping it (the connection closed) frees it.
pub struct Slot {
    limits: Arc<Limits>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut state = self.limits.lock();
        state.total = state.total.saturating_sub(1);
        if let Some(n) = state.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                state.per_ip.remove(&self.ip);
            }
        }
    }
}

impl Limits {
    pub fn new(config: LimitsConfig) -> Arc<Limits> {
        let rate = config.max_connection_creation_rate.map(|r| r as f64);
        Arc::new(Limits {
            max_total: config.max_connections,
            max_descriptors: config.connection_descriptors,
            max_per_ip: config.max_connections_per_ip,
            overrides: config.max_connections_per_ip_overrides,
            rate,
            state: Mutex::new(State {
                total: 0,
                per_ip: HashMap::new(),
                tokens: rate.unwrap_or(0.0),
                counted_at: Instant::now(),
            }),
            // A semaphore holds at most usize::MAX >> 3 permits.
            request_bytes: config
                .queued_max_request_bytes
                .map(|n| Arc::new(Semaphore::new(n.min(Semaphore::MAX_PERMITS)))),
            request_bytes_max: config
                .queued_max_request_bytes
                .unwrap_or(usize::MAX)
                .min(Semaphore::MAX_PERMITS),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a new connection from `ip`, or says which limit it is over.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Refusal> {
        let mut state = self.lock();
        let per_ip_max = self.overrides.get(&ip).copied().unwrap_or(self.max_per_ip);
        let from_ip = state.per_ip.get(&ip).copied().unwrap_or(0);
        if from_ip >= per_ip_max {
            return Err(Refusal::PerIp);
        }
        if state.total >= self.max_total {
            return Err(Refusal::Total);
        }
        if state.total >= self.max_descriptors {
            return Err(Refusal::Descriptors);
        }
        state.total += 1;
        *state.per_ip.entry(ip).or_insert(0) += 1;
        Ok(Slot {
            limits: self.clone(),
            ip,
        })
    }

    /// How long the acceptor must wait before taking the next connection under
    /// `max.connection.creation.rate` (a token bucket holding one second of it);
    /// zero takes a token now.
    pub fn creation_delay(&self) -> Duration {
        let Some(rate) = self.rate else {
            return Duration::ZERO;
        };
        let mut state = self.lock();
        let now = Instant::now();
        let elapsed = now.duration_since(state.counted_at).as_secs_f64();
        state.tokens = (state.tokens + elapsed * rate).min(rate.max(1.0));
        state.counted_at = now;
        if state.tokens >= 1.0 {
            state.tokens -= 1.0;
            Duration::ZERO
        } else {
            Duration::from_secs_f64((1.0 - state.tokens) / rate.max(f64::MIN_POSITIVE))
        }
    }

    /// Takes `len` bytes of the broker-wide request budget, waiting while other
    /// requests hold it. A frame larger than the whole budget takes all of it, so it
    /// still goes through alone. None when there is no budget.
    pub async fn request_bytes(&self, len: usize) -> Option<OwnedSemaphorePermit> {
        let budget = self.request_bytes.as_ref()?;
        let want = len.clamp(1, self.request_bytes_max).min(u32::MAX as usize) as u32;
        budget.clone().acquire_many_owned(want).await.ok()
    }

    /// Bytes of the request budget in use now.
    pub fn request_bytes_in_use(&self) -> usize {
        self.request_bytes
            .as_ref()
            .map_or(0, |b| self.request_bytes_max.saturating_sub(b.available_permits()))
    }
}

/// Parses `max.connections.per.ip.overrides`: `host:count` pairs separated by commas,
/// each host an IP address.
pub fn parse_overrides(list: &str) -> Result<HashMap<IpAddr, usize>, String> {
    let mut out = HashMap::new();
    for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (host, count) = entry
            .rsplit_once(':')
            .ok_or_else(|| format!("--max-connections-per-ip-overrides: `{entry}` is not host:count"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let ip: IpAddr = host
            .parse()
            .map_err(|_| format!("--max-connections-per-ip-overrides: `{host}` is not an IP address"))?;
        let count: usize = count
            .parse()
            .map_err(|_| format!("--max-connections-per-ip-overrides: `{count}` is not a count"))?;
        out.insert(ip, count);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(total: usize, per_ip: usize, overrides: &str) -> Arc<Limits> {
        Limits::new(LimitsConfig {
            max_connections: total,
            connection_descriptors: usize::MAX,
            max_connections_per_ip: per_ip,
            max_connections_per_ip_overrides: parse_overrides(overrides).unwrap(),
            max_connection_creation_rate: None,
            queued_max_request_bytes: None,
        })
    }

    #[test]
    fn per_ip_and_total_limits_count_open_connections() {
        let l = limits(5, 2, "127.0.0.2:3, [::1]:0");
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let one = l.admit(a).unwrap();
        let _two = l.admit(a).unwrap();
        assert_eq!(l.admit(a).err(), Some(Refusal::PerIp));
        drop(one);
        let _three = l.admit(a).unwrap();
        let _b = [l.admit(b).unwrap(), l.admit(b).unwrap(), l.admit(b).unwrap()];
        assert_eq!(l.admit("127.0.0.3".parse().unwrap()).err(), Some(Refusal::Total));
        assert_eq!(
            l.admit("::1".parse().unwrap()).err(),
            Some(Refusal::PerIp),
            "an override of 0"
        );
        assert!(parse_overrides("localhost:3").is_err());
    }

    #[test]
    fn the_open_file_limit_is_shared_between_files_connections_and_a_reserve() {
        let common = Descriptors::share(20_000, 0);
        assert_eq!(
            (common.files, common.reserved, common.connections),
            (5_000, 2_500, 12_500)
        );
        let small = Descriptors::share(256, 0);
        assert_eq!((small.files, small.reserved, small.connections), (64, 64, 128));
        let asked = Descriptors::share(4096, 3000);
        assert_eq!((asked.files, asked.connections), (3000, 4096 - 3000 - 512));
        // Asking for more than there is still leaves the reserve and one connection.
        let greedy = Descriptors::share(1024, 5000);
        assert_eq!(
            (greedy.files, greedy.reserved, greedy.connections),
            (1024 - 128, 128, 1)
        );
    }

    #[test]
    fn the_creation_rate_spaces_out_new_connections() {
        let l = Limits::new(LimitsConfig {
            max_connections: usize::MAX,
            connection_descriptors: usize::MAX,
            max_connections_per_ip: usize::MAX,
            max_connections_per_ip_overrides: HashMap::new(),
            max_connection_creation_rate: Some(10),
            queued_max_request_bytes: None,
        });
        let free = (0..10).filter(|_| l.creation_delay().is_zero()).count();
        assert_eq!(free, 10, "a second's worth at once");
        let wait = l.creation_delay();
        assert!(
            wait > Duration::from_millis(50) && wait <= Duration::from_millis(100),
            "{wait:?}"
        );
    }
}
