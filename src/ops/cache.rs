//! A bounded, sharded in-memory cache with optional TTL. Each shard has its own short lock (no
//! global lock on the hot path) and a generation counter that makes invalidation race-free: a
//! reader notes the generation before loading from the store and inserts only if no writer
//! invalidated the entry meanwhile, so a stale value can never overwrite a newer change.
//!
//! The capacity bounds the whole cache (an atomic count, not a lock), not each shard: a working
//! set as large as the capacity fits, however unevenly it hashes over the shards.
//!
//! Loads are single-flight: concurrent misses on one key wait for the first one's load instead of
//! each loading (a burst on a cold key makes one HSM unwrap, not one per request), and get its
//! value or its error. A disabled cache does not share loads: with the cache off, every request
//! unwraps.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};

use foldhash::fast::RandomState;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::error::KmsError;

/// What a load under way ends with, as its waiters see it: None until then.
type Outcome<V> = Option<Result<V, KmsError>>;

const SHARDS: usize = 64;

/// Entries are only ever inserted for keys that exist (key ids the server made, configured
/// principals), so a caller can't choose colliding keys: foldhash, seeded per map, rather than
/// SipHash, which cost three times as much per lookup.
struct Shard<K, V> {
    map: HashMap<K, (V, Instant), RandomState>,
    generation: u64,
    /// Loads under way, by key: their outcome is sent when they end.
    flights: HashMap<K, watch::Receiver<Outcome<V>>, RandomState>,
}

pub struct ShardedCache<K, V> {
    shards: Vec<Mutex<Shard<K, V>>>,
    capacity: usize,
    len: AtomicUsize,
    ttl: Option<Duration>,
    hasher: RandomState,
}

/// What picks an entry's shard. A pair (key id, version or grantee) goes by its key id, so that
/// one KMS key's entries share a shard: dropping all of them (`invalidate_group`) fences off the
/// loads under way in that shard only, not in every shard.
pub trait ShardBy {
    type Group: Hash + Eq + ?Sized;
    fn group(&self) -> &Self::Group;
}

impl ShardBy for str {
    type Group = str;
    fn group(&self) -> &str {
        self
    }
}

impl ShardBy for String {
    type Group = str;
    fn group(&self) -> &str {
        self
    }
}

impl ShardBy for &str {
    type Group = str;
    fn group(&self) -> &str {
        self
    }
}

impl ShardBy for u32 {
    type Group = u32;
    fn group(&self) -> &u32 {
        self
    }
}

impl<T> ShardBy for (String, T) {
    type Group = str;
    fn group(&self) -> &str {
        &self.0
    }
}

/// Proof of the generation seen before a load; see `insert_if_unchanged`.
#[derive(Clone, Copy)]
pub struct Generation(u64);

impl<K: Hash + Eq + Clone + ShardBy, V: Clone> ShardedCache<K, V> {
    /// `capacity` 0 or a `ttl` of zero disables the cache (every lookup misses).
    pub fn new(capacity: usize, ttl: Option<Duration>) -> Self {
        let enabled = capacity > 0 && ttl != Some(Duration::ZERO);
        ShardedCache {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        map: HashMap::default(),
                        generation: 0,
                        flights: HashMap::default(),
                    })
                })
                .collect(),
            capacity: if enabled { capacity } else { 0 },
            len: AtomicUsize::new(0),
            ttl,
            hasher: RandomState::default(),
        }
    }

    /// Whether anything is ever kept (capacity and TTL not zero).
    pub fn is_enabled(&self) -> bool {
        self.capacity > 0
    }

    fn shard<Q: ShardBy<Group = K::Group> + ?Sized>(&self, key: &Q) -> MutexGuard<'_, Shard<K, V>> {
        self.group_shard(key.group())
    }

    fn group_shard(&self, group: &K::Group) -> MutexGuard<'_, Shard<K, V>> {
        let i = (self.hasher.hash_one(group) as usize) % SHARDS;
        // A panic while holding a shard lock leaves only a cache behind: recover it.
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Looks up by any borrowed form of the key (`&str` for `String` keys: no allocation).
    pub fn get<Q: Hash + Eq + ShardBy<Group = K::Group> + ?Sized>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
    {
        self.fresh(&mut self.shard(key), key)
    }

    /// The entry unless it has expired (an expired one is dropped).
    fn fresh<Q: Hash + Eq + ?Sized>(&self, shard: &mut Shard<K, V>, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
    {
        let (value, at) = shard.map.get(key)?;
        if self.ttl.is_some_and(|ttl| at.elapsed() >= ttl) {
            shard.map.remove(key);
            self.len.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(value.clone())
    }

    pub fn generation<Q: Hash + Eq + ShardBy<Group = K::Group> + ?Sized>(&self, key: &Q) -> Generation
    where
        K: Borrow<Q>,
    {
        Generation(self.shard(key).generation)
    }

    /// Inserts unless the entry was invalidated since `seen` was taken.
    pub fn insert_if_unchanged(&self, key: K, seen: Generation, value: V) {
        if self.capacity == 0 {
            return;
        }
        let mut shard = self.shard(&key);
        if shard.generation != seen.0 {
            return;
        }
        if !shard.map.contains_key(&key) && self.len.fetch_add(1, Ordering::Relaxed) >= self.capacity {
            self.len.fetch_sub(1, Ordering::Relaxed);
            // Full: make room in this shard by evicting any one entry (cheap, and good enough for
            // a cache sized above the working set); a full cache with nothing here skips caching.
            let Some(victim) = shard.map.keys().next().cloned() else {
                return;
            };
            shard.map.remove(&victim);
        }
        shard.map.insert(key, (value, Instant::now()));
    }

    /// The cached value, or `load`'s, which is cached unless the entry was invalidated meanwhile.
    /// A miss while another caller loads the same key waits for that load and gets its value or
    /// its error; if that caller goes away first, one of the waiters loads for the rest.
    pub async fn get_or_load<Q>(
        &self,
        key: &Q,
        load: impl std::future::Future<Output = Result<V, KmsError>>,
    ) -> Result<V, KmsError>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ShardBy<Group = K::Group> + ?Sized,
    {
        let mut load = Some(load);
        loop {
            let joined = {
                let mut shard = self.shard(key);
                if let Some(v) = self.fresh(&mut shard, key) {
                    return Ok(v);
                }
                let seen = Generation(shard.generation);
                match shard.flights.get(key) {
                    Some(flight) => Err(flight.clone()),
                    None if self.capacity == 0 => Ok(None),
                    None => {
                        let (tx, rx) = watch::channel(None);
                        shard.flights.insert(key.to_owned(), rx.clone());
                        Ok(Some(Flight {
                            cache: self,
                            key: key.to_owned(),
                            seen,
                            tx,
                            rx,
                        }))
                    }
                }
            };
            let mut flight = match joined {
                Ok(leading) => {
                    let load = load.take().expect("a caller leads at most once, then returns");
                    return match leading {
                        Some(flight) => flight.run(load).await,
                        None => load.await, // the cache is off
                    };
                }
                Err(flight) => flight,
            };
            let ended = flight.wait_for(Option::is_some).await.ok().and_then(|o| o.clone());
            if let Some(outcome) = ended {
                return outcome;
            }
            // The loading caller went away before its load ended: start again (one of the
            // waiters now leads).
        }
    }

    /// Drops the entry and fences off loads that started before this call.
    pub fn invalidate<Q: Hash + Eq + ShardBy<Group = K::Group> + ?Sized>(&self, key: &Q)
    where
        K: Borrow<Q>,
    {
        let mut shard = self.shard(key);
        shard.generation += 1;
        // Callers from now on load afresh instead of waiting for a load from before.
        shard.flights.remove(key);
        if shard.map.remove(key).is_some() {
            self.len.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Drops every entry of `group` (a key's materials, however many versions) and fences off the
    /// loads under way in its shard. Walks that shard: for rare changes, not the hot path.
    pub fn invalidate_group(&self, group: &K::Group) {
        let mut shard = self.group_shard(group);
        shard.generation += 1;
        shard.flights.retain(|k, _| k.group() != group);
        let before = shard.map.len();
        shard.map.retain(|k, _| k.group() != group);
        self.len.fetch_sub(before - shard.map.len(), Ordering::Relaxed);
    }

    /// Drops every entry older than the TTL (none without one), so a value nobody asks for again
    /// doesn't outlive it. Returns how many went.
    pub fn purge_expired(&self) -> usize {
        let Some(ttl) = self.ttl else { return 0 };
        let mut purged = 0;
        for shard in &self.shards {
            let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            let before = shard.map.len();
            shard.map.retain(|_, (_, at)| at.elapsed() < ttl);
            let gone = before - shard.map.len();
            self.len.fetch_sub(gone, Ordering::Relaxed);
            purged += gone;
        }
        purged
    }

    /// The TTL, when entries expire and the cache is on.
    pub fn ttl(&self) -> Option<Duration> {
        self.ttl.filter(|_| self.capacity > 0)
    }

    pub fn clear(&self) {
        for shard in &self.shards {
            let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            shard.generation += 1;
            shard.flights.clear();
            self.len.fetch_sub(shard.map.len(), Ordering::Relaxed);
            shard.map.clear();
        }
    }
}

/// One load under way: its caller loads, caches the value and sends the outcome to those waiting.
/// Dropped (ended or abandoned), it leaves the shard's flights, so no one waits on it any more.
struct Flight<'c, K: Hash + Eq + Clone + ShardBy, V: Clone> {
    cache: &'c ShardedCache<K, V>,
    key: K,
    seen: Generation,
    tx: watch::Sender<Outcome<V>>,
    /// Tells this flight's entry from a later one for the same key.
    rx: watch::Receiver<Outcome<V>>,
}

impl<K: Hash + Eq + Clone + ShardBy, V: Clone> Flight<'_, K, V> {
    async fn run(self, load: impl std::future::Future<Output = Result<V, KmsError>>) -> Result<V, KmsError> {
        let outcome = load.await;
        if let Ok(v) = &outcome {
            self.cache.insert_if_unchanged(self.key.clone(), self.seen, v.clone());
        }
        self.tx.send_replace(Some(outcome.clone()));
        outcome
    }
}

impl<K: Hash + Eq + Clone + ShardBy, V: Clone> Drop for Flight<'_, K, V> {
    fn drop(&mut self) {
        let mut shard = self.cache.shard(&self.key);
        if shard.flights.get(&self.key).is_some_and(|f| f.same_channel(&self.rx)) {
            shard.flights.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` concurrent `get_or_load`s of one key whose load takes 50 ms; how many loads ran.
    async fn concurrent_loads(cache: ShardedCache<u32, u32>, n: usize) -> usize {
        let cache = std::sync::Arc::new(cache);
        let loads = std::sync::Arc::new(AtomicUsize::new(0));
        let mut calls = tokio::task::JoinSet::new();
        for _ in 0..n {
            let (cache, loads) = (cache.clone(), loads.clone());
            calls.spawn(async move {
                let load = async {
                    loads.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Ok(42)
                };
                cache.get_or_load(&7, load).await
            });
        }
        while let Some(answer) = calls.join_next().await {
            assert_eq!(answer.unwrap(), Ok(42));
        }
        loads.load(Ordering::SeqCst)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_misses_on_one_key_load_it_once_unless_the_cache_is_off() {
        assert_eq!(concurrent_loads(ShardedCache::new(100, None), 20).await, 1);
        let off = ShardedCache::new(100, Some(Duration::ZERO));
        assert_eq!(concurrent_loads(off, 5).await, 5, "cache off: every request loads");
    }

    /// A load that counts itself and answers `answer` after `ms`.
    async fn counted(loads: &AtomicUsize, ms: u64, answer: Result<u32, KmsError>) -> Result<u32, KmsError> {
        loads.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        answer
    }

    /// Runs `f` after `ms`, failing the test rather than hanging if it never ends.
    async fn later<T>(ms: u64, f: impl std::future::Future<Output = T>) -> T {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        tokio::time::timeout(Duration::from_secs(10), f)
            .await
            .expect("a waiter hung")
    }

    #[tokio::test]
    async fn waiters_share_a_failed_load_and_take_over_an_abandoned_one() {
        let cache: ShardedCache<u32, u32> = ShardedCache::new(100, None);
        let loads = AtomicUsize::new(0);
        let unplugged = KmsError::KeyUnavailable("HSM unplugged".into());
        // Long enough that the waiter comes in while it runs, however loaded the machine.
        let failing = counted(&loads, 1000, Err(unplugged.clone()));
        let waiter = later(10, cache.get_or_load(&1, counted(&loads, 0, Ok(1))));
        let (first, second) = tokio::join!(cache.get_or_load(&1, failing), waiter);
        assert_eq!((first, second), (Err(unplugged.clone()), Err(unplugged)));
        assert_eq!(loads.load(Ordering::SeqCst), 1, "the waiter did not load again");
        assert_eq!(cache.get(&1), None, "errors are not cached");

        // The first caller gives up; of the two waiting, one loads for both.
        loads.store(0, Ordering::SeqCst);
        let abandoned = tokio::time::timeout(
            Duration::from_millis(50),
            cache.get_or_load(&2, counted(&loads, 3_600_000, Ok(0))),
        );
        let a = later(10, cache.get_or_load(&2, counted(&loads, 30, Ok(2))));
        let b = later(20, cache.get_or_load(&2, counted(&loads, 30, Ok(2))));
        let (first, a, b) = tokio::join!(abandoned, a, b);
        assert!(first.is_err(), "the first caller gave up");
        assert_eq!((a, b), (Ok(2), Ok(2)));
        assert_eq!(loads.load(Ordering::SeqCst), 2, "the abandoned load and one more");
        assert!(cache.shards.iter().all(|s| s.lock().unwrap().flights.is_empty()));
    }

    #[tokio::test]
    async fn a_load_from_before_an_invalidation_is_not_waited_for_after_it() {
        let cache: ShardedCache<u32, u32> = ShardedCache::new(100, None);
        let loads = AtomicUsize::new(0);
        let after_invalidation = later(10, async {
            cache.invalidate(&1); // e.g. the key's material was deleted meanwhile
            cache.get_or_load(&1, counted(&loads, 0, Ok(2))).await
        });
        let (first, second) = tokio::join!(cache.get_or_load(&1, counted(&loads, 50, Ok(1))), after_invalidation);
        assert_eq!((first, second), (Ok(1), Ok(2)));
        assert_eq!(cache.get(&1), Some(2), "the stale load was not cached over the new one");
    }

    #[test]
    fn a_load_racing_an_invalidation_is_not_cached() {
        let c: ShardedCache<&str, u32> = ShardedCache::new(100, None);
        let seen = c.generation(&"k");
        c.invalidate(&"k"); // a writer changed the key while the reader was loading
        c.insert_if_unchanged("k", seen, 1);
        assert_eq!(c.get(&"k"), None);
        let seen = c.generation(&"k");
        c.insert_if_unchanged("k", seen, 2);
        assert_eq!(c.get(&"k"), Some(2));
    }

    #[test]
    fn invalidate_group_drops_one_keys_entries_and_fences_their_loads_only() {
        let c: ShardedCache<(String, u32), u32> = ShardedCache::new(100, None);
        let k = |id: &str, m| (id.to_string(), m);
        for m in 1..=3 {
            c.insert_if_unchanged(k("a", m), c.generation(&k("a", m)), m);
        }
        c.insert_if_unchanged(k("b", 1), c.generation(&k("b", 1)), 9);
        let seen = c.generation(&k("a", 2));
        // Loads of other keys under way: one in another shard, one that shares a's shard.
        let shard_of = |id: &str| c.hasher.hash_one(id) as usize % SHARDS;
        let other = (0..)
            .map(|i| format!("o{i}"))
            .find(|id| shard_of(id) != shard_of("a"))
            .unwrap();
        let beside = (0..)
            .map(|i| format!("s{i}"))
            .find(|id| shard_of(id) == shard_of("a"))
            .unwrap();
        let (seen_other, seen_beside) = (c.generation(&k(&other, 1)), c.generation(&k(&beside, 1)));
        c.invalidate_group("a");
        assert_eq!(
            (1..=3).map(|m| c.get(&k("a", m))).collect::<Vec<_>>(),
            [None, None, None]
        );
        assert_eq!(c.get(&k("b", 1)), Some(9), "other keys stay");
        assert_eq!(c.len.load(Ordering::Relaxed), 1);
        c.insert_if_unchanged(k("a", 2), seen, 2);
        assert_eq!(c.get(&k("a", 2)), None, "a load from before is not cached");
        c.insert_if_unchanged(k(&other, 1), seen_other, 5);
        assert_eq!(c.get(&k(&other, 1)), Some(5), "a load in another shard is cached");
        // The price of fencing by shard: a load of a key beside it is not cached this once.
        c.insert_if_unchanged(k(&beside, 1), seen_beside, 6);
        assert_eq!(c.get(&k(&beside, 1)), None);
    }

    #[test]
    fn ttl_and_capacity() {
        let off: ShardedCache<u32, u32> = ShardedCache::new(100, Some(Duration::ZERO));
        off.insert_if_unchanged(1, off.generation(&1), 1);
        assert_eq!(off.get(&1), None);
        let short: ShardedCache<u32, u32> = ShardedCache::new(100, Some(Duration::from_secs(1)));
        short.insert_if_unchanged(1, short.generation(&1), 1);
        assert_eq!(short.get(&1), Some(1));
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(short.get(&1), None);
        let small: ShardedCache<u32, u32> = ShardedCache::new(64, None);
        for i in 0..10_000 {
            small.insert_if_unchanged(i, small.generation(&i), i);
        }
        let held = (0..10_000).filter(|i| small.get(i).is_some()).count();
        assert!(held <= 64, "held {held}");
    }

    #[test]
    fn a_working_set_as_large_as_the_capacity_fits() {
        // 10,000 keys over 64 shards hash unevenly; a per-shard bound would evict some of them.
        let c: ShardedCache<u32, u32> = ShardedCache::new(10_000, None);
        for round in 0..3 {
            for i in 0..10_000 {
                if c.get(&i).is_none() {
                    assert_eq!(round, 0, "key {i} was evicted though the working set fits");
                    c.insert_if_unchanged(i, c.generation(&i), i);
                }
            }
        }
        // One more key evicts exactly one; invalidation and clear give room back.
        c.insert_if_unchanged(10_000, c.generation(&10_000), 0);
        assert_eq!((0..=10_000).filter(|i| c.get(i).is_some()).count(), 10_000);
        c.invalidate(&10_000);
        c.clear();
        for i in 0..10_000 {
            c.insert_if_unchanged(i, c.generation(&i), i);
        }
        assert_eq!((0..10_000).filter(|i| c.get(i).is_some()).count(), 10_000);
    }

    #[test]
    fn purge_drops_expired_entries_without_a_lookup() {
        let c: ShardedCache<u32, u32> = ShardedCache::new(100, Some(Duration::from_millis(1)));
        for k in 0..10 {
            c.insert_if_unchanged(k, c.generation(&k), k);
        }
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(c.purge_expired(), 10);
        assert_eq!(c.len.load(Ordering::Relaxed), 0);
        // Fresh entries stay; a cache without a TTL never purges.
        let fresh: ShardedCache<u32, u32> = ShardedCache::new(100, Some(Duration::from_secs(3600)));
        fresh.insert_if_unchanged(1, fresh.generation(&1), 1);
        assert_eq!(fresh.purge_expired(), 0);
        assert_eq!(fresh.get(&1), Some(1));
        let forever: ShardedCache<u32, u32> = ShardedCache::new(100, None);
        forever.insert_if_unchanged(1, forever.generation(&1), 1);
        assert_eq!((forever.purge_expired(), forever.ttl()), (0, None));
    }
}
