//! Variable interpolation in compose values, as the Compose Specification
//! defines it: `$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR-default}`,
//! `${VAR:?err}`, `${VAR?err}`, `${VAR:+alt}`, `${VAR+alt}` and `$$` for a
//! literal `$`; defaults may themselves hold variables. Also the `.env`
//! file format the variables come from.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Result, anyhow, bail};

/// The variables a file is interpolated with, and the names already warned
/// about as unset (each is named once).
#[derive(Debug, Default, Clone)]
pub struct Env {
    pub vars: BTreeMap<String, String>,
    pub unset: BTreeSet<String>,
}

impl Env {
    pub fn get(&self, k: &str) -> Option<&str> {
        self.vars.get(k).map(String::as_str)
    }
}

fn name_start(c: char) -> bool {
    c == '_' || c.is_ascii_alphabetic()
}

fn name_char(c: char) -> bool {
    c == '_' || c.is_ascii_alphanumeric()
}

/// Interpolates `s`; `what` names the entry for errors and warnings.
pub fn interpolate(s: &str, env: &mut Env, what: &str, warn: &mut Vec<String>) -> Result<String> {
    if !s.contains('$') {
        return Ok(s.to_string());
    }
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    let invalid = || {
        anyhow!(
            "{what}: invalid interpolation format in {s:?}: write $$ for a literal $ (variables are $NAME or ${{NAME}})"
        )
    };
    while i < chars.len() {
        let c = chars[i];
        if c != '$' {
            out.push(c);
            i += 1;
            continue;
        }
        match chars.get(i + 1) {
            Some('$') => {
                out.push('$');
                i += 2;
            }
            Some(&n) if name_start(n) => {
                let start = i + 1;
                let mut j = start;
                while j < chars.len() && name_char(chars[j]) {
                    j += 1;
                }
                let name: String = chars[start..j].iter().collect();
                out.push_str(&lookup(&name, env, warn));
                i = j;
            }
            Some('{') => {
                // The matching brace, counting nested `${`.
                let mut depth = 1;
                let mut j = i + 2;
                while j < chars.len() {
                    match chars[j] {
                        '$' if chars.get(j + 1) == Some(&'{') => {
                            depth += 1;
                            j += 1;
                        }
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                    j += 1;
                }
                if j >= chars.len() {
                    return Err(invalid());
                }
                let inner: String = chars[i + 2..j].iter().collect();
                out.push_str(&braced(&inner, s, env, what, warn)?);
                i = j + 1;
            }
            _ => return Err(invalid()),
        }
    }
    Ok(out)
}

fn lookup(name: &str, env: &mut Env, warn: &mut Vec<String>) -> String {
    match env.get(name) {
        Some(v) => v.to_string(),
        None => {
            if env.unset.insert(name.to_string()) {
                warn.push(format!(
                    "the {name} variable is not set: a blank string is used (set it in the environment, in .env or with --env-file)"
                ));
            }
            String::new()
        }
    }
}

/// The inside of `${...}`.
fn braced(
    inner: &str,
    whole: &str,
    env: &mut Env,
    what: &str,
    warn: &mut Vec<String>,
) -> Result<String> {
    let end = inner
        .char_indices()
        .find(|&(_, c)| !name_char(c))
        .map_or(inner.len(), |(i, _)| i);
    let name = &inner[..end];
    if !name.chars().next().is_some_and(name_start) {
        bail!("{what}: invalid interpolation format in {whole:?}: ${{{inner}}} names no variable");
    }
    let rest = &inner[end..];
    if rest.is_empty() {
        return Ok(lookup(name, env, warn));
    }
    let (colon, rest) = match rest.strip_prefix(':') {
        Some(r) => (true, r),
        None => (false, rest),
    };
    let mut it = rest.chars();
    let op = it.next().unwrap_or(' ');
    let arg = it.as_str();
    let value = env.get(name).map(str::to_string);
    // With the colon an empty value counts as unset.
    let set = match &value {
        Some(v) => !(colon && v.is_empty()),
        None => false,
    };
    match op {
        '-' => match value {
            Some(v) if set => Ok(v),
            _ => interpolate(arg, env, what, warn),
        },
        '+' => {
            if set {
                interpolate(arg, env, what, warn)
            } else {
                Ok(String::new())
            }
        }
        '?' => match value {
            Some(v) if set => Ok(v),
            _ => {
                let msg = interpolate(arg, env, what, warn)?;
                bail!(
                    "{what}: required variable {name} is {} in {whole:?}{}",
                    if colon { "missing or empty" } else { "missing" },
                    if msg.is_empty() {
                        String::new()
                    } else {
                        format!(": {msg}")
                    }
                )
            }
        },
        _ => bail!(
            "{what}: invalid interpolation format in {whole:?}: ${{{inner}}} (known forms: ${{V}}, ${{V:-default}}, ${{V-default}}, ${{V:?error}}, ${{V?error}}, ${{V:+alt}}, ${{V+alt}})"
        ),
    }
}

/// Reads a `.env` file: `KEY=VALUE` lines, `#` comments, an optional
/// `export `, single quotes taken literally, double quotes with `\n`, `\t`,
/// `\"` and `\\` escapes; unquoted and double-quoted values are interpolated
/// with the variables known so far. Variables already in `env` (the process
/// environment) win.
pub fn read_env_file(
    text: &str,
    origin: &str,
    env: &mut Env,
    warn: &mut Vec<String>,
) -> Result<()> {
    let mut own: BTreeMap<String, String> = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
        let Some((k, v)) = line.split_once('=') else {
            bail!("{origin} line {}: {line:?} is not KEY=VALUE", n + 1);
        };
        let k = k.trim().to_string();
        if !k.chars().next().is_some_and(name_start)
            || !k.chars().all(|c| name_char(c) || c == '.' || c == '-')
        {
            bail!("{origin} line {}: {k:?} is not a variable name", n + 1);
        }
        let v = v.trim();
        let value = if let Some(q) = v.strip_prefix('\'') {
            q.split_once('\'').map_or(q, |(a, _)| a).to_string()
        } else {
            let raw = if let Some(q) = v.strip_prefix('"') {
                let mut s = String::new();
                let mut chars = q.chars();
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => match chars.next() {
                            Some('n') => s.push('\n'),
                            Some('t') => s.push('\t'),
                            Some(o) => s.push(o),
                            None => {}
                        },
                        o => s.push(o),
                    }
                }
                s
            } else {
                match v.find(" #") {
                    Some(i) => v[..i].trim_end().to_string(),
                    None => v.to_string(),
                }
            };
            let mut scope = Env {
                vars: own.clone(),
                unset: env.unset.clone(),
            };
            scope
                .vars
                .extend(env.vars.iter().map(|(a, b)| (a.clone(), b.clone())));
            let what = format!("{origin} line {}", n + 1);
            let r = interpolate(&raw, &mut scope, &what, warn)?;
            env.unset = scope.unset;
            r
        };
        own.insert(k, value);
    }
    for (k, v) in own {
        env.vars.entry(k).or_insert(v);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env {
            vars: pairs
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            unset: BTreeSet::new(),
        }
    }

    fn run(s: &str, e: &mut Env) -> Result<String> {
        interpolate(s, e, "x", &mut Vec::new())
    }

    #[test]
    fn every_form_of_the_specification() {
        let mut e = env(&[("A", "a"), ("EMPTY", ""), ("V", "1.2")]);
        for (input, want) in [
            ("plain", "plain"),
            ("$A", "a"),
            ("${A}", "a"),
            ("x$A-y", "xa-y"),
            ("$$A", "$A"),
            ("cost $$5", "cost $5"),
            ("${A:-d}", "a"),
            ("${NOPE:-d}", "d"),
            ("${EMPTY:-d}", "d"),
            ("${EMPTY-d}", ""),
            ("${NOPE-d}", "d"),
            ("${A:+alt}", "alt"),
            ("${EMPTY:+alt}", ""),
            ("${EMPTY+alt}", "alt"),
            ("${NOPE+alt}", ""),
            ("${NOPE:-${A}}", "a"),
            ("${NOPE:-${NOPE2:-deep}}", "deep"),
            ("crux:${V:-stable}", "crux:1.2"),
            ("crux:${DYO:-stable}", "crux:stable"),
            ("${NOPE}", ""),
            ("${A:?must}", "a"),
        ] {
            assert_eq!(run(input, &mut e).unwrap(), want, "{input}");
        }
        let mut w = Vec::new();
        interpolate("$UNSET and $UNSET", &mut e, "x", &mut w).unwrap();
        assert_eq!(w.len(), 1, "{w:?}");
        let err = run("${NOPE:?set NOPE please}", &mut e)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("required variable NOPE") && err.contains("set NOPE please"),
            "{err}"
        );
        assert!(run("${EMPTY:?e}", &mut e).is_err());
        assert_eq!(run("${EMPTY?e}", &mut e).unwrap(), "");
        assert!(run("${NOPE?e}", &mut e).is_err());
        for bad in ["$1", "a $", "${A", "${}", "${A*b}"] {
            assert!(run(bad, &mut e).is_err(), "{bad}");
        }
    }

    #[test]
    fn env_files_quote_comment_and_yield_to_the_process() {
        let mut e = env(&[("SHELL_WINS", "shell")]);
        read_env_file(
            "# comment\nexport A=1\nB=\"two\\nlines\" \nC='lit $A'\nD=${A}x # note\nSHELL_WINS=file\n",
            ".env",
            &mut e,
            &mut Vec::new(),
        )
        .unwrap();
        assert_eq!(e.get("A"), Some("1"));
        assert_eq!(e.get("B"), Some("two\nlines"));
        assert_eq!(e.get("C"), Some("lit $A"));
        assert_eq!(e.get("D"), Some("1x"));
        assert_eq!(e.get("SHELL_WINS"), Some("shell"));
        assert!(read_env_file("nonsense\n", ".env", &mut e, &mut Vec::new()).is_err());
    }
}
