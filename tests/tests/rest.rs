//! `collisionos_supabase::rest` against the real local stack: PostgreSQL 15, postrust and the
//! gateway. Every expectation is checked on rows the database really stored and returned.
//!
//! One stack per test, so each owns its rows and its injected faults; tests are few and each
//! covers a theme.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use collisionos_supabase::rest::{
    Cond, Count, IsValue, MAX_RESPONSE_BYTES, OrGroup, Order, RestClient, RestConfig, RestError,
    Select, escape_like,
};
use collisionos_tests::stack::{RestFaults, Stack};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

#[derive(Debug, Clone, Deserialize, PartialEq)]
struct Customer {
    id: Uuid,
    first_name: String,
    last_name: String,
    email: Option<String>,
    phone: Option<String>,
    created_at: String,
    updated_at: String,
}

#[derive(Debug, Serialize)]
struct NewCustomer<'a> {
    id: Uuid,
    first_name: &'a str,
    last_name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<&'a str>,
}

fn config(stack: &Stack, key: &str) -> RestConfig {
    let mut cfg = RestConfig::new(stack.url.parse().expect("stack url"), key);
    cfg.timeout = Duration::from_secs(10);
    cfg
}

/// The backend's client: service key, which RLS lets see every row.
fn service(stack: &Stack) -> RestClient {
    RestClient::new(config(stack, &stack.service_key)).expect("client")
}

fn ids<'a>(rows: impl IntoIterator<Item = &'a Customer>) -> BTreeSet<Uuid> {
    rows.into_iter().map(|c| c.id).collect()
}

/// Strings that break naive filter building; each is stored and searched for exactly.
const HOSTILE: &[&str] = &[
    "O'Brien",
    "say \"hi\"",
    r#"\""#,
    "a,b",
    "(paren)",
    "x)",
    "a(b,c)d",
    "star*",
    "*",
    "100%",
    "%",
    "under_score",
    "_",
    r"back\slash",
    r"\\",
    "dot.ted",
    "co:lon",
    "a::text",
    "eq.x",
    "not.is.null",
    "in.(1,2)",
    "or=(id.gt.0)",
    "&select=*",
    "k=v&x=y",
    "plus+sign here",
    "#hash?q",
    "tab\there",
    "Zoë Ñandú 東京 🚗",
    " padded ",
    "null",
    "",
];

/// A character that differs from `c` even case-insensitively (ilike must not match it).
fn other_char(c: char) -> char {
    if c.eq_ignore_ascii_case(&'q') {
        'z'
    } else {
        'q'
    }
}

/// Rows that differ from `s` by one character: appended, prepended, last one changed, last one
/// removed. Only `s` itself may match an exact filter.
fn decoys(s: &str) -> Vec<String> {
    let mut out = vec![format!("{s}x"), format!("x{s}")];
    if let Some(last) = s.chars().last() {
        let stem = &s[..s.len() - last.len_utf8()];
        out.push(format!("{stem}{}", other_char(last)));
        out.push(stem.to_owned());
    }
    out
}

/// What `ilike` with an [`escape_like`] pattern matches: the same length, each character equal
/// ignoring case, except that `_` (from an escaped `*`) matches any one character.
fn escaped_ilike_matches(pattern: &str, text: &str) -> bool {
    let mut p = Vec::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => p.push(Some(chars.next().expect("escape"))),
            '_' => p.push(None),
            c => p.push(Some(c)),
        }
    }
    let t: Vec<char> = text.chars().collect();
    p.len() == t.len()
        && p.iter().zip(&t).all(|(p, t)| match p {
            None => true,
            Some(p) => p.to_lowercase().eq(t.to_lowercase()),
        })
}

/// How many rows `s` matches, from `Content-Range` alone (`limit=0` returns none).
async fn count(s: Select) -> Result<u64> {
    let p = s.limit(0).count(Count::Exact).execute::<Customer>().await?;
    ensure!(p.rows.is_empty(), "limit 0 returned rows");
    p.total.context("no total")
}

#[tokio::test]
async fn select_counts_filters_orders_and_pages() -> Result<()> {
    let stack = Stack::start().await?;
    let db = service(&stack);

    // 30 customers "Page-00".."Page-29"; every third has no e-mail.
    let rows: Vec<_> = (0..30)
        .map(|i| {
            json!({
                "id": Uuid::new_v4(),
                "first_name": format!("F{i:02}"),
                "last_name": format!("Page-{i:02}"),
                "email": (i % 3 != 0).then(|| format!("p{i}@example.com")),
            })
        })
        .collect();
    let stored: Vec<Customer> = db.from("customers").insert(&rows).execute().await?;
    ensure!(stored.len() == 30, "inserted {}", stored.len());
    // A row the ilike below must not match.
    db.from("customers")
        .insert(&json!({"first_name": "Other", "last_name": "Pag-e"}))
        .execute::<Customer>()
        .await?;

    // ilike is case-insensitive; range is inclusive; the count covers every match.
    let page = db
        .from("customers")
        .select("id,first_name,last_name,email,phone,created_at,updated_at")
        .ilike("last_name", "page-*")
        .order("last_name", Order::asc())
        .range(10, 19)
        .count(Count::Exact)
        .execute::<Customer>()
        .await?;
    ensure!(page.total == Some(30), "total {:?}", page.total);
    let names: Vec<_> = page.rows.iter().map(|c| c.last_name.clone()).collect();
    let expected: Vec<_> = (10..20).map(|i| format!("Page-{i:02}")).collect();
    ensure!(names == expected, "{names:?}");

    // Descending, NULLs first: the 10 e-mail-less rows lead, then e-mails in descending order.
    let page = db
        .from("customers")
        .select("*")
        .like("last_name", "Page-%")
        .order("email", Order::desc())
        .order("last_name", Order::asc())
        .limit(12)
        .execute::<Customer>()
        .await?;
    ensure!(page.total.is_none(), "not counted: {:?}", page.total);
    ensure!(page.rows.len() == 12);
    ensure!(page.rows[..10].iter().all(|c| c.email.is_none()));
    ensure!(page.rows[0].last_name == "Page-00" && page.rows[9].last_name == "Page-27");
    ensure!(page.rows[10].email.as_deref() == Some("p8@example.com"));
    ensure!(page.rows[11].email.as_deref() == Some("p7@example.com"));

    // NULLs last when asked, against PostgreSQL's DESC default.
    let last = db
        .from("customers")
        .select("*")
        .like("last_name", "Page-%")
        .order(
            "email",
            Order {
                ascending: false,
                nulls_first: false,
            },
        )
        .offset(29)
        .execute::<Customer>()
        .await?;
    ensure!(last.rows.len() == 1 && last.rows[0].email.is_none());

    // is / not / neq / gt+lt / in_ / or, each counted against what was inserted.
    let t = db.from("customers");
    let page_rows = || t.select("id").like("last_name", "Page-*");
    ensure!(count(page_rows().is("email", IsValue::Null)).await? == 10);
    ensure!(count(page_rows().not(Cond::is("email", IsValue::Null))).await? == 20);
    ensure!(count(page_rows().neq("first_name", "F05")).await? == 29);
    ensure!(
        count(
            t.select("id")
                .gt("last_name", "Page-04")
                .lt("last_name", "Page-10")
        )
        .await?
            == 5
    );
    ensure!(count(t.select("id").in_("first_name", ["F01", "F02", "nobody"])).await? == 2);
    // F03, plus Page-21, -24 and -27 (the e-mail-less rows from Page-20 on).
    let group = OrGroup::new()
        .cond(Cond::eq("first_name", "F03"))
        .cond(Cond::and([
            Cond::gte("last_name", "Page-20"),
            Cond::is("email", IsValue::Null),
        ]));
    ensure!(count(t.select("id").or(group)).await? == 4);
    ensure!(count(t.select("id").in_("first_name", Vec::<String>::new())).await? == 0);

    // single / maybe_single by id.
    let one: Customer = t.select("*").eq("id", stored[7].id).execute_one().await?;
    ensure!(one == stored[7], "{one:?}");
    let page = t
        .select("*")
        .eq("id", stored[8].id)
        .single()
        .execute::<Customer>()
        .await?;
    ensure!(page.rows == vec![stored[8].clone()]);
    let none: Option<Customer> = t.select("*").eq("id", Uuid::new_v4()).execute_opt().await?;
    ensure!(none.is_none());
    let some: Option<Customer> = t.select("*").eq("id", stored[9].id).execute_opt().await?;
    ensure!(some.as_ref() == Some(&stored[9]));

    // Embedded columns and aliases go through the select list.
    let v: serde_json::Value = t
        .select("surname:last_name")
        .eq("id", stored[1].id)
        .execute_one()
        .await?;
    ensure!(v == json!({"surname": "Page-01"}), "{v}");

    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn hostile_strings_match_exactly_their_row() -> Result<()> {
    let stack = Stack::start().await?;
    let db = service(&stack);
    let t = db.from("customers");

    // Every hostile string and its decoys, each once.
    let mut names: Vec<String> = Vec::new();
    for s in HOSTILE {
        for n in std::iter::once(s.to_string()).chain(decoys(s)) {
            if !names.contains(&n) {
                names.push(n);
            }
        }
    }
    let rows: Vec<_> = names
        .iter()
        .map(|n| NewCustomer {
            id: Uuid::new_v4(),
            first_name: "Hostile",
            last_name: n,
            email: None,
        })
        .collect();
    let stored: Vec<Customer> = t.insert(&rows).execute().await?;
    ensure!(stored.len() == names.len());
    // The body round-trips: what went in is what the database stored.
    for (row, name) in stored.iter().zip(&names) {
        ensure!(
            &row.last_name == name,
            "stored {:?} for {name:?}",
            row.last_name
        );
    }
    let all = stored.clone();
    let exact = |s: &str| ids(all.iter().filter(|c| c.last_name == s));

    for &s in HOSTILE {
        let want = exact(s);
        ensure!(want.len() == 1, "{s:?}");

        let got = t
            .select("*")
            .eq("last_name", s)
            .execute::<Customer>()
            .await?;
        ensure!(ids(&got.rows) == want, "eq {s:?}: {:?}", got.rows);

        let got = t
            .select("*")
            .in_("last_name", [s, "no such name"])
            .execute::<Customer>()
            .await?;
        ensure!(ids(&got.rows) == want, "in {s:?}: {:?}", got.rows);

        let got = t
            .select("*")
            .or(OrGroup::new()
                .cond(Cond::eq("last_name", s))
                .cond(Cond::eq("last_name", "no such name")))
            .execute::<Customer>()
            .await?;
        ensure!(ids(&got.rows) == want, "or eq {s:?}: {:?}", got.rows);

        let got = t
            .select("*")
            .or(OrGroup::new()
                .cond(Cond::in_("last_name", [s]))
                .cond(Cond::and([
                    Cond::eq("first_name", "nobody"),
                    Cond::eq("last_name", s),
                ])))
            .execute::<Customer>()
            .await?;
        ensure!(ids(&got.rows) == want, "or in {s:?}: {:?}", got.rows);

        // Negation leaves every other hostile row.
        let got = t
            .select("id")
            .eq("first_name", "Hostile")
            .not(Cond::eq("last_name", s))
            .count(Count::Exact)
            .limit(0)
            .execute::<serde_json::Value>()
            .await?;
        ensure!(
            got.total == Some(names.len() as u64 - 1),
            "not eq {s:?}: {:?}",
            got.total
        );
        let got = t
            .select("id")
            .eq("first_name", "Hostile")
            .neq("last_name", s)
            .count(Count::Exact)
            .limit(0)
            .execute::<serde_json::Value>()
            .await?;
        ensure!(
            got.total == Some(names.len() as u64 - 1),
            "neq {s:?}: {:?}",
            got.total
        );

        // ilike with escaped text: the row itself, and only rows the escaped pattern allows.
        let pattern = escape_like(s);
        let allowed = ids(all
            .iter()
            .filter(|c| escaped_ilike_matches(&pattern, &c.last_name)));
        for (how, got) in [
            (
                "top-level",
                t.select("*")
                    .ilike("last_name", pattern.clone())
                    .execute::<Customer>()
                    .await?,
            ),
            (
                "in or",
                t.select("*")
                    .or(OrGroup::new()
                        .cond(Cond::ilike("last_name", pattern.clone()))
                        .cond(Cond::eq("last_name", "no such name")))
                    .execute::<Customer>()
                    .await?,
            ),
        ] {
            ensure!(
                ids(&got.rows) == allowed,
                "ilike {how} {s:?} ({pattern:?}): {:?}",
                got.rows
            );
        }
        if s.contains('*') {
            // PostgREST turns every `*` into `%`, so escape_like makes it `_`: one character.
            ensure!(allowed.len() > 1, "{s:?}: the `*` decoy should match too");
        } else {
            ensure!(
                allowed == want,
                "{s:?}: escaped ilike must be exact, allows {allowed:?}"
            );
        }

        // Contains-search: the escaped text between wildcards finds the row itself.
        let got = t
            .select("*")
            .ilike("last_name", format!("*{pattern}*"))
            .execute::<Customer>()
            .await?;
        ensure!(want.is_subset(&ids(&got.rows)), "contains {s:?}");
    }

    // Unescaped wildcards do act as wildcards (what escape_like is for).
    let got = t
        .select("*")
        .like("last_name", "100%")
        .execute::<Customer>()
        .await?;
    ensure!(
        got.rows.iter().any(|c| c.last_name == "100%x"),
        "{:?}",
        got.rows
    );

    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn writes_return_representation() -> Result<()> {
    let stack = Stack::start().await?;
    let db = service(&stack);
    let t = db.from("customers");
    let id = Uuid::new_v4();

    // Upsert the same id twice: one row, the second write wins.
    let first: Customer = t
        .upsert(&json!({"id": id, "first_name": "Ann", "last_name": "Lee", "email": "a@x"}))
        .on_conflict("id")
        .execute_one()
        .await?;
    ensure!(first.id == id && first.email.as_deref() == Some("a@x"));
    let second: Vec<Customer> = t
        .upsert(&[json!({"id": id, "first_name": "Ann", "last_name": "Lee", "email": "b@x"})])
        .on_conflict("id")
        .execute()
        .await?;
    ensure!(second.len() == 1 && second[0].email.as_deref() == Some("b@x"));
    let rows = stack
        .sql(&format!("select email from customers where id = '{id}'"))
        .await?;
    ensure!(rows == vec![json!({"email": "b@x"})], "{rows:?}");

    // ignore-duplicates keeps the stored row and returns nothing for it.
    let ignored: Vec<Customer> = t
        .upsert(&json!({"id": id, "first_name": "Ann", "last_name": "Lee", "email": "c@x"}))
        .on_conflict("id")
        .ignore_duplicates()
        .execute()
        .await?;
    ensure!(ignored.is_empty(), "{ignored:?}");

    // Rows with different keys: missing ones take the column default (id, email).
    let mixed: Vec<Customer> = t
        .insert(&json!([
            {"first_name": "Bo", "last_name": "Mix", "email": "bo@x"},
            {"id": Uuid::new_v4(), "first_name": "Cy", "last_name": "Mix"},
        ]))
        .execute()
        .await?;
    ensure!(mixed.len() == 2);
    ensure!(mixed[0].email.as_deref() == Some("bo@x") && mixed[1].email.is_none());
    ensure!(!mixed[0].id.is_nil());

    // Returned columns can be narrowed.
    let v: serde_json::Value = t
        .insert(&json!({"first_name": "Di", "last_name": "Narrow"}))
        .select("last_name")
        .execute_one()
        .await?;
    ensure!(v == json!({"last_name": "Narrow"}), "{v}");

    // Update returns the changed row; the trigger stamped updated_at.
    let updated: Customer = t
        .update(&json!({"phone": "555-0100"}))
        .eq("id", id)
        .execute_one()
        .await?;
    ensure!(
        updated.phone.as_deref() == Some("555-0100") && updated.email.as_deref() == Some("b@x")
    );
    ensure!(
        updated.updated_at != first.updated_at,
        "updated_at not stamped"
    );
    let missing: Option<Customer> = t
        .update(&json!({"phone": "1"}))
        .eq("id", Uuid::new_v4())
        .execute_opt()
        .await?;
    ensure!(missing.is_none());

    // A single-row update that would touch two rows is refused and rolled back.
    let e = t
        .update(&json!({"phone": "2"}))
        .eq("last_name", "Mix")
        .execute_one::<Customer>()
        .await
        .expect_err("two rows");
    ensure!(e.code() == Some("PGRST116") && !e.is_not_found(), "{e:?}");
    let rows = stack
        .sql("select count(*)::int as n from customers where phone = '2'")
        .await?;
    ensure!(rows == vec![json!({"n": 0})], "not rolled back: {rows:?}");

    // Delete returns what it deleted; afterwards the row is gone.
    let deleted: Vec<Customer> = t.delete().eq("id", id).execute().await?;
    ensure!(
        deleted.len() == 1
            && deleted[0].id == id
            && deleted[0].phone.as_deref() == Some("555-0100")
    );
    ensure!(
        t.select("*")
            .eq("id", id)
            .execute_opt::<Customer>()
            .await?
            .is_none()
    );
    let e = t
        .delete()
        .eq("id", id)
        .execute_one::<Customer>()
        .await
        .expect_err("already deleted");
    ensure!(e.is_not_found() && e.status() == Some(406), "{e:?}");
    let gone: Vec<Customer> = t.delete().in_("last_name", ["Mix"]).execute().await?;
    ensure!(gone.len() == 2);

    // Unfiltered update/delete never leave the client.
    ensure!(matches!(
        t.delete().execute::<Customer>().await,
        Err(RestError::InvalidRequest(_))
    ));
    let before = stack.rest_stats().requests_total;
    ensure!(matches!(
        t.update(&json!({"phone": "x"})).execute::<Customer>().await,
        Err(RestError::InvalidRequest(_))
    ));
    ensure!(
        stack.rest_stats().requests_total == before,
        "an invalid request was sent"
    );

    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn errors_map_to_postgrest_codes() -> Result<()> {
    let stack = Stack::start().await?;
    let db = service(&stack);
    let t = db.from("customers");
    let id = Uuid::new_v4();
    t.insert(&json!({"id": id, "first_name": "Ed", "last_name": "Twin"}))
        .execute::<Customer>()
        .await?;
    t.insert(&json!({"first_name": "Fay", "last_name": "Twin"}))
        .execute::<Customer>()
        .await?;

    // single(): zero rows is 406 PGRST116 and "not found"; two rows is 406 but not "not found".
    let e = t
        .select("*")
        .eq("id", Uuid::new_v4())
        .single()
        .execute::<Customer>()
        .await
        .expect_err("zero rows");
    match &e {
        RestError::Http { status, code, .. } => {
            ensure!(*status == 406 && code == "PGRST116", "{e:?}")
        }
        other => anyhow::bail!("{other:?}"),
    }
    ensure!(e.is_not_found() && !e.is_conflict() && !e.is_unavailable());
    let e = t
        .select("*")
        .eq("last_name", "Twin")
        .execute_one::<Customer>()
        .await
        .expect_err("two rows");
    ensure!(
        e.status() == Some(406) && e.code() == Some("PGRST116") && !e.is_not_found(),
        "{e:?}"
    );
    let e = t
        .select("*")
        .eq("last_name", "Twin")
        .execute_opt::<Customer>()
        .await
        .expect_err("two rows");
    ensure!(e.code() == Some("PGRST116"), "{e:?}");

    // Unknown table: 404 PGRST205.
    let e = db
        .from("no_such_table")
        .select("*")
        .execute::<serde_json::Value>()
        .await
        .expect_err("unknown table");
    ensure!(
        e.status() == Some(404) && e.code() == Some("PGRST205") && e.is_not_found(),
        "{e:?}"
    );

    // Duplicate primary key and unknown foreign key: 409. PostgREST's code is the SQLSTATE
    // (23505, 23503); postrust answers PGRST503 for every 23xxx, with PostgreSQL's details.
    let e = t
        .insert(&json!({"id": id, "first_name": "Ed", "last_name": "Again"}))
        .execute::<Customer>()
        .await
        .expect_err("duplicate");
    ensure!(e.status() == Some(409) && e.is_conflict(), "{e:?}");
    ensure!(matches!(e.code(), Some("23505" | "PGRST503")), "{e:?}");
    ensure!(
        matches!(&e, RestError::Http { details: Some(d), .. } if d.contains("already exists")),
        "{e:?}"
    );
    let e = db
        .from("vehicles")
        .insert(&json!({"customer_id": Uuid::new_v4(), "vin": "1HGCM82633A004352"}))
        .execute::<serde_json::Value>()
        .await
        .expect_err("foreign key");
    ensure!(e.status() == Some(409) && e.is_conflict(), "{e:?}");
    ensure!(matches!(e.code(), Some("23503" | "PGRST503")), "{e:?}");

    // A bad or wrongly signed JWT: 401 PGRST301. The token never shows up in the error.
    for bearer in ["not-a-jwt", &forged_jwt()] {
        let mut cfg = config(&stack, &stack.anon_key);
        cfg.bearer = Some(bearer.to_owned());
        let bad = RestClient::new(cfg)?;
        let e = bad
            .from("customers")
            .select("*")
            .execute::<Customer>()
            .await
            .expect_err("bad jwt");
        ensure!(
            e.status() == Some(401) && e.code() == Some("PGRST301"),
            "{e:?}"
        );
        ensure!(!format!("{e} {e:?}").contains(bearer));
    }

    // The anon key reads through RLS: customers are not public, shops are.
    let anon = RestClient::new(config(&stack, &stack.anon_key))?;
    let p = anon
        .from("customers")
        .select("*")
        .execute::<Customer>()
        .await?;
    ensure!(p.rows.is_empty(), "anon saw customers");

    // The profile headers are really sent: an unknown schema is refused for reads and writes.
    let mut cfg = config(&stack, &stack.service_key);
    cfg.schema = "no_such_schema".into();
    let other = RestClient::new(cfg)?;
    let read = other
        .from("customers")
        .select("*")
        .execute::<Customer>()
        .await
        .map(drop);
    let write = other
        .from("customers")
        .insert(&json!({"first_name": "G", "last_name": "H"}))
        .execute::<Customer>()
        .await
        .map(drop);
    for r in [read, write] {
        let e = r.expect_err("unknown schema");
        ensure!(e.code() == Some("PGRST106"), "{e:?}");
    }

    // An answer over the client's memory bound fails to decode instead of being buffered;
    // narrowing the select reads the same row fine.
    stack
        .sql(&format!(
            "insert into customers (first_name, last_name) values (repeat('x', {}), 'Huge')",
            MAX_RESPONSE_BYTES + 1024
        ))
        .await?;
    let e = t
        .select("*")
        .eq("last_name", "Huge")
        .execute::<Customer>()
        .await
        .expect_err("too big");
    ensure!(
        matches!(&e, RestError::Decode(m) if m.contains("MiB")),
        "{e:?}"
    );
    let v: serde_json::Value = t
        .select("last_name")
        .eq("last_name", "Huge")
        .execute_one()
        .await?;
    ensure!(v == json!({"last_name": "Huge"}), "{v}");

    // A PostgREST parse error is an Http error too, not a transport one.
    let e = t
        .select("*")
        .eq("created_at", "not a timestamp")
        .execute::<Customer>()
        .await
        .expect_err("bad timestamp");
    ensure!(
        e.status() == Some(400) && e.code() == Some("22007"),
        "{e:?}"
    );

    stack.shutdown().await;
    Ok(())
}

/// An HS256 token with the right shape but the wrong secret.
fn forged_jwt() -> String {
    let claims = json!({"role": "service_role", "exp": 4_102_444_800u64});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(b"not-the-stack-secret-not-the-stack-secret"),
    )
    .expect("jwt")
}

/// Records WARN events from the REST client as text.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<String>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Captured {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if *event.metadata().level() != tracing::Level::WARN
            || !event
                .metadata()
                .target()
                .starts_with("collisionos_supabase")
        {
            return;
        }
        struct Fields(String);
        impl tracing::field::Visit for Fields {
            fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                self.0.push_str(&format!("{}={:?} ", f.name(), v));
            }
        }
        let mut fields = Fields(String::new());
        event.record(&mut fields);
        self.0.lock().push(fields.0);
    }
}

#[tokio::test]
async fn outages_timeouts_and_slow_requests() -> Result<()> {
    use tracing_subscriber::layer::SubscriberExt;

    let stack = Stack::start().await?;
    let captured = Captured::default();
    // This test's runtime is single-threaded, so a thread-local subscriber sees every event.
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(captured.clone()));

    let mut cfg = config(&stack, &stack.service_key);
    cfg.timeout = Duration::from_millis(2_000);
    cfg.slow_threshold = Duration::from_millis(400);
    let db = RestClient::new(cfg.clone())?;

    db.from("customers")
        .select("id")
        .limit(1)
        .execute::<serde_json::Value>()
        .await?;
    ensure!(
        captured.0.lock().is_empty(),
        "fast requests logged: {:?}",
        captured.0.lock()
    );

    // Slow but in time: answered, and one warning with method, table, status and no secrets.
    stack.set_rest_faults(RestFaults {
        delay: Duration::from_millis(700),
        ..RestFaults::default()
    });
    db.from("customers")
        .select("id")
        .limit(1)
        .execute::<serde_json::Value>()
        .await?;
    {
        let logs = captured.0.lock();
        ensure!(logs.len() == 1, "{logs:?}");
        let line = &logs[0];
        for part in ["method=GET", "table=customers", "status=200", "elapsed_ms="] {
            ensure!(line.contains(part), "{part} missing from {line}");
        }
        ensure!(
            !line.contains(&stack.service_key) && !line.contains("apikey"),
            "{line}"
        );
    }

    // Slower than the timeout: Timeout.
    stack.set_rest_faults(RestFaults {
        delay: Duration::from_millis(4_000),
        ..RestFaults::default()
    });
    let e = db
        .from("customers")
        .select("id")
        .execute::<serde_json::Value>()
        .await
        .expect_err("timeout");
    ensure!(matches!(e, RestError::Timeout), "{e:?}");
    ensure!(
        captured
            .0
            .lock()
            .iter()
            .any(|l| l.contains("status=timeout"))
    );

    // Injected 503 (PGRST001) and dropped connections: Unavailable.
    stack.set_rest_faults(RestFaults {
        error_rate: 1.0,
        ..RestFaults::default()
    });
    let e = db
        .from("customers")
        .select("id")
        .execute::<serde_json::Value>()
        .await
        .expect_err("503");
    ensure!(e.is_unavailable() && e.to_string().contains("503"), "{e:?}");
    stack.set_rest_faults(RestFaults {
        down: true,
        ..RestFaults::default()
    });
    let e = db
        .from("customers")
        .insert(&json!({"first_name": "A", "last_name": "B"}))
        .execute::<serde_json::Value>()
        .await
        .expect_err("down");
    ensure!(e.is_unavailable(), "{e:?}");

    // Back up: the same client recovers.
    stack.set_rest_faults(RestFaults::default());
    db.from("customers")
        .select("id")
        .execute::<serde_json::Value>()
        .await?;

    // Nobody listening: connection refused is Unavailable.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    cfg.base_url = format!("http://127.0.0.1:{port}").parse()?;
    let nowhere = RestClient::new(cfg)?;
    let e = nowhere
        .from("customers")
        .select("id")
        .execute::<serde_json::Value>()
        .await
        .expect_err("refused");
    ensure!(e.is_unavailable(), "{e:?}");
    for line in captured.0.lock().iter() {
        ensure!(!line.contains(&stack.service_key), "{line}");
    }

    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn ping_proves_the_api_answers() -> Result<()> {
    let stack = Stack::start().await?;
    let mut cfg = config(&stack, &stack.service_key);
    cfg.timeout = Duration::from_millis(1_000);
    let db = RestClient::new(cfg.clone())?;

    let before = stack.rest_stats().requests_total;
    let latency = db.ping().await?;
    ensure!(
        latency > Duration::ZERO && latency < Duration::from_secs(1),
        "{latency:?}"
    );
    ensure!(
        stack.rest_stats().requests_total == before + 1,
        "ping did not reach the gateway"
    );

    // A key the API refuses is an answer, not an outage.
    let mut bad = cfg.clone();
    bad.bearer = Some("not-a-jwt".into());
    let e = RestClient::new(bad)?.ping().await.expect_err("bad jwt");
    ensure!(e.status() == Some(401) && !e.is_unavailable(), "{e:?}");

    // No answer in time, injected 503s, dropped connections: all unavailable.
    for faults in [
        RestFaults {
            delay: Duration::from_millis(3_000),
            ..RestFaults::default()
        },
        RestFaults {
            error_rate: 1.0,
            ..RestFaults::default()
        },
        RestFaults {
            down: true,
            ..RestFaults::default()
        },
    ] {
        stack.set_rest_faults(faults);
        let e = db.ping().await.expect_err("fault");
        ensure!(e.is_unavailable(), "{faults:?}: {e:?}");
    }
    stack.set_rest_faults(RestFaults::default());
    db.ping().await?;

    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    cfg.base_url = format!("http://127.0.0.1:{port}").parse()?;
    let e = RestClient::new(cfg)?.ping().await.expect_err("refused");
    ensure!(e.is_unavailable(), "{e:?}");

    stack.shutdown().await;
    Ok(())
}
