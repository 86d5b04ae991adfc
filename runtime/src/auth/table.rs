//! The one table of what every method needs. A method the table does not
//! name is a registered one (a handler's method, served by the fallback
//! route): calling it needs `write` in its namespace.

use super::Role;

/// What calling a method needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Nothing: anyone who reaches the port (health checks).
    Public,
    /// A valid key; what the call shows is limited to the namespaces the
    /// key sees (lists across namespaces, reflection, the mesh view).
    Authenticated,
    /// This role in the namespace the call works in.
    Role(Role),
    /// An operator key.
    Operator,
    /// A member of this node's mesh (a valid peer proof): the ends of a
    /// transfer and component fetches, which nodes make on their own.
    Member,
}

use Need::{Authenticated, Member, Operator, Public};
const READ: Need = Need::Role(Role::Read);
const WRITE: Need = Need::Role(Role::Write);
const DEVELOP: Need = Need::Role(Role::Develop);
const ADMIN: Need = Need::Role(Role::Admin);

/// Every built-in method and what it needs.
pub const METHODS: &[(&str, Need)] = &[
    // CollectorRegistry
    ("/collector.v1.CollectorRegistry/RegisterProto", DEVELOP),
    ("/collector.v1.CollectorRegistry/GetProto", READ),
    ("/collector.v1.CollectorRegistry/ListProtos", READ),
    ("/collector.v1.CollectorRegistry/RegisterService", DEVELOP),
    ("/collector.v1.CollectorRegistry/LookupService", READ),
    ("/collector.v1.CollectorRegistry/ValidateMethod", READ),
    ("/collector.v1.CollectorRegistry/ListServices", READ),
    ("/collector.v1.CollectorRegistry/UnregisterService", DEVELOP),
    // Key calls name no single namespace: `admin` (or operator) is checked
    // for every namespace the key grants.
    ("/collector.v1.CollectorRegistry/CreateKey", ADMIN),
    ("/collector.v1.CollectorRegistry/ListKeys", ADMIN),
    ("/collector.v1.CollectorRegistry/RevokeKey", ADMIN),
    ("/collector.v1.CollectorRegistry/RotateKey", ADMIN),
    ("/collector.v1.CollectorRegistry/WhoAmI", Authenticated),
    ("/collector.v1.CollectorRegistry/SetQuota", Operator),
    ("/collector.v1.CollectorRegistry/GetQuota", READ),
    ("/collector.v1.CollectorRegistry/ListQuotas", Operator),
    ("/collector.v1.CollectorRegistry/ListHandlerLogs", DEVELOP),
    // CollectionService
    ("/collector.v1.CollectionService/Create", WRITE),
    ("/collector.v1.CollectionService/Get", READ),
    ("/collector.v1.CollectionService/Update", WRITE),
    ("/collector.v1.CollectionService/Delete", WRITE),
    ("/collector.v1.CollectionService/List", READ),
    ("/collector.v1.CollectionService/Search", READ),
    ("/collector.v1.CollectionService/Batch", WRITE),
    ("/collector.v1.CollectionService/Count", READ),
    ("/collector.v1.CollectionService/Invoke", WRITE),
    ("/collector.v1.CollectionService/PutFile", WRITE),
    ("/collector.v1.CollectionService/GetFile", READ),
    ("/collector.v1.CollectionService/StatFile", READ),
    ("/collector.v1.CollectionService/ListFiles", READ),
    ("/collector.v1.CollectionService/DeleteFile", WRITE),
    // CollectiveDispatcher
    ("/collector.v1.CollectiveDispatcher/Serve", WRITE),
    ("/collector.v1.CollectiveDispatcher/Dispatch", WRITE),
    ("/collector.v1.CollectiveDispatcher/Connect", Operator),
    (
        "/collector.v1.CollectiveDispatcher/ListPeers",
        Authenticated,
    ),
    ("/collector.v1.CollectiveDispatcher/FetchComponent", Member),
    ("/collector.v1.CollectiveDispatcher/ListOwned", Member),
    // CollectionRepo
    ("/collector.v1.CollectionRepo/CreateCollection", DEVELOP),
    ("/collector.v1.CollectionRepo/DeleteCollection", DEVELOP),
    ("/collector.v1.CollectionRepo/GetCollection", READ),
    ("/collector.v1.CollectionRepo/UpdateCollection", DEVELOP),
    ("/collector.v1.CollectionRepo/Discover", Authenticated),
    ("/collector.v1.CollectionRepo/Route", READ),
    ("/collector.v1.CollectionRepo/SearchCollections", READ),
    ("/collector.v1.CollectionRepo/Meta", Authenticated),
    ("/collector.v1.CollectionRepo/BackupCollection", ADMIN),
    ("/collector.v1.CollectionRepo/ListBackups", ADMIN),
    ("/collector.v1.CollectionRepo/GetBackup", ADMIN),
    ("/collector.v1.CollectionRepo/VerifyBackup", ADMIN),
    ("/collector.v1.CollectionRepo/DeleteBackup", ADMIN),
    ("/collector.v1.CollectionRepo/RestoreBackup", ADMIN),
    // `develop` in the source's namespace and in the copy's.
    ("/collector.v1.CollectionRepo/Clone", DEVELOP),
    ("/collector.v1.CollectionRepo/Fetch", DEVELOP),
    ("/collector.v1.CollectionRepo/PullCollection", Member),
    ("/collector.v1.CollectionRepo/PushCollection", Member),
    // The Prometheus scrape (HTTP GET): every namespace's figures.
    ("/metrics", Operator),
    // Health and reflection
    ("/grpc.health.v1.Health/Check", Public),
    ("/grpc.health.v1.Health/Watch", Public),
    (
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        Authenticated,
    ),
    (
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        Authenticated,
    ),
];

/// What calling `path` (`/package.Service/Method`) needs.
pub fn need_of(path: &str) -> Need {
    // The console signs its users in itself, with the same keys, and calls
    // the API as them (`console`).
    if path == "/console" || path.starts_with("/console/") {
        return Public;
    }
    METHODS
        .iter()
        .find(|(p, _)| *p == path)
        .map(|(_, n)| *n)
        .unwrap_or(WRITE)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table names every method the node's own API defines, once.
    #[test]
    fn the_table_names_every_built_in_method_once() {
        let pool = crate::proto::api_pool();
        let mut defined: Vec<String> = pool
            .services()
            .flat_map(|s| {
                s.methods()
                    .map(|m| format!("/{}/{}", s.full_name(), m.name()))
                    .collect::<Vec<_>>()
            })
            .collect();
        defined.sort();
        let mut named: Vec<String> = METHODS
            .iter()
            .map(|(p, _)| p.to_string())
            .filter(|p| p.starts_with("/collector."))
            .collect();
        named.sort();
        let before = named.len();
        named.dedup();
        assert_eq!(before, named.len(), "a method is named twice");
        assert_eq!(defined, named);
        assert_eq!(need_of("/shop.Orders/Place"), WRITE);
    }
}
