//! Request builders: `client.from(table)` then `select`/`insert`/`upsert`/`update`/`delete`.
//!
//! Builder methods never fail; the first invalid input (a bad column, an empty `or` group, a
//! body that is not an object) is kept and returned by `execute*` before anything is sent.

use reqwest::Method;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::filter::{self, Cond, IsValue, OrGroup, Value};
use super::{Call, RestClient, RestError};

/// One page of rows, plus the total the server counted when [`Select::count`] asked for it.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub rows: Vec<T>,
    /// From `Content-Range: 0-24/<total>`; `None` unless counted.
    pub total: Option<u64>,
}

/// A page of rows as the JSON array text PostgREST sent, for callers that pass rows through
/// unchanged (no parse, no re-serialisation on the hot path).
#[derive(Debug, Clone, PartialEq)]
pub struct RawPage {
    /// A JSON array (`[]` when there were no rows).
    pub rows: bytes::Bytes,
    /// From `Content-Range`; `None` unless counted.
    pub total: Option<u64>,
}

/// Sort direction and where NULLs go; both are always sent, so nothing depends on defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Order {
    pub ascending: bool,
    pub nulls_first: bool,
}

impl Order {
    /// Ascending, NULLs last (PostgreSQL's default for `ASC`).
    pub fn asc() -> Self {
        Order {
            ascending: true,
            nulls_first: false,
        }
    }
    /// Descending, NULLs first (PostgreSQL's default for `DESC`).
    pub fn desc() -> Self {
        Order {
            ascending: false,
            nulls_first: true,
        }
    }
}

/// How the total is counted (`Prefer: count=...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    /// `count(*)`: exact, costs a scan on big tables.
    Exact,
    /// The planner's estimate.
    Planned,
    /// Exact up to PostgREST's `db-max-rows`, estimated above.
    Estimated,
}

impl Count {
    fn prefer(self) -> &'static str {
        match self {
            Count::Exact => "count=exact",
            Count::Planned => "count=planned",
            Count::Estimated => "count=estimated",
        }
    }
}

/// How many rows the caller expects back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cardinality {
    Many,
    /// Exactly one: PostgREST answers 406 `PGRST116` otherwise (and rolls a write back).
    One,
    /// Zero or one: zero becomes `None`, more is still 406.
    MaybeOne,
}

/// A table to query; made by [`RestClient::from`].
#[derive(Debug, Clone)]
pub struct Table {
    client: RestClient,
    name: String,
    error: Option<RestError>,
}

impl Table {
    pub(super) fn new(client: RestClient, name: &str) -> Self {
        let error = filter::ident("table", name).err();
        Table {
            client,
            name: name.to_owned(),
            error,
        }
    }

    /// `GET` with a `select` list such as `"id,first_name,vehicles(vin)"` (`"*"` for all).
    pub fn select(&self, columns: &str) -> Select {
        let mut q = Query::new(self);
        let columns = q.select_list(columns);
        Select {
            q,
            columns,
            order: Vec::new(),
            limit: None,
            offset: None,
            count: None,
            cardinality: Cardinality::Many,
        }
    }

    /// `POST` one object or an array of objects; keys missing from a row take the column
    /// default (`Prefer: missing=default` with `columns` = every key seen).
    pub fn insert<T: Serialize + ?Sized>(&self, rows: &T) -> Insert {
        let mut q = Query::new(self);
        let (body, columns) = q.rows_body(rows, true);
        Insert {
            w: Write::new(q, body),
            columns,
        }
    }

    /// `POST` that merges rows whose conflict target already exists
    /// (`Prefer: resolution=merge-duplicates`); set the target with [`Upsert::on_conflict`].
    pub fn upsert<T: Serialize + ?Sized>(&self, rows: &T) -> Upsert {
        let mut q = Query::new(self);
        let (body, _) = q.rows_body(rows, false);
        Upsert {
            w: Write::new(q, body),
            on_conflict: None,
            ignore_duplicates: false,
        }
    }

    /// `PATCH` the rows matching the filters with `patch` (an object of the columns to set).
    /// At least one filter is required: an unfiltered update would rewrite the whole table.
    pub fn update<T: Serialize + ?Sized>(&self, patch: &T) -> Update {
        let mut q = Query::new(self);
        let body = match serde_json::to_value(patch) {
            Ok(v @ serde_json::Value::Object(_)) => q.json(&v),
            Ok(_) => {
                q.fail(RestError::InvalidRequest(
                    "update body must be a JSON object".into(),
                ));
                None
            }
            Err(e) => {
                q.fail(serialize_error(e));
                None
            }
        };
        Update {
            w: Write::new(q, body),
        }
    }

    /// `DELETE` the rows matching the filters. At least one filter is required.
    pub fn delete(&self) -> Delete {
        Delete {
            w: Write::new(Query::new(self), None),
        }
    }
}

/// What every builder shares: the target, its filters and the first error seen.
#[derive(Debug, Clone)]
struct Query {
    client: RestClient,
    table: String,
    error: Option<RestError>,
    /// Unencoded `(key, value)` pairs in the order given.
    filters: Vec<(String, String)>,
}

impl Query {
    fn new(t: &Table) -> Self {
        Query {
            client: t.client.clone(),
            table: t.name.clone(),
            error: t.error.clone(),
            filters: Vec::new(),
        }
    }

    fn fail(&mut self, e: RestError) {
        self.error.get_or_insert(e);
    }

    fn push(&mut self, cond: Cond) {
        match filter::render(&cond) {
            Ok(pair) => self.filters.push(pair),
            Err(e) => self.fail(e),
        }
    }

    fn select_list(&mut self, columns: &str) -> String {
        filter::select_list(columns).unwrap_or_else(|e| {
            self.fail(e);
            String::new()
        })
    }

    fn json(&mut self, v: &serde_json::Value) -> Option<Vec<u8>> {
        serde_json::to_vec(v)
            .map_err(|e| self.fail(serialize_error(e)))
            .ok()
    }

    /// The body for insert/upsert and, when `union_columns`, the `columns` list of every key
    /// any row has (PostgREST otherwise takes the first row's keys and refuses the rest).
    fn rows_body<T: Serialize + ?Sized>(
        &mut self,
        rows: &T,
        union_columns: bool,
    ) -> (Option<Vec<u8>>, Option<String>) {
        let value = match serde_json::to_value(rows) {
            Ok(v) => v,
            Err(e) => {
                self.fail(serialize_error(e));
                return (None, None);
            }
        };
        let columns = match &value {
            serde_json::Value::Object(_) => None,
            serde_json::Value::Array(items) => {
                let mut keys: Vec<&str> = Vec::new();
                for item in items {
                    let Some(obj) = item.as_object() else {
                        self.fail(RestError::InvalidRequest(
                            "every row must be a JSON object".into(),
                        ));
                        return (None, None);
                    };
                    for k in obj.keys() {
                        if !keys.contains(&k.as_str()) {
                            keys.push(k);
                        }
                    }
                }
                for k in &keys {
                    if let Err(e) = filter::ident("column", k) {
                        self.fail(e);
                    }
                }
                (union_columns && !keys.is_empty()).then(|| keys.join(","))
            }
            _ => {
                self.fail(RestError::InvalidRequest(
                    "rows must be a JSON object or an array of objects".into(),
                ));
                return (None, None);
            }
        };
        (self.json(&value), columns)
    }

    fn check(&self) -> Result<(), RestError> {
        match &self.error {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }
}

fn serialize_error(e: serde_json::Error) -> RestError {
    RestError::InvalidRequest(format!("cannot serialize body: {e}"))
}

/// Filter methods, shared by every builder that filters rows.
macro_rules! filter_methods {
    () => {
        /// `column = value`. Text is compared as is: quotes, commas and dots are not syntax here.
        pub fn eq(mut self, column: &str, value: impl Into<Value>) -> Self {
            self.q().push(Cond::eq(column, value));
            self
        }
        /// `column <> value`.
        pub fn neq(mut self, column: &str, value: impl Into<Value>) -> Self {
            self.q().push(Cond::neq(column, value));
            self
        }
        /// `column > value`.
        pub fn gt(mut self, column: &str, value: impl Into<Value>) -> Self {
            self.q().push(Cond::gt(column, value));
            self
        }
        /// `column >= value`.
        pub fn gte(mut self, column: &str, value: impl Into<Value>) -> Self {
            self.q().push(Cond::gte(column, value));
            self
        }
        /// `column < value`.
        pub fn lt(mut self, column: &str, value: impl Into<Value>) -> Self {
            self.q().push(Cond::lt(column, value));
            self
        }
        /// `column <= value`.
        pub fn lte(mut self, column: &str, value: impl Into<Value>) -> Self {
            self.q().push(Cond::lte(column, value));
            self
        }
        /// `column LIKE pattern`: `*` and `%` match any run, `_` one character; pass user text
        /// through [`escape_like`](super::escape_like) to match it literally.
        pub fn like(mut self, column: &str, pattern: impl Into<String>) -> Self {
            self.q().push(Cond::like(column, pattern));
            self
        }
        /// `column ILIKE pattern` (case-insensitive [`like`](Self::like)).
        pub fn ilike(mut self, column: &str, pattern: impl Into<String>) -> Self {
            self.q().push(Cond::ilike(column, pattern));
            self
        }
        /// `column IS NULL|TRUE|FALSE|UNKNOWN`.
        pub fn is(mut self, column: &str, value: IsValue) -> Self {
            self.q().push(Cond::is(column, value));
            self
        }
        /// `column IN (values)`; an empty list matches nothing.
        pub fn in_<V: Into<Value>>(
            mut self,
            column: &str,
            values: impl IntoIterator<Item = V>,
        ) -> Self {
            self.q().push(Cond::in_(column, values));
            self
        }
        /// Rows that do *not* match `cond`.
        pub fn not(mut self, cond: Cond) -> Self {
            self.q().push(!cond);
            self
        }
        /// Rows matching any condition of `group`.
        pub fn or(mut self, group: OrGroup) -> Self {
            self.q().push(group.into_cond());
            self
        }
        /// Any typed condition, including nested `and`/`or` groups.
        pub fn filter(mut self, cond: Cond) -> Self {
            self.q().push(cond);
            self
        }
    };
}

/// A read (`GET`). Made by [`Table::select`].
#[derive(Debug, Clone)]
pub struct Select {
    q: Query,
    columns: String,
    order: Vec<String>,
    limit: Option<u64>,
    offset: Option<u64>,
    count: Option<Count>,
    cardinality: Cardinality,
}

impl Select {
    fn q(&mut self) -> &mut Query {
        &mut self.q
    }

    filter_methods!();

    /// Adds a sort key; keys apply in the order added.
    pub fn order(mut self, column: &str, order: Order) -> Self {
        match filter::ident("column", column) {
            Ok(c) => self.order.push(format!(
                "{c}.{}.{}",
                if order.ascending { "asc" } else { "desc" },
                if order.nulls_first {
                    "nullsfirst"
                } else {
                    "nullslast"
                }
            )),
            Err(e) => self.q.fail(e),
        }
        self
    }

    /// At most `n` rows.
    pub fn limit(mut self, n: u64) -> Self {
        self.limit = Some(n);
        self
    }

    /// Skip the first `n` rows.
    pub fn offset(mut self, n: u64) -> Self {
        self.offset = Some(n);
        self
    }

    /// Rows `from..=to` (zero-based, inclusive, like supabase-js `range`).
    pub fn range(mut self, from: u64, to: u64) -> Self {
        if to < from {
            self.q.fail(RestError::InvalidRequest(format!(
                "range end {to} is before its start {from}"
            )));
        }
        self.offset = Some(from);
        self.limit = Some(to.saturating_sub(from).saturating_add(1));
        self
    }

    /// Also count the matching rows into [`Page::total`].
    pub fn count(mut self, count: Count) -> Self {
        self.count = Some(count);
        self
    }

    /// Expect exactly one row (`Accept: application/vnd.pgrst.object+json`); zero or several
    /// fail with 406 `PGRST116`.
    pub fn single(mut self) -> Self {
        self.cardinality = Cardinality::One;
        self
    }

    /// Expect zero or one row; zero is not an error.
    pub fn maybe_single(mut self) -> Self {
        self.cardinality = Cardinality::MaybeOne;
        self
    }

    fn call(&self) -> Result<Call, RestError> {
        self.q.check()?;
        let mut query = String::new();
        filter::push_pair(&mut query, "select", &self.columns);
        for (k, v) in &self.q.filters {
            filter::push_pair(&mut query, k, v);
        }
        if !self.order.is_empty() {
            filter::push_pair(&mut query, "order", &self.order.join(","));
        }
        if let Some(n) = self.limit {
            filter::push_pair(&mut query, "limit", &n.to_string());
        }
        if let Some(n) = self.offset {
            filter::push_pair(&mut query, "offset", &n.to_string());
        }
        Ok(Call {
            method: Method::GET,
            table: self.q.table.clone(),
            query,
            prefer: self.count.map(Count::prefer).into_iter().collect(),
            object: self.cardinality != Cardinality::Many,
            body: None,
        })
    }

    /// Runs the query. With [`single`](Self::single)/[`maybe_single`](Self::maybe_single) the
    /// page holds that one row (or none).
    pub async fn execute<T: DeserializeOwned>(self) -> Result<Page<T>, RestError> {
        let call = self.call()?;
        run(&self.q.client, call, self.cardinality).await
    }

    /// Exactly one row, else 406 `PGRST116` ([`RestError::is_not_found`] for zero rows).
    pub async fn execute_one<T: DeserializeOwned>(mut self) -> Result<T, RestError> {
        self.cardinality = Cardinality::One;
        let call = self.call()?;
        one(&self.q.client, call).await
    }

    /// Zero or one row; several rows are still 406 `PGRST116`.
    pub async fn execute_opt<T: DeserializeOwned>(mut self) -> Result<Option<T>, RestError> {
        self.cardinality = Cardinality::MaybeOne;
        let call = self.call()?;
        opt(&self.q.client, call).await
    }

    /// Runs a many-row query and returns the rows as PostgREST's JSON text. Only the outer
    /// shape is checked (an array), so a corrupt answer is still a `Decode` error.
    pub async fn execute_raw(mut self) -> Result<RawPage, RestError> {
        self.cardinality = Cardinality::Many;
        let call = self.call()?;
        let answer = self.q.client.send(call).await?;
        let text = answer.body.trim_ascii();
        if text.is_empty() {
            return Ok(RawPage {
                rows: bytes::Bytes::from_static(b"[]"),
                total: answer.total,
            });
        }
        if !(text.starts_with(b"[") && text.ends_with(b"]")) {
            return Err(RestError::Decode("expected a JSON array of rows".into()));
        }
        Ok(RawPage {
            rows: answer.body,
            total: answer.total,
        })
    }
}

/// What every write shares: `Prefer: return=representation`, an optional `select` for the
/// returned columns, and the expected cardinality of what comes back.
#[derive(Debug, Clone)]
struct Write {
    q: Query,
    body: Option<Vec<u8>>,
    returning: Option<String>,
    cardinality: Cardinality,
}

impl Write {
    fn new(q: Query, body: Option<Vec<u8>>) -> Self {
        Write {
            q,
            body,
            returning: None,
            cardinality: Cardinality::Many,
        }
    }

    fn call(
        &self,
        method: Method,
        extra: &[(&str, &str)],
        prefer: Vec<&'static str>,
    ) -> Result<Call, RestError> {
        self.q.check()?;
        let mut query = String::new();
        if let Some(cols) = &self.returning {
            filter::push_pair(&mut query, "select", cols);
        }
        for (k, v) in &self.q.filters {
            filter::push_pair(&mut query, k, v);
        }
        for (k, v) in extra {
            filter::push_pair(&mut query, k, v);
        }
        Ok(Call {
            method,
            table: self.q.table.clone(),
            query,
            prefer,
            object: self.cardinality != Cardinality::Many,
            body: self.body.clone(),
        })
    }

    fn require_filter(&self, what: &str) -> Result<(), RestError> {
        match self.q.filters.is_empty() {
            true => Err(RestError::InvalidRequest(format!(
                "{what} without a filter would touch every row of {}; add a filter",
                self.q.table
            ))),
            false => Ok(()),
        }
    }
}

/// Methods every write has: returned columns and how their result is read.
macro_rules! write_methods {
    () => {
        /// Columns of the returned rows (`select=`), default all.
        pub fn select(mut self, columns: &str) -> Self {
            let cols = self.w.q.select_list(columns);
            self.w.returning = Some(cols);
            self
        }

        /// Exactly one row must be written; otherwise PostgREST answers 406 `PGRST116` and
        /// rolls the write back.
        pub fn single(mut self) -> Self {
            self.w.cardinality = Cardinality::One;
            self
        }

        /// Zero or one row may be written (several: 406, rolled back).
        pub fn maybe_single(mut self) -> Self {
            self.w.cardinality = Cardinality::MaybeOne;
            self
        }

        /// Runs the write and returns the written rows.
        pub async fn execute<T: DeserializeOwned>(self) -> Result<Vec<T>, RestError> {
            let card = self.w.cardinality;
            let call = self.call()?;
            Ok(run(&self.w.q.client, call, card).await?.rows)
        }

        /// Runs the write, which must touch exactly one row (else 406, rolled back).
        pub async fn execute_one<T: DeserializeOwned>(mut self) -> Result<T, RestError> {
            self.w.cardinality = Cardinality::One;
            let call = self.call()?;
            one(&self.w.q.client, call).await
        }

        /// Runs the write, which may touch at most one row; `None` when it touched none.
        pub async fn execute_opt<T: DeserializeOwned>(mut self) -> Result<Option<T>, RestError> {
            self.w.cardinality = Cardinality::MaybeOne;
            let call = self.call()?;
            opt(&self.w.q.client, call).await
        }
    };
}

/// An insert (`POST`). Made by [`Table::insert`].
#[derive(Debug, Clone)]
pub struct Insert {
    w: Write,
    columns: Option<String>,
}

impl Insert {
    write_methods!();

    fn call(&self) -> Result<Call, RestError> {
        let extra: Vec<(&str, &str)> = self
            .columns
            .as_deref()
            .map(|c| ("columns", c))
            .into_iter()
            .collect();
        self.w.call(
            Method::POST,
            &extra,
            vec!["return=representation", "missing=default"],
        )
    }
}

/// An upsert (`POST` with `Prefer: resolution=...`). Made by [`Table::upsert`].
#[derive(Debug, Clone)]
pub struct Upsert {
    w: Write,
    on_conflict: Option<String>,
    ignore_duplicates: bool,
}

impl Upsert {
    write_methods!();

    /// The unique columns that identify an existing row, e.g. `"id"` or `"shop_id,ro_number"`;
    /// default the primary key.
    pub fn on_conflict(mut self, columns: &str) -> Self {
        let mut cols = Vec::new();
        for c in columns.split(',').map(str::trim) {
            match filter::ident("column", c) {
                Ok(c) => cols.push(c),
                Err(e) => self.w.q.fail(e),
            }
        }
        self.on_conflict = Some(cols.join(","));
        self
    }

    /// Keep existing rows untouched instead of merging (`resolution=ignore-duplicates`);
    /// only newly inserted rows are returned.
    pub fn ignore_duplicates(mut self) -> Self {
        self.ignore_duplicates = true;
        self
    }

    fn call(&self) -> Result<Call, RestError> {
        let extra: Vec<(&str, &str)> = self
            .on_conflict
            .as_deref()
            .map(|c| ("on_conflict", c))
            .into_iter()
            .collect();
        let resolution = match self.ignore_duplicates {
            true => "resolution=ignore-duplicates",
            false => "resolution=merge-duplicates",
        };
        self.w.call(
            Method::POST,
            &extra,
            vec![resolution, "return=representation"],
        )
    }
}

/// An update (`PATCH`). Made by [`Table::update`]; needs at least one filter.
#[derive(Debug, Clone)]
pub struct Update {
    w: Write,
}

impl Update {
    fn q(&mut self) -> &mut Query {
        &mut self.w.q
    }

    filter_methods!();
    write_methods!();

    fn call(&self) -> Result<Call, RestError> {
        self.w.q.check()?;
        self.w.require_filter("update")?;
        self.w
            .call(Method::PATCH, &[], vec!["return=representation"])
    }
}

/// A delete (`DELETE`). Made by [`Table::delete`]; needs at least one filter.
#[derive(Debug, Clone)]
pub struct Delete {
    w: Write,
}

impl Delete {
    fn q(&mut self) -> &mut Query {
        &mut self.w.q
    }

    filter_methods!();
    write_methods!();

    fn call(&self) -> Result<Call, RestError> {
        self.w.q.check()?;
        self.w.require_filter("delete")?;
        self.w
            .call(Method::DELETE, &[], vec!["return=representation"])
    }
}

async fn run<T: DeserializeOwned>(
    client: &RestClient,
    call: Call,
    cardinality: Cardinality,
) -> Result<Page<T>, RestError> {
    match cardinality {
        Cardinality::Many => {
            let answer = client.send(call).await?;
            // 204 or an empty body means no rows, not a decode error.
            let rows = match answer.body.is_empty() {
                true => Vec::new(),
                false => decode(&answer.body)?,
            };
            Ok(Page {
                rows,
                total: answer.total,
            })
        }
        Cardinality::One => Ok(Page {
            rows: vec![one(client, call).await?],
            total: None,
        }),
        Cardinality::MaybeOne => Ok(Page {
            rows: opt(client, call).await?.into_iter().collect(),
            total: None,
        }),
    }
}

async fn one<T: DeserializeOwned>(client: &RestClient, call: Call) -> Result<T, RestError> {
    decode(&client.send(call).await?.body)
}

async fn opt<T: DeserializeOwned>(client: &RestClient, call: Call) -> Result<Option<T>, RestError> {
    match client.send(call).await {
        Ok(answer) => decode(&answer.body).map(Some),
        // Zero rows is this request's normal "nothing there"; several rows stays an error.
        Err(e) if e.code() == Some("PGRST116") && e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, RestError> {
    serde_json::from_slice(body).map_err(|e| RestError::Decode(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::super::RestConfig;
    use super::*;

    fn client() -> RestClient {
        RestClient::new(RestConfig::new(
            url::Url::parse("http://127.0.0.1:9/").unwrap(),
            "k",
        ))
        .unwrap()
    }

    fn invalid(r: Result<Call, RestError>) -> String {
        match r {
            Err(RestError::InvalidRequest(m)) => m,
            Err(other) => panic!("{other:?}"),
            Ok(c) => panic!("built {:?}", c.query),
        }
    }

    #[test]
    fn select_builds_the_postgrest_query() {
        let s = client()
            .from("customers")
            .select("id, last_name")
            .ilike("last_name", "*o'b*")
            .eq("shop_id", 7)
            .order("last_name", Order::asc())
            .order("created_at", Order::desc())
            .range(20, 29)
            .count(Count::Exact);
        let c = s.call().unwrap();
        assert_eq!(c.method, Method::GET);
        assert_eq!(c.table, "customers");
        assert_eq!(
            c.query,
            "select=id%2Clast_name&last_name=ilike.%2Ao%27b%2A&shop_id=eq.7\
             &order=last_name.asc.nullslast%2Ccreated_at.desc.nullsfirst&limit=10&offset=20"
        );
        assert_eq!(c.prefer, vec!["count=exact"]);
        assert!(!c.object);
        assert!(c.body.is_none());
    }

    #[test]
    fn select_modifiers() {
        let t = client().from("jobs");
        assert_eq!(t.select("*").call().unwrap().query, "select=%2A");
        assert!(t.select("*").single().call().unwrap().object);
        assert!(t.select("*").maybe_single().call().unwrap().object);
        assert_eq!(
            t.select("*").limit(0).offset(5).call().unwrap().query,
            "select=%2A&limit=0&offset=5"
        );
        for (count, prefer) in [
            (Count::Planned, "count=planned"),
            (Count::Estimated, "count=estimated"),
        ] {
            assert_eq!(
                t.select("*").count(count).call().unwrap().prefer,
                vec![prefer]
            );
        }
        let o = Order {
            ascending: true,
            nulls_first: true,
        };
        assert_eq!(
            t.select("id").order("status", o).call().unwrap().query,
            "select=id&order=status.asc.nullsfirst"
        );
        invalid(t.select("*").range(5, 4).call());
    }

    #[test]
    fn every_filter_method_lands_in_the_query() {
        let c = client()
            .from("t")
            .select("*")
            .eq("a", "x")
            .neq("b", 1)
            .gt("c", 2.5)
            .gte("d", -1)
            .lt("e", "m")
            .lte("f", 9u64)
            .like("g", "a*")
            .ilike("h", "%b")
            .is("i", IsValue::Null)
            .in_("j", ["p", "q"])
            .not(Cond::eq("k", true))
            .or(OrGroup::new()
                .cond(Cond::eq("l", "1"))
                .cond(Cond::is("m", IsValue::False)))
            .filter(!Cond::or([Cond::lt("n", 0)]))
            .call()
            .unwrap();
        let decoded: Vec<(String, String)> = c
            .query
            .split('&')
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap();
                let d = |s: &str| {
                    percent_encoding::percent_decode_str(s)
                        .decode_utf8()
                        .unwrap()
                        .into_owned()
                };
                (d(k), d(v))
            })
            .collect();
        let expected = [
            ("select", "*"),
            ("a", "eq.x"),
            ("b", "neq.1"),
            ("c", "gt.2.5"),
            ("d", "gte.-1"),
            ("e", "lt.m"),
            ("f", "lte.9"),
            ("g", "like.a*"),
            ("h", "ilike.%b"),
            ("i", "is.null"),
            ("j", r#"in.("p","q")"#),
            ("k", "not.eq.true"),
            ("or", r#"(l.eq."1",m.is.false)"#),
            ("not.or", r#"(n.lt."0")"#),
        ];
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(decoded, expected);
    }

    #[test]
    fn invalid_input_fails_before_sending() {
        let c = client();
        assert!(invalid(c.from("cust omers").select("*").call()).contains("table"));
        assert!(invalid(c.from("t").select("id;drop").call()).contains("select"));
        assert!(invalid(c.from("t").select("*").eq("a=eq.1&b", 1).call()).contains("column"));
        invalid(c.from("t").select("*").order("a.desc", Order::asc()).call());
        invalid(c.from("t").select("*").or(OrGroup::new()).call());
        // The first error wins and later valid filters do not hide it.
        let m = invalid(c.from("t").select("*").eq("bad col", 1).eq("ok", 2).call());
        assert!(m.contains("bad col"), "{m}");
    }

    #[derive(Serialize)]
    struct Row {
        id: &'static str,
        last_name: &'static str,
    }

    #[test]
    fn insert_sends_representation_defaults_and_the_union_of_columns() {
        let t = client().from("customers");
        let rows = serde_json::json!([{"id": "1", "last_name": "a"}, {"id": "2", "email": "e"}]);
        let c = t.insert(&rows).call().unwrap();
        assert_eq!(c.method, Method::POST);
        assert_eq!(c.prefer, vec!["return=representation", "missing=default"]);
        assert_eq!(c.query, "columns=id%2Clast_name%2Cemail");
        assert!(!c.object);
        let body: serde_json::Value = serde_json::from_slice(c.body.as_ref().unwrap()).unwrap();
        assert_eq!(body, rows);

        let one = Row {
            id: "1",
            last_name: "x\"y",
        };
        let c = t.insert(&one).select("id").single().call().unwrap();
        assert_eq!(c.query, "select=id");
        assert!(c.object);
        assert_eq!(
            c.body.as_deref(),
            Some(br#"{"id":"1","last_name":"x\"y"}"#.as_slice())
        );
        let c = t.insert(&[one]).call().unwrap();
        assert_eq!(c.query, "columns=id%2Clast_name");

        invalid(t.insert(&5).call());
        invalid(t.insert(&[1, 2]).call());
        invalid(t.insert(&serde_json::json!([{"bad key": 1}])).call());
    }

    #[test]
    fn upsert_merges_on_the_conflict_target() {
        let t = client().from("customers");
        let row = serde_json::json!({"id": "1"});
        let c = t.upsert(&row).on_conflict("id").call().unwrap();
        assert_eq!(c.method, Method::POST);
        assert_eq!(c.query, "on_conflict=id");
        assert_eq!(
            c.prefer,
            vec!["resolution=merge-duplicates", "return=representation"]
        );
        let c = t
            .upsert(std::slice::from_ref(&row))
            .on_conflict("shop_id, ro_number")
            .ignore_duplicates()
            .call()
            .unwrap();
        assert_eq!(c.query, "on_conflict=shop_id%2Cro_number");
        assert_eq!(c.prefer[0], "resolution=ignore-duplicates");
        invalid(t.upsert(&row).on_conflict("id),(x").call());
    }

    #[test]
    fn update_and_delete_need_a_filter() {
        let t = client().from("jobs");
        let patch = serde_json::json!({"status": "done"});
        let c = t.update(&patch).eq("id", "j1").call().unwrap();
        assert_eq!(c.method, Method::PATCH);
        assert_eq!(c.query, "id=eq.j1");
        assert_eq!(c.prefer, vec!["return=representation"]);
        assert_eq!(c.body.as_deref(), Some(br#"{"status":"done"}"#.as_slice()));
        assert!(invalid(t.update(&patch).call()).contains("every row"));
        invalid(t.update(&[1]).eq("id", 1).call());

        let c = t
            .delete()
            .in_("id", ["a", "b"])
            .select("id")
            .maybe_single()
            .call()
            .unwrap();
        assert_eq!(c.method, Method::DELETE);
        assert_eq!(c.query, "select=id&id=in.%28%22a%22%2C%22b%22%29");
        assert!(c.object);
        assert!(c.body.is_none());
        assert!(invalid(t.delete().call()).contains("every row"));
    }
}
