//! Typed access to the collections a handler was granted.

use crate::bindings::collector::runtime::collections as wit;
use crate::{Error, Query, Result};
use std::marker::PhantomData;

/// A collection of `T` records, opened by name inside the caller's
/// namespace. Writes are buffered by the node and committed together when
/// the method returns `Ok`; an `Err` or a panic discards all of them.
pub struct Collection<T> {
    name: String,
    pub(crate) inner: wit::Collection,
    _type: PhantomData<fn() -> T>,
}

/// One stored record with its payload decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct Doc<T> {
    /// The record id.
    pub id: String,
    /// The payload.
    pub value: T,
    /// Labels (key, value), sorted by key.
    pub labels: Vec<(String, String)>,
    /// Bumped by every write; pass it back to detect concurrent changes.
    pub version: i64,
    /// Creation time, microseconds since the Unix epoch.
    pub created_us: i64,
    /// Last write, microseconds since the Unix epoch.
    pub updated_us: i64,
}

impl<T> Doc<T> {
    /// The value of label `key`.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// One page of a search.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    /// The records of this page.
    pub docs: Vec<Doc<T>>,
    /// Pass to [`Query::after`] for the next page; empty on the last page.
    pub next_page_token: String,
}

fn labels_of(labels: &[(&str, &str)]) -> Vec<(String, String)> {
    labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

impl<T: prost::Message + Default> Collection<T> {
    /// Opens `name`. Fails with permission-denied when the handler was not
    /// granted it and not-found when it does not exist.
    pub fn open(name: &str) -> Result<Self> {
        Ok(Collection {
            name: name.to_string(),
            inner: wit::Collection::open(name)?,
            _type: PhantomData,
        })
    }

    /// The collection's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn doc(&self, r: wit::Record) -> Result<Doc<T>> {
        let value = T::decode(r.data.as_slice()).map_err(|e| {
            Error::internal(format!(
                "record {} of {} is not the message this handler expects: {e}",
                r.id, self.name
            ))
        })?;
        Ok(Doc {
            id: r.id,
            value,
            labels: r.labels,
            version: r.version,
            created_us: r.created_us,
            updated_us: r.updated_us,
        })
    }

    /// The record `id`; not-found if there is none.
    pub fn get(&self, id: &str) -> Result<Doc<T>> {
        self.doc(self.inner.get(id)?)
    }

    /// The record `id`, or `None`.
    pub fn find(&self, id: &str) -> Result<Option<Doc<T>>> {
        match self.inner.get(id) {
            Ok(r) => self.doc(r).map(Some),
            Err(e) => match Error::from(e) {
                Error::NotFound(_) => Ok(None),
                e => Err(e),
            },
        }
    }

    /// Stores a new record; an empty `id` gets a fresh UUIDv7.
    /// already-exists if `id` is taken.
    pub fn create(&self, id: &str, value: &T) -> Result<Doc<T>> {
        self.create_labeled(id, value, &[])
    }

    /// [`Collection::create`] with labels.
    pub fn create_labeled(&self, id: &str, value: &T, labels: &[(&str, &str)]) -> Result<Doc<T>> {
        let r = self
            .inner
            .create(id, &value.encode_to_vec(), &labels_of(labels))?;
        self.doc(r)
    }

    /// Writes `doc.value` and `doc.labels` back, if the record is still at
    /// `doc.version`; conflict otherwise. The usual read-modify-write:
    /// `let mut d = c.get(id)?; d.value.n += 1; c.update(&d)?`.
    pub fn update(&self, doc: &Doc<T>) -> Result<Doc<T>> {
        let r = self.inner.update(
            &doc.id,
            &doc.value.encode_to_vec(),
            &doc.labels,
            Some(doc.version),
        )?;
        self.doc(r)
    }

    /// Replaces record `id` whatever its version (labels are cleared).
    pub fn replace(&self, id: &str, value: &T) -> Result<Doc<T>> {
        self.doc(self.inner.update(id, &value.encode_to_vec(), &[], None)?)
    }

    /// Deletes record `id`; not-found if there is none.
    pub fn delete(&self, id: &str) -> Result<()> {
        Ok(self.inner.delete(id, None)?)
    }

    /// Deletes `doc` if it is still at `doc.version`; conflict otherwise.
    pub fn delete_doc(&self, doc: &Doc<T>) -> Result<()> {
        Ok(self.inner.delete(&doc.id, Some(doc.version))?)
    }

    /// One page of records matching `q`.
    pub fn search(&self, q: &Query) -> Result<Page<T>> {
        let page = self.inner.search(&q.to_wit())?;
        Ok(Page {
            docs: page
                .records
                .into_iter()
                .map(|r| self.doc(r))
                .collect::<Result<_>>()?,
            next_page_token: page.next_page_token,
        })
    }

    /// Every record matching `q`, following page tokens. Each page is a host
    /// call, so a huge result meets the per-call host-call cap.
    pub fn search_all(&self, q: &Query) -> Result<Vec<Doc<T>>> {
        let mut all = Vec::new();
        let mut q = q.clone();
        loop {
            let page = self.search(&q)?;
            all.extend(page.docs);
            if page.next_page_token.is_empty() {
                return Ok(all);
            }
            q = q.after(page.next_page_token);
        }
    }

    /// How many records match `q` (paging is ignored).
    pub fn count(&self, q: &Query) -> Result<i64> {
        Ok(self.inner.count(&q.to_wit())?)
    }
}
