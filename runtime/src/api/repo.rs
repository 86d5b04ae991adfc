//! CollectionRepo: collections themselves.

use super::streams::{
    ProgressOf, ProgressStream, TransferStream, made_report, piece_from_proto, piece_to_proto,
    progress_stream, transfer_report,
};
use super::{
    ApiState, call_options, collection_name, filters, labels, page_size, record_to_proto, timestamp,
};
use crate::backups::{BackupQuery, Verdict};
use crate::error::{Error, ErrorKind};
use crate::mesh::DiscoverQuery;
use crate::mesh::routing::Decision;
use crate::mesh::view::Member;
use crate::names::{CollectionName, Namespace};
use crate::proto::{
    self, collection_repo_client::CollectionRepoClient, collection_repo_server::CollectionRepo,
    collector_registry_client::CollectorRegistryClient,
};
use crate::store::backup::{Progress, StepProgress};
use crate::store::{BackupPolicy, CollectionMeta};
use crate::transfers::TransferProgress;
use std::sync::Arc;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

/// The CollectionRepo adapter.
pub struct RepoApi(pub Arc<ApiState>);

impl RepoApi {
    /// A backup, once the caller may do what the method needs in the
    /// namespace it was taken in.
    async fn backup<T>(&self, req: &Request<T>, id: &str) -> Result<proto::BackupInfo, Status> {
        let info = self.0.backups.get(id).await?;
        super::authorize_in(req, &Namespace::new(&info.namespace)?)?;
        Ok(info)
    }

    fn info(&self, m: CollectionMeta) -> proto::CollectionInfo {
        let (id, addr) = (self.0.node_id.clone(), self.0.address.clone());
        info(m, id, addr)
    }

    /// Here, or (returning the owner's answer) relayed to the owner.
    async fn locate<T>(&self, req: &Request<T>, ns: &str, name: &str) -> Result<Decision, Error> {
        let ns = self.0.namespace(req, ns)?;
        let name = collection_name(name)?;
        self.0
            .mesh
            .locate(&ns, &name, call_options(req.metadata()).hop)
            .await
    }

    fn client(&self, ch: Channel) -> CollectionRepoClient<Channel> {
        let max = self.0.peers.max_message_bytes();
        CollectionRepoClient::new(ch)
            .max_decoding_message_size(max)
            .max_encoding_message_size(max)
    }

    /// ALREADY_EXISTS if `ns`/`name` exists here or anywhere in the mesh.
    async fn refuse_taken(
        &self,
        ns: &Namespace,
        name: &CollectionName,
        hop: &u32,
    ) -> Result<(), Error> {
        if self.0.catalog.contains(ns, name) {
            return Err(Error::already_exists(format!(
                "collection {ns}/{name} exists; copy to another name, or delete it first"
            )));
        }
        if let Ok(Decision::Forward(peer)) = self.0.mesh.locate(ns, name, *hop).await {
            return Err(Error::already_exists(format!(
                "collection {ns}/{name} is on node {} ({}); copy to another name, or delete it there first",
                peer.node_id, peer.address
            )));
        }
        Ok(())
    }

    /// Sends the .proto files a message type needs to `peer`, so a
    /// collection of that type can be created there.
    async fn send_type(
        &self,
        ns: &Namespace,
        message_type: &str,
        peer: &Member,
        caller: Option<&crate::auth::Identity>,
    ) -> Result<(), Status> {
        let files = self
            .0
            .registry
            .file_with_deps(ns, None, Some(message_type))?;
        let mut req = Request::new(proto::RegisterProtoRequest {
            namespace: ns.to_string(),
            file_set: Some(prost_types::FileDescriptorSet { file: files }),
            sources: vec![],
        });
        self.0.peers.mark_own_call(req.metadata_mut(), caller);
        CollectorRegistryClient::new(self.0.peers.channel(&peer.address)?)
            .register_proto(req)
            .await
            .map_err(|s| Status::from(super::status::from_peer(&s, &peer.node_id)))?;
        Ok(())
    }
}

/// Returns early with the owner's answer when the collection the request
/// names (`namespace`, `name`) lives on another node (like CollectionService's
/// `here_or_relay!`).
macro_rules! relay_to_owner {
    ($self:ident, $req:ident, $method:ident) => {
        let r = $req.get_ref();
        if let Decision::Forward(peer) = $self.locate(&$req, &r.namespace, &r.name).await? {
            return $self
                .0
                .peers
                .relay(&peer, $req, |ch, r| async move {
                    $self.client(ch).$method(r).await
                })
                .await;
        }
    };
}

/// A collection's description with its record count and bytes on disk.
async fn described(state: &ApiState, m: CollectionMeta) -> Result<proto::CollectionInfo, Error> {
    let s = state.catalog.get(&m.namespace, &m.name)?.stats().await?;
    Ok(proto::CollectionInfo {
        record_count: s.records,
        size_bytes: s.size_bytes,
        file_count: s.files,
        file_bytes: s.file_bytes,
        ..info(m, state.node_id.clone(), state.address.clone())
    })
}

fn info(m: CollectionMeta, node_id: String, node_address: String) -> proto::CollectionInfo {
    proto::CollectionInfo {
        node_id,
        node_address,
        ..crate::store::meta::meta_to_proto(&m)
    }
}

/// A `namespace/name` page position this node issued (None for empty).
pub(super) fn parse_after(token: &str) -> Result<Option<(Namespace, CollectionName)>, Error> {
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
        ns.writable()?;
        let name = collection_name(&req.get_ref().name)?;
        let auto = req.get_ref().placement == proto::Placement::Auto as i32;
        let hop = call_options(req.metadata()).hop;
        if let Decision::Forward(peer) = self.0.mesh.place(&ns, &name, auto, hop)? {
            // The type travels with the collection.
            self.0.registry.message(&ns, &req.get_ref().message_type)?;
            let who = super::identity(&req);
            self.send_type(&ns, &req.get_ref().message_type, &peer, who.as_deref())
                .await?;
            return self
                .0
                .peers
                .relay(&peer, req, |ch, r| async move {
                    self.client(ch).create_collection(r).await
                })
                .await;
        }
        let r = req.into_inner();
        let meta = CollectionMeta {
            namespace: ns,
            name,
            message_type: r.message_type,
            labels: labels(&r.labels)?,
            description: r.description,
            indexes: r.indexes,
            created_us: 0,
            backup_policy: BackupPolicy::from_proto(r.backup_policy.as_ref()),
        };
        let meta = self.0.catalog.create(meta).await?;
        Ok(Response::new(self.info(meta)))
    }

    async fn delete_collection(
        &self,
        req: Request<proto::DeleteCollectionRequest>,
    ) -> Result<Response<proto::DeleteCollectionResponse>, Status> {
        relay_to_owner!(self, req, delete_collection);
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
        relay_to_owner!(self, req, get_collection);
        let ns = self.0.namespace(&req, &req.get_ref().namespace)?;
        let name = collection_name(&req.get_ref().name)?;
        let meta = self.0.catalog.meta(&ns, &name)?;
        Ok(Response::new(described(&self.0, meta).await?))
    }

    async fn update_collection(
        &self,
        req: Request<proto::UpdateCollectionRequest>,
    ) -> Result<Response<proto::CollectionInfo>, Status> {
        relay_to_owner!(self, req, update_collection);
        let ns = self.0.namespace(&req, &req.get_ref().namespace)?;
        let r = req.into_inner();
        let name = collection_name(&r.name)?;
        let change = crate::store::CollectionUpdate {
            description: r.description,
            set_labels: r.set_labels.into_iter().collect(),
            remove_labels: r.remove_labels,
            add_indexes: r.add_indexes,
            drop_indexes: r.drop_indexes,
            backup_policy: r
                .backup_policy
                .as_ref()
                .map(|p| BackupPolicy::from_proto(Some(p))),
        };
        let meta = self.0.catalog.update(&ns, &name, change).await?;
        Ok(Response::new(self.info(meta)))
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
            0 => crate::limits::DEFAULT_PAGE_SIZE,
            n => n.min(crate::limits::MAX_PAGE_SIZE),
        } as usize;
        let after = parse_after(&r.page_token)?;
        let labels = r
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let query = DiscoverQuery {
            namespace: ns,
            message_type: r.message_type.clone(),
            labels,
            after,
            limit: size + 1,
        };
        let (mut found, unreachable) = if call_options(req.metadata()).hop > 0 {
            // A peer asks for this node's own collections.
            let here = self.0.catalog.discover(
                query.namespace.as_ref(),
                &query.message_type,
                &query.labels,
                query.after.as_ref(),
                query.limit,
            );
            (here.into_iter().map(|m| self.info(m)).collect(), vec![])
        } else {
            let (found, unreachable) = self.0.mesh.discover(query).await;
            let found: Vec<_> = found
                .into_iter()
                .map(|l| info(l.meta, l.node_id, l.node_address))
                .collect();
            (found, unreachable)
        };
        let next = if found.len() > size {
            found.truncate(size);
            found
                .last()
                .map(|c| format!("{}/{}", c.namespace, c.name))
                .unwrap_or_default()
        } else {
            String::new()
        };
        // Only what the caller may see; the token stays where the unfiltered
        // page ended, so a short page still leads on to the rest.
        found.retain(|c| Namespace::new(&c.namespace).is_ok_and(|ns| super::sees(&req, &ns)));
        Ok(Response::new(proto::DiscoverResponse {
            collections: found,
            next_page_token: next,
            unreachable_nodes: unreachable,
        }))
    }

    async fn route(
        &self,
        req: Request<proto::RouteRequest>,
    ) -> Result<Response<proto::RouteResponse>, Status> {
        let ns = self.0.namespace(&req, &req.get_ref().namespace)?;
        let name = collection_name(&req.get_ref().name)?;
        if self.0.catalog.contains(&ns, &name) {
            return Ok(Response::new(proto::RouteResponse {
                address: self.0.address.clone(),
                node_id: self.0.node_id.clone(),
                alive: true,
            }));
        }
        let view = self.0.mesh.view();
        let owner = view.owner(ns.as_str(), name.as_str()).ok_or_else(|| {
            Error::not_found(format!(
                "collection {ns}/{name} does not exist on any node of the mesh"
            ))
        })?;
        Ok(Response::new(proto::RouteResponse {
            address: owner.address.clone(),
            node_id: owner.node_id.clone(),
            alive: owner.reachable(),
        }))
    }

    async fn meta(
        &self,
        _req: Request<proto::MetaRequest>,
    ) -> Result<Response<proto::MetaResponse>, Status> {
        let info = self.0.info.clone();
        let dir = info.data_dir.clone();
        // Walking the data dir is file work: off the executor.
        let bytes = tokio::task::spawn_blocking(move || crate::node_info::dir_bytes(&dir))
            .await
            .map_err(|e| Error::internal(format!("data dir walk: {e}")))?;
        Ok(Response::new(proto::MetaResponse {
            version: info.version.to_string(),
            node_id: self.0.node_id.clone(),
            address: self.0.address.clone(),
            started_at: Some(timestamp(info.started_us)),
            uptime_seconds: info.uptime_seconds(),
            data_dir_bytes: i64::try_from(bytes).unwrap_or(i64::MAX),
            collections: self.0.catalog.count() as i64,
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
                                    &rec,
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

    type BackupCollectionStream = ProgressStream;

    async fn backup_collection(
        &self,
        req: Request<proto::BackupCollectionRequest>,
    ) -> Result<Response<ProgressStream>, Status> {
        let r = req.get_ref();
        if let Decision::Forward(peer) = self.locate(&req, &r.namespace, &r.name).await? {
            let answer = self
                .0
                .peers
                .relay(&peer, req, |ch, r| async move {
                    self.client(ch).backup_collection(r).await
                })
                .await?;
            return Ok(Response::new(
                Box::pin(answer.into_inner()) as ProgressStream
            ));
        }
        let ns = self.0.namespace(&req, &r.namespace)?;
        let name = collection_name(&r.name)?;
        // Refused before the stream starts, so a bad request is one status.
        self.0.catalog.get(&ns, &name)?;
        let (progress, seen) = tokio::sync::watch::channel(Progress::default());
        let backups = self.0.backups.clone();
        // Its own task: a caller that goes away does not cut a backup short.
        let with_files = r.include_files;
        let task =
            tokio::spawn(async move { backups.create(&ns, &name, with_files, progress).await });
        Ok(Response::new(progress_stream(
            task,
            seen,
            |p: Progress| proto::BackupProgress {
                pages_done: p.pages_done,
                pages_total: p.pages_total,
                bytes_done: p.bytes_done(),
                bytes_total: p.bytes_total(),
                backup: None,
            },
            |b: proto::BackupInfo, _| proto::BackupProgress {
                pages_done: b.page_count,
                pages_total: b.page_count,
                bytes_done: b.size_bytes,
                bytes_total: b.size_bytes,
                backup: Some(b),
            },
        )))
    }

    async fn list_backups(
        &self,
        req: Request<proto::ListBackupsRequest>,
    ) -> Result<Response<proto::ListBackupsResponse>, Status> {
        let r = req.get_ref();
        if !r.collection.is_empty() {
            // A collection deleted everywhere still has its backups here.
            match self.locate(&req, &r.namespace, &r.collection).await {
                Ok(Decision::Forward(peer)) => {
                    return self
                        .0
                        .peers
                        .relay(&peer, req, |ch, r| async move {
                            self.client(ch).list_backups(r).await
                        })
                        .await;
                }
                Err(e) if e.kind != ErrorKind::NotFound => return Err(e.into()),
                _ => {}
            }
        }
        let ns = self.0.namespace(&req, &r.namespace)?;
        let r = req.into_inner();
        let collection = match r.collection.as_str() {
            "" => None,
            c => Some(collection_name(c)?),
        };
        let (backups, next_page_token) = self
            .0
            .backups
            .list(BackupQuery {
                namespace: ns,
                collection,
                since_us: r.since.as_ref().map(crate::util::timestamp_us),
                page_size: r.page_size,
                page_token: r.page_token,
            })
            .await?;
        Ok(Response::new(proto::ListBackupsResponse {
            backups,
            next_page_token,
        }))
    }

    async fn get_backup(
        &self,
        req: Request<proto::GetBackupRequest>,
    ) -> Result<Response<proto::BackupInfo>, Status> {
        Ok(Response::new(
            self.backup(&req, &req.get_ref().backup_id).await?,
        ))
    }

    type VerifyBackupStream = ProgressOf<proto::VerifyProgress>;

    async fn verify_backup(
        &self,
        req: Request<proto::VerifyBackupRequest>,
    ) -> Result<Response<Self::VerifyBackupStream>, Status> {
        // Refused before the stream starts, so a bad id is one status.
        self.backup(&req, &req.get_ref().backup_id).await?;
        let id = req.into_inner().backup_id;
        let (progress, seen) = tokio::sync::watch::channel(StepProgress::default());
        let backups = self.0.backups.clone();
        let task = tokio::spawn(async move { backups.verify(&id, progress).await });
        Ok(Response::new(progress_stream(
            task,
            seen,
            |p: StepProgress| proto::VerifyProgress {
                step: p.step.name().into(),
                bytes_done: p.bytes_done,
                bytes_total: p.bytes_total,
                verdict: None,
            },
            |v: Verdict, p| proto::VerifyProgress {
                step: p.step.name().into(),
                bytes_done: p.bytes_total,
                bytes_total: p.bytes_total,
                verdict: Some(proto::VerifyBackupResponse {
                    valid: v.problems.is_empty(),
                    problems: v.problems,
                    backup: Some(v.backup),
                }),
            },
        )))
    }

    async fn delete_backup(
        &self,
        req: Request<proto::DeleteBackupRequest>,
    ) -> Result<Response<proto::DeleteBackupResponse>, Status> {
        self.backup(&req, &req.get_ref().backup_id).await?;
        let freed_bytes = self.0.backups.delete(&req.get_ref().backup_id).await?;
        Ok(Response::new(proto::DeleteBackupResponse { freed_bytes }))
    }

    type RestoreBackupStream = ProgressOf<proto::RestoreProgress>;

    async fn restore_backup(
        &self,
        req: Request<proto::RestoreBackupRequest>,
    ) -> Result<Response<Self::RestoreBackupStream>, Status> {
        let r = req.get_ref();
        // `admin` where the copy lands and where the backup was taken.
        let ns = match r.namespace.as_str() {
            "" => None,
            _ => Some(self.0.namespace(&req, &r.namespace)?),
        };
        let name = match r.name.as_str() {
            "" => None,
            n => Some(collection_name(n)?),
        };
        self.backup(&req, &r.backup_id).await?;
        if let (Some(ns), Some(name)) = (&ns, &name)
            && let Ok(Decision::Forward(peer)) = self
                .0
                .mesh
                .locate(ns, name, call_options(req.metadata()).hop)
                .await
        {
            return Err(Error::already_exists(format!(
                "collection {ns}/{name} is on node {} ({}); restore to another name, or delete it there first",
                peer.node_id, peer.address
            ))
            .into());
        }
        let r = req.into_inner();
        let (progress, seen) = tokio::sync::watch::channel(StepProgress::default());
        let backups = self.0.backups.clone();
        // Its own task: a caller that goes away does not cut a restore short.
        let state = self.0.clone();
        let task = tokio::spawn(async move {
            let meta = backups
                .restore(
                    &r.backup_id,
                    ns,
                    name,
                    r.include_files,
                    r.overwrite,
                    progress,
                )
                .await?;
            described(&state, meta).await
        });
        Ok(Response::new(progress_stream(
            task,
            seen,
            |p: StepProgress| proto::RestoreProgress {
                step: p.step.name().into(),
                bytes_done: p.bytes_done,
                bytes_total: p.bytes_total,
                collection: None,
            },
            |made: proto::CollectionInfo, p| proto::RestoreProgress {
                step: p.step.name().into(),
                bytes_done: p.bytes_total,
                bytes_total: p.bytes_total,
                collection: Some(made),
            },
        )))
    }

    type CloneStream = TransferStream;

    async fn clone(
        &self,
        req: Request<proto::CloneRequest>,
    ) -> Result<Response<TransferStream>, Status> {
        let r = req.get_ref();
        if let Decision::Forward(peer) = self.locate(&req, &r.namespace, &r.name).await? {
            let answer = self
                .0
                .peers
                .relay(&peer, req, |ch, r| async move {
                    // The generated `clone` RPC, not `Clone::clone`.
                    CollectionRepoClient::<Channel>::clone(&mut self.client(ch), r).await
                })
                .await?;
            return Ok(Response::new(
                Box::pin(answer.into_inner()) as TransferStream
            ));
        }
        let ns = self.0.namespace(&req, &r.namespace)?;
        let who = super::identity(&req);
        let r = req.into_inner();
        let name = collection_name(&r.name)?;
        self.0.catalog.get(&ns, &name)?;
        let dest_ns = match r.dest_namespace.as_str() {
            "" => ns.clone(),
            d => Namespace::new(d)?,
        };
        if let Some(who) = &who {
            who.require(crate::auth::Role::Develop, &dest_ns)?;
        }
        let dest_name = collection_name(&r.dest_name)?;
        let view = self.0.mesh.view();
        let here = r.dest_node.is_empty()
            || r.dest_node == self.0.node_id
            || r.dest_node == self.0.address;
        if !here {
            let to = crate::transfers::member(&view, &r.dest_node, "dest_node")?;
            self.refuse_taken(&dest_ns, &dest_name, &0).await?;
            let (progress, seen) = tokio::sync::watch::channel(TransferProgress::default());
            let state = self.0.clone();
            let dest_id = to.node_id.clone();
            let task = tokio::spawn(async move {
                let mesh = state.mesh.clone();
                let resolve = move || crate::transfers::member(&mesh.view(), &dest_id, "dest_node");
                state
                    .transfers
                    .push(
                        state.peers.as_ref(),
                        resolve,
                        &ns,
                        &name,
                        &dest_ns,
                        &dest_name,
                        r.include_files,
                        progress,
                    )
                    .await
            });
            return Ok(Response::new(progress_stream(
                task,
                seen,
                transfer_report,
                made_report,
            )));
        }
        self.refuse_taken(&dest_ns, &dest_name, &0).await?;
        let (progress, seen) = tokio::sync::watch::channel(TransferProgress::default());
        let transfers = self.0.transfers.clone();
        let state = self.0.clone();
        let task = tokio::spawn(async move {
            let meta = transfers
                .clone_here(&ns, &name, dest_ns, dest_name, r.include_files, progress)
                .await?;
            described(&state, meta).await
        });
        Ok(Response::new(progress_stream(
            task,
            seen,
            transfer_report,
            made_report,
        )))
    }

    type FetchStream = TransferStream;

    async fn fetch(
        &self,
        req: Request<proto::FetchRequest>,
    ) -> Result<Response<TransferStream>, Status> {
        let hop = call_options(req.metadata()).hop;
        let ns = self.0.namespace(&req, &req.get_ref().namespace)?;
        let who = super::identity(&req);
        let r = req.into_inner();
        let name = collection_name(&r.name)?;
        let dest_ns = match r.dest_namespace.as_str() {
            "" => ns.clone(),
            d => Namespace::new(d)?,
        };
        if let Some(who) = &who {
            who.require(crate::auth::Role::Develop, &dest_ns)?;
        }
        let dest_name = match r.dest_name.as_str() {
            "" => name.clone(),
            d => collection_name(d)?,
        };
        dest_ns.writable()?;
        let view = self.0.mesh.view();
        let from = crate::transfers::member(&view, &r.source_node, "source_node")?;
        if from.node_id == self.0.node_id {
            return Err(Error::invalid(
                "source_node is this node; copy a collection here with Clone",
            )
            .into());
        }
        self.refuse_taken(&dest_ns, &dest_name, &hop).await?;
        let (progress, seen) = tokio::sync::watch::channel(TransferProgress::default());
        let state = self.0.clone();
        let source_id = from.node_id.clone();
        let task = {
            let state = state.clone();
            tokio::spawn(async move {
                let mesh = state.mesh.clone();
                let resolve =
                    move || crate::transfers::member(&mesh.view(), &source_id, "source_node");
                let meta = state
                    .transfers
                    .fetch(
                        state.peers.as_ref(),
                        resolve,
                        &ns,
                        &name,
                        dest_ns,
                        dest_name,
                        r.include_files,
                        progress,
                    )
                    .await?;
                described(&state, meta).await
            })
        };
        Ok(Response::new(progress_stream(
            task,
            seen,
            transfer_report,
            made_report,
        )))
    }

    type PullCollectionStream = ProgressOf<proto::CollectionChunk>;

    async fn pull_collection(
        &self,
        req: Request<proto::PullCollectionRequest>,
    ) -> Result<Response<Self::PullCollectionStream>, Status> {
        use tokio_stream::StreamExt;
        let ns = self.0.namespace(&req, &req.get_ref().namespace)?;
        let r = req.into_inner();
        let name = collection_name(&r.name)?;
        let pieces = self
            .0
            .transfers
            .pull(&ns, &name, &r.transfer_id, r.offset, r.include_files)
            .await?;
        let out = pieces.map(|p| Ok(piece_to_proto(p?)));
        Ok(Response::new(Box::pin(out) as Self::PullCollectionStream))
    }

    async fn push_collection(
        &self,
        req: Request<Arrivals>,
    ) -> Result<Response<proto::PushCollectionResponse>, Status> {
        use proto::collection_chunk::Part;
        use tokio_stream::StreamExt;
        let hop = call_options(req.metadata()).hop;
        let caller_ns = self.0.namespace(&req, "")?;
        let mut arrivals = req.into_inner();
        let header = match arrivals.next().await {
            Some(Ok(proto::CollectionChunk {
                part: Some(Part::Header(h)),
            })) => h,
            Some(Err(s)) => return Err(s),
            _ => {
                return Err(
                    Error::invalid("a push starts with a header naming its destination").into(),
                );
            }
        };
        let dest_ns = match header.dest_namespace.as_str() {
            "" => caller_ns,
            d => Namespace::new(d)?,
        };
        let dest_name = collection_name(&header.dest_name)?;
        if !self.0.transfers.made_here(&header.transfer_id) {
            self.refuse_taken(&dest_ns, &dest_name, &hop).await?;
        }
        let rest = arrivals.map(|m| match m {
            Ok(m) => piece_from_proto(m),
            Err(s) => Err(Error::unavailable(format!(
                "the push stream broke: {}",
                crate::names::clip(s.message())
            ))),
        });
        let pushed = self
            .0
            .transfers
            .receive_push(
                &header.transfer_id,
                header.size_bytes,
                dest_ns,
                dest_name,
                Box::pin(rest),
            )
            .await?;
        let collection = match pushed.made {
            Some(m) => Some(described(&self.0, m).await?),
            None => None,
        };
        Ok(Response::new(proto::PushCollectionResponse {
            received_bytes: pushed.received_bytes,
            collection,
        }))
    }
}

/// PushCollection's request stream as pieces.
type Arrivals = tonic::Streaming<proto::CollectionChunk>;
