//! Listing a folder of a prefixed bucket store (the webhook outbox is read this way).

use video_transcoder::storage::{GcsOptions, GcsStore, Store};

use crate::*;

/// A folder lists every object under it, at any depth, as keys of the store (without its
/// prefix), and nothing beside it; a folder with nothing in it lists nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_lists_its_objects_as_keys_of_the_store() {
    let gcs = emulator().await;
    let options = GcsOptions {
        endpoint: Some(gcs.endpoint()),
        retry_budget: std::time::Duration::from_secs(5),
    };
    let store = GcsStore::new(&format!("gs://{CDN}/{CDN_PREFIX}"), &options)
        .await
        .unwrap();
    for key in [
        "webhooks/outbox/b.json",
        "webhooks/outbox/a.json",
        "webhooks/outbox/deep/c.json",
        "webhooks/outboxes.json",
        "videos/x/status.json",
    ] {
        store.put(key, "{}".into()).await.unwrap();
    }
    gcs.put(CDN, "webhooks/outbox/outside-the-prefix.json", "{}")
        .await;
    let listed = store.list("webhooks/outbox/").await.unwrap();
    assert_eq!(
        listed,
        [
            "webhooks/outbox/a.json",
            "webhooks/outbox/b.json",
            "webhooks/outbox/deep/c.json"
        ]
    );
    assert_eq!(store.list("webhooks/outbox").await.unwrap(), listed);
    assert!(store.list("nothing/here/").await.unwrap().is_empty());
}
