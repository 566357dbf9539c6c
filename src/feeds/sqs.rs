//! The SQS feed's handle: the pollers' events and their counters. Each
//! message body is published exactly as a `PUT` to its `pubsub_path`.
//! Without the `sqs` feature, `Sqs` is a type with no values.

#[cfg(feature = "sqs")]
pub use with_sqs::Sqs;
#[cfg(not(feature = "sqs"))]
pub use without_sqs::Sqs;

/// One message taken from a queue: its `pubsub_path` and its body object.
pub type SqsMessage = (String, serde_json::Map<String, serde_json::Value>);

#[cfg(feature = "sqs")]
mod with_sqs {
    use std::sync::Arc;

    use crossbeam_channel::Receiver;
    use sqs_feed::{FeedStats, SqsEvent};

    use super::super::{FeedError, Wake};
    use super::SqsMessage;
    use crate::config::SqsQueueConfig;
    use crate::stats::SqsCounts;

    /// The pollers' end the hub holds.
    pub struct Sqs {
        events: Receiver<SqsEvent>,
        stats: Arc<FeedStats>,
    }

    impl Sqs {
        /// Starts one poller per configured queue; `None` without queues.
        pub fn start(queues: &[SqsQueueConfig], wake: Wake) -> Result<Option<Sqs>, FeedError> {
            if queues.is_empty() {
                return Ok(None);
            }
            let queues = queues.iter().map(settings).collect();
            let (tx, rx) = crossbeam_channel::bounded(1024);
            let stats = Arc::new(FeedStats::default());
            sqs_feed::start(queues, tx, wake, stats.clone());
            Ok(Some(Sqs { events: rx, stats }))
        }

        /// The messages sent since the last call.
        pub fn take(&self) -> Vec<SqsMessage> {
            self.events
                .try_iter()
                .map(|event| (event.path, event.object))
                .collect()
        }

        pub fn counts(&self) -> SqsCounts {
            let c = self.stats.counts();
            SqsCounts {
                received: c.received,
                deleted: c.deleted,
                errors: c.errors,
            }
        }
    }

    /// A validated `sqs` entry as the feed's settings.
    fn settings(q: &SqsQueueConfig) -> sqs_feed::QueueSettings {
        sqs_feed::QueueSettings {
            name: q.name.clone(),
            queue: q.queue.clone(),
            region: q.region.clone(),
            delete: q.delete,
            credentials: q.credentials.as_ref().map(|c| sqs_feed::Credentials {
                access_key: c.access_key.clone(),
                secret_key: c.secret_key.clone(),
                session_token: None,
            }),
            endpoint: sqs_feed::Endpoint {
                https: q.endpoint.https,
                authority: q.endpoint.authority.clone(),
                path: q.endpoint.path.clone(),
            },
            wait_time: q.wait_time,
        }
    }
}

#[cfg(not(feature = "sqs"))]
mod without_sqs {
    use super::super::{FeedError, Wake};
    use super::SqsMessage;
    use crate::config::SqsQueueConfig;
    use crate::stats::SqsCounts;

    /// No SQS in this build: there is never a value of this type.
    pub enum Sqs {}

    impl Sqs {
        pub fn start(queues: &[SqsQueueConfig], _: Wake) -> Result<Option<Sqs>, FeedError> {
            if !queues.is_empty() {
                log::warn!("the sqs section is ignored: this build has no SQS support");
            }
            Ok(None)
        }

        pub fn take(&self) -> Vec<SqsMessage> {
            match *self {}
        }

        pub fn counts(&self) -> SqsCounts {
            match *self {}
        }
    }
}
