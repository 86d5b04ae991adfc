//! `collector files put | get | stat | ls | rm`: files attached to records,
//! streamed from and to a local file or stdin/stdout, with a progress bar on
//! a terminal.

use super::output::{file_json, progress_bar};
use super::{Clients, Outcome};
use clap::{Args, Subcommand};
use collector::{limits, proto};
use serde_json::Value as Json;
use std::path::{Path, PathBuf};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tonic::Status;

/// `collector files …`
#[derive(Subcommand, Debug)]
pub enum FilesCmd {
    /// Put a file on a record, from a local file or stdin; prints what was stored.
    Put(Put),
    /// Write a file (or a byte range of it) to a local file or stdout.
    Get(Get),
    /// A file's size, hash, content type, version and times.
    Stat(FileArgs),
    /// A record's files, by path.
    Ls(Ls),
    /// Delete a file; prints what it was.
    Rm(Rm),
}

/// Names one file.
#[derive(Args, Debug)]
pub struct FileArgs {
    /// The collection.
    collection: String,
    /// The record's id.
    id: String,
    /// The file's path under the record, e.g. docs/cv.pdf.
    path: String,
}

/// `collector files put`
#[derive(Args, Debug)]
pub struct Put {
    #[command(flatten)]
    file: FileArgs,
    /// A local file to read, or - for stdin.
    #[arg(default_value = "-")]
    from: PathBuf,
    /// Content type to record, e.g. image/png.
    #[arg(long, default_value = "")]
    content_type: String,
    /// Only if no file is at the path yet.
    #[arg(long)]
    if_absent: bool,
    /// Only if the file at the path is at this version.
    #[arg(long)]
    expected_version: Option<i64>,
}

/// `collector files get`
#[derive(Args, Debug)]
pub struct Get {
    #[command(flatten)]
    file: FileArgs,
    /// A local file to write (replaced only once every byte arrived and the
    /// hash matched), or - for stdout.
    #[arg(default_value = "-")]
    to: PathBuf,
    /// First byte of a range.
    #[arg(long, default_value_t = 0)]
    offset: i64,
    /// Bytes of a range (0: to the end).
    #[arg(long, default_value_t = 0)]
    length: i64,
}

/// `collector files ls`
#[derive(Args, Debug)]
pub struct Ls {
    /// The collection.
    collection: String,
    /// The record's id.
    id: String,
    /// Only paths starting with this, e.g. docs/.
    #[arg(long, default_value = "")]
    prefix: String,
}

/// `collector files rm`
#[derive(Args, Debug)]
pub struct Rm {
    #[command(flatten)]
    file: FileArgs,
    /// Only if the file is at this version.
    #[arg(long)]
    expected_version: Option<i64>,
}

/// Runs a `files` command.
pub async fn run(c: &mut Clients, cmd: FilesCmd) -> Outcome {
    match cmd {
        FilesCmd::Put(a) => put(c, a).await,
        FilesCmd::Get(a) => get(c, a).await,
        FilesCmd::Stat(a) => {
            let file = Some(file_ref(c, a));
            let info = c.records.stat_file(proto::StatFileRequest { file }).await?;
            Ok(file_json(info.into_inner()))
        }
        FilesCmd::Ls(a) => ls(c, a).await,
        FilesCmd::Rm(a) => {
            let req = proto::DeleteFileRequest {
                expected_version: a.expected_version,
                file: Some(file_ref(c, a.file)),
            };
            Ok(file_json(c.records.delete_file(req).await?.into_inner()))
        }
    }
}

fn file_ref(c: &Clients, a: FileArgs) -> proto::FileRef {
    proto::FileRef {
        namespace: c.ns.clone(),
        collection: a.collection,
        record_id: a.id,
        path: a.path,
    }
}

fn local(path: &Path, e: std::io::Error) -> Status {
    Status::invalid_argument(format!("{}: {e}", path.display()))
}

async fn put(c: &mut Clients, a: Put) -> Outcome {
    let bar = progress_bar("put");
    // A local file's size is known, so the node checks it arrived whole
    // (and that it did not change while it was read).
    let mut expected_size = None;
    let input: Box<dyn AsyncRead + Send + Unpin> = if a.from == Path::new("-") {
        Box::new(tokio::io::stdin())
    } else {
        let f = tokio::fs::File::open(&a.from)
            .await
            .map_err(|e| local(&a.from, e))?;
        let len = f.metadata().await.map_err(|e| local(&a.from, e))?.len();
        bar.set_length(len);
        expected_size = Some(len as i64);
        Box::new(f)
    };
    let header = proto::PutFileHeader {
        content_type: a.content_type,
        if_absent: a.if_absent,
        expected_version: a.expected_version,
        expected_size,
        file: Some(file_ref(c, a.file)),
        ..Default::default()
    };
    // The reader runs beside the call, a few chunks ahead of the network. A
    // read error stops the stream before its end (so the node keeps the
    // old version) and is what the command reports.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let from = a.from.clone();
    let progress = bar.clone();
    let reader = tokio::spawn(async move {
        let header = proto::put_file_request::Part::Header(header);
        if tx
            .send(proto::PutFileRequest { part: Some(header) })
            .await
            .is_err()
        {
            return Ok(());
        }
        read_chunks(input, &tx, &progress)
            .await
            .map_err(|e| local(&from, e))?;
        let end = proto::put_file_request::Part::End(proto::PutFileEnd {});
        let _ = tx.send(proto::PutFileRequest { part: Some(end) }).await;
        Ok(())
    });
    let answer = c
        .records
        .put_file(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await;
    bar.finish_and_clear();
    match reader.await {
        Ok(Err(status)) => return Err(status),
        Err(e) => return Err(Status::internal(format!("the reader failed: {e}"))),
        Ok(Ok(())) => {}
    }
    Ok(file_json(answer?.into_inner()))
}

/// Sends what `input` holds as chunks of at most 1 MiB.
async fn read_chunks(
    mut input: Box<dyn AsyncRead + Send + Unpin>,
    tx: &tokio::sync::mpsc::Sender<proto::PutFileRequest>,
    bar: &indicatif::ProgressBar,
) -> std::io::Result<()> {
    loop {
        let mut buf = Vec::with_capacity(limits::FILE_CHUNK_BYTES);
        (&mut input)
            .take(limits::FILE_CHUNK_BYTES as u64)
            .read_to_end(&mut buf)
            .await?;
        if buf.is_empty() {
            return Ok(());
        }
        bar.inc(buf.len() as u64);
        let chunk = proto::put_file_request::Part::Chunk(buf);
        if tx
            .send(proto::PutFileRequest { part: Some(chunk) })
            .await
            .is_err()
        {
            return Ok(()); // the call ended; its status says why
        }
    }
}

async fn get(c: &mut Clients, a: Get) -> Outcome {
    let req = proto::GetFileRequest {
        offset: a.offset,
        length: a.length,
        file: Some(file_ref(c, a.file)),
    };
    let mut stream = c.records.get_file(req).await?.into_inner();
    let info = match stream.message().await?.and_then(|m| m.part) {
        Some(proto::get_file_response::Part::Header(h)) => h,
        _ => return Err(Status::internal("the node sent no file header first")),
    };
    let whole = a.offset == 0 && a.length == 0;
    let expected = if whole {
        info.size_bytes
    } else {
        let end = if a.length == 0 {
            info.size_bytes
        } else {
            (a.offset + a.length).min(info.size_bytes)
        };
        end - a.offset.min(end)
    };
    let to_stdout = a.to == Path::new("-");
    // A local file is written under a temporary name beside it and renamed
    // over it only once every byte arrived and (for a whole file) the hash
    // matched, so a cut stream never leaves a torn copy.
    let part = part_name(&a.to);
    let mut out: Box<dyn AsyncWrite + Send + Unpin> = if to_stdout {
        Box::new(tokio::io::stdout())
    } else {
        Box::new(
            tokio::fs::File::create(&part)
                .await
                .map_err(|e| local(&part, e))?,
        )
    };
    let bar = progress_bar("get");
    bar.set_length(expected.max(0) as u64);
    let copied = copy_chunks(&mut stream, &mut out, &bar).await;
    bar.finish_and_clear();
    let checked = copied.and_then(|(n, hash)| {
        if n != expected {
            return Err(Status::data_loss(format!("got {n} bytes of {expected}")));
        }
        if whole && hash != info.blake3 {
            return Err(Status::data_loss(
                "the bytes do not match the file's blake3",
            ));
        }
        Ok(())
    });
    if to_stdout {
        checked?;
        out.flush().await.map_err(|e| local(&a.to, e))?;
        return Ok(Json::Null); // the bytes were the output
    }
    let finished = match checked {
        Ok(()) => finish(out, &part, &a.to).await,
        Err(e) => Err(e),
    };
    if finished.is_err() {
        let _ = tokio::fs::remove_file(&part).await;
    }
    finished?;
    Ok(file_json(info))
}

fn part_name(to: &Path) -> PathBuf {
    let mut name = to.file_name().unwrap_or_default().to_os_string();
    name.push(".part");
    let mut hidden = std::ffi::OsString::from(".");
    hidden.push(name);
    to.with_file_name(hidden)
}

/// Syncs the temporary copy and renames it into place.
async fn finish(
    mut out: Box<dyn AsyncWrite + Send + Unpin>,
    part: &Path,
    to: &Path,
) -> Result<(), Status> {
    out.flush().await.map_err(|e| local(part, e))?;
    drop(out);
    let f = tokio::fs::OpenOptions::new()
        .write(true)
        .open(part)
        .await
        .map_err(|e| local(part, e))?;
    f.sync_all().await.map_err(|e| local(part, e))?;
    tokio::fs::rename(part, to).await.map_err(|e| local(to, e))
}

/// Writes the chunks of a GetFile stream out; their count and blake3.
async fn copy_chunks(
    stream: &mut tonic::Streaming<proto::GetFileResponse>,
    out: &mut (dyn AsyncWrite + Send + Unpin),
    bar: &indicatif::ProgressBar,
) -> Result<(i64, String), Status> {
    let mut hasher = blake3::Hasher::new();
    let mut n = 0i64;
    while let Some(m) = stream.message().await? {
        let Some(proto::get_file_response::Part::Chunk(chunk)) = m.part else {
            return Err(Status::internal("the node sent a second header"));
        };
        hasher.update(&chunk);
        out.write_all(&chunk)
            .await
            .map_err(|e| Status::unavailable(format!("cannot write the output: {e}")))?;
        n += chunk.len() as i64;
        bar.inc(chunk.len() as u64);
    }
    Ok((n, hasher.finalize().to_hex().to_string()))
}

async fn ls(c: &mut Clients, a: Ls) -> Outcome {
    let mut files = Vec::new();
    let mut page_token = String::new();
    // Pages until the node says there are no more; bounded by the node's
    // paging, since every page moves the token forward.
    loop {
        let page = c
            .records
            .list_files(proto::ListFilesRequest {
                namespace: c.ns.clone(),
                collection: a.collection.clone(),
                record_id: a.id.clone(),
                prefix: a.prefix.clone(),
                page_size: 1000,
                page_token,
            })
            .await?
            .into_inner();
        files.extend(page.files.into_iter().map(file_json));
        if page.next_page_token.is_empty() {
            return Ok(Json::Array(files));
        }
        page_token = page.next_page_token;
    }
}
