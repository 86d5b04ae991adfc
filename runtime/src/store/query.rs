//! Filters, order and paging → SQL. Field paths are checked against the
//! collection's message descriptor, so only proto identifiers ever reach the
//! SQL text; every value is a bound parameter.

use crate::error::{Error, Result};
use base64::Engine as _;
use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor};
use rusqlite::types::Value as Sql;
use std::collections::BTreeMap;

use crate::limits::{DEFAULT_PAGE_SIZE, MAX_CONDITIONS, MAX_IN_VALUES, MAX_PAGE_SIZE};

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// Equal.
    Eq,
    /// Not equal (on a list: no element equals).
    Ne,
    /// Greater than.
    Gt,
    /// Greater than or equal.
    Ge,
    /// Less than.
    Lt,
    /// Less than or equal.
    Le,
    /// Contains the substring, literally and case-sensitively.
    Contains,
    /// Starts with the prefix, literally and case-sensitively.
    Prefix,
    /// Equals one of `values`.
    In,
    /// Set: a non-default scalar, a present message, a non-empty list or map.
    Exists,
    /// Not set.
    NotExists,
}

/// A typed filter operand.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    /// A string (or an enum name).
    Str(String),
    /// An integer (or an enum number).
    Int(i64),
    /// A floating-point number.
    Float(f64),
    /// A boolean.
    Bool(bool),
}

/// One condition on a message field.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    /// Dot path of proto field names, e.g. `customer.address.city`.
    pub field: String,
    /// The comparison.
    pub op: Op,
    /// The operand (none for EXISTS / NOT_EXISTS and IN).
    pub value: Option<Scalar>,
    /// The operands of IN.
    pub values: Vec<Scalar>,
}

/// A sort key; `field` is a field path or `_id`, `_created`, `_updated`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Order {
    /// A field path, or `_id`, `_created`, `_updated`.
    pub field: String,
    /// Largest first.
    pub descending: bool,
}

/// Everything that selects records.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Query {
    /// FTS5 query text; empty for none.
    pub text: String,
    /// Conditions on fields, all of which must hold.
    pub filters: Vec<Filter>,
    /// Labels a record must carry.
    pub labels: BTreeMap<String, String>,
    /// Sort key (default: relevance with text, else insertion order).
    pub order: Option<Order>,
    /// Page size (0: the default).
    pub page_size: u32,
    /// Token of the page to continue from (empty: the first).
    pub page_token: String,
}

/// A query compiled to SQL.
#[derive(Debug)]
pub struct Plan {
    /// Returns rid, id, data, json, labels, version, created, updated, score, k.
    pub select: String,
    /// Bound values of `select`.
    pub select_params: Vec<Sql>,
    /// Counts all matches (no paging).
    pub count: String,
    /// Bound values of `count`.
    pub count_params: Vec<Sql>,
    /// Rows per page.
    pub page_size: u32,
    fingerprint: u64,
}

impl Plan {
    /// The token that continues after a row with sort key `k` and row id `rid`.
    pub fn token_after(&self, k: &Sql, rid: i64) -> String {
        let k = match k {
            Sql::Null => serde_json::Value::Null,
            Sql::Integer(i) => serde_json::json!({ "i": i }),
            Sql::Real(f) => serde_json::json!({ "f": f }),
            Sql::Text(s) => serde_json::json!({ "s": s }),
            Sql::Blob(_) => serde_json::Value::Null,
        };
        let raw = serde_json::json!([format!("{:x}", self.fingerprint), k, rid]).to_string();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    }
}

/// Where a field path lands: its JSON path and its leaf field.
#[derive(Debug, Clone)]
pub struct FieldRef {
    /// The JSON path of the field in the stored JSON (`$.a.b`).
    pub json_path: String,
    /// The field the path ends at.
    pub leaf: FieldDescriptor,
}

impl FieldRef {
    /// The SQL expression for a singular scalar leaf; absent values read as the
    /// proto3 default, so `= 0` matches an unset number as proto3 means it.
    pub fn key_expr(&self) -> String {
        format!(
            "coalesce(json_extract(r.json, '{}'), {})",
            self.json_path,
            default_literal(&self.leaf)
        )
    }

    fn is_scalar(&self) -> bool {
        !self.leaf.is_map() && !matches!(self.leaf.kind(), Kind::Message(_))
    }
}

fn default_literal(f: &FieldDescriptor) -> String {
    match f.kind() {
        Kind::String | Kind::Bytes => "''".to_string(),
        Kind::Bool => "0".to_string(),
        Kind::Enum(e) => format!("'{}'", e.default_value().name()),
        _ => "0".to_string(),
    }
}

/// Resolves a dot-separated field path against `desc`. Intermediate fields
/// must be singular messages; the leaf may be anything.
pub fn resolve(desc: &MessageDescriptor, path: &str) -> Result<FieldRef> {
    if path.is_empty() {
        return Err(Error::invalid("field path is empty"));
    }
    let mut msg = desc.clone();
    let parts: Vec<&str> = path.split('.').collect();
    let mut json_path = String::from("$");
    for (i, part) in parts.iter().enumerate() {
        let ident = !part.is_empty()
            && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            && !part.as_bytes()[0].is_ascii_digit();
        if !ident {
            return Err(Error::invalid(format!(
                "field path {path:?}: {part:?} is not a proto field name"
            )));
        }
        let field = msg.get_field_by_name(part).ok_or_else(|| {
            let known: Vec<String> = msg.fields().map(|f| f.name().to_string()).collect();
            Error::invalid(format!(
                "field path {path:?}: {} has no field {part:?} (fields: {})",
                msg.full_name(),
                known.join(", ")
            ))
        })?;
        json_path.push('.');
        json_path.push_str(part);
        if i + 1 == parts.len() {
            return Ok(FieldRef {
                json_path,
                leaf: field,
            });
        }
        match field.kind() {
            Kind::Message(m) if !field.is_list() && !field.is_map() => msg = m,
            _ => {
                return Err(Error::invalid(format!(
                    "field path {path:?}: {part:?} is not a singular message field, so it has no sub-fields"
                )));
            }
        }
    }
    unreachable!("a non-empty path always has a last part")
}

/// Checks an operand against the leaf's type and turns it into a SQL value.
fn bind(f: &FieldRef, v: &Scalar, path: &str) -> Result<Sql> {
    let mismatch = |want: &str| {
        Err(Error::invalid(format!(
            "filter on {path:?}: the field is {} and needs {want}, got {v:?}",
            kind_name(&f.leaf)
        )))
    };
    match (f.leaf.kind(), v) {
        (Kind::String | Kind::Bytes, Scalar::Str(s)) => Ok(Sql::Text(s.clone())),
        (Kind::String | Kind::Bytes, _) => mismatch("a string_value"),
        (Kind::Bool, Scalar::Bool(b)) => Ok(Sql::Integer(*b as i64)),
        (Kind::Bool, _) => mismatch("a bool_value"),
        (Kind::Enum(e), Scalar::Str(s)) => match e.get_value_by_name(s) {
            Some(_) => Ok(Sql::Text(s.clone())),
            None => Err(Error::invalid(format!(
                "filter on {path:?}: {s:?} is not a value of enum {} (values: {})",
                e.full_name(),
                e.values()
                    .map(|v| v.name().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        },
        (Kind::Enum(e), Scalar::Int(n)) => {
            match i32::try_from(*n).ok().and_then(|n| e.get_value(n)) {
                Some(v) => Ok(Sql::Text(v.name().to_string())),
                None => Err(Error::invalid(format!(
                    "filter on {path:?}: {n} is not a number of enum {}",
                    e.full_name()
                ))),
            }
        }
        (Kind::Enum(_), _) => mismatch("a string_value (value name) or int_value (number)"),
        (Kind::Double | Kind::Float, Scalar::Int(i)) => Ok(Sql::Real(*i as f64)),
        (Kind::Double | Kind::Float, Scalar::Float(x)) => Ok(Sql::Real(*x)),
        (Kind::Double | Kind::Float, _) => mismatch("a double_value or int_value"),
        (Kind::Message(_), _) => mismatch("EXISTS or NOT_EXISTS (it is a message)"),
        (_, Scalar::Int(i)) => Ok(Sql::Integer(*i)),
        (_, Scalar::Float(x)) if x.fract() == 0.0 && x.abs() < 9.2e18 => {
            Ok(Sql::Integer(*x as i64))
        }
        (_, _) => mismatch("an int_value"),
    }
}

fn kind_name(f: &FieldDescriptor) -> String {
    let base = match f.kind() {
        Kind::Message(m) => m.full_name().to_string(),
        Kind::Enum(e) => format!("enum {}", e.full_name()),
        k => format!("{k:?}").to_lowercase(),
    };
    if f.is_map() {
        "a map".to_string()
    } else if f.is_list() {
        format!("repeated {base}")
    } else {
        base
    }
}

/// Compiles one filter to a SQL condition, pushing its parameters.
fn filter_sql(desc: &MessageDescriptor, f: &Filter, params: &mut Vec<Sql>) -> Result<String> {
    let path = f.field.as_str();
    let fref = resolve(desc, path)?;
    if matches!(f.op, Op::Exists | Op::NotExists) {
        // Defaults are not stored (proto3 JSON), so a present path is a set field,
        // a present message, or a non-empty list or map.
        let present = format!("json_type(r.json, '{}') IS NOT NULL", fref.json_path);
        return Ok(if f.op == Op::Exists {
            present
        } else {
            format!("NOT ({present})")
        });
    }
    if !fref.is_scalar() {
        return Err(Error::invalid(format!(
            "filter on {path:?}: the field is {}; only EXISTS and NOT_EXISTS apply to it",
            kind_name(&fref.leaf)
        )));
    }
    let is_text = matches!(fref.leaf.kind(), Kind::String | Kind::Bytes);
    if matches!(f.op, Op::Contains | Op::Prefix) && !is_text {
        return Err(Error::invalid(format!(
            "filter on {path:?}: {:?} needs a string field; the field is {}",
            f.op,
            kind_name(&fref.leaf)
        )));
    }
    if matches!(fref.leaf.kind(), Kind::Bool | Kind::Enum(_))
        && matches!(f.op, Op::Gt | Op::Ge | Op::Lt | Op::Le)
    {
        return Err(Error::invalid(format!(
            "filter on {path:?}: {:?} does not apply to {}; use EQ, NE or IN",
            f.op,
            kind_name(&fref.leaf)
        )));
    }
    let operand = || {
        f.value
            .as_ref()
            .ok_or_else(|| Error::invalid(format!("filter on {path:?}: {:?} needs a value", f.op)))
    };
    // For a repeated leaf the condition applies to each element (`value` of json_each).
    let target = if fref.leaf.is_list() {
        "value".to_string()
    } else {
        fref.key_expr()
    };
    let cond = match f.op {
        Op::Eq | Op::Ne | Op::Gt | Op::Ge | Op::Lt | Op::Le => {
            params.push(bind(&fref, operand()?, path)?);
            let sym = match f.op {
                Op::Eq => "=",
                // On a list NE means "no element equals": `=` inside NOT EXISTS.
                Op::Ne if fref.leaf.is_list() => "=",
                Op::Ne => "!=",
                Op::Gt => ">",
                Op::Ge => ">=",
                Op::Lt => "<",
                _ => "<=",
            };
            format!("{target} {sym} ?")
        }
        Op::Contains => {
            params.push(bind(&fref, operand()?, path)?);
            format!("instr({target}, ?) > 0")
        }
        Op::Prefix => {
            let Sql::Text(p) = bind(&fref, operand()?, path)? else {
                unreachable!("text fields bind to text")
            };
            let upper = format!("{p}\u{10FFFF}");
            let len = p.chars().count() as i64;
            params.extend([
                Sql::Text(p.clone()),
                Sql::Text(upper),
                Sql::Integer(len),
                Sql::Text(p),
            ]);
            format!("({target} >= ? AND {target} < ? AND substr({target}, 1, ?) = ?)")
        }
        Op::In => {
            if f.values.is_empty() || f.values.len() > MAX_IN_VALUES {
                return Err(Error::invalid(format!(
                    "filter on {path:?}: IN needs 1 to {MAX_IN_VALUES} values in `values`, got {}",
                    f.values.len()
                )));
            }
            for v in &f.values {
                params.push(bind(&fref, v, path)?);
            }
            format!("{target} IN ({})", vec!["?"; f.values.len()].join(", "))
        }
        Op::Exists | Op::NotExists => unreachable!("handled above"),
    };
    if fref.leaf.is_list() {
        let each = format!(
            "(SELECT 1 FROM json_each(r.json, '{}') WHERE {cond})",
            fref.json_path
        );
        // NE on a list: no element equals the value.
        return Ok(if f.op == Op::Ne {
            format!("NOT EXISTS {each}")
        } else {
            format!("EXISTS {each}")
        });
    }
    Ok(cond)
}

/// The SQL expression of a sort key.
pub fn order_expr(desc: &MessageDescriptor, field: &str) -> Result<String> {
    Ok(match field {
        "_id" => "r.id".to_string(),
        "_created" => "r.created".to_string(),
        "_updated" => "r.updated".to_string(),
        path => {
            let fref = resolve(desc, path).map_err(|e| e.context("order_by"))?;
            if !fref.is_scalar() || fref.leaf.is_list() {
                return Err(Error::invalid(format!(
                    "order_by {path:?}: the field is {}; order by a singular scalar field, or _id, _created, _updated",
                    kind_name(&fref.leaf)
                )));
            }
            fref.key_expr()
        }
    })
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

fn decode_token(token: &str, fingerprint: u64) -> Result<(Sql, i64)> {
    let bad = |why: &str| {
        Error::invalid(format!(
            "page_token is not valid for this query: {why}; start again without it"
        ))
    };
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad("not a token this node issued"))?;
    let v: serde_json::Value =
        serde_json::from_slice(&raw).map_err(|_| bad("not a token this node issued"))?;
    let (Some(fp), Some(k), Some(rid)) = (
        v.get(0).and_then(|x| x.as_str()),
        v.get(1),
        v.get(2).and_then(|x| x.as_i64()),
    ) else {
        return Err(bad("not a token this node issued"));
    };
    if fp != format!("{fingerprint:x}") {
        return Err(bad("it was issued for a different query"));
    }
    let k = if let Some(i) = k.get("i").and_then(|x| x.as_i64()) {
        Sql::Integer(i)
    } else if let Some(f) = k.get("f").and_then(|x| x.as_f64()) {
        Sql::Real(f)
    } else if let Some(s) = k.get("s").and_then(|x| x.as_str()) {
        Sql::Text(s.to_string())
    } else if k.is_null() {
        Sql::Null
    } else {
        return Err(bad("not a token this node issued"));
    };
    Ok((k, rid))
}

/// Compiles a query against a collection of type `desc`.
pub fn plan(desc: &MessageDescriptor, q: &Query) -> Result<Plan> {
    if q.filters.len() > MAX_CONDITIONS || q.labels.len() > MAX_CONDITIONS {
        return Err(Error::invalid(format!(
            "{} filters and {} labels given; at most {MAX_CONDITIONS} of each",
            q.filters.len(),
            q.labels.len()
        )));
    }
    let text = q.text.trim();
    if text.len() > crate::limits::MAX_QUERY_TEXT_BYTES {
        return Err(Error::invalid(format!(
            "the search text is {} bytes; the limit is {}",
            text.len(),
            crate::limits::MAX_QUERY_TEXT_BYTES
        )));
    }
    let terms = text.split_whitespace().count();
    if terms > crate::limits::MAX_QUERY_TERMS {
        return Err(Error::invalid(format!(
            "the search text has {terms} terms; the limit is {}: search for the most selective ones",
            crate::limits::MAX_QUERY_TERMS
        )));
    }
    let page_size = match q.page_size {
        0 => DEFAULT_PAGE_SIZE,
        n => n.min(MAX_PAGE_SIZE),
    };
    let mut conds: Vec<String> = Vec::new();
    let mut params: Vec<Sql> = Vec::new();
    // Ranking by relevance alone needs only the FTS index: the records table
    // is joined for the page's rows, not for every match.
    let fts_only =
        !text.is_empty() && q.filters.is_empty() && q.labels.is_empty() && q.order.is_none();
    let (from, rid) = if text.is_empty() {
        ("records r", "r.rid")
    } else {
        conds.push("records_fts MATCH ?".to_string());
        params.push(Sql::Text(text.to_string()));
        if fts_only {
            ("records_fts", "records_fts.rowid")
        } else {
            (
                "records_fts JOIN records r ON r.rid = records_fts.rowid",
                "r.rid",
            )
        }
    };
    for (i, f) in q.filters.iter().enumerate() {
        conds.push(
            filter_sql(desc, f, &mut params).map_err(|e| e.context(format!("filters[{i}]")))?,
        );
    }
    for (k, v) in &q.labels {
        conds.push("r.rid IN (SELECT rid FROM labels WHERE key = ? AND value = ?)".to_string());
        params.extend([Sql::Text(k.clone()), Sql::Text(v.clone())]);
    }
    if params.len() > crate::limits::MAX_QUERY_VALUES {
        return Err(Error::invalid(format!(
            "the query binds {} values (filters, IN lists, labels); the limit is {}",
            params.len(),
            crate::limits::MAX_QUERY_VALUES
        )));
    }
    let relevance = !text.is_empty() && q.order.is_none();
    let (key, desc_order) = match &q.order {
        Some(o) => (order_expr(desc, &o.field)?, o.descending),
        None if relevance => ("bm25(records_fts)".to_string(), false),
        // Insertion order: the one writer stamps `created` as it inserts, so
        // this is `_created` order (unless the clock stepped back), read from
        // the row id alone — an indexed filter then pages from its index
        // without reading every match's row.
        None => ("r.rid".to_string(), false),
    };
    let score = if text.is_empty() {
        "0.0"
    } else {
        "-bm25(records_fts)"
    };
    let where_all = if conds.is_empty() {
        "1".to_string()
    } else {
        conds.join(" AND ")
    };
    let count = format!("SELECT count(*) FROM {from} WHERE {where_all}");
    let count_params = params.clone();

    let fingerprint = fnv(&format!(
        "{:?}|{:?}|{:?}|{:?}",
        text, q.filters, q.labels, q.order
    ));
    let dir = if desc_order { "DESC" } else { "ASC" };
    let cmp = if desc_order { "<" } else { ">" };
    let mut outer_where = "1".to_string();
    if !q.page_token.is_empty() {
        let (k, rid) = decode_token(&q.page_token, fingerprint)?;
        outer_where = format!("(k, rid) {cmp} (?, ?)");
        params.extend([k, Sql::Integer(rid)]);
    }
    params.push(Sql::Integer(page_size as i64 + 1));
    // The innermost query computes the key once (bm25 may only be called
    // where the FTS table is in scope); the middle one pages over row ids and
    // keys only; the outer one reads just the page's records.
    let select = format!(
        "SELECT r.rid, r.id, r.data, r.json, r.labels, r.version, r.created, r.updated, p.score, p.k FROM \
         (SELECT * FROM (SELECT {rid} AS rid, {score} AS score, {key} AS k FROM {from} WHERE {where_all}) \
         WHERE {outer_where} ORDER BY k {dir}, rid {dir} LIMIT ?) AS p \
         JOIN records r ON r.rid = p.rid ORDER BY p.k {dir}, p.rid {dir}"
    );
    Ok(Plan {
        select,
        select_params: params,
        count,
        count_params,
        page_size,
        fingerprint,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc() -> MessageDescriptor {
        let src = r#"syntax = "proto3"; package t;
            enum Color { COLOR_UNSPECIFIED = 0; RED = 1; }
            message Inner { string city = 1; int64 zip = 2; }
            message M { string name = 1; int64 n = 2; Inner inner = 3; repeated string tags = 4;
                        Color color = 5; bool ok = 6; double x = 7; repeated Inner items = 8; }"#;
        crate::store::test_pool(src)
            .get_message_by_name("t.M")
            .unwrap()
    }

    fn f(field: &str, op: Op, v: Option<Scalar>) -> Filter {
        Filter {
            field: field.into(),
            op,
            value: v,
            values: vec![],
        }
    }

    #[test]
    fn nested_paths_become_json_paths_with_defaults() {
        let d = desc();
        let mut p = vec![];
        let sql = filter_sql(&d, &f("inner.zip", Op::Ge, Some(Scalar::Int(5))), &mut p).unwrap();
        assert_eq!(sql, "coalesce(json_extract(r.json, '$.inner.zip'), 0) >= ?");
        assert_eq!(p, vec![Sql::Integer(5)]);
    }

    #[test]
    fn injection_in_paths_is_refused() {
        let d = desc();
        for path in [
            "name') OR 1=1 --",
            "name.x",
            "inner..city",
            "inner.city'",
            "",
            "items.city",
            "1name",
        ] {
            let e = filter_sql(
                &d,
                &f(path, Op::Eq, Some(Scalar::Str("a".into()))),
                &mut vec![],
            );
            assert!(e.is_err(), "{path:?} accepted");
        }
        assert!(order_expr(&d, "name; DROP TABLE records").is_err());
        assert!(order_expr(&d, "tags").is_err());
        assert!(order_expr(&d, "inner").is_err());
    }

    #[test]
    fn types_are_checked() {
        let d = desc();
        let mut p = vec![];
        assert!(filter_sql(&d, &f("n", Op::Eq, Some(Scalar::Str("1".into()))), &mut p).is_err());
        assert!(filter_sql(&d, &f("n", Op::Contains, Some(Scalar::Int(1))), &mut p).is_err());
        assert!(
            filter_sql(
                &d,
                &f("color", Op::Eq, Some(Scalar::Str("BLUE".into()))),
                &mut p
            )
            .is_err()
        );
        assert!(
            filter_sql(
                &d,
                &f("color", Op::Gt, Some(Scalar::Str("RED".into()))),
                &mut p
            )
            .is_err()
        );
        assert!(
            filter_sql(
                &d,
                &f("inner", Op::Eq, Some(Scalar::Str("x".into()))),
                &mut p
            )
            .is_err()
        );
        assert!(filter_sql(&d, &f("name", Op::Eq, None), &mut p).is_err());
        p.clear();
        filter_sql(&d, &f("color", Op::Eq, Some(Scalar::Int(1))), &mut p).unwrap();
        assert_eq!(p, vec![Sql::Text("RED".into())]);
    }

    #[test]
    fn repeated_leaf_matches_any_element() {
        let d = desc();
        let sql = filter_sql(
            &d,
            &f("tags", Op::Eq, Some(Scalar::Str("a".into()))),
            &mut vec![],
        )
        .unwrap();
        assert!(
            sql.starts_with("EXISTS (SELECT 1 FROM json_each(r.json, '$.tags') WHERE value = ?"),
            "{sql}"
        );
        let sql = filter_sql(
            &d,
            &f("tags", Op::Ne, Some(Scalar::Str("a".into()))),
            &mut vec![],
        )
        .unwrap();
        assert!(
            sql.starts_with("NOT EXISTS") && sql.contains("value = ?"),
            "{sql}"
        );
    }

    #[test]
    fn tokens_are_bound_to_their_query() {
        let d = desc();
        let q = Query {
            order: Some(Order {
                field: "n".into(),
                descending: true,
            }),
            ..Default::default()
        };
        let p = plan(&d, &q).unwrap();
        let token = p.token_after(&Sql::Integer(7), 42);
        let next = plan(
            &d,
            &Query {
                page_token: token.clone(),
                ..q.clone()
            },
        )
        .unwrap();
        assert!(next.select.contains("(k, rid) < (?, ?)"));
        let other = Query {
            page_token: token,
            ..Default::default()
        };
        assert!(
            plan(&d, &other)
                .unwrap_err()
                .message
                .contains("different query")
        );
        let many = Query {
            filters: vec![f("n", Op::Eq, Some(Scalar::Int(1))); MAX_CONDITIONS + 1],
            ..Default::default()
        };
        assert!(plan(&d, &many).is_err());
        let junk = Query {
            page_token: "%%%".into(),
            ..Default::default()
        };
        assert!(plan(&d, &junk).is_err());
    }
}
