//! The raw environment: the one list of variables, each read as a string so that errors can
//! name the variable.
//!
//! `RawEnv`'s fields are that list. The names the reader accepts are derived from them, and
//! tests check the module doc table in `config/mod.rs` and the README's table against them,
//! so a variable cannot be added in one place and forgotten in another.

use std::sync::LazyLock;

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// The raw environment; a field here is a variable read, named by its upper-cased field name.
#[derive(Deserialize, Serialize, Default)]
pub(super) struct RawEnv {
    pub(super) port: Option<String>,
    pub(super) metrics_port: Option<String>,
    pub(super) vcap_application: Option<String>,
    pub(super) vcap_services: Option<String>,
    pub(super) cf_instance_index: Option<String>,
    pub(super) cf_instance_guid: Option<String>,
    pub(super) redis_url: Option<String>,
    pub(super) redis_service_name: Option<String>,
    pub(super) redis_mode: Option<String>,
    pub(super) redis_sentinels: Option<String>,
    pub(super) redis_sentinel_master: Option<String>,
    pub(super) redis_sentinel_password: Option<String>,
    pub(super) redis_cluster_nodes: Option<String>,
    pub(super) session_store: Option<String>,
    pub(super) session_secret: Option<String>,
    pub(super) session_ttl_seconds: Option<String>,
    pub(super) session_cookie_name: Option<String>,
    pub(super) session_key_prefix: Option<String>,
    pub(super) cookie_secure: Option<String>,
    pub(super) redis_pool_size: Option<String>,
    pub(super) redis_timeout_ms: Option<String>,
    pub(super) memory_store_max_sessions: Option<String>,
    pub(super) http_workers: Option<String>,
    pub(super) shutdown_timeout_seconds: Option<String>,
    pub(super) log_format: Option<String>,
    pub(super) rust_log: Option<String>,
}

/// Every variable read, by its exact name, in `RawEnv`'s field order.
pub(super) static VARIABLES: LazyLock<Vec<String>> = LazyLock::new(|| {
    match serde_json::to_value(RawEnv::default()) {
        Ok(serde_json::Value::Object(fields)) => {
            fields.keys().map(|k| k.to_ascii_uppercase()).collect()
        }
        // A struct of optional strings always serialises to an object.
        _ => unreachable!("RawEnv serialises to an object"),
    }
});

impl RawEnv {
    /// Reads the given variables, as if they were the environment.
    pub(super) fn from_vars<I>(vars: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        // Only the exact upper-case names count: envy lower-cases names, so `port` next to
        // `PORT` would otherwise collide. Blank values are treated as unset: platforms and
        // shells produce them freely.
        let vars = vars
            .into_iter()
            .filter(|(k, v)| VARIABLES.iter().any(|name| name == k) && !v.trim().is_empty());
        envy::from_iter(vars).map_err(|e| ConfigError::Environment(e.to_string()))
    }
}

/// Parses a number within `range`, or gives `default` when the variable is unset.
pub(super) fn parse_num<T: std::str::FromStr + PartialOrd>(
    value: Option<&str>,
    var: &'static str,
    expected: &'static str,
    default: T,
    range: std::ops::RangeInclusive<T>,
) -> Result<T, ConfigError> {
    let Some(text) = value else {
        return Ok(default);
    };
    match text.trim().parse::<T>() {
        Ok(n) if range.contains(&n) => Ok(n),
        _ => Err(ConfigError::Invalid {
            var,
            expected,
            got: text.to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// The names in the first column of a Markdown table whose header starts with `| variable |`.
    fn table_names(text: &str) -> BTreeSet<String> {
        let mut names = BTreeSet::new();
        let mut in_table = false;
        for line in text.lines() {
            let line = line.trim_start_matches("//!").trim();
            if line.starts_with("| variable |") {
                in_table = true;
                continue;
            }
            if in_table && !line.starts_with('|') {
                in_table = false;
            }
            if !in_table {
                continue;
            }
            let first = line.split('|').nth(1).unwrap_or_default();
            // A row may name several variables: "`SSL_CERT_FILE`, `SSL_CERT_DIR`".
            names.extend(
                first
                    .split('`')
                    .skip(1)
                    .step_by(2)
                    .map(str::to_owned)
                    .filter(|n| !n.is_empty()),
            );
        }
        names
    }

    fn variables() -> BTreeSet<String> {
        VARIABLES.iter().cloned().collect()
    }

    #[test]
    fn every_variable_is_read_under_its_exact_name() {
        for (i, name) in VARIABLES.iter().enumerate() {
            let raw = RawEnv::from_vars([(name.clone(), format!("value {i}"))]).unwrap();
            let read = serde_json::to_value(raw).unwrap();
            assert_eq!(
                read[name.to_ascii_lowercase()],
                format!("value {i}"),
                "{name} is listed but not read"
            );
        }
    }

    #[test]
    fn the_module_doc_table_lists_exactly_the_variables_read() {
        let documented = table_names(include_str!("mod.rs"));
        assert_eq!(
            documented,
            variables(),
            "the table in src/config/mod.rs and RawEnv disagree"
        );
    }

    #[test]
    fn the_readme_documents_every_variable_read() {
        let documented = table_names(include_str!("../../README.md"));
        let missing: Vec<_> = variables().difference(&documented).cloned().collect();
        assert!(
            missing.is_empty(),
            "README.md's configuration table misses {missing:?}"
        );
    }
}
