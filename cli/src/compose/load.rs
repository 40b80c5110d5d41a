//! Reading a compose file into one resolved document: limits checked on the
//! raw text before the YAML parser runs, variables interpolated, YAML merge
//! keys (`<<`, nested and lists) resolved, `!reset`/`!override` honoured,
//! `extends` (same file or `file:`) and `include` followed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Result, anyhow, bail};
use serde_norway::{Mapping, Value};

use super::interp::{self, Env};

/// A compose file larger than this is refused before parsing.
pub const MAX_FILE_BYTES: usize = 4 << 20;
/// Bracket or indentation nesting deeper than this is refused.
pub const MAX_DEPTH: usize = 64;
/// More aliases (`*name`) than this in one file are refused.
pub const MAX_ALIASES: usize = 1_000;
/// More values than this once aliases are expanded are refused.
pub const MAX_NODES: usize = 1_000_000;
/// `extends` chains and `include` trees deeper than this are refused.
const MAX_LINKS: usize = 32;

/// Refuses, from the raw text and in linear time, a file whose size,
/// nesting or alias count no real compose file has.
pub fn prescan(text: &str, origin: &str) -> Result<()> {
    if text.len() > MAX_FILE_BYTES {
        bail!(
            "{origin} is {} bytes: compose files of more than {MAX_FILE_BYTES} bytes are refused",
            text.len()
        );
    }
    let too_deep = |line: usize| {
        anyhow!("{origin} line {line}: nesting deeper than {MAX_DEPTH} levels: the file is refused")
    };
    let mut brackets = 0usize;
    let mut aliases = 0usize;
    let mut indents: Vec<usize> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let b = line.as_bytes();
        // Indentation nesting (block style), counting `- ` items on the line.
        let indent = b.iter().take_while(|&&c| c == b' ').count();
        let body = &line[indent..];
        if brackets == 0 && !body.is_empty() && !body.starts_with('#') {
            while indents.last().is_some_and(|&t| t >= indent) {
                indents.pop();
            }
            indents.push(indent);
            let mut dashes = 0;
            let mut rest = body;
            while let Some(r) = rest.strip_prefix("- ") {
                dashes += 1;
                rest = r.trim_start();
            }
            if indents.len() + dashes > MAX_DEPTH {
                return Err(too_deep(n + 1));
            }
        }
        let mut quote: Option<u8> = None;
        let mut prev = b' ';
        let mut i = 0;
        while i < b.len() {
            let c = b[i];
            let token_start = matches!(prev, b' ' | b'\t' | b'[' | b'{' | b',' | b':');
            match quote {
                Some(b'\'') if c == b'\'' => quote = None,
                Some(b'"') if c == b'\\' => i += 1,
                Some(b'"') if c == b'"' => quote = None,
                Some(_) => {}
                None => match c {
                    b'#' if token_start => break,
                    b'\'' | b'"' if token_start => quote = Some(c),
                    b'[' | b'{' if token_start => {
                        brackets += 1;
                        if brackets > MAX_DEPTH {
                            return Err(too_deep(n + 1));
                        }
                    }
                    b']' | b'}' => brackets = brackets.saturating_sub(1),
                    b'*' if token_start
                        && b.get(i + 1)
                            .is_some_and(|x| x.is_ascii_alphanumeric() || *x == b'_') =>
                    {
                        aliases += 1;
                        if aliases > MAX_ALIASES {
                            bail!(
                                "{origin} line {}: more than {MAX_ALIASES} aliases: the file is refused",
                                n + 1
                            );
                        }
                    }
                    _ => {}
                },
            }
            prev = c;
            i += 1;
        }
    }
    Ok(())
}

/// How many values a tree holds, stopping past the limit.
fn count(v: &Value, n: &mut usize) {
    *n += 1;
    if *n > MAX_NODES {
        return;
    }
    match v {
        Value::Sequence(s) => s.iter().for_each(|x| count(x, n)),
        Value::Mapping(m) => m.iter().for_each(|(k, x)| {
            count(k, n);
            count(x, n)
        }),
        Value::Tagged(t) => count(&t.value, n),
        _ => {}
    }
}

/// Parses YAML text after the limits are checked.
pub fn yaml(text: &str, origin: &str) -> Result<Value> {
    prescan(text, origin)?;
    let v: Value =
        serde_norway::from_str(text).map_err(|e| anyhow!("{origin} is not YAML: {e}"))?;
    let mut n = 0;
    count(&v, &mut n);
    if n > MAX_NODES {
        bail!("{origin} expands to more than {MAX_NODES} values: the file is refused");
    }
    Ok(v)
}

fn is_tag(v: &Value, name: &str) -> bool {
    matches!(v, Value::Tagged(t) if t.tag == name)
}

fn key_text(k: &Value) -> String {
    match k {
        Value::String(s) => s.clone(),
        other => serde_norway::to_string(other)
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
    }
}

/// Interpolates every string value (not keys) of the tree.
pub fn interpolate(v: &mut Value, path: &str, env: &mut Env, warn: &mut Vec<String>) -> Result<()> {
    match v {
        Value::String(s) => *s = interp::interpolate(s, env, &describe(path), warn)?,
        Value::Sequence(list) => {
            for (i, x) in list.iter_mut().enumerate() {
                interpolate(x, &format!("{path}[{i}]"), env, warn)?;
            }
        }
        Value::Mapping(m) => {
            for (k, x) in m.iter_mut() {
                let p = if path.is_empty() {
                    key_text(k)
                } else {
                    format!("{path}.{}", key_text(k))
                };
                interpolate(x, &p, env, warn)?;
            }
        }
        Value::Tagged(t) => interpolate(&mut t.value, path, env, warn)?,
        _ => {}
    }
    Ok(())
}

/// `services.web.ports[0]` as `service web: ports[0]`.
fn describe(path: &str) -> String {
    match path.strip_prefix("services.") {
        Some(rest) => match rest.split_once(['.', '[']) {
            Some((svc, _)) => {
                let key = &rest[svc.len()..];
                format!("service {svc}: {}", key.trim_start_matches('.'))
            }
            None => format!("service {rest}"),
        },
        None => path.to_string(),
    }
}

/// Resolves `<<` merge keys bottom-up (so merged maps with their own `<<`
/// count), a list of maps in order (the first wins), local keys over merged
/// ones; a local `!reset` removes the key, merged or not.
pub fn merges(v: Value) -> Result<Value> {
    Ok(match v {
        Value::Mapping(m) => {
            let mut out = Mapping::new();
            let mut sources = Vec::new();
            let mut reset = Vec::new();
            for (k, x) in m {
                let x = merges(x)?;
                if k.as_str() == Some("<<") {
                    sources.push(x);
                } else if is_tag(&x, "reset") {
                    // Kept for a later `extends` overlay unless it resets a merged key.
                    reset.push(k.clone());
                    out.insert(k, x);
                } else {
                    out.insert(k, x);
                }
            }
            let merged = !sources.is_empty();
            for s in sources {
                let list = match s {
                    Value::Sequence(l) => l,
                    other => vec![other],
                };
                for item in list {
                    let Value::Mapping(mm) = item else {
                        bail!("a YAML merge key (<<) takes a map or a list of maps");
                    };
                    for (k, x) in mm {
                        if !out.contains_key(&k) {
                            out.insert(k, x);
                        }
                    }
                }
            }
            if merged {
                for k in &reset {
                    out.remove(k);
                }
            }
            Value::Mapping(out)
        }
        Value::Sequence(s) => Value::Sequence(s.into_iter().map(merges).collect::<Result<_>>()?),
        Value::Tagged(mut t) => {
            t.value = merges(t.value)?;
            Value::Tagged(t)
        }
        other => other,
    })
}

/// Drops the `!reset`/`!override` tags left once overlays are applied.
fn untag(v: Value) -> Value {
    match v {
        Value::Mapping(m) => Value::Mapping(
            m.into_iter()
                .filter(|(_, x)| !is_tag(x, "reset"))
                .map(|(k, x)| (k, untag(x)))
                .collect(),
        ),
        Value::Sequence(s) => Value::Sequence(s.into_iter().map(untag).collect()),
        Value::Tagged(t) => untag(t.value),
        other => other,
    }
}

/// `K=V` lists as maps, so overlays merge them per key.
fn normalize_service(m: &mut Mapping) {
    for key in ["environment", "labels", "build_args"] {
        if let Some(Value::Sequence(list)) = m.get(key) {
            let mut map = Mapping::new();
            for item in list {
                let s = match item {
                    Value::String(s) => s.clone(),
                    other => key_text(other),
                };
                match s.split_once('=') {
                    Some((k, v)) => {
                        map.insert(Value::String(k.trim().into()), Value::String(v.into()))
                    }
                    None => map.insert(Value::String(s.trim().into()), Value::Null),
                };
            }
            m.insert(Value::String(key.into()), Value::Mapping(map));
        }
    }
    if let Some(Value::Sequence(list)) = m.get("depends_on") {
        let mut map = Mapping::new();
        for item in list {
            let mut cond = Mapping::new();
            cond.insert("condition".into(), "service_started".into());
            map.insert(Value::String(key_text(item)), Value::Mapping(cond));
        }
        m.insert("depends_on".into(), Value::Mapping(map));
    }
}

/// Keys whose lists add up when a service extends another.
const APPENDED: &[&str] = &[
    "ports",
    "volumes",
    "expose",
    "dns",
    "dns_search",
    "env_file",
    "cap_add",
    "cap_drop",
    "devices",
    "extra_hosts",
    "security_opt",
    "tmpfs",
    "external_links",
    "links",
    "volumes_from",
    "profiles",
    "secrets",
    "configs",
];

/// `over` on top of `base`, by the Compose Specification's merge rules:
/// maps merge per key, the listed lists append, other values are replaced;
/// `!reset` removes, `!override` replaces without merging.
fn overlay(base: &mut Mapping, over: Mapping) {
    for (k, v) in over {
        if is_tag(&v, "reset") {
            base.remove(&k);
            continue;
        }
        if let Value::Tagged(t) = &v
            && t.tag == "override"
        {
            base.insert(k, t.value.clone());
            continue;
        }
        let appended = k.as_str().is_some_and(|s| APPENDED.contains(&s));
        match (base.get_mut(&k), v) {
            (Some(Value::Mapping(b)), Value::Mapping(o)) => overlay(b, o),
            (Some(Value::Sequence(b)), Value::Sequence(o)) if appended => {
                for x in o {
                    if !b.contains(&x) {
                        b.push(x);
                    }
                }
            }
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// `path` with `.` and inner `..` components folded, without touching the
/// disk (leading `..` stay).
fn lexical(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if matches!(out.components().next_back(), Some(Component::Normal(_))) {
                    out.pop();
                } else if !out.has_root() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// A host path as written in a file whose directory is `rel` (from the
/// main file's directory), rebased onto the main file's directory, as the
/// Compose Specification resolves relative paths of extended and included
/// files against the file that names them.
fn rebase(p: &str, rel: &Path) -> String {
    if Path::new(p).is_absolute() || p.starts_with('~') {
        return p.to_string();
    }
    let joined = lexical(&rel.join(p));
    let s = joined.display().to_string();
    if joined.is_absolute() || s.starts_with("..") {
        s
    } else if s.is_empty() {
        ".".into()
    } else {
        format!("./{s}")
    }
}

/// The host paths of a service read from a file in `rel`: `env_file`,
/// bind-mount sources (short syntax from `.`, long syntax `type: bind`) and
/// the build context (unless it is a URL).
fn rebase_service(m: &mut Mapping, rel: &Path) {
    let is_url = |s: &str| s.contains("://") || s.starts_with("git@");
    match m.get_mut("env_file") {
        Some(Value::String(s)) => *s = rebase(s, rel),
        Some(Value::Sequence(list)) => {
            for item in list {
                match item {
                    Value::String(s) => *s = rebase(s, rel),
                    Value::Mapping(e) => {
                        if let Some(Value::String(s)) = e.get_mut("path") {
                            *s = rebase(s, rel);
                        }
                    }
                    _ => {}
                }
            }
        }
        _ => {}
    }
    if let Some(Value::Sequence(list)) = m.get_mut("volumes") {
        for item in list {
            match item {
                Value::String(s) => {
                    if let Some((src, rest)) = s.split_once(':')
                        && (src == "."
                            || src == ".."
                            || src.starts_with("./")
                            || src.starts_with("../"))
                    {
                        *s = format!("{}:{rest}", rebase(src, rel));
                    }
                }
                Value::Mapping(v) => {
                    let bind = v.get("type").and_then(Value::as_str) == Some("bind");
                    if bind && let Some(Value::String(src)) = v.get_mut("source") {
                        *src = rebase(src, rel);
                    }
                }
                _ => {}
            }
        }
    }
    match m.get_mut("build") {
        Some(Value::String(s)) if !is_url(s) => *s = rebase(s, rel),
        Some(Value::Mapping(b)) => {
            if let Some(Value::String(s)) = b.get_mut("context")
                && !is_url(s)
            {
                *s = rebase(s, rel);
            }
        }
        _ => {}
    }
}

/// One file read, interpolated and with its merge keys resolved.
struct File {
    dir: PathBuf,
    services: Mapping,
    top: Mapping,
}

/// Loads a compose file with what it extends and includes.
pub struct Loader<'a> {
    pub env: &'a mut Env,
    pub warn: &'a mut Vec<String>,
    files: BTreeMap<PathBuf, File>,
    /// The main file's directory, which relative paths are rebased onto.
    root: PathBuf,
}

impl<'a> Loader<'a> {
    pub fn new(env: &'a mut Env, warn: &'a mut Vec<String>) -> Self {
        Loader {
            env,
            warn,
            files: BTreeMap::new(),
            root: PathBuf::new(),
        }
    }

    fn parse(&mut self, text: &str, origin: &str, dir: &Path) -> Result<File> {
        let mut v = yaml(text, origin)?;
        interpolate(&mut v, "", self.env, self.warn)?;
        let v = merges(v).map_err(|e| anyhow!("{origin}: {e}"))?;
        let Value::Mapping(mut top) = v else {
            bail!("{origin} is not a compose file: it is not a map");
        };
        let services = match top.remove("services") {
            Some(Value::Mapping(m)) => m,
            Some(Value::Null) | None => Mapping::new(),
            Some(_) => bail!("{origin}: services is not a map"),
        };
        // Where this file's directory is, seen from the main file's.
        let here = lexical(dir);
        let rel = match here.strip_prefix(&self.root) {
            Ok(r) if r.as_os_str().is_empty() => None,
            Ok(r) => Some(r.to_path_buf()),
            Err(_) if self.root.is_absolute() == here.is_absolute() => {
                // Up and over: as many `..` as the root has components past
                // the common part.
                let common = self
                    .root
                    .components()
                    .zip(here.components())
                    .take_while(|(a, b)| a == b)
                    .count();
                let mut r = PathBuf::new();
                for _ in self.root.components().skip(common) {
                    r.push("..");
                }
                r.extend(here.components().skip(common));
                Some(r)
            }
            Err(_) => Some(std::path::absolute(&here).unwrap_or(here.clone())),
        };
        let mut out = Mapping::new();
        for (k, v) in services {
            let name = key_text(&k);
            let mut m = match v {
                Value::Mapping(m) => m,
                Value::Null => Mapping::new(),
                _ => bail!("{origin}: service {name} is not a map"),
            };
            normalize_service(&mut m);
            if let Some(rel) = &rel {
                rebase_service(&mut m, rel);
            }
            out.insert(Value::String(name), Value::Mapping(m));
        }
        Ok(File {
            dir: dir.to_path_buf(),
            services: out,
            top,
        })
    }

    fn file(&mut self, path: &Path) -> Result<&File> {
        let key = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        if !self.files.contains_key(&key) {
            if self.files.len() >= MAX_LINKS * 4 {
                bail!(
                    "more than {} compose files are extended or included",
                    MAX_LINKS * 4
                );
            }
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow!("cannot read {}: {e}", path.display()))?;
            let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
            let f = self.parse(&text, &path.display().to_string(), &dir)?;
            self.files.insert(key.clone(), f);
        }
        self.files
            .get(&key)
            .ok_or_else(|| anyhow!("cannot read {}", path.display()))
    }

    /// A service with its `extends` chain applied.
    fn service(
        &mut self,
        file: &Path,
        services: &Mapping,
        name: &str,
        chain: &mut Vec<String>,
    ) -> Result<Mapping> {
        let here = format!("{}#{name}", file.display());
        if chain.contains(&here) {
            bail!(
                "service {name}: extends has a cycle ({} -> {name})",
                chain.join(" -> ")
            );
        }
        if chain.len() > MAX_LINKS {
            bail!("service {name}: extends is chained more than {MAX_LINKS} times");
        }
        let Some(Value::Mapping(m)) = services.get(name) else {
            bail!("service {name} is not defined in {}", file.display());
        };
        let mut m = m.clone();
        let Some(ext) = m.remove("extends") else {
            return Ok(m);
        };
        chain.push(here);
        let (base_name, base_file) = match &ext {
            Value::String(s) => (s.clone(), None),
            Value::Mapping(e) => (
                e.get("service")
                    .and_then(Value::as_str)
                    .ok_or_else(|| anyhow!("service {name}: extends names no service"))?
                    .to_string(),
                e.get("file").and_then(Value::as_str).map(str::to_string),
            ),
            _ => bail!("service {name}: extends is neither a service name nor a map"),
        };
        let mut base = match base_file {
            None => self.service(file, services, &base_name, chain)?,
            Some(f) => {
                let dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
                let path = dir.join(&f);
                let other = self
                    .file(&path)
                    .map_err(|e| anyhow!("service {name}: extends file {f}: {e}"))?;
                let svcs = other.services.clone();
                self.service(&path, &svcs, &base_name, chain)
                    .map_err(|e| anyhow!("service {name}: extends {base_name} in {f}: {e}"))?
            }
        };
        chain.pop();
        overlay(&mut base, m);
        Ok(base)
    }

    /// The resolved top level: `services` with extends applied and included
    /// files' services added; the other top-level keys as written.
    pub fn load_text(&mut self, text: &str, origin: &str, dir: &Path) -> Result<Mapping> {
        self.root = lexical(dir);
        let f = self.parse(text, origin, dir)?;
        let path = dir.join(origin.rsplit('/').next().unwrap_or(origin));
        self.resolve(f, &path, 0)
    }

    fn resolve(&mut self, f: File, path: &Path, depth: usize) -> Result<Mapping> {
        let File {
            dir,
            services,
            mut top,
        } = f;
        let mut out = Mapping::new();
        let names: Vec<String> = services.keys().map(key_text).collect();
        for name in names {
            let m = self.service(path, &services, &name, &mut Vec::new())?;
            out.insert(Value::String(name), untag(Value::Mapping(m)));
        }
        if let Some(inc) = top.remove("include") {
            if depth >= MAX_LINKS {
                bail!("include is nested more than {MAX_LINKS} times");
            }
            let list = match inc {
                Value::Sequence(l) => l,
                other => vec![other],
            };
            for item in list {
                let paths: Vec<String> = match &item {
                    Value::String(s) => vec![s.clone()],
                    Value::Mapping(m) => {
                        for k in m.keys().map(key_text) {
                            if k != "path" {
                                self.warn.push(format!(
                                    "include: {k} is not supported: the included file is read with the variables of the main file"
                                ));
                            }
                        }
                        match m.get("path") {
                            Some(Value::String(s)) => vec![s.clone()],
                            Some(Value::Sequence(l)) => l.iter().map(key_text).collect(),
                            _ => bail!("include: an entry names no path"),
                        }
                    }
                    _ => bail!("include: an entry is neither a path nor a map"),
                };
                for p in paths {
                    let full = dir.join(&p);
                    let text = std::fs::read_to_string(&full)
                        .map_err(|e| anyhow!("include {p}: cannot read {}: {e}", full.display()))?;
                    let sub_dir = full.parent().map(Path::to_path_buf).unwrap_or_default();
                    let sub = self.parse(&text, &full.display().to_string(), &sub_dir)?;
                    let sub_top = self.resolve(sub, &full, depth + 1)?;
                    if let Some(Value::Mapping(s)) = sub_top.get("services") {
                        for (k, v) in s {
                            if out.contains_key(k) {
                                bail!(
                                    "include {p}: service {} is also defined in the including file",
                                    key_text(k)
                                );
                            }
                            out.insert(k.clone(), v.clone());
                        }
                    }
                }
            }
        }
        top.insert("services".into(), Value::Mapping(out));
        Ok(top)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn hostile_files_are_refused_before_parsing() {
        let t = Instant::now();
        let brackets = format!("a: {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
        let e = yaml(&brackets, "b.yml").unwrap_err().to_string();
        assert!(e.contains("nesting deeper than 64"), "{e}");
        let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            let p = i - 1;
            bomb.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let e = yaml(&bomb, "bomb.yml").unwrap_err().to_string();
        assert!(
            e.contains("refused") || e.contains("repetition limit"),
            "{e}"
        );
        let indent: String = (0..200)
            .map(|i| format!("{}k{i}:\n", " ".repeat(i)))
            .collect();
        let e = yaml(&indent, "i.yml").unwrap_err().to_string();
        assert!(e.contains("nesting deeper"), "{e}");
        let big = "#".repeat(MAX_FILE_BYTES + 1);
        assert!(
            yaml(&big, "big.yml")
                .unwrap_err()
                .to_string()
                .contains("bytes")
        );
        println!("refused in {:?}", t.elapsed());
    }

    #[test]
    fn relative_paths_rebase_lexically() {
        let sub = Path::new("sub");
        assert_eq!(rebase("./data", sub), "./sub/data");
        assert_eq!(rebase("data", sub), "./sub/data");
        assert_eq!(rebase("../x", sub), "./x");
        assert_eq!(rebase("../../x", sub), "../x");
        assert_eq!(rebase(".", sub), "./sub");
        assert_eq!(rebase("..", sub), ".");
        assert_eq!(rebase("/abs", sub), "/abs");
        assert_eq!(rebase("~/h", sub), "~/h");
        assert_eq!(rebase("./a", Path::new("../up")), "../up/a");
        assert_eq!(lexical(Path::new("/a/./b/../c")), PathBuf::from("/a/c"));
        assert_eq!(lexical(Path::new("/..")), PathBuf::from("/"));
    }

    #[test]
    fn merge_keys_nest_and_reset() {
        let v = yaml(
            "x: &base {a: 1, b: 2}\ny: &mid {<<: *base, b: 3, c: 4}\nz:\n  <<: [*mid, {d: 5, a: 9}]\n  c: !reset null\n",
            "m.yml",
        )
        .unwrap();
        let v = merges(v).unwrap();
        let z = v.get("z").unwrap();
        assert_eq!(z.get("a"), Some(&Value::from(1)));
        assert_eq!(z.get("b"), Some(&Value::from(3)));
        assert_eq!(z.get("d"), Some(&Value::from(5)));
        assert!(z.get("c").is_none());
        assert!(z.get("<<").is_none());
    }
}
