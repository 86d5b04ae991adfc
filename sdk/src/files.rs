//! Files attached to records of a granted collection (what PutFile and
//! GetFile reach over gRPC). Reads see committed files only; writes and
//! deletes are buffered like record writes and applied with them when the
//! method returns `Ok`, so a record and its files change together.

use crate::bindings::collector::runtime::files as wit;
use crate::{Collection, Result};

/// A file's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    /// The record it belongs to.
    pub record_id: String,
    /// Its `/`-separated path under the record.
    pub path: String,
    /// Bytes.
    pub size: i64,
    /// blake3 of the bytes, hex.
    pub blake3: String,
    /// What it was put as (a MIME type, say).
    pub content_type: String,
    /// 1 when first put, +1 on every put over it.
    pub version: i64,
    /// First put, microseconds since the Unix epoch.
    pub created_us: i64,
    /// Last put, microseconds since the Unix epoch.
    pub updated_us: i64,
}

impl From<wit::FileInfo> for FileInfo {
    fn from(f: wit::FileInfo) -> Self {
        FileInfo {
            record_id: f.record_id,
            path: f.path,
            size: f.size,
            blake3: f.blake3,
            content_type: f.content_type,
            version: f.version,
            created_us: f.created_us,
            updated_us: f.updated_us,
        }
    }
}

/// One page of a record's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilePage {
    /// The files, by path.
    pub files: Vec<FileInfo>,
    /// Pass back for the next page; empty on the last page.
    pub next_page_token: String,
}

impl<T: prost::Message + Default> Collection<T> {
    /// The file at `path` of record `record_id`; not-found if there is none.
    pub fn stat_file(&self, record_id: &str, path: &str) -> Result<FileInfo> {
        Ok(wit::stat(&self.inner, record_id, path)?.into())
    }

    /// One page of a record's files whose paths start with `prefix` (`""`:
    /// all), by path; `page_size` 0 means 100.
    pub fn list_files_page(
        &self,
        record_id: &str,
        prefix: &str,
        page_size: u32,
        page_token: &str,
    ) -> Result<FilePage> {
        let p = wit::list(&self.inner, record_id, prefix, page_size, page_token)?;
        Ok(FilePage {
            files: p.files.into_iter().map(FileInfo::from).collect(),
            next_page_token: p.next_page_token,
        })
    }

    /// Every file of a record under `prefix`, following pages (each page
    /// is a host call).
    pub fn list_files(&self, record_id: &str, prefix: &str) -> Result<Vec<FileInfo>> {
        let mut all = Vec::new();
        let mut token = String::new();
        loop {
            let page = self.list_files_page(record_id, prefix, 0, &token)?;
            all.extend(page.files);
            if page.next_page_token.is_empty() {
                return Ok(all);
            }
            token = page.next_page_token;
        }
    }

    /// The whole file. A file larger than what the handler's memory cap
    /// leaves is resource-exhausted: read it with
    /// [`Collection::read_file_range`].
    pub fn read_file(&self, record_id: &str, path: &str) -> Result<Vec<u8>> {
        self.read_file_range(record_id, path, 0, 0)
    }

    /// `len` bytes from `offset` (`len` 0: to the end; a range past the end
    /// is cut short).
    pub fn read_file_range(
        &self,
        record_id: &str,
        path: &str,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>> {
        Ok(wit::read(&self.inner, record_id, path, offset, len)?)
    }

    /// Puts `data` at `path` of record `record_id`, replacing what is there.
    /// The record must exist (or be created earlier in this call).
    pub fn write_file(
        &self,
        record_id: &str,
        path: &str,
        content_type: &str,
        data: &[u8],
    ) -> Result<()> {
        Ok(wit::write(
            &self.inner,
            record_id,
            path,
            content_type,
            data,
            None,
        )?)
    }

    /// [`Collection::write_file`] only if the file is at `version`
    /// (conflict otherwise).
    pub fn write_file_if(
        &self,
        record_id: &str,
        path: &str,
        content_type: &str,
        data: &[u8],
        version: i64,
    ) -> Result<()> {
        Ok(wit::write(
            &self.inner,
            record_id,
            path,
            content_type,
            data,
            Some(version),
        )?)
    }

    /// Deletes the file at `path`; not-found if there is none.
    pub fn delete_file(&self, record_id: &str, path: &str) -> Result<()> {
        Ok(wit::delete(&self.inner, record_id, path, None)?)
    }

    /// Deletes `file` if it is still at its version (conflict otherwise).
    pub fn delete_file_if(&self, file: &FileInfo) -> Result<()> {
        Ok(wit::delete(
            &self.inner,
            &file.record_id,
            &file.path,
            Some(file.version),
        )?)
    }
}
