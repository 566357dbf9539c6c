//! What the server hands a poller: one queue's settings, where its
//! requests go, and configured credentials (never shown by `Debug`).
//! Validated by the server's config before they get here.

use std::fmt;

/// AWS credentials. `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key: String,
    pub secret_key: String,
    pub session_token: Option<String>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key", &self.access_key)
            .field("secret_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Where requests go: scheme, `host[:port]` (default port left out, as in
/// the `Host` header) and the base path. Validated by the server's config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub https: bool,
    pub authority: String,
    pub path: String,
}

impl Endpoint {
    /// `scheme://authority/path/`.
    pub fn url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}{}", self.authority, self.path)
    }
}

/// The settings of one queue (one entry of the server's `sqs:` section).
#[derive(Debug, Clone, PartialEq)]
pub struct QueueSettings {
    /// The entry's name in the configuration (for logs).
    pub name: String,
    /// A queue name (resolved with GetQueueUrl) or a queue URL.
    pub queue: String,
    pub region: String,
    /// Delete messages once taken.
    pub delete: bool,
    /// Configured `key` and `secret`; `None` = the standard AWS chain.
    pub credentials: Option<Credentials>,
    pub endpoint: Endpoint,
    /// Long-poll seconds, 1 to 20.
    pub wait_time: u32,
}
