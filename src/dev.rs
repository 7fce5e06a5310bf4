//! `fanout serve --dev`: fills in secrets, kept in `--dev-file` so that a
//! restart keeps tokens and open pages working, and prints how to use
//! them. Never for production: anyone who reaches a development node may
//! mint tokens and publish (`/dev/*`), and any Origin may connect.

use std::{io::Write, net::SocketAddr, path::Path, time::Duration};

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::{auth::Authenticator, config::Config};

/// The uid of the printed development token.
pub const DEV_UID: &str = "dev-user";

/// What `--dev-file` holds.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DevSecrets {
    jwt_secret: String,
    api_key: String,
}

/// Fills in what is missing (from the dev file, else generated and saved
/// there) and opens the Origin check. Returns notes to log, or why the dev
/// file cannot be used.
pub fn prepare(cfg: &mut Config) -> Result<Vec<String>, String> {
    let mut notes =
        vec!["development mode: any Origin may connect (--allowed-origins is ignored)".to_owned()];
    let needs_secret = cfg.jwt.secret.is_none() && cfg.jwt_public_key.is_none();
    let needs_key = cfg.api_keys.is_empty();
    if !needs_secret && !needs_key {
        return Ok(notes);
    }
    let path = cfg.dev_file.clone();
    let secrets = match read(&path)? {
        Some(kept) => {
            notes.push(format!(
                "development mode: using the secret and API key kept in {} (delete it to rotate them)",
                path.display()
            ));
            kept
        }
        None => {
            let fresh = DevSecrets {
                jwt_secret: random_secret(),
                api_key: random_secret(),
            };
            match write(&path, &fresh) {
                Ok(()) => notes.push(format!(
                    "development mode: generated a JWT secret and an API key, kept in {} for the next start (delete it to rotate them)",
                    path.display()
                )),
                Err(e) => notes.push(format!(
                    "development mode: generated a JWT secret and an API key; cannot keep them in {} ({e}), so they change on every start",
                    path.display()
                )),
            }
            fresh
        }
    };
    if needs_secret {
        cfg.jwt.secret = Some(secrets.jwt_secret);
    }
    if needs_key {
        cfg.api_keys = vec![secrets.api_key];
    }
    Ok(notes)
}

/// The kept secrets, `None` when there is no dev file yet.
fn read(path: &Path) -> Result<Option<DevSecrets>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read the dev file {}: {e}", path.display())),
    };
    let kept: DevSecrets = serde_json::from_str(&text).map_err(|e| {
        format!(
            "the dev file {} is not what --dev wrote ({e}); delete it to generate new secrets",
            path.display()
        )
    })?;
    if kept.jwt_secret.len() < 16 || kept.api_key.len() < 16 {
        return Err(format!(
            "the dev file {} holds a secret or key shorter than 16 characters; delete it to generate new ones",
            path.display()
        ));
    }
    Ok(Some(kept))
}

/// Writes the dev file readable by its owner only.
fn write(path: &Path, secrets: &DevSecrets) -> std::io::Result<()> {
    let json = serde_json::to_string_pretty(secrets).map_err(std::io::Error::other)?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(json.as_bytes())?;
    file.write_all(b"\n")
}

fn random_secret() -> String {
    let bytes: [u8; 24] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The banner: the demo page, secret, key, a token, a console snippet and a
/// curl publish.
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

  Open the demo:  http://{host}/
  (group chat, notifications to a user id, online counts; open it in two
  tabs with different names)

  JWT secret:  {secret}
  API key:     {key}
  (kept in {dev_file}: delete it to rotate them)

A token for uid "{DEV_UID}" (24h, may join and publish to any group):

  {token}

Mint more:   FANOUT_JWT_SECRET='{secret}' {exe} token --sub 42 --groups 'room-*'

Or, in the browser console of the demo page (not any page: browsers block
pages of other origins, about:blank and data: from local addresses):

  const ws = new WebSocket("ws://{host}/ws?token={token}");
  ws.onmessage = (e) => console.log(JSON.parse(e.data));

Publish to that user:

  curl -s http://{host}/api/publish \
    -H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' \
    -d '{{"to":{{"users":["{DEV_UID}"]}},"event":"hello","data":{{"text":"hi from curl"}}}}'
"#,
        dev_file = cfg.dev_file.display(),
    )
}
