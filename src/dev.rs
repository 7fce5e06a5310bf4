//! `fanout serve --dev`: fills in generated secrets and prints how to use
//! them. Never for production: the secret and key change on every start.

use std::{net::SocketAddr, time::Duration};

use base64::Engine;

use crate::{auth::Authenticator, config::Config};

/// The uid of the printed development token.
pub const DEV_UID: &str = "dev-user";

/// Generates what is missing and opens the Origin check. Returns notes to log.
pub fn prepare(cfg: &mut Config) -> Vec<String> {
    let mut notes =
        vec!["development mode: any Origin may connect (--allowed-origins is ignored)".to_owned()];
    if cfg.jwt.secret.is_none() && cfg.jwt_public_key.is_none() {
        cfg.jwt.secret = Some(random_secret());
        notes.push("development mode: generated a JWT secret (printed below)".into());
    }
    if cfg.api_keys.is_empty() {
        cfg.api_keys = vec![random_secret()];
        notes.push("development mode: generated an API key (printed below)".into());
    }
    notes
}

fn random_secret() -> String {
    let bytes: [u8; 24] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The banner: secret, key, a token, a browser snippet and a curl publish.
pub fn banner(cfg: &Config, auth: &Authenticator, addr: SocketAddr) -> String {
    let host = if addr.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], addr.port()))
    } else {
        addr
    };
    let token = auth
        .mint(
            DEV_UID,
            &["*".into()],
            &["*".into()],
            Duration::from_secs(24 * 3600),
        )
        .unwrap_or_else(|e| format!("<cannot mint: {e}>"));
    let secret = cfg
        .jwt
        .secret
        .as_deref()
        .unwrap_or("<public key configured>");
    let key = cfg.api_keys.first().map_or("", String::as_str);
    let exe = std::env::current_exe()
        .ok()
        .and_then(|p| {
            let cwd = std::env::current_dir().ok()?;
            Some(match p.strip_prefix(&cwd) {
                Ok(rel) => format!("./{}", rel.display()),
                Err(_) => p.display().to_string(),
            })
        })
        .unwrap_or_else(|| "fanout".into());
    format!(
        r#"
fanout is running in development mode on http://{host}

  JWT secret:  {secret}
  API key:     {key}

A token for uid "{DEV_UID}" (24h, may join and publish to any group):

  {token}

Mint more:   FANOUT_JWT_SECRET='{secret}' {exe} token --sub 42 --groups 'room-*'

Connect from a browser console (any page):

  const ws = new WebSocket("ws://{host}/ws?token={token}");
  ws.onmessage = (e) => console.log(JSON.parse(e.data));

Publish to that user:

  curl -s http://{host}/api/publish \
    -H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' \
    -d '{{"to":{{"users":["{DEV_UID}"]}},"event":"hello","data":{{"text":"hi from curl"}}}}'
"#
    )
}
