//! The stand-in for builds without the `tokens` feature: `Tokens` is a
//! type with no values, so the hub's `Option<Tokens>` is always `None`, no
//! token is ever accepted, and the call sites need no cfg.

use super::TokenCheck;
use crate::config::{ConfigError, TokensConfig};
use crate::http::RequestHead;

/// No tokens in this build: there is never a value of this type.
pub enum Tokens {}

impl Tokens {
    pub fn load(config: Option<&TokensConfig>) -> Result<Option<Tokens>, ConfigError> {
        match config {
            Some(never) => match *never {},
            None => Ok(None),
        }
    }

    pub fn check_config(config: Option<&TokensConfig>) -> Result<Option<String>, ConfigError> {
        Self::load(config).map(|_| None)
    }

    pub fn summary(&self) -> &str {
        match *self {}
    }

    pub fn check(&self, _: &RequestHead, _: bool, _: impl FnOnce() -> f64) -> TokenCheck {
        match *self {}
    }
}
