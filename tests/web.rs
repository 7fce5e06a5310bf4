//! What a browser loads from a node: `/client.js` on every node, and the
//! demo page with its `/dev/*` helpers only in `--dev` mode (a production
//! node must not mint tokens or publish without an API key).

mod support;

use reqwest::{StatusCode, header};
use serde_json::{Value, json};
use support::{Client, TestServer};

const CLIENT_JS: &str = include_str!("../clients/js/dist/fanout.js");

async fn get(server: &TestServer, path: &str) -> reqwest::Response {
    server.http().get(server.url(path)).send().await.unwrap()
}

async fn post(server: &TestServer, path: &str, body: Value) -> (StatusCode, Value) {
    let res = server
        .http()
        .post(server.url(path))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// `/client.js` is the built library, as a module any page may import,
/// cached and revalidated by ETag.
#[tokio::test]
async fn every_node_serves_the_client_library() {
    let server = TestServer::start().await;
    let res = get(&server, "/client.js").await;
    assert_eq!(res.status(), StatusCode::OK);
    let headers = res.headers().clone();
    assert_eq!(
        headers[header::CONTENT_TYPE],
        "text/javascript; charset=utf-8"
    );
    assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    assert!(
        headers[header::CACHE_CONTROL]
            .to_str()
            .unwrap()
            .contains("max-age=")
    );
    let etag = headers[header::ETAG].to_str().unwrap().to_owned();
    let body = res.text().await.unwrap();
    assert_eq!(body, CLIENT_JS);
    assert!(body.contains("FanoutClient"));

    let again = server
        .http()
        .get(server.url("/client.js"))
        .header(header::IF_NONE_MATCH, &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    assert!(again.text().await.unwrap().is_empty());
    let stale = server
        .http()
        .get(server.url("/client.js"))
        .header(header::IF_NONE_MATCH, "\"something-else\"")
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), StatusCode::OK);
}

/// Without `--dev` there is no demo page and no `/dev/*`: each answers
/// the JSON 404 of any unknown path, and nothing is minted or published.
#[tokio::test]
async fn without_dev_mode_the_demo_and_its_helpers_do_not_exist() {
    let server = TestServer::start().await;
    let mut victim = server.client("victim").await;
    for path in ["/", "/dev/stats", "/dev/token", "/dev/publish"] {
        let res = get(&server, path).await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND, "{path}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"]["code"], "not_found", "{path}");
    }
    let (s, body) = post(&server, "/dev/token", json!({"uid": "victim"})).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{body}");
    let (s, body) = post(
        &server,
        "/dev/publish",
        json!({"to": {"users": ["victim"]}, "data": "forged"}),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{body}");
    // The victim got nothing: the next frame is a real publish.
    let id = server
        .publish_ok(json!({"users": ["victim"]}), "real", json!(1))
        .await;
    assert_eq!(victim.recv_type("message").await["id"], id);
}

/// In `--dev` mode `/` is the demo page, `/dev/token` mints a working token
/// for any uid, `/dev/publish` publishes without the API key, and
/// `/dev/stats` counts; bad input gets the documented JSON errors.
#[tokio::test]
async fn dev_mode_serves_the_demo_and_its_helpers() {
    let server = TestServer::with(|c| c.dev = true).await;
    let page = get(&server, "/").await;
    assert_eq!(page.status(), StatusCode::OK);
    assert_eq!(
        page.headers()[header::CONTENT_TYPE],
        "text/html; charset=utf-8"
    );
    let html = page.text().await.unwrap();
    assert!(
        html.contains("from \"/client.js\""),
        "the demo uses the library"
    );

    let (s, minted) = post(&server, "/dev/token", json!({"uid": "ann"})).await;
    assert_eq!(s, StatusCode::OK, "{minted}");
    let token = minted["token"].as_str().unwrap();
    let mut c = Client::connect(&format!("{}?token={token}", server.ws_url())).await;
    let welcome = c.recv().await;
    assert_eq!(
        (&welcome["type"], &welcome["uid"]),
        (&json!("welcome"), &json!("ann"))
    );
    assert_eq!(welcome["exp"], minted["exp"], "{welcome} {minted}");
    // The demo's token may join and publish to any group.
    let joined = c
        .call(json!({"type": "join", "id": 1, "group": "lobby"}))
        .await;
    assert_eq!(joined["type"], "joined", "{joined}");

    let (s, published) = post(
        &server,
        "/dev/publish",
        json!({"to": {"users": ["ann"]}, "event": "notice", "data": {"text": "hi"}}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{published}");
    let m = c.recv_type("message").await;
    assert_eq!(
        (&m["id"], &m["data"]["text"]),
        (&published["id"], &json!("hi"))
    );

    let stats: Value = get(&server, "/dev/stats").await.json().await.unwrap();
    assert_eq!(
        (&stats["users"], &stats["connections"]),
        (&json!(1), &json!(1))
    );

    for (body, code) in [
        (json!({"uid": "no spaces"}), "invalid_user"),
        (json!({"uid": "ann", "ttl_seconds": 0}), "invalid_json"),
        (
            json!({"uid": "ann", "ttl_seconds": 100_000_000}),
            "invalid_json",
        ),
        (json!({"user": "ann"}), "invalid_json"),
    ] {
        let (s, err) = post(&server, "/dev/token", body.clone()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body} {err}");
        assert_eq!(err["error"]["code"], code, "{body} {err}");
    }
    // The API itself still wants its key.
    assert_eq!(
        get(&server, "/api/stats").await.status(),
        StatusCode::UNAUTHORIZED
    );
}
