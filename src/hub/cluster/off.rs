//! Without the `cluster` feature: there is never a `Cluster`, so the hub's
//! `Option<Cluster>` is always `None` and these are never reached with
//! one; they exist so the call sites need no cfg.

use super::super::requests::After;
use super::super::Hub;
use crate::event::Payload;
use crate::feeds::cluster::ClusterFeed;
use crate::stats::{ClusterStatus, Source};

/// No cluster in this build: there is never a value of this type.
pub enum Cluster {}

impl Cluster {
    pub fn new(feed: ClusterFeed) -> Cluster {
        match feed {}
    }
}

impl Hub {
    pub fn cluster_status(&self) -> Option<ClusterStatus> {
        None
    }

    pub(in crate::hub) fn append_to_cluster(
        &mut self,
        _: Source,
        _: &str,
        _: Vec<String>,
        _: Payload<'_>,
        _: Option<(usize, After)>,
        _: Option<String>,
    ) {
    }

    pub(in crate::hub) fn send_cluster_appends(&mut self) {}

    pub(in crate::hub) fn count_cluster_deduplicated(&mut self) {}

    pub(in crate::hub) fn append_timed_out(&mut self, _: usize, _: u64) {}

    pub(in crate::hub) fn cluster_backlog_loading(&self) -> bool {
        false
    }

    pub(in crate::hub) fn drain_cluster(&mut self) {}
}
