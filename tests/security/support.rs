//! Helpers the security tests share: the JSON error body, requests carrying an
//! `Authorization` header, and a tiny clip.

use std::path::PathBuf;

use reqwest::multipart::Form;
use serde_json::{Value, json};

use crate::common::*;

/// Asserts an error answer: the status code and the body `{"error": {"code", "message"}}`
/// with a message; returns the message.
pub fn assert_error(answer: &Answer, status: u16, code: &str) -> String {
    assert_eq!(answer.code, status, "{:?}", answer.body);
    assert_eq!(answer.body["error"]["code"], code, "{:?}", answer.body);
    let message = answer.body["error"]["message"].as_str().unwrap_or_default();
    assert!(!message.trim().is_empty(), "no message: {:?}", answer.body);
    assert_eq!(answer.body.as_object().map(|o| o.len()), Some(1));
    message.to_string()
}

/// A 401 with the JSON body and `WWW-Authenticate: Bearer …`; returns the message.
pub fn assert_unauthorized(answer: &Answer) -> String {
    let message = assert_error(answer, 401, "unauthorized");
    let challenge = answer.headers["www-authenticate"].to_str().unwrap();
    assert!(challenge.starts_with("Bearer"), "{challenge}");
    message
}

/// A tiny clip (one 144p rendition plus audio): the cheapest real encode.
pub fn small_clip(ws: &Workspace, name: &str) -> PathBuf {
    ws.clip(name, 256, 144, 2.0, true)
}

/// The direct trigger body.
pub fn direct_trigger(video_id: &str, input_path: &str) -> Value {
    json!({"videoId": video_id, "inputPath": input_path})
}

/// `Authorization` header values: `Bearer <token>`.
pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// `POST /transcode` of `body` with an optional `Authorization` value.
pub async fn trigger_as(api: &Api, authorization: Option<&str>, body: &Value) -> Answer {
    let mut request = api
        .http
        .post(api.url("/transcode"))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    Answer::read(request.send().await.unwrap()).await
}

/// `POST /upload` of `form` with an optional `Authorization` value; `Err` when the client got
/// no answer at all.
pub async fn upload_as(
    api: &Api,
    authorization: Option<&str>,
    form: Form,
) -> Result<Answer, reqwest::Error> {
    let mut request = api.http.post(api.url("/upload")).multipart(form);
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    Answer::try_read(request.send().await?).await
}

/// `GET path` with an optional `Authorization` value.
pub async fn get_as(api: &Api, authorization: Option<&str>, path: &str) -> Answer {
    let mut request = api.http.get(api.url(path));
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    Answer::read(request.send().await.unwrap()).await
}
