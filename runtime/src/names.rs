//! Validated names: namespaces, collections, record ids and the paths of
//! files attached to records. Every entry point
//! checks names here, so the rest of the node can use them in file paths and
//! SQL without further care.

use crate::error::{Error, Result};
use std::fmt;

/// The namespace that holds the node's own catalogue; read-only for clients.
pub const SYSTEM: &str = "system";
/// Names refused as namespaces because they would clash with the data layout.
pub const RESERVED_NAMESPACES: &[&str] = &["repo", "backups", "files", "components"];
use crate::limits::{MAX_ECHO, MAX_FILE_PATH_LEN, MAX_FILE_SEGMENT_LEN, MAX_ID_LEN, MAX_NAME_LEN};

/// The start of `s`, at most `MAX_ECHO` bytes (cut on a char boundary, with
/// "…" when cut): what an error message may repeat of client input.
pub fn clip(s: &str) -> std::borrow::Cow<'_, str> {
    if s.len() <= MAX_ECHO {
        return s.into();
    }
    let mut end = MAX_ECHO;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end]).into()
}

fn check_name(what: &str, s: &str) -> Result<()> {
    if s.is_empty() {
        return Err(Error::invalid(format!("{what} name is empty")));
    }
    if s.len() > MAX_NAME_LEN {
        return Err(Error::invalid(format!(
            "{what} name {:?} is {} bytes; the limit is {MAX_NAME_LEN}",
            clip(s),
            s.len()
        )));
    }
    let first = s.as_bytes()[0];
    let ok = first.is_ascii_lowercase()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if !ok {
        return Err(Error::invalid(format!(
            "{what} name {:?} is invalid: use a lowercase letter followed by lowercase \
             letters, digits, '_' or '-' (at most {MAX_NAME_LEN})",
            clip(s)
        )));
    }
    Ok(())
}

/// A namespace name: `[a-z][a-z0-9_-]{0,62}`, not reserved.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Namespace(String);

impl Namespace {
    /// Checks a namespace a client names; `system` is allowed (for reads).
    pub fn new(s: &str) -> Result<Self> {
        check_name("namespace", s)?;
        if RESERVED_NAMESPACES.contains(&s) {
            return Err(Error::invalid(format!(
                "namespace {s:?} is reserved; reserved names are {RESERVED_NAMESPACES:?}"
            )));
        }
        Ok(Namespace(s.to_string()))
    }

    /// The catalogue namespace.
    pub fn system() -> Self {
        Namespace(SYSTEM.to_string())
    }

    /// True for the read-only `system` namespace.
    pub fn is_system(&self) -> bool {
        self.0 == SYSTEM
    }

    /// Refuses client writes to `system`.
    pub fn writable(&self) -> Result<&Self> {
        if self.is_system() {
            return Err(Error::permission_denied(
                "namespace \"system\" is read-only: it holds the node's catalogue",
            ));
        }
        Ok(self)
    }

    /// The name as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A collection name: `[a-z][a-z0-9_-]{0,62}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CollectionName(String);

impl CollectionName {
    /// Checks the name (InvalidArgument saying what is wrong).
    pub fn new(s: &str) -> Result<Self> {
        check_name("collection", s)?;
        Ok(CollectionName(s.to_string()))
    }

    /// The name as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CollectionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A record id: any UTF-8 without NUL, 1 to 512 bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RecordId(String);

impl RecordId {
    /// Checks the id (InvalidArgument saying what is wrong).
    pub fn new(s: &str) -> Result<Self> {
        if s.is_empty() {
            return Err(Error::invalid("record id is empty"));
        }
        if s.len() > MAX_ID_LEN {
            return Err(Error::invalid(format!(
                "record id is {} bytes; the limit is {MAX_ID_LEN}",
                s.len()
            )));
        }
        if s.contains('\0') {
            return Err(Error::invalid("record id contains a NUL character"));
        }
        Ok(RecordId(s.to_string()))
    }

    /// A fresh, time-ordered id.
    pub fn generate() -> Self {
        RecordId(uuid::Uuid::now_v7().to_string())
    }

    /// The id as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id, owned.
    pub fn into_string(self) -> String {
        self.0
    }
}

/// The path of a file attached to a record: `/`-separated, relative, 1 to
/// `MAX_FILE_PATH_LEN` bytes of UTF-8, each segment 1 to
/// `MAX_FILE_SEGMENT_LEN` bytes and neither `.` nor `..`, with no NUL and
/// no backslash. It names the file in the record's metadata only: bytes on
/// disk live under names the node makes, never under this path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FilePath(String);

impl FilePath {
    /// Checks the path (InvalidArgument naming the rule it breaks).
    pub fn new(s: &str) -> Result<Self> {
        let bad = |rule: &str| Err(Error::invalid(format!("file path {:?}: {rule}", clip(s))));
        if s.is_empty() {
            return bad("is empty");
        }
        if s.len() > MAX_FILE_PATH_LEN {
            return Err(Error::invalid(format!(
                "file path is {} bytes; the limit is {MAX_FILE_PATH_LEN}",
                s.len()
            )));
        }
        if s.contains('\0') {
            return bad("contains a NUL character");
        }
        if s.contains('\\') {
            return bad("contains a backslash; segments are separated by \"/\"");
        }
        if s.starts_with('/') {
            return bad("starts with \"/\"; paths are relative to the record");
        }
        for seg in s.split('/') {
            match seg {
                "" => return bad("has an empty segment (\"//\" or a trailing \"/\")"),
                "." | ".." => return bad("has a \".\" or \"..\" segment"),
                s if s.len() > MAX_FILE_SEGMENT_LEN => {
                    return bad(&format!(
                        "has a segment of {} bytes; the limit is {MAX_FILE_SEGMENT_LEN}",
                        s.len()
                    ));
                }
                _ => {}
            }
        }
        Ok(FilePath(s.to_string()))
    }

    /// A prefix to list by: empty, or a path (a trailing `/` allowed).
    pub fn prefix(s: &str) -> Result<String> {
        if s.is_empty() {
            return Ok(String::new());
        }
        FilePath::new(s.strip_suffix('/').unwrap_or(s))?;
        Ok(s.to_string())
    }

    /// The path as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_path_rules() {
        for good in [
            "a",
            "users/user-123/profile.jpg",
            "ünï code/.hidden",
            "a..b/c.",
            &"x".repeat(255),
        ] {
            assert!(FilePath::new(good).is_ok(), "{good:?} refused");
        }
        let cases = [
            ("", "empty"),
            ("/etc/passwd", "relative"),
            ("a//b", "empty segment"),
            ("a/", "empty segment"),
            ("../x", "\"..\""),
            ("a/./b", "\".\""),
            ("a\0b", "NUL"),
            ("a\\b", "backslash"),
        ];
        for (bad, rule) in cases {
            let e = FilePath::new(bad).unwrap_err();
            assert!(e.message.contains(rule), "{bad:?}: {}", e.message);
        }
        let e = FilePath::new(&"x".repeat(256)).unwrap_err();
        assert!(e.message.contains("segment of 256 bytes"), "{}", e.message);
        let long = ["y"; 600].join("/");
        let e = FilePath::new(&long).unwrap_err();
        assert!(e.message.contains("limit is 1024"), "{}", e.message);
        assert_eq!(FilePath::prefix("docs/").unwrap(), "docs/");
        assert!(FilePath::prefix("../").is_err());
    }

    #[test]
    fn namespace_rules() {
        assert!(Namespace::new("shop").is_ok());
        assert!(Namespace::new("a-b_c9").is_ok());
        for bad in [
            "",
            "Shop",
            "9a",
            "a/b",
            "..",
            "a.b",
            "files",
            &"a".repeat(64),
        ] {
            assert!(Namespace::new(bad).is_err(), "{bad:?} accepted");
        }
        assert!(Namespace::new("system").unwrap().writable().is_err());
    }

    #[test]
    fn echoes_are_clipped_on_a_char_boundary() {
        assert_eq!(clip("short"), "short");
        let long = "é".repeat(80); // 160 bytes
        let c = clip(&long);
        assert!(c.len() <= MAX_ECHO + "…".len(), "{}", c.len());
        assert!(c.ends_with('…'));
        let e = Namespace::new(&"x".repeat(10_000)).unwrap_err();
        assert!(e.message.len() < 300, "{}", e.message.len());
    }

    #[test]
    fn record_id_rules() {
        assert!(RecordId::new("ünïcode / with spaces & 'quotes'").is_ok());
        assert!(RecordId::new("").is_err());
        assert!(RecordId::new("a\0b").is_err());
        assert!(RecordId::new(&"x".repeat(512)).is_ok());
        assert!(RecordId::new(&"x".repeat(513)).is_err());
        assert_eq!(RecordId::generate().as_str().len(), 36);
    }
}
