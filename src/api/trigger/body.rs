//! The three bodies `POST /transcode` takes, told apart by their members and checked strictly:
//! a direct trigger, a Pub/Sub push envelope, and a GCS object resource (Eventarc's CloudEvent
//! body); each becomes a [`Trigger`], or an event of no interest to acknowledge.

use axum::http::HeaderMap;
use base64::Engine as _;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::api::ApiError;
use crate::jobs::validate_video_id;
use crate::storage::validate_key;

const FINALIZED_EVENT: &str = "google.cloud.storage.object.v1.finalized";

/// A job request, whatever shape it came in.
#[derive(Debug, PartialEq)]
pub struct Trigger {
    pub video_id: String,
    pub input_bucket: Option<String>,
    /// A key in the input store, or (when `names_object`) the bucket's whole object name.
    pub input_path: String,
    pub output_bucket: Option<String>,
    /// True for object events: their name includes the input store's prefix, if it has one.
    pub names_object: bool,
}

/// What a request asks for: a job, or nothing (an event of no interest, acknowledged so the
/// sender does not redeliver it).
#[derive(Debug, PartialEq)]
pub enum Parsed {
    Job(Trigger),
    Ignored(String),
}

/// What a client sends; a member it does not have is refused (a misspelt `outputbucket` would
/// otherwise pass unnoticed).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct DirectTrigger {
    #[serde(default, deserialize_with = "present")]
    video_id: Option<String>,
    input_bucket: Option<String>,
    input_path: String,
    output_bucket: Option<String>,
}

/// The parts of a GCS object resource we use (the others are not read).
#[derive(Deserialize)]
struct ObjectResource {
    bucket: String,
    name: String,
    #[serde(default, deserialize_with = "generation")]
    generation: Option<String>,
}

/// A Pub/Sub push request; members that are not read are still type-checked, as the API
/// document describes them.
#[derive(Deserialize)]
struct PushEnvelope {
    message: PushMessage,
    #[serde(rename = "subscription", default, deserialize_with = "present")]
    _subscription: Option<String>,
}

#[derive(Deserialize)]
struct PushMessage {
    #[serde(default, deserialize_with = "present")]
    data: Option<String>,
    #[serde(default)]
    attributes: std::collections::HashMap<String, String>,
    #[serde(rename = "messageId", default, deserialize_with = "present")]
    _message_id: Option<String>,
    #[serde(rename = "publishTime", default, deserialize_with = "date_time")]
    _publish_time: Option<String>,
}

/// An optional member that, when present, holds a `T` (null is refused, not taken as absent).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// An RFC 3339 date-time string (the document's `format: date-time`).
fn date_time<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let text = String::deserialize(d)?;
    chrono::DateTime::parse_from_rfc3339(&text).map_err(|e| {
        serde::de::Error::custom(format!("`{text}` is not an RFC 3339 date-time: {e}"))
    })?;
    Ok(Some(text))
}

/// An object generation: a non-negative integer, or its decimal digits as Cloud Storage sends
/// it; kept as digits (`7` and `"7"` name the same generation).
fn generation<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let value = Value::deserialize(d)?;
    let digits = match &value {
        Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            Some(s.clone())
        }
        Value::Number(n) => match (n.as_u64(), n.as_f64()) {
            (Some(n), _) => Some(n.to_string()),
            (None, Some(f)) if f >= 0.0 && f.fract() == 0.0 => Some(format!("{f:.0}")),
            _ => None,
        },
        _ => None,
    };
    digits.map(Some).ok_or_else(|| {
        serde::de::Error::custom(format!(
            "generation {value} is not a non-negative integer or its digits"
        ))
    })
}

/// Recognises the three bodies by their members (`message`: Pub/Sub push, `inputPath`: direct
/// trigger, else a GCS object resource) and checks each strictly. A `ce-type` header does not
/// change how the body is read: an Eventarc event of another type is ignored once its body has
/// been checked.
pub fn parse(headers: &HeaderMap, body: &[u8]) -> Result<Parsed, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("the body is not JSON: {e}")))?;
    let parsed = if value.get("message").is_some() {
        let envelope: PushEnvelope = serde_json::from_value(value)
            .map_err(|e| ApiError::BadRequest(format!("not a Pub/Sub push envelope: {e}")))?;
        from_push(envelope.message)?
    } else if value.get("inputPath").is_some() {
        Parsed::Job(from_direct(value)?)
    } else {
        let object: ObjectResource = serde_json::from_value(value).map_err(|e| {
            ApiError::BadRequest(format!(
                "expected a direct trigger {{inputPath, …}}, a Pub/Sub push {{message, …}} \
                 or a GCS object {{bucket, name, …}}: {e}"
            ))
        })?;
        Parsed::Job(from_object(object))
    };
    if let Some(kind) = headers.get("ce-type") {
        let kind = String::from_utf8_lossy(kind.as_bytes());
        if kind != FINALIZED_EVENT {
            // Ignored only once the body is known good, as the document promises.
            if let Parsed::Job(trigger) = &parsed {
                validate_video_id(&trigger.video_id).map_err(ApiError::BadRequest)?;
                validate_key(&trigger.input_path)?;
            }
            return Ok(Parsed::Ignored(format!("CloudEvent type `{kind}`")));
        }
    }
    Ok(parsed)
}

fn from_direct(value: Value) -> Result<Trigger, ApiError> {
    let direct: DirectTrigger = serde_json::from_value(value).map_err(|e| {
        ApiError::BadRequest(format!(
            "expected {{videoId, inputBucket, inputPath, outputBucket}}: {e}"
        ))
    })?;
    let video_id = match direct.video_id {
        Some(id) => id,
        None => derived_id(direct.input_bucket.as_deref(), &direct.input_path, None),
    };
    Ok(Trigger {
        video_id,
        input_bucket: direct.input_bucket,
        input_path: direct.input_path,
        output_bucket: direct.output_bucket,
        names_object: false,
    })
}

/// A push names its object in `data` (a direct trigger or a GCS object, checked like a body),
/// else in its attributes. A message that names none is acknowledged and ignored: redelivering
/// it would change nothing.
fn from_push(message: PushMessage) -> Result<Parsed, ApiError> {
    let data = message.data.as_deref().unwrap_or_default();
    if !is_base64(data) {
        return Err(ApiError::BadRequest(
            "message.data is not base64 (standard alphabet, padded)".into(),
        ));
    }
    if let Some(kind) = message.attributes.get("eventType")
        && kind != "OBJECT_FINALIZE"
    {
        return Ok(Parsed::Ignored(format!("storage notification `{kind}`")));
    }
    let content = base64::engine::general_purpose::STANDARD
        .decode(data)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok());
    match content {
        Some(value) if value.get("inputPath").is_some() => {
            return Ok(Parsed::Job(from_direct(value)?));
        }
        Some(value) if value.get("bucket").is_some() && value.get("name").is_some() => {
            let object: ObjectResource = serde_json::from_value(value).map_err(|e| {
                ApiError::BadRequest(format!("message.data is not a GCS object: {e}"))
            })?;
            return Ok(Parsed::Job(from_object(object)));
        }
        _ => {}
    }
    // A notification without a usable payload: the object is named by attributes.
    let (Some(bucket), Some(name)) = (
        message.attributes.get("bucketId"),
        message.attributes.get("objectId"),
    ) else {
        return Ok(Parsed::Ignored(
            "the Pub/Sub message names no object (no trigger or GCS object in data, \
             no bucketId/objectId attributes)"
                .into(),
        ));
    };
    Ok(Parsed::Job(from_object(ObjectResource {
        bucket: bucket.clone(),
        name: name.clone(),
        generation: message.attributes.get("objectGeneration").cloned(),
    })))
}

/// Whether `data` is standard, padded base64 (the document's pattern for `message.data`);
/// empty counts, as no data.
fn is_base64(data: &str) -> bool {
    let body = data.trim_end_matches('=');
    data.len().is_multiple_of(4)
        && data.len() - body.len() <= 2
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

fn from_object(object: ObjectResource) -> Trigger {
    Trigger {
        video_id: derived_id(
            Some(&object.bucket),
            &object.name,
            object.generation.as_deref(),
        ),
        input_bucket: Some(object.bucket),
        input_path: object.name,
        output_bucket: None,
        names_object: true,
    }
}

/// The video id for an object: the id `/upload` put in front of the file name
/// (`pending/<id>_<name>`), else a UUID derived from the object's bucket, name and generation,
/// so every redelivery of the same event names the same video.
fn derived_id(bucket: Option<&str>, name: &str, generation: Option<&str>) -> String {
    let file = name.rsplit('/').next().unwrap_or(name);
    if let Some((prefix, _)) = file.split_once('_')
        && uuid::Uuid::parse_str(prefix).is_ok()
    {
        return prefix.to_string();
    }
    let identity = format!(
        "gs://{}/{name}#{}",
        bucket.unwrap_or(""),
        generation.unwrap_or("")
    );
    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, identity.as_bytes()).to_string()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn job(parsed: Parsed) -> Trigger {
        match parsed {
            Parsed::Job(t) => t,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn three_shapes_name_the_same_object() {
        let id = "0b7c61a8-3f55-4cc2-9a0c-4bde6e3f2a10";
        let name = format!("pending/{id}_clip.mp4");
        let direct =
            json!({"videoId": id, "inputBucket": "in", "inputPath": name, "outputBucket": "cdn"});
        let direct = job(parse(&HeaderMap::new(), direct.to_string().as_bytes()).unwrap());
        assert_eq!(direct.video_id, id);
        assert_eq!(direct.output_bucket.as_deref(), Some("cdn"));

        let object =
            json!({"bucket": "in", "name": name, "generation": "1700000000000001", "size": "12"});
        let data = base64::engine::general_purpose::STANDARD.encode(object.to_string());
        let push = json!({"message": {"data": data, "attributes": {"eventType": "OBJECT_FINALIZE"}, "messageId": "1"}, "subscription": "projects/p/subscriptions/s"});
        let push = job(parse(&HeaderMap::new(), push.to_string().as_bytes()).unwrap());
        assert_eq!(
            (push.video_id.as_str(), push.input_path.as_str()),
            (id, name.as_str())
        );

        let mut headers = HeaderMap::new();
        headers.insert("ce-type", FINALIZED_EVENT.parse().unwrap());
        headers.insert("ce-subject", format!("objects/{name}").parse().unwrap());
        let event = job(parse(&headers, object.to_string().as_bytes()).unwrap());
        assert_eq!(event, push);
        assert_eq!(event.input_bucket.as_deref(), Some("in"));
    }

    #[test]
    fn foreign_objects_get_a_stable_id_per_generation() {
        let object = |generation: u64| {
            let body =
                json!({"bucket": "in", "name": "phone/IMG_0001.MOV", "generation": generation});
            job(parse(&HeaderMap::new(), json!({"message": {"data": base64::engine::general_purpose::STANDARD.encode(body.to_string())}}).to_string().as_bytes()).unwrap())
        };
        assert_eq!(object(1).video_id, object(1).video_id);
        assert_ne!(object(1).video_id, object(2).video_id);
        assert!(validate_video_id(&object(1).video_id).is_ok());
    }

    #[test]
    fn other_events_are_acknowledged_and_ignored_and_garbage_is_refused() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "ce-type",
            "google.cloud.storage.object.v1.deleted".parse().unwrap(),
        );
        let object = json!({"bucket": "in", "name": "x.mp4"}).to_string();
        assert!(matches!(
            parse(&headers, object.as_bytes()).unwrap(),
            Parsed::Ignored(_)
        ));
        // The body is checked before the event is ignored.
        assert!(parse(&headers, b"{}").is_err());
        let deleted = json!({"message": {"attributes": {"eventType": "OBJECT_DELETE", "bucketId": "in", "objectId": "x"}}});
        assert!(matches!(
            parse(&HeaderMap::new(), deleted.to_string().as_bytes()).unwrap(),
            Parsed::Ignored(_)
        ));
        for bad in [&b"not json"[..], b"{}", br#"{"message": {"data": "!!"}}"#] {
            assert!(parse(&HeaderMap::new(), bad).is_err());
        }
    }
}
