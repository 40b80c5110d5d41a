//! End-to-end tests of `shoal product import --compose`: a corpus of
//! compose files under fixtures/compose/ imported into a real daemon and the
//! stored configs compared with what the Compose Specification says; refused
//! imports leave nothing behind; hostile files are refused quickly.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::Instant;

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

#[track_caller]
fn refused(r: &Run, msg: &str) {
    assert_ne!(r.code, 0, "expected a refusal: {r:?}");
    assert!(
        r.stderr.contains(msg),
        "expected {msg:?} in stderr: {}",
        r.stderr
    );
}

fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/compose")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

fn images(p: &Peer, product: &str, version: &str) -> Vec<Value> {
    let v = parse(&p.ok(&["version", "show", product, version, "-o", "json"]));
    v["images"].as_array().unwrap().clone()
}

fn by(images: &[Value], name: &str) -> Value {
    images
        .iter()
        .find(|i| i["name"] == name)
        .unwrap_or_else(|| panic!("no image {name} in {images:?}"))
        .clone()
}

fn no_products(p: &Peer) {
    let list = parse(&p.ok(&["product", "list", "-o", "json"]));
    assert!(
        list.as_array().unwrap().is_empty(),
        "something was created: {list}"
    );
}

#[test]
fn the_compose_specification_is_followed() {
    let mut a = Peer::new("a").unwrap();
    start_team(&mut a);
    let file = fixture("spec/compose.yml");
    let r = a.ok(&["product", "import", "spec", "--compose", &file]);
    assert!(
        r.stdout.contains("imported 4 service(s) into spec 1.0.0"),
        "{r:?}"
    );
    for w in [
        "service web: ports: mode of port 443 is not supported",
        "service web: volumes: volume.nocopy of /data is not supported",
        "service web: volumes: bind mount /mnt/media:/media is not supported",
        "service api: depends_on.web: restart: true is not supported",
        "service debug is in profile debug and was not imported",
        "service built is built from source and names no image",
    ] {
        assert!(r.stderr.contains(w), "{w:?} missing:\n{}", r.stderr);
    }
    assert!(!r.stderr.contains("logging"), "{}", r.stderr);
    assert!(!r.stderr.contains("deploy"), "{}", r.stderr);

    let imgs = images(&a, "spec", "1.0.0");
    let order: Vec<&str> = imgs.iter().map(|i| i["name"].as_str().unwrap()).collect();
    assert_eq!(order, ["web", "api", "worker", "sidecar"]);

    let web = by(&imgs, "web");
    assert_eq!(web["ref"], "nginx:1.27");
    let c = &web["config"];
    assert_eq!(
        c["env"],
        json!({
            "COMMON": "common",
            "GREETING": "hello world",
            "DEFAULTED": "fallback",
            "DASH_DEFAULT": "",
            "COLON_DEFAULT": "was-empty",
            "ALT": "has-tag",
            "NO_ALT": "",
            "PRICE": "$5",
            "NESTED": "1.27",
            "BARE": "1.27",
        })
    );
    assert_eq!(
        c["labels"],
        json!({"com.example.empty": "", "com.example.port": "8080"})
    );
    assert_eq!(
        c["ports"],
        json!([
            {"internal": 80, "external": 8080, "protocol": "tcp"},
            {"internal": 443, "external": 8443, "protocol": "tcp"},
        ])
    );
    assert_eq!(
        c["port_ranges"],
        json!([{"internal_from": 9000, "internal_to": 9002, "external_from": 9000, "external_to": 9002, "protocol": "udp"}])
    );
    assert_eq!(
        c["volumes"],
        json!([
            {"name": "data", "path": "/data", "kind": "rw", "size": null},
            {"name": "tmpfs", "path": "/cache", "kind": "tmpfs", "size": "1000000"},
        ])
    );
    assert_eq!(c["log_driver"], "json-file");
    assert_eq!(
        c["log_options"],
        json!({"max-size": "10m", "max-file": "3"})
    );
    assert_eq!(
        (c["cpu"].as_str(), c["memory"].as_str()),
        (Some("0.50"), Some("128M"))
    );
    assert_eq!(c["args"], json!(["nginx", "-g", "daemon off;"]));

    // extends with file:, maps merged per key.
    let api = by(&imgs, "api");
    assert_eq!(api["ref"], "busybox:1.27");
    let c = &api["config"];
    assert_eq!(c["env"], json!({"FROM_BASE": "yes", "OVERRIDDEN": "api"}));
    assert_eq!(c["labels"], json!({"com.example.base": "true"}));
    assert_eq!(
        c["ports"],
        json!([{"internal": 7000, "external": 7000, "protocol": "tcp"}])
    );
    assert_eq!(c["restart"], "always");

    // extends in the same file, with !reset and !override.
    let c = by(&imgs, "worker")["config"].clone();
    assert_eq!(c["env"], json!({"FROM_BASE": "yes", "OVERRIDDEN": "api"}));
    assert_eq!(c["ports"], json!([]));
    assert_eq!(c["restart"], "on-failure");
    assert_eq!(c["args"], json!(["sh", "-c", "echo ${HOME}"]));

    // include.
    let side = by(&imgs, "sidecar");
    assert_eq!(side["ref"], "alpine:3.20");
    assert_eq!(side["config"]["env"], json!({"INCLUDED": "hello world"}));

    // --env-file replaces .env; --profile and --image take the skipped services.
    let r = a.ok(&[
        "product",
        "import",
        "spec",
        "--compose",
        &file,
        "--version",
        "2.0.0",
        "--env-file",
        &fixture("spec/alt.env"),
        "--profile",
        "debug",
        "--image",
        "built=busybox:1.36",
    ]);
    assert!(
        r.stdout.contains("imported 6 service(s) into spec 2.0.0"),
        "{r:?}"
    );
    assert!(
        r.stderr.contains("the MEDIA variable is not set"),
        "{}",
        r.stderr
    );
    let imgs = images(&a, "spec", "2.0.0");
    let web = by(&imgs, "web");
    assert_eq!(web["ref"], "nginx:1.28");
    assert_eq!(web["config"]["env"]["GREETING"], "hi $TAG");
    assert_eq!(web["config"]["env"]["DASH_DEFAULT"], "kept-empty");
    assert_eq!(web["config"]["ports"][0]["external"], 9090);
    assert_eq!(by(&imgs, "debug")["ref"], "busybox:latest");
    assert_eq!(by(&imgs, "built")["ref"], "busybox:1.36");
}

/// Relative host paths in files pulled in by `extends` and `include` are
/// resolved against the file that names them (Compose Specification), and
/// the warnings name them from the main file's directory.
#[test]
fn paths_of_extended_and_included_files_are_rebased() {
    let mut a = Peer::new("paths").unwrap();
    start_team(&mut a);
    let file = fixture("paths/compose.yml");
    let r = a.ok(&["product", "import", "paths", "--compose", &file]);
    assert!(r.stdout.contains("imported 3 service(s)"), "{r:?}");
    for w in [
        "service web: env_file ./base/base.env, ./common.env is not imported",
        "service web: volumes: bind mount ./base/data:/data is not supported",
        "service web: volumes: bind mount ./shared:/shared is not supported",
        "service web: volumes: a bind mount of /conf from ./base/conf is not supported",
        "service web: volumes: bind mount ./here:/here is not supported",
        "service web: build is not imported: the image busybox:1.36 is used as it is in its registry (build context ./base/ctx)",
        "service worker: env_file ./sub/worker.env is not imported",
        "service worker: volumes: bind mount ./sub/jobs:/jobs is not supported",
        "service worker: volumes: bind mount /abs:/abs is not supported",
        "service worker: volumes: bind mount ~/home:/home is not supported",
        "(build context ./app)",
        "service helper: env_file ./base/base.env, ./common.env is not imported",
        "service helper: volumes: bind mount ./base/data:/data is not supported",
        "service helper: build is not imported: the image busybox:1.37 is used as it is in its registry (build context ./base/ctx)",
    ] {
        assert!(r.stderr.contains(w), "{w:?} not in {}", r.stderr);
    }
    // Named volumes are not paths: kept as written.
    let web = by(&images(&a, "paths", "1.0.0"), "web");
    assert_eq!(web["config"]["volumes"][0]["name"], "named", "{web}");
}

#[test]
fn a_refused_import_leaves_nothing() {
    let mut a = Peer::new("a").unwrap();
    start_team(&mut a);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("compose.yml");
    let f = file.to_string_lossy().into_owned();
    for (text, msg) in [
        (
            "services:\n  a:\n    image: x:${REQUIRED:?set REQUIRED first}\n",
            "service a: image: required variable REQUIRED is missing or empty in \"x:${REQUIRED:?set REQUIRED first}\": set REQUIRED first",
        ),
        (
            "services:\n  a:\n    image: x\n    command: echo $1\n",
            "service a: command: invalid interpolation format in \"echo $1\"",
        ),
        (
            "services:\n  a: {image: x}\n  b: {image: y, ports: [\"99999:80\"]}\n",
            "service b: ports",
        ),
        (
            "services:\n  a:\n    build: .\n",
            "no service is left to import",
        ),
        (
            "services:\n  a: {extends: b, image: x}\n  b: {extends: a}\n",
            "extends has a cycle",
        ),
    ] {
        std::fs::write(&file, text).unwrap();
        let r = a.shoal(&["product", "import", "p", "--compose", &f]);
        refused(&r, msg);
        no_products(&a);
    }
}

#[test]
fn hostile_files_are_refused_quickly() {
    let mut a = Peer::new("a").unwrap();
    start_team(&mut a);
    let dir = tempfile::tempdir().unwrap();
    let nested = dir.path().join("nested.yml");
    std::fs::write(
        &nested,
        format!("services: {}{}\n", "[".repeat(100_000), "]".repeat(100_000)),
    )
    .unwrap();
    let mut bomb = String::from("x-a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..12 {
        let p = i - 1;
        bomb.push_str(&format!(
            "x-a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        ));
    }
    bomb.push_str("services:\n  a: {image: x}\n");
    let bomb_file = dir.path().join("bomb.yml");
    std::fs::write(&bomb_file, bomb).unwrap();
    let t = Instant::now();
    let r = a.shoal(&[
        "product",
        "import",
        "p",
        "--compose",
        &nested.to_string_lossy(),
    ]);
    println!("200 KB of nested brackets refused in {:?}", t.elapsed());
    refused(&r, "nesting deeper than 64 levels");
    let t = Instant::now();
    let r = a.shoal(&[
        "product",
        "import",
        "p",
        "--compose",
        &bomb_file.to_string_lossy(),
    ]);
    println!("an anchors bomb refused in {:?}", t.elapsed());
    assert_ne!(r.code, 0, "{r:?}");
    assert!(
        r.stderr.contains("refused") || r.stderr.contains("repetition limit"),
        "{}",
        r.stderr
    );
    no_products(&a);
}

#[test]
fn import_time_grows_linearly_with_the_services() {
    let mut a = Peer::new("a").unwrap();
    start_team(&mut a);
    let dir = tempfile::tempdir().unwrap();
    for n in [10, 100, 500] {
        let mut text = String::from("services:\n");
        for i in 0..n {
            text.push_str(&format!(
                "  s{i}:\n    image: busybox:1.36\n    environment: {{N: \"{i}\"}}\n    ports: [\"{}:80\"]\n",
                20000 + i
            ));
        }
        let file = dir.path().join(format!("c{n}.yml"));
        std::fs::write(&file, text).unwrap();
        let t = Instant::now();
        let r = a.ok(&[
            "product",
            "import",
            &format!("p{n}"),
            "--compose",
            &file.to_string_lossy(),
        ]);
        println!("{n} services imported in {:?}", t.elapsed());
        assert!(
            r.stdout.contains(&format!("imported {n} service(s)")),
            "{r:?}"
        );
        assert_eq!(images(&a, &format!("p{n}"), "1.0.0").len(), n);
    }
    // Past the op size limit (a small file, values repeated by an alias):
    // refused with a clear message, nothing written.
    let mut text = format!("x-big: &big \"{}\"\nservices:\n", "x".repeat(60_000));
    for i in 0..80 {
        text.push_str(&format!(
            "  s{i}:\n    image: busybox:1.36\n    environment: {{BIG: *big}}\n"
        ));
    }
    let file = dir.path().join("huge.yml");
    std::fs::write(&file, text).unwrap();
    let r = a.shoal(&[
        "product",
        "import",
        "huge",
        "--compose",
        &file.to_string_lossy(),
    ]);
    refused(&r, "split the file");
    let list = parse(&a.ok(&["product", "list", "-o", "json"]));
    assert!(!list.to_string().contains("huge"), "{list}");
}

#[test]
fn export_then_apply_reproduces_a_product_and_a_second_apply_changes_nothing() {
    let mut a = Peer::new("a").unwrap();
    start_team(&mut a);
    let file = fixture("spec/compose.yml");
    a.ok(&["product", "import", "spec", "--compose", &file]);
    a.ok(&[
        "product",
        "import",
        "spec",
        "--compose",
        &file,
        "--version",
        "2.0.0",
        "--profile",
        "debug",
    ]);
    let exported = a.ok(&["export", "spec"]).stdout;
    assert!(exported.contains("name: spec"), "{exported}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spec.yml");
    std::fs::write(&path, &exported).unwrap();
    let p = path.to_string_lossy().into_owned();

    let mut b = Peer::new("b").unwrap();
    start_team(&mut b);
    let r = b.ok(&["apply", "-f", &p, "--dry-run"]);
    assert!(r.stdout.contains("nothing changed"), "{r:?}");
    assert!(
        parse(&b.ok(&["product", "list", "-o", "json"]))
            .as_array()
            .unwrap()
            .is_empty()
    );
    let r = b.ok(&["apply", "-f", &p]);
    assert!(r.stdout.contains("applied 2 op(s)"), "{r:?}");
    for v in ["1.0.0", "2.0.0"] {
        assert_eq!(
            images(&a, "spec", v)
                .iter()
                .map(|i| (&i["name"], &i["ref"], &i["config"]))
                .collect::<Vec<_>>(),
            images(&b, "spec", v)
                .iter()
                .map(|i| (&i["name"], &i["ref"], &i["config"]))
                .collect::<Vec<_>>(),
            "version {v}"
        );
    }
    assert_eq!(b.ok(&["export", "spec"]).stdout, exported);
    let r = b.ok(&["apply", "-f", &p]);
    assert!(r.stdout.contains("nothing to do"), "{r:?}");

    // A change: one container's env, one removed; the plan says so, applies
    // just that, and a second run is a no-op again.
    let changed = exported.replacen("COMMON: common", "COMMON: changed", 1);
    std::fs::write(&path, &changed).unwrap();
    let r = b.ok(&["apply", "-f", &p, "--diff"]);
    assert!(r.stdout.contains("~ container web in 1.0.0"), "{r:?}");
    assert!(r.stdout.contains("env:"), "{r:?}");
    assert!(r.stdout.contains("applied 1 op(s)"), "{r:?}");
    let web = by(&images(&b, "spec", "1.0.0"), "web");
    assert_eq!(web["config"]["env"]["COMMON"], "changed");
    assert!(b.ok(&["apply", "-f", &p]).stdout.contains("nothing to do"));
}

/// Every shipped template applies to a fresh team as the product it
/// describes, and applying it again changes nothing.
#[test]
fn templates_apply_as_products() {
    let mut p = Peer::new("tpl").unwrap();
    start_team(&mut p);
    let listed = parse(&p.ok(&["product", "templates", "-o", "json"]));
    let names: Vec<String> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["postgres", "caddy", "rabbitmq"]);
    let dir = tempfile::tempdir().unwrap();
    for name in &names {
        let text = p.ok(&["product", "templates", name]).stdout;
        let file = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&file, &text).unwrap();
        let file = file.to_string_lossy().into_owned();
        p.ok(&["apply", "-f", &file]);
        let product = parse(&p.ok(&["product", "show", name, "-o", "json"]));
        assert_eq!(product["name"], name.as_str(), "{product}");
        let entries = |p: &Peer| {
            parse(&p.ok(&["audit", "list", "-o", "json"]))
                .as_array()
                .unwrap()
                .len()
        };
        let before = entries(&p);
        p.ok(&["apply", "-f", &file]);
        assert_eq!(entries(&p), before, "applying {name} twice wrote ops");
    }
    let db = by(&images(&p, "postgres", "16"), "db");
    assert_eq!(
        db["config"]["secrets"]["POSTGRES_PASSWORD"]["required"],
        true
    );
    assert_eq!(db["config"]["ports"][0]["internal"], 5432);
    refused(&p.shoal(&["product", "templates", "nope"]), "no template");
}
