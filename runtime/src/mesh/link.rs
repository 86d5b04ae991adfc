//! What the mesh needs from the network to reach a peer. The gRPC side
//! (`api::peers`) implements it, so the mesh's logic knows nothing of tonic.

use crate::error::Result;
use prost_types::FileDescriptorProto;
use std::future::Future;
use std::pin::Pin;
use std::time::Instant;

/// A peer operation in flight.
pub type LinkFuture<T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'static>>;

/// A call to run on a peer, which runs it where it lands (one hop at most).
#[derive(Debug, Clone)]
pub struct RemoteCall {
    /// The method's namespace.
    pub namespace: String,
    /// Full service name.
    pub service: String,
    /// Method name.
    pub method: String,
    /// The input message, binary protobuf.
    pub input: Vec<u8>,
    /// The owner of this collection is where the call goes.
    pub collection: Option<String>,
    /// The node id the call is meant for (the peer checks it is that node).
    pub target_node: String,
    /// Names the call so a resent forward never runs twice.
    pub request_id: String,
    /// The caller's metadata, for the handler.
    pub metadata: Vec<(String, String)>,
    /// How many `invoke`s deep the call is.
    pub depth: u32,
    /// The id of the key the caller authenticated with here (the peer
    /// takes it from a member only).
    pub caller: Option<String>,
    /// The caller's deadline, passed on (a little shorter).
    pub deadline: Option<Instant>,
}

/// What a peer answered.
#[derive(Debug, Clone)]
pub struct RemoteOutcome {
    /// The method's response, binary protobuf.
    pub output: Vec<u8>,
    /// Full name of the output message type.
    pub output_type: String,
    /// The node that ran the call.
    pub node_id: String,
    /// Its gRPC address.
    pub node_address: String,
}

/// A service as a peer hands it over: description, descriptors, component.
#[derive(Debug, Clone)]
pub struct FetchedService {
    /// The service's registration, as the peer has it.
    pub info: crate::proto::ServiceInfo,
    /// The file declaring the service first, then its dependencies.
    pub files: Vec<FileDescriptorProto>,
    /// The component's bytes (empty when only descriptors were asked for).
    pub component: Vec<u8>,
}

/// The network side of the mesh.
pub trait PeerLink: Send + Sync {
    /// Runs a call on the peer at `address`. A transport failure after the
    /// call was sent is UNAVAILABLE and says the call may have run.
    fn dispatch(&self, address: &str, call: RemoteCall) -> LinkFuture<RemoteOutcome>;
    /// Fetches version `sha256` of a service from the peer at `address`
    /// (without its component when `with_component` is false).
    fn fetch(
        &self,
        address: &str,
        namespace: &str,
        service: &str,
        sha256: &str,
        with_component: bool,
    ) -> LinkFuture<FetchedService>;
    /// One page of the collections the peer at `address` owns, after
    /// `after` (`namespace/name`, empty: from the first), and where the
    /// next page starts (empty after the last).
    fn list_owned(
        &self,
        address: &str,
        after: String,
    ) -> LinkFuture<(Vec<super::view::OwnedCollection>, String)>;
    /// The collections the peer at `address` owns that match `query`.
    fn discover(
        &self,
        address: &str,
        query: super::DiscoverQuery,
    ) -> LinkFuture<Vec<crate::store::CollectionMeta>>;
}
