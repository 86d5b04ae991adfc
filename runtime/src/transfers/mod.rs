//! Moving collections between names and nodes: `Clone` (here, or pushed
//! to a member of the mesh), `Fetch` (pulled from a member), and the peer
//! ends of both, `PullCollection` and `PushCollection`.
//!
//! What travels is a snapshot file (the same self-describing file a backup
//! is, `store::backup`), kept under `<data dir>/transfers/` while it may be
//! resumed, and streamed as a header, chunks of `TRANSFER_CHUNK_BYTES` each
//! with its blake3, and a manifest (size, page count, whole-file hash, type,
//! record count). The receiver appends chunks to a part file, checks each
//! hash and offset, resumes from its last good byte when the stream breaks
//! (same snapshot, by its transfer id: a fetch asks the source for the rest,
//! a push first asks the destination how much it holds), and only after the whole file
//! matches the manifest and passes SQLite's integrity check does the new
//! collection appear. A transfer that fails leaves nothing behind. Remote
//! ends are members of this node's mesh, never arbitrary addresses.

use crate::backups::Backups;
use crate::error::{Error, ErrorKind, Result};
use crate::limits::{MAX_TRANSFER_RESUMES, TRANSFER_RETAIN};
use crate::mesh::view::{Member, View};
use crate::names::{CollectionName, Namespace};
use crate::store::CollectionMeta;
use crate::store::backup::{Progress, Take};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;
use tokio_stream::{Stream, StreamExt};

mod part;
use part::{PartFile, blocking, chunk_hash, describe, read_chunk};

/// What a snapshot holds, as the manifest that ends a transfer says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferManifest {
    /// Bytes of the file.
    pub size_bytes: i64,
    /// SQLite pages.
    pub page_count: i64,
    /// blake3 of the whole file, hex.
    pub blake3: String,
    /// Full name of the records' type.
    pub message_type: String,
    /// Records.
    pub record_count: i64,
}

/// One piece of a transfer stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// First: which snapshot, and how big.
    Header {
        /// The snapshot's id on the source (to resume with).
        transfer_id: String,
        /// Bytes of the whole file.
        size_bytes: i64,
    },
    /// Bytes of the file at `offset`.
    Chunk {
        /// Where they go.
        offset: i64,
        /// The bytes.
        data: Vec<u8>,
        /// Their blake3, hex.
        blake3: String,
    },
    /// Last: what the whole file must be.
    Manifest(TransferManifest),
}

/// A stream of pieces.
pub type PieceStream = Pin<Box<dyn Stream<Item = Result<Piece>> + Send>>;

/// Where a fetch pulls from: another node's `PullCollection` (the API
/// implements it over gRPC).
pub trait Source: Send + Sync {
    /// Asks `from` for the collection `ns`/`name` from byte `offset` of the
    /// snapshot `transfer_id` (empty: a new snapshot, with the records'
    /// files if `include_files`).
    fn pull(
        &self,
        from: &Member,
        ns: &Namespace,
        name: &CollectionName,
        transfer_id: &str,
        offset: i64,
        include_files: bool,
    ) -> PieceStream;
}

/// Where a clone pushes to: another node's `PushCollection` (the API
/// implements it over gRPC). `M` is what the destination answers with once
/// the collection is made there.
pub trait Sink<M>: Send + Sync {
    /// Sends `pieces` (a header, then chunks and a manifest, or the header
    /// alone to ask where to resume) to `to`, to become `dest_ns`/`dest_name`.
    fn push(
        &self,
        to: &Member,
        dest_ns: &Namespace,
        dest_name: &CollectionName,
        pieces: Pin<Box<dyn Stream<Item = Piece> + Send>>,
    ) -> Pin<Box<dyn std::future::Future<Output = Result<Pushed<M>>> + Send>>;
}

/// A destination's answer to a push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pushed<M> {
    /// Bytes of the transfer it holds: where the next push starts.
    pub received_bytes: i64,
    /// The collection, once the whole file arrived and matched.
    pub made: Option<M>,
}

/// The step a transfer is at; `bytes_done` counts within it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum TransferStep {
    /// The source copies the collection into a snapshot file.
    #[default]
    Snapshot,
    /// Chunks of the snapshot cross to the node making the copy.
    Sending,
    /// The node making the copy checks the whole file against the manifest
    /// (size, hash, SQLite's integrity check, type, count).
    Checking,
    /// The file is moved into place and opened as the new collection.
    Opening,
}

impl TransferStep {
    /// The step's name in progress reports.
    pub fn name(self) -> &'static str {
        match self {
            TransferStep::Snapshot => "snapshot",
            TransferStep::Sending => "sending",
            TransferStep::Checking => "checking",
            TransferStep::Opening => "opening",
        }
    }
}

/// How far a transfer has got.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransferProgress {
    /// The step under way.
    pub step: TransferStep,
    /// Bytes of the snapshot that step has done.
    pub bytes_done: i64,
    /// Bytes of the snapshot (while it is taken: of the collection).
    pub bytes_total: i64,
    /// Times it resumed after a dropped connection.
    pub resumed: u32,
}

/// A snapshot being served to a peer.
#[derive(Debug, Clone)]
struct Outgoing {
    path: PathBuf,
    manifest: TransferManifest,
}

/// A push arriving here, or one that made its collection (remembered for
/// `TRANSFER_RETAIN`, so a source whose answer was lost learns it worked).
#[derive(Debug, Clone)]
enum Incoming {
    Arriving,
    Made(Box<CollectionMeta>, std::time::Instant),
}

/// The node's transfers.
pub struct Transfers {
    dir: PathBuf,
    backups: Arc<Backups>,
    /// Most bytes per second sent to one pull or push.
    rate: Option<u64>,
    outgoing: Mutex<HashMap<uuid::Uuid, Outgoing>>,
    incoming: Arc<Mutex<HashMap<uuid::Uuid, Incoming>>>,
}

/// Forgets an arriving push when its stream ends, however it ends.
struct Arriving {
    id: uuid::Uuid,
    incoming: Arc<Mutex<HashMap<uuid::Uuid, Incoming>>>,
}

impl Drop for Arriving {
    fn drop(&mut self) {
        let mut inc = self.incoming.lock().expect("incoming lock");
        if matches!(inc.get(&self.id), Some(Incoming::Arriving)) {
            inc.remove(&self.id);
        }
    }
}

/// The member `who` names (a node id or a gRPC address), alive: only
/// members of this node's mesh are ever contacted.
pub fn member(view: &View, who: &str, role: &str) -> Result<Member> {
    let m = view
        .members
        .values()
        .find(|m| m.node_id == who || m.address == who)
        .ok_or_else(|| {
            Error::not_found(format!(
                "{role} {:?} is not a member of this node's mesh (see ListPeers)",
                crate::names::clip(who)
            ))
        })?;
    if !m.reachable() {
        return Err(Error::unavailable(format!(
            "{role} {} ({}) is dead in this node's view; retry when it is back",
            m.node_id, m.address
        )));
    }
    Ok(m.clone())
}

impl Transfers {
    /// Opens the transfers of the node whose data dir is `data_dir`; what a
    /// crash or an old transfer left there is removed.
    pub fn open(data_dir: &Path, backups: Arc<Backups>, rate: Option<u64>) -> Result<Arc<Self>> {
        let dir = data_dir.join("transfers");
        std::fs::create_dir_all(&dir)?;
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            // Snapshots may be resumed across a restart of this node; parts
            // and temporaries belong to a fetch that a restart ended.
            let stale = !name.ends_with(".db") || old(&entry.path());
            if stale {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(Arc::new(Transfers {
            dir,
            backups,
            rate,
            outgoing: Mutex::new(HashMap::new()),
            incoming: Arc::new(Mutex::new(HashMap::new())),
        }))
    }

    fn sweep_outgoing(&self) {
        let mut out = self.outgoing.lock().expect("outgoing lock");
        out.retain(|_, o| {
            let keep = !old(&o.path);
            if !keep {
                let _ = std::fs::remove_file(&o.path);
            }
            keep
        });
    }

    /// The snapshot a pull serves: `transfer_id`'s (to resume), or a new one.
    async fn snapshot_for(
        &self,
        ns: &Namespace,
        name: &CollectionName,
        transfer_id: &str,
        include_files: bool,
        progress: watch::Sender<Progress>,
    ) -> Result<(uuid::Uuid, Outgoing)> {
        self.sweep_outgoing();
        if !transfer_id.is_empty() {
            let id = uuid::Uuid::parse_str(transfer_id).map_err(|_| {
                Error::invalid(format!(
                    "transfer_id {:?} is not one this node made",
                    crate::names::clip(transfer_id)
                ))
            })?;
            if let Some(o) = self.outgoing.lock().expect("outgoing lock").get(&id) {
                return Ok((id, o.clone()));
            }
            let path = self.dir.join(format!("out-{id}.db"));
            if !path.exists() {
                return Err(Error::not_found(format!(
                    "transfer {id} is gone from this node (kept {} s); start again without transfer_id",
                    TRANSFER_RETAIN.as_secs()
                )));
            }
            // Resumed after this node restarted: describe the file again.
            let p = path.clone();
            let manifest = blocking(move || describe(&p)).await?;
            let o = Outgoing { path, manifest };
            self.outgoing
                .lock()
                .expect("outgoing lock")
                .insert(id, o.clone());
            return Ok((id, o));
        }
        let id = uuid::Uuid::now_v7();
        let path = self.dir.join(format!("out-{id}.db"));
        let (snap, manifest) = self
            .backups
            .snapshot_to(ns, name, &id.to_string(), &path, include_files, progress)
            .await?;
        let o = Outgoing {
            path,
            manifest: TransferManifest {
                size_bytes: snap.size_bytes,
                page_count: snap.page_count,
                blake3: snap.blake3,
                message_type: manifest.message_type,
                record_count: snap.record_count,
            },
        };
        self.outgoing
            .lock()
            .expect("outgoing lock")
            .insert(id, o.clone());
        Ok((id, o))
    }

    /// The source side of a fetch: a snapshot of `ns`/`name` (or the one
    /// `transfer_id` names) from byte `offset` on. Chunks are read one at a
    /// time as the receiver takes them, so the file is never in memory.
    pub async fn pull(
        &self,
        ns: &Namespace,
        name: &CollectionName,
        transfer_id: &str,
        offset: i64,
        include_files: bool,
    ) -> Result<PieceStream> {
        // Nobody here follows a snapshot a peer asked for.
        let (unseen, _) = watch::channel(Progress::default());
        let (id, o) = self
            .snapshot_for(ns, name, transfer_id, include_files, unseen)
            .await?;
        let size = o.manifest.size_bytes;
        if offset < 0 || offset > size {
            return Err(Error::invalid(format!(
                "offset {offset} is outside the snapshot's {size} bytes"
            )));
        }
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let rate = self.rate;
        tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            let header = Piece::Header {
                transfer_id: id.to_string(),
                size_bytes: size,
            };
            if tx.send(Ok(header)).await.is_err() {
                return;
            }
            let mut at = offset;
            while at < size {
                let path = o.path.clone();
                // Read and hashed off the executor.
                let read = blocking(move || {
                    let data = read_chunk(&path, at)?;
                    Ok((chunk_hash(&data), data))
                })
                .await;
                let piece = read.map(|(blake3, data)| Piece::Chunk {
                    offset: at,
                    blake3,
                    data,
                });
                let failed = piece.is_err();
                at += match &piece {
                    Ok(Piece::Chunk { data, .. }) => data.len() as i64,
                    _ => 0,
                };
                if tx.send(piece).await.is_err() || failed {
                    return;
                }
                if let Some(r) = rate {
                    let due = std::time::Duration::from_secs_f64((at - offset) as f64 / r as f64);
                    tokio::time::sleep_until(started + due).await;
                }
            }
            let _ = tx.send(Ok(Piece::Manifest(o.manifest))).await;
        });
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }

    /// Copies `ns`/`name` to `dest_ns`/`dest_name` on this node, with the
    /// records' files if `include_files`.
    pub async fn clone_here(
        &self,
        ns: &Namespace,
        name: &CollectionName,
        dest_ns: Namespace,
        dest_name: CollectionName,
        include_files: bool,
        progress: watch::Sender<TransferProgress>,
    ) -> Result<CollectionMeta> {
        dest_ns.writable()?;
        let id = uuid::Uuid::now_v7();
        let path = self.dir.join(format!("clone-{id}.db"));
        let progress = Arc::new(progress);
        let (snap_progress, follow) = follow_snapshot(progress.clone());
        let made = self
            .backups
            .snapshot_to(
                ns,
                name,
                &id.to_string(),
                &path,
                include_files,
                snap_progress,
            )
            .await;
        let _ = follow.await;
        self.open_received(made.map(drop), &path, dest_ns, dest_name, &progress)
            .await
    }

    /// Copies `ns`/`name` from the member `resolve` names into a new
    /// collection `dest_ns`/`dest_name` here, with the records' files if
    /// `include_files`. `resolve` is asked again before each resume (the
    /// member may have moved or restarted).
    #[allow(clippy::too_many_arguments)]
    pub async fn fetch(
        &self,
        source: &dyn Source,
        resolve: impl Fn() -> Result<Member>,
        ns: &Namespace,
        name: &CollectionName,
        dest_ns: Namespace,
        dest_name: CollectionName,
        include_files: bool,
        progress: watch::Sender<TransferProgress>,
    ) -> Result<CollectionMeta> {
        dest_ns.writable()?;
        let part = self.dir.join(format!("in-{}.part", uuid::Uuid::now_v7()));
        let received = self
            .receive(source, resolve, ns, name, include_files, &part, &progress)
            .await;
        self.open_received(received, &part, dest_ns, dest_name, &progress)
            .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn receive(
        &self,
        source: &dyn Source,
        resolve: impl Fn() -> Result<Member>,
        ns: &Namespace,
        name: &CollectionName,
        include_files: bool,
        part: &Path,
        progress: &watch::Sender<TransferProgress>,
    ) -> Result<()> {
        let mut file = PartFile::open(part).await?;
        let mut state = TransferProgress::default();
        let mut transfer_id = String::new();
        let mut last_from = String::new();
        loop {
            let from = match resolve() {
                Ok(m) => m,
                // Dead in this node's view for now (a restart, say): wait as
                // for a broken stream.
                Err(e)
                    if e.kind == ErrorKind::Unavailable && state.resumed < MAX_TRANSFER_RESUMES =>
                {
                    backoff(&mut state, progress).await;
                    continue;
                }
                Err(e) => {
                    return Err(e.context(format!("fetching {ns}/{name} from {last_from}")));
                }
            };
            last_from = from.node_id.clone();
            let mut stream = source.pull(
                &from,
                ns,
                name,
                &transfer_id,
                state.bytes_done,
                include_files,
            );
            let broke = loop {
                let piece = match stream.next().await {
                    Some(Ok(p)) => p,
                    Some(Err(e)) => break e,
                    None => {
                        break Error::unavailable(
                            "the source ended the stream before its manifest",
                        );
                    }
                };
                match piece {
                    Piece::Header {
                        transfer_id: id,
                        size_bytes,
                    } => {
                        if !transfer_id.is_empty() && id != transfer_id {
                            return Err(Error::internal(format!(
                                "the source answered a resume of transfer {transfer_id} with {}",
                                crate::names::clip(&id)
                            )));
                        }
                        transfer_id = id;
                        state.step = TransferStep::Sending;
                        state.bytes_total = size_bytes;
                        progress.send_replace(state);
                    }
                    Piece::Chunk {
                        offset,
                        data,
                        blake3,
                    } => match file.append(offset, data, &blake3).await {
                        Ok(()) => {
                            state.bytes_done = file.len;
                            progress.send_replace(state);
                        }
                        // Damaged on the way: resume from the last good byte.
                        Err(e) if e.kind == ErrorKind::Unavailable => break e,
                        Err(e) => return Err(e),
                    },
                    Piece::Manifest(m) => return file.finish(m, progress).await,
                }
            };
            if !retryable(&broke) || state.resumed >= MAX_TRANSFER_RESUMES {
                return Err(broke.context(format!("fetching {ns}/{name} from {}", from.node_id)));
            }
            tracing::warn!(error = %broke, resumed = state.resumed + 1, at = state.bytes_done, "transfer broke; resuming");
            backoff(&mut state, progress).await;
            file.cut().await?;
        }
    }

    /// Copies `ns`/`name` to a new collection `dest_ns`/`dest_name` on the
    /// member `resolve` names (asked again before each resume), pushing a
    /// snapshot in chunks: each attempt first asks the destination how much
    /// it holds and goes on from there. Answers with what the destination
    /// made.
    #[allow(clippy::too_many_arguments)]
    pub async fn push<M: Send + 'static>(
        &self,
        sink: &dyn Sink<M>,
        resolve: impl Fn() -> Result<Member>,
        ns: &Namespace,
        name: &CollectionName,
        dest_ns: &Namespace,
        dest_name: &CollectionName,
        include_files: bool,
        progress: watch::Sender<TransferProgress>,
    ) -> Result<M> {
        dest_ns.writable()?;
        let progress = Arc::new(progress);
        let (snap_progress, follow) = follow_snapshot(progress.clone());
        let snapshot = self
            .snapshot_for(ns, name, "", include_files, snap_progress)
            .await;
        let _ = follow.await;
        let (id, o) = snapshot?;
        let out = self
            .push_snapshot(
                sink, resolve, id, &o, ns, name, dest_ns, dest_name, &progress,
            )
            .await;
        // Nobody else resumes a push: its snapshot goes when it ends.
        self.outgoing.lock().expect("outgoing lock").remove(&id);
        let _ = std::fs::remove_file(&o.path);
        out
    }

    #[allow(clippy::too_many_arguments)]
    async fn push_snapshot<M: Send + 'static>(
        &self,
        sink: &dyn Sink<M>,
        resolve: impl Fn() -> Result<Member>,
        id: uuid::Uuid,
        o: &Outgoing,
        ns: &Namespace,
        name: &CollectionName,
        dest_ns: &Namespace,
        dest_name: &CollectionName,
        progress: &Arc<watch::Sender<TransferProgress>>,
    ) -> Result<M> {
        let size = o.manifest.size_bytes;
        let mut state = TransferProgress {
            step: TransferStep::Sending,
            bytes_total: size,
            ..Default::default()
        };
        let header = Piece::Header {
            transfer_id: id.to_string(),
            size_bytes: size,
        };
        let mut last_to = String::new();
        loop {
            let to = match resolve() {
                Ok(m) => m,
                Err(e)
                    if e.kind == ErrorKind::Unavailable && state.resumed < MAX_TRANSFER_RESUMES =>
                {
                    backoff(&mut state, progress).await;
                    continue;
                }
                Err(e) => return Err(e.context(format!("pushing {ns}/{name} to {last_to}"))),
            };
            last_to = to.node_id.clone();
            let attempt = async {
                let asked = sink
                    .push(
                        &to,
                        dest_ns,
                        dest_name,
                        Box::pin(tokio_stream::iter([header.clone()])),
                    )
                    .await?;
                if asked.made.is_some() {
                    // An earlier attempt made it; only its answer was lost.
                    return Ok(asked.made);
                }
                let at = asked.received_bytes;
                state.bytes_done = at;
                progress.send_replace(state);
                let pieces = self.pull(ns, name, &id.to_string(), at, false).await?;
                let (pieces, failed) = until_error(pieces);
                let seen = progress.clone();
                let pieces = pieces.map(move |p| {
                    match &p {
                        Piece::Chunk { offset, data, .. } => {
                            let done = offset + data.len() as i64;
                            seen.send_modify(|s| s.bytes_done = done);
                        }
                        // The destination checks and opens the file now,
                        // and says nothing until it is done.
                        Piece::Manifest(_) => seen.send_modify(|s| {
                            s.step = TransferStep::Checking;
                            s.bytes_done = 0;
                        }),
                        Piece::Header { .. } => {}
                    }
                    p
                });
                let pushed = sink.push(&to, dest_ns, dest_name, Box::pin(pieces)).await;
                if let Some(e) = failed.lock().expect("error slot").take() {
                    return Err(e);
                }
                Ok(pushed?.made)
            };
            let broke = match attempt.await {
                Ok(Some(m)) => return Ok(m),
                Ok(None) => {
                    Error::unavailable("the destination answered before the manifest arrived")
                }
                Err(e) => e,
            };
            // A retry sends again from where the destination says it is.
            state.step = TransferStep::Sending;
            state.bytes_done = progress.borrow().bytes_done;
            if !retryable(&broke) || state.resumed >= MAX_TRANSFER_RESUMES {
                return Err(broke.context(format!("pushing {ns}/{name} to {}", to.node_id)));
            }
            tracing::warn!(error = %broke, resumed = state.resumed + 1, "push broke; resuming");
            backoff(&mut state, progress).await;
        }
    }

    /// The destination side of a push: `pieces` (what follows the header)
    /// are appended to the part file of `transfer_id`, which holds what
    /// earlier attempts delivered; the manifest, once it matches, makes
    /// `dest_ns`/`dest_name`. A stream that ends early keeps the part for a
    /// resume (swept after `TRANSFER_RETAIN`, or at restart).
    pub async fn receive_push(
        &self,
        transfer_id: &str,
        size_bytes: i64,
        dest_ns: Namespace,
        dest_name: CollectionName,
        mut pieces: PieceStream,
    ) -> Result<Pushed<CollectionMeta>> {
        dest_ns.writable()?;
        let id = uuid::Uuid::parse_str(transfer_id).map_err(|_| {
            Error::invalid(format!(
                "transfer_id {:?} is not a UUID",
                crate::names::clip(transfer_id)
            ))
        })?;
        if size_bytes < 0 {
            return Err(Error::invalid("size_bytes is negative"));
        }
        self.sweep_incoming();
        {
            let mut inc = self.incoming.lock().expect("incoming lock");
            match inc.get(&id) {
                Some(Incoming::Made(meta, _)) => {
                    return Ok(Pushed {
                        received_bytes: size_bytes,
                        made: Some((**meta).clone()),
                    });
                }
                Some(Incoming::Arriving) => {
                    return Err(Error::unavailable(format!(
                        "transfer {id} is already arriving here; retry when that stream ends"
                    )));
                }
                None => inc.insert(id, Incoming::Arriving),
            };
        }
        let _arriving = Arriving {
            id,
            incoming: self.incoming.clone(),
        };
        let path = self.dir.join(format!("push-{id}.part"));
        let mut file = PartFile::open(&path).await?;
        if file.len > size_bytes {
            let _ = std::fs::remove_file(&path);
            return Err(Error::invalid(format!(
                "transfer {id} was {} bytes here, more than its {size_bytes}; start it again",
                file.len
            )));
        }
        while let Some(piece) = pieces.next().await {
            match piece? {
                Piece::Header { .. } => {
                    return Err(Error::invalid("a push has one header, its first message"));
                }
                Piece::Chunk {
                    offset,
                    data,
                    blake3,
                } => {
                    if offset.saturating_add(data.len() as i64) > size_bytes {
                        return Err(Error::invalid(format!(
                            "chunk at byte {offset} runs past the transfer's {size_bytes} bytes"
                        )));
                    }
                    file.append(offset, data, &blake3).await?;
                }
                Piece::Manifest(m) => {
                    let made = if m.size_bytes != size_bytes {
                        Err(Error::failed_precondition(format!(
                            "the manifest says {} bytes, the header {size_bytes}",
                            m.size_bytes
                        )))
                    } else {
                        // The source learns only the outcome.
                        let (unseen, _) = watch::channel(TransferProgress::default());
                        let finished = file.finish(m, &unseen).await;
                        self.open_received(finished, &path, dest_ns, dest_name, &unseen)
                            .await
                    };
                    let meta = made?;
                    self.incoming.lock().expect("incoming lock").insert(
                        id,
                        Incoming::Made(Box::new(meta.clone()), std::time::Instant::now()),
                    );
                    return Ok(Pushed {
                        received_bytes: size_bytes,
                        made: Some(meta),
                    });
                }
            }
        }
        Ok(Pushed {
            received_bytes: file.len,
            made: None,
        })
    }

    /// If the snapshot at `path` `arrived` (or was taken) whole, opens it
    /// as the new collection `ns`/`name`, moving the file into place; the
    /// file is gone afterwards either way.
    async fn open_received(
        &self,
        arrived: Result<()>,
        path: &Path,
        ns: Namespace,
        name: CollectionName,
        progress: &watch::Sender<TransferProgress>,
    ) -> Result<CollectionMeta> {
        let out = match arrived {
            Ok(()) => {
                progress.send_modify(|s| s.step = TransferStep::Opening);
                self.backups
                    .restore_file(
                        path.to_path_buf(),
                        ns,
                        name,
                        Take::Move,
                        None,
                        false,
                        |_| {},
                    )
                    .await
            }
            Err(e) => Err(e),
        };
        let _ = std::fs::remove_file(path);
        out
    }

    /// True if the push `transfer_id` made its collection here lately (a
    /// retry whose answer was lost: the name it took is its own).
    pub fn made_here(&self, transfer_id: &str) -> bool {
        uuid::Uuid::parse_str(transfer_id).is_ok_and(|id| {
            matches!(
                self.incoming.lock().expect("incoming lock").get(&id),
                Some(Incoming::Made(..))
            )
        })
    }

    /// Forgets pushes made long ago, and deletes parts of pushes that
    /// stopped arriving.
    fn sweep_incoming(&self) {
        let mut inc = self.incoming.lock().expect("incoming lock");
        inc.retain(|_, i| match i {
            Incoming::Arriving => true,
            Incoming::Made(_, at) => at.elapsed() < TRANSFER_RETAIN,
        });
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let arriving = name
                .strip_prefix("push-")
                .and_then(|n| n.strip_suffix(".part"))
                .and_then(|n| uuid::Uuid::parse_str(n).ok())
                .is_some_and(|id| inc.contains_key(&id));
            if name.starts_with("push-") && !arriving && old(&entry.path()) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

/// Reports a snapshot's pages as `progress` (step `Snapshot`) until the
/// returned sender is dropped; await the handle to see the last report.
fn follow_snapshot(
    progress: Arc<watch::Sender<TransferProgress>>,
) -> (watch::Sender<Progress>, tokio::task::JoinHandle<()>) {
    let (snap, mut seen) = watch::channel(Progress::default());
    let follow = tokio::spawn(async move {
        while seen.changed().await.is_ok() {
            let p = *seen.borrow_and_update();
            progress.send_modify(|s| {
                s.step = TransferStep::Snapshot;
                s.bytes_done = p.bytes_done();
                s.bytes_total = p.bytes_total();
            });
        }
    });
    (snap, follow)
}

/// Errors after which a transfer is tried again.
fn retryable(e: &Error) -> bool {
    matches!(
        e.kind,
        ErrorKind::Unavailable
            | ErrorKind::Internal
            | ErrorKind::Aborted
            | ErrorKind::DeadlineExceeded
    )
}

/// Counts a resume and waits before it, longer each time.
async fn backoff(state: &mut TransferProgress, progress: &watch::Sender<TransferProgress>) {
    state.resumed += 1;
    progress.send_replace(*state);
    tokio::time::sleep(std::time::Duration::from_millis(200) * state.resumed).await;
}

/// The pieces of `stream` up to its first error, which is kept in the slot.
fn until_error(
    stream: PieceStream,
) -> (impl Stream<Item = Piece> + Send, Arc<Mutex<Option<Error>>>) {
    let slot = Arc::new(Mutex::new(None));
    let keep = slot.clone();
    let pieces = stream.map_while(move |p| match p {
        Ok(p) => Some(p),
        Err(e) => {
            *keep.lock().expect("error slot") = Some(e);
            None
        }
    });
    (pieces, slot)
}

/// True if a transfer file is past `TRANSFER_RETAIN`.
fn old(path: &Path) -> bool {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age > TRANSFER_RETAIN)
}
