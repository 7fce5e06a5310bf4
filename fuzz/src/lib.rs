//! What the fuzz targets share: the HS256 key their tokens are signed
//! with, and the checks every frame or body fanout writes must pass.
//!
//! The targets themselves are in `fuzz_targets/`; docs/fuzzing.md says
//! what each covers and how to run them.

use std::sync::LazyLock;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use fanout::auth::{Authenticator, JwtAlgorithm, JwtKey};
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::value::RawValue;

/// The HS256 secret of [`PLAIN`] and [`STRICT`]; the seed tokens in
/// `corpus/` are signed with it.
pub const SECRET: &[u8] = b"fuzz-secret";

/// The issuer and audience [`STRICT`] requires.
pub const ISSUER: &str = "https://auth.example.com";
pub const AUDIENCE: &str = "push";

/// An authenticator as `--jwt-secret` alone configures it.
pub static PLAIN: LazyLock<Authenticator> = LazyLock::new(|| authenticator(None, None));

/// One that also requires `--jwt-issuer` and `--jwt-audience`.
pub static STRICT: LazyLock<Authenticator> =
    LazyLock::new(|| authenticator(Some(ISSUER), Some(AUDIENCE)));

fn authenticator(issuer: Option<&str>, audience: Option<&str>) -> Authenticator {
    Authenticator::new(
        JwtAlgorithm::Hs256,
        &JwtKey::Secret(SECRET.to_vec()),
        issuer.map(str::to_owned),
        audience.map(str::to_owned),
        &["api-key".to_owned()],
    )
    .expect("an HS256 secret is always a usable key")
}

static ENCODING: LazyLock<EncodingKey> = LazyLock::new(|| EncodingKey::from_secret(SECRET));

/// A JWT with these exact header and claims bytes (any bytes: the
/// verifier must cope with whatever a validly signed token holds),
/// signed with [`SECRET`].
pub fn sign(header: &[u8], claims: &[u8]) -> String {
    let mut token = URL_SAFE_NO_PAD.encode(header);
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(claims));
    let signature = jsonwebtoken::crypto::sign(token.as_bytes(), &ENCODING, Algorithm::HS256)
        .expect("HMAC signing cannot fail");
    token.push('.');
    token.push_str(&signature);
    token
}

/// Panics unless `text` is one complete JSON value. No recursion limit:
/// `data` is passed through as the publisher wrote it, however deep.
pub fn assert_json(text: &str) {
    if let Err(e) = serde_json::from_str::<&RawValue>(text) {
        panic!("not JSON ({e}): {text}");
    }
}

/// Panics unless `text` is a JSON object whose `type` is `kind`.
pub fn assert_frame(text: &str, kind: &str) {
    assert_json(text);
    let value: serde_json::Value = match serde_json::from_str(text) {
        Ok(v) => v,
        // Deeper than serde_json's recursion limit: `data` passed through.
        Err(_) => return,
    };
    assert_eq!(value["type"], kind, "{text}");
}
