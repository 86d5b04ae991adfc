//! Proto types registered at run time, one DescriptorPool per namespace.
//! Registrations are validated as a whole, persisted in the `system/protos`
//! collection, and only then made visible. The registry uses the store to
//! persist; the store resolves collection types through `store::Types`,
//! which the registry implements, so the store never names the registry.

use crate::error::{Error, ErrorKind, Result};
use crate::names::Namespace;
use crate::proto::api_pool;
use crate::store::{Collection, Labels, WriteOp, Written, codec};
use miette::Diagnostic;
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor};
use prost_types::{FileDescriptorProto, FileDescriptorSet};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

/// What a client registers.
#[derive(Debug, Clone)]
pub enum ProtoInput {
    /// (file name, source text) pairs, compiled on the node.
    Sources(Vec<(String, String)>),
    /// Already-compiled descriptors.
    FileSet(FileDescriptorSet),
}

/// What a registration added.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProtoRegistration {
    /// Files stored by this registration (identical ones already held are not).
    pub new_files: Vec<String>,
    /// Message types the request's files define.
    pub message_types: Vec<String>,
    /// Services the request's files declare.
    pub services: Vec<String>,
}

/// A summary of one registered file.
#[derive(Debug, Clone, PartialEq)]
pub struct FileSummary {
    /// The file's name, e.g. `shop/order.proto`.
    pub name: String,
    /// Its proto package.
    pub package: String,
    /// Message types it defines (nested ones included).
    pub message_types: Vec<String>,
    /// Services it declares.
    pub services: Vec<String>,
    /// Files it imports.
    pub dependencies: Vec<String>,
}

#[derive(Clone)]
struct Space {
    pool: DescriptorPool,
}

/// Per-namespace types.
pub struct Registry {
    spaces: RwLock<HashMap<Namespace, Space>>,
    store: Arc<Collection>,
    register_lock: tokio::sync::Mutex<()>,
}

/// The problems found with a registration, one line each. Only the first
/// `limits::MAX_LISTED_ERRORS` are kept and formatted (finding a line and
/// column scans the source, so formatting them all was quadratic); the
/// rest are counted.
#[derive(Default)]
struct Problems {
    lines: Vec<String>,
    more: usize,
}

impl Problems {
    fn full(&self) -> bool {
        self.lines.len() >= crate::limits::MAX_LISTED_ERRORS
    }

    fn push(&mut self, line: String) {
        if self.full() {
            self.more += 1;
        } else {
            self.lines.push(line);
        }
    }

    fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// One error line per diagnostic, with file:line:column where known.
    fn describe(&mut self, err: &dyn Diagnostic, fallback_file: Option<&str>) {
        if self.full() {
            self.more += 1;
        } else {
            let mut at = String::new();
            if let (Some(src), Some(label)) =
                (err.source_code(), err.labels().and_then(|mut l| l.next()))
            {
                if let Ok(contents) = src.read_span(label.inner(), 0, 0) {
                    let name = contents
                        .name()
                        .map(str::to_string)
                        .or(fallback_file.map(str::to_string))
                        .unwrap_or_default();
                    at = format!(
                        "{}:{}:{}: ",
                        name,
                        contents.line() + 1,
                        contents.column() + 1
                    );
                }
            } else if let Some(f) = fallback_file {
                at = format!("{f}: ");
            }
            self.lines.push(format!("{at}{err}"));
        }
        if let Some(related) = err.related() {
            for r in related {
                self.describe(r, fallback_file);
            }
        }
    }
}

impl std::fmt::Display for Problems {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.lines.join("\n"))?;
        match self.more {
            0 => Ok(()),
            // prost-reflect (patched) reports at most this many per check.
            n if self.lines.len() + n == prost_reflect::DescriptorError::MAX_ERRORS => {
                write!(f, "\n… and {n} or more besides")
            }
            n => write!(f, "\n… and {n} more"),
        }
    }
}

struct MemResolver(BTreeMap<String, String>);

impl protox::file::FileResolver for MemResolver {
    fn open_file(&self, name: &str) -> Result<protox::file::File, protox::Error> {
        match self.0.get(name) {
            Some(src) => protox::file::File::from_source(name, src),
            None => Err(protox::Error::file_not_found(name)),
        }
    }
}

/// Refuses a registration of more files or bytes than the node compiles.
fn check_size(files: usize, bytes: usize) -> Result<()> {
    use crate::limits::{MAX_PROTO_BYTES, MAX_PROTO_FILES};
    if files > MAX_PROTO_FILES {
        return Err(Error::invalid(format!(
            "{files} files in one registration; the limit is {MAX_PROTO_FILES}: register them in several calls"
        )));
    }
    if bytes > MAX_PROTO_BYTES {
        return Err(Error::invalid(format!(
            "the registration is {bytes} bytes; the limit is {MAX_PROTO_BYTES} (MAX_PROTO_BYTES): split the files over several calls"
        )));
    }
    Ok(())
}

/// Refuses a descriptor set whose files depend on themselves, directly or
/// through others (a cycle `protoc` would never produce).
fn check_self_imports(set: &FileDescriptorSet) -> Result<()> {
    let deps: BTreeMap<&str, &[String]> = set
        .file
        .iter()
        .map(|f| (f.name(), f.dependency.as_slice()))
        .collect();
    // Depth-first over the set's own files; 1 = on the path, 2 = done.
    fn visit<'a>(
        f: &'a str,
        deps: &BTreeMap<&'a str, &'a [String]>,
        state: &mut BTreeMap<&'a str, u8>,
    ) -> Option<&'a str> {
        match state.get(f) {
            Some(1) => return Some(f),
            Some(_) => return None,
            None => {}
        }
        state.insert(f, 1);
        for d in deps.get(f).copied().unwrap_or_default() {
            if let Some((name, _)) = deps.get_key_value(d.as_str())
                && let Some(cycle) = visit(name, deps, state)
            {
                return Some(cycle);
            }
        }
        state.insert(f, 2);
        None
    }
    let mut state = BTreeMap::new();
    for f in deps.keys() {
        if let Some(at) = visit(f, &deps, &mut state) {
            return Err(Error::invalid(format!(
                "file_set: {:?} depends on itself (an import cycle)",
                crate::names::clip(at)
            )));
        }
    }
    Ok(())
}

/// Compiles .proto sources that may import `existing` files and the
/// well-known types. Every file's errors are reported, not just the first.
pub fn compile_sources(
    sources: &[(String, String)],
    existing: &[FileDescriptorProto],
) -> Result<DescriptorPool> {
    let mut errors = Problems::default();
    let mut map = BTreeMap::new();
    for (name, src) in sources {
        if name.is_empty()
            || name.starts_with('/')
            || name.split('/').any(|p| p == ".." || p.is_empty())
            || !name.ends_with(".proto")
        {
            errors.push(format!("{name:?}: a source name is a relative path ending in .proto, like \"shop/order.proto\""));
        }
        if map.insert(name.clone(), src.clone()).is_some() {
            errors.push(format!("{name}: given twice"));
        }
    }
    for (name, src) in sources {
        if let Err(e) = check_nesting(src) {
            errors.push(format!("{}: {e}", crate::names::clip(name)));
        }
    }
    if !errors.is_empty() {
        return Err(Error::invalid(errors.to_string()));
    }
    let mut chain = protox::file::ChainFileResolver::new();
    chain.add(MemResolver(map));
    chain.add(protox::file::DescriptorSetFileResolver::new(
        FileDescriptorSet {
            file: existing.to_vec(),
        },
    ));
    chain.add(protox::file::GoogleFileResolver::new());
    let mut compiler = protox::Compiler::with_file_resolver(chain);
    compiler.include_imports(true).include_source_info(false);
    for (name, _) in sources {
        if let Err(e) = compiler.open_file(name) {
            errors.describe(&e, Some(name));
        }
    }
    if !errors.is_empty() {
        return Err(Error::invalid(format!(
            "the .proto files do not compile:\n{errors}"
        )));
    }
    Ok(compiler.descriptor_pool())
}

/// Refuses .proto source nested deeper than `limits::MAX_NESTING` (braces,
/// brackets, parentheses and angle brackets, outside strings and comments)
/// before the compiler sees it: protox's parser recurses on nesting, and
/// 1,000 levels of an option value ended the process. One linear pass.
fn check_nesting(src: &str) -> std::result::Result<(), String> {
    let max = crate::limits::MAX_NESTING;
    let (mut depth, mut line) = (0usize, 1usize);
    let mut chars = src.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\n' => line += 1,
            '"' | '\'' => {
                while let Some(d) = chars.next() {
                    match d {
                        '\\' => {
                            chars.next();
                        }
                        '\n' => {
                            line += 1;
                            break;
                        }
                        d if d == c => break,
                        _ => {}
                    }
                }
            }
            '/' if chars.peek() == Some(&'/') => {
                for d in chars.by_ref() {
                    if d == '\n' {
                        line += 1;
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut prev = ' ';
                for d in chars.by_ref() {
                    if d == '\n' {
                        line += 1;
                    }
                    if prev == '*' && d == '/' {
                        break;
                    }
                    prev = d;
                }
            }
            '{' | '[' | '(' | '<' => {
                depth += 1;
                if depth > max {
                    return Err(format!(
                        "line {line}: nested more than {max} levels deep; flatten the definitions or option values"
                    ));
                }
            }
            '}' | ']' | ')' | '>' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// A file as the node keeps it: without source info (positions and
/// comments), like protoc's default output. Source info is most of a
/// compiled file's size, and a file with it costs several times more to
/// store and load; stored this way, a source and a compiled upload of the
/// same file are equal.
fn without_source_info(f: &FileDescriptorProto) -> FileDescriptorProto {
    FileDescriptorProto {
        source_code_info: None,
        ..f.clone()
    }
}

/// A file's content as compared for "already registered": without source
/// info, which files stored before it was dropped still carry.
fn normalized(f: &FileDescriptorProto) -> Vec<u8> {
    without_source_info(f).encode_to_vec()
}

fn summary(f: &prost_reflect::FileDescriptor) -> FileSummary {
    FileSummary {
        name: f.name().to_string(),
        package: f.package_name().to_string(),
        message_types: all_messages(f),
        services: f.services().map(|s| s.full_name().to_string()).collect(),
        dependencies: f.dependencies().map(|d| d.name().to_string()).collect(),
    }
}

fn all_messages(f: &prost_reflect::FileDescriptor) -> Vec<String> {
    fn walk(m: MessageDescriptor, out: &mut Vec<String>) {
        if m.is_map_entry() {
            return;
        }
        out.push(m.full_name().to_string());
        m.child_messages().for_each(|c| walk(c, out));
    }
    let mut out = Vec::new();
    f.messages().for_each(|m| walk(m, &mut out));
    out
}

fn is_builtin(name: &str) -> bool {
    name.starts_with("google/protobuf/")
}

/// The well-known files (`google/protobuf/*`, from the global pool) that
/// `files` import, with their own imports, and `pool` lacks. A namespace's
/// pool holds its own files and just these: a copy of every well-known
/// file (what a pool grown from the global one holds) cost ~590 KB a
/// namespace, 590 MB for a thousand.
fn builtin_deps(pool: &DescriptorPool, files: &[FileDescriptorProto]) -> Vec<FileDescriptorProto> {
    let global = DescriptorPool::global();
    let mut want: Vec<String> = files
        .iter()
        .flat_map(|f| f.dependency.iter().cloned())
        .filter(|d| is_builtin(d))
        .collect();
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    while let Some(d) = want.pop() {
        if pool.get_file_by_name(&d).is_some() || !seen.insert(d.clone()) {
            continue;
        }
        if let Some(f) = global.get_file_by_name(&d) {
            let proto = f.file_descriptor_proto().clone();
            want.extend(proto.dependency.iter().cloned());
            out.push(proto);
        }
    }
    out
}

/// What a registration will store and make visible, once persisted.
struct Prepared {
    out: ProtoRegistration,
    pool: DescriptorPool,
    new_files: Vec<String>,
    ops: Vec<WriteOp>,
}

/// Validates a registration against the namespace's `current` types and
/// builds the records that persist it. Blocking: compiles and builds pools.
fn prepare(
    ns: &Namespace,
    current: &DescriptorPool,
    input: ProtoInput,
    record_desc: &MessageDescriptor,
) -> Result<Prepared> {
    let existing: Vec<FileDescriptorProto> = current
        .files()
        .filter(|f| !is_builtin(f.name()))
        .map(|f| f.file_descriptor_proto().clone())
        .collect();
    let (request_files, mut candidates): (Vec<String>, Vec<FileDescriptorProto>) = match input {
        ProtoInput::Sources(sources) => {
            if sources.is_empty() {
                return Err(Error::invalid("give .proto sources or a file_set"));
            }
            check_size(
                sources.len(),
                sources.iter().map(|(n, s)| n.len() + s.len()).sum(),
            )?;
            let compiled = compile_sources(&sources, &existing)?;
            let names: Vec<String> = sources.iter().map(|(n, _)| n.clone()).collect();
            // The request's own files plus anything they import that the namespace lacks.
            let files = compiled
                .files()
                .filter(|f| !is_builtin(f.name()))
                .map(|f| without_source_info(f.file_descriptor_proto()))
                .collect();
            (names, files)
        }
        ProtoInput::FileSet(set) => {
            if set.file.is_empty() {
                return Err(Error::invalid("file_set has no files"));
            }
            check_size(set.file.len(), prost::Message::encoded_len(&set))?;
            check_self_imports(&set)?;
            let names = set
                .file
                .iter()
                .filter(|f| !is_builtin(f.name()))
                .map(|f| f.name().to_string())
                .collect();
            (
                names,
                set.file
                    .into_iter()
                    .filter(|f| !is_builtin(f.name()))
                    .map(|f| without_source_info(&f))
                    .collect(),
            )
        }
    };
    // Identical files are no-ops; a different file under a taken name conflicts.
    let mut errors = Problems::default();
    let mut conflict = false;
    candidates.retain(|f| match current.get_file_by_name(f.name()) {
            Some(old) if normalized(old.file_descriptor_proto()) == normalized(f) => false,
            Some(_) => {
                conflict = true;
                errors.push(format!("{}: a different file with this name is already registered in namespace {ns}; register it under a new name (types are immutable)", f.name()));
                false
            }
            None => true,
        });
    let mut pool = current.clone();
    let deps = builtin_deps(&pool, &candidates);
    if errors.is_empty()
        && !candidates.is_empty()
        && let Err(e) = pool.add_file_descriptor_protos(deps.into_iter().chain(candidates.clone()))
    {
        errors.describe(&e, None);
        conflict |= errors.lines.iter().any(|l| l.contains("already defined"));
    }
    if !errors.is_empty() {
        let kind = if conflict {
            ErrorKind::AlreadyExists
        } else {
            ErrorKind::InvalidArgument
        };
        return Err(Error {
            kind,
            message: format!("registration refused, nothing was registered:\n{errors}"),
        });
    }
    let mut out = ProtoRegistration::default();
    for name in &request_files {
        if let Some(f) = pool.get_file_by_name(name) {
            out.message_types.extend(all_messages(&f));
            out.services
                .extend(f.services().map(|s| s.full_name().to_string()));
        }
    }
    let mut ops = Vec::new();
    for f in &candidates {
        let stored = crate::proto::ProtoFileRecord {
            namespace: ns.to_string(),
            name: f.name().to_string(),
            file: f.encode_to_vec(),
        };
        let msg = DynamicMessage::decode(record_desc.clone(), stored.encode_to_vec().as_slice())
            .map_err(|e| Error::internal(format!("encoding a stored proto: {e}")))?;
        let id = crate::names::RecordId::new(&format!("{ns}/{}", f.name()))?;
        ops.push(WriteOp::Create {
            id: Some(id),
            payload: codec::encode(&msg)?,
            labels: Labels::new(),
        });
    }
    Ok(Prepared {
        new_files: candidates.iter().map(|f| f.name().to_string()).collect(),
        out,
        pool,
        ops,
    })
}

impl Registry {
    /// Loads every namespace's files from `system/protos`.
    pub async fn load(store: Arc<Collection>) -> Result<Self> {
        let mut files: BTreeMap<Namespace, Vec<(i64, FileDescriptorProto)>> = BTreeMap::new();
        store
            .scan(|rec, msg| {
                let stored: crate::proto::ProtoFileRecord = msg
                    .transcode_to()
                    .map_err(|e| Error::internal(format!("system/protos {:?}: {e}", rec.id)))?;
                let ns = Namespace::new(&stored.namespace)?;
                let file = FileDescriptorProto::decode(stored.file.as_slice()).map_err(|e| {
                    Error::internal(format!(
                        "system/protos {:?}: the file does not decode: {e}",
                        rec.id
                    ))
                })?;
                files.entry(ns).or_default().push((rec.created_us, file));
                Ok(())
            })
            .await?;
        let mut spaces = HashMap::new();
        spaces.insert(Namespace::system(), Space { pool: api_pool() });
        for (ns, mut list) in files {
            list.sort_by_key(|(t, _)| *t);
            let list: Vec<FileDescriptorProto> = list.into_iter().map(|(_, f)| f).collect();
            let mut pool = DescriptorPool::new();
            let deps = builtin_deps(&pool, &list);
            pool.add_file_descriptor_protos(deps.into_iter().chain(list))
                .map_err(|e| {
                    Error::internal(format!("stored types of namespace {ns} do not load: {e:?}"))
                })?;
            spaces.insert(ns, Space { pool });
        }
        Ok(Registry {
            spaces: RwLock::new(spaces),
            store,
            register_lock: tokio::sync::Mutex::new(()),
        })
    }

    /// The namespace's pool: its files and the well-known files they
    /// import (every well-known type if nothing is registered).
    pub fn pool(&self, ns: &Namespace) -> DescriptorPool {
        self.spaces
            .read()
            .expect("registry lock")
            .get(ns)
            .map(|s| s.pool.clone())
            .unwrap_or_else(DescriptorPool::global)
    }

    /// Namespaces with registered files.
    pub fn namespaces(&self) -> Vec<Namespace> {
        let mut v: Vec<Namespace> = self
            .spaces
            .read()
            .expect("registry lock")
            .keys()
            .cloned()
            .collect();
        v.sort();
        v
    }

    /// Looks up a message type registered in `ns` (or a well-known type).
    pub fn message(&self, ns: &Namespace, full_name: &str) -> Result<MessageDescriptor> {
        let name = full_name.strip_prefix('.').unwrap_or(full_name);
        if name.is_empty() {
            return Err(Error::invalid(
                "message_type is empty: name a registered message, e.g. \"shop.Order\"",
            ));
        }
        // A well-known type the namespace's files do not import is in the
        // global pool.
        let found = self
            .pool(ns)
            .get_message_by_name(name)
            .or_else(|| DescriptorPool::global().get_message_by_name(name));
        found.ok_or_else(|| {
            Error::not_found(format!(
                "message type {name:?} is not registered in namespace {ns}: register its .proto with CollectorRegistry.RegisterProto first"
            ))
        })
    }

    /// Registers files in `ns`, all or nothing.
    pub async fn register(&self, ns: &Namespace, input: ProtoInput) -> Result<ProtoRegistration> {
        ns.writable()?;
        // One registration at a time, node-wide: this also bounds the memory
        // that compiling and checking registrations can take at once.
        let _guard = self.register_lock.lock().await;
        // A namespace with nothing registered starts from an empty pool, not
        // a copy of the global one (see `builtin_deps`).
        let current = self
            .spaces
            .read()
            .expect("registry lock")
            .get(ns)
            .map(|s| s.pool.clone())
            .unwrap_or_default();
        let record_desc = self.store.descriptor().clone();
        let ns_ = ns.clone();
        // Compiling, building the pool and encoding are CPU work: off the executor.
        let prepared =
            tokio::task::spawn_blocking(move || prepare(&ns_, &current, input, &record_desc))
                .await
                .map_err(|e| Error::internal(format!("proto registration task: {e}")))??;
        let Prepared {
            mut out,
            pool,
            new_files,
            ops,
        } = prepared;
        if new_files.is_empty() {
            return Ok(out);
        }
        // Persist first: a crash after this point finds the files on restart.
        let outcome = self.store.batch(ops).await?;
        if !outcome.committed {
            let first = outcome
                .results
                .into_iter()
                .find_map(|r| r.err())
                .unwrap_or_else(|| Error::internal("batch failed"));
            return Err(Error::internal(format!(
                "persisting the files failed: {}",
                first.message
            )));
        }
        debug_assert!(
            outcome
                .results
                .iter()
                .all(|r| matches!(r, Ok(Written::Stored(_))))
        );
        out.new_files = new_files;
        self.spaces
            .write()
            .expect("registry lock")
            .insert(ns.clone(), Space { pool });
        tracing::info!(namespace = %ns, files = ?out.new_files, "registered proto files");
        Ok(out)
    }

    /// The registered files of a namespace.
    pub fn list(&self, ns: &Namespace) -> Vec<FileSummary> {
        let pool = self.pool(ns);
        pool.files()
            .filter(|f| !is_builtin(f.name()))
            .map(|f| summary(&f))
            .collect()
    }

    /// A file (by name or by a symbol it defines) followed by its transitive
    /// dependencies.
    pub fn file_with_deps(
        &self,
        ns: &Namespace,
        file_name: Option<&str>,
        symbol: Option<&str>,
    ) -> Result<Vec<FileDescriptorProto>> {
        let pool = self.pool(ns);
        let file = match (file_name, symbol) {
            (Some(n), _) => pool
                .get_file_by_name(n)
                .ok_or_else(|| Error::not_found(format!("no file {n:?} in namespace {ns}")))?,
            (None, Some(s)) => {
                let s = s.strip_prefix('.').unwrap_or(s);
                symbol_file(&pool, s)
                    .ok_or_else(|| Error::not_found(format!("no symbol {s:?} in namespace {ns}")))?
            }
            (None, None) => return Err(Error::invalid("name a file_name or a symbol")),
        };
        Ok(with_deps(&file))
    }
}

impl crate::store::Types for Registry {
    fn message(&self, ns: &Namespace, full_name: &str) -> Result<MessageDescriptor> {
        Registry::message(self, ns, full_name)
    }
}

/// The file that defines a message, enum, service or method.
pub fn symbol_file(pool: &DescriptorPool, s: &str) -> Option<prost_reflect::FileDescriptor> {
    if let Some(m) = pool.get_message_by_name(s) {
        return Some(m.parent_file());
    }
    if let Some(e) = pool.get_enum_by_name(s) {
        return Some(e.parent_file());
    }
    if let Some(svc) = pool.get_service_by_name(s) {
        return Some(svc.parent_file());
    }
    if let Some((svc, _method)) = s.rsplit_once('.')
        && let Some(svc) = pool.get_service_by_name(svc)
    {
        return Some(svc.parent_file());
    }
    None
}

/// A file and everything it imports, the file first.
pub fn with_deps(file: &prost_reflect::FileDescriptor) -> Vec<FileDescriptorProto> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    let mut stack = vec![file.clone()];
    while let Some(f) = stack.pop() {
        if !seen.insert(f.name().to_string()) {
            continue;
        }
        out.push(f.file_descriptor_proto().clone());
        stack.extend(f.dependencies());
    }
    out
}

#[cfg(test)]
mod tests {
    /// The source locations of options are rewritten from the option as
    /// written (`uninterpreted_option`, field 999) to the field it set: the
    /// step of prost-reflect that Collector's patch made linear.
    #[test]
    fn option_locations_point_at_the_options_they_set() {
        let src = "syntax = \"proto3\"; package t;\n\
                   message M { option deprecated = true; int32 a = 1 [deprecated = true]; }\n\
                   message N { int32 b = 1 [deprecated = true]; }\n";
        let pool = super::compile_sources(&[("t.proto".into(), src.into())], &[]).unwrap();
        let file = pool.get_file_by_name("t.proto").unwrap();
        let info = file
            .file_descriptor_proto()
            .source_code_info
            .clone()
            .unwrap();
        let paths: Vec<Vec<i32>> = info.location.into_iter().map(|l| l.path).collect();
        // message 0 → options (7) → deprecated (3); message i → field 0 → options (8) → deprecated (3).
        for want in [
            vec![4, 0, 7, 3],
            vec![4, 0, 2, 0, 8, 3],
            vec![4, 1, 2, 0, 8, 3],
        ] {
            assert!(paths.contains(&want), "{want:?} in {paths:?}");
        }
        assert!(!paths.iter().any(|p| p.contains(&999)), "{paths:?}");
        let m = pool.get_message_by_name("t.M").unwrap();
        assert!(m.descriptor_proto().options.as_ref().unwrap().deprecated());
    }
}
