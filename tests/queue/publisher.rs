//! The service's `Publisher` (google-cloud-pubsub over gRPC) against the real emulator: what it
//! publishes is pushed through the proxy to a handler with its data and attributes; it retries
//! a dropped connection; it gives up on a topic nobody answers for.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::http::StatusCode;
use video_transcoder::queue::publisher::Publisher;

use crate::common::*;
use crate::{Recorder, decoded, refused_base};

#[tokio::test]
async fn a_published_unit_is_pushed_through_the_proxy_to_the_handler() {
    let pubsub = PubSubEmulator::start("vt-queue").await;
    let handler = Recorder::start(StatusCode::NO_CONTENT).await;
    // The refused backend comes first: the proxy must pass the push on to the live one.
    let proxy = Proxy::start(&[&refused_base(), &handler.base]).await;
    let topic = pubsub.create_topic("work").await;
    let push = Push::to(&proxy.url("/work"));
    let subscription = pubsub
        .create_push_subscription("work-push", &topic, &push)
        .await;

    let publisher = Publisher::connect(&topic, Some(&pubsub.host()))
        .await
        .unwrap();
    assert_eq!(publisher.topic(), topic);
    let attributes = vec![
        ("video_id".to_owned(), "v1".to_owned()),
        ("tier".to_owned(), "critical".to_owned()),
        ("unit".to_owned(), "360p-2".to_owned()),
    ];
    let id = publisher
        .publish(br#"{"unit":2}"#.to_vec(), attributes)
        .await
        .unwrap();

    let pushed = handler.wait_for(1, Duration::from_secs(60)).await;
    assert_eq!(
        pushed.len(),
        1,
        "one push, acknowledged by the 204: {pushed:?}"
    );
    let envelope = &pushed[0];
    assert_eq!(envelope["subscription"], subscription.as_str());
    assert_eq!(envelope["message"]["messageId"], id.as_str());
    assert_eq!(decoded(envelope), br#"{"unit":2}"#);
    let attributes = &envelope["message"]["attributes"];
    assert_eq!(attributes["video_id"], "v1");
    assert_eq!(attributes["tier"], "critical");
    assert_eq!(attributes["unit"], "360p-2");
    assert_eq!(proxy.count(204), 1, "{:?}", proxy.answers());
}

/// A TCP front for `target` (HOST:PORT) that closes its first `drop_first` connections at once
/// (a transient network failure) and relays the later ones. Returns its HOST:PORT and the
/// number of connections it took.
async fn flaky_front(target: String, drop_first: usize) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let taken = Arc::new(AtomicUsize::new(0));
    let counter = taken.clone();
    tokio::spawn(async move {
        loop {
            let (mut client, _) = listener.accept().await.unwrap();
            if counter.fetch_add(1, Ordering::SeqCst) < drop_first {
                drop(client);
                continue;
            }
            let target = target.clone();
            tokio::spawn(async move {
                let mut server = tokio::net::TcpStream::connect(target).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            });
        }
    });
    (address, taken)
}

#[tokio::test]
async fn a_publish_retries_a_dropped_connection() {
    let pubsub = PubSubEmulator::start("vt-queue").await;
    let topic = pubsub.create_topic("work").await;
    let pull = pubsub.create_pull_subscription("work-pull", &topic).await;
    let (front, connections) = flaky_front(pubsub.host(), 2).await;

    let publisher = Publisher::connect(&topic, Some(&front)).await.unwrap();
    let id = publisher.publish(b"unit".to_vec(), vec![]).await.unwrap();

    assert!(
        connections.load(Ordering::SeqCst) > 2,
        "the third connection got through"
    );
    let pulled = pubsub.pull(&pull, Duration::from_secs(30)).await;
    assert_eq!(pulled.len(), 1);
    assert_eq!(pulled[0].message_id, id);
}

#[tokio::test]
async fn a_publish_nobody_answers_gives_up() {
    // Takes connections and never says a word.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let publisher = Publisher::connect("projects/vt-queue/topics/work", Some(&address))
        .await
        .unwrap()
        .with_timeout(Duration::from_secs(3));

    // The bound is only there to fail rather than hang if the publisher has none.
    let publish = publisher.publish(b"unit".to_vec(), vec![]);
    let result = tokio::time::timeout(Duration::from_secs(120), publish)
        .await
        .expect("the publish gave up by itself");
    let error = result.unwrap_err();
    assert!(error.contains("projects/vt-queue/topics/work"), "{error}");
}
