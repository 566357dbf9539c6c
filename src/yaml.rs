//! The one set of YAML helpers every configuration file uses (`pypubsub.yaml`
//! and the ACL file), the error naming the file and key, and the one duration
//! grammar (`45s 30m 12h 7d 200ms`, or a number of seconds).
//!
//! Each helper takes the value and its dotted key (`server.port`,
//! `clients.ldap.acl["cn=x"].ops`) and returns a [`ConfigError`] naming that
//! key, so no section formats its own messages for type errors. `~` (null)
//! means "absent" wherever a section or an optional key is read.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_yaml::{Mapping, Value};

/// A configuration problem: which file (when loaded from one), which key
/// (dotted, e.g. `server.port` or `clients.ldap.timeout`; empty for the
/// document as a whole) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: Option<PathBuf>,
    pub key: String,
    pub message: String,
}

impl ConfigError {
    /// An error about `key`, not yet tied to a file.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: None,
            key: key.into(),
            message: message.into(),
        }
    }

    pub(crate) fn in_file(mut self, path: &Path) -> ConfigError {
        self.file = Some(path.to_owned());
        self
    }
}

impl fmt::Display for ConfigError {
    /// `file: key: message`, leaving out what is not known.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{}: ", file.display())?;
        }
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

/// An error for `key`.
pub fn err<T>(key: &str, message: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError::new(key, message))
}

/// A section that may be absent (`~`) or a mapping.
pub fn section<'a>(v: &'a Value, key: &str) -> Result<Option<&'a Mapping>, ConfigError> {
    match v {
        Value::Null => Ok(None),
        Value::Mapping(m) => Ok(Some(m)),
        other => err(key, format!("must be a mapping, found {}", kind(other))),
    }
}

/// A mapping's entries with their names (strings or numbers written bare)
/// and their dotted keys under `prefix`.
pub fn entries<'a>(
    map: &'a Mapping,
    prefix: &str,
) -> Result<Vec<(String, String, &'a Value)>, ConfigError> {
    map.iter()
        .map(|(k, v)| {
            let name = match k {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                other => {
                    return err(
                        prefix,
                        format!("keys must be strings, found {}", scalar_text(other)),
                    )
                }
            };
            let key = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}.{name}")
            };
            Ok((name, key, v))
        })
        .collect()
}

/// `key`'s value in `map`, `None` when absent or `~`.
pub fn present<'a>(map: &'a Mapping, key: &str) -> Option<&'a Value> {
    map.get(key).filter(|v| !v.is_null())
}

/// A string; a number is taken as its text.
pub fn string(v: &Value, key: &str) -> Result<String, ConfigError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        other => err(key, format!("must be a string, found {}", kind(other))),
    }
}

/// A string that is not empty once trimmed; returned trimmed.
pub fn nonempty_string(v: &Value, key: &str) -> Result<String, ConfigError> {
    let s = string(v, key)?;
    match s.trim() {
        "" => err(key, "must not be empty"),
        t => Ok(t.to_owned()),
    }
}

/// A list of strings (numbers as their text); `~` is the empty list.
pub fn string_list(v: &Value, key: &str) -> Result<Vec<String>, ConfigError> {
    match v {
        Value::Null => Ok(Vec::new()),
        Value::Sequence(items) => items.iter().map(|item| string(item, key)).collect(),
        other => err(key, format!("must be a list, found {}", kind(other))),
    }
}

/// A whole number from `min` to `max` (a numeric string is accepted).
pub fn uint_range(v: &Value, key: &str, min: u64, max: u64) -> Result<u64, ConfigError> {
    let n = match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    match n {
        Some(n) if (min..=max).contains(&n) => Ok(n),
        _ => err(key, format!("must be a whole number from {min} to {max}")),
    }
}

/// A whole number from 0 to `max`.
pub fn uint(v: &Value, key: &str, max: u64) -> Result<u64, ConfigError> {
    uint_range(v, key, 0, max)
}

/// A whole number from 1 to `max`.
pub fn positive(v: &Value, key: &str, max: u64) -> Result<u64, ConfigError> {
    match uint(v, key, max)? {
        0 => err(key, "must be greater than 0"),
        n => Ok(n),
    }
}

/// A YAML boolean; also the YAML 1.1 words PyYAML reads as booleans
/// (`yes`/`no`, `on`/`off`), which YAML 1.2 reads as strings.
pub fn boolean(v: &Value, key: &str) -> Result<bool, ConfigError> {
    let b = match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" => Some(true),
            "false" | "no" | "off" => Some(false),
            _ => None,
        },
        _ => None,
    };
    b.map_or_else(|| err(key, "must be true or false"), Ok)
}

/// A duration in the one grammar: a number of seconds, or a string like
/// `45s`, `30m`, `12h`, `7d`, `200ms` (see [`parse_duration`]).
pub fn duration(v: &Value, key: &str) -> Result<Duration, ConfigError> {
    let parsed = match v {
        Value::Number(n) => n.as_f64().and_then(seconds),
        Value::String(s) => parse_duration(s),
        _ => None,
    };
    parsed.map_or_else(
        || {
            err(
                key,
                "must be a duration like 45s, 30m, 12h, 7d, 200ms or a number of seconds",
            )
        },
        Ok,
    )
}

/// A duration greater than zero.
pub fn positive_duration(v: &Value, key: &str) -> Result<Duration, ConfigError> {
    let d = duration(v, key)?;
    if d.is_zero() {
        return err(key, "must be greater than 0");
    }
    Ok(d)
}

fn seconds(secs: f64) -> Option<Duration> {
    (secs.is_finite() && (0.0..=1e10).contains(&secs)).then(|| Duration::from_secs_f64(secs))
}

/// `45s`, `30m`, `12h`, `7d`, `1w`, `200ms`, or a bare number of seconds
/// (fractions allowed; negative, NaN and over ~300 years refused).
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let scale = match unit.trim() {
        "" | "s" => 1.0,
        "ms" => 0.001,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        "w" => 7.0 * 86_400.0,
        _ => return None,
    };
    seconds(number * scale)
}

/// What kind of YAML value `v` is, for messages.
pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

/// A mapping key as written: strings bare, other scalars as YAML shows them.
pub fn key_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => scalar_text(other),
    }
}

/// A short rendering of a YAML value for messages and log lines.
pub fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "~".into(),
        other => kind(other).into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(text: &str) -> Value {
        serde_yaml::from_str(text).expect("yaml")
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("45s"), Some(Duration::from_secs(45)));
        assert_eq!(parse_duration("30m"), Some(Duration::from_secs(1800)));
        assert_eq!(parse_duration("12h"), Some(Duration::from_secs(43_200)));
        assert_eq!(parse_duration("7d"), Some(Duration::from_secs(604_800)));
        assert_eq!(parse_duration("200ms"), Some(Duration::from_millis(200)));
        assert_eq!(parse_duration("90"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("5 s"), Some(Duration::from_secs(5)));
        assert_eq!(parse_duration("5x"), None);
        assert_eq!(parse_duration(""), None);
        assert_eq!(parse_duration("-5s"), None);
        assert_eq!(parse_duration("s"), None);
    }

    #[test]
    fn duration_values() {
        let d = |t: &str| duration(&yaml(t), "k");
        assert_eq!(d("5").unwrap(), Duration::from_secs(5));
        assert_eq!(d("0.25").unwrap(), Duration::from_millis(250));
        assert_eq!(d("'2'").unwrap(), Duration::from_secs(2));
        assert_eq!(d("1d").unwrap(), Duration::from_secs(86_400));
        for bad in ["-1", ".nan", ".inf", "true", "[5]", "abc"] {
            let e = d(bad).unwrap_err();
            assert_eq!(e.key, "k", "{bad}");
            assert!(e.message.starts_with("must be a duration"), "{bad}: {e}");
        }
        let e = positive_duration(&yaml("0"), "k").unwrap_err();
        assert_eq!(e.message, "must be greater than 0");
    }

    #[test]
    fn scalars() {
        assert_eq!(string(&yaml("7"), "k").unwrap(), "7");
        assert!(string(&yaml("[7]"), "k").is_err());
        assert_eq!(nonempty_string(&yaml("' x '"), "k").unwrap(), "x");
        assert_eq!(
            nonempty_string(&yaml("' '"), "k").unwrap_err().message,
            "must not be empty"
        );
        assert_eq!(uint(&yaml("'12'"), "k", 20).unwrap(), 12);
        assert!(uint(&yaml("21"), "k", 20).is_err());
        assert!(uint(&yaml("1.5"), "k", 20).is_err());
        assert!(uint(&yaml("-1"), "k", 20).is_err());
        assert!(positive(&yaml("0"), "k", 20).is_err());
        assert!(uint_range(&yaml("0"), "k", 1, 20).is_err());
        for (t, b) in [
            ("true", true),
            ("no", false),
            ("On", true),
            ("'off'", false),
        ] {
            assert_eq!(boolean(&yaml(t), "k").unwrap(), b, "{t}");
        }
        assert!(boolean(&yaml("maybe"), "k").is_err());
        assert!(boolean(&yaml("1"), "k").is_err());
        assert_eq!(string_list(&yaml("~"), "k").unwrap(), Vec::<String>::new());
        assert!(string_list(&yaml("x"), "k").is_err());
    }
}
