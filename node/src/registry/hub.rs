//! Docker Hub, through its repository API rather than the registry API: the
//! tags are pages of `GET /v2/namespaces/{ns}/repositories/{repo}/tags`
//! linked by `next`; official images live in the `library` namespace. With
//! credentials, `POST /v2/users/login` gives a JWT used as a Bearer token.

use reqwest::Url;
use serde::Deserialize;
use serde_json::json;

use super::{
    Credentials, Ctx, Pager, RegistryClient, TagsError, check_name, resolve_next, url_with_path,
};

#[derive(Deserialize)]
struct Page {
    #[serde(default)]
    next: Option<String>,
    results: Vec<Tag>,
}

#[derive(Deserialize)]
struct Tag {
    name: String,
}

#[derive(Deserialize)]
struct Login {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
}

pub(super) async fn list(
    client: &RegistryClient,
    base: &Url,
    namespace: Option<&str>,
    image: &str,
    creds: Option<&Credentials>,
) -> Result<Vec<String>, TagsError> {
    let (ns, repo) = split_name(namespace, image)?;
    let full = format!("{ns}/{repo}");
    let ctx = Ctx::new(base, &full, creds);

    let token = match creds {
        Some(c) => Some(login(client, base, c, &ctx).await?),
        None => None,
    };

    let mut url = url_with_path(
        base,
        ["v2", "namespaces", &ns, "repositories", &repo, "tags"],
    )?;
    url.query_pairs_mut()
        .append_pair("page_size", &client.config.page_size.to_string());

    let mut pager = Pager::new(client.config.max_pages);
    let mut tags = Vec::new();
    loop {
        pager.visit(&url, &ctx)?;
        let mut req = client.http.get(url.clone());
        if let Some(token) = &token {
            req = req.bearer_auth(token);
        }
        let resp = client.send(req, &url).await?;
        if !resp.status().is_success() {
            return Err(client.status_error(resp, &url, &ctx).await);
        }
        let page: Page = client.read_json(resp, &url).await?;
        tags.extend(page.results.into_iter().map(|t| t.name));
        match page.next.filter(|n| !n.is_empty()) {
            Some(next) => url = resolve_next(&url, &next)?,
            None => return Ok(tags),
        }
    }
}

/// `(namespace, repository)`: `ns/repo` as given, else the registry's
/// namespace or `library` (official images).
fn split_name(namespace: Option<&str>, image: &str) -> Result<(String, String), TagsError> {
    let image = image.trim().trim_matches('/');
    let (ns, repo) = match image.split_once('/') {
        Some((ns, repo)) => (ns.to_string(), repo.to_string()),
        None => (
            namespace
                .map(|n| n.trim().trim_matches('/').to_ascii_lowercase())
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| "library".into()),
            image.to_string(),
        ),
    };
    check_name(&ns)?;
    check_name(&repo)?;
    if ns.contains('/') || repo.contains('/') {
        return Err(TagsError::InvalidImage {
            image: image.to_string(),
            why: "a Docker Hub image is `name` or `namespace/name`".into(),
        });
    }
    Ok((ns, repo))
}

async fn login(
    client: &RegistryClient,
    base: &Url,
    creds: &Credentials,
    ctx: &Ctx<'_>,
) -> Result<String, TagsError> {
    let url = url_with_path(base, ["v2", "users", "login"])?;
    let req = client
        .http
        .post(url.clone())
        .json(&json!({ "username": creds.user, "password": creds.password }));
    let resp = client.send(req, &url).await?;
    let status = resp.status();
    if status.as_u16() == 401 || status.as_u16() == 403 {
        let said = client.error_detail(resp, &url).await;
        let hint = "with two-factor authentication, use a personal access token as the password";
        return Err(TagsError::BadCredentials {
            registry: ctx.registry.clone(),
            image: ctx.image.clone(),
            sent: true,
            detail: if said.is_empty() {
                hint.into()
            } else {
                format!("{said}; {hint}")
            },
        });
    }
    if !status.is_success() {
        return Err(TagsError::Unexpected {
            url: url.to_string(),
            status: status.as_u16(),
            detail: client.error_detail(resp, &url).await,
        });
    }
    let body: Login = client.read_json(resp, &url).await?;
    body.token
        .filter(|t| !t.is_empty())
        .or(body.access_token.filter(|t| !t.is_empty()))
        .ok_or_else(|| TagsError::MalformedResponse {
            url: url.to_string(),
            why: "the login response has no token".into(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn official_images_are_in_library() {
        assert_eq!(
            split_name(None, "nginx").unwrap(),
            ("library".into(), "nginx".into())
        );
        assert_eq!(
            split_name(Some("Acme"), "app").unwrap(),
            ("acme".into(), "app".into())
        );
        assert_eq!(
            split_name(Some("acme"), "other/app").unwrap(),
            ("other".into(), "app".into())
        );
        assert!(split_name(None, "a/b/c").is_err());
        assert!(split_name(None, "nginx:latest").is_err());
    }
}
