//! Parsing of the values of flags: `K=V` pairs, ports, volumes, restart
//! policies, image references, audit times, secret files, roles and ticket
//! lifetimes. Every error says what form was expected.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Result, anyhow, bail};
use shoal_protocol::model::{Port, PortRange, Protocol, RestartPolicy, Role, Volume, VolumeKind};

use crate::error::Usage;

/// A member's role, `admin` or `user` (a usage error otherwise).
pub fn role(s: &str) -> Result<Role> {
    match Role::parse(s) {
        Some(Role::Owner) => {
            Err(Usage("a team has exactly one owner: the role is admin or user".into()).into())
        }
        Some(r) => Ok(r),
        None => Err(Usage(format!("unknown role {s:?}: use admin or user")).into()),
    }
}

/// Parses a lifetime such as `24h`, `30m` or `7d`.
pub fn lifetime(s: &str) -> Result<Duration> {
    let d = humantime::parse_duration(s)
        .map_err(|e| anyhow!("{s:?} is not a duration such as 24h, 30m or 7d ({e})"))?;
    if d.is_zero() {
        bail!("a ticket must live longer than 0s");
    }
    if d > MAX_TICKET_LIFETIME {
        bail!("--expires {s}: a ticket lives at most 10 years; give a shorter time such as 7d");
    }
    Ok(d)
}

/// The longest a ticket may live: 10 years.
pub const MAX_TICKET_LIFETIME: Duration = Duration::from_secs(10 * 365 * 86_400);

/// `KEY=VALUE` (the value may be empty or hold `=`).
pub fn key_value(flag: &str, s: &str) -> Result<(String, String)> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| anyhow!("{flag} {s:?} is not KEY=VALUE"))?;
    let k = k.trim();
    if k.is_empty() || k.chars().any(char::is_whitespace) {
        bail!("{flag} {s:?}: the key is empty or has spaces; use KEY=VALUE");
    }
    Ok((k.to_string(), v.to_string()))
}

/// Many `KEY=VALUE` into a map (later ones win).
pub fn key_values(flag: &str, items: &[String]) -> Result<BTreeMap<String, String>> {
    items.iter().map(|s| key_value(flag, s)).collect()
}

fn port_number(s: &str, whole: &str) -> Result<u16> {
    let n: u16 = s
        .parse()
        .map_err(|_| anyhow!("--port {whole:?}: {s:?} is not a port number (1-65535)"))?;
    if n == 0 {
        bail!("--port {whole:?}: port 0 is not a port");
    }
    Ok(n)
}

fn port_span(s: &str, whole: &str) -> Result<(u16, u16)> {
    match s.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (port_number(a, whole)?, port_number(b, whole)?);
            if b < a {
                bail!("--port {whole:?}: a range goes from low to high");
            }
            Ok((a, b))
        }
        None => {
            let n = port_number(s, whole)?;
            Ok((n, n))
        }
    }
}

/// `INTERNAL[/tcp|/udp]` (the first port of a range): which published port
/// or range `--unset-port` removes.
pub fn internal_port(s: &str) -> Result<(u16, Protocol)> {
    let (body, protocol) = match s.rsplit_once('/') {
        Some((b, "tcp")) => (b, Protocol::Tcp),
        Some((b, "udp")) => (b, Protocol::Udp),
        Some((_, p)) => bail!("--unset-port {s:?}: protocol {p:?} is not tcp or udp"),
        None => (s, Protocol::Tcp),
    };
    let n = body
        .parse::<u16>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| anyhow!("--unset-port {s:?}: give the internal port, 1-65535"))?;
    Ok((n, protocol))
}

/// A published port or port range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortSpec {
    One(Port),
    Range(PortRange),
}

/// `[EXT:]INT[/tcp|/udp]`, or ranges `EXT_FROM-EXT_TO:INT_FROM-INT_TO`.
/// A leading host address (`127.0.0.1:8080:80`) is refused: shoal
/// publishes on every address of the node.
pub fn port(s: &str) -> Result<PortSpec> {
    let (body, protocol) = match s.rsplit_once('/') {
        Some((b, "tcp")) => (b, Protocol::Tcp),
        Some((b, "udp")) => (b, Protocol::Udp),
        Some((_, p)) => bail!("--port {s:?}: protocol {p:?} is not tcp or udp"),
        None => (s, Protocol::Tcp),
    };
    let parts: Vec<&str> = body.split(':').collect();
    let (ext, int) = match parts.as_slice() {
        [int] => (None, *int),
        [ext, int] => (Some(*ext), *int),
        [_, _, _] => {
            bail!("--port {s:?}: a host address is not supported; use EXTERNAL:INTERNAL[/udp]")
        }
        _ => bail!("--port {s:?} is not [EXTERNAL:]INTERNAL[/udp]"),
    };
    let (ifrom, ito) = port_span(int, s)?;
    match ext {
        None if ifrom == ito => Ok(PortSpec::One(Port {
            internal: ifrom,
            external: None,
            protocol,
        })),
        None => Ok(PortSpec::Range(PortRange {
            internal_from: ifrom,
            internal_to: ito,
            external_from: ifrom,
            external_to: ito,
            protocol,
        })),
        Some(e) => {
            let (efrom, eto) = port_span(e, s)?;
            if ifrom == ito && efrom == eto {
                return Ok(PortSpec::One(Port {
                    internal: ifrom,
                    external: Some(efrom),
                    protocol,
                }));
            }
            if ito - ifrom != eto - efrom {
                bail!("--port {s:?}: the external and internal ranges differ in size");
            }
            Ok(PortSpec::Range(PortRange {
                internal_from: ifrom,
                internal_to: ito,
                external_from: efrom,
                external_to: eto,
                protocol,
            }))
        }
    }
}

/// `NAME:PATH[:ro|:rw]`, or `tmpfs:PATH` for a tmpfs.
pub fn volume(s: &str) -> Result<Volume> {
    let parts: Vec<&str> = s.split(':').collect();
    let (name, path, mode) = match parts.as_slice() {
        [n, p] => (*n, *p, None),
        [n, p, m] => (*n, *p, Some(*m)),
        _ => bail!("--volume {s:?} is not NAME:PATH[:ro]"),
    };
    if !path.starts_with('/') {
        bail!("--volume {s:?}: the path in the container must be absolute");
    }
    if name.is_empty() || name.starts_with('.') || name.starts_with('/') {
        bail!(
            "--volume {s:?}: {name:?} is not a volume name; shoal manages named volumes (host directories are not mounted)"
        );
    }
    let kind = match (name, mode) {
        ("tmpfs", None) => VolumeKind::Tmpfs,
        (_, None | Some("rw")) => VolumeKind::Rw,
        (_, Some("ro")) => VolumeKind::Ro,
        (_, Some(m)) => bail!("--volume {s:?}: mode {m:?} is not ro or rw"),
    };
    Ok(Volume {
        name: name.to_string(),
        path: path.to_string(),
        kind,
        size: None,
    })
}

/// `no`, `always`, `unless-stopped` or `on-failure`.
pub fn restart(s: &str) -> Result<RestartPolicy> {
    RestartPolicy::parse(s).ok_or_else(|| {
        anyhow!("restart policy {s:?} is not no, always, unless-stopped or on-failure")
    })
}

/// An image reference split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRefParts {
    /// `host[:port]` when the reference names one.
    pub host: Option<String>,
    pub name: String,
    pub tag: String,
}

/// `[HOST[:PORT]/]NAME[:TAG]`; the tag defaults to `latest`. The first
/// component is a host when it has a `.` or a `:`, or is `localhost`.
pub fn image_ref(s: &str) -> Result<ImageRefParts> {
    let s = s.trim();
    if s.is_empty() || s.chars().any(char::is_whitespace) {
        bail!("image {s:?} is empty or has spaces");
    }
    if s.contains('@') {
        bail!("image {s:?}: digests are not supported; name a tag (NAME:TAG)");
    }
    let (host, rest) = match s.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (Some(first.to_string()), rest)
        }
        _ => (None, s),
    };
    let (name, tag) = match rest.rsplit_once(':') {
        Some((n, t)) if !t.contains('/') => (n, t),
        _ => (rest, "latest"),
    };
    if name.is_empty() || tag.is_empty() {
        bail!("image {s:?} is not [HOST/]NAME[:TAG]");
    }
    Ok(ImageRefParts {
        host,
        name: name.to_string(),
        tag: tag.to_string(),
    })
}

/// A container name from an image name: its last path component, as a DNS label.
pub fn container_name_for(image: &str) -> String {
    let last = image.rsplit('/').next().unwrap_or(image);
    let mut out: String = last
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .collect();
    while out.contains("--") {
        out = out.replace("--", "-");
    }
    let out = out.trim_matches('-');
    let out: String = out.chars().take(63).collect();
    if out.is_empty() {
        "app".into()
    } else {
        out.trim_end_matches('-').to_string()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// An audit time: RFC 3339 (`2025-01-31T12:00:00Z`, or a date), or a
/// duration meaning that long ago (`2h`, `30m`, `7d`). Milliseconds since
/// the epoch.
pub fn time_ms(flag: &str, s: &str) -> Result<u64> {
    time_ms_at(flag, s, now_ms())
}

fn time_ms_at(flag: &str, s: &str, now: u64) -> Result<u64> {
    let s = s.trim();
    if let Ok(d) = humantime::parse_duration(s) {
        return Ok(now.saturating_sub(d.as_millis().try_into().unwrap_or(u64::MAX)));
    }
    let full = if s.len() == 10 && s.as_bytes().get(4) == Some(&b'-') {
        format!("{s}T00:00:00Z")
    } else {
        s.to_string()
    };
    let t = humantime::parse_rfc3339_weak(&full).map_err(|_| {
        anyhow!(
            "{flag} {s:?} is neither an RFC 3339 time (2025-01-31T12:00:00Z) nor a duration ago (2h, 30m, 7d)"
        )
    })?;
    Ok(t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64)
}

/// A secret file: `KEY=VALUE` lines; blank lines and `#` comments are
/// skipped; a value in matching single or double quotes is unquoted.
/// Errors name the line, never a value.
pub fn secret_file(text: &str) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        let t = line.trim_start();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let t = t.strip_prefix("export ").unwrap_or(t);
        let Some((k, v)) = t.split_once('=') else {
            bail!("line {} of the secret file is not KEY=VALUE", i + 1);
        };
        let k = k.trim();
        if k.is_empty() || k.chars().any(char::is_whitespace) {
            bail!("line {} of the secret file has no usable key", i + 1);
        }
        let v = v.trim();
        let v = ['"', '\'']
            .iter()
            .find_map(|q| {
                v.strip_prefix(*q)
                    .and_then(|x| x.strip_suffix(*q))
                    .filter(|_| v.len() >= 2)
            })
            .unwrap_or(v);
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

/// Splits a command line the way a POSIX shell splits words: whitespace
/// separates, single quotes keep everything, double quotes keep all but
/// `\"` and `\\`, a backslash escapes the next character.
pub fn shell_words(s: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(x) => cur.push(x),
                        None => bail!("unterminated ' in {s:?}"),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(x @ ('"' | '\\' | '$' | '`')) => cur.push(x),
                            Some(x) => {
                                cur.push('\\');
                                cur.push(x);
                            }
                            None => bail!("unterminated \" in {s:?}"),
                        },
                        Some(x) => cur.push(x),
                        None => bail!("unterminated \" in {s:?}"),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(x) = chars.next() {
                    cur.push(x);
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn lifetimes_parse() {
        use std::time::Duration;
        assert_eq!(super::lifetime("24h").unwrap(), Duration::from_secs(86_400));
        assert_eq!(super::lifetime("30m").unwrap(), Duration::from_secs(1_800));
        assert_eq!(
            super::lifetime("7d").unwrap(),
            Duration::from_secs(7 * 86_400)
        );
        assert!(super::lifetime("0s").is_err());
        assert!(super::lifetime("300000y").is_err());
        assert!(super::lifetime("10y").is_err());
        assert!(super::lifetime("3650d").is_ok());
        assert!(
            super::lifetime("soon")
                .unwrap_err()
                .to_string()
                .contains("24h")
        );
    }

    #[test]
    fn internal_ports_for_unset() {
        use shoal_protocol::model::Protocol;
        assert_eq!(super::internal_port("80").unwrap(), (80, Protocol::Tcp));
        assert_eq!(super::internal_port("53/udp").unwrap(), (53, Protocol::Udp));
        assert!(super::internal_port("0").is_err());
        assert!(super::internal_port("8080:80").is_err());
        assert!(super::internal_port("80/sctp").is_err());
    }

    use super::*;

    #[test]
    fn key_values_parse() {
        assert_eq!(
            key_value("--env", "A=b=c").unwrap(),
            ("A".into(), "b=c".into())
        );
        assert_eq!(key_value("--env", "A=").unwrap(), ("A".into(), "".into()));
        assert!(
            key_value("--env", "A")
                .unwrap_err()
                .to_string()
                .contains("KEY=VALUE")
        );
        assert!(key_value("--env", "=x").is_err());
        let m = key_values("--env", &["A=1".into(), "A=2".into()]).unwrap();
        assert_eq!(m["A"], "2");
    }

    #[test]
    fn ports_parse() {
        let p = |s: &str| port(s).unwrap();
        assert_eq!(
            p("8080:80"),
            PortSpec::One(Port {
                internal: 80,
                external: Some(8080),
                protocol: Protocol::Tcp
            })
        );
        assert_eq!(
            p("53/udp"),
            PortSpec::One(Port {
                internal: 53,
                external: None,
                protocol: Protocol::Udp
            })
        );
        assert_eq!(
            p("9000-9002:8000-8002/udp"),
            PortSpec::Range(PortRange {
                internal_from: 8000,
                internal_to: 8002,
                external_from: 9000,
                external_to: 9002,
                protocol: Protocol::Udp
            })
        );
        for bad in [
            "x",
            "0",
            "70000",
            "80/sctp",
            "1:2:3",
            "9000-9001:80-90",
            "90-80",
        ] {
            assert!(port(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn volumes_parse() {
        let v = volume("data:/var/lib/data").unwrap();
        assert_eq!(
            (v.name.as_str(), v.path.as_str(), v.kind),
            ("data", "/var/lib/data", VolumeKind::Rw)
        );
        assert_eq!(volume("cfg:/etc/app:ro").unwrap().kind, VolumeKind::Ro);
        assert_eq!(volume("tmpfs:/tmp").unwrap().kind, VolumeKind::Tmpfs);
        assert!(volume("./x:/y").unwrap_err().to_string().contains("host"));
        assert!(volume("data:relative").is_err());
        assert!(volume("data:/x:rx").is_err());
        assert!(volume("data").is_err());
    }

    #[test]
    fn image_refs_parse() {
        let r = image_ref("nginx").unwrap();
        assert_eq!(
            (r.host, r.name.as_str(), r.tag.as_str()),
            (None, "nginx", "latest")
        );
        let r = image_ref("127.0.0.1:5000/shoal-test/busybox:1.36").unwrap();
        assert_eq!(r.host.as_deref(), Some("127.0.0.1:5000"));
        assert_eq!(
            (r.name.as_str(), r.tag.as_str()),
            ("shoal-test/busybox", "1.36")
        );
        let r = image_ref("library/redis:7").unwrap();
        assert_eq!((r.host, r.name.as_str()), (None, "library/redis"));
        let r = image_ref("localhost/app").unwrap();
        assert_eq!(r.host.as_deref(), Some("localhost"));
        let r = image_ref("ghcr.io/acme/app:v1").unwrap();
        assert_eq!(
            (r.host.as_deref(), r.name.as_str()),
            (Some("ghcr.io"), "acme/app")
        );
        assert!(image_ref("a@sha256:00").is_err());
        assert!(image_ref("a b").is_err());
        assert!(image_ref("app:").is_err());
    }

    #[test]
    fn container_names_are_dns_labels() {
        assert_eq!(container_name_for("shoal-test/busybox"), "busybox");
        assert_eq!(container_name_for("My_App.v2"), "my-app-v2");
        assert_eq!(container_name_for("___"), "app");
    }

    #[test]
    fn audit_times_parse() {
        let now = 1_000_000_000_000;
        assert_eq!(time_ms_at("--since", "2h", now).unwrap(), now - 7_200_000);
        assert_eq!(time_ms_at("--since", "30m", now).unwrap(), now - 1_800_000);
        assert_eq!(
            time_ms_at("--since", "2025-01-31T12:00:00Z", now).unwrap(),
            1_738_324_800_000
        );
        assert_eq!(
            time_ms_at("--until", "2025-01-31", now).unwrap(),
            1_738_281_600_000
        );
        let e = time_ms_at("--since", "yesterday", now).unwrap_err();
        assert!(e.to_string().contains("RFC 3339"), "{e}");
    }

    #[test]
    fn secret_files_parse_without_echoing_values() {
        let m = secret_file("# db\nDB_PASSWORD=s3=cr3t\n\nexport TOKEN=\"a b\"\nEMPTY=\nQ='x'\n")
            .unwrap();
        assert_eq!(m["DB_PASSWORD"], "s3=cr3t");
        assert_eq!(m["TOKEN"], "a b");
        assert_eq!(m["EMPTY"], "");
        assert_eq!(m["Q"], "x");
        let e = secret_file("OK=1\nsupersecretvalue\n").unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
        assert!(!e.to_string().contains("supersecret"), "{e}");
    }

    #[test]
    fn shell_words_split() {
        assert_eq!(
            shell_words(r#"sh -c 'echo "hi there"' x\ y "a\"b""#).unwrap(),
            vec!["sh", "-c", "echo \"hi there\"", "x y", "a\"b"]
        );
        assert_eq!(shell_words("  ").unwrap(), Vec::<String>::new());
        assert!(shell_words("'open").is_err());
    }
}
