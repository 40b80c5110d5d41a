//! Parsing of the two headers the registry protocols page and authenticate
//! with: `WWW-Authenticate` (RFC 9110 §11.6.1) and `Link` (RFC 8288).
//!
//! Both are parsed leniently: a registry that sends something odd should get
//! a clear error from the caller (no challenge, no next page), never a panic.

/// One authentication challenge: `Bearer realm="..",service="..",scope=".."`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    /// The scheme, lower-cased (`basic`, `bearer`).
    pub scheme: String,
    /// Parameters in the order given; names lower-cased, values unquoted.
    pub params: Vec<(String, String)>,
}

impl Challenge {
    /// The value of parameter `name` (lower-case).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Every challenge in one `WWW-Authenticate` value. A value may hold several
/// challenges, and a quoted parameter may hold commas (`scope="a:pull,push"`),
/// so splitting on commas is not enough.
pub fn parse_challenges(value: &str) -> Vec<Challenge> {
    let mut out: Vec<Challenge> = Vec::new();
    let mut rest = value;
    loop {
        rest = rest.trim_start_matches(|c: char| c == ',' || c.is_whitespace());
        if rest.is_empty() {
            break;
        }
        let end = rest
            .find(|c: char| c == ',' || c == '=' || c.is_whitespace())
            .unwrap_or(rest.len());
        let token = &rest[..end];
        let after = rest[end..].trim_start();
        if token.is_empty() {
            // A stray `=`: skip one character and go on.
            rest = rest.get(1..).unwrap_or("");
            continue;
        }
        if let Some(value_part) = after.strip_prefix('=') {
            let (val, remaining) = parse_param_value(value_part.trim_start());
            if let Some(current) = out.last_mut() {
                current.params.push((token.to_ascii_lowercase(), val));
            }
            rest = remaining;
        } else {
            out.push(Challenge {
                scheme: token.to_ascii_lowercase(),
                params: Vec::new(),
            });
            rest = after;
        }
    }
    out
}

/// A parameter value (quoted string with `\` escapes, or a token) and what
/// follows it.
fn parse_param_value(s: &str) -> (String, &str) {
    if let Some(body) = s.strip_prefix('"') {
        let mut val = String::new();
        let mut chars = body.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, escaped)) = chars.next() {
                        val.push(escaped);
                    }
                }
                '"' => return (val, &body[i + 1..]),
                c => val.push(c),
            }
        }
        // Unterminated quote: take the rest.
        (val, "")
    } else {
        let end = s
            .find(|c: char| c == ',' || c.is_whitespace())
            .unwrap_or(s.len());
        (s[..end].to_string(), &s[end..])
    }
}

/// The target of the `rel="next"` link in one `Link` value, as written (it may
/// be relative to the request URL).
pub fn next_link(value: &str) -> Option<String> {
    let mut rest = value;
    loop {
        let open = rest.find('<')?;
        let close = open + rest[open..].find('>')?;
        let target = rest[open + 1..close].trim();
        // The link's parameters run to the next top-level comma.
        let params_start = close + 1;
        let params_end = top_level_comma(&rest[params_start..])
            .map(|i| params_start + i)
            .unwrap_or(rest.len());
        let params = &rest[params_start..params_end];
        if params.split(';').any(is_rel_next) {
            return Some(target.to_string());
        }
        rest = rest.get(params_end + 1..)?;
    }
}

/// True for a `rel=next` parameter; `rel` may list several relation types.
fn is_rel_next(param: &str) -> bool {
    let Some((name, val)) = param.split_once('=') else {
        return false;
    };
    name.trim().eq_ignore_ascii_case("rel")
        && val
            .trim()
            .trim_matches('"')
            .split_whitespace()
            .any(|r| r.eq_ignore_ascii_case("next"))
}

fn top_level_comma(s: &str) -> Option<usize> {
    let mut quoted = false;
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => return Some(i),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenge_with_comma_in_scope() {
        let c = parse_challenges(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:samalba/my-app:pull,push""#,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "bearer");
        assert_eq!(c[0].param("realm"), Some("https://auth.docker.io/token"));
        assert_eq!(c[0].param("service"), Some("registry.docker.io"));
        assert_eq!(
            c[0].param("scope"),
            Some("repository:samalba/my-app:pull,push")
        );
    }

    #[test]
    fn basic_challenge_and_case() {
        let c = parse_challenges(r#"BASIC Realm="shoal-test""#);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "basic");
        assert_eq!(c[0].param("realm"), Some("shoal-test"));
    }

    #[test]
    fn several_challenges_in_one_value() {
        let c = parse_challenges(
            r#"Basic realm="a", Bearer realm="https://x/token", service=x, scope="repository:a/b:pull""#,
        );
        let schemes: Vec<_> = c.iter().map(|c| c.scheme.as_str()).collect();
        assert_eq!(schemes, ["basic", "bearer"]);
        assert_eq!(c[1].param("service"), Some("x"));
        assert_eq!(c[1].param("scope"), Some("repository:a/b:pull"));
    }

    #[test]
    fn escaped_quote_and_bare_scheme() {
        let c = parse_challenges(r#"Negotiate, Bearer realm="a\"b""#);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].scheme, "negotiate");
        assert!(c[0].params.is_empty());
        assert_eq!(c[1].param("realm"), Some("a\"b"));
    }

    #[test]
    fn garbage_does_not_panic() {
        for s in [
            "",
            "=",
            "==,",
            "\"",
            "Bearer realm=\"",
            "Bearer =x",
            ",,,  ",
        ] {
            let _ = parse_challenges(s);
        }
        assert!(parse_challenges("").is_empty());
    }

    #[test]
    fn link_next_relative() {
        let v = r#"</v2/a/b/tags/list?n=2&last=t2>; rel="next""#;
        assert_eq!(
            next_link(v).as_deref(),
            Some("/v2/a/b/tags/list?n=2&last=t2")
        );
    }

    #[test]
    fn link_picks_next_among_several() {
        let v = r#"<https://x/p?page=1>; rel="first", <https://x/p?page=3>; rel="prev next"; title="a, b", <https://x/p?page=9>; rel=last"#;
        assert_eq!(next_link(v).as_deref(), Some("https://x/p?page=3"));
        let v = r#"<https://x/p?page=1>; rel="first", <https://x/p?page=9>; rel=NEXT"#;
        assert_eq!(next_link(v).as_deref(), Some("https://x/p?page=9"));
    }

    #[test]
    fn link_without_next() {
        assert_eq!(next_link(r#"<https://x/p?page=1>; rel="prev""#), None);
        assert_eq!(next_link(""), None);
        assert_eq!(next_link("<unterminated; rel=next"), None);
        assert_eq!(next_link("no brackets; rel=next"), None);
    }
}
