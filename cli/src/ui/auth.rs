//! Who may use the dashboard: the holder of the one-time login token (then
//! of the session cookie it is exchanged for), from the dashboard's own
//! origin. Checked on every request before any handler runs.

use std::sync::Mutex;

use axum::http::{HeaderMap, Method, header};

/// The session cookie's name.
pub const COOKIE: &str = "shoal_ui";
/// The header every write carries: the anti-forgery token the page reads
/// from `/api/session` (another origin cannot read it).
pub const CSRF_HEADER: &str = "x-shoal-csrf";

/// Why a request is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refusal {
    #[error("this dashboard answers only on {0}: open the URL `shoal ui` printed")]
    Host(String),
    #[error(
        "not logged in: open the URL `shoal ui` printed (it works once; restart `shoal ui` for a new one)"
    )]
    NoSession,
    #[error("a write must come from the dashboard's own page ({0})")]
    Origin(String),
    #[error("a write must carry the dashboard's anti-forgery token: reload the page")]
    Csrf,
}

/// The secrets of one `shoal ui` run, all random, none ever written to disk.
#[derive(Debug)]
pub struct Auth {
    /// `http://ADDR`, where the dashboard is served.
    origin: String,
    /// The `Host` headers taken (the address, and `localhost:PORT` on
    /// IPv4 loopback), so a page of another site whose name resolves to
    /// 127.0.0.1 (DNS rebinding) is not answered; writes are taken from
    /// the origins `http://` + one of these.
    hosts: Vec<String>,
    /// The login token, until it is exchanged.
    login: Mutex<Option<String>>,
    session: String,
    csrf: String,
}

fn random_hex() -> anyhow::Result<String> {
    Ok(hex::encode(shoal_node::daemon::random32()?))
}

/// Compares two secrets in time independent of where they differ.
fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Auth {
    pub fn new(addr: std::net::SocketAddr) -> anyhow::Result<Auth> {
        let mut hosts = vec![addr.to_string()];
        if addr.is_ipv4() {
            hosts.push(format!("localhost:{}", addr.port()));
        }
        Ok(Auth {
            origin: format!("http://{addr}"),
            hosts,
            login: Mutex::new(Some(random_hex()?)),
            session: random_hex()?,
            csrf: random_hex()?,
        })
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The login token while it is not used yet.
    pub fn login_token(&self) -> Option<String> {
        self.login.lock().ok().and_then(|l| l.clone())
    }

    pub fn csrf(&self) -> &str {
        &self.csrf
    }

    /// Exchanges the login token for the session cookie's value, once.
    pub fn exchange(&self, token: &str) -> Option<&str> {
        let mut login = self.login.lock().ok()?;
        if login.as_deref().is_some_and(|t| same(t, token)) {
            *login = None;
            return Some(&self.session);
        }
        None
    }

    /// The `Set-Cookie` value of the session.
    pub fn cookie(&self) -> String {
        format!(
            "{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/",
            self.session
        )
    }

    /// Whether the request carries the session cookie.
    pub fn has_session(&self, headers: &HeaderMap) -> bool {
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))
            .any(|v| same(v, &self.session))
    }

    /// Checks one request: the host always; the session for the API; for
    /// anything but a read, the origin and the anti-forgery token too.
    pub fn check(&self, method: &Method, path: &str, headers: &HeaderMap) -> Result<(), Refusal> {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default();
        if !self.hosts.iter().any(|h| h.eq_ignore_ascii_case(host)) {
            return Err(Refusal::Host(self.origin.clone()));
        }
        if !path.starts_with("/api/") {
            return Ok(());
        }
        if !self.has_session(headers) {
            return Err(Refusal::NoSession);
        }
        if matches!(*method, Method::GET | Method::HEAD) {
            return Ok(());
        }
        // Browsers send Origin on every POST; without it, only a
        // same-origin fetch metadata header is taken.
        let origin = headers.get(header::ORIGIN).and_then(|h| h.to_str().ok());
        let site = headers.get("sec-fetch-site").and_then(|h| h.to_str().ok());
        let same_origin = match origin {
            Some(o) => self
                .hosts
                .iter()
                .any(|h| o.strip_prefix("http://") == Some(h.as_str())),
            None => site == Some("same-origin"),
        };
        if !same_origin || site.is_some_and(|s| s != "same-origin") {
            return Err(Refusal::Origin(self.origin.clone()));
        }
        let csrf = headers
            .get(CSRF_HEADER)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default();
        if !same(csrf, &self.csrf) {
            return Err(Refusal::Csrf);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use axum::http::HeaderValue;

    fn auth() -> Auth {
        Auth::new("127.0.0.1:4321".parse().unwrap()).unwrap()
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn the_login_token_works_once() {
        let a = auth();
        let t = a.login_token().unwrap();
        assert_eq!(a.exchange("wrong"), None);
        assert!(a.exchange(&t).is_some());
        assert_eq!(a.exchange(&t), None, "used");
        assert_eq!(a.login_token(), None);
    }

    #[test]
    fn writes_need_session_origin_and_token() {
        let a = auth();
        let cookie = format!("other=1; {COOKIE}={}", a.session);
        let csrf = a.csrf().to_string();
        let good = [
            ("host", "127.0.0.1:4321"),
            ("cookie", cookie.as_str()),
            ("origin", "http://127.0.0.1:4321"),
            ("sec-fetch-site", "same-origin"),
            (CSRF_HEADER, csrf.as_str()),
        ];
        let post = Method::POST;
        assert_eq!(a.check(&post, "/api/act", &headers(&good)), Ok(()));
        // Each part missing or wrong is refused.
        for drop in 0..good.len() {
            let h: Vec<_> = good
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != drop)
                .map(|(_, p)| *p)
                .collect();
            let ok = a.check(&post, "/api/act", &headers(&h)).is_ok();
            // Origin alone or fetch metadata alone is enough.
            assert_eq!(ok, drop == 2 || drop == 3, "without {:?}", good[drop].0);
        }
        let mut local = good;
        local[0] = ("host", "localhost:4321");
        local[2] = ("origin", "http://localhost:4321");
        assert_eq!(a.check(&post, "/api/act", &headers(&local)), Ok(()));
        let mut evil = good;
        evil[2] = ("origin", "http://evil.example");
        evil[3] = ("sec-fetch-site", "cross-site");
        assert!(matches!(
            a.check(&post, "/api/act", &headers(&evil)),
            Err(Refusal::Origin(_))
        ));
        let mut rebound = good;
        rebound[0] = ("host", "evil.example:4321");
        assert!(matches!(
            a.check(&Method::GET, "/", &headers(&rebound)),
            Err(Refusal::Host(_))
        ));
        // Reads need the session but no origin.
        assert_eq!(
            a.check(&Method::GET, "/api/team/", &headers(&good[..2])),
            Ok(())
        );
        assert_eq!(
            a.check(&Method::GET, "/api/team/", &headers(&good[..1])),
            Err(Refusal::NoSession)
        );
    }
}
