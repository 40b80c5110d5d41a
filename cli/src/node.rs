//! `shoal node show [NODE]`: what a node is and, for this daemon's own
//! node, how it runs: peers and sync lag, quarantined ops, runtime health
//! and the store.
//!
//! The JSON form (`-o json`) is one object, every key always present:
//! the node as the team records it (`key`, `name`, `runtime`, `enc_key`,
//! `addresses`, `agent_version`, `protocol_version`, `joined`, `invite`,
//! `sponsor`, `removed`) with `addresses` and `agent_version` replaced by
//! the latest heartbeat's when there is one, plus `status`, `this_node`,
//! `seen_ms_ago`, and `peers`, `ops`, `runtime_health`, `store`, which are
//! `null` for a node other than this daemon's own (see `docs/api.md`).

use std::io::Write;

use anyhow::Result;
use serde_json::{Value, json};

use crate::client::Client;
use crate::read::{list_of, pick_team, segment, str_of};
use crate::write::find;

/// Shows `node` (default: this daemon's own node).
pub async fn show(
    client: &Client,
    team: Option<&str>,
    node: Option<&str>,
    json_out: bool,
    out: &mut impl Write,
) -> Result<()> {
    let team = pick_team(client, team).await?;
    let route = |tail: &str| format!("/v1/teams/{}/{tail}", segment(&team));
    let here = client.get("/v1/node").await?;
    let me = str_of(&here, "key");
    let list = client.get(&route("nodes")).await?;
    let n = match node {
        Some(arg) => find(list_of(&list), arg, "node")?.clone(),
        None => find(list_of(&list), &me, "node")?.clone(),
    };
    let key = str_of(&n, "key");
    let this_node = key == me;
    let all = client.get(&route("status")).await?;
    let st = list_of(&all)
        .iter()
        .find(|s| str_of(s, "key") == key)
        .cloned()
        .unwrap_or(Value::Null);
    let status = match str_of(&st, "status") {
        s if s.is_empty() => "unreachable".to_string(),
        s => s,
    };
    let mut v = n;
    v["status"] = json!(status);
    v["this_node"] = json!(this_node);
    v["seen_ms_ago"] = st.get("seen_ms_ago").cloned().unwrap_or(Value::Null);
    if let Some(a) = st.get("agent_version").filter(|a| !a.is_null()) {
        v["agent_version"] = a.clone();
    }
    if let Some(a) = st.get("addresses").filter(|a| a.is_array()) {
        v["addresses"] = a.clone();
    }
    for k in ["peers", "ops", "runtime_health", "store"] {
        v[k] = Value::Null;
    }
    if this_node {
        let sync = client.get(&route("sync")).await?;
        v["peers"] = sync.get("peers").cloned().unwrap_or(Value::Null);
        v["ops"] = sync.get("ops").cloned().unwrap_or(Value::Null);
        v["runtime_health"] = client.get("/v1/node/health").await?;
        v["store"] = client.get("/v1/node/store").await?;
    }
    if json_out {
        writeln!(out, "{}", serde_json::to_string(&v)?)?;
        return Ok(());
    }
    print_table(&v, out)
}

fn words(v: &Value) -> String {
    let list: Vec<String> = list_of(v)
        .iter()
        .filter_map(|x| x.as_str().map(str::to_string))
        .collect();
    if list.is_empty() {
        "-".into()
    } else {
        list.join(" ")
    }
}

fn count(v: &Value) -> String {
    v.as_u64().map_or_else(|| "?".into(), |n| n.to_string())
}

fn print_table(v: &Value, out: &mut impl Write) -> Result<()> {
    const W: usize = 12;
    let line = |out: &mut dyn Write, k: &str, val: String| writeln!(out, "{k:<W$}{val}");
    line(out, "name", str_of(v, "name"))?;
    line(out, "key", str_of(v, "key"))?;
    line(out, "runtime", str_of(v, "runtime"))?;
    let status = if v["this_node"] == true {
        "this node".to_string()
    } else {
        match v["seen_ms_ago"].as_u64() {
            Some(ms) => format!(
                "{} (heard {:.1}s ago)",
                str_of(v, "status"),
                ms as f64 / 1000.0
            ),
            None => str_of(v, "status"),
        }
    };
    line(out, "status", status)?;
    line(out, "agent", str_of(v, "agent_version"))?;
    line(out, "addresses", words(&v["addresses"]))?;
    if v["this_node"] != true {
        return Ok(());
    }
    let h = &v["runtime_health"];
    line(
        out,
        "health",
        format!(
            "{} ({})",
            if h["ok"] == true { "ok" } else { "FAILING" },
            str_of(h, "detail")
        ),
    )?;
    let s = &v["store"];
    line(
        out,
        "store",
        format!(
            "{} ({} bytes, schema {}, written by shoal {})",
            str_of(s, "path"),
            count(&s["size_bytes"]),
            count(&s["schema_version"]),
            str_of(s, "written_by"),
        ),
    )?;
    let o = &v["ops"];
    line(
        out,
        "ops",
        format!(
            "{} applied, {} waiting, {} quarantined ({} refused since start)",
            count(&o["applied"]),
            count(&o["waiting"]),
            count(&o["quarantined"]),
            count(&o["rejected_since_start"]),
        ),
    )?;
    let peers = list_of(&v["peers"]);
    if peers.is_empty() {
        line(out, "peers", "none connected".into())?;
        return Ok(());
    }
    line(out, "peers", String::new())?;
    for p in peers {
        let name = match str_of(p, "name") {
            n if n.is_empty() => crate::read::short(&str_of(p, "key")),
            n => n,
        };
        let lag = match (p["they_lack"].as_u64(), p["we_lack"].as_u64()) {
            (Some(0), Some(0)) => "in sync".to_string(),
            (Some(t), Some(w)) => format!("lacks {t} of ours, we lack {w} of its"),
            _ => "lag not known yet".to_string(),
        };
        let conn = if p["connected"] == true {
            "connected"
        } else {
            "disconnected"
        };
        writeln!(
            out,
            "  {name} {} {conn}, {lag}, {}",
            crate::read::short(&str_of(p, "key")),
            words(&p["addresses"])
        )?;
    }
    Ok(())
}
