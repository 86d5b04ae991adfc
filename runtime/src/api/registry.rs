//! CollectorRegistry: proto types per namespace.

use super::ApiState;
use crate::auth::KeySpec;
use crate::error::Error;
use crate::handlers::{self, ServiceSpec};
use crate::names::Namespace;
use crate::proto::{self, collector_registry_server::CollectorRegistry};
use crate::registry::ProtoInput;
use crate::wasm::logs::{Level, LogQuery};
use std::sync::Arc;
use std::time::Duration;
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
        let files = match self.0.registry.file_with_deps(&ns, file, symbol) {
            // A type or service registered on another node: its files come from there.
            Err(e) if e.kind == crate::error::ErrorKind::NotFound => {
                let found = match (file, symbol) {
                    (Some(f), _) => self.0.mesh.remote_file(&ns, f).await,
                    (None, Some(s)) => self.0.mesh.remote_symbol_file(&ns, s).await,
                    (None, None) => None,
                };
                found.ok_or(e)?
            }
            other => other?,
        };
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

    async fn register_service(
        &self,
        req: Request<proto::RegisterServiceRequest>,
    ) -> Result<Response<proto::ServiceInfo>, Status> {
        let ns = self.0.namespace(&req, &req.get_ref().namespace)?;
        let r = req.into_inner();
        let limits = r.limits.unwrap_or_default();
        let spec = ServiceSpec {
            namespace: ns,
            service: r.service,
            grants: handlers::grants(r.grants.into_iter().map(|g| (g.collection, g.read_only)))?,
            timeout_ms: limits.timeout_ms,
            memory_mib: limits.memory_mib,
        };
        Ok(Response::new(
            self.0.handlers.register(spec, r.component).await?,
        ))
    }

    async fn lookup_service(
        &self,
        req: Request<proto::LookupServiceRequest>,
    ) -> Result<Response<proto::ServiceInfo>, Status> {
        let ns = self.0.namespace(&req, &req.get_ref().namespace)?;
        Ok(Response::new(
            self.0.handlers.info(&ns, &req.get_ref().service)?,
        ))
    }

    async fn validate_method(
        &self,
        req: Request<proto::ValidateMethodRequest>,
    ) -> Result<Response<proto::ValidateMethodResponse>, Status> {
        let ns = self.0.namespace(&req, &req.get_ref().namespace)?;
        let r = req.get_ref();
        let (_, m) = self.0.handlers.method(&ns, &r.service, &r.method)?;
        Ok(Response::new(proto::ValidateMethodResponse {
            input_type: m.input().full_name().to_string(),
            output_type: m.output().full_name().to_string(),
        }))
    }

    async fn list_services(
        &self,
        req: Request<proto::ListServicesRequest>,
    ) -> Result<Response<proto::ListServicesResponse>, Status> {
        let ns = self.0.namespace(&req, &req.get_ref().namespace)?;
        Ok(Response::new(proto::ListServicesResponse {
            services: self.0.handlers.list(&ns),
        }))
    }

    async fn unregister_service(
        &self,
        req: Request<proto::UnregisterServiceRequest>,
    ) -> Result<Response<proto::UnregisterServiceResponse>, Status> {
        let ns = self.0.namespace(&req, &req.get_ref().namespace)?;
        self.0
            .handlers
            .unregister(&ns, &req.get_ref().service, None)
            .await?;
        Ok(Response::new(proto::UnregisterServiceResponse {}))
    }

    async fn create_key(
        &self,
        req: Request<proto::CreateKeyRequest>,
    ) -> Result<Response<proto::CreatedKey>, Status> {
        let by = caller(&req)?;
        let r = req.into_inner();
        let spec = KeySpec {
            description: r.description,
            grants: KeySpec::grants_of(&r.grants)?,
            operator: r.operator,
            ttl: (r.ttl_seconds > 0).then(|| Duration::from_secs(r.ttl_seconds)),
        };
        let (key, token) = self.0.keys.create(Some(&by), spec).await?;
        Ok(Response::new(proto::CreatedKey {
            key: Some(key),
            token,
        }))
    }

    async fn list_keys(
        &self,
        req: Request<proto::ListKeysRequest>,
    ) -> Result<Response<proto::ListKeysResponse>, Status> {
        let by = caller(&req)?;
        let ns = match req.get_ref().namespace.as_str() {
            "" => None,
            ns => Some(Namespace::new(ns)?),
        };
        Ok(Response::new(proto::ListKeysResponse {
            keys: self.0.keys.list(&by, ns.as_ref())?,
        }))
    }

    async fn revoke_key(
        &self,
        req: Request<proto::RevokeKeyRequest>,
    ) -> Result<Response<proto::KeyInfo>, Status> {
        let by = caller(&req)?;
        Ok(Response::new(
            self.0.keys.revoke(&by, &req.get_ref().id).await?,
        ))
    }

    async fn rotate_key(
        &self,
        req: Request<proto::RotateKeyRequest>,
    ) -> Result<Response<proto::CreatedKey>, Status> {
        let by = caller(&req)?;
        let r = req.get_ref();
        let grace = Duration::from_secs(r.grace_seconds);
        let (key, token) = self.0.keys.rotate(&by, &r.id, grace).await?;
        Ok(Response::new(proto::CreatedKey {
            key: Some(key),
            token,
        }))
    }

    async fn who_am_i(
        &self,
        req: Request<proto::WhoAmIRequest>,
    ) -> Result<Response<proto::KeyInfo>, Status> {
        let by = caller(&req)?;
        Ok(Response::new(self.0.keys.info(&by.key_id)?))
    }

    async fn set_quota(
        &self,
        req: Request<proto::SetQuotaRequest>,
    ) -> Result<Response<proto::QuotaInfo>, Status> {
        let by = caller(&req)?;
        let quota = req
            .into_inner()
            .quota
            .ok_or_else(|| Error::invalid("quota is missing; give its namespace and limits"))?;
        let set = self.0.quotas.overrides().set(&by.key_id, quota).await?;
        let ns = Namespace::new(&set.namespace)?;
        Ok(Response::new(self.quota_info(&ns).await?))
    }

    async fn get_quota(
        &self,
        req: Request<proto::GetQuotaRequest>,
    ) -> Result<Response<proto::QuotaInfo>, Status> {
        let ns = self.0.namespace(&req, &req.get_ref().namespace)?;
        Ok(Response::new(self.quota_info(&ns).await?))
    }

    async fn list_quotas(
        &self,
        _req: Request<proto::ListQuotasRequest>,
    ) -> Result<Response<proto::ListQuotasResponse>, Status> {
        Ok(Response::new(proto::ListQuotasResponse {
            quotas: self.0.quotas.overrides().list(),
        }))
    }

    async fn list_handler_logs(
        &self,
        req: Request<proto::ListHandlerLogsRequest>,
    ) -> Result<Response<proto::ListHandlerLogsResponse>, Status> {
        let ns = self.0.namespace(&req, &req.get_ref().namespace)?;
        let r = req.into_inner();
        let q = log_query(&r)?;
        let lines = self.0.handlers.logs().read(ns.as_str(), &q);
        let next_before = match lines.len() == q.limit {
            true => lines.last().map_or(0, |l| l.seq),
            false => 0,
        };
        Ok(Response::new(proto::ListHandlerLogsResponse {
            lines: lines
                .iter()
                .map(|l| proto::HandlerLogLine {
                    time_us: l.time_us,
                    level: l.level.name().to_string(),
                    service: l.service.clone(),
                    method: l.method.clone(),
                    message: l.message.clone(),
                    seq: l.seq,
                })
                .collect(),
            next_before,
        }))
    }
}

/// The log query a request asks for.
fn log_query(r: &proto::ListHandlerLogsRequest) -> Result<LogQuery, Error> {
    let min_level = match r.min_level.as_str() {
        "" => Level::Trace,
        s => Level::parse(s).ok_or_else(|| {
            Error::invalid(format!(
                "min_level {:.40?} is not a level: give trace, debug, info, warn or error",
                s
            ))
        })?,
    };
    let limit = match r.limit {
        0 => 100,
        n => (n as usize).min(crate::limits::MAX_HANDLER_LOG_PAGE),
    };
    Ok(LogQuery {
        service: r.service.clone(),
        min_level,
        before: r.before,
        limit,
    })
}

impl RegistryApi {
    async fn quota_info(&self, ns: &Namespace) -> Result<proto::QuotaInfo, Error> {
        let q = &self.0.quotas;
        Ok(proto::QuotaInfo {
            namespace: ns.to_string(),
            limits: Some(q.limits(ns).to_proto()),
            overrides: q.overrides().get(ns),
            usage: Some(q.usage(&self.0.catalog, ns).await?),
        })
    }
}

/// The caller's key (key calls always have one: the gate checked it).
fn caller<T>(req: &Request<T>) -> Result<Arc<crate::auth::Identity>, Error> {
    super::identity(req).ok_or_else(|| Error::internal("key calls are authenticated"))
}
