//! gRPC server reflection (v1 and v1alpha) over the live descriptor pools:
//! the built-in services plus the caller's namespace types (chosen by the
//! `x-collector-namespace` metadata), so grpcurl can decode registered types.
//! tonic-reflection's own service is frozen at start, hence this one.

use super::{ApiState, NAMESPACE_HEADER};
use crate::names::Namespace;
use crate::registry;
use prost::Message;
use prost_reflect::DescriptorPool;
use std::sync::Arc;

/// The reflection service, mounted twice (v1 and v1alpha).
#[derive(Clone)]
pub struct Reflection {
    state: Arc<ApiState>,
    builtin: DescriptorPool,
    services: Vec<String>,
}

enum Ask {
    File(String),
    Symbol(String),
    Extension,
    ExtensionNumbers(String),
    Services,
}

enum Answer {
    Files(Vec<Vec<u8>>),
    Services(Vec<String>),
    ExtensionNumbers(String),
    NotFound(String),
}

fn add_set(pool: &mut DescriptorPool, bytes: &[u8]) {
    let set = prost_types::FileDescriptorSet::decode(bytes).expect("embedded descriptor set");
    for f in set.file {
        if pool.get_file_by_name(f.name()).is_none() {
            pool.add_file_descriptor_proto(f)
                .expect("embedded descriptors are consistent");
        }
    }
}

impl Reflection {
    /// Builds the service; `services` are the built-in service names it lists.
    pub fn new(state: Arc<ApiState>) -> Self {
        let mut builtin = crate::proto::api_pool();
        add_set(&mut builtin, tonic_health::pb::FILE_DESCRIPTOR_SET);
        add_set(&mut builtin, tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET);
        add_set(
            &mut builtin,
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        );
        let services = builtin
            .services()
            .map(|s| s.full_name().to_string())
            .collect();
        Reflection {
            state,
            builtin,
            services,
        }
    }

    fn namespace_pool<T>(&self, req: &tonic::Request<T>) -> (Namespace, DescriptorPool) {
        let ns = req
            .metadata()
            .get(NAMESPACE_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| Namespace::new(s).ok())
            .unwrap_or_else(|| self.state.default_namespace.clone());
        // A caller without a role in the namespace sees only the built-ins.
        let pool = if super::sees(req, &ns) {
            self.state.registry.pool(&ns)
        } else {
            DescriptorPool::new()
        };
        (ns, pool)
    }

    /// Answers from the built-in and namespace pools; types and services
    /// registered only on other nodes of the mesh are fetched from there.
    async fn answer(&self, (ns, ns_pool): &(Namespace, DescriptorPool), ask: Ask) -> Answer {
        let pools = [&self.builtin, ns_pool];
        let encode = |files: Vec<prost_types::FileDescriptorProto>| {
            Answer::Files(files.iter().map(|p| p.encode_to_vec()).collect())
        };
        let mesh = &self.state.mesh;
        match ask {
            Ask::Services => {
                let mut registered: Vec<String> = self
                    .state
                    .handlers
                    .list(ns)
                    .into_iter()
                    .map(|s| s.service)
                    .chain(mesh.mesh_services(ns))
                    .collect();
                registered.sort();
                registered.dedup();
                let mut names = self.services.clone();
                names.extend(registered);
                Answer::Services(names)
            }
            Ask::File(name) => match pools.iter().find_map(|p| p.get_file_by_name(&name)) {
                Some(f) => encode(registry::with_deps(&f)),
                None => match mesh.remote_file(ns, &name).await {
                    Some(files) => encode(files),
                    None => Answer::NotFound(format!("file {name:?} not found")),
                },
            },
            Ask::Symbol(s) => match pools.iter().find_map(|p| registry::symbol_file(p, &s)) {
                Some(f) => encode(registry::with_deps(&f)),
                None => match mesh.remote_symbol_file(ns, &s).await {
                    Some(files) => encode(files),
                    None => Answer::NotFound(format!("symbol {s:?} not found")),
                },
            },
            Ask::Extension => Answer::NotFound("extensions are not supported".into()),
            Ask::ExtensionNumbers(t) => Answer::ExtensionNumbers(t),
        }
    }
}

macro_rules! reflection_version {
    ($version:ident) => {
        /// The reflection service of this protocol version.
        pub mod $version {
            use super::{Answer, Ask, Reflection};
            use std::pin::Pin;
            use tokio_stream::{Stream, StreamExt};
            use tonic::{Request, Response, Status, Streaming};
            use tonic_reflection::pb::$version::{
                ErrorResponse, ExtensionNumberResponse, FileDescriptorResponse,
                ListServiceResponse, ServerReflectionRequest, ServerReflectionResponse,
                ServiceResponse,
                server_reflection_request::MessageRequest,
                server_reflection_response::MessageResponse,
                server_reflection_server::{ServerReflection, ServerReflectionServer},
            };

            /// The service, ready to mount.
            pub fn server(r: Reflection) -> ServerReflectionServer<Reflection> {
                ServerReflectionServer::new(r)
            }

            type Out = Pin<Box<dyn Stream<Item = Result<ServerReflectionResponse, Status>> + Send>>;

            #[tonic::async_trait]
            impl ServerReflection for Reflection {
                type ServerReflectionInfoStream = Out;

                async fn server_reflection_info(
                    &self,
                    req: Request<Streaming<ServerReflectionRequest>>,
                ) -> Result<Response<Out>, Status> {
                    let pool = self.namespace_pool(&req);
                    let this = self.clone();
                    let (tx, rx) = tokio::sync::mpsc::channel(4);
                    let mut inbound = req.into_inner();
                    tokio::spawn(async move {
                        while let Some(Ok(msg)) = inbound.next().await {
                            let ask = match msg.message_request.clone() {
                                Some(MessageRequest::FileByFilename(f)) => Ask::File(f),
                                Some(MessageRequest::FileContainingSymbol(s)) => Ask::Symbol(s),
                                Some(MessageRequest::FileContainingExtension(_)) => Ask::Extension,
                                Some(MessageRequest::AllExtensionNumbersOfType(t)) => {
                                    Ask::ExtensionNumbers(t)
                                }
                                Some(MessageRequest::ListServices(_)) => Ask::Services,
                                None => {
                                    let _ = tx
                                        .send(Err(Status::invalid_argument(
                                            "empty reflection request",
                                        )))
                                        .await;
                                    return;
                                }
                            };
                            let response = match this.answer(&pool, ask).await {
                                Answer::Files(f) => MessageResponse::FileDescriptorResponse(
                                    FileDescriptorResponse {
                                        file_descriptor_proto: f,
                                    },
                                ),
                                Answer::Services(s) => {
                                    MessageResponse::ListServicesResponse(ListServiceResponse {
                                        service: s
                                            .into_iter()
                                            .map(|name| ServiceResponse { name })
                                            .collect(),
                                    })
                                }
                                Answer::ExtensionNumbers(t) => {
                                    MessageResponse::AllExtensionNumbersResponse(
                                        ExtensionNumberResponse {
                                            base_type_name: t,
                                            extension_number: vec![],
                                        },
                                    )
                                }
                                Answer::NotFound(m) => {
                                    MessageResponse::ErrorResponse(ErrorResponse {
                                        error_code: tonic::Code::NotFound as i32,
                                        error_message: m,
                                    })
                                }
                            };
                            let out = ServerReflectionResponse {
                                valid_host: msg.host.clone(),
                                original_request: Some(msg),
                                message_response: Some(response),
                            };
                            if tx.send(Ok(out)).await.is_err() {
                                return;
                            }
                        }
                    });
                    Ok(Response::new(
                        Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)) as Out,
                    ))
                }
            }
        }
    };
}

reflection_version!(v1);
reflection_version!(v1alpha);
