//! Typed filter values and conditions, and their PostgREST query-string form.
//!
//! User text only ever enters a request as a [`Value`] or a like pattern, and is written out by
//! the rules in `PROTOCOL.md`: raw after a top-level operator (PostgREST takes the rest of the
//! parameter literally there, so quotes would be matched as characters), double-quoted with `"`
//! and `\` escaped inside `in.(...)` and logic trees (where `,` `.` `:` `(` `)` are syntax), and
//! percent-encoded everywhere. Column names are identifiers checked by [`ident`], so no input can
//! add an operator or a parameter.

use std::borrow::Cow;
use std::fmt::Write as _;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use super::RestError;

/// A filter operand. Build one with `.into()` from text, integers, floats, bools or a UUID.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Text(String),
    Int(i64),
    UInt(u64),
    Float(f64),
    Bool(bool),
}

impl Value {
    /// The text PostgreSQL parses the operand from.
    pub fn as_text(&self) -> Cow<'_, str> {
        match self {
            Value::Text(s) => Cow::Borrowed(s),
            Value::Int(i) => Cow::Owned(i.to_string()),
            Value::UInt(u) => Cow::Owned(u.to_string()),
            // Rust spells these `inf`/`NaN`; float8in wants `Infinity`.
            Value::Float(f) if f.is_infinite() && *f > 0.0 => Cow::Borrowed("Infinity"),
            Value::Float(f) if f.is_infinite() => Cow::Borrowed("-Infinity"),
            Value::Float(f) => Cow::Owned(f.to_string()),
            Value::Bool(b) => Cow::Borrowed(if *b { "true" } else { "false" }),
        }
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_owned())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}
impl From<&String> for Value {
    fn from(v: &String) -> Self {
        Value::Text(v.clone())
    }
}
impl From<char> for Value {
    fn from(v: char) -> Self {
        Value::Text(v.to_string())
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Float(v)
    }
}
impl From<f32> for Value {
    fn from(v: f32) -> Self {
        // Through its shortest decimal form, so 0.1f32 stays "0.1" and not 0.10000000149...
        Value::Float(v.to_string().parse().unwrap_or(f64::from(v)))
    }
}
impl From<uuid::Uuid> for Value {
    fn from(v: uuid::Uuid) -> Self {
        Value::Text(v.hyphenated().to_string())
    }
}
impl From<&uuid::Uuid> for Value {
    fn from(v: &uuid::Uuid) -> Self {
        Value::from(*v)
    }
}
macro_rules! int_value {
    ($variant:ident: $($t:ty),*) => {$(
        impl From<$t> for Value {
            fn from(v: $t) -> Self {
                Value::$variant(v.into())
            }
        }
    )*};
}
int_value!(Int: i8, i16, i32, i64, u8, u16, u32);
int_value!(UInt: u64);

/// The operand of `is`: PostgREST accepts only these words there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IsValue {
    Null,
    True,
    False,
    Unknown,
}

impl IsValue {
    fn as_str(self) -> &'static str {
        match self {
            IsValue::Null => "null",
            IsValue::True => "true",
            IsValue::False => "false",
            IsValue::Unknown => "unknown",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Op {
    Eq(Value),
    Neq(Value),
    Gt(Value),
    Gte(Value),
    Lt(Value),
    Lte(Value),
    Like(String),
    Ilike(String),
    Is(IsValue),
    In(Vec<Value>),
}

impl Op {
    fn name(&self) -> &'static str {
        match self {
            Op::Eq(_) => "eq",
            Op::Neq(_) => "neq",
            Op::Gt(_) => "gt",
            Op::Gte(_) => "gte",
            Op::Lt(_) => "lt",
            Op::Lte(_) => "lte",
            Op::Like(_) => "like",
            Op::Ilike(_) => "ilike",
            Op::Is(_) => "is",
            Op::In(_) => "in",
        }
    }

    /// Writes `op.operand`; `quoted` inside logic trees, where bare values could hold syntax.
    fn write(&self, out: &mut String, quoted: bool) {
        out.push_str(self.name());
        out.push('.');
        let scalar = |out: &mut String, text: &str| {
            if quoted {
                quote_into(out, text)
            } else {
                out.push_str(text)
            }
        };
        match self {
            Op::Eq(v) | Op::Neq(v) | Op::Gt(v) | Op::Gte(v) | Op::Lt(v) | Op::Lte(v) => {
                scalar(out, &v.as_text())
            }
            Op::Like(p) | Op::Ilike(p) => scalar(out, p),
            Op::Is(v) => out.push_str(v.as_str()),
            // A list is always quoted: its elements are split on `,` even at top level.
            Op::In(values) => {
                out.push('(');
                for (i, v) in values.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    quote_into(out, &v.as_text());
                }
                out.push(')');
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Logic {
    And,
    Or,
}

impl Logic {
    fn as_str(self) -> &'static str {
        match self {
            Logic::And => "and",
            Logic::Or => "or",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Leaf {
        column: String,
        negated: bool,
        op: Op,
    },
    Group {
        negated: bool,
        logic: Logic,
        children: Vec<Node>,
    },
}

/// One typed condition: a comparison on a column, or an `and`/`or` group of conditions.
///
/// Column names are checked when the condition is added to a request; a bad one fails the
/// request with [`RestError::InvalidRequest`] before anything is sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Cond(Node);

impl Cond {
    fn leaf(column: &str, op: Op) -> Self {
        Cond(Node::Leaf {
            column: column.to_owned(),
            negated: false,
            op,
        })
    }
    fn group(logic: Logic, conds: impl IntoIterator<Item = Cond>) -> Self {
        Cond(Node::Group {
            negated: false,
            logic,
            children: conds.into_iter().map(|c| c.0).collect(),
        })
    }

    pub fn eq(column: &str, value: impl Into<Value>) -> Self {
        Self::leaf(column, Op::Eq(value.into()))
    }
    pub fn neq(column: &str, value: impl Into<Value>) -> Self {
        Self::leaf(column, Op::Neq(value.into()))
    }
    pub fn gt(column: &str, value: impl Into<Value>) -> Self {
        Self::leaf(column, Op::Gt(value.into()))
    }
    pub fn gte(column: &str, value: impl Into<Value>) -> Self {
        Self::leaf(column, Op::Gte(value.into()))
    }
    pub fn lt(column: &str, value: impl Into<Value>) -> Self {
        Self::leaf(column, Op::Lt(value.into()))
    }
    pub fn lte(column: &str, value: impl Into<Value>) -> Self {
        Self::leaf(column, Op::Lte(value.into()))
    }
    /// SQL `LIKE`. In the pattern `%` and `*` match any run of characters (PostgREST turns every
    /// `*` into `%`) and `_` one character; wrap user text in [`escape_like`] to match it
    /// literally, e.g. `format!("*{}*", escape_like(q))` for "contains".
    pub fn like(column: &str, pattern: impl Into<String>) -> Self {
        Self::leaf(column, Op::Like(pattern.into()))
    }
    /// Case-insensitive [`Cond::like`] (`ILIKE`); the same wildcards apply.
    pub fn ilike(column: &str, pattern: impl Into<String>) -> Self {
        Self::leaf(column, Op::Ilike(pattern.into()))
    }
    pub fn is(column: &str, value: IsValue) -> Self {
        Self::leaf(column, Op::Is(value))
    }
    /// `column IN (values)`; no values matches no row.
    pub fn in_<V: Into<Value>>(column: &str, values: impl IntoIterator<Item = V>) -> Self {
        Self::leaf(column, Op::In(values.into_iter().map(Into::into).collect()))
    }
    /// All of `conds` (nest it inside an [`OrGroup`]; top-level filters are already and-ed).
    pub fn and(conds: impl IntoIterator<Item = Cond>) -> Self {
        Self::group(Logic::And, conds)
    }
    /// Any of `conds`.
    pub fn or(conds: impl IntoIterator<Item = Cond>) -> Self {
        Self::group(Logic::Or, conds)
    }
}

/// `!cond` is its negation (`not.`); negating twice gives `cond` back.
impl std::ops::Not for Cond {
    type Output = Cond;
    fn not(self) -> Cond {
        let mut node = self.0;
        match &mut node {
            Node::Leaf { negated, .. } | Node::Group { negated, .. } => *negated = !*negated,
        }
        Cond(node)
    }
}

/// The operand of [`Select::or`](super::Select::or): rows matching any of its conditions.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OrGroup(Vec<Cond>);

impl OrGroup {
    pub fn new() -> Self {
        Self::default()
    }
    /// Adds one alternative.
    pub fn cond(mut self, cond: Cond) -> Self {
        self.0.push(cond);
        self
    }
    pub fn into_cond(self) -> Cond {
        Cond::or(self.0)
    }
}

impl FromIterator<Cond> for OrGroup {
    fn from_iter<I: IntoIterator<Item = Cond>>(iter: I) -> Self {
        OrGroup(iter.into_iter().collect())
    }
}

impl From<OrGroup> for Cond {
    fn from(g: OrGroup) -> Self {
        g.into_cond()
    }
}

/// Escapes `s` for a `like`/`ilike` pattern so it matches itself.
///
/// `%`, `_` and `\` get a backslash (LIKE's default escape). A `*` cannot be matched literally
/// through PostgREST, which turns every `*` in a pattern into `%` before PostgreSQL sees it, so it
/// becomes `_`: exactly one character, which may be a `*` or anything else. Use `eq`/`in_` when
/// text containing `*` must match exactly.
pub fn escape_like(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    for c in s.chars() {
        match c {
            '\\' | '%' | '_' => {
                out.push('\\');
                out.push(c);
            }
            '*' => out.push('_'),
            c => out.push(c),
        }
    }
    out
}

/// Longest name PostgreSQL keeps (NAMEDATALEN - 1 bytes).
const MAX_IDENT: usize = 63;

/// Checks a table or column name: ASCII letters, digits and `_`, not starting with a digit.
/// Narrower than PostgreSQL allows, so a name never needs quoting and never holds syntax.
pub(crate) fn ident<'a>(kind: &str, name: &'a str) -> Result<&'a str, RestError> {
    let mut bytes = name.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_');
    if first_ok && name.len() <= MAX_IDENT && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        Ok(name)
    } else {
        Err(RestError::InvalidRequest(format!(
            "invalid {kind} name {:?}: expected [A-Za-z_][A-Za-z0-9_]* of at most {MAX_IDENT} bytes",
            truncate(name, 80)
        )))
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Checks a `select` list and returns it without whitespace (as postgrest-js sends it).
///
/// Grammar: items separated by `,`; an item is `*`, or `[alias:]column[::type]`, or
/// `[alias:]table[!hint...](items)` for an embedded resource.
pub(crate) fn select_list(input: &str) -> Result<String, RestError> {
    let cleaned: String = input.chars().filter(|c| !c.is_whitespace()).collect();
    let mut p = SelectParser {
        s: cleaned.as_bytes(),
        i: 0,
    };
    match p.items(0) {
        Ok(()) if p.i == p.s.len() => Ok(cleaned),
        _ => Err(RestError::InvalidRequest(format!(
            "invalid select list {:?} (at byte {})",
            truncate(input, 200),
            p.i
        ))),
    }
}

struct SelectParser<'a> {
    s: &'a [u8],
    i: usize,
}

impl SelectParser<'_> {
    /// Embeds deeper than this are refused rather than recursed into.
    const MAX_DEPTH: usize = 8;

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }
    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn name(&mut self) -> Result<(), ()> {
        let start = self.i;
        while self
            .peek()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            self.i += 1;
        }
        let n = self.i - start;
        if n == 0 || n > MAX_IDENT || self.s[start].is_ascii_digit() {
            return Err(());
        }
        Ok(())
    }
    fn items(&mut self, depth: usize) -> Result<(), ()> {
        if depth > Self::MAX_DEPTH {
            return Err(());
        }
        loop {
            self.item(depth)?;
            if !self.eat(b',') {
                return Ok(());
            }
        }
    }
    fn item(&mut self, depth: usize) -> Result<(), ()> {
        if self.eat(b'*') {
            return Ok(());
        }
        self.name()?;
        // `alias:name`, but not the `::` of a cast.
        if self.peek() == Some(b':') && self.s.get(self.i + 1) != Some(&b':') {
            self.i += 1;
            self.name()?;
        }
        if self.s[self.i..].starts_with(b"::") {
            self.i += 2;
            return self.name();
        }
        while self.eat(b'!') {
            self.name()?;
        }
        if self.eat(b'(') {
            self.items(depth + 1)?;
            if !self.eat(b')') {
                return Err(());
            }
        }
        Ok(())
    }
}

/// Everything but RFC 3986 unreserved characters is percent-encoded: `+` stays a plus (some
/// servers read a raw `+` as a space) and `&`, `=`, `,`, `(`, `)`, `"` reach the parser intact.
const QUERY: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Appends `key=value` to a query string, both percent-encoded.
pub(crate) fn push_pair(qs: &mut String, key: &str, value: &str) {
    if !qs.is_empty() {
        qs.push('&');
    }
    let _ = write!(
        qs,
        "{}={}",
        utf8_percent_encode(key, QUERY),
        utf8_percent_encode(value, QUERY)
    );
}

/// `"text"` with `"` and `\` backslash-escaped: PostgREST's quoted operand.
fn quote_into(out: &mut String, text: &str) {
    out.reserve(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

/// Checks every column and group in `node`.
fn check(node: &Node) -> Result<(), RestError> {
    match node {
        Node::Leaf { column, .. } => ident("column", column).map(drop),
        Node::Group {
            children, logic, ..
        } => {
            if children.is_empty() {
                // PostgREST rejects `or=()`; say so before sending.
                return Err(RestError::InvalidRequest(format!(
                    "empty {} group",
                    logic.as_str()
                )));
            }
            children.iter().try_for_each(check)
        }
    }
}

/// Writes a condition inside a logic tree: `col.[not.]op."v"` or `[not.]or(...)`.
fn write_tree(node: &Node, out: &mut String) {
    match node {
        Node::Leaf {
            column,
            negated,
            op,
        } => {
            out.push_str(column);
            out.push('.');
            if *negated {
                out.push_str("not.");
            }
            op.write(out, true);
        }
        Node::Group {
            negated,
            logic,
            children,
        } => {
            if *negated {
                out.push_str("not.");
            }
            out.push_str(logic.as_str());
            write_children(children, out);
        }
    }
}

fn write_children(children: &[Node], out: &mut String) {
    out.push('(');
    for (i, child) in children.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_tree(child, out);
    }
    out.push(')');
}

/// The unencoded `(key, value)` query parameter for a top-level condition.
pub(crate) fn render(cond: &Cond) -> Result<(String, String), RestError> {
    check(&cond.0)?;
    let mut value = String::new();
    match &cond.0 {
        Node::Leaf {
            column,
            negated,
            op,
        } => {
            if *negated {
                value.push_str("not.");
            }
            op.write(&mut value, false);
            Ok((column.clone(), value))
        }
        Node::Group {
            negated,
            logic,
            children,
        } => {
            write_children(children, &mut value);
            let key = match negated {
                true => format!("not.{}", logic.as_str()),
                false => logic.as_str().to_owned(),
            };
            Ok((key, value))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The query string a condition becomes.
    fn qs(cond: Cond) -> String {
        let (k, v) = render(&cond).unwrap();
        let mut s = String::new();
        push_pair(&mut s, &k, &v);
        s
    }

    /// The decoded `(key, value)` PostgREST parses.
    fn raw(cond: Cond) -> (String, String) {
        render(&cond).unwrap()
    }

    /// Strings that break naive filter building, one concern each.
    const HOSTILE: &[&str] = &[
        "O'Brien",
        "say \"hi\"",
        "a,b",
        "(paren)",
        "x)",
        "star*",
        "100%",
        "under_score",
        r"back\slash",
        r#"\""#,
        "dot.ted",
        "co:lon",
        "a::text",
        "eq.x",
        "&select=*",
        "k=v&x=y",
        "plus+space here",
        "#hash?q",
        "Zoë Ñandú 東京 🚗",
        "",
        " padded ",
        "null",
        "not.is.null",
        "or=(id.gt.0)",
    ];

    /// Reverses `quote_into`, as PostgREST's parser does.
    fn unquote(s: &str) -> Option<String> {
        let body = s.strip_prefix('"')?.strip_suffix('"')?;
        let mut out = String::new();
        let mut chars = body.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => out.push(chars.next()?),
                // An unescaped quote inside would end the operand early.
                '"' => return None,
                c => out.push(c),
            }
        }
        Some(out)
    }

    fn decode(s: &str) -> String {
        percent_encoding::percent_decode_str(s)
            .decode_utf8()
            .unwrap()
            .into_owned()
    }

    #[test]
    fn scalar_operators_write_raw_values_at_top_level() {
        assert_eq!(qs(Cond::eq("name", "Bob")), "name=eq.Bob");
        assert_eq!(qs(Cond::neq("name", "Bob")), "name=neq.Bob");
        assert_eq!(qs(Cond::gt("age", 5)), "age=gt.5");
        assert_eq!(qs(Cond::gte("age", -5i64)), "age=gte.-5");
        assert_eq!(qs(Cond::lt("n", u64::MAX)), "n=lt.18446744073709551615");
        assert_eq!(qs(Cond::lte("price", 1.5)), "price=lte.1.5");
        assert_eq!(qs(Cond::eq("ok", true)), "ok=eq.true");
        assert_eq!(qs(Cond::eq("ok", false)), "ok=eq.false");
        assert_eq!(qs(Cond::eq("name", "")), "name=eq.");
    }

    #[test]
    fn floats_use_postgres_spellings() {
        assert_eq!(Value::from(f64::INFINITY).as_text(), "Infinity");
        assert_eq!(Value::from(f64::NEG_INFINITY).as_text(), "-Infinity");
        assert_eq!(Value::from(f64::NAN).as_text(), "NaN");
        assert_eq!(Value::from(0.1f32).as_text(), "0.1");
        assert_eq!(Value::from(1e21).as_text(), "1000000000000000000000");
    }

    #[test]
    fn uuid_is_hyphenated_text() {
        let id = uuid::Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
        assert_eq!(
            qs(Cond::eq("id", id)),
            "id=eq.01234567-89ab-cdef-0123-456789abcdef"
        );
    }

    #[test]
    fn like_keeps_wildcards_and_is_percent_encoded() {
        assert_eq!(qs(Cond::like("n", "*a%")), "n=like.%2Aa%25");
        assert_eq!(qs(Cond::ilike("n", "*a b*")), "n=ilike.%2Aa%20b%2A");
    }

    #[test]
    fn is_takes_only_its_keywords() {
        assert_eq!(qs(Cond::is("d", IsValue::Null)), "d=is.null");
        assert_eq!(qs(Cond::is("d", IsValue::True)), "d=is.true");
        assert_eq!(qs(Cond::is("d", IsValue::False)), "d=is.false");
        assert_eq!(qs(Cond::is("d", IsValue::Unknown)), "d=is.unknown");
        assert_eq!(qs(!Cond::is("d", IsValue::Null)), "d=not.is.null");
    }

    #[test]
    fn in_quotes_every_element() {
        assert_eq!(
            raw(Cond::in_("id", [1, 2])),
            ("id".into(), r#"in.("1","2")"#.into())
        );
        assert_eq!(
            raw(Cond::in_("n", ["a,b", "c\"d", r"e\f"])),
            ("n".into(), r#"in.("a,b","c\"d","e\\f")"#.into())
        );
        assert_eq!(
            raw(Cond::in_("n", Vec::<String>::new())),
            ("n".into(), "in.()".into())
        );
        assert_eq!(qs(Cond::in_("n", ["a b"])), "n=in.%28%22a%20b%22%29");
    }

    #[test]
    fn not_prefixes_the_operator_and_cancels_itself() {
        assert_eq!(qs(!Cond::eq("s", "x")), "s=not.eq.x");
        assert_eq!(qs(!!Cond::eq("s", "x")), "s=eq.x");
        assert_eq!(
            raw(!Cond::in_("s", ["a"])),
            ("s".into(), r#"not.in.("a")"#.into())
        );
    }

    #[test]
    fn groups_quote_operands_and_nest() {
        let g = Cond::or([
            Cond::eq("a", 1),
            !Cond::ilike("b", "*x,y*"),
            Cond::and([Cond::gt("c", 2), Cond::is("d", IsValue::Null)]),
            !Cond::and([Cond::in_("e", ["p", "q"])]),
        ]);
        assert_eq!(
            raw(g),
            (
                "or".into(),
                r#"(a.eq."1",b.not.ilike."*x,y*",and(c.gt."2",d.is.null),not.and(e.in.("p","q")))"#
                    .into()
            )
        );
        assert_eq!(
            raw(!Cond::or([Cond::eq("a", "x")])),
            ("not.or".into(), r#"(a.eq."x")"#.into())
        );
        assert_eq!(
            raw(Cond::and([Cond::eq("a", "x")])),
            ("and".into(), r#"(a.eq."x")"#.into())
        );
        let group: OrGroup = [Cond::eq("a", 1)].into_iter().collect();
        assert_eq!(
            group,
            OrGroup::new().cond(Cond::eq("a", 1)),
            "collect and cond build the same group"
        );
    }

    #[test]
    fn empty_groups_are_refused() {
        assert!(matches!(
            render(&Cond::or([])),
            Err(RestError::InvalidRequest(_))
        ));
        assert!(matches!(
            render(&Cond::or([Cond::and([])])),
            Err(RestError::InvalidRequest(_))
        ));
    }

    #[test]
    fn hostile_values_round_trip_through_every_operator() {
        for &s in HOSTILE {
            // Top level: the decoded value is the operator plus exactly the text.
            for (cond, prefix) in [
                (Cond::eq("c", s), "eq."),
                (Cond::neq("c", s), "neq."),
                (Cond::gt("c", s), "gt."),
                (Cond::gte("c", s), "gte."),
                (Cond::lt("c", s), "lt."),
                (Cond::lte("c", s), "lte."),
                (Cond::like("c", s), "like."),
                (Cond::ilike("c", s), "ilike."),
                (!Cond::eq("c", s), "not.eq."),
            ] {
                let q = qs(cond);
                let (k, v) = q.split_once('=').unwrap();
                assert_eq!(k, "c", "{s:?}");
                // One parameter: no raw `&`, `=`, `#`, `+` or space survives encoding.
                assert!(
                    !v.contains(['&', '=', '#', '+', ' ', '"', ',', '(', ')']),
                    "{s:?} -> {v}"
                );
                assert_eq!(decode(v), format!("{prefix}{s}"), "{s:?}");
            }

            // In a list: one quoted element that unquotes to the text.
            let (_, v) = raw(Cond::in_("c", [s]));
            let inner = v.strip_prefix("in.(").unwrap().strip_suffix(')').unwrap();
            assert_eq!(unquote(inner).as_deref(), Some(s), "{s:?} -> {v}");

            // In a logic tree: `c.op.` then one quoted operand.
            for (cond, prefix) in [
                (Cond::eq("c", s), "c.eq."),
                (Cond::neq("c", s), "c.neq."),
                (Cond::gt("c", s), "c.gt."),
                (Cond::gte("c", s), "c.gte."),
                (Cond::lt("c", s), "c.lt."),
                (Cond::lte("c", s), "c.lte."),
                (Cond::like("c", s), "c.like."),
                (Cond::ilike("c", s), "c.ilike."),
                (!Cond::eq("c", s), "c.not.eq."),
            ] {
                let (k, v) = raw(Cond::or([cond]));
                assert_eq!(k, "or");
                let inner = v.strip_prefix('(').unwrap().strip_suffix(')').unwrap();
                let operand = inner.strip_prefix(prefix).unwrap();
                assert_eq!(unquote(operand).as_deref(), Some(s), "{s:?} -> {v}");
            }
        }
    }

    #[test]
    fn hostile_columns_are_refused() {
        for col in [
            "",
            "1abc",
            "a.b",
            "a,b",
            "a=eq.1",
            "a&b",
            "a b",
            "a\"",
            "a(b)",
            "a->b",
            "a::text",
            "not.a",
            "é",
            "a\0",
            &"x".repeat(64),
        ] {
            assert!(
                matches!(render(&Cond::eq(col, 1)), Err(RestError::InvalidRequest(_))),
                "{col:?}"
            );
            assert!(render(&Cond::or([Cond::eq("ok", 1), Cond::eq(col, 1)])).is_err());
            assert!(ident("table", col).is_err(), "{col:?}");
        }
        for col in ["a", "_a", "last_name", "A1", &"x".repeat(63)] {
            assert!(ident("column", col).is_ok(), "{col:?}");
        }
    }

    #[test]
    fn escape_like_matches_literally_except_star() {
        assert_eq!(escape_like("100%"), r"100\%");
        assert_eq!(escape_like("a_b"), r"a\_b");
        assert_eq!(escape_like(r"a\b"), r"a\\b");
        assert_eq!(escape_like("a*b"), "a_b");
        assert_eq!(escape_like(""), "");
        assert_eq!(escape_like("Zoë,(x).:"), "Zoë,(x).:");
        // Escaped text never leaves a bare wildcard.
        for &s in HOSTILE {
            let e = escape_like(s);
            assert!(!e.contains('*'), "{s:?}");
            let mut chars = e.chars();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => assert!(matches!(chars.next(), Some('\\' | '%' | '_'))),
                    '%' => panic!("bare % in {e:?}"),
                    _ => {}
                }
            }
        }
    }

    #[test]
    fn select_lists_are_checked() {
        assert_eq!(select_list("id, name ,email").unwrap(), "id,name,email");
        for ok in [
            "*",
            "id",
            "id,first_name",
            "full:last_name",
            "amount::text",
            "a:amount::text",
            "*,vehicles(id,vin)",
            "cust:customers!inner(id,last_name)",
            "jobs!fk_job!inner(*,part_lines(*))",
        ] {
            assert!(select_list(ok).is_ok(), "{ok:?}");
        }
        for bad in [
            "",
            ",",
            "id,",
            "id&x=1",
            "id)",
            "a(b",
            "a=b",
            "1a",
            "a:",
            "a::",
            "\"id\"",
            "a->b",
            "a(b(c(d(e(f(g(h(i(j(k))))))))))",
        ] {
            assert!(
                matches!(select_list(bad), Err(RestError::InvalidRequest(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn query_pairs_encode_keys_and_values() {
        let mut s = String::new();
        push_pair(&mut s, "not.or", "(a.eq.\"x y\")");
        push_pair(&mut s, "order", "a.asc.nullslast");
        assert_eq!(s, "not.or=%28a.eq.%22x%20y%22%29&order=a.asc.nullslast");
    }
}
