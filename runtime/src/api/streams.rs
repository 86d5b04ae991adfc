//! The streamed forms of CollectionRepo's long operations: progress
//! reports (backups, verifies, restores, clones, fetches) and the pieces a
//! transfer travels in between nodes.

use crate::error::Error;
use crate::proto;
use crate::transfers::{Piece, TransferManifest, TransferProgress};
use tonic::Status;

/// A transfer's piece as it travels.
pub(super) fn piece_to_proto(p: Piece) -> proto::CollectionChunk {
    use proto::collection_chunk::Part;
    let part = match p {
        Piece::Header {
            transfer_id,
            size_bytes,
        } => Part::Header(proto::TransferHeader {
            transfer_id,
            size_bytes,
            ..Default::default()
        }),
        Piece::Chunk {
            offset,
            data,
            blake3,
        } => Part::Chunk(proto::TransferChunk {
            offset,
            data,
            blake3,
        }),
        Piece::Manifest(m) => Part::Manifest(proto::TransferManifest {
            size_bytes: m.size_bytes,
            page_count: m.page_count,
            blake3: m.blake3,
            message_type: m.message_type,
            record_count: m.record_count,
        }),
    };
    proto::CollectionChunk { part: Some(part) }
}

/// A transfer's piece as it arrived (a header's destination is read
/// separately).
pub(super) fn piece_from_proto(m: proto::CollectionChunk) -> Result<Piece, Error> {
    use proto::collection_chunk::Part;
    match m.part {
        Some(Part::Header(h)) => Ok(Piece::Header {
            transfer_id: h.transfer_id,
            size_bytes: h.size_bytes,
        }),
        Some(Part::Chunk(c)) => Ok(Piece::Chunk {
            offset: c.offset,
            data: c.data,
            blake3: c.blake3,
        }),
        Some(Part::Manifest(m)) => Ok(Piece::Manifest(TransferManifest {
            size_bytes: m.size_bytes,
            page_count: m.page_count,
            blake3: m.blake3,
            message_type: m.message_type,
            record_count: m.record_count,
        })),
        None => Err(Error::invalid("a CollectionChunk with no part set")),
    }
}

/// A stream of progress reports.
pub type ProgressOf<M> =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<M, Status>> + Send + 'static>>;
/// A stream of backup progress reports.
pub type ProgressStream = ProgressOf<proto::BackupProgress>;
/// A stream of clone or fetch progress reports.
pub type TransferStream = ProgressOf<proto::TransferProgress>;

/// Streams a long operation running in `task`: a report whenever `seen`
/// changes (best effort: a slow reader skips some), then the outcome as the
/// last message, or its error as the stream's status.
pub(super) fn progress_stream<P, R, M>(
    mut task: tokio::task::JoinHandle<Result<R, Error>>,
    mut seen: tokio::sync::watch::Receiver<P>,
    report: impl Fn(P) -> M + Send + 'static,
    last: impl FnOnce(R, P) -> M + Send + 'static,
) -> ProgressOf<M>
where
    P: Copy + Send + Sync + 'static,
    R: Send + 'static,
    M: Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        let mut following = true;
        loop {
            tokio::select! {
                done = &mut task => {
                    let end = match done {
                        Ok(Ok(r)) => Ok(last(r, *seen.borrow())),
                        Ok(Err(e)) => Err(Status::from(e)),
                        Err(e) => Err(Status::internal(format!("task failed: {e}"))),
                    };
                    let _ = tx.send(end).await;
                    return;
                }
                changed = seen.changed(), if following => {
                    if changed.is_err() {
                        following = false;
                        continue;
                    }
                    let p = *seen.borrow_and_update();
                    let _ = tx.try_send(Ok(report(p)));
                }
            }
        }
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

/// The last report of a clone or fetch: the new collection.
pub(super) fn made_report(
    made: proto::CollectionInfo,
    p: TransferProgress,
) -> proto::TransferProgress {
    proto::TransferProgress {
        collection: Some(made),
        ..transfer_report(p)
    }
}

pub(super) fn transfer_report(p: TransferProgress) -> proto::TransferProgress {
    proto::TransferProgress {
        step: p.step.name().to_string(),
        bytes_done: p.bytes_done,
        bytes_total: p.bytes_total,
        resumed: p.resumed as i32,
        collection: None,
    }
}
