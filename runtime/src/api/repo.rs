//! CollectionRepo: collections themselves.

use super::{ApiState, collection_name, filters, labels, page_size, record_to_proto, timestamp};
use crate::error::Error;
use crate::names::{CollectionName, Namespace};
use crate::proto::{self, collection_repo_server::CollectionRepo};
use crate::store::CollectionMeta;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// The CollectionRepo adapter.
pub struct RepoApi(pub Arc<ApiState>);

impl RepoApi {
    fn info(&self, m: CollectionMeta) -> proto::CollectionInfo {
        proto::CollectionInfo {
            namespace: m.namespace.to_string(),
            name: m.name.to_string(),
            message_type: m.message_type,
            labels: m.labels.into_iter().collect(),
            description: m.description,
            indexes: m.indexes,
            created_at: Some(timestamp(m.created_us)),
            record_count: 0,
            size_bytes: 0,
            node_id: self.0.node_id.clone(),
        }
    }
}

fn parse_after(token: &str) -> Result<Option<(Namespace, CollectionName)>, Error> {
    if token.is_empty() {
        return Ok(None);
    }
    let bad = || Error::invalid("page_token is not one this node issued; start again without it");
    let (ns, name) = token.split_once('/').ok_or_else(bad)?;
    Ok(Some((
        Namespace::new(ns).map_err(|_| bad())?,
        CollectionName::new(name).map_err(|_| bad())?,
    )))
}

#[tonic::async_trait]
impl CollectionRepo for RepoApi {
    async fn create_collection(
        &self,
        req: Request<proto::CreateCollectionRequest>,
    ) -> Result<Response<proto::CollectionInfo>, Status> {
        let ns = self.0.namespace(&req, &req.get_ref().namespace)?;
        let r = req.into_inner();
        let meta = CollectionMeta {
            namespace: ns,
            name: collection_name(&r.name)?,
            message_type: r.message_type,
            labels: labels(&r.labels)?,
            description: r.description,
            indexes: r.indexes,
            created_us: 0,
        };
        let meta = self.0.catalog.create(meta).await?;
        Ok(Response::new(self.info(meta)))
    }

    async fn delete_collection(
        &self,
        req: Request<proto::DeleteCollectionRequest>,
    ) -> Result<Response<proto::DeleteCollectionResponse>, Status> {
        let ns = self.0.namespace(&req, &req.get_ref().namespace)?;
        self.0
            .catalog
            .delete(&ns, &collection_name(&req.get_ref().name)?)
            .await?;
        Ok(Response::new(proto::DeleteCollectionResponse {}))
    }

    async fn get_collection(
        &self,
        req: Request<proto::GetCollectionRequest>,
    ) -> Result<Response<proto::CollectionInfo>, Status> {
        let ns = self.0.namespace(&req, &req.get_ref().namespace)?;
        let name = collection_name(&req.get_ref().name)?;
        let meta = self.0.catalog.meta(&ns, &name)?;
        let (count, size) = self.0.catalog.get(&ns, &name)?.stats().await?;
        let mut info = self.info(meta);
        info.record_count = count;
        info.size_bytes = size;
        Ok(Response::new(info))
    }

    async fn discover(
        &self,
        req: Request<proto::DiscoverRequest>,
    ) -> Result<Response<proto::DiscoverResponse>, Status> {
        let r = req.get_ref();
        let ns = if r.namespace.is_empty() {
            None
        } else {
            Some(Namespace::new(&r.namespace)?)
        };
        let size = match page_size(r.page_size)? {
            0 => 100,
            n => n.min(1000),
        } as usize;
        let after = parse_after(&r.page_token)?;
        let labels = r
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut found = self.0.catalog.discover(
            ns.as_ref(),
            &r.message_type,
            &labels,
            after.as_ref(),
            size + 1,
        );
        let next = if found.len() > size {
            found.truncate(size);
            found
                .last()
                .map(|m| format!("{}/{}", m.namespace, m.name))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(proto::DiscoverResponse {
            collections: found.into_iter().map(|m| self.info(m)).collect(),
            next_page_token: next,
        }))
    }

    async fn route(
        &self,
        req: Request<proto::RouteRequest>,
    ) -> Result<Response<proto::RouteResponse>, Status> {
        let ns = self.0.namespace(&req, &req.get_ref().namespace)?;
        self.0
            .catalog
            .meta(&ns, &collection_name(&req.get_ref().name)?)?;
        Ok(Response::new(proto::RouteResponse {
            address: self.0.address.clone(),
            node_id: self.0.node_id.clone(),
        }))
    }

    async fn search_collections(
        &self,
        req: Request<proto::SearchCollectionsRequest>,
    ) -> Result<Response<proto::SearchCollectionsResponse>, Status> {
        let ns = self.0.namespace(&req, &req.get_ref().namespace)?;
        let r = req.get_ref();
        let names = r
            .collections
            .iter()
            .map(|n| collection_name(n))
            .collect::<Result<Vec<_>, _>>()?;
        let limit = match page_size(r.limit_per_collection)? {
            0 => 10,
            n => n.min(1000),
        };
        let labels = r
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let groups = self
            .0
            .catalog
            .search_many(&ns, &names, &r.query, &filters(&r.filters)?, &labels, limit)
            .await?;
        let total = groups.iter().map(|g| g.total).sum();
        let groups = groups
            .into_iter()
            .map(|g| {
                let desc = self
                    .0
                    .catalog
                    .get(&ns, &g.collection)
                    .map(|c| c.descriptor().clone());
                proto::CollectionHits {
                    collection: g.collection.to_string(),
                    total_count: g.total,
                    hits: g
                        .page
                        .hits
                        .into_iter()
                        .filter_map(|(rec, score)| {
                            Some(proto::SearchHit {
                                record: Some(record_to_proto(
                                    desc.as_ref().ok()?,
                                    rec,
                                    r.include_json,
                                )),
                                score,
                            })
                        })
                        .collect(),
                }
            })
            .collect();
        Ok(Response::new(proto::SearchCollectionsResponse {
            groups,
            total_count: total,
        }))
    }
}
