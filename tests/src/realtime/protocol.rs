//! Phoenix wire format: the two serializers Realtime accepts, chosen by `vsn` at the handshake.
//!
//! - `1.0.0` (`Phoenix.Socket.V1.JSONSerializer`): JSON objects. Inbound
//!   `{topic, event, payload, ref, join_ref?}`; outbound `{topic, event, payload, ref}` — Phoenix's
//!   V1 encoder writes no `join_ref`, and neither do we.
//! - `2.0.0` (`RealtimeWeb.Socket.V2Serializer`): JSON arrays `[join_ref, ref, topic, event, payload]`
//!   both ways. Binary frames carry only user broadcasts, which the stand-in does not serve.
//!
//! Outbound frames are built as text directly so a change's `data` (JSON text made by
//! PostgreSQL) is sent byte for byte, numbers such as `12.50` included.

use serde_json::Value;

/// The serializer of one socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vsn {
    /// `vsn=1.0.0` (also the default when `vsn` is absent, as in Phoenix).
    V1,
    /// `vsn=2.0.0`, realtime-js's default.
    V2,
}

impl Vsn {
    /// Phoenix matches `~> 1.0.0` and `~> 2.0.0`.
    pub fn parse(vsn: Option<&str>) -> Option<Vsn> {
        match vsn {
            None => Some(Vsn::V1),
            Some(v) if v == "1.0.0" || v.starts_with("1.0.") => Some(Vsn::V1),
            Some(v) if v == "2.0.0" || v.starts_with("2.0.") => Some(Vsn::V2),
            Some(_) => None,
        }
    }
}

/// One inbound message.
#[derive(Debug, Clone, PartialEq)]
pub struct Inbound {
    pub join_ref: Option<String>,
    pub ref_: Option<String>,
    pub topic: String,
    pub event: String,
    pub payload: Value,
}

/// Refs arrive as strings from realtime-js; Phoenix tolerates numbers and null.
fn ref_of(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// Decodes a text frame; `None` when it is not a Phoenix message (Phoenix closes the socket on
/// undecodable frames; we drop them and count nothing).
pub fn decode(vsn: Vsn, text: &str) -> Option<Inbound> {
    let value: Value = serde_json::from_str(text).ok()?;
    match (vsn, value) {
        (Vsn::V2, Value::Array(mut parts)) if parts.len() == 5 => {
            let payload = parts.pop()?;
            let event = parts.pop()?.as_str()?.to_owned();
            let topic = parts.pop()?.as_str()?.to_owned();
            let ref_ = ref_of(&parts.pop()?);
            let join_ref = ref_of(&parts.pop()?);
            Some(Inbound {
                join_ref,
                ref_,
                topic,
                event,
                payload,
            })
        }
        (Vsn::V1, Value::Object(mut map)) => Some(Inbound {
            join_ref: map.get("join_ref").and_then(ref_of),
            ref_: map.get("ref").and_then(ref_of),
            topic: map.get("topic")?.as_str()?.to_owned(),
            event: map.get("event")?.as_str()?.to_owned(),
            payload: map.remove("payload").unwrap_or(Value::Null),
        }),
        _ => None,
    }
}

fn json_str(s: &str) -> String {
    Value::String(s.to_owned()).to_string()
}

fn json_opt(s: Option<&str>) -> String {
    s.map_or_else(|| "null".to_owned(), json_str)
}

/// Encodes one outbound message; `payload` must be JSON text.
pub fn encode(
    vsn: Vsn,
    join_ref: Option<&str>,
    ref_: Option<&str>,
    topic: &str,
    event: &str,
    payload: &str,
) -> String {
    match vsn {
        Vsn::V2 => format!(
            "[{},{},{},{},{}]",
            json_opt(join_ref),
            json_opt(ref_),
            json_str(topic),
            json_str(event),
            payload
        ),
        Vsn::V1 => format!(
            "{{\"topic\":{},\"event\":{},\"payload\":{},\"ref\":{}}}",
            json_str(topic),
            json_str(event),
            payload,
            json_opt(ref_)
        ),
    }
}

/// A `phx_reply` with `{status, response}`.
pub fn reply(
    vsn: Vsn,
    join_ref: Option<&str>,
    ref_: Option<&str>,
    topic: &str,
    ok: bool,
    response: &Value,
) -> String {
    let payload = serde_json::json!({
        "status": if ok { "ok" } else { "error" },
        "response": response,
    });
    encode(
        vsn,
        join_ref,
        ref_,
        topic,
        "phx_reply",
        &payload.to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn v2_round_trip_and_shape() {
        let m = decode(Vsn::V2, r#"["1","2","realtime:a","phx_join",{"x":1}]"#).unwrap();
        assert_eq!(m.join_ref.as_deref(), Some("1"));
        assert_eq!(m.ref_.as_deref(), Some("2"));
        assert_eq!(m.topic, "realtime:a");
        assert_eq!(m.event, "phx_join");
        assert_eq!(m.payload, json!({"x": 1}));
        let out = encode(
            Vsn::V2,
            None,
            None,
            "realtime:a",
            "postgres_changes",
            r#"{"a":12.50}"#,
        );
        assert_eq!(
            out,
            r#"[null,null,"realtime:a","postgres_changes",{"a":12.50}]"#
        );
        assert!(
            decode(
                Vsn::V2,
                r#"{"topic":"x","event":"y","payload":{},"ref":"1"}"#
            )
            .is_none()
        );
    }

    #[test]
    fn v1_has_no_join_ref_on_the_way_out() {
        let m = decode(
            Vsn::V1,
            r#"{"topic":"phoenix","event":"heartbeat","payload":{},"ref":7}"#,
        )
        .unwrap();
        assert_eq!(m.ref_.as_deref(), Some("7"));
        assert_eq!(m.join_ref, None);
        let out: Value = serde_json::from_str(&reply(
            Vsn::V1,
            Some("1"),
            Some("7"),
            "phoenix",
            true,
            &json!({}),
        ))
        .unwrap();
        assert_eq!(
            out,
            json!({"topic":"phoenix","event":"phx_reply","payload":{"status":"ok","response":{}},"ref":"7"})
        );
    }

    #[test]
    fn vsn_negotiation() {
        assert_eq!(Vsn::parse(None), Some(Vsn::V1));
        assert_eq!(Vsn::parse(Some("1.0.0")), Some(Vsn::V1));
        assert_eq!(Vsn::parse(Some("2.0.0")), Some(Vsn::V2));
        assert_eq!(Vsn::parse(Some("3.0.0")), None);
    }
}
