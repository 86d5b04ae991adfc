//! Where a call runs: pure decisions over a `View`, so every rule (one
//! forward at most, dead nodes fail fast, explicit target first) is unit
//! tested without a network.

use super::view::{Member, View};
use crate::error::{Error, Result};
use crate::limits::MAX_HOPS;
use sha2::Digest;

/// The outcome of a routing decision.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Run on this node.
    Here,
    /// Forward to this member (alive, not this node).
    Forward(Member),
}

/// A score for rendezvous hashing: a fixed hash (sha256), so nodes built by
/// different compilers agree on placement.
fn score(key: &str, node_id: &str) -> u64 {
    let mut h = sha2::Sha256::new();
    h.update(key.as_bytes());
    h.update([0]);
    h.update(node_id.as_bytes());
    let d = h.finalize();
    u64::from_be_bytes(d[..8].try_into().expect("sha256 has 32 bytes"))
}

/// Rendezvous (highest random weight) hashing: the candidate with the
/// highest score for `key`. Adding or removing a node only moves the keys
/// that node wins or held.
pub fn rendezvous<'a>(
    key: &str,
    candidates: impl IntoIterator<Item = &'a Member>,
) -> Option<&'a Member> {
    candidates
        .into_iter()
        .max_by_key(|m| (score(key, &m.node_id), m.node_id.clone()))
}

/// Where an auto-placed collection goes: among reachable members.
pub fn place_collection<'a>(view: &'a View, namespace: &str, name: &str) -> Option<&'a Member> {
    rendezvous(
        &format!("{namespace}/{name}"),
        view.members.values().filter(|m| m.reachable()),
    )
}

fn forward_to(view: &View, m: &Member, why: &str) -> Result<Decision> {
    if m.node_id == view.self_id {
        return Ok(Decision::Here);
    }
    if !m.reachable() {
        return Err(Error::unavailable(format!(
            "{why} is on node {} ({}), which the mesh considers dead; retry when it is back (see ListPeers)",
            m.node_id, m.address
        )));
    }
    Ok(Decision::Forward(m.clone()))
}

/// A call on a collection (CollectionService, GetCollection, …): here if the
/// collection is here, else forwarded to its owner, once.
pub fn for_collection(
    view: &View,
    namespace: &str,
    name: &str,
    local: bool,
    hop: u32,
) -> Result<Decision> {
    if local {
        return Ok(Decision::Here);
    }
    let not_found = || {
        Error::not_found(format!(
            "collection {namespace}/{name} does not exist on any node of the mesh; create it with CollectionRepo.CreateCollection"
        ))
    };
    if hop >= MAX_HOPS {
        // The sender's view was stale (the collection moved or is gone):
        // answering beats forwarding again.
        return Err(not_found());
    }
    let owner = view.owner(namespace, name).ok_or_else(not_found)?;
    forward_to(view, owner, &format!("collection {namespace}/{name}"))
}

/// What a Dispatch names.
#[derive(Debug, Clone, Default)]
pub struct DispatchTarget<'a> {
    /// The call's namespace.
    pub namespace: &'a str,
    /// The call's full service name.
    pub service: &'a str,
    /// Run where this collection lives.
    pub collection: Option<&'a str>,
    /// Run on this node id.
    pub node: Option<&'a str>,
}

/// Where a dispatched call runs: the explicit node; else the owner of the
/// named collection; else here if the service is registered here; else a
/// reachable member that has its newest version (chosen by rendezvous
/// hashing of the service, so calls spread evenly and stably); else here.
pub fn for_dispatch(
    view: &View,
    t: &DispatchTarget<'_>,
    collection_here: bool,
    service_here: bool,
    hop: u32,
) -> Result<Decision> {
    if hop >= MAX_HOPS {
        return match t.node {
            Some(n) if n != view.self_id => Err(Error::failed_precondition(format!(
                "this call was forwarded to node {n}, but this is node {}; not forwarding again",
                view.self_id
            ))),
            _ => Ok(Decision::Here),
        };
    }
    if let Some(n) = t.node {
        let m = view.member(n).ok_or_else(|| {
            Error::not_found(format!(
                "target_node {n:?} is not a member of the mesh (see ListPeers)"
            ))
        })?;
        return forward_to(view, m, &format!("target_node {n}"));
    }
    if let Some(c) = t.collection {
        return for_collection(view, t.namespace, c, collection_here, hop);
    }
    if service_here {
        return Ok(Decision::Here);
    }
    match view.newest(t.namespace, t.service) {
        Some(v) if !v.removed => {
            let key = format!("{}/{}", t.namespace, t.service);
            match rendezvous(&key, view.holders(v)) {
                Some(m) => Ok(Decision::Forward(m.clone())),
                None => Err(Error::unavailable(format!(
                    "service {} of namespace {} is registered only on nodes the mesh considers dead; retry when one is back",
                    t.service, t.namespace
                ))),
            }
        }
        // Unknown everywhere: running here reports UNIMPLEMENTED.
        _ => Ok(Decision::Here),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use crate::mesh::view::{HandlerVersion, MemberState, OwnedCollection};

    fn view() -> View {
        let mut v = View {
            self_id: "a".into(),
            ..Default::default()
        };
        let mk = |id: &str, state, colls: &[&str], svcs: &[&str]| Member {
            node_id: id.into(),
            address: format!("127.0.0.1:{}", id.len()),
            state,
            started_us: 0,
            collections: std::sync::Arc::new(crate::mesh::view::Owned::new(colls.iter().map(
                |n| OwnedCollection {
                    namespace: "ns".into(),
                    name: n.to_string(),
                    message_type: "t.M".into(),
                    created_us: 1,
                },
            ))),
            collections_digest: String::new(),
            handlers: svcs
                .iter()
                .map(|s| HandlerVersion {
                    namespace: "ns".into(),
                    service: s.to_string(),
                    sha256: "h".into(),
                    registered_at_us: 1,
                    removed: false,
                })
                .collect(),
            api_keys: vec![],
            quotas: vec![],
        };
        for m in [
            mk("a", MemberState::Myself, &["here"], &["t.Local"]),
            mk("b", MemberState::Alive, &["there"], &["t.Remote", "t.Both"]),
            mk("c", MemberState::Dead, &["gone"], &["t.Dead", "t.Both"]),
        ] {
            v.members.insert(m.node_id.clone(), m);
        }
        v
    }

    fn fwd(d: Result<Decision>) -> String {
        match d.unwrap() {
            Decision::Forward(m) => m.node_id,
            Decision::Here => "here".into(),
        }
    }

    #[test]
    fn collections_go_to_their_owner_once() {
        let v = view();
        assert_eq!(fwd(for_collection(&v, "ns", "here", true, 0)), "here");
        assert_eq!(fwd(for_collection(&v, "ns", "there", false, 0)), "b");
        let e = for_collection(&v, "ns", "gone", false, 0).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unavailable, "{e}");
        let e = for_collection(&v, "ns", "nowhere", false, 0).unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotFound);
        // Already forwarded: never forwarded again, even if b owns it.
        let e = for_collection(&v, "ns", "there", false, 1).unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotFound);
    }

    #[test]
    fn dispatch_order_is_target_then_collection_then_registration() {
        let v = view();
        let t = |svc, coll, node| DispatchTarget {
            namespace: "ns",
            service: svc,
            collection: coll,
            node,
        };
        // Explicit target beats the collection's owner.
        assert_eq!(
            fwd(for_dispatch(
                &v,
                &t("t.Local", Some("there"), Some("a")),
                false,
                true,
                0
            )),
            "here"
        );
        assert_eq!(
            fwd(for_dispatch(
                &v,
                &t("t.Local", Some("here"), Some("b")),
                true,
                true,
                0
            )),
            "b"
        );
        let e = for_dispatch(&v, &t("t.Local", None, Some("c")), false, true, 0).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unavailable);
        let e = for_dispatch(&v, &t("t.Local", None, Some("zz")), false, true, 0).unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotFound);
        // The collection's owner beats where the service is registered.
        assert_eq!(
            fwd(for_dispatch(
                &v,
                &t("t.Local", Some("there"), None),
                false,
                true,
                0
            )),
            "b"
        );
        // Registered here: here.
        assert_eq!(
            fwd(for_dispatch(&v, &t("t.Local", None, None), false, true, 0)),
            "here"
        );
        // Registered elsewhere: a live holder; dead holders are skipped.
        assert_eq!(
            fwd(for_dispatch(
                &v,
                &t("t.Remote", None, None),
                false,
                false,
                0
            )),
            "b"
        );
        assert_eq!(
            fwd(for_dispatch(&v, &t("t.Both", None, None), false, false, 0)),
            "b"
        );
        let e = for_dispatch(&v, &t("t.Dead", None, None), false, false, 0).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unavailable);
        // Unknown anywhere: here (which answers UNIMPLEMENTED).
        assert_eq!(
            fwd(for_dispatch(&v, &t("t.Nope", None, None), false, false, 0)),
            "here"
        );
    }

    #[test]
    fn a_forwarded_dispatch_runs_where_it_lands() {
        let v = view();
        let t = DispatchTarget {
            namespace: "ns",
            service: "t.Remote",
            collection: Some("there"),
            node: None,
        };
        assert_eq!(fwd(for_dispatch(&v, &t, false, false, 1)), "here");
        let t = DispatchTarget {
            node: Some("a"),
            ..t
        };
        assert_eq!(fwd(for_dispatch(&v, &t, false, false, 1)), "here");
        let t = DispatchTarget {
            node: Some("b"),
            ..t
        };
        let e = for_dispatch(&v, &t, false, false, 1).unwrap_err();
        assert_eq!(e.kind, ErrorKind::FailedPrecondition);
    }

    #[test]
    fn rendezvous_is_stable_and_moves_little() {
        let members: Vec<Member> = (0..5)
            .map(|i| Member {
                node_id: format!("n{i}"),
                address: String::new(),
                state: MemberState::Alive,
                started_us: 0,
                collections: Default::default(),
                collections_digest: String::new(),
                handlers: vec![],
                api_keys: vec![],
                quotas: vec![],
            })
            .collect();
        let keys: Vec<String> = (0..1000).map(|i| format!("ns/c{i}")).collect();
        let pick = |ms: &[Member], k: &str| rendezvous(k, ms).unwrap().node_id.clone();
        let before: Vec<_> = keys.iter().map(|k| pick(&members, k)).collect();
        assert_eq!(
            before,
            keys.iter().map(|k| pick(&members, k)).collect::<Vec<_>>()
        );
        // Every node gets a fair share.
        for m in &members {
            let n = before.iter().filter(|o| **o == m.node_id).count();
            assert!((120..=280).contains(&n), "{} got {n} of 1000", m.node_id);
        }
        // Removing a node moves only the keys it held.
        let fewer = &members[..4];
        for (k, b) in keys.iter().zip(&before) {
            if b != "n4" {
                assert_eq!(&pick(fewer, k), b);
            }
        }
    }
}
