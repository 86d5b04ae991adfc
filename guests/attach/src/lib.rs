//! `attach`: reads and writes files attached to records, written with
//! collector-sdk. Grant it `docs` (attach.Doc, read-write) and any other
//! attach.Doc collection to read from. Every method's file writes land
//! only if it returns `Ok`, together with its record writes.

use collector_sdk::{Collection, Context, Error, Result, handler};

/// The prost types of proto/attach.proto.
mod pb {
    include!(concat!(env!("OUT_DIR"), "/attach.rs"));
}
use pb::{Doc, FileRef, FileReply, PutRequest};

fn open(name: &str) -> Result<Collection<Doc>> {
    Collection::open(if name.is_empty() { "docs" } else { name })
}

fn fail_if(asked: bool) -> Result<()> {
    if asked {
        return Err(Error::internal("failing after the writes, as asked"));
    }
    Ok(())
}

fn put(_: &Context, r: PutRequest) -> Result<FileReply> {
    let c = open(&r.collection)?;
    if !r.create_title.is_empty() {
        c.create(
            &r.id,
            &Doc {
                title: r.create_title.clone(),
            },
        )?;
    }
    match r.expected_version {
        Some(v) => c.write_file_if(&r.id, &r.path, &r.content_type, &r.content, v)?,
        None => c.write_file(&r.id, &r.path, &r.content_type, &r.content)?,
    }
    if r.then_delete_record {
        c.delete(&r.id)?;
    }
    let until = std::time::Instant::now() + std::time::Duration::from_millis(r.linger_ms.into());
    while std::time::Instant::now() < until {
        std::hint::spin_loop();
    }
    fail_if(r.fail_after)?;
    Ok(FileReply {
        size: r.content.len() as i64,
        ..Default::default()
    })
}

fn read(_: &Context, r: FileRef) -> Result<FileReply> {
    let c = open(&r.collection)?;
    let info = c.stat_file(&r.id, &r.path)?;
    let content = c.read_file_range(&r.id, &r.path, r.offset, r.length)?;
    Ok(FileReply {
        content,
        size: info.size,
        blake3: info.blake3,
        content_type: info.content_type,
        version: info.version,
        paths: Vec::new(),
    })
}

fn list(_: &Context, r: FileRef) -> Result<FileReply> {
    let c = open(&r.collection)?;
    let files = c.list_files(&r.id, &r.path)?;
    Ok(FileReply {
        size: files.iter().map(|f| f.size).sum(),
        paths: files.into_iter().map(|f| f.path).collect(),
        ..Default::default()
    })
}

fn remove(_: &Context, r: FileRef) -> Result<FileReply> {
    let c = open(&r.collection)?;
    match r.expected_version {
        Some(v) => {
            let mut f = c.stat_file(&r.id, &r.path)?;
            f.version = v;
            c.delete_file_if(&f)?;
        }
        None => c.delete_file(&r.id, &r.path)?,
    }
    fail_if(r.fail_after)?;
    Ok(FileReply::default())
}

fn copy(_: &Context, r: FileRef) -> Result<FileReply> {
    let from = open(&r.collection)?;
    let info = from.stat_file(&r.id, &r.path)?;
    let bytes = from.read_file(&r.id, &r.path)?;
    let docs = open("docs")?;
    docs.write_file(&r.id, &r.to_path, &info.content_type, &bytes)?;
    fail_if(r.fail_after)?;
    Ok(FileReply {
        size: bytes.len() as i64,
        blake3: info.blake3,
        ..Default::default()
    })
}

handler! {
    "Put" => put,
    "Read" => read,
    "List" => list,
    "Remove" => remove,
    "Copy" => copy,
}
