//! The cluster feed: the `cluster-bus` threads that append to and read
//! from the Redis stream shared with the other nodes. `start` translates
//! the `cluster` section into the bus's settings and names this node; the
//! hub's side (`hub/cluster/`) wraps what it returns. Without the
//! `cluster` feature, `ClusterFeed` is a type with no values.

#[cfg(feature = "cluster")]
pub use with_cluster::ClusterFeed;
#[cfg(not(feature = "cluster"))]
pub use without_cluster::ClusterFeed;

#[cfg(feature = "cluster")]
mod with_cluster {
    use std::time::Duration;

    use cluster_bus::{Bus, SentinelTarget, Settings, Target};
    use log::info;

    use super::super::{FeedError, Wake};
    use crate::config::{ClusterConfig, ClusterRedis};

    /// The running bus and who this node is on it.
    pub struct ClusterFeed {
        pub bus: Bus,
        /// This node's name in the entries it appends (a fresh UUID).
        pub node: String,
        /// How long a publisher waits for Redis's acknowledgement.
        pub timeout: Duration,
        /// Entries the stream keeps (the trim horizon back-pressure
        /// keeps every live node ahead of).
        pub max_len: u64,
    }

    impl ClusterFeed {
        /// Starts the bus; `None` without a `cluster` section. The newest
        /// `backlog_size` entries are loaded into the backlog.
        pub fn start(
            config: Option<&ClusterConfig>,
            backlog_size: usize,
            wake: Wake,
        ) -> Result<Option<ClusterFeed>, FeedError> {
            let Some(cluster) = config else {
                return Ok(None);
            };
            let node = uuid::Uuid::new_v4().to_string();
            let settings = settings(cluster, backlog_size, &node);
            info!(
                "cluster: node {node} on stream {:?} ({:?}, max_len {})",
                settings.stream, settings.target, settings.max_len
            );
            let bus = cluster_bus::start(settings, wake).map_err(|e| FeedError {
                feed: "cluster",
                source: Box::new(e),
            })?;
            Ok(Some(ClusterFeed {
                bus,
                node,
                timeout: cluster.timeout,
                max_len: cluster.max_len(backlog_size),
            }))
        }
    }

    /// The validated `cluster` section as the bus's settings.
    fn settings(cluster: &ClusterConfig, backlog_size: usize, node: &str) -> Settings {
        let target = match &cluster.redis {
            ClusterRedis::Url(url) => Target::Url(url.clone()),
            ClusterRedis::Sentinel(s) => Target::Sentinel(SentinelTarget {
                master: s.master.clone(),
                nodes: s.nodes.clone(),
                username: s.username.clone(),
                password: s.password.clone(),
                sentinel_password: s.sentinel_password.clone(),
            }),
        };
        Settings {
            target,
            stream: cluster.stream.clone(),
            max_len: cluster.max_len(backlog_size),
            timeout: cluster.timeout,
            ca_file: cluster.ca_file.clone(),
            load: backlog_size,
            node: node.to_owned(),
            node_timeout: cluster.node_timeout,
        }
    }
}

#[cfg(not(feature = "cluster"))]
mod without_cluster {
    use super::super::{FeedError, Wake};
    use crate::config::ClusterConfig;

    /// No cluster in this build: there is never a value of this type.
    pub enum ClusterFeed {}

    impl ClusterFeed {
        pub fn start(
            config: Option<&ClusterConfig>,
            _: usize,
            _: Wake,
        ) -> Result<Option<ClusterFeed>, FeedError> {
            if config.is_some() {
                log::warn!("the cluster section is ignored: this build has no cluster support");
            }
            Ok(None)
        }
    }
}
