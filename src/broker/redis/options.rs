//! How to reach Redis and how to use it, built from the configuration:
//! the only place that turns `--redis-url` / `--redis-sentinel` /
//! `--redis-cluster` into fred's settings.

use std::time::Duration;

use fred::types::config::{ClusterDiscoveryPolicy, Config as FredConfig, Server, ServerConfig};

use crate::{
    broker::HistoryOptions,
    config::{Config, ENV_REDIS_CLUSTER, ENV_REDIS_SENTINEL, ENV_REDIS_URL},
};

/// URL schemes `--redis-url` accepts.
const SCHEMES: [&str; 8] = [
    "redis://",
    "rediss://",
    "redis-cluster://",
    "rediss-cluster://",
    "redis-sentinel://",
    "rediss-sentinel://",
    "valkey://",
    "valkeys://",
];

/// How to reach Redis and how to use it.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    pub config: FredConfig,
    pub prefix: String,
    pub node_id: String,
    pub pubsub_connections: usize,
    pub command_timeout: Duration,
    pub probe_interval: Duration,
    pub history: HistoryOptions,
    /// How deeply a message's `data` may nest (`--max-json-depth`): bodies
    /// received deeper are dropped, and `fanout_publish` refuses them.
    pub max_json_depth: usize,
    /// How long a node's heartbeat key lives without a refresh before the
    /// other nodes fence it (`Duration::ZERO`: no heartbeat, no fencing).
    pub fence_after: Duration,
    /// Over how long a node that finds it was fenced sends its clients
    /// away (the drain window).
    pub fenced_drain: Duration,
}

impl RedisOptions {
    /// The Redis settings of `cfg` for node `node_id`, or `None` for the
    /// in-process broker. The error names the option that is wrong.
    pub fn from_config(cfg: &Config, node_id: &str) -> Result<Option<Self>, String> {
        Ok(fred_config(cfg)?.map(|config| Self {
            config,
            prefix: cfg.redis_prefix.clone(),
            node_id: node_id.to_owned(),
            pubsub_connections: cfg.redis_pubsub_connections,
            command_timeout: cfg.redis_timeout,
            probe_interval: cfg.redis_probe_interval,
            history: HistoryOptions::from_config(cfg),
            max_json_depth: cfg.max_json_depth,
            fence_after: cfg.node_fence_after,
            fenced_drain: cfg.drain_window,
        }))
    }
}

fn fred_config(cfg: &Config) -> Result<Option<FredConfig>, String> {
    if let Some(url) = &cfg.redis_url
        && !SCHEMES.iter().any(|s| url.starts_with(s))
    {
        return Err(format!(
            "{ENV_REDIS_URL} must start with one of: {}",
            SCHEMES.join(", ")
        ));
    }
    let base = match &cfg.redis_url {
        Some(url) => Some(
            FredConfig::from_url(url)
                .map_err(|e| format!("{ENV_REDIS_URL}: not a Redis URL ({e})"))?,
        ),
        None => None,
    };
    if !cfg.redis_sentinel.is_empty() {
        let mut hosts = Vec::new();
        for addr in &cfg.redis_sentinel {
            let (host, port) = addr
                .rsplit_once(':')
                .and_then(|(h, p)| Some((h.to_owned(), p.parse::<u16>().ok()?)))
                .ok_or_else(|| format!("{ENV_REDIS_SENTINEL}: `{addr}` is not host:port"))?;
            hosts.push(Server::new(host, port));
        }
        let mut fred = base.unwrap_or_default();
        fred.server = ServerConfig::Sentinel {
            hosts,
            service_name: cfg.redis_sentinel_master.clone(),
            username: fred.username.clone(),
            password: fred.password.clone(),
        };
        return Ok(Some(fred));
    }
    let Some(mut fred) = base else {
        if cfg.redis_cluster {
            return Err(format!("{ENV_REDIS_CLUSTER} needs {ENV_REDIS_URL}"));
        }
        return Ok(None);
    };
    if cfg.redis_cluster
        && let ServerConfig::Centralized { server } = &fred.server
    {
        fred.server = ServerConfig::Clustered {
            hosts: vec![server.clone()],
            policy: ClusterDiscoveryPolicy::default(),
        };
    }
    Ok(Some(fred))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(change: impl FnOnce(&mut Config)) -> Result<Option<RedisOptions>, String> {
        let mut cfg = Config::default();
        change(&mut cfg);
        RedisOptions::from_config(&cfg, "n")
    }

    #[test]
    fn urls_sentinels_and_clusters_are_understood() {
        assert!(opts(|_| {}).unwrap().is_none());
        let single = opts(|c| c.redis_url = Some("redis://127.0.0.1:6380".into()));
        assert!(!single.unwrap().unwrap().config.server.is_clustered());
        let cluster = opts(|c| {
            c.redis_url = Some("redis://127.0.0.1:7000".into());
            c.redis_cluster = true;
        });
        assert!(cluster.unwrap().unwrap().config.server.is_clustered());
        let sentinel = opts(|c| c.redis_sentinel = vec!["127.0.0.1:26379".into()]);
        assert!(matches!(
            sentinel.unwrap().unwrap().config.server,
            ServerConfig::Sentinel { .. }
        ));
    }

    #[test]
    fn bad_settings_name_their_option() {
        let e = opts(|c| c.redis_url = Some("http://x".into())).unwrap_err();
        assert!(e.contains(ENV_REDIS_URL), "{e}");
        let e = opts(|c| c.redis_cluster = true).unwrap_err();
        assert!(e.contains(ENV_REDIS_CLUSTER), "{e}");
        let e = opts(|c| c.redis_sentinel = vec!["nohost".into()]).unwrap_err();
        assert!(e.contains(ENV_REDIS_SENTINEL), "{e}");
    }
}
