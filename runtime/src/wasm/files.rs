//! The host side of the `files` import: files of records in the collections
//! a handler opened, reached only through `HostApi`. A staged write's bytes
//! are held until the call ends, so they count against its memory cap; a
//! read is refused past what the cap leaves.

use super::bindings::collector::runtime::files;
use super::host::{FileSpec, GuestResult, OpenCollection, State, WRITE_OVERHEAD, to_guest};
use crate::store;
use tracing::Instrument;
use wasmtime::component::Resource;

fn info(m: store::FileMeta) -> files::FileInfo {
    files::FileInfo {
        record_id: m.record_id,
        path: m.path,
        size: m.size_bytes,
        blake3: m.blake3,
        content_type: m.content_type,
        version: m.version,
        created_us: m.created_us,
        updated_us: m.updated_us,
    }
}

impl files::Host for State {
    async fn stat(
        &mut self,
        c: Resource<OpenCollection>,
        record_id: String,
        path: String,
    ) -> GuestResult<files::FileInfo> {
        self.tick()?;
        let h = self.handle_of(&c)?;
        Ok(self
            .api
            .stat_file(h, &record_id, &path)
            .instrument(crate::traces::host_span("file.stat"))
            .await
            .map(info)
            .map_err(to_guest))
    }

    async fn list(
        &mut self,
        c: Resource<OpenCollection>,
        record_id: String,
        prefix: String,
        page_size: u32,
        page_token: String,
    ) -> GuestResult<files::FilePage> {
        self.tick()?;
        let h = self.handle_of(&c)?;
        Ok(self
            .api
            .list_files(h, &record_id, prefix, page_size, page_token)
            .instrument(crate::traces::host_span("file.list"))
            .await
            .map(|p| files::FilePage {
                files: p.files.into_iter().map(info).collect(),
                next_page_token: p.next_token,
            })
            .map_err(to_guest))
    }

    async fn read(
        &mut self,
        c: Resource<OpenCollection>,
        record_id: String,
        path: String,
        offset: u64,
        length: u64,
    ) -> GuestResult<Vec<u8>> {
        self.tick()?;
        let h = self.handle_of(&c)?;
        let max = self.memory_left();
        Ok(self
            .api
            .read_file(h, &record_id, &path, offset, length, max)
            .instrument(crate::traces::host_span("file.read"))
            .await
            .map_err(to_guest))
    }

    async fn write(
        &mut self,
        c: Resource<OpenCollection>,
        record_id: String,
        path: String,
        content_type: String,
        data: Vec<u8>,
        expected_version: Option<i64>,
    ) -> GuestResult<()> {
        self.tick()?;
        self.charge_kept(
            WRITE_OVERHEAD + record_id.len() + path.len() + content_type.len() + data.len(),
        )?;
        let h = self.handle_of(&c)?;
        let change = FileSpec::Put {
            id: record_id,
            path,
            content_type,
            data,
            expected_version,
        };
        Ok(self
            .api
            .change_file(h, change)
            .instrument(crate::traces::host_span("file.change"))
            .await
            .map_err(to_guest))
    }

    async fn delete(
        &mut self,
        c: Resource<OpenCollection>,
        record_id: String,
        path: String,
        expected_version: Option<i64>,
    ) -> GuestResult<()> {
        self.tick()?;
        self.charge_kept(WRITE_OVERHEAD + record_id.len() + path.len())?;
        let h = self.handle_of(&c)?;
        let change = FileSpec::Delete {
            id: record_id,
            path,
            expected_version,
        };
        Ok(self
            .api
            .change_file(h, change)
            .instrument(crate::traces::host_span("file.change"))
            .await
            .map_err(to_guest))
    }
}
