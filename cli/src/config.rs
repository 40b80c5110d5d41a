//! Container configs (§1.1) as files: reading a YAML or JSON config with
//! every unknown key reported (never dropped silently), and printing one
//! with its empty fields left out.

use std::path::Path;

use anyhow::{Context as _, Result, anyhow, bail};
use serde_json::{Value, json};
use shoal_protocol::model::{ContainerConfig, ImageRef};

/// Keys of `given` (recursively) that `known` does not have: the fields a
/// deserializer would have ignored. Paths look like `health.intervall`.
pub fn unknown_keys(given: &Value, known: &Value, path: &str) -> Vec<String> {
    let mut out = Vec::new();
    match (given, known) {
        (Value::Object(g), Value::Object(k)) => {
            for (key, gv) in g {
                let p = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match k.get(key) {
                    Some(kv) => out.extend(unknown_keys(gv, kv, &p)),
                    None => out.push(p),
                }
            }
        }
        (Value::Array(g), Value::Array(k)) => {
            for (i, (gv, kv)) in g.iter().zip(k).enumerate() {
                out.extend(unknown_keys(gv, kv, &format!("{path}[{i}]")));
            }
        }
        _ => {}
    }
    out
}

/// Parses a container config from YAML or JSON text; unknown keys are an
/// error that names them.
pub fn parse_config(text: &str, origin: &str) -> Result<ContainerConfig> {
    let yaml: serde_norway::Value =
        serde_norway::from_str(text).with_context(|| format!("{origin} is not YAML or JSON"))?;
    let given =
        serde_json::to_value(&yaml).map_err(|e| anyhow!("{origin}: {e} (keys must be text)"))?;
    if given.is_null() {
        return Ok(ContainerConfig::default());
    }
    let config: ContainerConfig = serde_json::from_value(given.clone())
        .map_err(|e| anyhow!("{origin} is not a container config: {e}"))?;
    let known = serde_json::to_value(&config)?;
    let unknown = unknown_keys(&given, &known, "");
    if !unknown.is_empty() {
        bail!(
            "{origin} has keys shoal does not know: {} (see the container config fields in the docs)",
            unknown.join(", ")
        );
    }
    Ok(config)
}

/// Reads a config file (`.yaml`, `.yml` or `.json`).
pub fn read_config(path: &Path) -> Result<ContainerConfig> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow!("cannot read {}: {e}", path.display()))?;
    parse_config(&text, &path.display().to_string())
}

/// `v` without nulls, empty maps and empty lists (for display).
pub fn pruned(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| (k, pruned(v)))
                .filter(|(_, v)| match v {
                    Value::Null => false,
                    Value::Object(m) => !m.is_empty(),
                    Value::Array(a) => !a.is_empty(),
                    _ => true,
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(pruned).collect()),
        other => other,
    }
}

/// A config as YAML, empty fields left out.
pub fn to_yaml(v: &Value) -> Result<String> {
    let p = pruned(v.clone());
    if p.as_object().is_some_and(|m| m.is_empty()) {
        return Ok("{}\n".into());
    }
    Ok(serde_norway::to_string(&p)?)
}

/// The config shown by `--show`: the image's config with its image ref.
pub fn effective(image: &ImageRef, registry: &str, c: &ContainerConfig) -> Result<Value> {
    let mut v = serde_json::to_value(c)?;
    v["image"] = json!({
        "registry": registry,
        "name": image.name,
        "tag": image.tag,
    });
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_yaml_config_parses_and_unknown_keys_are_named() {
        let c = parse_config(
            "env:\n  A: '1'\nports:\n  - {internal: 80, external: 8080, protocol: tcp}\nrestart: unless-stopped\nsecrets:\n  DB_PASSWORD: {required: true}\n",
            "c.yaml",
        )
        .unwrap();
        assert_eq!(c.env["A"], "1");
        assert_eq!(c.ports[0].external, Some(8080));
        assert!(c.secrets["DB_PASSWORD"].required);
        let e = parse_config(
            "env: {A: '1'}\nrestrt: always\nhealth: {command: [CMD, x], intervall_ms: 5}\n",
            "c.yaml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("restrt"), "{e}");
        assert!(e.contains("health.intervall_ms"), "{e}");
        // JSON is YAML too.
        let c = parse_config(r#"{"user": "app", "tty": true}"#, "c.json").unwrap();
        assert_eq!(c.user.as_deref(), Some("app"));
        assert!(parse_config("", "empty").unwrap() == ContainerConfig::default());
    }

    #[test]
    fn display_leaves_out_empty_fields() {
        let c = ContainerConfig {
            user: Some("app".into()),
            ..Default::default()
        };
        let y = to_yaml(&serde_json::to_value(&c).unwrap()).unwrap();
        assert_eq!(y.trim(), "user: app");
        let y = to_yaml(&serde_json::to_value(ContainerConfig::default()).unwrap()).unwrap();
        assert_eq!(y.trim(), "{}");
    }
}
