//! GitLab's container registry, through the REST API (`/api/v4`): the
//! namespace is a project or a group path; its registry repositories are
//! listed (`/projects/:id/registry/repositories`, else
//! `/groups/:id/registry/repositories`) to find the one whose path is the
//! image, then its tags (`/projects/:id/registry/repositories/:repo/tags`).
//! Lists are paged by `X-Next-Page` (or `Link`); credentials are an access
//! token sent as `PRIVATE-TOKEN`.

use reqwest::header::LINK;
use reqwest::{StatusCode, Url};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::{
    Credentials, Ctx, Pager, RegistryClient, TagsError, join_namespace, next_link, resolve_next,
    url_with_path,
};

#[derive(Deserialize)]
struct Repository {
    id: u64,
    path: String,
    project_id: u64,
}

#[derive(Deserialize)]
struct Tag {
    name: String,
}

pub(super) async fn list(
    client: &RegistryClient,
    base: &Url,
    namespace: &str,
    image: &str,
    creds: Option<&Credentials>,
) -> Result<Vec<String>, TagsError> {
    let namespace = namespace.trim().trim_matches('/');
    let full = join_namespace(Some(namespace), image)?;
    let ctx = Ctx::new(base, &full, creds);

    let mut repo = None;
    for scope in ["projects", "groups"] {
        // The namespace is one path segment: `group/project` goes as `group%2Fproject`.
        let mut url = url_with_path(
            base,
            ["api", "v4", scope, namespace, "registry", "repositories"],
        )?;
        url.query_pairs_mut()
            .append_pair("per_page", &client.config.page_size.to_string());
        match find_repository(client, url, &full, &ctx).await? {
            Lookup::Found(r) => {
                repo = Some(r);
                break;
            }
            Lookup::NoSuchRepository => break,
            // Not a project: try it as a group.
            Lookup::NoSuchNamespace => {}
        }
    }
    let repo = repo.ok_or_else(|| TagsError::UnknownImage {
        registry: ctx.registry.clone(),
        image: full.clone(),
        anonymous: creds.is_none(),
    })?;

    let mut url = url_with_path(
        base,
        [
            "api",
            "v4",
            "projects",
            &repo.project_id.to_string(),
            "registry",
            "repositories",
            &repo.id.to_string(),
            "tags",
        ],
    )?;
    url.query_pairs_mut()
        .append_pair("per_page", &client.config.page_size.to_string());
    let mut pager = Pager::new(client.config.max_pages);
    let mut tags = Vec::new();
    let mut next = Some(url);
    while let Some(url) = next {
        pager.visit(&url, &ctx)?;
        let Some((page, after)) = get_page::<Tag>(client, &url, &ctx).await? else {
            return Err(TagsError::UnknownImage {
                registry: ctx.registry.clone(),
                image: full.clone(),
                anonymous: creds.is_none(),
            });
        };
        tags.extend(page.into_iter().map(|t| t.name));
        next = after;
    }
    Ok(tags)
}

enum Lookup {
    Found(Repository),
    NoSuchRepository,
    NoSuchNamespace,
}

async fn find_repository(
    client: &RegistryClient,
    first: Url,
    full: &str,
    ctx: &Ctx<'_>,
) -> Result<Lookup, TagsError> {
    let mut pager = Pager::new(client.config.max_pages);
    let mut next = Some(first);
    while let Some(url) = next {
        pager.visit(&url, ctx)?;
        let Some((page, after)) = get_page::<Repository>(client, &url, ctx).await? else {
            return Ok(Lookup::NoSuchNamespace);
        };
        if let Some(repo) = page.into_iter().find(|r| r.path.eq_ignore_ascii_case(full)) {
            return Ok(Lookup::Found(repo));
        }
        next = after;
    }
    Ok(Lookup::NoSuchRepository)
}

/// One page of a GitLab list and the URL of the next; `None` on 404.
async fn get_page<T: DeserializeOwned>(
    client: &RegistryClient,
    url: &Url,
    ctx: &Ctx<'_>,
) -> Result<Option<(Vec<T>, Option<Url>)>, TagsError> {
    let mut req = client.http.get(url.clone());
    if let Some(c) = ctx.creds {
        req = req.header("PRIVATE-TOKEN", &c.password);
    }
    let resp = client.send(req, url).await?;
    if resp.status() == StatusCode::NOT_FOUND {
        return Ok(None);
    }
    if !resp.status().is_success() {
        return Err(client.status_error(resp, url, ctx).await);
    }
    let next = next_page(resp.headers(), url)?;
    let items: Vec<T> = client.read_json(resp, url).await?;
    Ok(Some((items, next)))
}

/// `X-Next-Page` (empty on the last page), else a `Link` rel="next".
fn next_page(headers: &reqwest::header::HeaderMap, url: &Url) -> Result<Option<Url>, TagsError> {
    if let Some(value) = headers.get("x-next-page") {
        let page = value.to_str().unwrap_or("").trim();
        if page.is_empty() {
            return Ok(None);
        }
        if !page.bytes().all(|b| b.is_ascii_digit()) {
            return Err(TagsError::MalformedResponse {
                url: url.to_string(),
                why: format!("X-Next-Page is not a page number: {page:?}"),
            });
        }
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .filter(|(k, _)| k != "page")
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let mut next = url.clone();
        next.query_pairs_mut()
            .clear()
            .extend_pairs(pairs)
            .append_pair("page", page);
        return Ok(Some(next));
    }
    match headers
        .get_all(LINK)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(next_link)
    {
        Some(link) => resolve_next(url, &link).map(Some),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue};

    #[test]
    fn next_page_from_headers() {
        let url = Url::parse(
            "https://gl/api/v4/projects/1/registry/repositories/2/tags?per_page=2&page=1",
        )
        .unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-next-page", HeaderValue::from_static("2"));
        let n = next_page(&h, &url).unwrap().unwrap();
        assert_eq!(
            n.as_str(),
            "https://gl/api/v4/projects/1/registry/repositories/2/tags?per_page=2&page=2"
        );
        h.insert("x-next-page", HeaderValue::from_static(""));
        assert!(next_page(&h, &url).unwrap().is_none());
        h.insert("x-next-page", HeaderValue::from_static("2&x=y"));
        assert!(next_page(&h, &url).is_err());

        let mut h = HeaderMap::new();
        h.insert(
            LINK,
            HeaderValue::from_static(r#"<https://gl/api/v4/x?page=3>; rel="next""#),
        );
        assert_eq!(
            next_page(&h, &url).unwrap().unwrap().as_str(),
            "https://gl/api/v4/x?page=3"
        );
        assert!(next_page(&HeaderMap::new(), &url).unwrap().is_none());
    }
}
