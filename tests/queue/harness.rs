//! The test harness, checked on its own against the real emulator: a handler that keeps failing
//! sends the message to the dead-letter topic after the subscription's attempts; the proxy takes
//! turns, skips removed and refusing backends, and counts its answers.

use std::time::Duration;

use axum::http::StatusCode;

use crate::common::*;
use crate::{Recorder, refused_base};

#[tokio::test]
async fn a_unit_that_keeps_failing_lands_on_the_dead_letter_topic() {
    let pubsub = PubSubEmulator::start("vt-queue").await;
    let handler = Recorder::start(StatusCode::INTERNAL_SERVER_ERROR).await;
    let proxy = Proxy::start(&[&handler.base]).await;
    let topic = pubsub.create_topic("work").await;
    let dead = pubsub.create_topic("work-dead").await;
    let dead_pull = pubsub
        .create_pull_subscription("work-dead-pull", &dead)
        .await;
    let mut push = Push::to(&proxy.url("/work"));
    push.min_backoff = Duration::from_millis(100);
    push.max_backoff = Duration::from_millis(500);
    push.dead_letter = Some((dead.clone(), 5));
    pubsub
        .create_push_subscription("work-push", &topic, &push)
        .await;

    let id = pubsub
        .publish(&topic, b"poison", &[("unit", "720p-0")])
        .await;

    let landed = pubsub.pull(&dead_pull, Duration::from_secs(120)).await;
    assert_eq!(landed.len(), 1, "{landed:?}");
    assert_eq!(landed[0].data, b"poison");
    assert_eq!(landed[0].attributes["unit"], "720p-0");
    let pushed = handler.received();
    assert_eq!(pushed.len(), 5, "one push per delivery attempt: {pushed:?}");
    // Unlike Google's service, emulator 0.8.20 sends no `deliveryAttempt` in the envelope, even
    // with a dead-letter policy: a handler must not rely on it.
    for envelope in &pushed {
        assert_eq!(envelope["message"]["messageId"], id.as_str());
    }
    let source = &landed[0].attributes;
    assert_eq!(source["CloudPubSubDeadLetterSourceDeliveryCount"], "5");
    assert_eq!(
        source["CloudPubSubDeadLetterSourceSubscription"],
        "work-push"
    );
    assert_eq!(proxy.count(500), 5, "{:?}", proxy.answers());
}

#[tokio::test]
async fn the_proxy_takes_turns_skips_removed_backends_and_answers_502_without_any() {
    let a = Recorder::start(StatusCode::OK).await;
    let b = Recorder::start(StatusCode::TOO_MANY_REQUESTS).await;
    let proxy = Proxy::start(&[&a.base, &b.base]).await;
    let http = reqwest::Client::new();
    let post = |n: u64| {
        http.post(proxy.url("/work?x=1"))
            .json(&serde_json::json!({ "n": n }))
            .send()
    };
    for n in 0..4 {
        post(n).await.unwrap();
    }
    assert_eq!(a.received().len(), 2);
    assert_eq!(b.received().len(), 2);
    assert_eq!(proxy.count(200), 2);
    assert_eq!(proxy.count(429), 2);

    proxy.remove_backend(&a.base);
    for n in 4..6 {
        assert_eq!(post(n).await.unwrap().status(), 429);
    }
    assert_eq!(b.received().len(), 4);
    assert_eq!(b.received()[3]["n"], 5, "the body is forwarded whole");

    proxy.remove_backend(&b.base);
    assert_eq!(post(6).await.unwrap().status(), 502);
    proxy.add_backend(&refused_base());
    assert_eq!(post(7).await.unwrap().status(), 502);
    assert_eq!(proxy.count(502), 2, "{:?}", proxy.answers());
}

#[tokio::test]
async fn the_proxy_answers_502_when_a_backend_dies_mid_request_and_does_not_resend_it() {
    // Reads the start of a request, then goes away (as a killed process does).
    let dying = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dying_base = format!("http://{}", dying.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = dying.accept().await {
            let mut start = [0u8; 16];
            let _ = tokio::io::AsyncReadExt::read(&mut socket, &mut start).await;
        }
    });
    let other = Recorder::start(StatusCode::NO_CONTENT).await;
    let proxy = Proxy::start(&[&dying_base, &other.base]).await;

    let answer = reqwest::Client::new()
        .post(proxy.url("/work"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 502);
    assert!(
        other.received().is_empty(),
        "a request a backend took is not sent again"
    );
    assert_eq!(proxy.count(502), 1, "{:?}", proxy.answers());
}
