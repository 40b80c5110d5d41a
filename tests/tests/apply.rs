//! End-to-end tests of `shoal export` and `shoal apply -f`: a product
//! exported from one team and applied to a fresh one has the same effective
//! configs; an edited file gives exactly the plan it should and the end state
//! the file says (descriptions, changelogs and auto-copy included, each by
//! its own op in the audit log); what no op can change is refused before
//! anything is written; applying the same file twice writes no op. One test runs its
//! daemon with runtime docker (deployments are created, never started).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use serde_json::{Value, json};
use shoal_tests::{Peer, Run};

fn start_team(p: &mut Peer) {
    p.ok(&["profile", "init", "--name", &format!("{}-person", p.name)]);
    p.start().unwrap();
    p.ok(&["team", "create", "crew"]);
}

fn parse(r: &Run) -> Value {
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {r:?}"))
}

fn ops(p: &Peer) -> u64 {
    p.team().unwrap()["ops"].as_u64().unwrap()
}

/// The plan's lines (everything `apply` prints but its last line).
fn plan(r: &Run) -> Vec<String> {
    let mut lines: Vec<String> = r.stdout.lines().map(str::to_string).collect();
    lines.pop();
    lines
}

/// What `version show -o json` says that a file carries: everything but the
/// ids, times and deployment counts of this team.
fn effective(p: &Peer, product: &str) -> Value {
    let prod = parse(&p.ok(&["product", "show", product, "-o", "json"]));
    let mut versions = Vec::new();
    for v in prod["versions"].as_array().unwrap() {
        let name = v["name"].as_str().unwrap();
        let mut d = parse(&p.ok(&["version", "show", product, name, "-o", "json"]));
        let m = d.as_object_mut().unwrap();
        for k in ["id", "product_id", "created_ms", "deployments", "copies"] {
            m.remove(k);
        }
        for i in m["images"].as_array_mut().unwrap() {
            i.as_object_mut().unwrap().remove("registry_id");
        }
        versions.push(d);
    }
    json!({
        "name": prod["name"],
        "kind": prod["kind"],
        "description": prod["description"],
        "default_version": prod["default_version"],
        "versions": versions,
    })
}

fn write(dir: &Path, name: &str, v: &Value) -> String {
    let path = dir.join(name);
    // JSON is YAML: apply reads it as it reads an exported file.
    std::fs::write(&path, serde_json::to_string_pretty(v).unwrap()).unwrap();
    path.to_string_lossy().into_owned()
}

fn image(name: &str, image: &str, tag: &str, env: Value) -> Value {
    json!({"name": name, "registry": "hub", "image": image, "tag": tag,
           "config": {"env": env}})
}

#[test]
fn export_then_apply_on_a_fresh_team_reproduces_the_effective_configs() {
    let mut a = Peer::new("ea").unwrap();
    start_team(&mut a);
    a.ok(&[
        "product",
        "create",
        "shop",
        "--complex",
        "--description",
        "the shop",
    ]);
    a.ok(&[
        "version",
        "create",
        "shop",
        "1.0.0",
        "--incremental",
        "--changelog",
        "first",
    ]);
    a.ok(&[
        "image",
        "add",
        "shop",
        "1.0.0",
        "library/nginx:1.27",
        "--name",
        "web",
    ]);
    a.ok(&[
        "image",
        "config",
        "shop",
        "1.0.0",
        "web",
        "--env",
        "MODE=prod",
        "--port",
        "8080:80",
        "--volume",
        "data:/data:ro",
        "--restart",
        "always",
    ]);
    a.ok(&[
        "image",
        "add",
        "shop",
        "1.0.0",
        "library/postgres:16",
        "--name",
        "db",
    ]);
    a.ok(&[
        "version",
        "create",
        "shop",
        "edge",
        "--rolling",
        "--changelog",
        "tip of main",
        "--auto-copy",
    ]);
    a.ok(&[
        "image",
        "add",
        "shop",
        "edge",
        "library/nginx:1.27",
        "--name",
        "web",
    ]);
    a.ok(&[
        "version",
        "create",
        "shop",
        "2.0.0",
        "--incremental",
        "--auto-copy",
    ]);
    a.ok(&[
        "image",
        "add",
        "shop",
        "2.0.0",
        "library/redis:7",
        "--name",
        "cache",
    ]);
    a.ok(&["version", "increase", "shop", "1.0.0", "1.1.0"]);
    a.ok(&[
        "image",
        "config",
        "shop",
        "1.1.0",
        "web",
        "--env",
        "MODE=next",
    ]);
    a.ok(&["image", "remove", "shop", "1.1.0", "db"]);
    a.ok(&[
        "image",
        "add",
        "shop",
        "1.1.0",
        "library/redis:7",
        "--name",
        "cache",
    ]);
    a.ok(&["version", "default", "shop", "edge"]);
    a.ok(&[
        "product",
        "create",
        "cache",
        "--simple",
        "--description",
        "one redis",
    ]);
    a.ok(&[
        "image",
        "add",
        "cache",
        "rolling",
        "library/redis:7",
        "--name",
        "redis",
    ]);
    a.ok(&[
        "image",
        "config",
        "cache",
        "rolling",
        "redis",
        "--cmd",
        "redis-server",
        "--cmd",
        "--save",
        "--cmd",
        "",
    ]);

    let dir = tempfile::tempdir().unwrap();
    let mut b = Peer::new("eb").unwrap();
    start_team(&mut b);
    for product in ["shop", "cache"] {
        let text = a.ok(&["export", product]).stdout;
        let path = dir.path().join(format!("{product}.yaml"));
        std::fs::write(&path, &text).unwrap();
        let path = path.to_string_lossy().into_owned();
        let r = b.ok(&["apply", "-f", &path]);
        let expected: &[&str] = if product == "shop" {
            &[
                "+ version 1.0.0 with 2 container(s)",
                "+ version edge (rolling, auto-copy)",
                "+ container web in edge",
                "+ version 2.0.0 (incremental, auto-copy)",
                "+ container cache in 2.0.0",
                "+ version 1.1.0 from 1.0.0",
                "- container db in 1.1.0",
                "~ container web in 1.1.0",
                "+ container cache in 1.1.0",
                "~ default version edge",
            ]
        } else {
            &["+ product cache", "+ container redis in rolling"]
        };
        assert_eq!(plan(&r), expected, "{r:?}");
        assert_eq!(effective(&a, product), effective(&b, product), "{product}");
        assert_eq!(b.ok(&["export", product]).stdout, text, "{product}");
        // Twice: an empty plan, no op written.
        let before = ops(&b);
        let r = b.ok(&["apply", "-f", &path]);
        assert_eq!(plan(&r), Vec::<String>::new(), "{r:?}");
        assert!(r.stdout.contains("nothing to do"), "{r:?}");
        assert_eq!(ops(&b), before, "applying {product} twice wrote ops");
        // And on the team it came from.
        let before = ops(&a);
        assert!(
            a.ok(&["apply", "-f", &path])
                .stdout
                .contains("nothing to do")
        );
        assert_eq!(ops(&a), before);
    }
    let edge = parse(&b.ok(&["version", "show", "shop", "edge", "-o", "json"]));
    assert_eq!(edge["auto_copy"], true, "{edge}");
    assert_eq!(edge["changelog"], "tip of main", "{edge}");
    let v2 = parse(&b.ok(&["version", "show", "shop", "2.0.0", "-o", "json"]));
    assert_eq!(v2["auto_copy"], true, "{v2}");
    let v1 = parse(&b.ok(&["version", "show", "shop", "1.1.0", "-o", "json"]));
    assert_eq!(v1["parent"], "1.0.0", "{v1}");
    let v0 = parse(&b.ok(&["version", "show", "shop", "1.0.0", "-o", "json"]));
    assert_eq!(v0["child"], "1.1.0", "{v0}");
    assert!(v0["frozen"].is_string(), "{v0}");
    let shop = parse(&b.ok(&["product", "show", "shop", "-o", "json"]));
    assert_eq!(shop["default_version"], "edge", "{shop}");
    assert_eq!(shop["description"], "the shop", "{shop}");
}

#[test]
fn an_edited_file_gives_exactly_the_expected_plan_and_end_state() {
    let mut a = Peer::new("ed").unwrap();
    start_team(&mut a);
    let dir = tempfile::tempdir().unwrap();
    let mut file = json!({"product": {
        "name": "shop",
        "kind": "complex",
        "description": "the shop",
        "default_version": "1.0.0",
        "versions": [
            {"name": "1.0.0", "kind": "incremental", "changelog": "first", "images": [
                image("web", "library/nginx", "1.27", json!({"A": "1"})),
                image("db", "library/postgres", "16", json!({})),
            ]},
            {"name": "2.0.0", "kind": "incremental", "changelog": "second", "images": [
                image("web", "library/nginx", "1.27", json!({"A": "2"})),
                image("db", "library/postgres", "16", json!({})),
                image("cache", "library/redis", "7", json!({})),
            ]},
            {"name": "edge", "kind": "rolling", "changelog": "", "images": [
                image("web", "library/nginx", "latest", json!({})),
            ]},
        ],
    }});
    let path = write(dir.path(), "shop.json", &file);
    let r = a.ok(&["apply", "-f", &path]);
    assert_eq!(
        plan(&r),
        [
            "+ version 1.0.0 with 2 container(s)",
            "+ version 2.0.0 with 3 container(s)",
            "+ version edge (rolling)",
            "+ container web in edge",
        ],
        "{r:?}"
    );
    let start = ops(&a);

    // A container removed, a version left out, the default moved.
    let p = &mut file["product"];
    p["default_version"] = json!("2.0.0");
    p["versions"][1]["images"].as_array_mut().unwrap().remove(2);
    p["versions"].as_array_mut().unwrap().remove(2);
    let path = write(dir.path(), "shop.json", &file);
    let r = a.ok(&["apply", "-f", &path, "--dry-run"]);
    let expected = [
        "= version edge kept: it is not in the file (--prune removes it)",
        "- container cache in 2.0.0",
        "~ default version 2.0.0",
    ];
    assert_eq!(plan(&r), expected, "{r:?}");
    assert_eq!(ops(&a), start, "--dry-run wrote ops");
    let r = a.ok(&["apply", "-f", &path]);
    assert_eq!(plan(&r), expected, "{r:?}");
    assert!(r.stdout.contains("applied 2 op(s)"), "{r:?}");
    assert_eq!(ops(&a), start + 2);
    let v2 = parse(&a.ok(&["version", "show", "shop", "2.0.0", "-o", "json"]));
    let names: Vec<&str> = v2["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["web", "db"]);
    let shop = parse(&a.ok(&["product", "show", "shop", "-o", "json"]));
    assert_eq!(shop["default_version"], "2.0.0");
    assert_eq!(shop["versions"].as_array().unwrap().len(), 3, "{shop}");
    // Again: only the note, no op.
    let r = a.ok(&["apply", "-f", &path]);
    assert_eq!(plan(&r), [expected[0]], "{r:?}");
    assert_eq!(ops(&a), start + 2);

    // --prune removes the version the file leaves out, then nothing is left.
    let r = a.ok(&["apply", "-f", &path, "--prune"]);
    assert_eq!(plan(&r), ["- version edge"], "{r:?}");
    assert_eq!(ops(&a), start + 3);
    let shop = parse(&a.ok(&["product", "show", "shop", "-o", "json"]));
    let versions: Vec<&str> = shop["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(versions, ["1.0.0", "2.0.0"]);
    let r = a.ok(&["apply", "-f", &path, "--prune"]);
    assert_eq!(plan(&r), Vec::<String>::new(), "{r:?}");
    assert_eq!(ops(&a), start + 3);

    // The description, a changelog and auto-copy change by their own ops,
    // planned with the container change; applying again writes nothing.
    let mut edited = file.clone();
    edited["product"]["description"] = json!("a new shop");
    edited["product"]["versions"][0]["changelog"] = json!("rewritten");
    edited["product"]["versions"][0]["auto_copy"] = json!(true);
    edited["product"]["versions"][1]["images"][0]["config"]["env"]["A"] = json!("3");
    let changed = write(dir.path(), "changed.json", &edited);
    let expected = [
        "~ description of product shop",
        "~ version 1.0.0: changelog, auto-copy on",
        "~ container web in 2.0.0",
    ];
    let r = a.ok(&["apply", "-f", &changed, "--dry-run"]);
    assert_eq!(plan(&r), expected, "{r:?}");
    assert_eq!(ops(&a), start + 3, "--dry-run wrote ops");
    let r = a.ok(&["apply", "-f", &changed]);
    assert_eq!(plan(&r), expected, "{r:?}");
    assert_eq!(ops(&a), start + 6);
    let shop = parse(&a.ok(&["product", "show", "shop", "-o", "json"]));
    assert_eq!(shop["description"], "a new shop", "{shop}");
    let v1 = parse(&a.ok(&["version", "show", "shop", "1.0.0", "-o", "json"]));
    assert_eq!(v1["changelog"], "rewritten", "{v1}");
    assert_eq!(v1["auto_copy"], true, "{v1}");
    let audit = parse(&a.ok(&["audit", "list", "-o", "json"]));
    let whats: Vec<(&str, &str)> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["action"].as_str().unwrap(), e["what"].as_str().unwrap()))
        .collect();
    for entry in [
        ("product.update", "set the description of product shop"),
        (
            "version.update",
            "set the changelog and auto-copy on of shop 1.0.0",
        ),
    ] {
        assert!(whats.contains(&entry), "{entry:?} not in {whats:?}");
    }
    let r = a.ok(&["apply", "-f", &changed]);
    assert_eq!(plan(&r), Vec::<String>::new(), "{r:?}");
    assert_eq!(ops(&a), start + 6);
    // And back to the first file.
    let r = a.ok(&["apply", "-f", &path]);
    assert_eq!(
        plan(&r),
        [
            "~ description of product shop",
            "~ version 1.0.0: changelog, auto-copy off",
            "~ container web in 2.0.0",
        ],
        "{r:?}"
    );
    assert_eq!(effective(&a, "shop")["description"], "the shop");
    assert_eq!(ops(&a), start + 9);

    // A frozen version (it has a child) that differs from the file.
    a.ok(&["version", "increase", "shop", "2.0.0", "2.1.0"]);
    let text = a.ok(&["export", "shop"]).stdout;
    let exported = dir.path().join("exported.yaml");
    std::fs::write(&exported, &text).unwrap();
    let exported = exported.to_string_lossy().into_owned();
    let start = ops(&a);
    assert!(
        a.ok(&["apply", "-f", &exported])
            .stdout
            .contains("nothing to do")
    );
    let frozen = text.replacen("A: '2'", "A: '9'", 1);
    assert_ne!(frozen, text, "{text}");
    std::fs::write(&exported, &frozen).unwrap();
    let r = a.shoal(&["apply", "-f", &exported]);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(
        r.stderr.contains(
            "version 2.0.0 differs from the file (~ container web in 2.0.0) but is frozen"
        ),
        "{}",
        r.stderr
    );
    assert_eq!(ops(&a), start);
    // A frozen version's changelog is no container: it changes.
    let noted = text.replacen("changelog: second", "changelog: second, noted", 1);
    assert_ne!(noted, text, "{text}");
    std::fs::write(&exported, &noted).unwrap();
    let r = a.ok(&["apply", "-f", &exported]);
    assert_eq!(plan(&r), ["~ version 2.0.0: changelog"], "{r:?}");
    let v2 = parse(&a.ok(&["version", "show", "shop", "2.0.0", "-o", "json"]));
    assert_eq!(v2["changelog"], "second, noted", "{v2}");
    assert!(v2["frozen"].is_string(), "{v2}");
    let start = ops(&a);
    // Pruning a version whose child stays is refused too.
    let mut no_parent = file.clone();
    no_parent["product"]["versions"]
        .as_array_mut()
        .unwrap()
        .remove(1);
    no_parent["product"]["default_version"] = json!("1.0.0");
    let mut child = no_parent["product"]["versions"][0].clone();
    child["name"] = json!("2.1.0");
    child["changelog"] = json!("");
    child["images"] = file["product"]["versions"][1]["images"].clone();
    no_parent["product"]["versions"]
        .as_array_mut()
        .unwrap()
        .push(child);
    let path = write(dir.path(), "orphan.json", &no_parent);
    let r = a.shoal(&["apply", "-f", &path, "--prune"]);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(
        r.stderr.contains("version 2.0.0 is not in the file but cannot be removed: its child version 2.1.0 is in the file"),
        "{}",
        r.stderr
    );
    assert_eq!(ops(&a), start);
}

#[test]
fn a_simple_product_applies_to_its_one_rolling_version() {
    let mut a = Peer::new("sp").unwrap();
    start_team(&mut a);
    let dir = tempfile::tempdir().unwrap();
    let mut file = json!({"product": {
        "name": "cache",
        "kind": "simple",
        "description": "one redis",
        "default_version": "rolling",
        "versions": [
            {"name": "rolling", "kind": "rolling", "images": [
                image("redis", "library/redis", "7", json!({"R": "1"})),
            ]},
        ],
    }});
    let path = write(dir.path(), "cache.json", &file);
    let r = a.ok(&["apply", "-f", &path]);
    assert_eq!(
        plan(&r),
        ["+ product cache", "+ container redis in rolling"],
        "{r:?}"
    );
    let start = ops(&a);
    let r = a.ok(&["apply", "-f", &path]);
    assert_eq!(plan(&r), Vec::<String>::new(), "{r:?}");
    assert_eq!(ops(&a), start);
    file["product"]["versions"][0]["images"][0]["tag"] = json!("7.2");
    let path = write(dir.path(), "cache.json", &file);
    let r = a.ok(&["apply", "-f", &path]);
    assert_eq!(plan(&r), ["~ container redis in rolling"], "{r:?}");
    let v = parse(&a.ok(&["version", "show", "cache", "rolling", "-o", "json"]));
    assert_eq!(v["images"][0]["tag"], "7.2", "{v}");
    assert_eq!(ops(&a), start + 1);
    // A simple product has exactly one version, named rolling.
    file["product"]["versions"][0]["name"] = json!("main");
    let path = write(dir.path(), "cache.json", &file);
    let r = a.shoal(&["apply", "-f", &path]);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("product cache is simple"), "{}", r.stderr);
    assert_eq!(ops(&a), start + 1);
}

/// A version the file makes from its parent is an increase: the parent's
/// deployments are copied when it has auto-copy on, and the plan says how
/// many; pruning it again removes it with its deployments.
#[test]
fn a_child_version_is_an_increase_and_pruning_names_its_deployments() {
    let mut a = Peer::new("inc").unwrap();
    // A node that takes deployments; none of them is started here.
    a.runtime = "docker".into();
    a.extra = vec!["--pause-deployments".into()];
    start_team(&mut a);
    let node = parse(&a.ok(&["node", "list", "-o", "json"]))[0]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let dir = tempfile::tempdir().unwrap();
    let mut file = json!({"product": {
        "name": "api",
        "kind": "complex",
        "versions": [
            {"name": "1.0.0", "kind": "incremental", "auto_copy": true, "images": [
                image("api", "library/busybox", "1.36", json!({"V": "1"})),
            ]},
        ],
    }});
    let path = write(dir.path(), "api.json", &file);
    let r = a.ok(&["apply", "-f", &path]);
    assert_eq!(
        plan(&r),
        [
            "+ product api",
            "+ version 1.0.0 (incremental, auto-copy)",
            "+ container api in 1.0.0"
        ],
        "{r:?}"
    );
    a.ok(&[
        "deploy", "create", "api", "1.0.0", "--node", &node, "--prefix", "p1",
    ]);
    let mut child = file["product"]["versions"][0].clone();
    child["name"] = json!("1.1.0");
    child["parent"] = json!("1.0.0");
    child["images"][0]["config"]["env"]["V"] = json!("2");
    file["product"]["versions"]
        .as_array_mut()
        .unwrap()
        .push(child.clone());
    let path = write(dir.path(), "api.json", &file);
    let r = a.ok(&["apply", "-f", &path]);
    assert_eq!(
        plan(&r),
        [
            "+ version 1.1.0 from 1.0.0 with 1 deployment(s) copied as preparing",
            "~ container api in 1.1.0",
        ],
        "{r:?}"
    );
    let deployments = parse(&a.ok(&["deploy", "list", "--product", "api", "-o", "json"]));
    let versions: Vec<&str> = deployments
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["version"].as_str().unwrap())
        .collect();
    assert_eq!(versions.len(), 2, "{deployments}");
    assert!(versions.contains(&"1.1.0"), "{deployments}");
    let v = parse(&a.ok(&["version", "show", "api", "1.1.0", "-o", "json"]));
    assert_eq!(v["parent"], "1.0.0", "{v}");
    assert_eq!(v["images"][0]["config"]["env"]["V"], "2", "{v}");
    let start = ops(&a);
    assert_eq!(plan(&a.ok(&["apply", "-f", &path])), Vec::<String>::new());
    assert_eq!(ops(&a), start);

    // A second child of the same parent.
    let mut twin = child.clone();
    twin["name"] = json!("1.1.1");
    let mut file2 = file.clone();
    file2["product"]["versions"]
        .as_array_mut()
        .unwrap()
        .push(twin);
    let bad = write(dir.path(), "twin.json", &file2);
    let r = a.shoal(&["apply", "-f", &bad]);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(
        r.stderr
            .contains("its parent 1.0.0 already has the child 1.1.0"),
        "{}",
        r.stderr
    );
    assert_eq!(ops(&a), start);

    // Left out of the file and pruned: the plan names its deployment.
    file["product"]["versions"].as_array_mut().unwrap().pop();
    let path = write(dir.path(), "api.json", &file);
    let r = a.ok(&["apply", "-f", &path, "--prune"]);
    assert_eq!(
        plan(&r),
        ["- version 1.1.0 and its 1 deployment(s)"],
        "{r:?}"
    );
    assert_eq!(ops(&a), start + 1);
    let v = parse(&a.ok(&["version", "show", "api", "1.0.0", "-o", "json"]));
    assert_eq!(v["child"], Value::Null, "{v}");

    // A file of the child alone: its parent is the team's.
    let alone = json!({"product": {"name": "api", "kind": "complex", "versions": [child]}});
    let path = write(dir.path(), "alone.json", &alone);
    let r = a.ok(&["apply", "-f", &path]);
    assert_eq!(
        plan(&r),
        [
            "= version 1.0.0 kept: it is not in the file (--prune removes it)",
            "+ version 1.1.0 from 1.0.0 with 1 deployment(s) copied as preparing",
            "~ container api in 1.1.0",
        ],
        "{r:?}"
    );
    // Exported alone, a version does not name a parent the file lacks.
    let one = a.ok(&["export", "api", "1.1.0"]).stdout;
    assert!(!one.contains("parent"), "{one}");
    assert!(a.ok(&["export", "api"]).stdout.contains("parent: 1.0.0"));

    // A child whose auto-copy is not its parent's: the increase takes the
    // parent's, then the file's is set.
    let mut grandchild = child.clone();
    grandchild["name"] = json!("1.2.0");
    grandchild["parent"] = json!("1.1.0");
    grandchild["auto_copy"] = json!(false);
    let mut file3 = file.clone();
    let versions = file3["product"]["versions"].as_array_mut().unwrap();
    versions.push(child);
    versions.push(grandchild);
    let path = write(dir.path(), "grand.json", &file3);
    let start = ops(&a);
    let r = a.ok(&["apply", "-f", &path]);
    let lines = plan(&r);
    assert_eq!(lines.len(), 2, "{r:?}");
    assert!(lines[0].starts_with("+ version 1.2.0 from 1.1.0"), "{r:?}");
    assert_eq!(lines[1], "~ version 1.2.0: auto-copy off", "{r:?}");
    assert_eq!(ops(&a), start + 2);
    let v = parse(&a.ok(&["version", "show", "api", "1.2.0", "-o", "json"]));
    assert_eq!(
        (&v["parent"], &v["auto_copy"]),
        (&json!("1.1.0"), &json!(false)),
        "{v}"
    );
    assert_eq!(plan(&a.ok(&["apply", "-f", &path])), Vec::<String>::new());
    assert_eq!(ops(&a), start + 2);

    // Auto-copy turned on by the same file that increases the version: the
    // increase copies its deployment, counted when it runs.
    let versions = file3["product"]["versions"].as_array_mut().unwrap();
    versions[2]["auto_copy"] = json!(true);
    let mut next = versions[2].clone();
    next["name"] = json!("1.3.0");
    next["parent"] = json!("1.2.0");
    versions.push(next);
    let path = write(dir.path(), "next.json", &file3);
    let r = a.ok(&["apply", "-f", &path]);
    assert_eq!(
        plan(&r),
        [
            "~ version 1.2.0: auto-copy on",
            "+ version 1.3.0 from 1.2.0 with its deployments copied as preparing (auto-copy)",
        ],
        "{r:?}"
    );
    let deployments = parse(&a.ok(&["deploy", "list", "--product", "api", "-o", "json"]));
    let of = |v: &str| {
        deployments
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["version"] == v)
            .count()
    };
    assert_eq!((of("1.2.0"), of("1.3.0")), (1, 1), "{deployments}");
}

/// `product update` and `version update` change what describes a product
/// and a version, a frozen one included, and each is an audited op.
#[test]
fn descriptions_and_changelogs_change_by_command() {
    let mut a = Peer::new("upd").unwrap();
    start_team(&mut a);
    a.ok(&["product", "create", "shop", "--description", "the shop"]);
    a.ok(&["version", "create", "shop", "1.0.0", "--changelog", "first"]);
    // 1.0.0 gets a child: frozen, its containers no longer change.
    a.ok(&["version", "increase", "shop", "1.0.0", "1.1.0"]);
    let start = ops(&a);
    let r = a.ok(&["product", "update", "shop", "--description", "a new shop"]);
    assert!(
        r.stdout.contains("updated the description of product shop"),
        "{r:?}"
    );
    let r = a.ok(&[
        "version",
        "update",
        "shop",
        "1.0.0",
        "--changelog",
        "first, fixed",
        "--auto-copy",
    ]);
    assert!(
        r.stdout
            .contains("updated changelog and auto-copy on of version 1.0.0 of shop"),
        "{r:?}"
    );
    assert_eq!(ops(&a), start + 2);
    let shop = parse(&a.ok(&["product", "show", "shop", "-o", "json"]));
    assert_eq!(shop["description"], "a new shop", "{shop}");
    let text = a.ok(&["product", "show", "shop"]).stdout;
    assert!(text.contains("a new shop"), "{text}");
    let v = parse(&a.ok(&["version", "show", "shop", "1.0.0", "-o", "json"]));
    assert_eq!(v["changelog"], "first, fixed", "{v}");
    assert_eq!(v["auto_copy"], true, "{v}");
    assert!(v["frozen"].is_string(), "{v}");
    // --no-auto-copy alone keeps the changelog.
    a.ok(&["version", "update", "shop", "1.0.0", "--no-auto-copy"]);
    let v = parse(&a.ok(&["version", "show", "shop", "1.0.0", "-o", "json"]));
    assert_eq!(
        (&v["changelog"], &v["auto_copy"]),
        (&json!("first, fixed"), &json!(false)),
        "{v}"
    );
    let audit = parse(&a.ok(&["audit", "list", "-o", "json"]));
    let whats: Vec<(&str, &str)> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["action"].as_str().unwrap(), e["what"].as_str().unwrap()))
        .collect();
    for entry in [
        ("product.update", "set the description of product shop"),
        (
            "version.update",
            "set the changelog and auto-copy on of shop 1.0.0",
        ),
        ("version.update", "set auto-copy off of shop 1.0.0"),
    ] {
        assert!(whats.contains(&entry), "{entry:?} not in {whats:?}");
    }
    // Nothing to change, or a product that is not there: refused, no op.
    let start = ops(&a);
    let r = a.shoal(&["version", "update", "shop", "1.0.0"]);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("nothing to change"), "{}", r.stderr);
    let r = a.shoal(&["product", "update", "nope", "--description", "x"]);
    assert_ne!(r.code, 0, "{r:?}");
    assert_eq!(ops(&a), start);
}
