//! The text form of a record filter, `FIELD OP VALUE` (`quantity >= 2`,
//! `customer.address.city = Oslo`, `status in open,paid`, `note exists`),
//! as the CLI's `--filter` and the console's filter box take it.

use crate::proto::{self, value::Kind};

/// A value as typed: "quoted" is a string, else an integer, a
/// float, a bool, or a string.
fn scalar(s: &str) -> proto::Value {
    let kind = if s.len() >= 2 && s.starts_with('"') && s.ends_with('"') {
        Kind::StringValue(s[1..s.len() - 1].to_string())
    } else if let Ok(i) = s.parse::<i64>() {
        Kind::IntValue(i)
    } else if let Ok(f) = s.parse::<f64>() {
        Kind::DoubleValue(f)
    } else if s == "true" || s == "false" {
        Kind::BoolValue(s == "true")
    } else {
        Kind::StringValue(s.to_string())
    };
    proto::Value { kind: Some(kind) }
}

/// Parses "FIELD OP VALUE" (operators: = != > >= < <= contains prefix in
/// exists !exists).
pub fn parse_filter(s: &str) -> Result<proto::Filter, String> {
    let mut parts = s.trim().splitn(3, char::is_whitespace);
    let field = parts.next().unwrap_or_default().to_string();
    let op_text = parts
        .next()
        .ok_or_else(|| format!("{s:?}: expected \"FIELD OP VALUE\""))?;
    let rest = parts.next().unwrap_or("").trim();
    use proto::FilterOp as F;
    let op = match op_text {
        "=" | "==" => F::Eq,
        "!=" => F::Ne,
        ">" => F::Gt,
        ">=" => F::Ge,
        "<" => F::Lt,
        "<=" => F::Le,
        "contains" => F::Contains,
        "prefix" => F::Prefix,
        "in" => F::In,
        "exists" => F::Exists,
        "!exists" => F::NotExists,
        other => return Err(format!("{s:?}: unknown operator {other:?}")),
    };
    let (value, values) = match op {
        F::Exists | F::NotExists => (None, vec![]),
        F::In => (None, rest.split(',').map(|v| scalar(v.trim())).collect()),
        _ if rest.is_empty() => return Err(format!("{s:?}: {op_text} needs a value")),
        _ => (Some(scalar(rest)), vec![]),
    };
    Ok(proto::Filter {
        field,
        op: op as i32,
        value,
        values,
    })
}
