//! CollectiveDispatcher: runs registered methods here or where they belong,
//! and manages the mesh (Connect, ListPeers, FetchComponent).

use super::ApiState;
use crate::error::Error;
use crate::handlers::Invocation;
use crate::mesh::DispatchCall;
use crate::mesh::view::{Member, MemberState};
use crate::names::{CollectionName, Namespace};
use crate::proto::{self, collective_dispatcher_server::CollectiveDispatcher};
use crate::store::codec::TYPE_URL_PREFIX;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// The CollectiveDispatcher adapter.
pub struct DispatcherApi(pub Arc<ApiState>);

fn any(type_name: &str, value: Vec<u8>) -> prost_types::Any {
    prost_types::Any {
        type_url: format!("{TYPE_URL_PREFIX}{type_name}"),
        value,
    }
}

/// A member as the API shows it to `who` (None: a member, which sees
/// all): only the collections and handlers of namespaces the caller sees.
pub fn peer(m: &Member, who: Option<&crate::auth::Identity>) -> proto::Peer {
    let sees = |ns: &str| Namespace::new(ns).is_ok_and(|ns| who.is_none_or(|w| w.sees(&ns)));
    proto::Peer {
        node_id: m.node_id.clone(),
        address: m.address.clone(),
        state: match m.state {
            MemberState::Myself => proto::PeerState::Self_,
            MemberState::Alive => proto::PeerState::Alive,
            MemberState::Dead => proto::PeerState::Dead,
        } as i32,
        started_at_us: m.started_us,
        collections: m
            .collections
            .iter()
            .filter(|c| sees(&c.namespace))
            .map(|c| proto::OwnedCollection {
                namespace: c.namespace.clone(),
                name: c.name.clone(),
                message_type: c.message_type.clone(),
                created_at_us: c.created_us,
            })
            .collect(),
        handlers: m
            .handlers
            .iter()
            .filter(|h| sees(&h.namespace))
            .map(|h| proto::HandlerVersion {
                namespace: h.namespace.clone(),
                service: h.service.clone(),
                sha256: h.sha256.clone(),
                registered_at_us: h.registered_at_us,
                removed: h.removed,
            })
            .collect(),
    }
}

impl DispatcherApi {
    fn peers<T>(&self, req: &Request<T>) -> Result<Vec<proto::Peer>, Error> {
        let who = super::identity(req);
        Ok(self
            .0
            .mesh
            .view()
            .members
            .values()
            .map(|m| {
                let mut p = peer(m, who.as_deref());
                if m.state == MemberState::Myself {
                    // This node's own list, as it is now (the view's may be
                    // a publication behind).
                    p.collections = self.own_collections(who.as_deref());
                }
                p
            })
            .collect())
    }

    fn own_collections(&self, who: Option<&crate::auth::Identity>) -> Vec<proto::OwnedCollection> {
        self.0
            .catalog
            .owned()
            .into_iter()
            .filter(|m| who.is_none_or(|w| w.sees(&m.namespace)))
            .map(|m| proto::OwnedCollection {
                namespace: m.namespace.to_string(),
                name: m.name.to_string(),
                message_type: m.message_type,
                created_at_us: m.created_us,
            })
            .collect()
    }

    /// Checks the `Any` a client sent against the method's input type when
    /// this node knows the method (else the node that runs it checks the bytes).
    fn check_input(
        &self,
        ns: &Namespace,
        service: &str,
        method: &str,
        input: &prost_types::Any,
    ) -> Result<(), Error> {
        let pool = self.0.registry.pool(ns);
        match pool
            .get_service_by_name(service)
            .and_then(|s| s.methods().find(|m| m.name() == method))
        {
            Some(m) => super::check_input_type(
                input,
                m.input().full_name(),
                &format!("{service}/{method}"),
            ),
            None => Ok(()),
        }
    }
}

#[tonic::async_trait]
impl CollectiveDispatcher for DispatcherApi {
    async fn serve(
        &self,
        req: Request<proto::ServeRequest>,
    ) -> Result<Response<proto::ServeResponse>, Status> {
        let ns = self.0.namespace(&req, &req.get_ref().namespace)?;
        let super::Caller {
            metadata,
            options,
            request_id: rid,
        } = super::Caller::of(&req);
        let r = req.into_inner();
        self.0.mesh.ensure_service(&ns, &r.service).await?;
        let (_, m) = self.0.handlers.method(&ns, &r.service, &r.method)?;
        let input = r.input.unwrap_or_default();
        super::check_input_type(
            &input,
            m.input().full_name(),
            &format!("{}/{}", r.service, r.method),
        )?;
        let inv = Invocation {
            namespace: ns,
            service: r.service,
            method: r.method,
            input: input.value,
            metadata,
            options,
        };
        let out = self.0.mesh.run_here(inv, rid.as_deref()).await?;
        Ok(Response::new(proto::ServeResponse {
            output: Some(any(m.output().full_name(), out)),
            node_id: self.0.node_id.clone(),
        }))
    }

    async fn dispatch(
        &self,
        req: Request<proto::DispatchRequest>,
    ) -> Result<Response<proto::DispatchResponse>, Status> {
        let ns = self.0.namespace(&req, &req.get_ref().namespace)?;
        let super::Caller {
            metadata,
            options,
            request_id: header_rid,
        } = super::Caller::of(&req);
        let r = req.into_inner();
        if r.service.is_empty() || r.method.is_empty() {
            return Err(
                Error::invalid("name the service (e.g. shop.Orders) and the method").into(),
            );
        }
        let input = r.input.unwrap_or_default();
        self.check_input(&ns, &r.service, &r.method, &input)?;
        let collection = Some(r.collection.as_str())
            .filter(|c| !c.is_empty())
            .map(CollectionName::new)
            .transpose()?;
        // Only a call the client named is logged for retries here; the mesh
        // names a forward itself (the receiving node logs it).
        let request_id = Some(r.request_id).filter(|s| !s.is_empty()).or(header_rid);
        let call = DispatchCall {
            invocation: Invocation {
                namespace: ns.clone(),
                service: r.service.clone(),
                method: r.method.clone(),
                input: input.value,
                metadata,
                options,
            },
            collection,
            target_node: Some(r.target_node).filter(|s| !s.is_empty()),
            request_id,
        };
        let d = self.0.mesh.dispatch(call).await?;
        Ok(Response::new(proto::DispatchResponse {
            output: Some(any(&d.output_type, d.output)),
            node_id: d.node_id,
            node_address: d.node_address,
            forwarded: d.forwarded,
            request_id: d.request_id,
        }))
    }

    async fn connect(
        &self,
        req: Request<proto::ConnectRequest>,
    ) -> Result<Response<proto::ConnectResponse>, Status> {
        let addr = req.get_ref().address.trim();
        if addr.is_empty() {
            return Err(
                Error::invalid("address is empty: give host:port of a node to join").into(),
            );
        }
        if !self.0.meshed {
            return Err(Error::failed_precondition(
                "this node has no cluster secret, so it forms no mesh: restart it with the mesh's --cluster-secret-file",
            )
            .into());
        }
        self.0.mesh.connect(addr).await?;
        Ok(Response::new(proto::ConnectResponse {
            peers: self.peers(&req)?,
        }))
    }

    async fn list_peers(
        &self,
        req: Request<proto::ListPeersRequest>,
    ) -> Result<Response<proto::ListPeersResponse>, Status> {
        Ok(Response::new(proto::ListPeersResponse {
            peers: self.peers(&req)?,
        }))
    }

    async fn fetch_component(
        &self,
        req: Request<proto::FetchComponentRequest>,
    ) -> Result<Response<proto::FetchComponentResponse>, Status> {
        let ns = self.0.namespace(&req, &req.get_ref().namespace)?;
        let r = req.into_inner();
        let (info, component) = self
            .0
            .handlers
            .export(&ns, &r.service, &r.sha256, !r.descriptors_only)
            .await?;
        let files = self
            .0
            .registry
            .file_with_deps(&ns, None, Some(&r.service))?;
        Ok(Response::new(proto::FetchComponentResponse {
            service: Some(info),
            files,
            component,
        }))
    }

    async fn list_owned(
        &self,
        req: Request<proto::ListOwnedRequest>,
    ) -> Result<Response<proto::ListOwnedResponse>, Status> {
        let r = req.into_inner();
        let after = super::repo::parse_after(&r.after)?;
        let limit = match r.limit {
            0 => crate::limits::MAX_PAGE_SIZE as usize,
            n => (n as usize).min(crate::limits::MAX_OWNED_PAGE),
        };
        let page = self
            .0
            .catalog
            .discover(None, "", &Default::default(), after.as_ref(), limit);
        let next_after = match page.last() {
            Some(m) if page.len() == limit => format!("{}/{}", m.namespace, m.name),
            _ => String::new(),
        };
        Ok(Response::new(proto::ListOwnedResponse {
            collections: page
                .into_iter()
                .map(|m| proto::OwnedCollection {
                    namespace: m.namespace.to_string(),
                    name: m.name.to_string(),
                    message_type: m.message_type,
                    created_at_us: m.created_us,
                })
                .collect(),
            next_after,
        }))
    }
}
