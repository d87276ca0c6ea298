//! A unit as Pub/Sub push delivers it: `{"message":{"data":"<base64 JSON>","attributes":…},
//! "subscription":…,"deliveryAttempt":N}`. Nothing in it is trusted: the unit is checked
//! against the same rules as a trigger before anything runs.

use base64::Engine as _;
use serde::Deserialize;

use crate::jobs::validate_video_id;
use crate::jobs::work::WorkUnit;
use crate::storage::validate_key;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Push {
    message: Message,
    #[serde(default)]
    delivery_attempt: Option<u32>,
}

#[derive(Deserialize)]
struct Message {
    data: String,
}

/// The unit a push delivery carries and its delivery attempt (set when the subscription has a
/// dead-letter policy), or why it is not one.
pub fn unit_of(body: &[u8]) -> Result<(WorkUnit, Option<u32>), String> {
    let push: Push =
        serde_json::from_slice(body).map_err(|e| format!("not a Pub/Sub push delivery: {e}"))?;
    let data = base64::engine::general_purpose::STANDARD
        .decode(push.message.data.as_bytes())
        .map_err(|e| format!("message.data is not base64: {e}"))?;
    let unit: WorkUnit =
        serde_json::from_slice(&data).map_err(|e| format!("message.data is not a unit: {e}"))?;
    validate_video_id(&unit.video_id)?;
    validate_key(&unit.input).map_err(|e| e.to_string())?;
    let sane = !unit.members.is_empty()
        && unit.parts >= 1
        && unit.range.index < unit.parts
        && unit.range.start < unit.range.end;
    if !sane {
        return Err("the unit names no rendition or an impossible chunk".into());
    }
    Ok((unit, push.delivery_attempt))
}
