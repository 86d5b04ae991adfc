//! Who may do what: API keys (`token`, `keys`), the roles they grant per
//! namespace, and the one table of what every method needs (`table`).
//!
//! A call is first authenticated (its key is known, not revoked, not
//! expired), then authorised: the method's `Need` against the key's grants
//! in the namespace the call works in. Nothing here knows of tonic; the
//! gate in `api::auth_gate` applies it to every request.

pub mod keys;
pub mod table;
pub mod token;

use crate::error::{Error, Result};
use crate::names::Namespace;
use std::collections::BTreeMap;

pub use keys::{KeySpec, Keys};
pub use table::{Need, need_of};

/// A role in one namespace. Each includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Read records, files, types and services.
    Read,
    /// Change records and files, call handlers.
    Write,
    /// Register types and services; create, change and delete collections.
    Develop,
    /// Keys, backups and restores of the namespace.
    Admin,
}

impl Role {
    /// Every role, lowest first.
    pub const ALL: [Role; 4] = [Role::Read, Role::Write, Role::Develop, Role::Admin];

    /// The role's name, as keys and the CLI spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Develop => "develop",
            Role::Admin => "admin",
        }
    }

    /// Parses a role name.
    pub fn parse(s: &str) -> Result<Role> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                Error::invalid(format!(
                    "role {:?} is unknown; give read, write, develop or admin",
                    crate::names::clip(s)
                ))
            })
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The caller of a request: an authenticated key and what it grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The key's id (never its secret).
    pub key_id: String,
    /// Cluster-wide: every role everywhere, plus the mesh and all keys.
    pub operator: bool,
    /// The highest role the key holds in each namespace.
    pub grants: BTreeMap<Namespace, Role>,
}

impl Identity {
    /// The role the caller holds in `ns` (an operator: admin everywhere).
    pub fn role_in(&self, ns: &Namespace) -> Option<Role> {
        if self.operator {
            return Some(Role::Admin);
        }
        self.grants.get(ns).copied()
    }

    /// Whether the caller may see `ns` at all (lists and reflection show
    /// only those).
    pub fn sees(&self, ns: &Namespace) -> bool {
        self.role_in(ns).is_some()
    }

    /// OK when the caller holds `role` in `ns`; else PERMISSION_DENIED
    /// naming what is missing.
    pub fn require(&self, role: Role, ns: &Namespace) -> Result<()> {
        match self.role_in(ns) {
            Some(have) if have >= role => Ok(()),
            Some(have) => Err(Error::permission_denied(format!(
                "key {} holds {have} in namespace {ns}; this call needs {role}",
                self.key_id
            ))),
            None => Err(Error::permission_denied(format!(
                "key {} holds no role in namespace {ns}; this call needs {role}",
                self.key_id
            ))),
        }
    }

    /// OK for an operator key; else PERMISSION_DENIED.
    pub fn require_operator(&self) -> Result<()> {
        if self.operator {
            Ok(())
        } else {
            Err(Error::permission_denied(format!(
                "key {} is not an operator key; this call needs operator",
                self.key_id
            )))
        }
    }

    /// What a call needs, checked where the namespace is known: a role in
    /// `ns`, or operator. `Public`, `Authenticated` and `Member` hold for
    /// any caller that got this far (the gate checked them).
    pub fn allows(&self, need: Need, ns: &Namespace) -> Result<()> {
        match need {
            Need::Role(r) => self.require(r, ns),
            Need::Operator => self.require_operator(),
            Need::Public | Need::Authenticated | Need::Member => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_include_the_ones_below() {
        let ns = Namespace::new("shop").unwrap();
        let other = Namespace::new("other").unwrap();
        let id = Identity {
            key_id: "k".into(),
            operator: false,
            grants: [(ns.clone(), Role::Write)].into(),
        };
        assert!(id.require(Role::Read, &ns).is_ok());
        assert!(id.require(Role::Write, &ns).is_ok());
        assert!(id.require(Role::Develop, &ns).is_err());
        assert!(id.require(Role::Read, &other).is_err());
        assert!(id.require_operator().is_err());
        assert!(!id.sees(&other));
        let op = Identity {
            operator: true,
            grants: BTreeMap::new(),
            ..id
        };
        assert!(op.require(Role::Admin, &Namespace::system()).is_ok());
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()).unwrap(), r);
        }
        assert!(Role::parse("root").is_err());
    }
}
