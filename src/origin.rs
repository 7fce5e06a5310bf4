//! Which web pages may open client connections: the `Origin` check
//! (`--allowed-origins`), parsed once at start-up with `http::Uri`.
//!
//! A request without `Origin` passes (only browsers send it, and they
//! always do). Otherwise the origin must be listed, or be the page's own:
//! its scheme is the request's (`https` when `X-Forwarded-Proto` says so, else
//! `http`) and its host and port equal the `Host` header's, a missing port meaning the
//! scheme's default (80 for http/ws, 443 for https/wss). `*` or `--dev`
//! let any origin in.

use axum::http::{HeaderMap, Uri, header, uri::Authority};

use crate::config::{Config, ENV_ALLOWED_ORIGINS};
use crate::log_limit::LogLimiter;

/// Refused Origins are logged at most once every 10 s.
static REFUSED_LOG: LogLimiter = LogLimiter::new(std::time::Duration::from_secs(10));

/// The parsed `--allowed-origins`.
#[derive(Debug, Clone, Default)]
pub struct OriginPolicy {
    /// `*` was listed, or development mode: every origin passes.
    any: bool,
    allowed: Vec<Allowed>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Allowed {
    /// `scheme://host[:port]`.
    Origin(Origin),
    /// `null`, the origin of sandboxed pages and local files, compared as
    /// text.
    Null,
}

/// An origin reduced to what identifies it: lower-case scheme and host,
/// and the port, the scheme's default filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Origin {
    scheme: String,
    host: String,
    port: Option<u16>,
}

impl Origin {
    /// Parses `scheme://host[:port]` (a trailing `/` is tolerated).
    fn parse(text: &str) -> Option<Self> {
        let uri: Uri = text.trim().parse().ok()?;
        let scheme = uri.scheme_str()?.to_ascii_lowercase();
        let authority = uri.authority()?;
        if authority.as_str().contains('@')
            || uri.path_and_query().is_some_and(|p| p.as_str() != "/")
        {
            return None;
        }
        Some(Self {
            port: authority.port_u16().or_else(|| default_port(&scheme)),
            host: authority.host().to_ascii_lowercase(),
            scheme,
        })
    }

    /// Whether the origin is a TLS one (`https`, `wss`).
    fn is_secure(&self) -> bool {
        matches!(self.scheme.as_str(), "https" | "wss")
    }

    /// Whether the `Host` header names this origin's host and port.
    fn is_host(&self, host: &str) -> bool {
        let Ok(authority) = host.trim().parse::<Authority>() else {
            return false;
        };
        let port = authority.port_u16().or_else(|| default_port(&self.scheme));
        authority.host().eq_ignore_ascii_case(&self.host) && port == self.port
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    }
}

impl OriginPolicy {
    /// The policy `cfg` configures. An entry that is neither `*`, `null`
    /// nor `scheme://host[:port]` is a configuration error.
    pub fn from_config(cfg: &Config) -> Result<Self, String> {
        let mut policy = Self {
            any: cfg.dev,
            allowed: Vec::new(),
        };
        for entry in cfg.allowed_origins.iter().map(|o| o.trim()) {
            match entry {
                "" => {}
                "*" => policy.any = true,
                "null" => policy.allowed.push(Allowed::Null),
                _ => match Origin::parse(entry) {
                    Some(o) => policy.allowed.push(Allowed::Origin(o)),
                    None => {
                        return Err(format!(
                            "{ENV_ALLOWED_ORIGINS}: `{entry}` is not an origin like https://app.example.com (or `*`)"
                        ));
                    }
                },
            }
        }
        Ok(policy)
    }

    /// [`allows`](Self::allows), logging a refusal (at most one line
    /// every 10 s, with how many were refused meanwhile): a page that
    /// cannot connect otherwise shows only a close code in the browser.
    pub fn admits(&self, headers: &HeaderMap) -> bool {
        let allowed = self.allows(headers);
        if !allowed && let Some(suppressed) = REFUSED_LOG.allow() {
            let shown = |name| {
                headers.get(name).map_or_else(
                    || "-".to_owned(),
                    |v| String::from_utf8_lossy(&v.as_bytes()[..v.len().min(200)]).into_owned(),
                )
            };
            tracing::warn!(
                origin = %shown(header::ORIGIN),
                host = %shown(header::HOST),
                suppressed,
                "refused a connection from an Origin not allowed (see --allowed-origins)"
            );
        }
        allowed
    }

    /// Whether a request with these headers may open a connection.
    pub fn allows(&self, headers: &HeaderMap) -> bool {
        let mut origins = headers.get_all(header::ORIGIN).iter();
        let Some(origin) = origins.next() else {
            return true;
        };
        // A browser sends one; two are a forgery meant to slip one past a
        // check that reads only the first.
        if origins.next().is_some() {
            return false;
        }
        let Ok(origin) = origin.to_str() else {
            return false;
        };
        if self.any {
            return true;
        }
        if origin.trim() == "null" {
            return self.allowed.contains(&Allowed::Null);
        }
        let Some(origin) = Origin::parse(origin) else {
            return false;
        };
        let listed = self.allowed.contains(&Allowed::Origin(origin.clone()));
        listed
            || (origin.is_secure() == request_is_secure(headers)
                && headers
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .is_some_and(|host| origin.is_host(host)))
    }
}

/// Whether the page's request came over TLS: `X-Forwarded-Proto` from a
/// TLS-terminating proxy says so (its first value); without it the
/// listener's own plain HTTP counts.
fn request_is_secure(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .is_some_and(|p| {
            let p = p.trim();
            p.eq_ignore_ascii_case("https") || p.eq_ignore_ascii_case("wss")
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn policy(allowed: &[&str]) -> OriginPolicy {
        let cfg = Config {
            allowed_origins: allowed.iter().map(|s| s.to_string()).collect(),
            ..Config::default()
        };
        OriginPolicy::from_config(&cfg).unwrap()
    }

    fn headers(origin: Option<&str>, host: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_str(host).unwrap());
        if let Some(o) = origin {
            h.insert(header::ORIGIN, HeaderValue::from_str(o).unwrap());
        }
        h
    }

    #[test]
    fn same_origin_compares_host_and_port_with_defaults() {
        let p = policy(&[]);
        assert!(p.allows(&headers(None, "a.com")));
        assert!(p.allows(&headers(Some("http://a.com"), "a.com")));
        assert!(p.allows(&headers(Some("http://A.com"), "a.COM:80")));
        // The scheme counts too: an https page is not the origin of a
        // plain-HTTP listener, unless a TLS proxy says the request was https.
        assert!(!p.allows(&headers(Some("https://a.com"), "a.com:443")));
        let mut tls = headers(Some("https://a.com"), "a.com");
        tls.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        assert!(p.allows(&tls));
        let mut plain_page = headers(Some("http://a.com"), "a.com");
        plain_page.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        assert!(!p.allows(&plain_page));
        // Two Origin headers: refused, even if the first would pass.
        let mut two = headers(Some("http://a.com"), "a.com");
        two.append(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert!(!p.allows(&two));
        assert!(p.allows(&headers(Some("http://a.com:8080"), "a.com:8080")));
        assert!(p.allows(&headers(Some("http://[::1]:8080"), "[::1]:8080")));
        assert!(!p.allows(&headers(Some("http://a.com"), "a.com:443")));
        assert!(!p.allows(&headers(Some("http://a.com:8080"), "a.com")));
        assert!(!p.allows(&headers(Some("http://b.com"), "a.com")));
        assert!(!p.allows(&headers(Some("http://a.com/x"), "a.com")));
        assert!(!p.allows(&headers(Some("not an origin"), "a.com")));
        assert!(!p.allows(&headers(Some("null"), "a.com")));
    }

    #[test]
    fn listed_origins_pass_whatever_the_host() {
        let p = policy(&["https://app.example.com/", "http://localhost:3000", "null"]);
        assert!(p.allows(&headers(Some("https://app.example.com"), "api.example.com")));
        assert!(p.allows(&headers(Some("https://APP.example.com:443"), "x")));
        assert!(p.allows(&headers(Some("http://localhost:3000"), "x")));
        assert!(p.allows(&headers(Some("null"), "x")));
        assert!(!p.allows(&headers(Some("http://app.example.com"), "x")));
        assert!(!p.allows(&headers(Some("http://localhost:3001"), "x")));
        assert!(policy(&["*"]).allows(&headers(Some("http://evil.example"), "x")));
    }

    #[test]
    fn entries_that_are_not_origins_are_refused() {
        for bad in [
            "app.example.com",
            "https://a.com/path",
            "https://user@a.com",
        ] {
            let cfg = Config {
                allowed_origins: vec![bad.into()],
                ..Config::default()
            };
            let e = OriginPolicy::from_config(&cfg).unwrap_err();
            assert!(e.contains(ENV_ALLOWED_ORIGINS), "{e}");
        }
    }
}
