//! CollectionService: records of one collection.

use super::{
    ApiState, collection_name, filters, labels, order, page_size, payload, record_to_proto,
};
use crate::error::{Error, Result};
use crate::handlers::Invocation;
use crate::mesh::routing::Decision;
use crate::mesh::view::Member;
use crate::names::{Namespace, RecordId};
use crate::proto::{
    self, collection_service_client::CollectionServiceClient,
    collection_service_server::CollectionService,
};
use crate::store::{self, Collection, Mask, Query, WriteOp, Written};
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// The CollectionService adapter.
pub struct CollectionApi(pub Arc<ApiState>);

/// Where a call on a collection is answered.
pub(super) enum Target {
    Here(Namespace, Arc<Collection>),
    /// The collection's owner, another node of the mesh.
    Owner(Member),
}

impl CollectionApi {
    pub(super) async fn target<T>(
        &self,
        req: &Request<T>,
        ns: &str,
        coll: &str,
        write: bool,
    ) -> Result<Target> {
        let ns = self.0.namespace(req, ns)?;
        if write {
            ns.writable()?;
        }
        let name = collection_name(coll)?;
        // The common case first: the collection is here.
        if let Ok(c) = self.0.catalog.get(&ns, &name) {
            return Ok(Target::Here(ns, c));
        }
        match self
            .0
            .mesh
            .locate(&ns, &name, super::call_options(req.metadata()).hop)
            .await?
        {
            Decision::Here => Ok(Target::Here(ns.clone(), self.0.catalog.get(&ns, &name)?)),
            Decision::Forward(owner) => Ok(Target::Owner(owner)),
        }
    }
}

/// The local collection a request names, or (returning early) the owner's
/// answer to the request relayed there.
macro_rules! here_or_relay {
    ($self:ident, $req:ident, $write:expr, $method:ident) => {{
        let r = $req.get_ref();
        match $self
            .target(&$req, &r.namespace, &r.collection, $write)
            .await?
        {
            Target::Here(ns, c) => (ns, c),
            Target::Owner(peer) => {
                let max = $self.0.peers.max_message_bytes();
                return $self
                    .0
                    .peers
                    .relay(&peer, $req, |ch, r| async move {
                        CollectionServiceClient::new(ch)
                            .max_decoding_message_size(max)
                            .max_encoding_message_size(max)
                            .$method(r)
                            .await
                    })
                    .await;
            }
        }
    }};
}

fn create_op(c: &Collection, r: &proto::CreateRequest) -> Result<WriteOp> {
    let rec = r
        .record
        .as_ref()
        .ok_or_else(|| Error::invalid("record is missing"))?;
    let (msg, wire) = payload(c.descriptor(), rec)?.ok_or_else(|| {
        Error::invalid(format!(
            "record has no payload: set data (an Any of {}) or json",
            c.descriptor().full_name()
        ))
    })?;
    let encoded = store::codec::encode_with_wire(&msg, wire)?;
    Ok(WriteOp::Create {
        id: super::optional_id(&rec.id)?,
        payload: encoded,
        labels: labels(&rec.labels)?,
    })
}

fn update_op(c: &Collection, r: &proto::UpdateRequest) -> Result<WriteOp> {
    let rec = r
        .record
        .as_ref()
        .ok_or_else(|| Error::invalid("record is missing: it carries the id and the new values"))?;
    let id = RecordId::new(&rec.id).map_err(|e| e.context("record.id"))?;
    let mask = Mask::parse(
        r.update_mask
            .as_ref()
            .map(|m| m.paths.as_slice())
            .unwrap_or_default(),
    )?;
    Ok(WriteOp::Update {
        id,
        data: payload(c.descriptor(), rec)?.map(|(m, _)| m),
        labels: labels(&rec.labels)?,
        mask,
        expected_version: r.expected_version,
    })
}

fn delete_op(r: &proto::DeleteRequest) -> Result<WriteOp> {
    Ok(WriteOp::Delete {
        id: RecordId::new(&r.id)?,
        expected_version: r.expected_version,
    })
}

fn stored(c: &Collection, w: Written) -> proto::Record {
    match w {
        Written::Stored(r) => record_to_proto(c.descriptor(), &r, false),
        Written::Deleted => proto::Record::default(),
    }
}

fn check_same(i: usize, what: &str, inner: &str, outer: &str) -> Result<()> {
    if !inner.is_empty() && inner != outer {
        return Err(Error::invalid(format!(
            "ops[{i}]: {what} {inner:?} differs from the batch's {outer:?}; leave it empty"
        )));
    }
    Ok(())
}

fn query(
    text: &str,
    fs: &[proto::Filter],
    ls: &std::collections::HashMap<String, String>,
    o: &Option<proto::OrderBy>,
    size: i32,
    token: &str,
) -> Result<Query> {
    Ok(Query {
        text: text.to_string(),
        filters: filters(fs)?,
        labels: ls.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        order: order(o),
        page_size: page_size(size)?,
        page_token: token.to_string(),
    })
}

#[tonic::async_trait]
impl CollectionService for CollectionApi {
    async fn create(
        &self,
        req: Request<proto::CreateRequest>,
    ) -> Result<Response<proto::Record>, Status> {
        let (_, c) = here_or_relay!(self, req, true, create);
        let op = create_op(&c, req.get_ref())?;
        Ok(Response::new(stored(&c, c.write(op).await?)))
    }

    async fn get(
        &self,
        req: Request<proto::GetRequest>,
    ) -> Result<Response<proto::Record>, Status> {
        let (_, c) = here_or_relay!(self, req, false, get);
        let r = req.get_ref();
        let rec = c.get(RecordId::new(&r.id)?).await?;
        Ok(Response::new(record_to_proto(
            c.descriptor(),
            &rec,
            r.include_json,
        )))
    }

    async fn update(
        &self,
        req: Request<proto::UpdateRequest>,
    ) -> Result<Response<proto::Record>, Status> {
        let (_, c) = here_or_relay!(self, req, true, update);
        let op = update_op(&c, req.get_ref())?;
        Ok(Response::new(stored(&c, c.write(op).await?)))
    }

    async fn delete(
        &self,
        req: Request<proto::DeleteRequest>,
    ) -> Result<Response<proto::DeleteResponse>, Status> {
        let (_, c) = here_or_relay!(self, req, true, delete);
        c.write(delete_op(req.get_ref())?).await?;
        Ok(Response::new(proto::DeleteResponse {}))
    }

    async fn list(
        &self,
        req: Request<proto::ListRequest>,
    ) -> Result<Response<proto::ListResponse>, Status> {
        let (_, c) = here_or_relay!(self, req, false, list);
        let r = req.get_ref();
        let q = query(
            "",
            &[],
            &Default::default(),
            &r.order_by,
            r.page_size,
            &r.page_token,
        )?;
        let (page, _) = c.search(q, false).await?;
        Ok(Response::new(proto::ListResponse {
            records: page
                .hits
                .into_iter()
                .map(|(rec, _)| record_to_proto(c.descriptor(), &rec, r.include_json))
                .collect(),
            next_page_token: page.next_token,
        }))
    }

    async fn search(
        &self,
        req: Request<proto::SearchRequest>,
    ) -> Result<Response<proto::SearchResponse>, Status> {
        let (_, c) = here_or_relay!(self, req, false, search);
        let r = req.get_ref();
        let q = query(
            &r.query,
            &r.filters,
            &r.labels,
            &r.order_by,
            r.page_size,
            &r.page_token,
        )?;
        let (page, total) = c.search(q, true).await?;
        Ok(Response::new(proto::SearchResponse {
            hits: page
                .hits
                .into_iter()
                .map(|(rec, score)| proto::SearchHit {
                    record: Some(record_to_proto(c.descriptor(), &rec, r.include_json)),
                    score,
                })
                .collect(),
            total_count: total.unwrap_or(0),
            next_page_token: page.next_token,
        }))
    }

    async fn batch(
        &self,
        req: Request<proto::BatchRequest>,
    ) -> Result<Response<proto::BatchResponse>, Status> {
        let (ns, c) = here_or_relay!(self, req, true, batch);
        let r = req.get_ref();
        if r.ops.is_empty() {
            return Err(Error::invalid("batch has no ops").into());
        }
        let mut ops = Vec::with_capacity(r.ops.len());
        for (i, op) in r.ops.iter().enumerate() {
            use proto::batch_op::Op;
            let (ons, ocoll, built) = match op.op.as_ref() {
                Some(Op::Create(x)) => (&x.namespace, &x.collection, create_op(&c, x)),
                Some(Op::Update(x)) => (&x.namespace, &x.collection, update_op(&c, x)),
                Some(Op::Delete(x)) => (&x.namespace, &x.collection, delete_op(x)),
                None => {
                    return Err(Error::invalid(format!(
                        "ops[{i}] is empty: set create, update or delete"
                    ))
                    .into());
                }
            };
            check_same(i, "namespace", ons, ns.as_str())?;
            check_same(i, "collection", ocoll, c.name.as_str())?;
            ops.push(built.map_err(|e| e.context(format!("ops[{i}]")))?);
        }
        let outcome = c.batch(ops).await?;
        Ok(Response::new(proto::BatchResponse {
            committed: outcome.committed,
            results: outcome
                .results
                .into_iter()
                .map(|res| match res {
                    Ok(w) => proto::BatchOpResult {
                        code: 0,
                        message: String::new(),
                        record: Some(stored(&c, w)).filter(|r| !r.id.is_empty()),
                    },
                    Err(e) => proto::BatchOpResult {
                        code: e.kind.grpc_code(),
                        message: e.message,
                        record: None,
                    },
                })
                .collect(),
        }))
    }

    async fn count(
        &self,
        req: Request<proto::CountRequest>,
    ) -> Result<Response<proto::CountResponse>, Status> {
        let (_, c) = here_or_relay!(self, req, false, count);
        let r = req.get_ref();
        let q = query(&r.query, &r.filters, &r.labels, &None, 0, "")?;
        Ok(Response::new(proto::CountResponse {
            count: c.count(q).await?,
        }))
    }

    async fn invoke(
        &self,
        req: Request<proto::InvokeRequest>,
    ) -> Result<Response<proto::InvokeResponse>, Status> {
        let (ns, c) = here_or_relay!(self, req, false, invoke);
        let super::Caller {
            mut metadata,
            options,
            request_id: rid,
        } = super::Caller::of(&req);
        let r = req.into_inner();
        let (service, method) = r.method.split_once('/').ok_or_else(|| {
            Error::invalid(format!(
                "method {:?}: give SERVICE/METHOD, e.g. shop.Orders/Total",
                r.method
            ))
        })?;
        // The owner runs it, fetching the handler if it does not have it yet.
        self.0.mesh.ensure_service(&ns, service).await?;
        let m = self
            .0
            .handlers
            .bound_method(&ns, service, method, &c.name)?;
        let input = r.input.unwrap_or_default();
        super::check_input_type(&input, m.input().full_name(), &r.method)?;
        metadata.push((super::COLLECTION_HEADER.to_string(), c.name.to_string()));
        let inv = Invocation {
            namespace: ns,
            service: service.to_string(),
            method: method.to_string(),
            input: input.value,
            metadata,
            options,
        };
        let out = self.0.mesh.run_here(inv, rid.as_deref()).await?;
        Ok(Response::new(proto::InvokeResponse {
            output: Some(prost_types::Any {
                type_url: format!(
                    "{}{}",
                    store::codec::TYPE_URL_PREFIX,
                    m.output().full_name()
                ),
                value: out,
            }),
            node_id: self.0.node_id.clone(),
        }))
    }

    async fn put_file(
        &self,
        req: Request<tonic::Streaming<proto::PutFileRequest>>,
    ) -> Result<Response<proto::FileInfo>, Status> {
        self.put_file_call(req).await
    }

    type GetFileStream = super::files::FileStream;

    async fn get_file(
        &self,
        req: Request<proto::GetFileRequest>,
    ) -> Result<Response<Self::GetFileStream>, Status> {
        self.get_file_call(req).await
    }

    async fn stat_file(
        &self,
        req: Request<proto::StatFileRequest>,
    ) -> Result<Response<proto::FileInfo>, Status> {
        self.stat_file_call(req).await
    }

    async fn list_files(
        &self,
        req: Request<proto::ListFilesRequest>,
    ) -> Result<Response<proto::ListFilesResponse>, Status> {
        self.list_files_call(req).await
    }

    async fn delete_file(
        &self,
        req: Request<proto::DeleteFileRequest>,
    ) -> Result<Response<proto::FileInfo>, Status> {
        self.delete_file_call(req).await
    }
}
