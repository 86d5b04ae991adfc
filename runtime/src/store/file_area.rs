//! A collection's file area: the blobs behind its files, under
//! `data/files/<ns>/<name>/<hash of the record id>/<uuidv7>`, reached only
//! through a cap-std `Dir` rooted there. Blobs are created new, written
//! under a temporary name, synced and renamed (`BlobWriter`); removed once
//! the rows naming them are gone, or later while a snapshot pins them
//! (`FilesPin`); and swept at open when no row names them. The rows
//! themselves are `store::files`.

use super::files::{Blob, Doomed, PutFile};
use crate::error::{Error, Result};
use crate::names::RecordId;
use cap_std::fs::Dir;
use rusqlite::Connection;
use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A collection's file area (a collection without files has no
/// directory). Its directory is opened for each use and not kept, so an
/// idle collection holds no descriptor.
pub struct FileArea {
    root: PathBuf,
    pins: std::sync::Mutex<Pins>,
}

/// Snapshots under way, and the blobs their rows may still name: unlinked
/// only once the last snapshot is done.
#[derive(Default)]
struct Pins {
    count: usize,
    deferred: Vec<Doomed>,
}

/// Keeps every blob of a collection on disk while it is held (a snapshot
/// copies the blobs its rows name; a put or delete committed meanwhile
/// must not unlink them under it). Taken before the snapshot's read
/// transaction begins.
pub struct FilesPin {
    area: Arc<FileArea>,
}

impl FilesPin {
    /// Opens record `record`'s blob `blob` to read.
    pub fn open(&self, record: &str, blob: &str) -> Result<cap_std::fs::File> {
        self.area.open(&RecordId::new(record)?, blob)
    }
}

impl Drop for FilesPin {
    fn drop(&mut self) {
        let deferred = {
            let mut p = self.area.pins.lock().expect("pins lock");
            p.count -= 1;
            if p.count > 0 {
                return;
            }
            std::mem::take(&mut p.deferred)
        };
        self.area.unlink(&deferred);
    }
}

/// The directory of a record's blobs: its id's hash, so any id is a safe
/// name.
fn record_dir(id: &RecordId) -> String {
    blake3::hash(id.as_str().as_bytes()).to_hex()[..32].to_string()
}

const TMP_PREFIX: &str = ".tmp-";

impl FileArea {
    /// The area rooted at `root` (made by the node from checked names).
    pub fn new(root: PathBuf) -> Self {
        FileArea {
            root,
            pins: Default::default(),
        }
    }

    /// Holds every blob on disk until the pin is dropped.
    pub fn pin(self: &Arc<Self>) -> FilesPin {
        self.pins.lock().expect("pins lock").count += 1;
        FilesPin { area: self.clone() }
    }

    /// Puts a blob restored from a snapshot in record `record`'s directory,
    /// under a new name (so it never meets a blob of the collection it may
    /// replace, which is still serving): streamed from `chunks`, checked
    /// against `size` and `blake3`, synced and renamed. Its new name.
    pub fn install(
        &self,
        record: &str,
        size: i64,
        blake3: &str,
        chunks: &mut dyn Iterator<Item = Result<Vec<u8>>>,
    ) -> Result<String> {
        let mut w = self.create(&RecordId::new(record)?)?;
        for chunk in chunks {
            w.write(&chunk?)?;
        }
        let check = PutFile {
            expected_size: Some(size),
            expected_blake3: Some(blake3.to_string()),
            ..Default::default()
        };
        let blob = w.finish(&check).map_err(|e| {
            Error::data_loss(format!(
                "a file of record {:?} in the snapshot is damaged: {}",
                crate::names::clip(record),
                e.message
            ))
        })?;
        Ok(blob.name)
    }

    /// Where the area lives.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The area's directory, made first when `make`.
    fn dir(&self, make: bool) -> Result<Dir> {
        if make {
            std::fs::create_dir_all(&self.root)?;
        }
        Ok(Dir::open_ambient_dir(
            &self.root,
            cap_std::ambient_authority(),
        )?)
    }

    /// Starts a new blob for record `id`: a temporary in its directory.
    pub(super) fn create(&self, id: &RecordId) -> Result<BlobWriter> {
        let rdir = record_dir(id);
        let dir = self.dir(true)?;
        dir.create_dir_all(&rdir)?;
        let dir = dir.open_dir(&rdir)?;
        let name = uuid::Uuid::now_v7().to_string();
        let tmp = format!("{TMP_PREFIX}{name}");
        let file = dir.open_with(
            &tmp,
            cap_std::fs::OpenOptions::new().write(true).create_new(true),
        )?;
        Ok(BlobWriter {
            dir,
            file: Some(file),
            tmp,
            name,
            hasher: blake3::Hasher::new(),
            size: 0,
            writeback: None,
        })
    }

    /// Opens record `id`'s blob `name` to read.
    pub(super) fn open(&self, id: &RecordId, name: &str) -> Result<cap_std::fs::File> {
        let path = format!("{}/{name}", record_dir(id));
        Ok(self.dir(false)?.open(path)?)
    }

    /// Unlinks blobs whose rows are gone (and their record's directory once
    /// empty), or, while a snapshot pins them, once it is done; what cannot
    /// be removed is swept at the next open.
    pub(super) fn remove(&self, doomed: &[Doomed]) {
        {
            let mut p = self.pins.lock().expect("pins lock");
            if p.count > 0 {
                p.deferred.extend_from_slice(doomed);
                return;
            }
        }
        self.unlink(doomed);
    }

    fn unlink(&self, doomed: &[Doomed]) {
        if doomed.is_empty() {
            return;
        }
        let Ok(dir) = self.dir(false) else { return };
        for (id, name) in doomed {
            let rdir = record_dir(id);
            if let Err(e) = dir.remove_file(format!("{rdir}/{name}")) {
                tracing::warn!(error = %e, "could not remove a file's old bytes; swept at the next open");
            }
            // Fails while other files (or a put under way) are in it.
            let _ = dir.remove_dir(&rdir);
        }
    }

    /// Removes temporaries and blobs no row of `conn`'s `files` table points
    /// at: what a crash between a put's steps, or a restore, left behind.
    pub(super) fn sweep(&self, conn: &Connection) -> Result<usize> {
        if !self.root.exists() {
            return Ok(0);
        }
        let mut keep = HashSet::new();
        let mut st = conn.prepare("SELECT record, blob FROM files")?;
        let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        for row in rows {
            let (record, blob) = row?;
            if let Ok(id) = RecordId::new(&record) {
                keep.insert(format!("{}/{blob}", record_dir(&id)));
            }
        }
        let dir = self.dir(false)?;
        let mut removed = 0;
        for rdir in dir.entries()? {
            let rdir = rdir?;
            let rname = rdir.file_name().to_string_lossy().into_owned();
            if !rdir.file_type()?.is_dir() {
                dir.remove_file(&rname)?;
                removed += 1;
                continue;
            }
            let sub = dir.open_dir(&rname)?;
            for blob in sub.entries()? {
                let blob = blob?;
                let bname = blob.file_name().to_string_lossy().into_owned();
                if !keep.contains(&format!("{rname}/{bname}")) {
                    if blob.file_type()?.is_dir() {
                        sub.remove_dir_all(&bname)?;
                    } else {
                        sub.remove_file(&bname)?;
                    }
                    removed += 1;
                }
            }
            let _ = dir.remove_dir(&rname);
        }
        if removed > 0 {
            tracing::info!(removed, root = %self.root.display(), "swept file bytes no record points at");
        }
        Ok(removed)
    }
}

/// A blob being written: a temporary until `finish` renames it. Dropped
/// unfinished, the temporary is removed.
pub(super) struct BlobWriter {
    dir: Dir,
    file: Option<cap_std::fs::File>,
    tmp: String,
    name: String,
    hasher: blake3::Hasher,
    size: i64,
    /// A background sync under way (see `start_writeback`).
    writeback: Option<tokio::task::JoinHandle<()>>,
}

impl BlobWriter {
    /// Starts writing back what was written so far, on another thread,
    /// unless the last one is still under way.
    pub(super) fn start_writeback(&mut self) {
        if self.writeback.as_ref().is_some_and(|w| !w.is_finished()) {
            return;
        }
        if let Some(clone) = self.file.as_ref().and_then(|f| f.try_clone().ok()) {
            self.writeback = Some(tokio::task::spawn_blocking(move || {
                let _ = clone.sync_data();
            }));
        }
    }

    pub(super) fn write(&mut self, data: &[u8]) -> Result<()> {
        self.hasher.update(data);
        self.size += data.len() as i64;
        self.file
            .as_mut()
            .expect("an unfinished blob")
            .write_all(data)?;
        Ok(())
    }

    /// Checks the preconditions, then syncs and renames the blob into place.
    pub(super) fn finish(mut self, put: &PutFile) -> Result<Blob> {
        let blake3 = self.hasher.finalize().to_hex().to_string();
        if let Some(n) = put.expected_size
            && n != self.size
        {
            return Err(Error::failed_precondition(format!(
                "the file is {} bytes, not the expected {n}; nothing was changed",
                self.size
            )));
        }
        if let Some(h) = &put.expected_blake3
            && !h.eq_ignore_ascii_case(&blake3)
        {
            return Err(Error::failed_precondition(format!(
                "the file's blake3 is {blake3}, not the expected {:?}; nothing was changed",
                crate::names::clip(h)
            )));
        }
        let file = self.file.take().expect("an unfinished blob");
        file.sync_all()?;
        drop(file);
        self.dir.rename(&self.tmp, &self.dir, &self.name)?;
        // The rename itself is durable before any row points at the blob.
        self.dir.open(".")?.sync_all()?;
        Ok(Blob {
            name: self.name.clone(),
            size: self.size,
            blake3,
        })
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = self.dir.remove_file(&self.tmp);
        }
    }
}
