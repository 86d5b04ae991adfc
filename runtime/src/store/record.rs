//! The data model of a collection: a record, the writes that change it, and
//! the checks every write path shares (labels, versions).

use super::codec::Encoded;
use crate::error::{Error, Result};
use crate::names::RecordId;
use prost_reflect::DynamicMessage;
use std::collections::BTreeMap;

/// Record labels, ordered so their JSON form is canonical.
pub type Labels = BTreeMap<String, String>;

use crate::limits::{MAX_LABEL_LEN, MAX_LABELS};

/// A stored record.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The record's id in its collection.
    pub id: String,
    /// The payload, binary protobuf of the collection's type.
    pub data: Vec<u8>,
    /// The payload as canonical JSON.
    pub json: String,
    /// The record's labels.
    pub labels: Labels,
    /// 1 on create, +1 on every update (for optimistic concurrency).
    pub version: i64,
    /// When it was created (µs since the Unix epoch).
    pub created_us: i64,
    /// When it was last written (µs since the Unix epoch).
    pub updated_us: i64,
}

impl Record {
    /// A record of a payload's bytes and JSON (see `Encoded`).
    pub fn new(
        id: String,
        (data, json): (Vec<u8>, String),
        labels: Labels,
        version: i64,
        created_us: i64,
        updated_us: i64,
    ) -> Self {
        Record {
            id,
            data,
            json,
            labels,
            version,
            created_us,
            updated_us,
        }
    }
}

/// What part of a record an update replaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MaskPart {
    /// Leave this part as it is.
    Keep,
    /// Replace this part whole.
    All,
    /// Replace only these field paths (or label keys).
    Paths(Vec<String>),
}

/// An update mask over the payload (`data…`) and the labels (`labels…`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mask {
    /// What the update does to the payload.
    pub data: MaskPart,
    /// What the update does to the labels.
    pub labels: MaskPart,
}

impl Mask {
    /// Replace payload and labels.
    pub fn full() -> Self {
        Mask {
            data: MaskPart::All,
            labels: MaskPart::All,
        }
    }

    /// Parses field-mask paths: `data`, `data.<path>`, `labels`, `labels.<key>`.
    /// No paths means a full replace.
    pub fn parse(paths: &[String]) -> Result<Self> {
        if paths.is_empty() {
            return Ok(Mask::full());
        }
        let mut m = Mask {
            data: MaskPart::Keep,
            labels: MaskPart::Keep,
        };
        fn add(part: &mut MaskPart, sub: Option<&str>) {
            match (sub, &mut *part) {
                (None, _) => *part = MaskPart::All,
                (Some(_), MaskPart::All) => {}
                (Some(s), MaskPart::Paths(v)) => v.push(s.to_string()),
                (Some(s), MaskPart::Keep) => *part = MaskPart::Paths(vec![s.to_string()]),
            }
        }
        for p in paths {
            if p.split('.').count() > crate::limits::MAX_NESTING {
                return Err(Error::invalid(format!(
                    "update_mask path {:?} has more than {} parts",
                    crate::names::clip(p),
                    crate::limits::MAX_NESTING
                )));
            }
            match p.split_once('.') {
                None if p == "data" => add(&mut m.data, None),
                None if p == "labels" => add(&mut m.labels, None),
                Some(("data", rest)) if !rest.is_empty() => add(&mut m.data, Some(rest)),
                Some(("labels", rest)) if !rest.is_empty() => add(&mut m.labels, Some(rest)),
                _ => {
                    return Err(Error::invalid(format!(
                        "update_mask path {:?}: use \"data\", \"data.<field path>\", \"labels\" or \"labels.<key>\"",
                        crate::names::clip(p)
                    )));
                }
            }
        }
        Ok(m)
    }
}

/// One write.
#[derive(Debug, Clone)]
pub enum WriteOp {
    /// Inserts a new record (ALREADY_EXISTS if the id is taken).
    Create {
        /// The id; None gets a UUIDv7.
        id: Option<RecordId>,
        /// The payload, already encoded.
        payload: Encoded,
        /// The record's labels.
        labels: Labels,
    },
    /// Changes an existing record (NOT_FOUND if there is none).
    Update {
        /// The record to change.
        id: RecordId,
        /// The new payload; None with a data mask clears the masked fields.
        data: Option<DynamicMessage>,
        /// The new labels (as far as the mask says).
        labels: Labels,
        /// Which parts the update replaces.
        mask: Mask,
        /// Only if the record is at this version (else FAILED_PRECONDITION).
        expected_version: Option<i64>,
    },
    /// Removes a record (NOT_FOUND if there is none).
    Delete {
        /// The record to remove.
        id: RecordId,
        /// Only if the record is at this version (else FAILED_PRECONDITION).
        expected_version: Option<i64>,
    },
}

impl WriteOp {
    /// About how many bytes it adds (at least 1), a delete none: what the
    /// storage quota counts until the next measure.
    pub fn adds(&self) -> u64 {
        match self {
            WriteOp::Create { payload, .. } => payload.bytes.len().max(1) as u64,
            WriteOp::Update { data, .. } => data
                .as_ref()
                .map_or(1, |m| prost::Message::encoded_len(m).max(1) as u64),
            WriteOp::Delete { .. } => 0,
        }
    }
}

/// What a write did.
#[derive(Debug, Clone, PartialEq)]
pub enum Written {
    /// The record as stored now.
    Stored(Record),
    /// The record is gone.
    Deleted,
}

/// The outcome of a batch: every op applied, or none.
#[derive(Debug, Clone)]
pub struct BatchOutcome {
    /// True if every op was applied; false if none was.
    pub committed: bool,
    /// One result per op: its outcome, or why it (or the batch) failed.
    pub results: Vec<Result<Written>>,
    /// True if the call the batch belongs to had applied its batch here
    /// already: nothing was applied now (`results` is empty).
    pub replayed: bool,
}

/// Checks labels against the limits.
pub fn check_labels(labels: &Labels) -> Result<()> {
    if labels.len() > MAX_LABELS {
        return Err(Error::invalid(format!(
            "{} labels given; the limit is {MAX_LABELS}",
            labels.len()
        )));
    }
    for (k, v) in labels {
        if k.is_empty()
            || k.len() > MAX_LABEL_LEN
            || v.len() > MAX_LABEL_LEN
            || k.contains('\0')
            || v.contains('\0')
        {
            return Err(Error::invalid(format!(
                "label {k:?}: keys must be 1 to {MAX_LABEL_LEN} bytes and values at most {MAX_LABEL_LEN}, without NUL"
            )));
        }
    }
    Ok(())
}

/// A page of query results.
#[derive(Debug, Clone)]
pub struct Page {
    /// The records with their relevance score (0 without text).
    pub hits: Vec<(Record, f64)>,
    /// Token of the next page; empty on the last.
    pub next_token: String,
}

/// Refuses a write whose expected version differs from the record's.
pub fn check_version(id: &RecordId, expected: Option<i64>, actual: i64) -> Result<()> {
    match expected {
        Some(v) if v != actual => Err(Error::failed_precondition(format!(
            "record {:?} is at version {actual}, not the expected {v}: read it again and retry",
            id.as_str()
        ))),
        _ => Ok(()),
    }
}
