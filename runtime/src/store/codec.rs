//! A record's payload in the three forms the store keeps: proto bytes (the
//! truth), canonical JSON (for filters and reads) and plain text (for FTS).

use crate::error::{Error, Result};
use prost::Message;
use prost_reflect::{DynamicMessage, Kind, MapKey, MessageDescriptor, ReflectMessage, Value};

/// Type URL prefix used when packing records into `Any`.
pub const TYPE_URL_PREFIX: &str = "type.googleapis.com/";

/// A payload checked against the collection's type, ready to store.
#[derive(Debug, Clone)]
pub struct Encoded {
    /// The binary protobuf, as stored.
    pub bytes: Vec<u8>,
    /// The canonical JSON (proto field names; 64-bit integers as numbers), for filters and indexes.
    pub json: String,
    /// Every string and enum value, for the FTS index.
    pub text: String,
}

/// JSON as stored: proto field names, defaults left out, 64-bit integers as
/// numbers so SQLite compares them numerically.
fn json_options() -> prost_reflect::SerializeOptions {
    prost_reflect::SerializeOptions::new()
        .use_proto_field_name(true)
        .stringify_64_bit_integers(false)
        .skip_default_fields(true)
}

/// Encodes a message into its stored forms.
pub fn encode(msg: &DynamicMessage) -> Result<Encoded> {
    encode_with_wire(msg, None)
}

/// Like `encode`, keeping `wire` (the bytes `msg` was decoded from) as the
/// stored bytes instead of encoding again. Every write path encodes here, so
/// this is where a record's size (`limits::MAX_RECORD_BYTES`) and nesting
/// (`limits::MAX_NESTING`) are enforced: what is stored can be read back.
pub fn encode_with_wire(msg: &DynamicMessage, wire: Option<Vec<u8>>) -> Result<Encoded> {
    let bytes = wire.unwrap_or_else(|| msg.encode_to_vec());
    let max = crate::limits::MAX_RECORD_BYTES;
    if bytes.len() > max {
        return Err(Error::invalid(format!(
            "record is {} bytes; the limit is {max}",
            bytes.len()
        )));
    }
    // Text first: its walk also checks the nesting, before JSON rendering
    // would recurse into it.
    let mut text = String::new();
    walk(msg, 1, Some(&mut text))?;
    let mut ser = serde_json::Serializer::new(Vec::with_capacity(bytes.len() * 2));
    msg.serialize_with_options(&mut ser, &json_options())
        .map_err(|e| Error::invalid(format!("message cannot be written as JSON: {e}")))?;
    let json = String::from_utf8(ser.into_inner())
        .map_err(|e| Error::internal(format!("JSON is not UTF-8: {e}")))?;
    Ok(Encoded { bytes, json, text })
}

/// Decodes binary proto bytes as `desc`, refusing bytes that do not parse.
pub fn decode(desc: &MessageDescriptor, bytes: &[u8]) -> Result<DynamicMessage> {
    DynamicMessage::decode(desc.clone(), bytes)
        .map_err(|e| Error::invalid(format!("data does not decode as {}: {e}", desc.full_name())))
}

/// Parses proto3 JSON as `desc`; unknown fields are refused.
pub fn decode_json(desc: &MessageDescriptor, json: &str) -> Result<DynamicMessage> {
    let mut de = serde_json::Deserializer::from_str(json);
    let opts = prost_reflect::DeserializeOptions::new().deny_unknown_fields(true);
    let msg = DynamicMessage::deserialize_with_options(desc.clone(), &mut de, &opts)
        .and_then(|m| de.end().map(|_| m))
        .map_err(|e| Error::invalid(format!("json is not a valid {}: {e}", desc.full_name())))?;
    Ok(msg)
}

/// Checks an `Any`'s type URL against the collection's type and decodes it.
pub fn decode_any(
    desc: &MessageDescriptor,
    type_url: &str,
    value: &[u8],
) -> Result<DynamicMessage> {
    let name = type_url.rsplit('/').next().unwrap_or_default();
    if name != desc.full_name() {
        return Err(Error::invalid(format!(
            "data is a {name:?} but this collection holds {}: pack a {} (type_url \"{TYPE_URL_PREFIX}{}\")",
            desc.full_name(),
            desc.full_name(),
            desc.full_name()
        )));
    }
    decode(desc, value)
}

/// Walks a message once: collects its text values (strings, enum names,
/// one per line, for FTS) into `out`, and refuses nesting deeper than
/// `limits::MAX_NESTING`. The contents of a `google.protobuf.Any` count
/// towards the depth, as JSON rendering expands them (prost's decode limit
/// does not see inside an Any's bytes), but not towards the text; each is
/// decoded once and the walk stops at the limit, so the cost is bounded.
fn walk(msg: &DynamicMessage, depth: usize, mut out: Option<&mut String>) -> Result<()> {
    use crate::limits::MAX_NESTING;
    if depth > MAX_NESTING {
        return Err(Error::invalid(format!(
            "the message is nested more than {MAX_NESTING} levels deep (counting the contents of Any)"
        )));
    }
    for (field, value) in msg.fields() {
        walk_value(&field.kind(), value, depth, out.as_deref_mut())?;
    }
    if msg.descriptor().full_name() == "google.protobuf.Any" {
        let url = msg.get_field_by_name("type_url");
        let name = url
            .as_ref()
            .and_then(|v| v.as_str())
            .and_then(|u| u.rsplit('/').next())
            .unwrap_or_default();
        let value = msg.get_field_by_name("value");
        let bytes = value.as_ref().and_then(|v| v.as_bytes());
        // An Any of a type the namespace lacks cannot be rendered; the JSON
        // step reports that.
        if let (Some(inner), Some(bytes)) = (
            msg.descriptor().parent_pool().get_message_by_name(name),
            bytes,
        ) && let Ok(inner) = DynamicMessage::decode(inner, bytes.as_ref())
        {
            walk(&inner, depth + 1, None)?;
        }
    }
    Ok(())
}

fn walk_value(
    kind: &Kind,
    value: &Value,
    depth: usize,
    mut out: Option<&mut String>,
) -> Result<()> {
    let mut push = |s: &str| {
        if let Some(out) = out.as_deref_mut() {
            if !out.is_empty() {
                out.push('\n');
            }
            out.push_str(s);
        }
    };
    match value {
        Value::String(s) => push(s),
        Value::EnumNumber(n) => {
            if let Kind::Enum(e) = kind
                && let Some(v) = e.get_value(*n)
            {
                push(v.name());
            }
        }
        Value::Message(m) => return walk(m, depth + 1, out),
        Value::List(items) => {
            for v in items {
                walk_value(kind, v, depth, out.as_deref_mut())?;
            }
        }
        Value::Map(map) => {
            let Kind::Message(entry) = kind else {
                return Ok(());
            };
            let value_kind = entry.map_entry_value_field().kind();
            for (k, v) in map {
                if let (MapKey::String(s), Some(out)) = (k, out.as_deref_mut()) {
                    if !out.is_empty() {
                        out.push('\n');
                    }
                    out.push_str(s);
                }
                walk_value(&value_kind, v, depth, out.as_deref_mut())?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Copies the field at `path` (dot-separated proto field names) from `src`
/// into `dst`: set where `src` has it, cleared where it does not.
pub fn apply_mask_path(dst: &mut DynamicMessage, src: &DynamicMessage, path: &str) -> Result<()> {
    let parts: Vec<&str> = path.split('.').collect();
    apply_parts(dst, Some(src), &parts, path)
}

fn apply_parts(
    dst: &mut DynamicMessage,
    src: Option<&DynamicMessage>,
    parts: &[&str],
    path: &str,
) -> Result<()> {
    let desc = dst.descriptor();
    let field = desc.get_field_by_name(parts[0]).ok_or_else(|| {
        Error::invalid(format!(
            "update_mask path {:?}: {} has no field {:?}",
            crate::names::clip(path),
            desc.full_name(),
            crate::names::clip(parts[0])
        ))
    })?;
    if parts.len() == 1 {
        match src.filter(|s| s.has_field(&field)) {
            Some(s) => dst.set_field(&field, s.get_field(&field).into_owned()),
            None => dst.clear_field(&field),
        }
        return Ok(());
    }
    if field.is_list() || field.is_map() || !matches!(field.kind(), Kind::Message(_)) {
        return Err(Error::invalid(format!(
            "update_mask path {:?}: {:?} is not a singular message field, so it cannot have sub-fields",
            crate::names::clip(path),
            crate::names::clip(parts[0])
        )));
    }
    let sub_src = src
        .filter(|s| s.has_field(&field))
        .and_then(|s| s.get_field(&field).as_message().cloned());
    let sub_dst = dst.get_field_mut(&field);
    match sub_dst {
        Value::Message(m) => apply_parts(m, sub_src.as_ref(), &parts[1..], path),
        _ => Err(Error::internal("message field holds a non-message value")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> prost_reflect::DescriptorPool {
        let src = r#"syntax = "proto3"; package t;
            enum Color { COLOR_UNSPECIFIED = 0; RED = 1; }
            message Inner { string city = 1; int64 zip = 2; }
            message M { string name = 1; int64 big = 2; Inner inner = 3; repeated string tags = 4;
                        Color color = 5; map<string, string> attrs = 6; }"#;
        crate::store::test_pool(src)
    }

    #[test]
    fn encodes_json_and_text() {
        let desc = pool().get_message_by_name("t.M").unwrap();
        let m = decode_json(
            &desc,
            r#"{"name":"Ann","big":"9007199254740993","inner":{"city":"Oslo"},"tags":["a","b"],"color":"RED","attrs":{"k":"v"}}"#,
        )
        .unwrap();
        let e = encode(&m).unwrap();
        assert!(e.json.contains(r#""big":9007199254740993"#), "{}", e.json);
        for word in ["Ann", "Oslo", "a", "b", "RED", "k", "v"] {
            assert!(
                e.text.lines().any(|l| l == word),
                "{word} missing in {:?}",
                e.text
            );
        }
        assert_eq!(decode(&desc, &e.bytes).unwrap(), m);
    }

    #[test]
    fn rejects_unknown_json_fields_and_wrong_any() {
        let desc = pool().get_message_by_name("t.M").unwrap();
        assert!(decode_json(&desc, r#"{"nope":1}"#).is_err());
        let err = decode_any(&desc, "type.googleapis.com/t.Inner", &[]).unwrap_err();
        assert!(err.message.contains("t.Inner"), "{}", err.message);
        assert!(decode(&desc, &[0xff, 0xff]).is_err());
    }

    #[test]
    fn mask_sets_and_clears_nested() {
        let desc = pool().get_message_by_name("t.M").unwrap();
        let mut dst = decode_json(&desc, r#"{"name":"a","inner":{"city":"x","zip":1}}"#).unwrap();
        let src = decode_json(&desc, r#"{"name":"b","inner":{"city":"y"}}"#).unwrap();
        apply_mask_path(&mut dst, &src, "inner.zip").unwrap();
        apply_mask_path(&mut dst, &src, "inner.city").unwrap();
        let json = encode(&dst).unwrap().json;
        assert_eq!(json, r#"{"name":"a","inner":{"city":"y"}}"#);
        assert!(apply_mask_path(&mut dst, &src, "name.x").is_err());
        assert!(apply_mask_path(&mut dst, &src, "missing").is_err());
    }
}
