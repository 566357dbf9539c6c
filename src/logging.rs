//! The log level, which `server.log_level` sets at start-up and a SIGHUP
//! reload may change.

/// Sets the log level (`server.log_level`: `error` … `trace`, `off`);
/// `None` is `info`.
pub fn set_log_level(level: Option<&str>) {
    let level = match level.map(str::trim) {
        None | Some("") => log::LevelFilter::Info,
        Some(text) => match text.parse() {
            Ok(level) => level,
            Err(_) => {
                log::warn!("server.log_level {text:?} is not a level; using info");
                log::LevelFilter::Info
            }
        },
    };
    log::set_max_level(level);
}
