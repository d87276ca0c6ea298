//! The event shapes Google delivers to `/transcode`: a GCS object resource, a Pub/Sub push
//! envelope around it, and a binary-mode CloudEvent (Eventarc).

use base64::Engine as _;
use serde_json::{Value, json};

use super::{Answer, Api};

/// A GCS object resource as notifications carry it.
pub fn gcs_object(bucket: &str, name: &str, generation: &str) -> Value {
    json!({
        "kind": "storage#object",
        "bucket": bucket,
        "name": name,
        "generation": generation,
        "contentType": "video/mp4",
        "size": "1234",
    })
}

/// A Pub/Sub push envelope carrying a GCS notification for `object`.
pub fn pubsub_push(object: &Value, event_type: &str) -> Value {
    let data = base64::engine::general_purpose::STANDARD.encode(object.to_string());
    json!({
        "message": {
            "data": data,
            "attributes": {
                "eventType": event_type,
                "bucketId": object["bucket"],
                "objectId": object["name"],
                "objectGeneration": object["generation"],
                "payloadFormat": "JSON_API_V1",
            },
            "messageId": "4242",
            "publishTime": "2026-01-01T00:00:00Z",
        },
        "subscription": "projects/p/subscriptions/transcode",
    })
}

/// Sends `object` as a binary-mode CloudEvent of type `kind` (as Eventarc does).
pub async fn cloud_event(api: &Api, kind: &str, object: &Value) -> Answer {
    let subject = format!("objects/{}", object["name"].as_str().unwrap());
    let source = format!(
        "//storage.googleapis.com/projects/_/buckets/{}",
        object["bucket"].as_str().unwrap()
    );
    let headers = [
        ("ce-specversion", "1.0"),
        ("ce-type", kind),
        ("ce-source", source.as_str()),
        ("ce-subject", subject.as_str()),
        ("ce-id", "8123456789"),
        ("ce-time", "2026-01-01T00:00:00.000Z"),
    ];
    api.trigger(object, &headers).await
}
