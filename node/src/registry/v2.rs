//! The Docker Registry HTTP API V2 (distribution spec): `GET
//! /v2/<name>/tags/list?n=..`, paged by `Link: <..>; rel="next"`, and the
//! token flow that answers a 401's `WWW-Authenticate` challenge. ghcr.io is
//! this API with a pull token asked for before the first request.

use std::fmt;

use reqwest::header::{LINK, WWW_AUTHENTICATE};
use reqwest::{RequestBuilder, Response, StatusCode, Url};
use serde::Deserialize;

use super::headers::{Challenge, next_link, parse_challenges};
use super::{
    Credentials, Ctx, Pager, RegistryClient, TagsError, is_loopback, resolve_next, url_with_path,
};

/// How requests to the registry are authorized.
#[derive(Clone)]
pub(super) enum Auth {
    None,
    Basic,
    Bearer(String),
}

impl fmt::Debug for Auth {
    // Tokens are credentials: never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Auth::None => "None",
            Auth::Basic => "Basic",
            Auth::Bearer(_) => "Bearer(<redacted>)",
        })
    }
}

impl Auth {
    fn apply(&self, req: RequestBuilder, creds: Option<&Credentials>) -> RequestBuilder {
        match (self, creds) {
            (Auth::Basic, Some(c)) => req.basic_auth(&c.user, Some(&c.password)),
            (Auth::Bearer(token), _) => req.bearer_auth(token),
            _ => req,
        }
    }
}

#[derive(Deserialize)]
struct TagList {
    // `null` when the repository exists but has no tag.
    #[serde(default)]
    tags: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
}

/// Every tag of repository `name` at `base`, following `Link` pages.
pub(super) async fn list(
    client: &RegistryClient,
    base: &Url,
    name: &str,
    creds: Option<&Credentials>,
    preset: Option<Auth>,
) -> Result<Vec<String>, TagsError> {
    let ctx = Ctx::new(base, name, creds);
    let segments = std::iter::once("v2")
        .chain(name.split('/'))
        .chain(["tags", "list"]);
    let mut url = url_with_path(base, segments)?;
    url.query_pairs_mut()
        .append_pair("n", &client.config.page_size.to_string());

    // The token (or Basic) that worked for one page is reused for the next.
    let mut auth = preset.unwrap_or(Auth::None);
    let mut pager = Pager::new(client.config.max_pages);
    let mut tags = Vec::new();
    loop {
        pager.visit(&url, &ctx)?;
        let resp = get_authorized(client, &url, &mut auth, &ctx).await?;
        let link = resp
            .headers()
            .get_all(LINK)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(next_link);
        let page: TagList = client.read_json(resp, &url).await?;
        tags.extend(page.tags.unwrap_or_default());
        match link {
            Some(link) => url = resolve_next(&url, &link)?,
            None => return Ok(tags),
        }
    }
}

/// ghcr.io: a pull token for `repository:<name>:pull` first (anonymous for
/// public images), then the V2 listing with it.
pub(super) async fn list_ghcr(
    client: &RegistryClient,
    base: &Url,
    name: &str,
    creds: Option<&Credentials>,
) -> Result<Vec<String>, TagsError> {
    let ctx = Ctx::new(base, name, creds);
    let mut token_url = url_with_path(base, ["token"])?;
    let scope = format!("repository:{name}:pull");
    {
        let mut q = token_url.query_pairs_mut();
        q.append_pair("scope", &scope);
        if let Some(host) = base.host_str() {
            q.append_pair("service", host);
        }
    }
    let token = request_token(client, &token_url, &ctx).await?;
    list(client, base, name, creds, Some(Auth::Bearer(token))).await
}

/// GET `url`, answering at most one Bearer and one Basic challenge. Returns
/// a successful response or the error its status means.
async fn get_authorized(
    client: &RegistryClient,
    url: &Url,
    auth: &mut Auth,
    ctx: &Ctx<'_>,
) -> Result<Response, TagsError> {
    let mut tried_bearer = false;
    let mut tried_basic = matches!(auth, Auth::Basic);
    loop {
        let req = auth.apply(client.http.get(url.clone()), ctx.creds);
        let resp = client.send(req, url).await?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        if status != StatusCode::UNAUTHORIZED {
            return Err(client.status_error(resp, url, ctx).await);
        }
        let challenges: Vec<Challenge> = resp
            .headers()
            .get_all(WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(parse_challenges)
            .collect();
        let bearer = challenges.iter().find(|c| c.scheme == "bearer");
        let basic = challenges.iter().any(|c| c.scheme == "basic");
        if let Some(challenge) = bearer.filter(|_| !tried_bearer) {
            tried_bearer = true;
            let token_url = token_url(url, challenge, ctx)?;
            *auth = Auth::Bearer(request_token(client, &token_url, ctx).await?);
        } else if basic && !tried_basic && ctx.creds.is_some() {
            tried_basic = true;
            *auth = Auth::Basic;
        } else {
            // Refused after authenticating, or no way to authenticate.
            return Err(client.status_error(resp, url, ctx).await);
        }
    }
}

/// The token URL of a Bearer challenge: its realm with `service` and `scope`
/// (the challenge's, else pull on the repository).
fn token_url(url: &Url, challenge: &Challenge, ctx: &Ctx<'_>) -> Result<Url, TagsError> {
    let malformed = |why: String| TagsError::MalformedResponse {
        url: url.to_string(),
        why,
    };
    let realm = challenge
        .param("realm")
        .ok_or_else(|| malformed("a Bearer challenge without a realm".into()))?;
    let mut token_url = url
        .join(realm)
        .map_err(|e| malformed(format!("invalid token realm {realm:?}: {e}")))?;
    if !matches!(token_url.scheme(), "http" | "https") {
        return Err(malformed(format!("token realm {realm:?} is not http(s)")));
    }
    // Credentials go to the realm: never downgrade them to plain HTTP.
    if url.scheme() == "https" && token_url.scheme() == "http" && !is_loopback(&token_url) {
        return Err(malformed(format!(
            "token realm {realm:?} is plain HTTP while the registry is HTTPS"
        )));
    }
    let scope = challenge
        .param("scope")
        .map(str::to_string)
        .unwrap_or_else(|| format!("repository:{}:pull", ctx.image));
    {
        let mut q = token_url.query_pairs_mut();
        if let Some(service) = challenge.param("service") {
            q.append_pair("service", service);
        }
        q.append_pair("scope", &scope);
    }
    Ok(token_url)
}

/// Asks the token server for a token: with Basic credentials when given,
/// anonymously otherwise. Accepts `token` or `access_token`.
async fn request_token(
    client: &RegistryClient,
    token_url: &Url,
    ctx: &Ctx<'_>,
) -> Result<String, TagsError> {
    let mut req = client.http.get(token_url.clone());
    if let Some(c) = ctx.creds {
        req = req.basic_auth(&c.user, Some(&c.password));
    }
    let resp = client.send(req, token_url).await?;
    let status = resp.status();
    if !status.is_success() {
        let detail = client.error_detail(resp, token_url).await;
        return Err(match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => TagsError::BadCredentials {
                registry: ctx.registry.clone(),
                image: ctx.image.clone(),
                sent: ctx.sent_credentials,
                detail,
            },
            _ => TagsError::Unexpected {
                url: token_url.to_string(),
                status: status.as_u16(),
                detail,
            },
        });
    }
    let body: TokenResponse = client.read_json(resp, token_url).await?;
    body.token
        .filter(|t| !t.is_empty())
        .or(body.access_token.filter(|t| !t.is_empty()))
        .ok_or_else(|| TagsError::MalformedResponse {
            url: token_url.to_string(),
            why: "the token response has neither `token` nor `access_token`".into(),
        })
}
