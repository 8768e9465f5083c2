//! Facts about the Cloud Foundry instance, from `VCAP_APPLICATION` and `CF_INSTANCE_*`.

use super::ConfigError;
use super::env::{RawEnv, parse_num};

/// Facts about the platform this instance runs on.
#[derive(Clone, Debug)]
pub struct Platform {
    /// Whether `VCAP_APPLICATION` is set.
    pub on_cloud_foundry: bool,
    /// Index of this instance among the app's instances.
    pub instance_index: u32,
    /// Platform GUID of this instance.
    pub instance_guid: Option<String>,
    /// Application name from `VCAP_APPLICATION`.
    pub app_name: Option<String>,
}

impl Platform {
    /// `VCAP_APPLICATION`, with `CF_INSTANCE_INDEX` and `CF_INSTANCE_GUID` winning over it.
    pub(super) fn from_raw(raw: &RawEnv) -> Result<Self, ConfigError> {
        let app: Option<serde_json::Value> = raw
            .vcap_application
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(ConfigError::VcapApplication)?;
        let app_field = |k: &str| app.as_ref().and_then(|a| a.get(k));
        let instance_index = match raw.cf_instance_index.as_deref() {
            Some(_) => parse_num(
                raw.cf_instance_index.as_deref(),
                "CF_INSTANCE_INDEX",
                "a non-negative instance number",
                0,
                0..=u32::MAX,
            )?,
            None => app_field("instance_index")
                .and_then(serde_json::Value::as_u64)
                .and_then(|i| u32::try_from(i).ok())
                .unwrap_or(0),
        };
        Ok(Self {
            on_cloud_foundry: app.is_some(),
            instance_index,
            instance_guid: raw.cf_instance_guid.clone().or_else(|| {
                app_field("instance_id")
                    .and_then(|v| v.as_str())
                    .map(str::to_owned)
            }),
            app_name: app_field("application_name")
                .or_else(|| app_field("name"))
                .and_then(|v| v.as_str())
                .map(str::to_owned),
        })
    }
}
