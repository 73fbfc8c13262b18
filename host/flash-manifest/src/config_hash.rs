//! The per-resource `config_hash`: detects configuration drift between deploys.
//!
//! The hash is the sha256 of the resource entry's canonical JSON (keys sorted at every
//! level, no whitespace) after removing what is not configuration: the function list, the
//! hash itself and run-time fields that deploys and the platform add (`endpoint_id`,
//! `aiKey`, `template`, …). Unlike RunPod's Flash, every config field counts for every
//! resource class, so a CPU queue endpoint's worker or scaler change is never missed.
//! Code changes are tracked separately (`component_sha256`, `source_fingerprint`).

use serde_json::{Map, Value};

use crate::manifest::ResourceEntry;

/// Keys of a resource entry that never take part in the hash.
pub const NON_CONFIG_KEYS: &[&str] = &[
    "functions",
    "config_hash",
    "source_fingerprint",
    // Decided from the code, and tracked where it matters: in the managed settings of the
    // template (whether it holds the API key).
    "makes_remote_calls",
    // Added by deploys and by the platform.
    "endpoint_id",
    "endpoint_url",
    "aiKey",
    "template",
    "templateId",
    "userId",
    "createdAt",
    "activeBuildid",
    "computeType",
    "hubRelease",
    "repo",
    "flashBootType",
    "id",
    "status",
    "deployed_at",
];

const DOMAIN: &str = "flash-config-v1:";

/// The config hash of `entry` (its current `config_hash` field is ignored).
pub fn config_hash(entry: &ResourceEntry) -> String {
    let value = serde_json::to_value(entry).expect("a resource entry always serialises");
    let Value::Object(mut map) = value else {
        unreachable!("a resource entry serialises to an object")
    };
    for key in NON_CONFIG_KEYS {
        map.remove(*key);
    }
    let canonical = canonical_json(&Value::Object(map));
    crate::sha256_hex(format!("{DOMAIN}{canonical}").as_bytes())
}

/// JSON with object keys sorted at every level and no insignificant whitespace.
pub fn canonical_json(value: &Value) -> String {
    fn sorted(value: &Value) -> Value {
        match value {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                let mut out = Map::new();
                for key in keys {
                    out.insert(key.clone(), sorted(&map[key]));
                }
                Value::Object(out)
            }
            Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    serde_json::to_string(&sorted(value)).expect("JSON values always serialise")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::describe::ScalerType;
    use crate::manifest::ResourceType;

    fn entry() -> ResourceEntry {
        ResourceEntry {
            resource_type: ResourceType::CpuLiveServerless,
            functions: vec![],
            is_load_balanced: false,
            makes_remote_calls: false,
            config_hash: String::new(),
            gpu_ids: None,
            gpu_count: None,
            instance_ids: Some(vec!["cpu3c-1-2".into()]),
            workers_min: 0,
            workers_max: 1,
            idle_timeout: 60,
            execution_timeout_ms: None,
            scaler_type: ScalerType::QueueDelay,
            scaler_value: 4,
            env: Default::default(),
            locations: None,
            min_cuda_version: None,
            container_disk_gb: None,
            flashboot: None,
            extra: Default::default(),
        }
    }

    #[test]
    fn every_config_field_changes_the_hash_even_on_cpu_queue_resources() {
        let base = config_hash(&entry());
        let mut changed = entry();
        changed.workers_max = 2;
        assert_ne!(config_hash(&changed), base);
        let mut changed = entry();
        changed.scaler_value = 5;
        assert_ne!(config_hash(&changed), base);
        let mut changed = entry();
        changed.env.insert("A".into(), "1".into());
        assert_ne!(config_hash(&changed), base);
        let mut changed = entry();
        changed.locations = Some("EU-RO-1".into());
        assert_ne!(config_hash(&changed), base);
        let mut changed = entry();
        changed.container_disk_gb = Some(5);
        assert_ne!(config_hash(&changed), base);
        let mut changed = entry();
        changed.flashboot = Some(false);
        assert_ne!(config_hash(&changed), base);
    }

    #[test]
    fn runtime_fields_and_functions_do_not_change_the_hash() {
        let base = config_hash(&entry());
        let mut e = entry();
        e.extra.insert("endpoint_id".into(), "ep-1".into());
        e.extra.insert("aiKey".into(), "k".into());
        e.config_hash = "whatever".into();
        assert_eq!(config_hash(&e), base);
    }

    #[test]
    fn canonical_json_sorts_nested_keys() {
        let v: Value = serde_json::from_str(r#"{"b":{"y":1,"x":2},"a":[{"d":1,"c":2}]}"#).unwrap();
        assert_eq!(
            canonical_json(&v),
            r#"{"a":[{"c":2,"d":1}],"b":{"x":2,"y":1}}"#
        );
    }
}
