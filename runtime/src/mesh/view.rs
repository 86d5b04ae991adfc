//! A snapshot of the mesh: who is there, alive or not, and what each member
//! owns and holds. Built from the gossiped key/values of every member (see
//! `keys`), read by routing without locks held across awaits.

use std::collections::BTreeMap;

/// How this node sees a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberState {
    /// The node itself.
    Myself,
    /// Heard from recently (the failure detector's verdict).
    Alive,
    /// Missed its heartbeats, or not confirmed alive yet.
    Dead,
}

/// A collection a member owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedCollection {
    /// The collection's namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Full name of its message type.
    pub message_type: String,
    /// When it was created (µs since the epoch), to settle a name taken twice.
    pub created_us: i64,
}

/// The collections a member owns, by (namespace, name), and their digest.
/// Gossip carries only the digest (`keys::COLLECTIONS`); a member whose
/// digest changed is asked for its list, so gossip does not grow with the
/// number of collections.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Owned {
    by_name: BTreeMap<(String, String), OwnedCollection>,
    digest: String,
}

impl Owned {
    /// The list `colls` (a name listed twice: the last wins).
    pub fn new(colls: impl IntoIterator<Item = OwnedCollection>) -> Self {
        let by_name: BTreeMap<_, _> = colls
            .into_iter()
            .map(|c| ((c.namespace.clone(), c.name.clone()), c))
            .collect();
        let digest = digest(by_name.values());
        Owned { by_name, digest }
    }

    /// `count:hash` of the list, as gossiped.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// The collection `namespace/name`, if owned.
    pub fn get(&self, namespace: &str, name: &str) -> Option<&OwnedCollection> {
        // BTreeMap<(String, String)> cannot be searched by (&str, &str)
        // without owning the key; a range over the namespace can.
        self.by_name
            .range((namespace.to_string(), name.to_string())..)
            .next()
            .filter(|((ns, n), _)| ns == namespace && n == name)
            .map(|(_, c)| c)
    }

    /// Every owned collection, in (namespace, name) order.
    pub fn iter(&self) -> impl Iterator<Item = &OwnedCollection> {
        self.by_name.values()
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// True if none.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

/// `count:hash` of a list of collections, whatever its order: the XOR of
/// each entry's blake3 (its namespace, name, creation time and type).
pub fn digest<'a>(colls: impl Iterator<Item = &'a OwnedCollection>) -> String {
    let mut acc = [0u8; 16];
    let mut n = 0usize;
    for c in colls {
        let mut h = blake3::Hasher::new();
        for part in [
            c.namespace.as_bytes(),
            c.name.as_bytes(),
            c.message_type.as_bytes(),
        ] {
            h.update(&(part.len() as u64).to_le_bytes());
            h.update(part);
        }
        h.update(&c.created_us.to_le_bytes());
        for (a, b) in acc.iter_mut().zip(h.finalize().as_bytes()) {
            *a ^= b;
        }
        n += 1;
    }
    format!("{n}:{}", crate::util::hex(&acc))
}

/// A handler version a member has; `removed` marks an unregistration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerVersion {
    /// The service's namespace.
    pub namespace: String,
    /// Full service name.
    pub service: String,
    /// The component's sha256 (empty for an unregistration).
    pub sha256: String,
    /// When it was registered or unregistered (µs since the epoch).
    pub registered_at_us: i64,
    /// True for an unregistration.
    pub removed: bool,
}

impl HandlerVersion {
    /// The order in which versions supersede each other: later registration
    /// time wins, the hash breaks ties so every node picks the same one.
    pub fn rank(&self) -> (i64, bool, &str) {
        (self.registered_at_us, self.removed, &self.sha256)
    }
}

/// One member of the mesh.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    /// The member's persistent id.
    pub node_id: String,
    /// gRPC host:port.
    pub address: String,
    /// Alive or dead, as the failure detector says.
    pub state: MemberState,
    /// Start time of this incarnation (microseconds since the epoch).
    pub started_us: i64,
    /// The collections it owns, as last fetched (possibly behind
    /// `collections_digest` until the next fetch).
    pub collections: std::sync::Arc<Owned>,
    /// The digest of its collections it gossips (`Owned::digest`).
    pub collections_digest: String,
    /// The handler versions it has.
    pub handlers: Vec<HandlerVersion>,
    /// The API keys it holds (hashes only), for every member to take in.
    pub api_keys: Vec<crate::proto::StoredKey>,
    /// The quota overrides it holds.
    pub quotas: Vec<crate::proto::NamespaceQuota>,
}

impl Member {
    /// True for this node and for members the failure detector trusts.
    pub fn reachable(&self) -> bool {
        self.state != MemberState::Dead
    }
}

/// The gossiped key/value layout of a member's state.
pub mod keys {
    use super::HandlerVersion;

    /// The member's gRPC address.
    pub const ADDRESS: &str = "grpc";
    /// Start time of the member's incarnation, microseconds.
    pub const STARTED: &str = "started";
    /// The digest of the collections the member owns (`Owned::digest`).
    pub const COLLECTIONS: &str = "cs";
    /// Prefix of handler versions: `s:<ns>/<service>` = `<sha256>:<registered_at_us>`,
    /// or `-:<unregistered_at_us>` for an unregistration.
    pub const SERVICE: &str = "s:";
    /// Prefix of API keys: `k:<id>` = the StoredKey, protobuf in base64.
    pub const API_KEY: &str = "k:";
    /// Prefix of quota overrides: `q:<ns>` = the NamespaceQuota, protobuf
    /// in base64.
    pub const QUOTA: &str = "q:";

    /// A message as a gossip value.
    fn encoded(m: &impl prost::Message) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(m.encode_to_vec())
    }

    /// Parses a value `encoded` made; None if malformed.
    pub fn decoded<M: prost::Message + Default>(value: &str) -> Option<M> {
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(value)
            .ok()?;
        M::decode(bytes.as_slice()).ok()
    }

    /// The key and value publishing an API key (its hash, never a secret).
    pub fn api_key(k: &crate::proto::StoredKey) -> (String, String) {
        let id = k.info.as_ref().map(|i| i.id.as_str()).unwrap_or_default();
        (format!("{API_KEY}{id}"), encoded(k))
    }

    /// The key and value publishing a quota override.
    pub fn quota(q: &crate::proto::NamespaceQuota) -> (String, String) {
        (format!("{QUOTA}{}", q.namespace), encoded(q))
    }

    /// The key and value publishing a handler version.
    pub fn handler(h: &HandlerVersion) -> (String, String) {
        let sha = if h.removed { "-" } else { h.sha256.as_str() };
        (
            format!("{SERVICE}{}/{}", h.namespace, h.service),
            format!("{sha}:{}", h.registered_at_us),
        )
    }

    /// Parses an `s:` key/value (the prefix already stripped); None if malformed.
    pub fn parse_handler(key: &str, value: &str) -> Option<HandlerVersion> {
        let (namespace, service) = key.split_once('/')?;
        let (sha, at) = value.split_once(':')?;
        Some(HandlerVersion {
            namespace: namespace.to_string(),
            service: service.to_string(),
            sha256: if sha == "-" {
                String::new()
            } else {
                sha.to_string()
            },
            registered_at_us: at.parse().ok()?,
            removed: sha == "-",
        })
    }
}

/// The mesh as this node sees it at one moment.
#[derive(Debug, Clone, Default)]
pub struct View {
    /// Members by node id (this node included).
    pub members: BTreeMap<String, Member>,
    /// The id of the node whose view this is.
    pub self_id: String,
}

impl View {
    /// A member by node id.
    pub fn member(&self, node_id: &str) -> Option<&Member> {
        self.members.get(node_id)
    }

    /// True while an alive member's list of collections is behind the
    /// digest it gossips (a fetch is due or under way).
    pub fn catching_up(&self) -> bool {
        self.members.values().any(|m| {
            m.state == MemberState::Alive
                && !m.collections_digest.is_empty()
                && m.collections.digest() != m.collections_digest
        })
    }

    /// The owner of a collection: a reachable publisher if there is one
    /// (a dead node's gossip may still list a collection re-created
    /// elsewhere), the earliest created among them, then the smallest node id.
    pub fn owner(&self, namespace: &str, name: &str) -> Option<&Member> {
        self.members
            .values()
            .filter_map(|m| {
                m.collections
                    .get(namespace, name)
                    .map(|c| (m, c.created_us))
            })
            .min_by_key(|(m, created)| (!m.reachable(), *created, m.node_id.clone()))
            .map(|(m, _)| m)
    }

    /// The newest version of a service anywhere in the mesh (an
    /// unregistration included), if any member has heard of it.
    pub fn newest(&self, namespace: &str, service: &str) -> Option<&HandlerVersion> {
        self.members
            .values()
            .flat_map(|m| m.handlers.iter())
            .filter(|h| h.namespace == namespace && h.service == service)
            .max_by(|a, b| a.rank().cmp(&b.rank()))
    }

    /// Reachable members other than this node that have `version`: the same
    /// component *and* registration time, since a node holding an older
    /// registration of the same bytes has that registration's grants and
    /// limits, not the newer ones.
    pub fn holders<'a>(&'a self, version: &'a HandlerVersion) -> impl Iterator<Item = &'a Member> {
        self.members.values().filter(move |m| {
            m.node_id != self.self_id
                && m.reachable()
                && m.handlers.iter().any(|h| {
                    !h.removed
                        && h.namespace == version.namespace
                        && h.service == version.service
                        && h.sha256 == version.sha256
                        && h.registered_at_us == version.registered_at_us
                })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, state: MemberState, colls: &[(&str, i64)]) -> Member {
        Member {
            node_id: id.into(),
            address: format!("{id}:1"),
            state,
            started_us: 0,
            collections: std::sync::Arc::new(Owned::new(colls.iter().map(|(n, at)| {
                OwnedCollection {
                    namespace: "ns".into(),
                    name: n.to_string(),
                    message_type: "t.M".into(),
                    created_us: *at,
                }
            }))),
            collections_digest: String::new(),
            handlers: vec![],
            api_keys: vec![],
            quotas: vec![],
        }
    }

    #[test]
    fn keys_round_trip() {
        for removed in [false, true] {
            let h = HandlerVersion {
                namespace: "shop".into(),
                service: "shop.Orders".into(),
                sha256: if removed {
                    String::new()
                } else {
                    "ab12".into()
                },
                registered_at_us: 7,
                removed,
            };
            let (k, v) = keys::handler(&h);
            assert_eq!(
                keys::parse_handler(k.strip_prefix(keys::SERVICE).unwrap(), &v),
                Some(h)
            );
        }
        assert_eq!(keys::parse_handler("no-slash", "x:1"), None);
    }

    /// The digest does not depend on order, and changes with any field.
    #[test]
    fn a_digest_names_the_list_whatever_its_order() {
        let c = |ns: &str, name: &str, ty: &str, at: i64| OwnedCollection {
            namespace: ns.into(),
            name: name.into(),
            message_type: ty.into(),
            created_us: at,
        };
        let a = [c("ns", "x", "t.M", 1), c("ns", "y", "t.M", 2)];
        let b = [c("ns", "y", "t.M", 2), c("ns", "x", "t.M", 1)];
        assert_eq!(digest(a.iter()), digest(b.iter()));
        assert!(digest(a.iter()).starts_with("2:"));
        for other in [
            [c("ns", "x", "t.M", 1), c("ns", "y", "t.M", 3)],
            [c("ns", "x", "t.M", 1), c("ns", "y", "t.N", 2)],
            [c("ns", "x", "t.M", 1), c("nt", "y", "t.M", 2)],
            // Parts that run together differ too.
            [c("ns", "x", "t.M", 1), c("nsy", "", "t.M", 2)],
        ] {
            assert_ne!(digest(a.iter()), digest(other.iter()));
        }
        assert_eq!(Owned::new(a.clone()).get("ns", "y"), Some(&a[1]));
        assert_eq!(Owned::new(a.clone()).get("ns", "z"), None);
        assert_eq!(Owned::new(a).get("n", "sx"), None);
    }

    #[test]
    fn owner_prefers_reachable_then_earliest() {
        let mut v = View {
            self_id: "a".into(),
            ..Default::default()
        };
        for m in [
            member("a", MemberState::Myself, &[("x", 5)]),
            member("b", MemberState::Dead, &[("x", 1), ("y", 1)]),
            member("c", MemberState::Alive, &[("x", 3), ("z", 2)]),
        ] {
            v.members.insert(m.node_id.clone(), m);
        }
        assert_eq!(v.owner("ns", "x").unwrap().node_id, "c");
        assert_eq!(
            v.owner("ns", "y").unwrap().node_id,
            "b",
            "dead owner still named"
        );
        assert_eq!(v.owner("ns", "z").unwrap().node_id, "c");
        assert!(v.owner("ns", "nope").is_none());
        assert!(v.owner("other", "x").is_none());
    }

    #[test]
    fn newest_version_wins_and_holders_have_it() {
        let mut v = View {
            self_id: "a".into(),
            ..Default::default()
        };
        let h = |sha: &str, at: i64, removed: bool| HandlerVersion {
            namespace: "ns".into(),
            service: "t.S".into(),
            sha256: sha.into(),
            registered_at_us: at,
            removed,
        };
        let mut a = member("a", MemberState::Myself, &[]);
        a.handlers.push(h("old", 1, false));
        let mut b = member("b", MemberState::Alive, &[]);
        b.handlers.push(h("new", 2, false));
        let mut c = member("c", MemberState::Dead, &[]);
        c.handlers.push(h("new", 2, false));
        for m in [a, b, c] {
            v.members.insert(m.node_id.clone(), m);
        }
        let newest = v.newest("ns", "t.S").unwrap().clone();
        assert_eq!(newest.sha256, "new");
        let holders: Vec<_> = v.holders(&newest).map(|m| m.node_id.clone()).collect();
        assert_eq!(holders, vec!["b"], "dead members and self are not sources");

        // The same bytes registered again later (new grants or limits): a
        // node with only the older registration is no source of the newer.
        let mut d = member("d", MemberState::Alive, &[]);
        d.handlers.push(h("new", 5, false));
        v.members.insert("d".into(), d);
        let newest = v.newest("ns", "t.S").unwrap().clone();
        assert_eq!(
            (newest.sha256.as_str(), newest.registered_at_us),
            ("new", 5)
        );
        let holders: Vec<_> = v.holders(&newest).map(|m| m.node_id.clone()).collect();
        assert_eq!(holders, vec!["d"]);
        v.members.remove("d");

        // An unregistration after the newest version supersedes it.
        v.members.get_mut("b").unwrap().handlers = vec![h("", 3, true)];
        assert!(v.newest("ns", "t.S").unwrap().removed);
    }
}
