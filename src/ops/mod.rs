//! The operations: one `Kms` value holds the store, the HSM, the caches and the config, and is
//! shared by reference. Nothing here knows about gRPC.

mod aliases;
mod authorize;
mod cache;
mod crypto;
pub mod data_dir;
mod data_key_pair;
mod deletion;
mod grant_check;
mod grants;
mod key_policy;
mod keys;
mod mac;
mod material;
mod paging;
mod private_key;
mod signing;
mod sweep;
mod tags;

use std::path::Path;
use std::sync::{Arc, Weak};
use std::time::Duration;

use cryptoki::types::AuthPin;
use ring::rand::SystemRandom;

use crate::audit::{AuditEvent, AuditLog};
use crate::auth::IdentityStore;
use crate::config::Config;
use crate::error::{KmsError, Result};
use crate::hsm::{Hsm, RootKey};
use crate::keys::key_ref::{Accept, ArnScope, KeyRef};
use crate::keys::{KeyRecord, KeyState, MaterialRecord};
use crate::policy::{self, Policy};
use crate::store::{SqliteStore, Store};
pub use authorize::Access;
use cache::ShardedCache;
pub use crypto::{DataKeySpec, Decrypted, ReEncrypted};
pub use data_key_pair::DataKeyPair;
pub use deletion::spawn_deletion_task;
pub use grants::{CreateGrantInput, CreatedGrant};
pub use keys::CreateKeyInput;
pub use material::Material;
pub use paging::Page;
pub use signing::{PublicKeyInfo, SignInput, Signed};
pub use sweep::spawn_material_sweep;

/// A blocking task that didn't finish: it panicked, or the runtime shut down before it ran.
fn not_run(what: &str, e: tokio::task::JoinError) -> KmsError {
    if e.is_panic() {
        KmsError::internal(format!("{what} panicked"))
    } else {
        KmsError::internal("the service is shutting down")
    }
}

pub struct Kms {
    /// This service itself, for work that must finish after a cancelled request (see `write`).
    me: Weak<Kms>,
    store: Arc<dyn Store>,
    hsm: Arc<Hsm>,
    scope: ArnScope,
    audit: AuditLog,
    rng: SystemRandom,
    keys: ShardedCache<String, Arc<KeyRecord>>,
    aliases: ShardedCache<String, String>,
    /// Each key's alias names (kms:ResourceAliases), loaded only for policies that read them.
    key_aliases: ShardedCache<String, Arc<[String]>>,
    /// Each key's tags (aws:ResourceTag/*), loaded only for policies that read them.
    key_tags: ShardedCache<String, Arc<[crate::keys::Tag]>>,
    materials: ShardedCache<(String, u32), Arc<Material>>,
    /// Wrapped materials as stored: not secret, so kept whatever the TTL of unwrapped material;
    /// with the material cache off a request then costs an HSM unwrap but no store read.
    wrapped: ShardedCache<(String, u32), Arc<MaterialRecord>>,
    policies: ShardedCache<String, Arc<Policy>>,
    /// Decides actions on no particular key: the default key policy of this server's account,
    /// which defers to identity policies (and lets the account's root principal do anything).
    account_policy: Policy,
    identity: IdentityStore,
    deletion_interval: Duration,
    /// A key's grants to one grantee, by (key id, grantee principal): a request authorized by a
    /// grant reads only its caller's, however many grants the key has. A grant's creation, retiring
    /// or revocation invalidates only its own grantee's entry.
    grants: ShardedCache<(String, String), Arc<Vec<grant_check::CheckedGrant>>>,
    /// Turns for key pair generation (`generation`, up to seconds each): as many as there are
    /// cores, so a burst of RSA-4096 generations waits here instead of filling the blocking pool
    /// that every store call needs. Sign, Verify and RSA decryption don't wait behind them.
    generation_turns: Arc<tokio::sync::Semaphore>,
    /// Private-key operations running at once (`cpu`): one per core.
    cpu_turns: Arc<tokio::sync::Semaphore>,
    /// Held for the server's life (`data_dir::claim`).
    /// Deletions whose DeleteKey record is durable but which the store still lists as unaudited
    /// (forgetting them failed): the next pass only forgets them, so a failing store doesn't
    /// write the record once a pass.
    deletions_recorded: std::sync::Mutex<std::collections::HashSet<crate::audit::RequestId>>,
    _data_dir_lock: data_dir::Claim,
}

impl Kms {
    /// Opens the store in the data directory, the HSM and the audit log. Errors are for the operator.
    pub fn open(config: &Config, pin: AuthPin) -> std::result::Result<Arc<Kms>, String> {
        config.validate()?;
        // A file that doesn't load stops it before anything is created.
        let identity = IdentityStore::open(config.auth.identity_policies_file.clone())?;
        data_dir::create_durably(&config.data_dir)
            .map_err(|e| format!("cannot create data directory {}: {e}", config.data_dir.display()))?;
        let data_dir_lock = data_dir::claim(&config.data_dir)?;
        // The HSM first, the store's preparation (a migration) after: a start that fails at the
        // HSM (a wrong PIN, an HSM away) leaves a store an older build can still open.
        let db = config.data_dir.join("kms.db");
        let empty = SqliteStore::holds_no_keys(&db)?;
        let (hsm, root) = Hsm::open(&config.hsm, pin, empty)?;
        let store = SqliteStore::open(&db)?;
        if root == RootKey::Created {
            tracing::warn!(token = %config.hsm.token_label, key_id = %config.hsm.root_key_id, "created a new root key in the HSM");
        }
        tracing::info!(vendor = hsm.quirks().vendor, "HSM ready");
        let audit = AuditLog::open(&config.data_dir.join("audit.log"))?;
        let ttl = Duration::from_secs(config.cache.material_ttl_seconds);
        let account_policy =
            Policy::parse_key_policy(&policy::default_key_policy_in(&config.partition, &config.account_id))
                .map_err(|e| e.to_string())?;
        Ok(Arc::new_cyclic(|me| Kms {
            me: me.clone(),
            store: Arc::new(store),
            hsm: Arc::new(hsm),
            scope: ArnScope::new(&config.partition, &config.region, &config.account_id),
            audit,
            rng: SystemRandom::new(),
            keys: ShardedCache::new(config.cache.metadata_capacity, None),
            aliases: ShardedCache::new(config.cache.metadata_capacity, None),
            key_aliases: ShardedCache::new(config.cache.metadata_capacity, None),
            key_tags: ShardedCache::new(config.cache.metadata_capacity, None),
            materials: ShardedCache::new(config.cache.material_capacity, Some(ttl)),
            wrapped: ShardedCache::new(config.cache.metadata_capacity, None),
            policies: ShardedCache::new(config.cache.metadata_capacity, None),
            account_policy,
            identity,
            deletion_interval: Duration::from_secs(config.deletion.check_interval_seconds),
            grants: ShardedCache::new(config.cache.metadata_capacity, None),
            generation_turns: Arc::new(tokio::sync::Semaphore::new(cores())),
            cpu_turns: Arc::new(tokio::sync::Semaphore::new(cores())),
            deletions_recorded: Default::default(),
            _data_dir_lock: data_dir_lock,
        }))
    }

    pub fn scope(&self) -> &ArnScope {
        &self.scope
    }

    pub fn key_arn(&self, key_id: &str) -> String {
        self.scope.key_arn(key_id)
    }

    /// At shutdown: logs the count of audit records refused since the last warning.
    pub fn report_refused_audit_records(&self) {
        self.audit.report_refused_now();
    }

    /// Whether an HSM call or an audit record that a request waits for is under way (a stopping
    /// server waits for those).
    pub fn requests_waiting_on_hsm_or_audit(&self) -> bool {
        self.hsm.calls_under_way() > 0 || self.audit.bytes_waiting() > 0
    }

    /// Resolves when the audit writer has ended (see `AuditLog::writer_ended`).
    pub fn audit_writer_ended(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.audit.writer_ended()
    }

    /// Appends the request's audit record and waits until it is durable.
    pub async fn audit(&self, event: &AuditEvent) -> Result<()> {
        self.audit.record(event).await
    }

    /// Before a state change: the request's record, outcome `Started`, durable before anything
    /// changes (as Vault logs a request before serving it). The outcome record follows when the
    /// request is answered. If the trail can't take it, the request fails and nothing changed:
    /// otherwise a full or failing disk would let changes through with no record of them, and a
    /// crash between the commit and the outcome record would leave a change without a trace.
    async fn audit_intent(&self, ev: &mut AuditEvent) -> Result<()> {
        if ev.started {
            return Ok(()); // a retry of the same change (UpdateAlias, DeleteAlias)
        }
        let mut intent = ev.clone();
        intent.outcome = crate::audit::STARTED;
        self.audit.record(&intent).await?;
        ev.started = true;
        Ok(())
    }

    /// Runs a blocking store call on the blocking pool.
    async fn store<T: Send + 'static>(&self, f: impl FnOnce(&dyn Store) -> Result<T> + Send + 'static) -> Result<T> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(store.as_ref()))
            .await
            .map_err(|e| not_run("a store call", e))?
    }

    /// Runs a store write on the blocking pool and then `invalidate`s the caches it makes stale,
    /// both on that thread. A request cancelled mid-write (a client deadline, a reset stream) drops
    /// its future, so an invalidation after the `.await` would be skipped while the write still
    /// lands, leaving a stale entry for good; here the invalidation always follows the write.
    ///
    /// The request's record goes to the audit trail first (`audit_intent`): no change is made
    /// that the trail has not taken.
    async fn write<T: Send + 'static>(
        &self,
        ev: &mut AuditEvent,
        f: impl FnOnce(&dyn Store) -> Result<T> + Send + 'static,
        invalidate: impl FnOnce(&Kms) + Send + 'static,
    ) -> Result<T> {
        self.write_then(ev, f, move |k, _| invalidate(k)).await
    }

    /// `write`, with an invalidation that depends on what the write did (a deleted grant's grantee).
    async fn write_then<T: Send + 'static>(
        &self,
        ev: &mut AuditEvent,
        f: impl FnOnce(&dyn Store) -> Result<T> + Send + 'static,
        invalidate: impl FnOnce(&Kms, &Result<T>) + Send + 'static,
    ) -> Result<T> {
        self.audit_intent(ev).await?;
        let me = self
            .me
            .upgrade()
            .ok_or_else(|| KmsError::internal("the service is shutting down"))?;
        tokio::task::spawn_blocking(move || {
            let result = f(me.store.as_ref());
            invalidate(&me, &result);
            result
        })
        .await
        .map_err(|e| not_run("a store call", e))?
    }

    /// Runs CPU-heavy work (private-key operations: up to milliseconds) on the blocking pool, so it
    /// never stalls the async reactor, once one of `cpu_turns` (one per core) is free. Without the
    /// turns, hundreds of RSA-4096 signatures in flight would take hundreds of blocking threads
    /// and starve the store calls and HSM calls every other request needs; waiting callers
    /// instead wait here, and can give up.
    async fn cpu<T: Send + 'static>(&self, f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
        let turn = turn(&self.cpu_turns).await?;
        run_blocking(turn, f, "a private-key operation").await
    }

    /// Runs a key pair generation (up to seconds) as `cpu` does, but on turns of its own
    /// (`generation_turns`), so generations can't hold off every signature meanwhile.
    async fn generation<T: Send + 'static>(&self, f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
        let turn = turn(&self.generation_turns).await?;
        run_blocking(turn, f, "a key pair generation").await
    }

    /// Resolves a `KeyId` parameter to its key and authorizes `access` on it.
    async fn resolve(
        &self,
        access: Access<'_>,
        field: &str,
        input: &str,
        accept: Accept,
        ev: &mut AuditEvent,
    ) -> Result<Arc<KeyRecord>> {
        let key = self.lookup(field, input, accept, ev).await?;
        self.authorize(ev, &access, &key).await?;
        Ok(key)
    }

    /// Resolves a `KeyId` parameter to its key, through the caches, without authorizing.
    async fn lookup(&self, field: &str, input: &str, accept: Accept, ev: &mut AuditEvent) -> Result<Arc<KeyRecord>> {
        let key_id = match self.scope.parse(field, input, accept)? {
            KeyRef::Key(id) => {
                // kms:RequestAlias is the alias that named *this* key (ReEncrypt names two).
                ev.request_alias = None;
                id
            }
            KeyRef::Alias(name) => {
                let id = self.alias_target(&name).await?;
                ev.request_alias = Some(name);
                id
            }
        };
        ev.key_arn = Some(self.key_arn(&key_id));
        self.key(&key_id)
            .await?
            .ok_or_else(|| KmsError::NotFound(format!("Key '{}' does not exist", self.key_arn(&key_id))))
    }

    /// Reloads identity policies (SIGHUP); on error the previous ones stay in force.
    pub fn reload_identity_policies(&self) -> std::result::Result<(), String> {
        self.identity.reload()
    }

    async fn alias_target(&self, name: &str) -> Result<String> {
        self.aliases
            .get_or_load(name, async {
                let owned = name.to_string();
                let stored = self.store(move |s| s.get_alias(&owned)).await?;
                stored
                    .map(|a| a.target_key_id)
                    .ok_or_else(|| KmsError::NotFound(format!("Alias {} is not found.", self.scope.alias_arn(name))))
            })
            .await
    }

    async fn key(&self, key_id: &str) -> Result<Option<Arc<KeyRecord>>> {
        if let Some(k) = self.keys.get(key_id) {
            return Ok(Some(k));
        }
        let seen = self.keys.generation(key_id);
        let owned = key_id.to_string();
        let Some(record) = self.store(move |s| s.get_key(&owned)).await? else {
            return Ok(None);
        };
        let record = Arc::new(record);
        self.keys.insert_if_unchanged(key_id.to_string(), seen, record.clone());
        Ok(Some(record))
    }

    /// Changes a key in the store and invalidates its cached record.
    async fn update_key(
        &self,
        ev: &mut AuditEvent,
        key_id: &str,
        mut change: impl FnMut(&mut KeyRecord) -> Result<()> + Send + 'static,
    ) -> Result<KeyRecord> {
        let owned = key_id.to_string();
        self.write_then(ev, move |s| s.update_key(&owned, &mut change), {
            let key_id = key_id.to_string();
            move |k: &Kms, result: &Result<KeyRecord>| {
                k.keys.invalidate(&key_id);
                if result.as_ref().is_ok_and(|r| r.state != KeyState::Enabled) {
                    // Never served in this state (every use checks it first); not kept in memory
                    // either. Here, not after the await: a cancelled request skips that.
                    k.materials.invalidate_group(&key_id);
                }
            }
        })
        .await
    }

    /// After a material load: drops the key's materials if the key is no longer enabled. A load
    /// that began on a key record read before a DisableKey or ScheduleKeyDeletion, and after that
    /// change dropped the materials, would cache the material again. The change drops them right
    /// after its commit, so either that comes after this load's insert, or this check, which
    /// reads the key afresh once the change invalidated its record, sees the new state.
    /// The check runs in a task of its own, so a request cancelled while it reads the store (a
    /// client's deadline) can't skip it; a key whose state can't be read loses its materials too
    /// (the next use unwraps again).
    pub(super) async fn drop_material_unless_enabled(&self, key_id: &str) {
        let Some(me) = self.me.upgrade() else {
            return self.materials.invalidate_group(key_id);
        };
        let key_id = key_id.to_string();
        let check = tokio::spawn(async move {
            if !matches!(me.key(&key_id).await, Ok(Some(key)) if key.state == KeyState::Enabled) {
                me.materials.invalidate_group(&key_id);
            }
        });
        // Only to answer after it: the task runs on without this request.
        let _ = check.await;
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

async fn turn(turns: &Arc<tokio::sync::Semaphore>) -> Result<tokio::sync::OwnedSemaphorePermit> {
    turns
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| KmsError::internal("the service is shutting down"))
}

/// Runs `f` on the blocking pool holding `turn`. The turn goes with the work: a caller that gives
/// up while it runs doesn't free its turn.
async fn run_blocking<T: Send + 'static>(
    turn: tokio::sync::OwnedSemaphorePermit,
    f: impl FnOnce() -> Result<T> + Send + 'static,
    what: &str,
) -> Result<T> {
    tokio::task::spawn_blocking(move || {
        let _turn = turn;
        f()
    })
    .await
    .map_err(|e| not_run(what, e))?
}

/// Refuses keys pending deletion, for the calls AWS refuses in that state.
fn refuse_pending_deletion(arn: &str, k: &KeyRecord) -> Result<()> {
    if k.state == KeyState::PendingDeletion {
        return Err(KmsError::InvalidState(format!("{arn} is pending deletion.")));
    }
    Ok(())
}

/// Reads the HSM user PIN from the configured file or environment variable.
pub fn read_pin(config: &crate::config::HsmConfig) -> std::result::Result<AuthPin, String> {
    let pin = zeroize::Zeroizing::new(match &config.pin_file {
        Some(path) => read_pin_file(path)?,
        None => std::env::var(&config.pin_env).map_err(|_| {
            format!(
                "no HSM PIN: set hsm.pin_file or the environment variable {}",
                config.pin_env
            )
        })?,
    });
    let pin = pin.trim_end_matches(['\n', '\r']);
    if pin.is_empty() {
        return Err("the HSM PIN is empty".into());
    }
    // The only copy left is the AuthPin (a SecretString, wiped on drop).
    Ok(AuthPin::from(pin.to_string()))
}

fn read_pin_file(path: &Path) -> std::result::Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read the HSM PIN file {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Work runs on the blocking pool no more than `turns` at a time, and each holds its turn until
    /// it has finished, even when its caller gave up.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cpu_work_runs_at_most_one_per_turn() {
        let turns = Arc::new(tokio::sync::Semaphore::new(2));
        let (running, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let work = |running: Arc<AtomicUsize>, most: Arc<AtomicUsize>| {
            move || {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(20));
                running.fetch_sub(1, Ordering::SeqCst);
                Ok(())
            }
        };
        // One caller gives up at once: its work still holds its turn while it runs.
        let abandoned = turn(&turns).await.unwrap();
        drop(tokio::spawn(run_blocking(
            abandoned,
            work(running.clone(), most.clone()),
            "w",
        )));
        let calls: Vec<_> = (0..8)
            .map(|_| {
                let (turns, w) = (turns.clone(), work(running.clone(), most.clone()));
                tokio::spawn(async move { run_blocking(turn(&turns).await?, w, "w").await })
            })
            .collect();
        for c in calls {
            c.await.unwrap().unwrap();
        }
        assert_eq!(most.load(Ordering::SeqCst), 2);
    }
}
