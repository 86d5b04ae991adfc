//! CollectorRegistry: proto types per namespace.

use super::ApiState;
use crate::error::Error;
use crate::proto::{self, collector_registry_server::CollectorRegistry};
use crate::registry::ProtoInput;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// The CollectorRegistry adapter.
pub struct RegistryApi(pub Arc<ApiState>);

#[tonic::async_trait]
impl CollectorRegistry for RegistryApi {
    async fn register_proto(
        &self,
        req: Request<proto::RegisterProtoRequest>,
    ) -> Result<Response<proto::RegisterProtoResponse>, Status> {
        let ns = self.0.namespace(&req, &req.get_ref().namespace)?;
        let r = req.into_inner();
        let input = match (r.file_set, r.sources.is_empty()) {
            (Some(_), false) => {
                return Err(Error::invalid("give file_set or sources, not both").into());
            }
            (Some(set), true) => ProtoInput::FileSet(set),
            (None, false) => {
                ProtoInput::Sources(r.sources.into_iter().map(|s| (s.name, s.content)).collect())
            }
            (None, true) => {
                return Err(Error::invalid("nothing to register: give file_set or sources").into());
            }
        };
        let out = self.0.registry.register(&ns, input).await?;
        Ok(Response::new(proto::RegisterProtoResponse {
            registered_files: out.new_files,
            message_types: out.message_types,
            services: out.services,
        }))
    }

    async fn get_proto(
        &self,
        req: Request<proto::GetProtoRequest>,
    ) -> Result<Response<proto::GetProtoResponse>, Status> {
        let ns = self.0.namespace(&req, &req.get_ref().namespace)?;
        use proto::get_proto_request::Target;
        let (file, symbol) = match &req.get_ref().target {
            Some(Target::FileName(f)) => (Some(f.as_str()), None),
            Some(Target::Symbol(s)) => (None, Some(s.as_str())),
            None => (None, None),
        };
        let files = self.0.registry.file_with_deps(&ns, file, symbol)?;
        Ok(Response::new(proto::GetProtoResponse { files }))
    }

    async fn list_protos(
        &self,
        req: Request<proto::ListProtosRequest>,
    ) -> Result<Response<proto::ListProtosResponse>, Status> {
        let ns = self.0.namespace(&req, &req.get_ref().namespace)?;
        let files = self
            .0
            .registry
            .list(&ns)
            .into_iter()
            .map(|f| proto::ProtoFileInfo {
                name: f.name,
                package: f.package,
                message_types: f.message_types,
                services: f.services,
                dependencies: f.dependencies,
            })
            .collect();
        Ok(Response::new(proto::ListProtosResponse { files }))
    }
}
