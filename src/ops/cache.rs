//! A bounded, sharded in-memory cache with optional TTL. Each shard has its own short lock (no
//! global lock on the hot path) and a generation counter that makes invalidation race-free: a
//! reader notes the generation before loading from the store and inserts only if no writer
//! invalidated the entry meanwhile, so a stale value can never overwrite a newer change.
//!
//! The capacity bounds the whole cache (an atomic count, not a lock), not each shard: a working
//! set as large as the capacity fits, however unevenly it hashes over the shards.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

const SHARDS: usize = 64;

struct Shard<K, V> {
    map: HashMap<K, (V, Instant)>,
    generation: u64,
}

pub struct ShardedCache<K, V> {
    shards: Vec<Mutex<Shard<K, V>>>,
    capacity: usize,
    len: AtomicUsize,
    ttl: Option<Duration>,
    hasher: RandomState,
}

/// Proof of the generation seen before a load; see `insert_if_unchanged`.
#[derive(Clone, Copy)]
pub struct Generation(u64);

impl<K: Hash + Eq + Clone, V: Clone> ShardedCache<K, V> {
    /// `capacity` 0 or a `ttl` of zero disables the cache (every lookup misses).
    pub fn new(capacity: usize, ttl: Option<Duration>) -> Self {
        let enabled = capacity > 0 && ttl != Some(Duration::ZERO);
        ShardedCache {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        map: HashMap::new(),
                        generation: 0,
                    })
                })
                .collect(),
            capacity: if enabled { capacity } else { 0 },
            len: AtomicUsize::new(0),
            ttl,
            hasher: RandomState::new(),
        }
    }

    fn shard<Q: Hash + ?Sized>(&self, key: &Q) -> MutexGuard<'_, Shard<K, V>> {
        let i = (self.hasher.hash_one(key) as usize) % SHARDS;
        // A panic while holding a shard lock leaves only a cache behind: recover it.
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Looks up by any borrowed form of the key (`&str` for `String` keys: no allocation).
    pub fn get<Q: Hash + Eq + ?Sized>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
    {
        let mut shard = self.shard(key);
        let (value, at) = shard.map.get(key)?;
        if self.ttl.is_some_and(|ttl| at.elapsed() >= ttl) {
            shard.map.remove(key);
            self.len.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(value.clone())
    }

    pub fn generation<Q: Hash + Eq + ?Sized>(&self, key: &Q) -> Generation
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
    pub async fn get_or_load<Q, E>(
        &self,
        key: &Q,
        load: impl std::future::Future<Output = Result<V, E>>,
    ) -> Result<V, E>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        if let Some(v) = self.get(key) {
            return Ok(v);
        }
        let seen = self.generation(key);
        let v = load.await?;
        self.insert_if_unchanged(key.to_owned(), seen, v.clone());
        Ok(v)
    }

    /// Drops the entry and fences off loads that started before this call.
    pub fn invalidate<Q: Hash + Eq + ?Sized>(&self, key: &Q)
    where
        K: Borrow<Q>,
    {
        let mut shard = self.shard(key);
        shard.generation += 1;
        if shard.map.remove(key).is_some() {
            self.len.fetch_sub(1, Ordering::Relaxed);
        }
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
            self.len.fetch_sub(shard.map.len(), Ordering::Relaxed);
            shard.map.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn ttl_and_capacity() {
        let off: ShardedCache<u32, u32> = ShardedCache::new(100, Some(Duration::ZERO));
        off.insert_if_unchanged(1, off.generation(&1), 1);
        assert_eq!(off.get(&1), None);
        let short: ShardedCache<u32, u32> = ShardedCache::new(100, Some(Duration::from_millis(20)));
        short.insert_if_unchanged(1, short.generation(&1), 1);
        assert_eq!(short.get(&1), Some(1));
        std::thread::sleep(Duration::from_millis(30));
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
