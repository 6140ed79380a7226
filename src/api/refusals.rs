//! Audit records of unauthenticated refusals, bounded per source address. Every refused request
//! used to cost a durable audit record, and a request without credentials costs its sender one
//! small HTTP/2 HEADERS frame: a flood could fill the audit disk, after which every request fails.
//! Each address now gets `BURST` records at once and `PER_SECOND` after, and all addresses together
//! `GLOBAL_BURST` and `GLOBAL_PER_SECOND` (so spraying source addresses gains nothing); beyond that
//! refusals are counted, and once a second one record per address (`MAX_SUMMARIES` at most, the
//! rest in one record without an address) says how many there were (`count`). The refusals
//! themselves are answered as before; only their records are summarised.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::audit::AuditEvent;
use crate::ops::Kms;

/// Records an address may have at once, and per second after.
const BURST: f64 = 100.0;
const PER_SECOND: f64 = 20.0;
/// The same for all addresses together.
const GLOBAL_BURST: f64 = 1000.0;
const GLOBAL_PER_SECOND: f64 = 200.0;
/// Summary records a second with an address; the rest go into one without.
const MAX_SUMMARIES: usize = 100;
/// Addresses tracked at most; past that, new addresses share one bucket (None), so spraying
/// source addresses can't grow the table.
const MAX_ADDRESSES: usize = 10_000;
const SHARDS: usize = 16;
/// How often the counted refusals are written as summary records.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(1);

struct Bucket {
    tokens: f64,
    at: Instant,
    /// Refusals since the last summary that got no record of their own.
    counted: u64,
}

impl Bucket {
    fn full(now: Instant, burst: f64) -> Bucket {
        Bucket {
            tokens: burst,
            at: now,
            counted: 0,
        }
    }

    /// Refills for the time since it was last used; whether a token is there.
    fn has(&mut self, now: Instant, burst: f64, per_second: f64) -> bool {
        self.tokens = self.refilled(now, per_second).min(burst);
        self.at = now;
        self.tokens >= 1.0
    }

    fn refilled(&self, now: Instant, per_second: f64) -> f64 {
        self.tokens + now.saturating_duration_since(self.at).as_secs_f64() * per_second
    }
}

pub struct RefusalRecords {
    shards: Vec<Mutex<HashMap<Option<IpAddr>, Bucket>>>,
    global: Mutex<Bucket>,
    hasher: RandomState,
}

impl Default for RefusalRecords {
    fn default() -> Self {
        RefusalRecords {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            global: Mutex::new(Bucket::full(Instant::now(), GLOBAL_BURST)),
            hasher: RandomState::new(),
        }
    }
}

impl RefusalRecords {
    /// Whether a refusal from `ip` gets its own audit record now; if not, it is counted for the
    /// next summary.
    pub fn admit(&self, ip: Option<IpAddr>) -> bool {
        self.admit_at(ip, Instant::now())
    }

    fn admit_at(&self, ip: Option<IpAddr>, now: Instant) -> bool {
        let i = (self.hasher.hash_one(ip) as usize) % SHARDS;
        let mut shard = self.shards[i].lock().unwrap_or_else(|p| p.into_inner());
        let key = if shard.contains_key(&ip) || shard.len() < MAX_ADDRESSES / SHARDS {
            ip
        } else {
            None
        };
        let bucket = shard.entry(key).or_insert_with(|| Bucket::full(now, BURST));
        // A token is spent only when both have one, so neither pays for the other's refusal.
        let admitted = bucket.has(now, BURST, PER_SECOND) && {
            let mut global = self.global.lock().unwrap_or_else(|p| p.into_inner());
            let there = global.has(now, GLOBAL_BURST, GLOBAL_PER_SECOND);
            if there {
                global.tokens -= 1.0;
            }
            there
        };
        if admitted {
            bucket.tokens -= 1.0;
        } else {
            bucket.counted += 1;
        }
        admitted
    }

    /// Counts again refusals whose summary record could not be written.
    fn put_back(&self, ip: Option<IpAddr>, n: u64) {
        let i = (self.hasher.hash_one(ip) as usize) % SHARDS;
        let mut shard = self.shards[i].lock().unwrap_or_else(|p| p.into_inner());
        shard
            .entry(ip)
            .or_insert_with(|| Bucket::full(Instant::now(), 0.0))
            .counted += n;
    }

    /// The refusals counted since the last call, by address, most first: `MAX_SUMMARIES` at most,
    /// the rest added up under no address. Addresses whose bucket has refilled are forgotten.
    pub fn take_counted(&self) -> Vec<(Option<IpAddr>, u64)> {
        self.take_counted_at(Instant::now())
    }

    fn take_counted_at(&self, now: Instant) -> Vec<(Option<IpAddr>, u64)> {
        let mut counted = Vec::new();
        for shard in &self.shards {
            let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            shard.retain(|ip, b| {
                if b.counted > 0 {
                    counted.push((*ip, std::mem::take(&mut b.counted)));
                }
                b.refilled(now, PER_SECOND) < BURST
            });
        }
        // Addresses first, most refusals first; what has no address (the shards' overflow
        // buckets, the addresses past MAX_SUMMARIES) goes into one record.
        let mut rest: u64 = 0;
        counted.retain(|(ip, n)| {
            if ip.is_none() {
                rest += n;
            }
            ip.is_some()
        });
        counted.sort_by_key(|c| std::cmp::Reverse(c.1));
        if counted.len() >= MAX_SUMMARIES {
            rest += counted.drain(MAX_SUMMARIES - 1..).map(|(_, n)| n).sum::<u64>();
        }
        if rest > 0 {
            counted.push((None, rest));
        }
        counted
    }
}

/// Writes, once a second, one record per address whose refusals were counted rather than recorded,
/// and a last time when `stop` fires (or its sender goes).
pub fn spawn_summaries(
    records: Arc<RefusalRecords>,
    kms: Arc<Kms>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SUMMARY_EVERY);
        loop {
            let stopping = tokio::select! {
                _ = tick.tick() => false,
                _ = &mut stop => true,
            };
            write_summaries(&records, &kms).await;
            if stopping {
                return;
            }
        }
    })
}

/// The summary records of the refusals counted so far, written together (one group commit); the
/// counts of any that can't be written are kept for the next time.
async fn write_summaries(records: &Arc<RefusalRecords>, kms: &Arc<Kms>) {
    let mut writes = tokio::task::JoinSet::new();
    for (ip, n) in records.take_counted() {
        let mut ev = AuditEvent::new("*", "unauthenticated".into(), ip.map(|a| a.to_string()));
        ev.outcome = "UnrecognizedClientException";
        ev.count = Some(n);
        let (records, kms) = (records.clone(), kms.clone());
        writes.spawn(async move {
            if kms.audit(&ev).await.is_err() {
                tracing::error!(count = n, "cannot record refused unauthenticated requests yet");
                records.put_back(ip, n);
            }
        });
    }
    while writes.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn each_address_gets_a_burst_then_a_rate_and_the_rest_is_counted() {
        let r = RefusalRecords::default();
        let t0 = Instant::now();
        let admitted = (0..150).filter(|_| r.admit_at(ip("10.0.0.1"), t0)).count();
        assert_eq!(admitted, 100);
        assert!(r.admit_at(ip("10.0.0.2"), t0), "another address has its own burst");
        // A second later: 20 more, the rest counted.
        let t1 = t0 + Duration::from_secs(1);
        let admitted = (0..50).filter(|_| r.admit_at(ip("10.0.0.1"), t1)).count();
        assert_eq!(admitted, 20);
        assert_eq!(r.take_counted_at(t1), vec![(ip("10.0.0.1"), 50 + 30)]);
        assert_eq!(r.take_counted_at(t1), vec![], "counted once");
        // Refilled addresses are forgotten.
        r.take_counted_at(t1 + Duration::from_secs(60));
        assert!(r.shards.iter().all(|s| s.lock().unwrap().is_empty()));
    }

    #[test]
    fn spraying_addresses_gains_nothing() {
        let r = RefusalRecords::default();
        let t0 = Instant::now();
        let sent = MAX_ADDRESSES as u32 * 3;
        let mut admitted = 0;
        for i in 0..sent {
            let a = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            admitted += u64::from(r.admit_at(Some(a), t0));
        }
        assert_eq!(admitted, GLOBAL_BURST as u64, "the global bucket bounds them all");
        let tracked: usize = r.shards.iter().map(|s| s.lock().unwrap().len()).sum();
        assert!(tracked <= MAX_ADDRESSES + SHARDS, "{tracked} addresses tracked");
        let summaries = r.take_counted_at(t0);
        assert!(summaries.len() <= MAX_SUMMARIES, "{} summary records", summaries.len());
        let counted: u64 = summaries.iter().map(|(_, n)| n).sum();
        assert_eq!(
            counted + admitted,
            u64::from(sent),
            "every refusal is recorded or counted"
        );
        assert_eq!(summaries.last().unwrap().0, None, "the rest under no address");
        assert_eq!(
            summaries.iter().filter(|(a, _)| a.is_none()).count(),
            1,
            "in one record"
        );
        // Counts that could not be written come back next time.
        r.put_back(None, 5);
        assert_eq!(r.take_counted_at(t0), vec![(None, 5)]);
    }
}
