//! CollectionService's file methods: PutFile, GetFile, StatFile, ListFiles
//! and DeleteFile, translated to the collection's files (`store::files`).
//! A call on a collection another node owns is relayed there, streams
//! piped through rather than gathered.

use super::collection::{CollectionApi, Target};
use crate::error::{Error, Result};
use crate::names::{FilePath, RecordId};
use crate::proto::{self, collection_service_client::CollectionServiceClient};
use crate::store::{Collection, FileMeta, PutFile};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

/// A stream of GetFile messages.
pub type FileStream = Pin<Box<dyn Stream<Item = Result<proto::GetFileResponse, Status>> + Send>>;

fn info(m: FileMeta) -> proto::FileInfo {
    proto::FileInfo {
        record_id: m.record_id,
        path: m.path,
        size_bytes: m.size_bytes,
        blake3: m.blake3,
        content_type: m.content_type,
        version: m.version,
        created_at: Some(super::timestamp(m.created_us)),
        updated_at: Some(super::timestamp(m.updated_us)),
    }
}

/// The record and path a request names.
fn names(f: &proto::FileRef) -> Result<(RecordId, FilePath)> {
    Ok((
        RecordId::new(&f.record_id).map_err(|e| e.context("file.record_id"))?,
        FilePath::new(&f.path)?,
    ))
}

fn file_ref(f: &Option<proto::FileRef>) -> Result<&proto::FileRef> {
    f.as_ref()
        .ok_or_else(|| Error::invalid("file is missing: name the collection, record and path"))
}

impl CollectionApi {
    async fn file_target<T>(
        &self,
        req: &Request<T>,
        f: &proto::FileRef,
        write: bool,
    ) -> Result<Target> {
        self.target(req, &f.namespace, &f.collection, write).await
    }

    fn client(
        &self,
        ch: tonic::transport::Channel,
    ) -> CollectionServiceClient<tonic::transport::Channel> {
        let max = self.0.peers.max_message_bytes();
        CollectionServiceClient::new(ch)
            .max_decoding_message_size(max)
            .max_encoding_message_size(max)
    }

    /// PutFile: the header, then chunks.
    pub(super) async fn put_file_call(
        &self,
        req: Request<Streaming<proto::PutFileRequest>>,
    ) -> Result<Response<proto::FileInfo>, Status> {
        use proto::put_file_request::Part;
        let (meta, ext, mut stream) = req.into_parts();
        let header = match stream.message().await? {
            Some(proto::PutFileRequest {
                part: Some(Part::Header(h)),
            }) => h,
            _ => {
                return Err(Error::invalid(
                    "a PutFile stream starts with its header (collection, record, path)",
                )
                .into());
            }
        };
        let probe = Request::from_parts(meta, ext, ());
        let f = file_ref(&header.file)?;
        let coll = match self.file_target(&probe, f, true).await? {
            Target::Here(_, c) => c,
            Target::Owner(peer) => {
                // Piped to the owner as it arrives: the header, then the rest.
                let (meta, ext, ()) = probe.into_parts();
                let (tx, rx) = tokio::sync::mpsc::channel(2);
                let first = proto::PutFileRequest {
                    part: Some(Part::Header(header)),
                };
                tokio::spawn(async move {
                    if tx.send(first).await.is_err() {
                        return;
                    }
                    // A client stream that breaks here just stops: with no
                    // `end` the owner changes nothing.
                    while let Some(Ok(m)) = stream.next().await {
                        if tx.send(m).await.is_err() {
                            return;
                        }
                    }
                });
                let out =
                    Request::from_parts(meta, ext, tokio_stream::wrappers::ReceiverStream::new(rx));
                return self
                    .0
                    .peers
                    .relay(&peer, out, |ch, r| async move {
                        self.client(ch).put_file(r).await
                    })
                    .await;
            }
        };
        let (id, path) = names(f)?;
        let put = PutFile {
            content_type: header.content_type.clone(),
            expected_size: header.expected_size,
            expected_blake3: (!header.expected_blake3.is_empty())
                .then(|| header.expected_blake3.clone()),
            if_absent: header.if_absent,
            expected_version: header.expected_version,
        };
        // Only an explicit `end` commits (see PutFileRequest): the stream
        // is read up to it, and one that stops before it fails the put.
        let ended = Arc::new(AtomicBool::new(false));
        let seen_end = ended.clone();
        let body = stream
            .take_while(move |m| {
                let end = matches!(
                    m,
                    Ok(proto::PutFileRequest {
                        part: Some(Part::End(_))
                    })
                );
                seen_end.fetch_or(end, Ordering::Relaxed);
                !end
            })
            .map(|m| match m {
                Ok(proto::PutFileRequest {
                    part: Some(Part::Chunk(data)),
                }) => {
                    if data.len() > crate::limits::MAX_FILE_CHUNK_BYTES {
                        return Err(Error::invalid(format!(
                            "a chunk of {} bytes; send at most {} per message",
                            data.len(),
                            crate::limits::MAX_FILE_CHUNK_BYTES
                        )));
                    }
                    Ok(data)
                }
                Ok(_) => Err(Error::invalid(
                    "a PutFile stream is one header, then chunks, then end",
                )),
                Err(s) => Err(Error::unavailable(format!(
                    "the PutFile stream broke; nothing was changed: {}",
                    crate::names::clip(s.message())
                ))),
            });
        let mut checked = false;
        let tail = tokio_stream::iter(std::iter::from_fn(move || {
            if checked || ended.load(Ordering::Relaxed) {
                return None;
            }
            checked = true;
            Some(Err(Error::invalid(
                "the PutFile stream stopped before its end message, so nothing was changed (send end after the last chunk)",
            )))
        }));
        let chunks = body.chain(tail);
        let made = coll.put_file(id, path, put, Box::pin(chunks)).await?;
        Ok(Response::new(info(made)))
    }

    /// GetFile: a header, then the bytes.
    pub(super) async fn get_file_call(
        &self,
        req: Request<proto::GetFileRequest>,
    ) -> Result<Response<FileStream>, Status> {
        let f = file_ref(&req.get_ref().file)?;
        let coll = match self.file_target(&req, f, false).await? {
            Target::Here(_, c) => c,
            Target::Owner(peer) => {
                let answer = self
                    .0
                    .peers
                    .relay(&peer, req, |ch, r| async move {
                        self.client(ch).get_file(r).await
                    })
                    .await?;
                return Ok(Response::new(Box::pin(answer.into_inner()) as FileStream));
            }
        };
        let (id, path) = names(f)?;
        let r = req.get_ref();
        let (meta, bytes) = coll.get_file(id, path, r.offset, r.length).await?;
        use proto::get_file_response::Part;
        let header = tokio_stream::once(Ok(proto::GetFileResponse {
            part: Some(Part::Header(info(meta))),
        }));
        let chunks = bytes.map(|b| match b {
            Ok(data) => Ok(proto::GetFileResponse {
                part: Some(Part::Chunk(data)),
            }),
            Err(e) => Err(Status::from(e)),
        });
        Ok(Response::new(Box::pin(header.chain(chunks)) as FileStream))
    }

    /// StatFile.
    pub(super) async fn stat_file_call(
        &self,
        req: Request<proto::StatFileRequest>,
    ) -> Result<Response<proto::FileInfo>, Status> {
        let f = file_ref(&req.get_ref().file)?;
        let coll = match self.file_target(&req, f, false).await? {
            Target::Here(_, c) => c,
            Target::Owner(peer) => {
                return self
                    .0
                    .peers
                    .relay(&peer, req, |ch, r| async move {
                        self.client(ch).stat_file(r).await
                    })
                    .await;
            }
        };
        let (id, path) = names(f)?;
        Ok(Response::new(info(coll.stat_file(id, path).await?)))
    }

    /// ListFiles.
    pub(super) async fn list_files_call(
        &self,
        req: Request<proto::ListFilesRequest>,
    ) -> Result<Response<proto::ListFilesResponse>, Status> {
        let r = req.get_ref();
        let coll: Arc<Collection> = match self
            .target(&req, &r.namespace, &r.collection, false)
            .await?
        {
            Target::Here(_, c) => c,
            Target::Owner(peer) => {
                return self
                    .0
                    .peers
                    .relay(&peer, req, |ch, r| async move {
                        self.client(ch).list_files(r).await
                    })
                    .await;
            }
        };
        let r = req.into_inner();
        let id = RecordId::new(&r.record_id).map_err(|e| e.context("record_id"))?;
        let prefix = FilePath::prefix(&r.prefix).map_err(|e| e.context("prefix"))?;
        let page = coll
            .list_files(
                id,
                prefix,
                super::page_size(r.page_size)? as usize,
                r.page_token,
            )
            .await?;
        Ok(Response::new(proto::ListFilesResponse {
            files: page.files.into_iter().map(info).collect(),
            next_page_token: page.next_token,
        }))
    }

    /// DeleteFile.
    pub(super) async fn delete_file_call(
        &self,
        req: Request<proto::DeleteFileRequest>,
    ) -> Result<Response<proto::FileInfo>, Status> {
        let f = file_ref(&req.get_ref().file)?;
        let coll = match self.file_target(&req, f, true).await? {
            Target::Here(_, c) => c,
            Target::Owner(peer) => {
                return self
                    .0
                    .peers
                    .relay(&peer, req, |ch, r| async move {
                        self.client(ch).delete_file(r).await
                    })
                    .await;
            }
        };
        let (id, path) = names(f)?;
        let expected = req.get_ref().expected_version;
        Ok(Response::new(info(
            coll.delete_file(id, path, expected).await?,
        )))
    }
}
