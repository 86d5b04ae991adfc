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
    /// The collections it owns.
    pub collections: Vec<OwnedCollection>,
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
    use super::{HandlerVersion, OwnedCollection};

    /// The member's gRPC address.
    pub const ADDRESS: &str = "grpc";
    /// Start time of the member's incarnation, microseconds.
    pub const STARTED: &str = "started";
    /// Prefix of owned collections: `c:<ns>/<name>` = `<created_us>:<type>`.
    pub const COLLECTION: &str = "c:";
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

    /// The key and value publishing an owned collection.
    pub fn collection(c: &OwnedCollection) -> (String, String) {
        (
            format!("{COLLECTION}{}/{}", c.namespace, c.name),
            format!("{}:{}", c.created_us, c.message_type),
        )
    }

    /// The key and value publishing a handler version.
    pub fn handler(h: &HandlerVersion) -> (String, String) {
        let sha = if h.removed { "-" } else { h.sha256.as_str() };
        (
            format!("{SERVICE}{}/{}", h.namespace, h.service),
            format!("{sha}:{}", h.registered_at_us),
        )
    }

    /// Parses a `c:` key/value (the prefix already stripped); None if malformed.
    pub fn parse_collection(key: &str, value: &str) -> Option<OwnedCollection> {
        let (namespace, name) = key.split_once('/')?;
        let (created, ty) = value.split_once(':')?;
        Some(OwnedCollection {
            namespace: namespace.to_string(),
            name: name.to_string(),
            message_type: ty.to_string(),
            created_us: created.parse().ok()?,
        })
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

    /// The owner of a collection: a reachable publisher if there is one
    /// (a dead node's gossip may still list a collection re-created
    /// elsewhere), the earliest created among them, then the smallest node id.
    pub fn owner(&self, namespace: &str, name: &str) -> Option<&Member> {
        self.members
            .values()
            .filter_map(|m| {
                m.collections
                    .iter()
                    .find(|c| c.namespace == namespace && c.name == name)
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
            collections: colls
                .iter()
                .map(|(n, at)| OwnedCollection {
                    namespace: "ns".into(),
                    name: n.to_string(),
                    message_type: "t.M".into(),
                    created_us: *at,
                })
                .collect(),
            handlers: vec![],
            api_keys: vec![],
            quotas: vec![],
        }
    }

    #[test]
    fn keys_round_trip() {
        let c = OwnedCollection {
            namespace: "shop".into(),
            name: "orders".into(),
            message_type: "shop.Order".into(),
            created_us: 42,
        };
        let (k, v) = keys::collection(&c);
        assert_eq!(
            keys::parse_collection(k.strip_prefix(keys::COLLECTION).unwrap(), &v),
            Some(c)
        );
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
        assert_eq!(keys::parse_collection("a/b", "notanumber:t"), None);
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
