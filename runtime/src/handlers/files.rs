//! The `files` import over the catalogue. Reads see the collection's
//! committed files. Puts and deletes are checked against the call's view at
//! once (the record must exist for the call, an expected version must
//! match) and staged in its `OpenState`; `commit` applies them in the
//! collection's batch, after its record writes, so they land only if the
//! handler succeeds and the whole batch does.

use super::host::CollectionsHost;
use crate::error::{Error, Result};
use crate::names::{FilePath, RecordId, clip};
use crate::store::{Collection, FileChange, FileMeta, FilePage};
use crate::wasm::FileSpec;
use std::sync::Arc;
use tokio_stream::StreamExt;

impl CollectionsHost {
    pub(super) async fn file_stat(&self, handle: u32, id: &str, path: &str) -> Result<FileMeta> {
        let (c, _) = self.coll(handle)?;
        c.stat_file(RecordId::new(id)?, FilePath::new(path)?).await
    }

    pub(super) async fn file_list(
        &self,
        handle: u32,
        id: &str,
        prefix: String,
        page_size: u32,
        page_token: String,
    ) -> Result<FilePage> {
        let (c, _) = self.coll(handle)?;
        let prefix = FilePath::prefix(&prefix).map_err(|e| e.context("prefix"))?;
        if page_token.len() > crate::limits::MAX_FILE_PATH_LEN {
            return Err(Error::invalid("page token is not one this node gave"));
        }
        c.list_files(RecordId::new(id)?, prefix, page_size as usize, page_token)
            .await
    }

    /// Reads a range whole, if it fits in `max` bytes.
    pub(super) async fn file_read(
        &self,
        handle: u32,
        id: &str,
        path: &str,
        offset: u64,
        len: u64,
        max: usize,
    ) -> Result<Vec<u8>> {
        let (c, _) = self.coll(handle)?;
        let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
            return Err(Error::invalid("offset and length must be below 2^63"));
        };
        let (meta, mut bytes) = c
            .get_file(RecordId::new(id)?, FilePath::new(path)?, offset, len)
            .await?;
        let end = match len {
            0 => meta.size_bytes,
            n => offset.saturating_add(n).min(meta.size_bytes),
        };
        let want = (end - offset).max(0) as u64;
        if want > max as u64 {
            return Err(Error::resource_exhausted(format!(
                "reading {want} bytes of file {:?} at once is more than the handler's memory cap leaves ({max} bytes); read it in ranges",
                clip(path)
            )));
        }
        let mut out = Vec::with_capacity(want as usize);
        while let Some(chunk) = bytes.next().await {
            out.extend_from_slice(&chunk?);
        }
        Ok(out)
    }

    /// Checks a file change against the call's view and stages it.
    pub(super) async fn stage_file(&self, handle: u32, change: FileSpec) -> Result<()> {
        let c = self.writable(handle)?;
        let (id, path, expected_version) = match &change {
            FileSpec::Put {
                id,
                path,
                expected_version,
                ..
            }
            | FileSpec::Delete {
                id,
                path,
                expected_version,
            } => (RecordId::new(id)?, FilePath::new(path)?, *expected_version),
        };
        if self.current(handle, &c, &id).await?.is_none() {
            return Err(Error::not_found(format!(
                "record {:?} not found in {}; a file belongs to a record: create it first",
                clip(id.as_str()),
                c.name
            )));
        }
        let exists = match self.staged(handle, &id, &path) {
            Some(exists) => exists,
            None if expected_version.is_some() || matches!(change, FileSpec::Delete { .. }) => {
                check_committed(&c, &id, &path, expected_version).await?
            }
            None => true,
        };
        let change = match change {
            FileSpec::Put {
                content_type, data, ..
            } => {
                c.check_file_size(data.len() as u64)?;
                FileChange::Put {
                    id,
                    path,
                    content_type,
                    data,
                    expected_version,
                }
            }
            FileSpec::Delete { .. } => {
                if !exists {
                    return Err(Error::not_found(format!(
                        "record {:?} has no file {:?}",
                        clip(id.as_str()),
                        path.as_str()
                    )));
                }
                FileChange::Delete {
                    id,
                    path,
                    expected_version,
                }
            }
        };
        self.open.lock().expect("open lock")[handle as usize]
            .files
            .push(change);
        Ok(())
    }

    /// Whether the call's last staged change to the file leaves it there
    /// (None: the call has not changed it).
    fn staged(&self, handle: u32, id: &RecordId, path: &FilePath) -> Option<bool> {
        self.open.lock().expect("open lock")[handle as usize]
            .files
            .iter()
            .rev()
            .find_map(|f| match f {
                FileChange::Put { id: i, path: p, .. } if i == id && p == path => Some(true),
                FileChange::Delete { id: i, path: p, .. } if i == id && p == path => Some(false),
                _ => None,
            })
    }
}

/// Whether the committed file exists, checking `expected` against its
/// version (conflict if it differs, NOT_FOUND if it is missing).
async fn check_committed(
    c: &Arc<Collection>,
    id: &RecordId,
    path: &FilePath,
    expected: Option<i64>,
) -> Result<bool> {
    match c.stat_file(id.clone(), path.clone()).await {
        Ok(m) => match expected {
            Some(v) if v != m.version => Err(Error::failed_precondition(format!(
                "file {:?} is at version {}, not the expected {v}: stat it again and retry",
                path.as_str(),
                m.version
            ))),
            _ => Ok(true),
        },
        Err(e) if e.kind == crate::error::ErrorKind::NotFound && expected.is_none() => Ok(false),
        Err(e) => Err(e),
    }
}
