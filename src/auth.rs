//! Client and backend authentication.
//!
//! Clients present a JWT once; [`Authenticator::verify`] turns it into
//! [`Credentials`] that transports carry around and never re-parse. The
//! algorithm is pinned by configuration, so a token signed with another
//! algorithm (or `alg: none`) is rejected before its signature is looked at.
//! Backends present API keys; they are compared by SHA-256 digest in constant
//! time against every configured key, so neither the position of the
//! matching key nor its length leaks through timing.

use std::{fmt, sync::Arc, time::Duration};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub use crate::config::JwtAlgorithm;
use crate::{
    config::{Config, ENV_JWT_PUBLIC_KEY, ENV_JWT_SECRET},
    ids::unix_now,
    protocol::{NAME_RULE, is_valid_name},
};

fn algorithm(a: JwtAlgorithm) -> Algorithm {
    match a {
        JwtAlgorithm::Hs256 => Algorithm::HS256,
        JwtAlgorithm::Rs256 => Algorithm::RS256,
        JwtAlgorithm::Es256 => Algorithm::ES256,
    }
}

/// How tokens are verified (and, for HS256, minted).
#[derive(Clone)]
pub enum JwtKey {
    /// HS256 shared secret.
    Secret(Vec<u8>),
    /// RS256 or ES256 public key, PEM.
    PublicPem(Vec<u8>),
}

impl fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Secret(_) => "Secret(..)",
            Self::PublicPem(_) => "PublicPem(..)",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("token has expired")]
    Expired,
    #[error("token is not valid: {0}")]
    InvalidToken(&'static str),
    #[error("the token's `sub` must be a uid of {NAME_RULE}")]
    InvalidSubject,
    #[error("the JWT key cannot be used: {0}")]
    BadKey(String),
    #[error("tokens can only be minted with an HS256 secret")]
    CannotMint,
}

/// What a verified token grants one connection.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub uid: Arc<str>,
    /// Unix seconds after which the connection must refresh or go.
    pub exp: u64,
    /// Groups the connection may join.
    pub groups: Patterns,
    /// Groups the connection may publish to.
    pub publish: Patterns,
}

/// The `alg` a token's header names, when the header is a JSON object
/// with a string `alg` (only read to explain a refusal).
fn header_alg(token: &str) -> Option<String> {
    use base64::Engine;
    let header = token.split('.').next()?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header.trim_end_matches('='))
        .ok()?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    value.get("alg")?.as_str().map(str::to_owned)
}

/// Group names or prefix patterns ending in `*` (`room-*`, or `*` for any).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Patterns(Box<[Box<str>]>);

impl Patterns {
    pub fn new<S: AsRef<str>>(patterns: impl IntoIterator<Item = S>) -> Self {
        Self(
            patterns
                .into_iter()
                // Taken exactly as written: a pattern is never trimmed
                // (`" *"` is not `*`; it matches no valid group name).
                .filter_map(|p| {
                    let p = p.as_ref();
                    (!p.is_empty()).then(|| Box::from(p))
                })
                .collect(),
        )
    }

    pub fn allows(&self, name: &str) -> bool {
        self.0.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => **p == *name,
        })
    }
}

/// The claims fanout reads. `sub` may be a string or an integer, since
/// backends often put a numeric user id there.
#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<Subject>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publish: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// A string or an array of strings (RFC 7519); jsonwebtoken checks it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Subject {
    Text(String),
    Number(u64),
}

/// Verifies client tokens and backend API keys. Cheap to share behind an
/// `Arc`; holds no global state, so each test can use its own secret.
pub struct Authenticator {
    decoding: DecodingKey,
    encoding: Option<EncodingKey>,
    validation: Validation,
    algorithm: JwtAlgorithm,
    issuer: Option<String>,
    audience: Option<String>,
    api_key_digests: Vec<[u8; 32]>,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("algorithm", &self.algorithm)
            .field("api_keys", &self.api_key_digests.len())
            .finish_non_exhaustive()
    }
}

impl JwtKey {
    /// The key `cfg` configures: the HS256 secret, or the PEM public key
    /// given inline or as a file path (read here). Errors name the option.
    pub fn from_config(cfg: &Config) -> Result<Self, String> {
        match cfg.jwt_algorithm {
            JwtAlgorithm::Hs256 => Ok(Self::Secret(
                cfg.jwt.secret.clone().unwrap_or_default().into_bytes(),
            )),
            JwtAlgorithm::Rs256 | JwtAlgorithm::Es256 => {
                let v = cfg.jwt_public_key.clone().unwrap_or_default();
                if v.trim_start().starts_with("-----BEGIN") {
                    Ok(Self::PublicPem(v.into_bytes()))
                } else {
                    std::fs::read(&v)
                        .map(Self::PublicPem)
                        .map_err(|e| format!("{ENV_JWT_PUBLIC_KEY}: cannot read {v}: {e}"))
                }
            }
        }
    }
}

impl Authenticator {
    /// The authenticator `cfg` describes (its key file read once). Errors
    /// name the option to fix.
    pub fn from_config(cfg: &Config) -> Result<Self, String> {
        let key = JwtKey::from_config(cfg)?;
        Self::new(
            cfg.jwt_algorithm,
            &key,
            cfg.jwt.issuer.clone(),
            cfg.jwt.audience.clone(),
            &cfg.api_keys,
        )
        .map_err(|e| {
            let option = match cfg.jwt_algorithm {
                JwtAlgorithm::Hs256 => ENV_JWT_SECRET,
                JwtAlgorithm::Rs256 | JwtAlgorithm::Es256 => ENV_JWT_PUBLIC_KEY,
            };
            format!("{option}: {e}")
        })
    }

    pub fn new(
        algorithm: JwtAlgorithm,
        key: &JwtKey,
        issuer: Option<String>,
        audience: Option<String>,
        api_keys: &[String],
    ) -> Result<Self, AuthError> {
        let bad = |e: jsonwebtoken::errors::Error| AuthError::BadKey(e.to_string());
        let (decoding, encoding) = match (algorithm, key) {
            (JwtAlgorithm::Hs256, JwtKey::Secret(s)) => (
                DecodingKey::from_secret(s),
                Some(EncodingKey::from_secret(s)),
            ),
            (JwtAlgorithm::Rs256, JwtKey::PublicPem(p)) => {
                (DecodingKey::from_rsa_pem(p).map_err(bad)?, None)
            }
            (JwtAlgorithm::Es256, JwtKey::PublicPem(p)) => {
                (DecodingKey::from_ec_pem(p).map_err(bad)?, None)
            }
            (alg, _) => {
                return Err(AuthError::BadKey(format!(
                    "{alg} needs {}",
                    if alg == JwtAlgorithm::Hs256 {
                        "a shared secret"
                    } else {
                        "a PEM public key"
                    }
                )));
            }
        };
        let mut validation = Validation::new(self::algorithm(algorithm));
        validation.leeway = 0;
        validation.validate_nbf = true;
        // `sub` is checked below: jsonwebtoken's own check rejects numeric
        // subjects. A configured issuer or audience must be present, not
        // merely correct when present.
        let mut required = vec!["exp"];
        if let Some(iss) = &issuer {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        match &audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        Ok(Self {
            decoding,
            encoding,
            validation,
            algorithm,
            issuer,
            audience,
            api_key_digests: api_keys.iter().map(|k| digest(k)).collect(),
        })
    }

    /// Verifies a client token and extracts what it grants.
    pub fn verify(&self, token: &str) -> Result<Credentials, AuthError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::InvalidSignature => AuthError::InvalidToken("bad signature"),
                ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                    AuthError::InvalidToken("wrong algorithm")
                }
                ErrorKind::InvalidIssuer => AuthError::InvalidToken("wrong issuer"),
                ErrorKind::InvalidAudience => AuthError::InvalidToken("wrong audience"),
                ErrorKind::ImmatureSignature => AuthError::InvalidToken("not valid yet"),
                ErrorKind::MissingRequiredClaim(c) => match c.as_str() {
                    "iss" => AuthError::InvalidToken("missing the `iss` claim"),
                    "aud" => AuthError::InvalidToken("missing the `aud` claim"),
                    _ => AuthError::InvalidToken("missing the `exp` claim"),
                },
                ErrorKind::InvalidClaimFormat(_) => AuthError::InvalidToken("malformed claims"),
                // A header naming an algorithm jsonwebtoken does not know
                // (`none`) fails as JSON: say what is wrong with it.
                ErrorKind::Json(_) if header_alg(token).is_some() => {
                    AuthError::InvalidToken("wrong algorithm")
                }
                ErrorKind::Json(_) | ErrorKind::Base64(_) | ErrorKind::Utf8(_) => {
                    AuthError::InvalidToken("malformed token (header or claims)")
                }
                _ => AuthError::InvalidToken("malformed token"),
            })?;
        let claims = data.claims;
        let Some(exp) = claims.exp else {
            return Err(AuthError::InvalidToken("missing the `exp` claim"));
        };
        let uid = match claims.sub {
            Some(Subject::Text(s)) => s,
            Some(Subject::Number(n)) => n.to_string(),
            None => return Err(AuthError::InvalidToken("missing the `sub` claim")),
        };
        if !is_valid_name(&uid) {
            return Err(AuthError::InvalidSubject);
        }
        Ok(Credentials {
            uid: uid.into(),
            exp,
            groups: Patterns::new(&claims.groups),
            publish: Patterns::new(&claims.publish),
        })
    }

    /// Mints an HS256 token (development and tests).
    pub fn mint(
        &self,
        uid: &str,
        groups: &[String],
        publish: &[String],
        ttl: Duration,
    ) -> Result<String, AuthError> {
        let key = self.encoding.as_ref().ok_or(AuthError::CannotMint)?;
        let now = unix_now();
        let claims = Claims {
            sub: Some(Subject::Text(uid.to_owned())),
            exp: Some(now + ttl.as_secs()),
            groups: groups.to_vec(),
            publish: publish.to_vec(),
            iss: self.issuer.clone(),
            aud: self.audience.clone().map(serde_json::Value::String),
            iat: Some(now),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, key)
            .map_err(|e| AuthError::BadKey(e.to_string()))
    }

    /// True when `presented` equals one of the configured API keys. Every
    /// key is compared, in constant time, whatever the outcome.
    pub fn check_api_key(&self, presented: &str) -> bool {
        self.api_key_index(presented).is_some()
    }

    /// Which configured API key `presented` is (its place in `--api-keys`),
    /// compared in constant time whichever it is, or none.
    pub fn api_key_index(&self, presented: &str) -> Option<usize> {
        use subtle::ConditionallySelectable;
        let presented = digest(presented);
        let mut found = subtle::Choice::from(0);
        let mut index = 0u64;
        for (i, key) in self.api_key_digests.iter().enumerate() {
            let same = key.ct_eq(&presented);
            index.conditional_assign(&(i as u64), same);
            found |= same;
        }
        bool::from(found).then_some(index as usize)
    }

    /// How many API keys are configured.
    pub fn api_keys(&self) -> usize {
        self.api_key_digests.len()
    }
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hs() -> Authenticator {
        Authenticator::new(
            JwtAlgorithm::Hs256,
            &JwtKey::Secret(b"s3cret".to_vec()),
            None,
            None,
            &["k1".into(), "k2".into()],
        )
        .unwrap()
    }

    #[test]
    fn minted_tokens_verify() {
        let a = hs();
        let t = a
            .mint("42", &["room-*".into()], &[], Duration::from_secs(60))
            .unwrap();
        let c = a.verify(&t).unwrap();
        assert_eq!(&*c.uid, "42");
        assert!(c.groups.allows("room-1"));
        assert!(!c.groups.allows("other"));
        assert!(!c.publish.allows("room-1"));
    }

    #[test]
    fn patterns_match_names_and_prefixes() {
        let p = Patterns::new(["a", "b-*"]);
        assert!(p.allows("a") && p.allows("b-") && p.allows("b-x"));
        assert!(!p.allows("ab") && !p.allows("b"));
        assert!(Patterns::new(["*"]).allows("anything"));
        assert!(!Patterns::default().allows("a"));
        // Taken exactly: padding is not trimmed away into a wildcard.
        let padded = Patterns::new([" *", "room-1 "]);
        assert!(!padded.allows("anything") && !padded.allows("room-1"));
    }

    /// `alg: none` (which jsonwebtoken cannot even name) is refused as a
    /// wrong algorithm, not as a malformed token.
    #[test]
    fn unsigned_tokens_are_the_wrong_algorithm() {
        use base64::Engine;
        let b64 = |v: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        let claims = b64(r#"{"sub":"42","exp":9999999999}"#);
        for alg in ["none", "HS512", "RS256"] {
            let token = format!(
                "{}.{claims}.",
                b64(&format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#))
            );
            match hs().verify(&token) {
                Err(AuthError::InvalidToken(why)) => assert_eq!(why, "wrong algorithm", "{alg}"),
                other => panic!("{alg}: {other:?}"),
            }
        }
        let garbage = format!("{}.{claims}.", b64("not json"));
        assert!(matches!(
            hs().verify(&garbage),
            Err(AuthError::InvalidToken(
                "malformed token (header or claims)"
            ))
        ));
    }

    #[test]
    fn api_keys_compare_exactly() {
        let a = hs();
        assert!(a.check_api_key("k1") && a.check_api_key("k2"));
        assert!(!a.check_api_key("k") && !a.check_api_key("k12") && !a.check_api_key(""));
        assert_eq!(a.api_key_index("k1"), Some(0));
        assert_eq!(a.api_key_index("k2"), Some(1));
        assert_eq!(a.api_key_index("k3"), None);
    }

    #[test]
    fn configured_issuer_and_audience_must_be_present() {
        let a = Authenticator::new(
            JwtAlgorithm::Hs256,
            &JwtKey::Secret(b"s3cret".to_vec()),
            Some("me".into()),
            Some("app".into()),
            &[],
        )
        .unwrap();
        let key = EncodingKey::from_secret(b"s3cret");
        let token = |claims: serde_json::Value| {
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap()
        };
        let exp = unix_now() + 60;
        assert!(
            a.verify(&token(
                serde_json::json!({"sub": "1", "exp": exp, "iss": "me", "aud": "app"})
            ))
            .is_ok()
        );
        assert!(
            a.verify(&token(
                serde_json::json!({"sub": "1", "exp": exp, "iss": "me", "aud": ["x", "app"]})
            ))
            .is_ok()
        );
        for bad in [
            serde_json::json!({"sub": "1", "exp": exp, "aud": "app"}),
            serde_json::json!({"sub": "1", "exp": exp, "iss": "me"}),
            serde_json::json!({"sub": "1", "exp": exp, "iss": "other", "aud": "app"}),
            serde_json::json!({"sub": "1", "exp": exp, "iss": "me", "aud": "other"}),
            serde_json::json!({"sub": "1", "iss": "me", "aud": "app"}),
        ] {
            assert!(a.verify(&token(bad.clone())).is_err(), "{bad}");
        }
        // Minted tokens carry both, so they pass.
        let t = a.mint("1", &[], &[], Duration::from_secs(60)).unwrap();
        assert!(a.verify(&t).is_ok());
        // Without a configured audience, an array audience is fine.
        let t = token(serde_json::json!({"sub": "1", "exp": exp, "aud": ["a", "b"]}));
        assert!(hs().verify(&t).is_ok());
    }

    #[test]
    fn numeric_subjects_become_uids() {
        let key = EncodingKey::from_secret(b"s3cret");
        let t = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &serde_json::json!({"sub": 42, "exp": unix_now() + 60}),
            &key,
        )
        .unwrap();
        assert_eq!(&*hs().verify(&t).unwrap().uid, "42");
    }
}
