//! Listing the tags of an image in a team's registry (§1 Registry).
//!
//! One [`RegistryClient`] serves every registry kind of the protocol
//! ([`RegistryKind`]):
//!
//! - `v2`: any Docker Registry HTTP API V2 at a URL. `GET /v2/<name>/tags/list`
//!   paged by `Link: <..>; rel="next"`; a 401 is answered per its
//!   `WWW-Authenticate` challenge (Basic, or a Bearer token from the realm).
//! - `github`: the same API at ghcr.io, with a pull token fetched up front.
//! - `hub`: Docker Hub's repository API (`/v2/namespaces/../tags`, paged by
//!   `next`), logged in for a JWT when credentials are given.
//! - `gitlab`: the GitLab REST API (project or group registry repositories,
//!   then the repository's tags), on gitlab.com or a self-hosted instance.
//! - `unchecked`: names are free-form, so there is nothing to list.
//!
//! Every request has a connect and a total timeout, every body is read with a
//! size cap, and paging stops after a bounded number of pages or on a link
//! seen before, so a misbehaving registry cannot hold the caller forever.
//! Errors ([`TagsError`]) say what went wrong and what to do about it.

mod gitlab;
mod headers;
mod hub;
mod v2;

use std::collections::HashSet;
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use reqwest::{RequestBuilder, Response, StatusCode, Url};
use serde::de::DeserializeOwned;
use shoal_protocol::model::{Registry, RegistryKind};

pub use headers::{Challenge, next_link, parse_challenges};

/// Where and what to list: the parts of a team's [`Registry`] that matter for
/// reaching it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistrySpec {
    pub kind: RegistryKind,
    /// Base URL: required for `v2`; a self-hosted GitLab for `gitlab`; an
    /// alternative to ghcr.io for `github`; unused for `hub`. Without a
    /// scheme, `https://` is assumed except for loopback hosts (`http://`).
    pub url: Option<String>,
    /// Prefix of image names: org or user for `github`, group or project path
    /// for `gitlab`, optional for `hub` (default `library`) and `v2`.
    pub namespace: Option<String>,
}

impl RegistrySpec {
    pub fn new(kind: RegistryKind) -> Self {
        Self {
            kind,
            url: None,
            namespace: None,
        }
    }

    pub fn with_url(mut self, url: impl Into<String>) -> Self {
        self.url = Some(url.into());
        self
    }

    pub fn with_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }
}

impl From<&Registry> for RegistrySpec {
    fn from(r: &Registry) -> Self {
        Self {
            kind: r.kind,
            url: r.url.clone(),
            namespace: r.namespace.clone(),
        }
    }
}

/// A registry user and password (or access token). For GitLab the password
/// is a personal, project or group access token and the user is not used.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

impl Credentials {
    pub fn new(user: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            user: user.into(),
            password: password.into(),
        }
    }
}

impl fmt::Debug for Credentials {
    // The password must never reach a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Settings of a [`RegistryClient`]. The base URLs exist so tests can point
/// the client at a fake; the defaults are the public services.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Docker Hub's API (`https://hub.docker.com`).
    pub hub_url: String,
    /// GitHub's container registry (`https://ghcr.io`).
    pub ghcr_url: String,
    /// GitLab when a `gitlab` registry has no URL (`https://gitlab.com`).
    pub gitlab_url: String,
    /// Time to open a connection (TCP and TLS).
    pub connect_timeout: Duration,
    /// Time for one whole request, body included.
    pub request_timeout: Duration,
    /// Tags asked for per page.
    pub page_size: u32,
    /// Pages followed before giving up on a listing.
    pub max_pages: usize,
    /// Largest response body read, in bytes.
    pub max_body: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            hub_url: "https://hub.docker.com".into(),
            ghcr_url: "https://ghcr.io".into(),
            gitlab_url: "https://gitlab.com".into(),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            page_size: 100,
            // 100 tags a page: up to 50 000 tags, far beyond any real image.
            max_pages: 500,
            max_body: 16 * 1024 * 1024,
        }
    }
}

/// Why tags could not be listed. Each variant says what the user can do.
#[derive(Debug, thiserror::Error)]
pub enum TagsError {
    #[error(
        "tags cannot be listed for a registry of kind {kind}: its image names are free-form; type the tag yourself"
    )]
    NotListable { kind: &'static str },

    #[error("the registry settings are not usable: {why}; fix them with `shoal registry add`")]
    InvalidSpec { why: String },

    #[error("invalid image name {image:?}: {why}")]
    InvalidImage { image: String, why: String },

    #[error(
        "cannot reach {url}: {reason}; check the registry URL and that the host is up and reachable from this machine"
    )]
    Unreachable { url: String, reason: String },

    #[error("{}", bad_credentials(.registry, .image, *.sent, .detail))]
    BadCredentials {
        registry: String,
        image: String,
        /// Whether credentials were sent (refused) or none were given.
        sent: bool,
        /// What the registry said, if anything.
        detail: String,
    },

    #[error("{}", unknown_image(.registry, .image, *.anonymous))]
    UnknownImage {
        registry: String,
        image: String,
        /// Listed without credentials: the image may exist but be private.
        anonymous: bool,
    },

    #[error(
        "the TLS certificate of {url} is not trusted ({reason}); the registry must present a certificate for its name from a public certificate authority"
    )]
    UntrustedCertificate { url: String, reason: String },

    #[error(
        "{url} sent a response that is not a tag listing ({why}); check that the registry URL and kind are right"
    )]
    MalformedResponse { url: String, why: String },

    #[error(
        "{registry} kept sending more pages of tags for {image} (stopped after {pages}); the registry is misbehaving, try again later or report it to its operator"
    )]
    TooManyPages {
        registry: String,
        image: String,
        pages: usize,
    },

    #[error("{url} answered HTTP {status}{}", detail_suffix(.detail))]
    Unexpected {
        url: String,
        status: u16,
        detail: String,
    },

    #[error("cannot set up the HTTP client: {reason}")]
    Client { reason: String },
}

fn detail_suffix(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(": {detail}")
    }
}

fn bad_credentials(registry: &str, image: &str, sent: bool, detail: &str) -> String {
    let said = if detail.is_empty() {
        String::new()
    } else {
        format!(" ({detail})")
    };
    if sent {
        format!(
            "{registry} refused the credentials for {image}{said}: check the registry's user and password or token, and that this user may pull {image}"
        )
    } else {
        format!(
            "{registry} needs credentials to list the tags of {image}{said}: give the registry a user and password (`shoal registry add .. --user USER --password-stdin`)"
        )
    }
}

fn unknown_image(registry: &str, image: &str, anonymous: bool) -> String {
    let private = if anonymous {
        ", or it is private and the registry needs credentials"
    } else {
        ""
    };
    format!(
        "{registry} has no image {image}: check the image name and the registry's namespace{private}"
    )
}

/// Lists tags from registries. Cheap to clone; keeps its connection pool.
#[derive(Clone, Debug)]
pub struct RegistryClient {
    http: reqwest::Client,
    config: ClientConfig,
}

impl RegistryClient {
    /// A client for the public services.
    pub fn new() -> Result<Self, TagsError> {
        Self::with_config(ClientConfig::default())
    }

    pub fn with_config(config: ClientConfig) -> Result<Self, TagsError> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("shoal/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            // reqwest drops credentials on a redirect to another host.
            .redirect(reqwest::redirect::Policy::limited(5))
            .build()
            .map_err(|e| TagsError::Client {
                reason: error_chain(&e),
            })?;
        Ok(Self { http, config })
    }

    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// Every tag of `image` in the registry, in the registry's order, without
    /// duplicates. `image` is relative to the registry's namespace when it
    /// has one (`app` in namespace `acme` is `acme/app`); a name that already
    /// starts with the namespace is taken as is.
    pub async fn list_tags(
        &self,
        spec: &RegistrySpec,
        image: &str,
        creds: Option<&Credentials>,
    ) -> Result<Vec<String>, TagsError> {
        let tags = match spec.kind {
            RegistryKind::Unchecked => {
                return Err(TagsError::NotListable {
                    kind: spec.kind.as_str(),
                });
            }
            RegistryKind::V2 => {
                let url = spec.url.as_deref().ok_or_else(|| TagsError::InvalidSpec {
                    why: "a v2 registry needs a URL".into(),
                })?;
                let base = parse_base_url(url)?;
                let name = join_namespace(spec.namespace.as_deref(), image)?;
                v2::list(self, &base, &name, creds, None).await?
            }
            RegistryKind::Github => {
                let base = match &spec.url {
                    Some(url) => parse_base_url(url)?,
                    None => parse_base_url(&self.config.ghcr_url)?,
                };
                let ns = spec
                    .namespace
                    .as_deref()
                    .ok_or_else(|| TagsError::InvalidSpec {
                        why: "a github registry needs a namespace (the org or user)".into(),
                    })?;
                let name = join_namespace(Some(ns), image)?;
                v2::list_ghcr(self, &base, &name, creds).await?
            }
            RegistryKind::Hub => {
                let base = parse_base_url(&self.config.hub_url)?;
                hub::list(self, &base, spec.namespace.as_deref(), image, creds).await?
            }
            RegistryKind::Gitlab => {
                let base = match &spec.url {
                    Some(url) => parse_base_url(url)?,
                    None => parse_base_url(&self.config.gitlab_url)?,
                };
                let ns = spec
                    .namespace
                    .as_deref()
                    .ok_or_else(|| TagsError::InvalidSpec {
                        why: "a gitlab registry needs a namespace (the group or project path)"
                            .into(),
                    })?;
                gitlab::list(self, &base, ns, image, creds).await?
            }
        };
        Ok(dedup(tags))
    }

    /// Sends a request; connection failures and timeouts are `Unreachable`.
    async fn send(&self, req: RequestBuilder, url: &Url) -> Result<Response, TagsError> {
        req.send().await.map_err(|e| unreachable(url, &e))
    }

    /// The body, at most `max_body` bytes.
    async fn read_body(&self, mut resp: Response, url: &Url) -> Result<Vec<u8>, TagsError> {
        let mut buf = Vec::new();
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    if buf.len() + chunk.len() > self.config.max_body {
                        return Err(TagsError::MalformedResponse {
                            url: url.to_string(),
                            why: format!("the body is larger than {} bytes", self.config.max_body),
                        });
                    }
                    buf.extend_from_slice(&chunk);
                }
                Ok(None) => return Ok(buf),
                Err(e) => return Err(unreachable(url, &e)),
            }
        }
    }

    async fn read_json<T: DeserializeOwned>(
        &self,
        resp: Response,
        url: &Url,
    ) -> Result<T, TagsError> {
        let body = self.read_body(resp, url).await?;
        serde_json::from_slice(&body).map_err(|e| TagsError::MalformedResponse {
            url: url.to_string(),
            why: format!("invalid JSON: {e}"),
        })
    }

    /// A short human-readable reason from an error response's body: the
    /// registry's `errors[].message` / `message` / `detail`, else the start of
    /// the text. Never fails: an unreadable body gives an empty string.
    async fn error_detail(&self, resp: Response, url: &Url) -> String {
        let Ok(body) = self.read_body(resp, url).await else {
            return String::new();
        };
        error_message(&body)
    }

    /// The error for a failed status (after any authentication was tried).
    async fn status_error(&self, resp: Response, url: &Url, ctx: &Ctx<'_>) -> TagsError {
        let status = resp.status();
        let detail = self.error_detail(resp, url).await;
        match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => TagsError::BadCredentials {
                registry: ctx.registry.clone(),
                image: ctx.image.clone(),
                sent: ctx.sent_credentials,
                detail,
            },
            StatusCode::NOT_FOUND => TagsError::UnknownImage {
                registry: ctx.registry.clone(),
                image: ctx.image.clone(),
                anonymous: !ctx.sent_credentials,
            },
            StatusCode::TOO_MANY_REQUESTS => TagsError::Unexpected {
                url: url.to_string(),
                status: status.as_u16(),
                detail:
                    "rate limited; wait a while and try again, or give the registry credentials"
                        .into(),
            },
            _ => TagsError::Unexpected {
                url: url.to_string(),
                status: status.as_u16(),
                detail,
            },
        }
    }
}

/// What error messages name: the registry and the full image name.
#[derive(Debug)]
struct Ctx<'a> {
    registry: String,
    image: String,
    sent_credentials: bool,
    creds: Option<&'a Credentials>,
}

impl<'a> Ctx<'a> {
    fn new(base: &Url, image: &str, creds: Option<&'a Credentials>) -> Self {
        Self {
            registry: registry_label(base),
            image: image.to_string(),
            sent_credentials: creds.is_some(),
            creds,
        }
    }
}

/// Counts pages and remembers the links followed, so neither an endless
/// chain of pages nor a link back to a page already read runs forever.
#[derive(Debug)]
struct Pager {
    seen: HashSet<String>,
    max: usize,
}

impl Pager {
    fn new(max: usize) -> Self {
        Self {
            seen: HashSet::new(),
            max,
        }
    }

    /// Call before fetching `url`.
    fn visit(&mut self, url: &Url, ctx: &Ctx<'_>) -> Result<(), TagsError> {
        if self.seen.len() >= self.max || !self.seen.insert(url.as_str().to_string()) {
            return Err(TagsError::TooManyPages {
                registry: ctx.registry.clone(),
                image: ctx.image.clone(),
                pages: self.seen.len(),
            });
        }
        Ok(())
    }
}

/// Resolves a next-page link against the page it came from. The link must
/// stay on the same origin: credentials and tokens go with it.
fn resolve_next(current: &Url, link: &str) -> Result<Url, TagsError> {
    let next = current
        .join(link)
        .map_err(|e| TagsError::MalformedResponse {
            url: current.to_string(),
            why: format!("invalid next-page link {link:?}: {e}"),
        })?;
    if next.origin() != current.origin() {
        return Err(TagsError::MalformedResponse {
            url: current.to_string(),
            why: format!("the next-page link {next} points to another host"),
        });
    }
    Ok(next)
}

/// Parses a registry URL. Without a scheme, loopback hosts get `http://`
/// (as Docker treats local registries) and everything else `https://`.
pub fn parse_base_url(raw: &str) -> Result<Url, TagsError> {
    let raw = raw.trim();
    let invalid = |why: String| TagsError::InvalidSpec {
        why: format!("invalid registry URL {raw:?}: {why}"),
    };
    let url = if raw.contains("://") {
        Url::parse(raw).map_err(|e| invalid(e.to_string()))?
    } else {
        let https = Url::parse(&format!("https://{raw}")).map_err(|e| invalid(e.to_string()))?;
        if is_loopback(&https) {
            Url::parse(&format!("http://{raw}")).map_err(|e| invalid(e.to_string()))?
        } else {
            https
        }
    };
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("only http:// and https:// are supported".into()));
    }
    if url.host().is_none() {
        return Err(invalid("no host".into()));
    }
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        return Err(invalid(
            "give the base URL only: no query, fragment or user (credentials are separate)".into(),
        ));
    }
    Ok(url)
}

fn is_loopback(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match host.parse::<IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => {
            let host = host.to_ascii_lowercase();
            host == "localhost" || host.ends_with(".localhost")
        }
    }
}

/// `base` with `segments` appended as path segments (each percent-encoded,
/// so a `/` inside one becomes `%2F`).
fn url_with_path<'s>(
    base: &Url,
    segments: impl IntoIterator<Item = &'s str>,
) -> Result<Url, TagsError> {
    let mut url = base.clone();
    url.path_segments_mut()
        .map_err(|()| TagsError::InvalidSpec {
            why: format!("{base} cannot be a base URL"),
        })?
        .pop_if_empty()
        .extend(segments);
    Ok(url)
}

/// How errors name a registry: scheme, host and port, plus any path prefix.
fn registry_label(base: &Url) -> String {
    base.as_str().trim_end_matches('/').to_string()
}

/// The full repository name: `namespace/image` unless `image` already is, or
/// starts with, the namespace.
fn join_namespace(namespace: Option<&str>, image: &str) -> Result<String, TagsError> {
    let image = image.trim().trim_matches('/');
    check_name(image)?;
    let Some(ns) = namespace
        .map(|n| n.trim().trim_matches('/'))
        .filter(|n| !n.is_empty())
    else {
        return Ok(image.to_string());
    };
    let ns_lower = ns.to_ascii_lowercase();
    if image == ns_lower || image.starts_with(&format!("{ns_lower}/")) {
        return Ok(image.to_string());
    }
    let full = format!("{ns_lower}/{image}");
    check_name(&full)?;
    Ok(full)
}

/// The repository name grammar of the distribution spec: `/`-separated
/// components of lower-case letters and digits joined by `.`, `_`, `__` or
/// dashes. Checking it keeps `..`, `?` or `#` out of the URLs built from it.
fn check_name(name: &str) -> Result<(), TagsError> {
    let invalid = |why: &str| TagsError::InvalidImage {
        image: name.to_string(),
        why: why.to_string(),
    };
    if name.is_empty() {
        return Err(invalid("it is empty"));
    }
    if name.len() > 255 {
        return Err(invalid("it is longer than 255 characters"));
    }
    for component in name.split('/') {
        let bytes = component.as_bytes();
        let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        if !bytes.first().is_some_and(alnum) || !bytes.last().is_some_and(alnum) {
            return Err(invalid(
                "each part between slashes must start and end with a lower-case letter or digit",
            ));
        }
        if !bytes
            .iter()
            .all(|b| alnum(b) || matches!(b, b'.' | b'_' | b'-'))
        {
            return Err(invalid(
                "only lower-case letters, digits, '.', '_', '-' and '/' are allowed (no tag or digest)",
            ));
        }
    }
    Ok(())
}

/// A short reason from an error body (registry, Hub or GitLab JSON, or text).
fn error_message(body: &[u8]) -> String {
    let text = match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(v) => {
            let from_errors = v
                .get("errors")
                .and_then(|e| e.as_array())
                .map(|errs| {
                    errs.iter()
                        .filter_map(|e| {
                            let code = e.get("code").and_then(|c| c.as_str());
                            let msg = e.get("message").and_then(|m| m.as_str());
                            match (code, msg) {
                                (Some(c), Some(m)) => Some(format!("{c}: {m}")),
                                (Some(s), None) | (None, Some(s)) => Some(s.to_string()),
                                (None, None) => None,
                            }
                        })
                        .collect::<Vec<_>>()
                        .join("; ")
                })
                .filter(|s| !s.is_empty());
            from_errors
                .or_else(|| {
                    ["message", "detail", "error"]
                        .iter()
                        .find_map(|k| v.get(*k).and_then(|m| m.as_str()).map(str::to_string))
                })
                .unwrap_or_default()
        }
        Err(_) => String::from_utf8_lossy(body).trim().to_string(),
    };
    let text: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if text.chars().count() > 200 {
        let cut: String = text.chars().take(200).collect();
        format!("{cut}…")
    } else {
        text
    }
}

/// A request failure as `Unreachable` (or `UntrustedCertificate`), with its
/// causes: reqwest's own text ("error sending request") hides them.
fn unreachable(url: &Url, e: &reqwest::Error) -> TagsError {
    let mut origin = url.clone();
    origin.set_path("");
    origin.set_query(None);
    let origin = origin.as_str().trim_end_matches('/').to_string();
    let causes = match std::error::Error::source(e) {
        Some(source) => error_chain(source),
        None => e.to_string(),
    };
    if e.is_timeout() {
        return TagsError::Unreachable {
            url: origin,
            reason: format!("timed out ({causes})"),
        };
    }
    // rustls reports verification failures as "invalid peer certificate: ..".
    if causes.to_ascii_lowercase().contains("certificate") {
        return TagsError::UntrustedCertificate {
            url: origin,
            reason: causes,
        };
    }
    TagsError::Unreachable {
        url: origin,
        reason: causes,
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

fn dedup(tags: Vec<String>) -> Vec<String> {
    let mut seen = HashSet::with_capacity(tags.len());
    tags.into_iter()
        .filter(|t| seen.insert(t.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_url_scheme_defaults() {
        let u = parse_base_url("127.0.0.1:5000").unwrap();
        assert_eq!(u.as_str(), "http://127.0.0.1:5000/");
        let u = parse_base_url("localhost:5000").unwrap();
        assert_eq!(u.scheme(), "http");
        let u = parse_base_url("[::1]:5000").unwrap();
        assert_eq!(u.scheme(), "http");
        let u = parse_base_url("registry.example.com").unwrap();
        assert_eq!(u.as_str(), "https://registry.example.com/");
        let u = parse_base_url("http://registry.lan:5000").unwrap();
        assert_eq!(u.scheme(), "http");
        assert!(parse_base_url("ftp://x").is_err());
        assert!(parse_base_url("https://u:p@x").is_err());
        assert!(parse_base_url("https://x/?a=b").is_err());
        assert!(parse_base_url("").is_err());
    }

    #[test]
    fn names_join_the_namespace() {
        assert_eq!(join_namespace(None, "busybox").unwrap(), "busybox");
        assert_eq!(join_namespace(Some("acme"), "app").unwrap(), "acme/app");
        assert_eq!(
            join_namespace(Some("acme"), "acme/app").unwrap(),
            "acme/app"
        );
        assert_eq!(join_namespace(Some("Acme/"), "app").unwrap(), "acme/app");
        assert_eq!(join_namespace(Some("g/p"), "g/p").unwrap(), "g/p");
        assert_eq!(join_namespace(Some("g/p"), "sub").unwrap(), "g/p/sub");
    }

    #[test]
    fn bad_names_are_refused() {
        for bad in [
            "",
            "a/../b",
            "..",
            "A",
            "a:1.0",
            "a@sha256:x",
            "a?x",
            "a#b",
            "a//b",
            "-a",
            "a-",
            "a b",
        ] {
            assert!(
                matches!(
                    join_namespace(None, bad),
                    Err(TagsError::InvalidImage { .. })
                ),
                "{bad:?} accepted"
            );
        }
        for good in ["a", "a/b-c/d_e", "a.b/c__d", "a---b", "0"] {
            assert!(join_namespace(None, good).is_ok(), "{good:?} refused");
        }
    }

    #[test]
    fn next_link_stays_on_origin() {
        let cur = Url::parse("http://127.0.0.1:5000/v2/a/tags/list?n=2").unwrap();
        let n = resolve_next(&cur, "/v2/a/tags/list?n=2&last=b").unwrap();
        assert_eq!(
            n.as_str(),
            "http://127.0.0.1:5000/v2/a/tags/list?n=2&last=b"
        );
        assert!(resolve_next(&cur, "http://evil.example/v2/a/tags/list").is_err());
        assert!(resolve_next(&cur, "http://127.0.0.1:5001/v2/a/tags/list").is_err());
    }

    #[test]
    fn error_messages_from_bodies() {
        let b = br#"{"errors":[{"code":"NAME_UNKNOWN","message":"repository name not known to registry","detail":{}}]}"#;
        assert_eq!(
            error_message(b),
            "NAME_UNKNOWN: repository name not known to registry"
        );
        assert_eq!(
            error_message(br#"{"message":"404 Project Not Found"}"#),
            "404 Project Not Found"
        );
        assert_eq!(error_message(b"  plain\n text "), "plain text");
        assert_eq!(error_message(&[b'x'; 500]).chars().count(), 201);
    }

    #[test]
    fn credentials_debug_hides_the_password() {
        let c = Credentials::new("shoal", "s3cret");
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    #[test]
    fn dedup_keeps_first_order() {
        let v = dedup(vec!["b".into(), "a".into(), "b".into(), "c".into()]);
        assert_eq!(v, ["b", "a", "c"]);
    }

    #[test]
    fn pager_stops_on_repeat_and_limit() {
        let ctx = Ctx::new(&Url::parse("http://h/").unwrap(), "a", None);
        let mut p = Pager::new(3);
        let u = |s: &str| Url::parse(&format!("http://h/{s}")).unwrap();
        p.visit(&u("1"), &ctx).unwrap();
        assert!(matches!(
            p.visit(&u("1"), &ctx),
            Err(TagsError::TooManyPages { .. })
        ));
        p.visit(&u("2"), &ctx).unwrap();
        p.visit(&u("3"), &ctx).unwrap();
        assert!(matches!(
            p.visit(&u("4"), &ctx),
            Err(TagsError::TooManyPages { pages: 3, .. })
        ));
    }
}
