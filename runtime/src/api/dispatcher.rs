//! CollectiveDispatcher: runs registered methods (Serve; Dispatch comes with the mesh).

use super::{ApiState, metadata_pairs};
use crate::proto::{self, collective_dispatcher_server::CollectiveDispatcher};
use crate::store::codec::TYPE_URL_PREFIX;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// The CollectiveDispatcher adapter.
pub struct DispatcherApi(pub Arc<ApiState>);

#[tonic::async_trait]
impl CollectiveDispatcher for DispatcherApi {
    async fn serve(
        &self,
        req: Request<proto::ServeRequest>,
    ) -> Result<Response<proto::ServeResponse>, Status> {
        let ns = self.0.namespace(&req, &req.get_ref().namespace)?;
        let metadata = metadata_pairs(req.metadata());
        let r = req.into_inner();
        let (_, m) = self.0.services.method(&ns, &r.service, &r.method)?;
        let input = r.input.unwrap_or_default();
        super::check_input_type(
            &input,
            m.input().full_name(),
            &format!("{}/{}", r.service, r.method),
        )?;
        let out = self
            .0
            .services
            .call(&ns, &r.service, &r.method, input.value, metadata)
            .await?;
        Ok(Response::new(proto::ServeResponse {
            output: Some(prost_types::Any {
                type_url: format!("{TYPE_URL_PREFIX}{}", m.output().full_name()),
                value: out,
            }),
            node_id: self.0.node_id.clone(),
        }))
    }
}
