//! Store names and bucket specs, without a bucket.

use super::*;

#[tokio::test]
async fn object_names_map_to_keys_under_the_prefix_only() {
    let options = GcsOptions {
        endpoint: Some("http://127.0.0.1:9".into()),
        retry_budget: Duration::from_secs(1),
    };
    let store = GcsStore::new("gs://vt-in/uploads", &options).await.unwrap();
    let key = store.key_of_object("uploads/pending/a.mp4");
    assert_eq!(key.as_deref(), Some("pending/a.mp4"));
    for outside in ["pending/a.mp4", "uploadsx/a.mp4", "uploads/", "uploads"] {
        assert_eq!(store.key_of_object(outside), None, "{outside}");
    }
    let whole = GcsStore::new("gs://vt-in", &options).await.unwrap();
    let key = whole.key_of_object("uploads/pending/a.mp4");
    assert_eq!(key.as_deref(), Some("uploads/pending/a.mp4"));
}

#[test]
fn bucket_specs_parse_and_reject_garbage() {
    assert_eq!(
        parse_spec("gs://cdn").unwrap(),
        ("cdn".into(), String::new())
    );
    assert_eq!(
        parse_spec("gs://my-cdn/media/hls/").unwrap(),
        ("my-cdn".into(), "media/hls/".into())
    );
    for bad in [
        "gs://",
        "gs://Upper",
        "gs://a",
        "gs://b/../x",
        "s3://b",
        "gs://b c",
    ] {
        assert!(parse_spec(bad).is_err(), "{bad}");
    }
}
