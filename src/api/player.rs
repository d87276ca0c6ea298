//! `GET /player/{id}`: a small page that plays the video with hls.js and shows the job's
//! progress while tiers are still encoding. The page itself is `player.html`: it polls the
//! status every 2 s, starts playing as soon as the video is playable, reloads the master
//! playlist when a new tier is published, and keeps the buffers within the product's limits.

use axum::extract::{Path, State};
use axum::response::Html;
use serde_json::json;

use super::{ApiError, AppState};
use crate::jobs::validate_video_id;

const TEMPLATE: &str = include_str!("player.html");

pub async fn player(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Html<String>, ApiError> {
    validate_video_id(&id).map_err(ApiError::BadRequest)?;
    Ok(Html(page(
        &id,
        &state.public_base_url,
        state
            .settings
            .hls_js_url
            .as_deref()
            .unwrap_or(&super::assets::hls_js_path()),
        state.settings.access.open_status,
    )))
}

/// The page for video `id`; `base` is the public base URL of the output store and
/// `hls_js_url` where the page loads hls.js from. With the status route closed to the
/// public (`open_status` false), the page follows status.json in the output store instead.
pub fn page(id: &str, base: &str, hls_js_url: &str, open_status: bool) -> String {
    let base = base.trim_end_matches('/');
    let status_url = match open_status {
        true => format!("../video-status/{id}"),
        false => format!("{base}/{}", crate::jobs::publish::key(id, "status.json")),
    };
    let config = json!({
        "id": id,
        "base": base,
        "hlsJsUrl": hls_js_url,
        "statusUrl": status_url,
        "statusInStore": !open_status,
    });
    fill(
        TEMPLATE,
        &[
            ("title", &escape_html(id)),
            ("config", &script_json(&config)),
        ],
    )
}

/// `template` with each `{{name}}` replaced by its value, in one pass (a value is never
/// scanned for markers).
fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len() + 512);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find("}}").expect("a template marker is closed");
        let name = &after[..end];
        let (_, value) = values
            .iter()
            .find(|(key, _)| *key == name)
            .unwrap_or_else(|| panic!("no value for template marker `{name}`"));
        out.push_str(value);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

/// Text for HTML element content or a quoted attribute value.
pub(super) fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// JSON safe inside a `<script>` element: `<`, `>` and `&` (which JSON only has inside strings)
/// as `\u` escapes, so no `</script>` or `<!--` can appear.
fn script_json(value: &serde_json::Value) -> String {
    value
        .to_string()
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}
