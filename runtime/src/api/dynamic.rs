//! Registered methods on their own gRPC paths (`/shop.Orders/Create`):
//! tonic's router is fixed at start, so a fallback service takes every path
//! it does not know and runs it through the registered services, with the
//! namespace from `x-collector-namespace` (else the node's). A method
//! registered only on another node of the mesh is forwarded there; with
//! `x-collector-collection` metadata, to the owner of that collection.

use super::{ApiState, COLLECTION_HEADER};
use crate::error::Error;
use crate::handlers::Invocation;
use crate::mesh::DispatchCall;
use crate::names::CollectionName;
use prost::bytes::{Buf, BufMut, Bytes};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http;
use tonic::{Request, Response, Status};

/// Passes message bytes through untouched (the handler validates them).
#[derive(Debug, Clone, Copy, Default)]
pub struct BytesCodec;

impl Codec for BytesCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = BytesCodec;
    type Decoder = BytesCodec;
    fn encoder(&mut self) -> Self::Encoder {
        BytesCodec
    }
    fn decoder(&mut self) -> Self::Decoder {
        BytesCodec
    }
}

impl Encoder for BytesCodec {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for BytesCodec {
    type Item = Bytes;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// The fallback service.
#[derive(Clone)]
pub struct RegisteredMethods {
    state: Arc<ApiState>,
    max_message_bytes: usize,
}

impl RegisteredMethods {
    /// The fallback over the node's state; messages up to `max_message_bytes`.
    pub fn new(state: Arc<ApiState>, max_message_bytes: usize) -> Self {
        RegisteredMethods {
            state,
            max_message_bytes,
        }
    }
}

struct Call {
    state: Arc<ApiState>,
    service: String,
    method: String,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl tonic::server::UnaryService<Bytes> for Call {
    type Response = Bytes;
    type Future = BoxFuture<Result<Response<Bytes>, Status>>;

    fn call(&mut self, req: Request<Bytes>) -> Self::Future {
        let (state, service, method) = (
            self.state.clone(),
            self.service.clone(),
            self.method.clone(),
        );
        Box::pin(async move {
            let ns = state.namespace(&req, "")?;
            // Streaming methods are refused wherever the method is known.
            if let Some(m) = state
                .registry
                .pool(&ns)
                .get_service_by_name(&service)
                .and_then(|s| s.methods().find(|m| m.name() == method))
                && (m.is_client_streaming() || m.is_server_streaming())
            {
                return Err(Status::unimplemented(format!(
                    "{service}/{method} is a streaming method; handlers serve unary methods"
                )));
            }
            let super::Caller {
                metadata,
                options,
                request_id: rid,
            } = super::Caller::of(&req);
            // `x-collector-collection` names the data the call is about: the
            // call then runs on that collection's owner.
            let collection = req
                .metadata()
                .get(COLLECTION_HEADER)
                .map(|v| {
                    v.to_str()
                        .map_err(|_| Error::invalid(format!("{COLLECTION_HEADER} is not ASCII")))
                        .and_then(CollectionName::new)
                })
                .transpose()?;
            let call = DispatchCall {
                invocation: Invocation {
                    namespace: ns,
                    service,
                    method,
                    input: req.into_inner().to_vec(),
                    metadata,
                    options,
                },
                collection,
                target_node: None,
                request_id: rid,
            };
            let out = state.mesh.dispatch(call).await?;
            Ok(Response::new(Bytes::from(out.output)))
        })
    }
}

impl<B> tonic::codegen::Service<http::Request<B>> for RegisteredMethods
where
    B: tonic::codegen::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let path = req.uri().path().trim_start_matches('/').to_string();
        let (state, max) = (self.state.clone(), self.max_message_bytes);
        Box::pin(async move {
            let Some((service, method)) = path
                .split_once('/')
                .filter(|(s, m)| !s.is_empty() && !m.is_empty() && !m.contains('/'))
            else {
                return Ok(Status::unimplemented(format!("no such method: /{path}")).into_http());
            };
            let call = Call {
                state,
                service: service.to_string(),
                method: method.to_string(),
            };
            let mut grpc = tonic::server::Grpc::new(BytesCodec)
                .apply_max_message_size_config(Some(max), Some(max));
            Ok(grpc.unary(call, req).await)
        })
    }
}
