//! Queries over a collection: the filters, labels, order and paging of
//! `collector.v1.SearchRequest`, built fluently.

use crate::bindings::collector::runtime::collections as wit;

/// A value to compare a message field with.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Strings and enum names.
    Text(String),
    /// All integer fields (and enum numbers).
    Integer(i64),
    /// float and double fields.
    Float(f64),
    /// bool fields.
    Bool(bool),
}

macro_rules! value_from {
    ($variant:ident: $($t:ty),+) => {
        $(impl From<$t> for Value {
            fn from(v: $t) -> Self {
                Value::$variant(v.into())
            }
        })+
    };
}
value_from!(Text: &str, String, &String);
value_from!(Integer: i64, i32, u32, i16, u16, i8, u8);
value_from!(Float: f64, f32);
value_from!(Bool: bool);

impl From<Value> for wit::Value {
    fn from(v: Value) -> Self {
        match v {
            Value::Text(s) => wit::Value::Text(s),
            Value::Integer(i) => wit::Value::Integer(i),
            Value::Float(f) => wit::Value::Float(f),
            Value::Bool(b) => wit::Value::Boolean(b),
        }
    }
}

/// A search: full text, field filters (all must hold), labels, one order and
/// a page. Fields are proto field names; nested fields use dots
/// (`customer.address.city`). The default is every record, by id, in pages
/// of the node's default size.
#[derive(Debug, Clone, Default)]
pub struct Query {
    text: String,
    filters: Vec<(String, wit::FilterOp, Option<Value>, Vec<Value>)>,
    labels: Vec<(String, String)>,
    order: Option<(String, bool)>,
    page_size: u32,
    page_token: String,
}

impl Query {
    /// Every record.
    pub fn new() -> Self {
        Self::default()
    }

    /// Full-text match (FTS5 syntax) over the record's text fields; results
    /// come best match first unless an order is given.
    pub fn text(mut self, text: impl Into<String>) -> Self {
        self.text = text.into();
        self
    }

    fn filter(mut self, field: &str, op: wit::FilterOp, v: Option<Value>) -> Self {
        self.filters.push((field.into(), op, v, vec![]));
        self
    }

    /// `field == v`.
    pub fn eq(self, field: &str, v: impl Into<Value>) -> Self {
        self.filter(field, wit::FilterOp::Eq, Some(v.into()))
    }
    /// `field != v`.
    pub fn ne(self, field: &str, v: impl Into<Value>) -> Self {
        self.filter(field, wit::FilterOp::Ne, Some(v.into()))
    }
    /// `field > v`.
    pub fn gt(self, field: &str, v: impl Into<Value>) -> Self {
        self.filter(field, wit::FilterOp::Gt, Some(v.into()))
    }
    /// `field >= v`.
    pub fn ge(self, field: &str, v: impl Into<Value>) -> Self {
        self.filter(field, wit::FilterOp::Ge, Some(v.into()))
    }
    /// `field < v`.
    pub fn lt(self, field: &str, v: impl Into<Value>) -> Self {
        self.filter(field, wit::FilterOp::Lt, Some(v.into()))
    }
    /// `field <= v`.
    pub fn le(self, field: &str, v: impl Into<Value>) -> Self {
        self.filter(field, wit::FilterOp::Le, Some(v.into()))
    }
    /// A string field contains `s`, or a repeated field has element `s`.
    pub fn contains(self, field: &str, s: impl Into<Value>) -> Self {
        self.filter(field, wit::FilterOp::Contains, Some(s.into()))
    }
    /// A string field starts with `s`.
    pub fn prefix(self, field: &str, s: &str) -> Self {
        self.filter(field, wit::FilterOp::Prefix, Some(s.into()))
    }
    /// `field` equals one of `values`.
    pub fn one_of<V: Into<Value>>(
        mut self,
        field: &str,
        values: impl IntoIterator<Item = V>,
    ) -> Self {
        let values = values.into_iter().map(Into::into).collect();
        self.filters
            .push((field.into(), wit::FilterOp::OneOf, None, values));
        self
    }
    /// `field` is set (present, or non-default in proto3).
    pub fn exists(self, field: &str) -> Self {
        self.filter(field, wit::FilterOp::Exists, None)
    }
    /// `field` is not set.
    pub fn not_exists(self, field: &str) -> Self {
        self.filter(field, wit::FilterOp::NotExists, None)
    }

    /// The record has label `key` = `value`.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.push((key.into(), value.into()));
        self
    }

    /// Ascending by `field` (or `_id`, `_created`, `_updated`).
    pub fn order_by(mut self, field: &str) -> Self {
        self.order = Some((field.into(), false));
        self
    }

    /// Descending by `field`.
    pub fn order_by_desc(mut self, field: &str) -> Self {
        self.order = Some((field.into(), true));
        self
    }

    /// At most `n` records per page (the node caps it).
    pub fn limit(mut self, n: u32) -> Self {
        self.page_size = n;
        self
    }

    /// The page after the one that returned `token` as its next-page token.
    pub fn after(mut self, token: impl Into<String>) -> Self {
        self.page_token = token.into();
        self
    }

    pub(crate) fn to_wit(&self) -> wit::Query {
        let q = self;
        wit::Query {
            text: q.text.clone(),
            filters: q
                .filters
                .iter()
                .map(|(field, op, v, vs)| wit::Filter {
                    field: field.clone(),
                    op: *op,
                    value: v.clone().map(Into::into),
                    values: vs.iter().cloned().map(Into::into).collect(),
                })
                .collect(),
            labels: q.labels.clone(),
            order: q.order.as_ref().map(|(field, descending)| wit::OrderBy {
                field: field.clone(),
                descending: *descending,
            }),
            page_size: q.page_size,
            page_token: q.page_token.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_built_query_is_the_wire_query_the_host_expects() {
        let q = Query::new()
            .text("red shoes")
            .eq("status", "OPEN")
            .ge("total_cents", 1000)
            .one_of("customer", ["ada", "bob"])
            .exists("note")
            .label("region", "eu")
            .order_by_desc("total_cents")
            .limit(20)
            .after("tok")
            .to_wit();
        assert_eq!(q.text, "red shoes");
        assert_eq!(q.filters.len(), 4);
        assert_eq!(q.filters[0].field, "status");
        assert!(matches!(q.filters[0].op, wit::FilterOp::Eq));
        assert!(matches!(&q.filters[0].value, Some(wit::Value::Text(s)) if s == "OPEN"));
        assert!(matches!(
            q.filters[1].value,
            Some(wit::Value::Integer(1000))
        ));
        assert!(matches!(q.filters[2].op, wit::FilterOp::OneOf));
        assert!(q.filters[2].value.is_none());
        assert_eq!(q.filters[2].values.len(), 2);
        assert!(matches!(q.filters[3].op, wit::FilterOp::Exists));
        assert_eq!(q.labels, vec![("region".to_string(), "eu".to_string())]);
        let order = q.order.expect("order");
        assert_eq!(
            (order.field.as_str(), order.descending),
            ("total_cents", true)
        );
        assert_eq!((q.page_size, q.page_token.as_str()), (20, "tok"));
    }

    #[test]
    fn the_default_query_asks_for_everything() {
        let q = Query::new().to_wit();
        assert!(q.text.is_empty() && q.filters.is_empty() && q.labels.is_empty());
        assert!(q.order.is_none());
        assert_eq!(q.page_size, 0);
    }
}
