//! A bounded, sharded in-memory cache with optional TTL. Each shard has its own short lock (no
//! global lock on the hot path) and a generation counter that makes invalidation race-free: a
//! reader notes the generation before loading from the store and inserts only if no writer
//! invalidated the entry meanwhile, so a stale value can never overwrite a newer change.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

const SHARDS: usize = 64;

struct Shard<K, V> {
    map: HashMap<K, (V, Instant)>,
    generation: u64,
}

pub struct ShardedCache<K, V> {
    shards: Vec<Mutex<Shard<K, V>>>,
    per_shard: usize,
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
            per_shard: if enabled { capacity.div_ceil(SHARDS) } else { 0 },
            ttl,
            hasher: RandomState::new(),
        }
    }

    fn shard(&self, key: &K) -> MutexGuard<'_, Shard<K, V>> {
        let i = (self.hasher.hash_one(key) as usize) % SHARDS;
        // A panic while holding a shard lock leaves only a cache behind: recover it.
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, key: &K) -> Option<V> {
        let mut shard = self.shard(key);
        let (value, at) = shard.map.get(key)?;
        if self.ttl.is_some_and(|ttl| at.elapsed() >= ttl) {
            shard.map.remove(key);
            return None;
        }
        Some(value.clone())
    }

    pub fn generation(&self, key: &K) -> Generation {
        Generation(self.shard(key).generation)
    }

    /// Inserts unless the entry was invalidated since `seen` was taken.
    pub fn insert_if_unchanged(&self, key: K, seen: Generation, value: V) {
        if self.per_shard == 0 {
            return;
        }
        let mut shard = self.shard(&key);
        if shard.generation != seen.0 {
            return;
        }
        if shard.map.len() >= self.per_shard && !shard.map.contains_key(&key) {
            // Evict any one entry: cheap, and good enough for a cache sized above the working set.
            if let Some(victim) = shard.map.keys().next().cloned() {
                shard.map.remove(&victim);
            }
        }
        shard.map.insert(key, (value, Instant::now()));
    }

    /// Drops the entry and fences off loads that started before this call.
    pub fn invalidate(&self, key: &K) {
        let mut shard = self.shard(key);
        shard.generation += 1;
        shard.map.remove(key);
    }

    pub fn clear(&self) {
        for shard in &self.shards {
            let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            shard.generation += 1;
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
}
