//! The files a transfer moves: the part file a receiver appends checked
//! chunks to (resumable from its last good byte, written back as it grows),
//! and the snapshot file a sender reads chunks of, described by and checked
//! against a manifest.

use super::{TransferManifest, TransferProgress, TransferStep};
use crate::error::{Error, Result};
use crate::limits::TRANSFER_CHUNK_BYTES;
use crate::store::backup::{self, Expected};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use tokio::sync::watch;

/// Bytes received between two background writebacks of a part file.
const WRITEBACK_BYTES: i64 = 32 << 20;

/// A file being received chunk by chunk; its length is the last good byte.
pub(super) struct PartFile {
    file: Option<std::fs::File>,
    path: PathBuf,
    /// Bytes held: the next chunk must start here.
    pub(super) len: i64,
    /// `len` when the last writeback started.
    written_back: i64,
    /// A writeback under way: the received bytes go to disk while more
    /// arrive, so the sync at the end has little left to do (this node's
    /// page cache would otherwise hold the whole file until then).
    writeback: Option<tokio::task::JoinHandle<()>>,
}

impl PartFile {
    /// Opens `path` to append to, creating it if missing.
    pub(super) async fn open(path: &Path) -> Result<Self> {
        let p = path.to_path_buf();
        let (file, len) = blocking(move || {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&p)?;
            let len = f.seek(SeekFrom::End(0))? as i64;
            Ok((f, len))
        })
        .await?;
        Ok(PartFile {
            file: Some(file),
            path: path.to_path_buf(),
            len,
            written_back: len,
            writeback: None,
        })
    }

    /// Appends a chunk that must start at the last good byte and match its
    /// hash; a chunk that does not is left out (UNAVAILABLE: resend it).
    pub(super) async fn append(&mut self, offset: i64, data: Vec<u8>, blake3: &str) -> Result<()> {
        if offset != self.len {
            return Err(Error::failed_precondition(format!(
                "chunk at byte {offset}, but {} bytes are held; resume from there",
                self.len
            )));
        }
        let mut f = self.file.take().expect("the part file");
        let n = data.len() as i64;
        let blake3 = blake3.to_string();
        // Hashed and written off the executor; the file comes back either way.
        let (f, wrote) = blocking(move || {
            if chunk_hash(&data) != blake3 {
                return Ok((
                    f,
                    Err(Error::unavailable(format!(
                        "chunk at byte {offset} does not match its hash; resend it"
                    ))),
                ));
            }
            let wrote = f.write_all(&data).map_err(Error::from);
            Ok((f, wrote))
        })
        .await?;
        self.file = Some(f);
        wrote?;
        self.len += n;
        self.write_back();
        Ok(())
    }

    /// Starts syncing what has arrived, if enough has since the last time
    /// and no writeback is under way. Best effort: `finish` syncs anyway.
    fn write_back(&mut self) {
        if self.len - self.written_back < WRITEBACK_BYTES
            || self.writeback.as_ref().is_some_and(|w| !w.is_finished())
        {
            return;
        }
        let Some(clone) = self.file.as_ref().and_then(|f| f.try_clone().ok()) else {
            return;
        };
        self.written_back = self.len;
        self.writeback = Some(tokio::task::spawn_blocking(move || {
            let _ = clone.sync_data();
        }));
    }

    /// Drops anything after the last good byte.
    pub(super) async fn cut(&mut self) -> Result<()> {
        let f = self.file.take().expect("the part file");
        let at = self.len as u64;
        self.file = Some(
            blocking(move || {
                f.set_len(at)?;
                let mut f = f;
                f.seek(SeekFrom::Start(at))?;
                Ok(f)
            })
            .await?,
        );
        Ok(())
    }

    /// Makes the file durable and checks it against `m`, telling
    /// `progress` the bytes checked (step `Checking`).
    pub(super) async fn finish(
        &mut self,
        m: TransferManifest,
        progress: &watch::Sender<TransferProgress>,
    ) -> Result<()> {
        if let Some(w) = self.writeback.take() {
            let _ = w.await;
        }
        let f = self.file.take().expect("the part file");
        let p = self.path.clone();
        let report = progress.clone();
        report.send_modify(|s| {
            s.step = TransferStep::Checking;
            s.bytes_done = 0;
        });
        blocking(move || {
            f.sync_all()?;
            check(&p, &m, &mut |done| {
                report.send_modify(|s| s.bytes_done = done);
            })
        })
        .await
    }
}

pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::internal(format!("transfer task failed: {e}")))?
}

pub(super) fn chunk_hash(data: &[u8]) -> String {
    blake3::hash(data).to_hex().to_string()
}

pub(super) fn read_chunk(path: &Path, at: i64) -> Result<Vec<u8>> {
    let mut f = std::fs::File::open(path)?;
    // A snapshot in use is not old, however long its transfer takes.
    let _ = f.set_modified(std::time::SystemTime::now());
    f.seek(SeekFrom::Start(at as u64))?;
    let mut buf = Vec::with_capacity(TRANSFER_CHUNK_BYTES);
    f.take(TRANSFER_CHUNK_BYTES as u64).read_to_end(&mut buf)?;
    Ok(buf)
}

/// The manifest of a snapshot file on disk.
pub(super) fn describe(path: &Path) -> Result<TransferManifest> {
    let m = backup::read_manifest(path)?;
    let (size_bytes, blake3) = backup::hash_file(path)?;
    let (page_count, _) = backup::pages(path)?;
    Ok(TransferManifest {
        size_bytes,
        page_count,
        blake3,
        message_type: m.message_type,
        record_count: m.record_count,
    })
}

/// Checks a received file against its manifest: size, hash, SQLite's
/// integrity check, type and count.
pub(super) fn check(path: &Path, m: &TransferManifest, done: &mut dyn FnMut(i64)) -> Result<()> {
    let problems = backup::verify(
        path,
        &Expected {
            size_bytes: m.size_bytes,
            blake3: m.blake3.clone(),
            record_count: m.record_count,
            message_type: m.message_type.clone(),
        },
        &mut |p| done(p.bytes_done),
    )?;
    if !problems.is_empty() {
        return Err(Error::failed_precondition(format!(
            "the received collection does not match its manifest: {}",
            problems.join("; ")
        )));
    }
    Ok(())
}
