//! One poller thread per queue: long-poll `ReceiveMessage`, hand the new
//! events to the server's channel, wake it, delete what was taken; on
//! failure log and back off.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Sender, TrySendError};
use log::{debug, info, warn};
use serde_json::{json, Value};

use crate::client::{CallError, Client};
use crate::credentials::resolve;
use crate::message::{triage, SeenIds, SqsEvent, Taken, SEEN_CAPACITY};
use crate::settings::{Credentials, QueueSettings};
use crate::stats::FeedStats;

/// Messages asked for per `ReceiveMessage` (the SQS maximum).
const MAX_MESSAGES: u32 = 10;

/// First retry delay after a failure.
pub const BACKOFF_MIN: Duration = Duration::from_secs(1);
/// Longest retry delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// Retry delays: `BACKOFF_MIN`, doubling to `BACKOFF_MAX`, reset on success.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: BACKOFF_MIN }
    }
}

impl Backoff {
    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        d
    }

    pub fn reset(&mut self) {
        self.next = BACKOFF_MIN;
    }
}

/// Starts one poller thread per queue. Each sends `SqsEvent`s on `tx`, then
/// calls `notify()` (the reactor passes its waker's `wake`), and counts in
/// `stats`. A poller ends when `tx`'s receiver has been dropped.
pub fn start(
    queues: Vec<QueueSettings>,
    tx: Sender<SqsEvent>,
    notify: Arc<dyn Fn() + Send + Sync>,
    stats: Arc<FeedStats>,
) -> Vec<JoinHandle<()>> {
    let mut handles = Vec::new();
    for settings in queues {
        let name = settings.name.clone();
        let poller = Poller {
            client: Client::new(&settings),
            settings,
            tx: tx.clone(),
            notify: notify.clone(),
            stats: stats.clone(),
            seen: SeenIds::new(SEEN_CAPACITY),
            backoff: Backoff::default(),
            failing: false,
        };
        // Thread names may not hold NUL bytes.
        let thread_name: String = format!("sqs {name}").replace('\0', "");
        match std::thread::Builder::new()
            .name(thread_name)
            .spawn(move || poller.run())
        {
            Ok(handle) => handles.push(handle),
            Err(e) => warn!("sqs.{name}: cannot start the poller thread: {e}"),
        }
    }
    handles
}

/// Why a polling session ended.
enum Stop {
    /// The receiver is gone: end the thread.
    Closed,
    /// Log, back off, start over.
    Failed(String),
}

struct Poller {
    settings: QueueSettings,
    client: Client,
    tx: Sender<SqsEvent>,
    notify: Arc<dyn Fn() + Send + Sync>,
    stats: Arc<FeedStats>,
    seen: SeenIds,
    backoff: Backoff,
    /// The last session failed (so the next success is worth a log line).
    failing: bool,
}

impl Poller {
    fn run(mut self) {
        let name = self.settings.name.clone();
        info!(
            "sqs.{name}: polling queue {} at {}{}",
            self.settings.queue,
            self.settings.endpoint.url(),
            if self.settings.delete {
                " (deleting messages)"
            } else {
                ""
            }
        );
        loop {
            match self.session() {
                Stop::Closed => {
                    debug!("sqs.{name}: event channel closed; poller stopping");
                    return;
                }
                Stop::Failed(why) => {
                    self.stats.error();
                    self.failing = true;
                    let delay = self.backoff.next_delay();
                    warn!("sqs.{name}: {why}; retrying in {}s", delay.as_secs());
                    std::thread::sleep(delay);
                }
            }
        }
    }

    /// Resolves credentials and the queue URL, then receives until something
    /// fails.
    fn session(&mut self) -> Stop {
        let creds = match resolve(&self.settings) {
            Ok(c) => c,
            Err(e) => return Stop::Failed(e),
        };
        let queue = &self.settings.queue;
        let url = if queue.starts_with("https://") || queue.starts_with("http://") {
            queue.clone()
        } else {
            match self
                .client
                .call(&creds, "GetQueueUrl", &json!({ "QueueName": queue }))
            {
                Ok(v) => match v.get("QueueUrl").and_then(Value::as_str) {
                    Some(u) => u.to_string(),
                    None => return Stop::Failed("GetQueueUrl: no QueueUrl in the answer".into()),
                },
                Err(e) => {
                    return Stop::Failed(format!("GetQueueUrl {queue} at {}: {e}", self.client.url))
                }
            }
        };
        let request = json!({
            "QueueUrl": url,
            "MaxNumberOfMessages": MAX_MESSAGES,
            "WaitTimeSeconds": self.settings.wait_time,
        });
        loop {
            let answer = match self.client.call(&creds, "ReceiveMessage", &request) {
                Ok(v) => v,
                Err(e) => return Stop::Failed(format!("ReceiveMessage {url}: {e}")),
            };
            if std::mem::take(&mut self.failing) {
                info!("sqs.{}: receiving from {url} again", self.settings.name);
            }
            self.backoff.reset();
            let messages = match answer.get("Messages") {
                None | Some(Value::Null) => continue,
                Some(Value::Array(list)) => list,
                Some(_) => {
                    return Stop::Failed(format!("ReceiveMessage {url}: Messages is not a list"))
                }
            };
            if let Err(stop) = self.take(&creds, &url, messages) {
                return stop;
            }
        }
    }

    /// Hands over new messages, then deletes what was taken (with `delete`).
    fn take(&mut self, creds: &Credentials, url: &str, messages: &[Value]) -> Result<(), Stop> {
        let name = &self.settings.name;
        self.stats.received(messages.len());
        let mut receipts = Vec::new();
        let mut sent = 0usize;
        for m in messages {
            let id = m
                .get("MessageId")
                .and_then(Value::as_str)
                .unwrap_or("without MessageId");
            if self.settings.delete {
                if let Some(r) = m.get("ReceiptHandle").and_then(Value::as_str) {
                    receipts.push(r.to_string());
                }
            }
            let event = match triage(m, &mut self.seen) {
                Taken::Event(event) => event,
                Taken::Duplicate => {
                    debug!("sqs.{name}: message {id} seen before; not published again");
                    continue;
                }
                Taken::Bad(e) => {
                    let deleting = if self.settings.delete {
                        "; deleting it"
                    } else {
                        ""
                    };
                    warn!("sqs.{name}: message {id} skipped: {e}{deleting}");
                    continue;
                }
            };
            debug!("sqs.{name}: message {id} → {}", event.path);
            match self.tx.try_send(event) {
                Ok(()) => sent += 1,
                Err(TrySendError::Full(event)) => {
                    // Let the reactor drain the channel, then wait.
                    (self.notify)();
                    if self.tx.send(event).is_err() {
                        return Err(Stop::Closed);
                    }
                    sent += 1;
                }
                Err(TrySendError::Disconnected(_)) => return Err(Stop::Closed),
            }
        }
        if sent > 0 {
            (self.notify)();
        }
        if !receipts.is_empty() {
            self.delete(creds, url, &receipts)
                .map_err(|e| Stop::Failed(format!("DeleteMessageBatch {url}: {e}")))?;
        }
        Ok(())
    }

    fn delete(&self, creds: &Credentials, url: &str, receipts: &[String]) -> Result<(), CallError> {
        let entries: Vec<Value> = receipts
            .iter()
            .enumerate()
            .map(|(i, r)| json!({ "Id": i.to_string(), "ReceiptHandle": r }))
            .collect();
        let answer = self.client.call(
            creds,
            "DeleteMessageBatch",
            &json!({ "QueueUrl": url, "Entries": entries }),
        )?;
        let failed = match answer.get("Failed") {
            Some(Value::Array(failed)) => failed.len(),
            _ => 0,
        };
        self.stats.deleted(receipts.len().saturating_sub(failed));
        if let Some(Value::Array(failed)) = answer.get("Failed") {
            for f in failed {
                self.stats.error();
                warn!(
                    "sqs.{}: could not delete a message: {} {}",
                    self.settings.name,
                    f.get("Code").and_then(Value::as_str).unwrap_or("?"),
                    f.get("Message").and_then(Value::as_str).unwrap_or("")
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_minute() {
        let mut b = Backoff::default();
        let secs: Vec<u64> = (0..9).map(|_| b.next_delay().as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        b.reset();
        assert_eq!(b.next_delay(), BACKOFF_MIN);
    }
}
