//! What a subscription may ask for: identifiers and the Realtime filter grammar
//! (`column=op.value`, one condition, ops `eq, neq, lt, lte, gt, gte, in`; `in.(a,b)` at most
//! 100 values). Checked before anything is sent, so a bad request is a clear 422 and never a
//! channel that the server errors 5 s later.

/// Most values in an `in.(...)` list (Realtime's own limit).
pub const MAX_IN_VALUES: usize = 100;
/// Longest filter accepted.
pub const MAX_FILTER_LEN: usize = 4096;
/// Postgres identifiers are at most 63 bytes.
pub const MAX_IDENTIFIER_LEN: usize = 63;

/// Filter operators Realtime evaluates.
pub const OPERATORS: &[&str] = &["eq", "neq", "lt", "lte", "gt", "gte", "in"];

/// A parsed filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub column: String,
    pub op: String,
    /// One value, or the `in` list.
    pub values: Vec<String>,
}

/// An unquoted Postgres identifier: `[A-Za-z_][A-Za-z0-9_$]*`, 1 to 63 bytes.
pub fn identifier(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("is empty".into());
    }
    if s.len() > MAX_IDENTIFIER_LEN {
        return Err(format!("is longer than {MAX_IDENTIFIER_LEN} bytes"));
    }
    let mut chars = s.chars();
    let first = chars.next().unwrap_or('0');
    if !(first.is_ascii_alphabetic() || first == '_') {
        return Err("must start with a letter or an underscore".into());
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '$'))
    {
        return Err(format!(
            "has {c:?}; only letters, digits, _ and $ are allowed"
        ));
    }
    Ok(())
}

/// Parses `column=op.value` or `column=in.(v1,v2,...)`.
pub fn parse(filter: &str) -> Result<Filter, String> {
    if filter.len() > MAX_FILTER_LEN {
        return Err(format!("is longer than {MAX_FILTER_LEN} bytes"));
    }
    if filter.chars().any(char::is_control) {
        return Err("has control characters".into());
    }
    let (column, rest) = filter
        .split_once('=')
        .ok_or("must look like column=op.value (no '=')")?;
    identifier(column).map_err(|e| format!("column {column:?} {e}"))?;
    let (op, value) = rest
        .split_once('.')
        .ok_or("must look like column=op.value (no '.' after the operator)")?;
    if !OPERATORS.contains(&op) {
        return Err(format!(
            "operator {op:?} is not one of {}",
            OPERATORS.join(", ")
        ));
    }
    let values = if op == "in" {
        let inner = value
            .strip_prefix('(')
            .and_then(|v| v.strip_suffix(')'))
            .ok_or("in needs a parenthesised list: column=in.(a,b)")?;
        let items: Vec<String> = inner.split(',').map(|v| v.trim().to_string()).collect();
        if items.len() > MAX_IN_VALUES {
            return Err(format!(
                "in has {} values; at most {MAX_IN_VALUES}",
                items.len()
            ));
        }
        if items.iter().any(String::is_empty) {
            return Err("in has an empty value".into());
        }
        items
    } else {
        if value.is_empty() {
            return Err(format!("{op} needs a value"));
        }
        vec![value.to_string()]
    };
    Ok(Filter {
        column: column.to_string(),
        op: op.to_string(),
        values,
    })
}

/// Subscription ids become channel topics: `[A-Za-z0-9_.:-]`, 1 to 128 bytes.
pub fn subscription_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 128 {
        return Err("must be 1 to 128 bytes".into());
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':')))
    {
        return Err(format!(
            "has {c:?}; only letters, digits, _ - . : are allowed"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operator_parses() {
        for op in ["eq", "neq", "lt", "lte", "gt", "gte"] {
            let f = parse(&format!("status={op}.open")).unwrap();
            assert_eq!((f.column.as_str(), f.op.as_str()), ("status", op));
            assert_eq!(f.values, vec!["open"]);
        }
        let f = parse("id=in.(1, 2,3)").unwrap();
        assert_eq!(f.values, vec!["1", "2", "3"]);
        // The value is everything after the first '.', dots and '=' included.
        assert_eq!(
            parse("ts=gt.2025-01-01T00:00:00.5").unwrap().values,
            vec!["2025-01-01T00:00:00.5"]
        );
        assert_eq!(parse("note=eq.a=b").unwrap().values, vec!["a=b"]);
    }

    #[test]
    fn bad_filters_say_why() {
        let cases = [
            ("status", "no '='"),
            ("status=open", "no '.'"),
            ("status=like.open", "operator \"like\""),
            ("status=eq.", "needs a value"),
            ("=eq.1", "column \"\" is empty"),
            ("1st=eq.1", "must start with a letter"),
            ("a-b=eq.1", "only letters"),
            ("id=in.1,2", "parenthesised"),
            ("id=in.(1,,2)", "empty value"),
            ("id=in.()", "empty value"),
            ("a=eq.x\ny", "control"),
        ];
        for (f, why) in cases {
            let err = parse(f).expect_err(f);
            assert!(err.contains(why), "{f:?}: {err}");
        }
        let list: Vec<String> = (0..101).map(|i| i.to_string()).collect();
        let err = parse(&format!("id=in.({})", list.join(","))).unwrap_err();
        assert!(err.contains("101 values"), "{err}");
        assert!(parse(&format!("id=in.({})", list[..100].join(","))).is_ok());
        assert!(parse(&format!("a=eq.{}", "x".repeat(MAX_FILTER_LEN))).is_err());
    }

    #[test]
    fn identifiers_and_ids() {
        for ok in ["jobs", "_x", "Jobs2", "a$b"] {
            identifier(ok).unwrap();
        }
        for bad in ["", "2x", "jobs;drop", "a b", "\"q\"", &"x".repeat(64)] {
            assert!(identifier(bad).is_err(), "{bad:?}");
        }
        for ok in ["jobs_subscription", "ui:board-1.2"] {
            subscription_id(ok).unwrap();
        }
        for bad in ["", "a b", "a/b", &"x".repeat(129)] {
            assert!(subscription_id(bad).is_err(), "{bad:?}");
        }
    }
}
