//! A signed JSON-protocol SQS client for one endpoint and region, on a
//! blocking `ureq` agent with connect and response timeouts.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use crate::settings::{Credentials, Endpoint, QueueSettings};
use crate::sigv4::{amz_date, authorization, SignRequest};

/// Largest response body read: ten messages of at most 1 MiB, plus framing.
const MAX_RESPONSE: u64 = 16 << 20;
/// Time allowed to connect to the endpoint.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed for a response beyond the long-poll wait.
const RESPONSE_SLACK: Duration = Duration::from_secs(15);
const SERVICE: &str = "sqs";
const JSON_CONTENT_TYPE: &str = "application/x-amz-json-1.0";

/// Why an SQS call failed.
#[derive(Debug)]
pub(crate) enum CallError {
    /// Connect, TLS, timeout, reading the response.
    Transport(String),
    /// The service answered with an error.
    Service {
        status: u16,
        code: String,
        message: String,
    },
    /// An answer that is not what SQS sends.
    Protocol(String),
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Transport(e) => write!(f, "{e}"),
            CallError::Service {
                status,
                code,
                message,
            } => {
                write!(f, "HTTP {status} {code}")?;
                let message = message.trim().trim_end_matches('.');
                if !message.is_empty() {
                    write!(f, ": {message}")?;
                }
                Ok(())
            }
            CallError::Protocol(e) => write!(f, "unexpected response: {e}"),
        }
    }
}

/// A signed JSON-protocol SQS client for one endpoint and region.
pub(crate) struct Client {
    agent: ureq::Agent,
    endpoint: Endpoint,
    pub(crate) url: String,
    region: String,
}

impl Client {
    pub(crate) fn new(settings: &QueueSettings) -> Client {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_global(Some(
                Duration::from_secs(u64::from(settings.wait_time)) + RESPONSE_SLACK,
            ))
            .user_agent(concat!("pubsubd/", env!("CARGO_PKG_VERSION")))
            .build();
        Client {
            agent: config.into(),
            url: settings.endpoint.url(),
            endpoint: settings.endpoint.clone(),
            region: settings.region.clone(),
        }
    }

    /// Calls `AmazonSQS.<action>` with a JSON body; returns the JSON answer.
    pub(crate) fn call(
        &self,
        creds: &Credentials,
        action: &str,
        body: &Value,
    ) -> Result<Value, CallError> {
        let payload = body.to_string();
        let target = format!("AmazonSQS.{action}");
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let date = amz_date(now);
        let mut headers = vec![
            ("content-type", JSON_CONTENT_TYPE),
            ("host", self.endpoint.authority.as_str()),
            ("x-amz-date", date.as_str()),
            ("x-amz-target", target.as_str()),
        ];
        if let Some(token) = &creds.session_token {
            headers.push(("x-amz-security-token", token.as_str()));
        }
        let auth = authorization(
            &SignRequest {
                method: "POST",
                path: &self.endpoint.path,
                query: "",
                headers: &headers,
                payload: payload.as_bytes(),
            },
            &creds.access_key,
            &creds.secret_key,
            &self.region,
            SERVICE,
            &date,
        );
        let mut request = self
            .agent
            .post(&self.url)
            .header("Content-Type", JSON_CONTENT_TYPE)
            .header("X-Amz-Date", &date)
            .header("X-Amz-Target", &target)
            .header("Authorization", &auth);
        if let Some(token) = &creds.session_token {
            request = request.header("X-Amz-Security-Token", token);
        }
        let mut response = request
            .send(payload.as_bytes())
            .map_err(|e| CallError::Transport(e.to_string()))?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .with_config()
            .limit(MAX_RESPONSE)
            .read_to_string()
            .map_err(|e| CallError::Transport(format!("reading the response: {e}")))?;
        let value: Option<Value> = if text.trim().is_empty() {
            Some(Value::Object(Map::new()))
        } else {
            serde_json::from_str(&text).ok()
        };
        if (200..300).contains(&status) {
            return value
                .ok_or_else(|| CallError::Protocol(format!("not JSON: {}", snippet(&text))));
        }
        let (code, message) = match &value {
            Some(v) => (
                v.get("__type")
                    .and_then(Value::as_str)
                    .map(|t| t.rsplit('#').next().unwrap_or(t).to_string())
                    .unwrap_or_default(),
                v.get("message")
                    .or_else(|| v.get("Message"))
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
            ),
            None => (String::new(), snippet(&text)),
        };
        Err(CallError::Service {
            status,
            code,
            message,
        })
    }
}

fn snippet(text: &str) -> String {
    let t = text.trim();
    match t.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &t[..i]),
        None => t.to_string(),
    }
}
