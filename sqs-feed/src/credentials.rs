//! AWS credentials: the configured `key`/`secret`, else the standard
//! chain (environment, then the shared credentials and config files).
//! Looked up at the start of every polling session, so rotated
//! credentials are picked up after a failure.

use std::path::PathBuf;

use crate::settings::{Credentials, QueueSettings};

/// The standard chain: `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` /
/// `AWS_SESSION_TOKEN`, then the profile (`AWS_PROFILE`, else `default`) in
/// `~/.aws/credentials` (`AWS_SHARED_CREDENTIALS_FILE`), then in
/// `~/.aws/config` (`AWS_CONFIG_FILE`).
pub fn credentials_from_chain(
    env: &dyn Fn(&str) -> Option<String>,
    read: &dyn Fn(&PathBuf) -> Option<String>,
) -> Result<Credentials, String> {
    let nonempty = |k: &str| env(k).filter(|v| !v.trim().is_empty());
    if let (Some(access_key), Some(secret_key)) = (
        nonempty("AWS_ACCESS_KEY_ID"),
        nonempty("AWS_SECRET_ACCESS_KEY"),
    ) {
        return Ok(Credentials {
            access_key,
            secret_key,
            session_token: nonempty("AWS_SESSION_TOKEN"),
        });
    }
    let profile = nonempty("AWS_PROFILE").unwrap_or_else(|| "default".into());
    let home = nonempty("HOME").map(PathBuf::from);
    let file = |var: &str, name: &str| {
        nonempty(var)
            .map(PathBuf::from)
            .or_else(|| home.as_ref().map(|h| h.join(".aws").join(name)))
    };
    let config_section = if profile == "default" {
        "default".to_string()
    } else {
        format!("profile {profile}")
    };
    let sources = [
        (
            file("AWS_SHARED_CREDENTIALS_FILE", "credentials"),
            profile.clone(),
        ),
        (file("AWS_CONFIG_FILE", "config"), config_section),
    ];
    for (path, section) in sources {
        let Some(path) = path else { continue };
        let Some(text) = read(&path) else { continue };
        let values = ini_section(&text, &section);
        let get = |k: &str| {
            values
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
                .filter(|v| !v.is_empty())
        };
        if let (Some(access_key), Some(secret_key)) =
            (get("aws_access_key_id"), get("aws_secret_access_key"))
        {
            return Ok(Credentials {
                access_key,
                secret_key,
                session_token: get("aws_session_token"),
            });
        }
    }
    Err(format!(
        "no AWS credentials: set key and secret, AWS_ACCESS_KEY_ID and \
         AWS_SECRET_ACCESS_KEY, or profile '{profile}' in ~/.aws/credentials"
    ))
}

/// The `key = value` lines of `[section]` in an INI file.
fn ini_section(text: &str, section: &str) -> Vec<(String, String)> {
    let mut inside = false;
    let mut values = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = name.trim() == section;
            continue;
        }
        if inside {
            if let Some((k, v)) = line.split_once('=') {
                values.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
    }
    values
}

/// The queue's own credentials, else the chain from this process's
/// environment and files.
pub(crate) fn resolve(settings: &QueueSettings) -> Result<Credentials, String> {
    match &settings.credentials {
        Some(c) => Ok(c.clone()),
        None => credentials_from_chain(&|k| std::env::var(k).ok(), &|p| {
            std::fs::read_to_string(p).ok()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Endpoint;

    #[test]
    fn credential_chain() {
        let no_files = |_: &PathBuf| None;
        // Environment first.
        let env = |k: &str| match k {
            "AWS_ACCESS_KEY_ID" => Some("AK".to_string()),
            "AWS_SECRET_ACCESS_KEY" => Some("SK".to_string()),
            "AWS_SESSION_TOKEN" => Some("TOK".to_string()),
            _ => None,
        };
        let c = credentials_from_chain(&env, &no_files).unwrap();
        assert_eq!((c.access_key.as_str(), c.secret_key.as_str()), ("AK", "SK"));
        assert_eq!(c.session_token.as_deref(), Some("TOK"));
        // Then the shared credentials file, default profile or AWS_PROFILE.
        let files = |p: &PathBuf| match p.to_str()? {
            "/home/u/.aws/credentials" => Some(
                "# comment\n[default]\naws_access_key_id = DK\naws_secret_access_key=DS\n\n\
                 [work]\naws_access_key_id = WK\naws_secret_access_key = WS\n\
                 aws_session_token = WT\n"
                    .to_string(),
            ),
            "/home/u/.aws/config" => Some(
                "[profile cfg]\nregion = us-east-1\naws_access_key_id = CK\n\
                 aws_secret_access_key = CS\n"
                    .to_string(),
            ),
            _ => None,
        };
        let home = |k: &str| (k == "HOME").then(|| "/home/u".to_string());
        let c = credentials_from_chain(&home, &files).unwrap();
        assert_eq!((c.access_key.as_str(), c.session_token), ("DK", None));
        let work = |k: &str| match k {
            "HOME" => Some("/home/u".to_string()),
            "AWS_PROFILE" => Some("work".to_string()),
            _ => None,
        };
        let c = credentials_from_chain(&work, &files).unwrap();
        assert_eq!(c.access_key, "WK");
        assert_eq!(c.session_token.as_deref(), Some("WT"));
        // Then the config file's "profile NAME" section.
        let cfg = |k: &str| match k {
            "HOME" => Some("/home/u".to_string()),
            "AWS_PROFILE" => Some("cfg".to_string()),
            _ => None,
        };
        assert_eq!(
            credentials_from_chain(&cfg, &files).unwrap().access_key,
            "CK"
        );
        // An explicit file location wins over HOME.
        let explicit = |k: &str| match k {
            "HOME" => Some("/nowhere".to_string()),
            "AWS_SHARED_CREDENTIALS_FILE" => Some("/home/u/.aws/credentials".to_string()),
            _ => None,
        };
        assert_eq!(
            credentials_from_chain(&explicit, &files)
                .unwrap()
                .access_key,
            "DK"
        );
        // Nothing anywhere: an error that says what to set.
        let e = credentials_from_chain(&|_| None, &no_files).unwrap_err();
        assert!(e.contains("no AWS credentials"), "{e}");
        // Half an environment pair is not enough.
        let half = |k: &str| (k == "AWS_ACCESS_KEY_ID").then(|| "AK".to_string());
        assert!(credentials_from_chain(&half, &no_files).is_err());
    }

    #[test]
    fn configured_credentials_win() {
        let q = QueueSettings {
            name: "a".into(),
            queue: "q".into(),
            region: "us-east-1".into(),
            delete: false,
            credentials: Some(Credentials {
                access_key: "K".into(),
                secret_key: "S".into(),
                session_token: None,
            }),
            endpoint: Endpoint {
                https: true,
                authority: "sqs.us-east-1.amazonaws.com".into(),
                path: "/".into(),
            },
            wait_time: 20,
        };
        assert_eq!(resolve(&q).unwrap().access_key, "K");
    }
}
