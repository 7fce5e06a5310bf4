//! What a browser loads from a node besides the transports: the client
//! library at `/client.js` (always, for pages that use no bundler) and, in
//! `--dev` mode only, the demo page at `/`. Static bytes built into the
//! binary; no I/O.

use std::sync::LazyLock;

use axum::{
    Router,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use sha2::{Digest, Sha256};

/// The built client library (clients/js: `npm run build`; `npm run
/// check-dist` proves the committed file is what its sources build to).
const CLIENT_JS: &str = include_str!("../../clients/js/dist/fanout.js");
/// The demo page: group chat, notifications to a uid, online counts and
/// the connection state, on the client library.
const DEMO_HTML: &str = include_str!("demo.html");

/// A strong validator for `/client.js`, so a browser's revalidation after
/// `max-age` costs a 304.
static CLIENT_ETAG: LazyLock<HeaderValue> = LazyLock::new(|| {
    let digest = Sha256::digest(CLIENT_JS.as_bytes());
    let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    HeaderValue::from_str(&format!("\"{hex}\"")).unwrap_or(HeaderValue::from_static("\"0\""))
});

/// The asset routes; `/` only when `dev` is set.
pub fn router<S: Clone + Send + Sync + 'static>(dev: bool) -> Router<S> {
    let router = Router::new().route("/client.js", get(client_js));
    if dev {
        router.route("/", get(demo))
    } else {
        router
    }
}

/// `GET /client.js`: an ES module exporting `FanoutClient`. Cached for five
/// minutes, then revalidated by ETag; any origin may import it.
async fn client_js(headers: HeaderMap) -> Response {
    let etag = CLIENT_ETAG.clone();
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim() == "*" || t.trim().trim_start_matches("W/") == etag)
        });
    let common = [
        (
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=300"),
        ),
        (header::ETAG, etag),
        (
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
    ];
    if fresh {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    (
        common,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/javascript; charset=utf-8"),
        )],
        CLIENT_JS,
    )
        .into_response()
}

/// `GET /` in `--dev` mode: the demo page.
async fn demo() -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        DEMO_HTML,
    )
        .into_response()
}
