//! The node's API keys: persisted as hashes in `system/keys`, held in
//! memory for authentication (a map lookup and one blake3 per call).
//!
//! Managing a key needs `admin` in every namespace it grants, and an
//! operator key for operator keys, so no key can hand out more than it
//! holds.

use super::token::{self, Token};
use super::{Identity, Role};
use crate::error::{Error, ErrorKind, Result};
use crate::names::{Namespace, RecordId};
use crate::proto::{KeyInfo, RoleGrant, StoredKey};
use crate::store::Collection;
use prost::Message;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// What a new key grants.
#[derive(Debug, Clone, Default)]
pub struct KeySpec {
    /// Free text: who or what the key is for.
    pub description: String,
    /// The role in each namespace.
    pub grants: BTreeMap<Namespace, Role>,
    /// Cluster-wide operator.
    pub operator: bool,
    /// The key stops working after this long; None: never.
    pub ttl: Option<Duration>,
}

impl KeySpec {
    /// Parses the grants of a request (a namespace given twice keeps its
    /// highest role).
    pub fn grants_of(grants: &[RoleGrant]) -> Result<BTreeMap<Namespace, Role>> {
        let mut out = BTreeMap::new();
        for (i, g) in grants.iter().enumerate() {
            let ns = Namespace::new(&g.namespace).map_err(|e| e.context(format!("grants[{i}]")))?;
            let role = Role::parse(&g.role).map_err(|e| e.context(format!("grants[{i}]")))?;
            let at: &mut Role = out.entry(ns).or_insert(role);
            *at = (*at).max(role);
        }
        Ok(out)
    }
}

/// A key as held in memory.
struct Held {
    stored: StoredKey,
    identity: Arc<Identity>,
}

impl Held {
    fn of(stored: StoredKey) -> Result<Held> {
        let info = stored.info.clone().unwrap_or_default();
        let identity = Arc::new(Identity {
            key_id: info.id.clone(),
            operator: info.operator,
            grants: KeySpec::grants_of(&info.grants)?,
        });
        Ok(Held { stored, identity })
    }

    fn info(&self) -> &KeyInfo {
        self.stored.info.as_ref().expect("held keys have info")
    }
}

/// Where the bootstrap operator key is, and whether this start made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bootstrap {
    /// The file holding the key.
    pub path: PathBuf,
    /// True when this start generated the key and wrote the file.
    pub created: bool,
}

/// See the module doc.
pub struct Keys {
    store: Arc<Collection>,
    table: RwLock<HashMap<String, Held>>,
    /// Serialises changes, so a revoke cannot interleave with a rotation.
    change: tokio::sync::Mutex<()>,
    changes: tokio::sync::watch::Sender<u64>,
}

impl Keys {
    /// Loads every key from `system/keys`.
    pub async fn load(store: Arc<Collection>) -> Result<Arc<Keys>> {
        let mut held = HashMap::new();
        store
            .scan(|rec, msg| {
                let stored: StoredKey = msg
                    .transcode_to()
                    .map_err(|e| Error::internal(format!("system/keys {:?}: {e}", rec.id)))?;
                let h = Held::of(stored)?;
                held.insert(h.info().id.clone(), h);
                Ok(())
            })
            .await?;
        tracing::debug!(keys = held.len(), "keys loaded");
        Ok(Arc::new(Keys {
            store,
            table: RwLock::new(held),
            change: tokio::sync::Mutex::new(()),
            changes: tokio::sync::watch::channel(0).0,
        }))
    }

    /// Ticks on every change of a key (the mesh passes them on).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// The caller a key names, if it is known, not revoked, not expired and
    /// its secret matches; else UNAUTHENTICATED saying which.
    pub fn authenticate(&self, key: &str, now_us: i64) -> Result<Arc<Identity>> {
        let token = Token::parse(key)?;
        let table = self.table.read().expect("keys lock");
        let held = table.get(&token.id).ok_or_else(|| {
            Error::unauthenticated(format!(
                "no key {} on this node: create one with `collector keys create`",
                token.id
            ))
        })?;
        let s = &held.stored;
        usable(held.info(), now_us)?;
        let current = token::matches(&s.secret_hash, &token);
        let previous =
            now_us < s.previous_valid_until_us && token::matches(&s.previous_hash, &token);
        if !(current || previous) {
            return Err(Error::unauthenticated(format!(
                "the secret of key {} does not match (was it rotated?)",
                token.id
            )));
        }
        Ok(held.identity.clone())
    }

    /// The caller a member names by key id (the member authenticated the
    /// key): UNAUTHENTICATED when this node does not know it, or it was
    /// revoked or expired.
    pub fn caller(&self, id: &str, now_us: i64) -> Result<Arc<Identity>> {
        let table = self.table.read().expect("keys lock");
        let held = table.get(id).ok_or_else(|| {
            Error::unauthenticated(format!(
                "a member forwarded a call of key {:?}, which this node does not know yet",
                crate::names::clip(id)
            ))
        })?;
        usable(held.info(), now_us)?;
        Ok(held.identity.clone())
    }

    /// OK when `by` may create, revoke or rotate a key granting this.
    fn may_manage(by: &Identity, operator: bool, grants: &BTreeMap<Namespace, Role>) -> Result<()> {
        if operator || grants.keys().any(Namespace::is_system) {
            return by.require_operator().map_err(|e| {
                Error::permission_denied(format!(
                    "{}; only an operator manages operator keys and grants in system",
                    e.message
                ))
            });
        }
        if grants.is_empty() && !by.operator {
            return Err(Error::invalid(
                "the key grants nothing: give at least one namespace and role (e.g. shop:read)",
            ));
        }
        for ns in grants.keys() {
            by.require(Role::Admin, ns)?;
        }
        Ok(())
    }

    fn held_info(&self, id: &str) -> Result<StoredKey> {
        self.table
            .read()
            .expect("keys lock")
            .get(id)
            .map(|h| h.stored.clone())
            .ok_or_else(|| {
                Error::not_found(format!(
                    "no key {:?}; `collector keys ls` lists them",
                    crate::names::clip(id)
                ))
            })
    }

    /// Creates a key; its text is returned this once.
    pub async fn create(&self, by: Option<&Identity>, spec: KeySpec) -> Result<(KeyInfo, String)> {
        if let Some(by) = by {
            Self::may_manage(by, spec.operator, &spec.grants)?;
        }
        if spec.description.len() > crate::limits::MAX_KEY_DESCRIPTION_BYTES {
            return Err(Error::invalid(format!(
                "description is {} bytes; give at most {}",
                spec.description.len(),
                crate::limits::MAX_KEY_DESCRIPTION_BYTES
            )));
        }
        let token = Token::generate();
        let now = crate::util::now_us();
        let ttl_us = spec
            .ttl
            .map(|t| i64::try_from(t.as_micros()).unwrap_or(i64::MAX));
        let info = KeyInfo {
            id: token.id.clone(),
            description: spec.description,
            grants: spec
                .grants
                .iter()
                .map(|(ns, r)| RoleGrant {
                    namespace: ns.to_string(),
                    role: r.as_str().to_string(),
                })
                .collect(),
            operator: spec.operator,
            created_at_us: now,
            expires_at_us: ttl_us.map_or(0, |t| now.saturating_add(t)),
            revoked_at_us: 0,
            created_by: by.map(|b| b.key_id.clone()).unwrap_or_default(),
            updated_at_us: now,
        };
        let stored = StoredKey {
            info: Some(info.clone()),
            secret_hash: token.hash().as_bytes().to_vec(),
            ..Default::default()
        };
        let _g = self.change.lock().await;
        self.put(stored, true).await?;
        tracing::info!(key = %info.id, operator = info.operator, by = %info.created_by, "key created");
        Ok((info, token.reveal()))
    }

    /// The keys `by` administers: with a grant in `ns`, or (an operator
    /// giving none) all.
    pub fn list(&self, by: &Identity, ns: Option<&Namespace>) -> Result<Vec<KeyInfo>> {
        match ns {
            Some(ns) => by.require(Role::Admin, ns)?,
            None => by.require_operator().map_err(|e| {
                Error::invalid(format!(
                    "{}: give the namespace whose keys to list",
                    e.message
                ))
            })?,
        }
        let table = self.table.read().expect("keys lock");
        let mut out: Vec<KeyInfo> = table
            .values()
            .filter(|h| ns.is_none_or(|ns| h.identity.grants.contains_key(ns)))
            .map(|h| h.info().clone())
            .collect();
        out.sort_by(|a, b| a.created_at_us.cmp(&b.created_at_us).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    /// What `id` is, for a caller holding it.
    pub fn info(&self, id: &str) -> Result<KeyInfo> {
        Ok(self.held_info(id)?.info.unwrap_or_default())
    }

    /// Revokes a key, for good.
    pub async fn revoke(&self, by: &Identity, id: &str) -> Result<KeyInfo> {
        let _g = self.change.lock().await;
        let mut stored = self.held_info(id)?;
        let info = stored.info.as_mut().expect("held keys have info");
        Self::may_manage(by, info.operator, &KeySpec::grants_of(&info.grants)?)?;
        if info.revoked_at_us == 0 {
            let now = crate::util::now_us();
            info.revoked_at_us = now;
            info.updated_at_us = now;
            let info = info.clone();
            self.put(stored, false).await?;
            tracing::info!(key = %info.id, by = %by.key_id, "key revoked");
            return Ok(info);
        }
        Ok(info.clone())
    }

    /// A new secret for `id`; the old one works for `grace` more.
    pub async fn rotate(
        &self,
        by: &Identity,
        id: &str,
        grace: Duration,
    ) -> Result<(KeyInfo, String)> {
        let _g = self.change.lock().await;
        let mut stored = self.held_info(id)?;
        let info = stored.info.as_mut().expect("held keys have info");
        Self::may_manage(by, info.operator, &KeySpec::grants_of(&info.grants)?)?;
        if info.revoked_at_us != 0 {
            return Err(Error::failed_precondition(format!(
                "key {} is revoked; create a new one",
                info.id
            )));
        }
        let now = crate::util::now_us();
        let token = Token::with_id(info.id.clone());
        info.updated_at_us = now;
        let info = info.clone();
        stored.previous_hash =
            std::mem::replace(&mut stored.secret_hash, token.hash().as_bytes().to_vec());
        stored.previous_valid_until_us =
            now.saturating_add(i64::try_from(grace.as_micros()).unwrap_or(i64::MAX));
        self.put(stored, false).await?;
        tracing::info!(key = %info.id, by = %by.key_id, grace = ?grace, "key rotated");
        Ok((info, token.reveal()))
    }

    /// Every key as stored (the mesh passes them on; hashes only).
    pub fn stored(&self) -> Vec<StoredKey> {
        let table = self.table.read().expect("keys lock");
        table.values().map(|h| h.stored.clone()).collect()
    }

    /// Takes a key a member passed on when it is newer than ours; a
    /// revocation is final. True when it changed anything.
    pub async fn merge(&self, stored: &StoredKey) -> Result<bool> {
        let info = stored
            .info
            .as_ref()
            .ok_or_else(|| Error::invalid("a stored key has no info"))?;
        // None: not wanted; Some(create): newer, and whether it is new here.
        let wanted = |table: &HashMap<String, Held>| match table.get(&info.id) {
            None => Some(true),
            Some(h) => {
                let have = h.info();
                (have.revoked_at_us == 0
                    && (info.revoked_at_us != 0 || info.updated_at_us > have.updated_at_us))
                    .then_some(false)
            }
        };
        // Most views bring nothing new: no lock, no checks, no write.
        if wanted(&self.table.read().expect("keys lock")).is_none() {
            return Ok(false);
        }
        if !token::valid_id(&info.id) {
            return Err(Error::invalid("a stored key has a malformed id"));
        }
        KeySpec::grants_of(&info.grants)?;
        let _g = self.change.lock().await;
        let Some(create) = wanted(&self.table.read().expect("keys lock")) else {
            return Ok(false);
        };
        self.put(stored.clone(), create).await?;
        tracing::debug!(key = %info.id, "key taken from a member");
        Ok(true)
    }

    /// Writes a key's record and takes it into the table.
    async fn put(&self, stored: StoredKey, create: bool) -> Result<()> {
        let info = stored.info.as_ref().expect("keys have info");
        let id = RecordId::new(&info.id)?;
        self.store
            .put_encoded(id, &stored.encode_to_vec(), create)
            .await?;
        let held = Held::of(stored)?;
        self.table
            .write()
            .expect("keys lock")
            .insert(held.info().id.clone(), held);
        self.changes.send_modify(|n| *n += 1);
        Ok(())
    }

    /// The bootstrap operator key. When `path` holds a key that this node
    /// does not know, it is taken in as an operator key (so every member of
    /// a mesh can be given the same one); when there is no file and no key
    /// at all (a first start), one is generated and written there, readable
    /// only by its owner. None when there is neither file nor need.
    pub async fn bootstrap(&self, path: &Path) -> Result<Option<Bootstrap>> {
        let p = path.to_path_buf();
        let text = tokio::task::spawn_blocking(move || std::fs::read_to_string(&p))
            .await
            .map_err(|e| Error::internal(format!("read task: {e}")))?;
        match text {
            Ok(text) => {
                let token = Token::parse(&text).map_err(|_| {
                    Error::invalid(format!(
                        "{} does not hold an API key (ck_<id>_<secret>); fix or remove it",
                        path.display()
                    ))
                })?;
                let known = self
                    .table
                    .read()
                    .expect("keys lock")
                    .contains_key(&token.id);
                if !known {
                    self.adopt(&token, "operator key from the bootstrap file")
                        .await?;
                }
                Ok(Some(Bootstrap {
                    path: path.to_path_buf(),
                    created: false,
                }))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if !self.table.read().expect("keys lock").is_empty() {
                    return Ok(None);
                }
                let token = Token::generate();
                let (p, text) = (path.to_path_buf(), token.reveal());
                tokio::task::spawn_blocking(move || write_private(&p, text.as_bytes()))
                    .await
                    .map_err(|e| Error::internal(format!("write task: {e}")))??;
                self.adopt(&token, "bootstrap operator key").await?;
                Ok(Some(Bootstrap {
                    path: path.to_path_buf(),
                    created: true,
                }))
            }
            Err(e) => Err(Error::internal(format!("{}: {e}", path.display()))),
        }
    }

    async fn adopt(&self, token: &Token, description: &str) -> Result<()> {
        let now = crate::util::now_us();
        let stored = StoredKey {
            info: Some(KeyInfo {
                id: token.id.clone(),
                description: description.to_string(),
                operator: true,
                created_at_us: now,
                updated_at_us: now,
                ..Default::default()
            }),
            secret_hash: token.hash().as_bytes().to_vec(),
            ..Default::default()
        };
        let _g = self.change.lock().await;
        match self.put(stored, true).await {
            Err(e) if e.kind == ErrorKind::AlreadyExists => Ok(()),
            r => r,
        }
    }
}

/// OK while a key is neither revoked nor expired; else UNAUTHENTICATED
/// saying which.
fn usable(info: &KeyInfo, now_us: i64) -> Result<()> {
    if info.revoked_at_us != 0 {
        return Err(Error::unauthenticated(format!(
            "key {} was revoked",
            info.id
        )));
    }
    if info.expires_at_us != 0 && now_us >= info.expires_at_us {
        return Err(Error::unauthenticated(format!("key {} expired", info.id)));
    }
    Ok(())
}

/// Writes a file only its owner can read, so that a crash leaves the old
/// file or the whole new one. Blocks.
fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}
