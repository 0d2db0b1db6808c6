//! Phoenix frames and the two serializers Supabase Realtime speaks.
//!
//! - `1.0.0`: a JSON object `{topic, event, payload, ref, join_ref}` per text frame.
//! - `2.0.0`: a JSON array `[join_ref, ref, topic, event, payload]` per text frame (binary frames
//!   are only used for user broadcast, which this client does not join).
//!
//! Decoding accepts either shape whatever was negotiated (the first byte tells them apart), so a
//! server that answers in the other serializer is still understood.

use serde::Serialize;
use serde_json::Value;

/// The `vsn` query parameter of the socket URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub enum Serializer {
    /// `vsn=1.0.0`, JSON objects.
    #[serde(rename = "1.0.0")]
    V1,
    /// `vsn=2.0.0`, JSON arrays (realtime-js's default since 2.91).
    #[default]
    #[serde(rename = "2.0.0")]
    V2,
}

impl Serializer {
    /// The value of the socket URL's `vsn` parameter.
    pub fn vsn(self) -> &'static str {
        match self {
            Serializer::V1 => "1.0.0",
            Serializer::V2 => "2.0.0",
        }
    }
}

/// One Phoenix message.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// Ref of the channel join this message belongs to (`None` for heartbeats and changes).
    pub join_ref: Option<String>,
    /// Ref of the push; replies carry the ref of the push they answer.
    pub msg_ref: Option<String>,
    pub topic: String,
    pub event: String,
    pub payload: Value,
}

/// Why a text frame could not be read as a Phoenix message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("not JSON: {0}")]
    NotJson(String),
    #[error("not a Phoenix message: {0}")]
    Shape(&'static str),
}

#[derive(Serialize)]
struct V1<'a> {
    topic: &'a str,
    event: &'a str,
    payload: &'a Value,
    #[serde(rename = "ref")]
    msg_ref: &'a Option<String>,
    join_ref: &'a Option<String>,
}

impl Frame {
    pub fn new(topic: impl Into<String>, event: impl Into<String>, payload: Value) -> Self {
        Self {
            join_ref: None,
            msg_ref: None,
            topic: topic.into(),
            event: event.into(),
            payload,
        }
    }

    /// The frame as the text the serializer sends.
    pub fn encode(&self, serializer: Serializer) -> String {
        let out = match serializer {
            Serializer::V1 => serde_json::to_string(&V1 {
                topic: &self.topic,
                event: &self.event,
                payload: &self.payload,
                msg_ref: &self.msg_ref,
                join_ref: &self.join_ref,
            }),
            Serializer::V2 => serde_json::to_string(&(
                &self.join_ref,
                &self.msg_ref,
                &self.topic,
                &self.event,
                &self.payload,
            )),
        };
        // Serializing strings and an already-built `Value` cannot fail.
        out.unwrap_or_default()
    }

    /// Reads a text frame in either serializer.
    pub fn decode(text: &str) -> Result<Frame, FrameError> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| FrameError::NotJson(e.to_string()))?;
        match value {
            Value::Array(items) => {
                let [join_ref, msg_ref, topic, event, payload]: [Value; 5] = items
                    .try_into()
                    .map_err(|_| FrameError::Shape("array without 5 elements"))?;
                Ok(Frame {
                    join_ref: reference(join_ref)?,
                    msg_ref: reference(msg_ref)?,
                    topic: string(topic, "topic is not a string")?,
                    event: string(event, "event is not a string")?,
                    payload,
                })
            }
            Value::Object(mut map) => Ok(Frame {
                join_ref: reference(map.remove("join_ref").unwrap_or(Value::Null))?,
                msg_ref: reference(map.remove("ref").unwrap_or(Value::Null))?,
                topic: string(
                    map.remove("topic").unwrap_or(Value::Null),
                    "topic is missing or not a string",
                )?,
                event: string(
                    map.remove("event").unwrap_or(Value::Null),
                    "event is missing or not a string",
                )?,
                payload: map.remove("payload").unwrap_or(Value::Null),
            }),
            _ => Err(FrameError::Shape("neither an object nor an array")),
        }
    }
}

fn string(v: Value, problem: &'static str) -> Result<String, FrameError> {
    match v {
        Value::String(s) => Ok(s),
        _ => Err(FrameError::Shape(problem)),
    }
}

/// Refs are stringified counters; some servers send numbers, which compare as their text.
fn reference(v: Value) -> Result<Option<String>, FrameError> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s)),
        Value::Number(n) => Ok(Some(n.to_string())),
        _ => Err(FrameError::Shape(
            "ref is neither a string, a number nor null",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Frame {
        Frame {
            join_ref: Some("1".into()),
            msg_ref: Some("2".into()),
            topic: "realtime:jobs".into(),
            event: "phx_join".into(),
            payload: json!({"config": {"private": false}, "access_token": "t"}),
        }
    }

    #[test]
    fn v2_is_the_five_element_array() {
        let text = sample().encode(Serializer::V2);
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v,
            json!(["1", "2", "realtime:jobs", "phx_join", {"config": {"private": false}, "access_token": "t"}])
        );
        assert_eq!(Frame::decode(&text).unwrap(), sample());
    }

    #[test]
    fn v1_is_the_object() {
        let text = sample().encode(Serializer::V1);
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v,
            json!({"topic": "realtime:jobs", "event": "phx_join", "ref": "2", "join_ref": "1",
                   "payload": {"config": {"private": false}, "access_token": "t"}})
        );
        assert_eq!(Frame::decode(&text).unwrap(), sample());
    }

    #[test]
    fn null_refs_and_numeric_refs_decode() {
        let f = Frame::decode(r#"[null,null,"phoenix","phx_reply",{"status":"ok"}]"#).unwrap();
        assert_eq!((f.join_ref, f.msg_ref), (None, None));
        let f = Frame::decode(r#"{"topic":"t","event":"e","payload":{},"ref":7}"#).unwrap();
        assert_eq!(f.msg_ref.as_deref(), Some("7"));
        assert_eq!(f.join_ref, None);
        let hb = Frame::new("phoenix", "heartbeat", json!({}));
        assert_eq!(
            hb.encode(Serializer::V2),
            r#"[null,null,"phoenix","heartbeat",{}]"#
        );
    }

    #[test]
    fn malformed_frames_are_errors_not_panics() {
        for text in [
            "",
            "not json",
            "42",
            "\"text\"",
            "[]",
            "[1,2,3,4]",
            "[null,null,5,\"e\",{}]",
            "[null,null,\"t\",null,{}]",
            "[{},null,\"t\",\"e\",{}]",
            "{\"event\":\"e\"}",
            "{\"topic\":\"t\"}",
            "{\"topic\":\"t\",\"event\":\"e\",\"ref\":[1]}",
            "[null,null,\"t\",\"e\",{},6]",
            "{\"topic\":",
        ] {
            assert!(Frame::decode(text).is_err(), "{text:?} must be refused");
        }
    }

    #[test]
    fn vsn_strings() {
        assert_eq!(Serializer::V1.vsn(), "1.0.0");
        assert_eq!(Serializer::V2.vsn(), "2.0.0");
        assert_eq!(Serializer::default(), Serializer::V2);
    }
}
