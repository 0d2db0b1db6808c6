//! The `postgres_changes` entries of a join: their ids and their parsing, after
//! `RealtimeWeb.RealtimeChannel.add_id_to_postgres_changes` and
//! `Extensions.PostgresCdcRls.Subscriptions.parse_subscription_params`.
//!
//! Filters are one condition `column=op.value` (what older servers, and so our clients,
//! support): `eq, neq, lt, lte, gt, gte, in`, optionally negated with `not.`. The value is
//! compared by PostgreSQL as the column's type (see `session.sql`).

use serde_json::{Map, Value};

/// Filter operators the stand-in evaluates.
const OPS: [&str; 7] = ["eq", "neq", "lt", "lte", "gt", "gte", "in"];

/// Realtime's id for one entry: `:erlang.phash2(params)`, a stable hash of the parameters the
/// client sent, in `0..2^27`. Identical entries therefore share an id, on one channel or many.
pub fn binding_id(params: &Value) -> u32 {
    let mut h = Fnv(0xcbf2_9ce4_8422_2325);
    canonical(params, &mut h);
    (h.0 % (1 << 27)) as u32
}

struct Fnv(u64);

impl Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

/// Feeds a value to the hash with object keys sorted, whatever order they arrived in.
fn canonical(v: &Value, h: &mut Fnv) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            h.write(b"{");
            for k in keys {
                h.write(Value::String(k.clone()).to_string().as_bytes());
                h.write(b":");
                canonical(&map[k], h);
                h.write(b",");
            }
            h.write(b"}");
        }
        Value::Array(items) => {
            h.write(b"[");
            for item in items {
                canonical(item, h);
                h.write(b",");
            }
            h.write(b"]");
        }
        other => h.write(other.to_string().as_bytes()),
    }
}

/// One parsed condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub column: String,
    /// One of [`OPS`].
    pub op: String,
    /// The value as PostgreSQL will read it: unquoted, and `(a,b)` turned into `{a,b}` for `in`.
    pub value: String,
    pub negate: bool,
}

/// One parsed `postgres_changes` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The id sent back in the join reply and in every change for it.
    pub id: u32,
    /// `*`, `INSERT`, `UPDATE` or `DELETE`.
    pub event: String,
    /// A schema name or `*`.
    pub schema: String,
    /// A table name or `*`.
    pub table: String,
    pub filter: Option<Filter>,
}

impl Binding {
    /// Realtime's `params_to_log`, used in its subscription error messages.
    pub fn describe(&self) -> String {
        let filters = match &self.filter {
            None => "[]".to_owned(),
            Some(f) => format!(
                "[{{{:?}, {:?}, {:?}, {}}}]",
                f.column, f.op, f.value, f.negate
            ),
        };
        format!(
            "event: {}, schema: {}, table: {}, filters: {filters}, select: nil",
            self.event, self.schema, self.table
        )
    }
}

/// Parses one entry; the error is the message Realtime pushes as a `system` error.
pub fn parse(params: &Value) -> Result<Binding, String> {
    let id = binding_id(params);
    let no_params = || {
        format!(
            "No subscription params provided. Please provide at least a `schema` or `table` to \
             subscribe to: {params}"
        )
    };
    let Some(map) = params.as_object() else {
        return Err(no_params());
    };
    let event = action_filter(map);
    let str_of = |k: &str| map.get(k).and_then(Value::as_str);
    let (has_table, has_filter) = (map.contains_key("table"), map.contains_key("filter"));
    let (schema, table, filter) = match (str_of("schema"), str_of("table"), str_of("filter")) {
        (Some(schema), Some(table), Some(filter)) => {
            let filter = parse_filter(filter)
                .map_err(|reason| format!("Error parsing `filter` params: {reason}"))?;
            (schema, table, filter)
        }
        (Some(schema), Some(table), None) if !has_filter => (schema, table, None),
        (Some(schema), None, None) if !has_table && !has_filter => (schema, "*", None),
        (None, Some(table), None) if !map.contains_key("schema") && !has_filter => {
            ("public", table, None)
        }
        _ => return Err(no_params()),
    };
    Ok(Binding {
        id,
        event,
        schema: schema.to_owned(),
        table: table.to_owned(),
        filter,
    })
}

fn action_filter(map: &Map<String, Value>) -> String {
    match map.get("event").and_then(Value::as_str) {
        Some(e) if ["INSERT", "UPDATE", "DELETE"].contains(&e.to_uppercase().as_str()) => {
            e.to_uppercase()
        }
        _ => "*".to_owned(),
    }
}

/// Elixir's `inspect` of a list of strings, as Realtime's parse errors print them.
fn inspect(parts: &[&str]) -> String {
    let items: Vec<String> = parts.iter().map(|p| format!("{p:?}")).collect();
    format!("[{}]", items.join(", "))
}

fn parse_filter(filter: &str) -> Result<Option<Filter>, String> {
    let trimmed = filter.trim();
    if trimmed.is_empty() {
        return Ok(None);
    }
    let Some((column, rest)) = trimmed.split_once('=') else {
        return Err(inspect(&[trimmed]));
    };
    let (negate, op_value) = match rest.strip_prefix("not.") {
        Some(op_value) => (true, op_value),
        None => (false, rest),
    };
    let Some((op, value)) = op_value.split_once('.') else {
        return Err(inspect(&[op_value]));
    };
    if !OPS.contains(&op) {
        return Err(inspect(&[op, value]));
    }
    let value = if op == "in" {
        match value.strip_prefix('(').and_then(|v| v.strip_suffix(')')) {
            Some(inner) => format!("{{{inner}}}"),
            None => return Err("`in` filter value must be wrapped by parentheses".to_owned()),
        }
    } else {
        unquote(value)
    };
    Ok(Some(Filter {
        column: column.to_owned(),
        op: op.to_owned(),
        value,
        negate,
    }))
}

/// `"a\"b"` → `a"b`; anything not a whole quoted string stays as it is.
fn unquote(value: &str) -> String {
    let Some(rest) = value.strip_prefix('"') else {
        return value.to_owned();
    };
    let mut out = String::new();
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(n) => out.push(n),
                None => return value.to_owned(),
            },
            '"' if chars.as_str().is_empty() => return out,
            '"' => return value.to_owned(),
            c => out.push(c),
        }
    }
    value.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ids_are_stable_and_collapse() {
        let a = json!({"event": "*", "schema": "public", "table": "jobs", "filter": "id=eq.1"});
        let b = json!({"filter": "id=eq.1", "table": "jobs", "schema": "public", "event": "*"});
        let c = json!({"event": "*", "schema": "public", "table": "jobs", "filter": "id=eq.2"});
        assert_eq!(binding_id(&a), binding_id(&b));
        assert_ne!(binding_id(&a), binding_id(&c));
        assert!(binding_id(&a) < 1 << 27);
    }

    #[test]
    fn parses_like_realtime() {
        let b = parse(&json!({"event": "insert", "schema": "public", "table": "jobs"})).unwrap();
        assert_eq!(
            (b.event.as_str(), b.schema.as_str(), b.table.as_str()),
            ("INSERT", "public", "jobs")
        );
        assert_eq!(b.filter, None);
        let b = parse(&json!({"event": "whatever", "schema": "public"})).unwrap();
        assert_eq!((b.event.as_str(), b.table.as_str()), ("*", "*"));
        let b = parse(&json!({"table": "jobs"})).unwrap();
        assert_eq!(b.schema, "public");
        let b =
            parse(&json!({"schema": "public", "table": "jobs", "filter": "status=in.(a,\"b,c\")"}))
                .unwrap();
        let f = b.filter.unwrap();
        assert_eq!(
            (f.column.as_str(), f.op.as_str(), f.value.as_str()),
            ("status", "in", "{a,\"b,c\"}")
        );
        let b = parse(&json!({"schema": "public", "table": "t", "filter": "name=not.eq.\"x.y\""}))
            .unwrap();
        let f = b.filter.unwrap();
        assert!(f.negate);
        assert_eq!(f.value, "x.y");
        let b = parse(&json!({"schema": "public", "table": "t", "filter": "  "})).unwrap();
        assert_eq!(b.filter, None);
    }

    #[test]
    fn parse_errors_match_realtime() {
        let e = parse(&json!({"schema": "public", "table": "m", "filter": "subject=foo.hey"}));
        assert_eq!(
            e.unwrap_err(),
            r#"Error parsing `filter` params: ["foo", "hey"]"#
        );
        let e = parse(&json!({"schema": "public", "table": "m", "filter": "undefined"}));
        assert_eq!(
            e.unwrap_err(),
            r#"Error parsing `filter` params: ["undefined"]"#
        );
        let e = parse(&json!({"schema": "public", "table": "m", "filter": "id=in.1,2"}));
        assert_eq!(
            e.unwrap_err(),
            "Error parsing `filter` params: `in` filter value must be wrapped by parentheses"
        );
        let e = parse(&json!({}));
        assert!(
            e.unwrap_err()
                .starts_with("No subscription params provided.")
        );
        // `filter: null` is not a string filter and not an absent one either.
        let e = parse(&json!({"schema": "public", "table": "m", "filter": null}));
        assert!(
            e.unwrap_err()
                .starts_with("No subscription params provided.")
        );
    }
}
