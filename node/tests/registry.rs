#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

//! Listing registry tags: against the local test registries of
//! `scripts/test.sh` (a real Docker registry, open and with htpasswd Basic
//! auth), and against in-process fakes over real HTTP that answer like
//! Docker Registry V2 with a token server, Docker Hub, ghcr.io and GitLab.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use shoal_node::registry::{ClientConfig, Credentials, RegistryClient, RegistrySpec, TagsError};
use shoal_protocol::model::RegistryKind;

// ------------------------------------------------------------ real registry

/// The registries `scripts/test.sh` starts, read from the environment or
/// from the env file it writes.
struct TestEnv {
    registry: String,
    auth_registry: String,
    user: String,
    password: String,
}

/// Parses `export NAME=VALUE` lines as `printf %q` writes them.
fn parse_env_file(text: &str) -> HashMap<String, String> {
    let mut vars = HashMap::new();
    for line in text.lines() {
        let Some(rest) = line.trim().strip_prefix("export ") else {
            continue;
        };
        let Some((name, raw)) = rest.split_once('=') else {
            continue;
        };
        let value = if let Some(inner) = raw.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')) {
            inner.to_string()
        } else {
            let mut out = String::new();
            let mut chars = raw.chars();
            while let Some(c) = chars.next() {
                if c == '\\' {
                    out.extend(chars.next());
                } else {
                    out.push(c);
                }
            }
            out
        };
        vars.insert(name.to_string(), value);
    }
    vars
}

/// The test environment, or `None` (with the reason printed) when it is
/// absent outside CI. In CI its absence fails the test.
fn test_env() -> Option<TestEnv> {
    let dir =
        std::env::var("SHOAL_TEST_STATE_DIR").unwrap_or_else(|_| "/tmp/shoal-test-env".into());
    let file = std::path::Path::new(&dir).join("env");
    let from_file = std::fs::read_to_string(&file)
        .map(|t| parse_env_file(&t))
        .unwrap_or_default();
    let var = |name: &str| {
        std::env::var(name)
            .ok()
            .filter(|v| !v.is_empty())
            .or_else(|| from_file.get(name).cloned())
    };
    match (
        var("SHOAL_TEST_REGISTRY"),
        var("SHOAL_TEST_AUTH_REGISTRY"),
        var("SHOAL_TEST_REGISTRY_USER"),
        var("SHOAL_TEST_REGISTRY_PASSWORD"),
    ) {
        (Some(registry), Some(auth_registry), Some(user), Some(password)) => Some(TestEnv {
            registry,
            auth_registry,
            user,
            password,
        }),
        _ => {
            let why = format!(
                "the test registries are not set up (no SHOAL_TEST_* variables, no {}); run scripts/test.sh",
                file.display()
            );
            if std::env::var_os("CI").is_some() {
                panic!("{why}");
            }
            eprintln!("skipped: {why}");
            None
        }
    }
}

fn v2(url: &str) -> RegistrySpec {
    RegistrySpec::new(RegistryKind::V2).with_url(url)
}

#[tokio::test]
async fn real_open_registry_lists_tags() {
    let Some(env) = test_env() else { return };
    let client = RegistryClient::new().unwrap();
    let tags = client
        .list_tags(&v2(&env.registry), "shoal-test/busybox", None)
        .await
        .unwrap();
    let tags: BTreeSet<_> = tags.into_iter().collect();
    assert!(tags.contains("1.0") && tags.contains("1.1"), "{tags:?}");

    // The same through the registry's namespace.
    let spec = v2(&env.registry).with_namespace("shoal-test");
    let again: BTreeSet<_> = client
        .list_tags(&spec, "busybox", None)
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(again, tags);
}

#[tokio::test]
async fn real_auth_registry_lists_all_120_tags_with_basic_auth() {
    let Some(env) = test_env() else { return };
    let client = RegistryClient::new().unwrap();
    let creds = Credentials::new(&env.user, &env.password);
    let tags = client
        .list_tags(&v2(&env.auth_registry), "shoal-test/many", Some(&creds))
        .await
        .unwrap();
    assert_eq!(tags.len(), 120, "{tags:?}");
    let got: BTreeSet<_> = tags.into_iter().collect();
    let want: BTreeSet<_> = (1..=120).map(|i| format!("t{i:03}")).collect();
    assert_eq!(got, want);
}

#[tokio::test]
async fn real_auth_registry_refuses_missing_and_wrong_credentials() {
    let Some(env) = test_env() else { return };
    let client = RegistryClient::new().unwrap();
    let spec = v2(&env.auth_registry);

    let err = client
        .list_tags(&spec, "shoal-test/many", None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, TagsError::BadCredentials { sent: false, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("needs credentials"), "{err}");

    let wrong = Credentials::new(&env.user, format!("{}-wrong", env.password));
    let err = client
        .list_tags(&spec, "shoal-test/many", Some(&wrong))
        .await
        .unwrap_err();
    assert!(
        matches!(err, TagsError::BadCredentials { sent: true, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("refused the credentials"), "{err}");
    assert!(!err.to_string().contains(&env.password), "{err}");
}

#[tokio::test]
async fn real_registries_report_unknown_images() {
    let Some(env) = test_env() else { return };
    let client = RegistryClient::new().unwrap();
    let creds = Credentials::new(&env.user, &env.password);
    let err = client
        .list_tags(
            &v2(&env.auth_registry),
            "shoal-test/no-such-image",
            Some(&creds),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            TagsError::UnknownImage {
                anonymous: false,
                ..
            }
        ),
        "{err:?}"
    );
    let err = client
        .list_tags(&v2(&env.registry), "shoal-test/no-such-image", None)
        .await
        .unwrap_err();
    assert!(matches!(err, TagsError::UnknownImage { .. }), "{err:?}");
    assert!(
        err.to_string().contains("shoal-test/no-such-image"),
        "{err}"
    );
}

#[tokio::test]
async fn closed_port_is_unreachable() {
    let client = RegistryClient::new().unwrap();
    let err = client
        .list_tags(&v2("127.0.0.1:1"), "shoal-test/busybox", None)
        .await
        .unwrap_err();
    let TagsError::Unreachable { url, reason } = &err else {
        panic!("{err:?}");
    };
    assert_eq!(url, "http://127.0.0.1:1");
    assert!(reason.contains("refused"), "{reason}");
    assert!(err.to_string().contains("cannot reach"), "{err}");
}

#[tokio::test]
async fn unchecked_and_incomplete_specs_are_refused() {
    let client = RegistryClient::new().unwrap();
    let err = client
        .list_tags(&RegistrySpec::new(RegistryKind::Unchecked), "app", None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, TagsError::NotListable { kind: "unchecked" }),
        "{err:?}"
    );
    let err = client
        .list_tags(&RegistrySpec::new(RegistryKind::V2), "app", None)
        .await
        .unwrap_err();
    assert!(matches!(err, TagsError::InvalidSpec { .. }), "{err:?}");
    let err = client
        .list_tags(&RegistrySpec::new(RegistryKind::Github), "app", None)
        .await
        .unwrap_err();
    assert!(matches!(err, TagsError::InvalidSpec { .. }), "{err:?}");
    let err = client
        .list_tags(&v2("127.0.0.1:1"), "app:latest", None)
        .await
        .unwrap_err();
    assert!(matches!(err, TagsError::InvalidImage { .. }), "{err:?}");
}

// ------------------------------------------------------------ fakes

/// One request as the fake saw it.
#[derive(Clone, Debug)]
struct Seen {
    path: String,
    query: String,
    authorization: Option<String>,
    private_token: Option<String>,
}

#[derive(Clone, Default)]
struct Fake {
    log: Arc<Mutex<Vec<Seen>>>,
    addr: Arc<OnceLock<SocketAddr>>,
}

impl Fake {
    fn record(&self, uri: &Uri, headers: &HeaderMap) {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        self.log.lock().unwrap().push(Seen {
            path: uri.path().to_string(),
            query: uri.query().unwrap_or("").to_string(),
            authorization: header("authorization"),
            private_token: header("private-token"),
        });
    }

    fn seen(&self, path_prefix: &str) -> Vec<Seen> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.path.starts_with(path_prefix))
            .cloned()
            .collect()
    }

    fn base(&self) -> String {
        format!("http://{}", self.addr.get().unwrap())
    }
}

/// Serves `router` on 127.0.0.1 and returns the fake (with its address).
async fn serve(router: Router<Fake>) -> Fake {
    let fake = Fake::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    fake.addr.set(listener.local_addr().unwrap()).unwrap();
    let app = router.with_state(fake.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    fake
}

/// The query parameters of a request.
fn query(uri: &Uri) -> HashMap<String, String> {
    reqwest::Url::parse(&format!("http://fake{uri}"))
        .unwrap()
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// A client whose public services all point at `base`, with small pages.
fn client_for(base: &str, page_size: u32, max_pages: usize) -> RegistryClient {
    RegistryClient::with_config(ClientConfig {
        hub_url: base.into(),
        ghcr_url: base.into(),
        gitlab_url: base.into(),
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(5),
        page_size,
        max_pages,
        ..ClientConfig::default()
    })
    .unwrap()
}

fn tag_names(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("v{i:02}")).collect()
}

fn json_response(status: StatusCode, headers: &[(&str, String)], body: Value) -> Response {
    let mut resp = (status, axum::Json(body)).into_response();
    for (name, value) in headers {
        resp.headers_mut().append(
            axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    resp
}

/// A V2 page of `all` after `last`, `n` long, with a `Link` to the next page.
fn v2_page(repo: &str, all: &[String], q: &HashMap<String, String>) -> Response {
    let n: usize = q.get("n").and_then(|n| n.parse().ok()).unwrap_or(all.len());
    let start = match q.get("last") {
        Some(last) => all.iter().position(|t| t == last).unwrap() + 1,
        None => 0,
    };
    let page: Vec<_> = all.iter().skip(start).take(n).cloned().collect();
    let mut headers = Vec::new();
    if start + n < all.len() {
        let last = page.last().unwrap();
        headers.push((
            "link",
            format!(r#"</v2/{repo}/tags/list?n={n}&last={last}>; rel="next""#),
        ));
    }
    json_response(
        StatusCode::OK,
        &headers,
        json!({ "name": repo, "tags": page }),
    )
}

fn name_unknown(repo: &str) -> Response {
    json_response(
        StatusCode::NOT_FOUND,
        &[],
        json!({ "errors": [{ "code": "NAME_UNKNOWN", "message": "repository name not known to registry", "detail": { "name": repo } }] }),
    )
}

// --- V2 with a token server

const V2_TOKEN: &str = "v2-token-1";

/// A registry that wants `Bearer v2-token-1` and a token server at
/// `/auth/token` that gives it to `user:pw` (or anyone, when `open_token`).
fn v2_bearer_router(open_token: bool) -> Router<Fake> {
    Router::new()
        .route(
            "/v2/acme/app/tags/list",
            get(
                |State(f): State<Fake>,
                 uri: Uri,
                 headers: HeaderMap,| async move {
                    f.record(&uri, &headers);
 let q = query(&uri);
                    let want = format!("Bearer {V2_TOKEN}");
                    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(&want) {
                        let challenge = format!(
                            r#"Bearer realm="{}/auth/token",service="fake-registry",scope="repository:acme/app:pull""#,
                            f.base()
                        );
                        return json_response(
                            StatusCode::UNAUTHORIZED,
                            &[("www-authenticate", challenge)],
                            json!({ "errors": [{ "code": "UNAUTHORIZED", "message": "authentication required" }] }),
                        );
                    }
                    v2_page("acme/app", &tag_names(7), &q)
                },
            ),
        )
        .route(
            "/v2/acme/missing/tags/list",
            get(|State(f): State<Fake>, uri: Uri, headers: HeaderMap| async move {
                f.record(&uri, &headers);
                name_unknown("acme/missing")
            }),
        )
        .route(
            "/auth/token",
            get(
                move |State(f): State<Fake>, uri: Uri, headers: HeaderMap| async move {
                    f.record(&uri, &headers);
                    let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
                    // base64("user:pw")
                    if !open_token && auth != Some("Basic dXNlcjpwdw==") {
                        return json_response(
                            StatusCode::UNAUTHORIZED,
                            &[],
                            json!({ "details": "incorrect username or password" }),
                        );
                    }
                    // Some token servers say `access_token`, some `token`.
                    let body = if open_token {
                        json!({ "token": V2_TOKEN })
                    } else {
                        json!({ "access_token": V2_TOKEN, "expires_in": 300 })
                    };
                    json_response(StatusCode::OK, &[], body)
                },
            ),
        )
}

#[tokio::test]
async fn v2_bearer_challenge_then_every_link_page_with_the_token() {
    let fake = serve(v2_bearer_router(false)).await;
    let client = client_for(&fake.base(), 3, 50);
    let creds = Credentials::new("user", "pw");
    let tags = client
        .list_tags(&v2(&fake.base()), "acme/app", Some(&creds))
        .await
        .unwrap();
    assert_eq!(tags, tag_names(7));

    // One token, fetched once with the credentials, with the challenge's
    // service and scope.
    let token_calls = fake.seen("/auth/token");
    assert_eq!(token_calls.len(), 1, "{token_calls:?}");
    assert_eq!(
        token_calls[0].authorization.as_deref(),
        Some("Basic dXNlcjpwdw==")
    );
    assert!(
        token_calls[0].query.contains("service=fake-registry")
            && token_calls[0]
                .query
                .contains("scope=repository%3Aacme%2Fapp%3Apull"),
        "{:?}",
        token_calls[0].query
    );

    // The first request is challenged; then 3 pages (3 + 3 + 1), each with
    // the token and the `Link` of the one before.
    let pages = fake.seen("/v2/acme/app/tags/list");
    assert_eq!(pages.len(), 4, "{pages:?}");
    assert_eq!(pages[0].authorization, None);
    for page in &pages[1..] {
        assert_eq!(
            page.authorization.as_deref(),
            Some(format!("Bearer {V2_TOKEN}").as_str())
        );
    }
    let queries: Vec<_> = pages[1..].iter().map(|p| p.query.as_str()).collect();
    assert_eq!(queries, ["n=3", "n=3&last=v03", "n=3&last=v06"]);
}

#[tokio::test]
async fn v2_anonymous_token_and_refused_credentials() {
    let fake = serve(v2_bearer_router(true)).await;
    let client = client_for(&fake.base(), 5, 50);
    let tags = client
        .list_tags(&v2(&fake.base()), "app", None)
        .await
        .map(|_| ())
        .unwrap_err();
    // `app` alone is not `acme/app`: the fake does not know it.
    assert!(matches!(tags, TagsError::UnknownImage { .. }), "{tags:?}");

    let spec = v2(&fake.base()).with_namespace("acme");
    let tags = client.list_tags(&spec, "app", None).await.unwrap();
    assert_eq!(tags, tag_names(7));
    let token_calls = fake.seen("/auth/token");
    assert_eq!(token_calls.len(), 1);
    assert_eq!(
        token_calls[0].authorization, None,
        "anonymous token request"
    );

    let err = client.list_tags(&spec, "missing", None).await.unwrap_err();
    assert!(
        matches!(
            err,
            TagsError::UnknownImage {
                anonymous: true,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("acme/missing"), "{err}");

    let refused = serve(v2_bearer_router(false)).await;
    let client = client_for(&refused.base(), 5, 50);
    let err = client
        .list_tags(
            &v2(&refused.base()),
            "acme/app",
            Some(&Credentials::new("user", "wrong")),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, TagsError::BadCredentials { sent: true, .. }),
        "{err:?}"
    );
    let err = client
        .list_tags(&v2(&refused.base()), "acme/app", None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, TagsError::BadCredentials { sent: false, .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn v2_basic_challenge_is_answered_with_the_credentials() {
    let router = Router::new().route(
        "/v2/acme/app/tags/list",
        get(
            |State(f): State<Fake>,
             uri: Uri,
             headers: HeaderMap,| async move {
                f.record(&uri, &headers);
 let q = query(&uri);
                if headers.get("authorization").and_then(|v| v.to_str().ok())
                    != Some("Basic dXNlcjpwdw==")
                {
                    return json_response(
                        StatusCode::UNAUTHORIZED,
                        &[("www-authenticate", r#"Basic realm="fake""#.into())],
                        json!({ "errors": [{ "code": "UNAUTHORIZED", "message": "authentication required" }] }),
                    );
                }
                v2_page("acme/app", &tag_names(5), &q)
            },
        ),
    );
    let fake = serve(router).await;
    let client = client_for(&fake.base(), 2, 50);
    let tags = client
        .list_tags(
            &v2(&fake.base()),
            "acme/app",
            Some(&Credentials::new("user", "pw")),
        )
        .await
        .unwrap();
    assert_eq!(tags, tag_names(5));
    let seen = fake.seen("/v2/");
    // Challenged once, then Basic on all three pages.
    assert_eq!(seen.len(), 4, "{seen:?}");
    assert!(
        seen[1..]
            .iter()
            .all(|s| s.authorization.as_deref() == Some("Basic dXNlcjpwdw=="))
    );

    let err = client
        .list_tags(
            &v2(&fake.base()),
            "acme/app",
            Some(&Credentials::new("user", "nope")),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, TagsError::BadCredentials { sent: true, .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn v2_link_loop_and_endless_pages_are_cut_off() {
    let router = Router::new()
        .route(
            "/v2/loop/tags/list",
            get(
                |State(f): State<Fake>, uri: Uri, headers: HeaderMap| async move {
                    f.record(&uri, &headers);
                    // Always the same next page, so the second page links to itself.
                    json_response(
                        StatusCode::OK,
                        &[(
                            "link",
                            r#"</v2/loop/tags/list?n=2&last=b>; rel="next""#.into(),
                        )],
                        json!({ "name": "loop", "tags": ["a", "b"] }),
                    )
                },
            ),
        )
        .route(
            "/v2/endless/tags/list",
            get(
                |State(f): State<Fake>, uri: Uri, headers: HeaderMap| async move {
                    f.record(&uri, &headers);
                    let q = query(&uri);
                    let k: u64 = q.get("last").and_then(|l| l.parse().ok()).unwrap_or(0);
                    json_response(
                        StatusCode::OK,
                        &[(
                            "link",
                            format!(r#"</v2/endless/tags/list?n=1&last={}>; rel="next""#, k + 1),
                        )],
                        json!({ "name": "endless", "tags": [k.to_string()] }),
                    )
                },
            ),
        );
    let fake = serve(router).await;
    let client = client_for(&fake.base(), 2, 5);

    let err = client
        .list_tags(&v2(&fake.base()), "loop", None)
        .await
        .unwrap_err();
    assert!(matches!(err, TagsError::TooManyPages { .. }), "{err:?}");
    assert_eq!(
        fake.seen("/v2/loop/").len(),
        2,
        "a link back is caught at once"
    );

    let err = client
        .list_tags(&v2(&fake.base()), "endless", None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, TagsError::TooManyPages { pages: 5, .. }),
        "{err:?}"
    );
    assert_eq!(fake.seen("/v2/endless/").len(), 5);
    assert!(err.to_string().contains("stopped after 5"), "{err}");
}

#[tokio::test]
async fn v2_next_link_to_another_host_is_refused() {
    let router = Router::new().route(
        "/v2/app/tags/list",
        get(|| async {
            json_response(
                StatusCode::OK,
                &[(
                    "link",
                    r#"<http://127.0.0.2:9/v2/app/tags/list?last=a>; rel="next""#.into(),
                )],
                json!({ "name": "app", "tags": ["a"] }),
            )
        }),
    );
    let fake = serve(router).await;
    let client = client_for(&fake.base(), 2, 5);
    let err = client
        .list_tags(&v2(&fake.base()), "app", Some(&Credentials::new("u", "p")))
        .await
        .unwrap_err();
    assert!(
        matches!(err, TagsError::MalformedResponse { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn malformed_and_slow_responses() {
    let router = Router::new()
        .route(
            "/v2/html/tags/list",
            get(|| async { "<html>not a registry</html>" }),
        )
        .route(
            "/v2/slow/tags/list",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                "late"
            }),
        );
    let fake = serve(router).await;
    let client = RegistryClient::with_config(ClientConfig {
        request_timeout: Duration::from_millis(300),
        ..ClientConfig::default()
    })
    .unwrap();
    let err = client
        .list_tags(&v2(&fake.base()), "html", None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, TagsError::MalformedResponse { .. }),
        "{err:?}"
    );

    let started = std::time::Instant::now();
    let err = client
        .list_tags(&v2(&fake.base()), "slow", None)
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    let TagsError::Unreachable { reason, .. } = &err else {
        panic!("{err:?}");
    };
    assert!(reason.contains("timed out"), "{reason}");
}

// --- ghcr.io

#[tokio::test]
async fn ghcr_pull_token_then_tag_pages() {
    let router = Router::new()
        .route(
            "/token",
            get(|State(f): State<Fake>, uri: Uri, headers: HeaderMap| async move {
                f.record(&uri, &headers);
                // base64("ghuser:ghp_token")
                let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
                match auth {
                    None => json_response(StatusCode::OK, &[], json!({ "token": "gh-anon" })),
                    Some("Basic Z2h1c2VyOmdocF90b2tlbg==") => {
                        json_response(StatusCode::OK, &[], json!({ "token": "gh-user" }))
                    }
                    Some(_) => json_response(
                        StatusCode::FORBIDDEN,
                        &[],
                        json!({ "errors": [{ "code": "DENIED", "message": "invalid credentials" }] }),
                    ),
                }
            }),
        )
        .route(
            "/v2/acme/app/tags/list",
            get(
                |State(f): State<Fake>,
                 uri: Uri,
                 headers: HeaderMap,| async move {
                    f.record(&uri, &headers);
 let q = query(&uri);
                    let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
                    if !matches!(auth, Some("Bearer gh-anon" | "Bearer gh-user")) {
                        return json_response(
                            StatusCode::UNAUTHORIZED,
                            &[(
                                "www-authenticate",
                                format!(r#"Bearer realm="{}/token",service="ghcr.io",scope="repository:acme/app:pull""#, f.base()),
                            )],
                            json!({ "errors": [{ "code": "UNAUTHORIZED", "message": "authentication required" }] }),
                        );
                    }
                    v2_page("acme/app", &tag_names(5), &q)
                },
            ),
        );
    let fake = serve(router).await;
    let client = client_for(&fake.base(), 2, 50);
    let spec = RegistrySpec::new(RegistryKind::Github).with_namespace("acme");

    let tags = client.list_tags(&spec, "app", None).await.unwrap();
    assert_eq!(tags, tag_names(5));
    let token_calls = fake.seen("/token");
    assert_eq!(token_calls.len(), 1);
    assert!(
        token_calls[0]
            .query
            .contains("scope=repository%3Aacme%2Fapp%3Apull"),
        "{:?}",
        token_calls[0].query
    );
    // The token was fetched up front: no request went unauthenticated.
    let pages = fake.seen("/v2/");
    assert_eq!(pages.len(), 3);
    assert!(
        pages
            .iter()
            .all(|p| p.authorization.as_deref() == Some("Bearer gh-anon"))
    );

    let creds = Credentials::new("ghuser", "ghp_token");
    let tags = client
        .list_tags(&spec, "acme/app", Some(&creds))
        .await
        .unwrap();
    assert_eq!(tags, tag_names(5));
    assert_eq!(
        fake.seen("/v2/").last().unwrap().authorization.as_deref(),
        Some("Bearer gh-user")
    );

    let err = client
        .list_tags(&spec, "app", Some(&Credentials::new("ghuser", "bad")))
        .await
        .unwrap_err();
    assert!(
        matches!(err, TagsError::BadCredentials { sent: true, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("DENIED"), "{err}");
}

// --- Docker Hub

#[tokio::test]
async fn hub_follows_next_and_logs_in() {
    let router = Router::new()
        .route(
            "/v2/users/login",
            post(
                |State(f): State<Fake>, uri: Uri, headers: HeaderMap, axum::Json(body): axum::Json<Value>| async move {
                    f.record(&uri, &headers);
                    if body["username"] == "hubuser" && body["password"] == "hubpass" {
                        json_response(StatusCode::OK, &[], json!({ "token": "hub-jwt" }))
                    } else {
                        json_response(
                            StatusCode::UNAUTHORIZED,
                            &[],
                            json!({ "detail": "Incorrect authentication credentials" }),
                        )
                    }
                },
            ),
        )
        .route(
            "/v2/namespaces/{ns}/repositories/{repo}/tags",
            get(
                |State(f): State<Fake>,
                 uri: Uri,
                 headers: HeaderMap,
                 Path((ns, repo)): Path<(String, String)>,| async move {
                    f.record(&uri, &headers);
 let q = query(&uri);
                    let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
                    let all = match (ns.as_str(), repo.as_str(), auth) {
                        ("library", "nginx", _) => tag_names(5),
                        ("acme", "private", Some("Bearer hub-jwt")) => tag_names(3),
                        _ => {
                            return json_response(
                                StatusCode::NOT_FOUND,
                                &[],
                                json!({ "message": "httperror 404: object not found" }),
                            );
                        }
                    };
                    let size: usize = q["page_size"].parse().unwrap();
                    let page: usize = q.get("page").map(|p| p.parse().unwrap()).unwrap_or(1);
                    let results: Vec<_> = all
                        .iter()
                        .skip((page - 1) * size)
                        .take(size)
                        .map(|t| json!({ "name": t, "full_size": 1234 }))
                        .collect();
                    let next = (page * size < all.len()).then(|| {
                        format!(
                            "{}/v2/namespaces/{ns}/repositories/{repo}/tags?page={}&page_size={size}",
                            f.base(),
                            page + 1
                        )
                    });
                    json_response(
                        StatusCode::OK,
                        &[],
                        json!({ "count": all.len(), "next": next, "previous": null, "results": results }),
                    )
                },
            ),
        );
    let fake = serve(router).await;
    let client = client_for(&fake.base(), 2, 50);
    let hub = RegistrySpec::new(RegistryKind::Hub);

    // Official image, anonymous: `library/`, three pages, no login.
    let tags = client.list_tags(&hub, "nginx", None).await.unwrap();
    assert_eq!(tags, tag_names(5));
    let pages = fake.seen("/v2/namespaces/library/repositories/nginx/tags");
    let queries: Vec<_> = pages.iter().map(|p| p.query.as_str()).collect();
    assert_eq!(
        queries,
        ["page_size=2", "page=2&page_size=2", "page=3&page_size=2"]
    );
    assert!(fake.seen("/v2/users/login").is_empty());
    assert!(pages.iter().all(|p| p.authorization.is_none()));

    // A private image through the registry's namespace, logged in.
    let acme = RegistrySpec::new(RegistryKind::Hub).with_namespace("acme");
    let creds = Credentials::new("hubuser", "hubpass");
    let tags = client
        .list_tags(&acme, "private", Some(&creds))
        .await
        .unwrap();
    assert_eq!(tags, tag_names(3));
    assert_eq!(fake.seen("/v2/users/login").len(), 1);
    let pages = fake.seen("/v2/namespaces/acme/");
    assert_eq!(pages.len(), 2);
    assert!(
        pages
            .iter()
            .all(|p| p.authorization.as_deref() == Some("Bearer hub-jwt"))
    );

    // Anonymous, the private image does not show.
    let err = client.list_tags(&acme, "private", None).await.unwrap_err();
    assert!(
        matches!(
            err,
            TagsError::UnknownImage {
                anonymous: true,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("acme/private"), "{err}");

    let err = client
        .list_tags(&acme, "private", Some(&Credentials::new("hubuser", "nope")))
        .await
        .unwrap_err();
    assert!(
        matches!(err, TagsError::BadCredentials { sent: true, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("personal access token"), "{err}");
}

// --- GitLab

/// Repository ids: 1 = group/proj, 2 = group/proj/sub (project 9),
/// 3 = group/other (project 10). Every call needs `PRIVATE-TOKEN: glpat`.
fn gitlab_router() -> Router<Fake> {
    fn unauthorized() -> Response {
        json_response(
            StatusCode::UNAUTHORIZED,
            &[],
            json!({ "message": "401 Unauthorized" }),
        )
    }
    fn authorized(headers: &HeaderMap) -> bool {
        headers.get("private-token").and_then(|v| v.to_str().ok()) == Some("glpat")
    }
    fn page_of(all: Vec<Value>, q: &HashMap<String, String>) -> Response {
        let per: usize = q["per_page"].parse().unwrap();
        let page: usize = q.get("page").map(|p| p.parse().unwrap()).unwrap_or(1);
        let items: Vec<_> = all
            .iter()
            .skip((page - 1) * per)
            .take(per)
            .cloned()
            .collect();
        let next = if page * per < all.len() {
            (page + 1).to_string()
        } else {
            String::new()
        };
        json_response(
            StatusCode::OK,
            &[("x-next-page", next)],
            Value::Array(items),
        )
    }
    Router::new()
        .route(
            "/api/v4/projects/{id}/registry/repositories",
            get(
                |State(f): State<Fake>,
                 uri: Uri,
                 headers: HeaderMap,
                 Path(id): Path<String>,| async move {
                    f.record(&uri, &headers);
 let q = query(&uri);
                    if !authorized(&headers) {
                        return unauthorized();
                    }
                    if id != "group/proj" {
                        return json_response(
                            StatusCode::NOT_FOUND,
                            &[],
                            json!({ "message": "404 Project Not Found" }),
                        );
                    }
                    let mut repos = vec![json!({ "id": 1, "name": "", "path": "group/proj", "project_id": 9 })];
                    // Filler so the wanted repository is on a later page.
                    for i in 0..3 {
                        repos.push(json!({ "id": 100 + i, "name": format!("x{i}"), "path": format!("group/proj/x{i}"), "project_id": 9 }));
                    }
                    repos.push(json!({ "id": 2, "name": "sub", "path": "group/proj/sub", "project_id": 9 }));
                    page_of(repos, &q)
                },
            ),
        )
        .route(
            "/api/v4/groups/{id}/registry/repositories",
            get(
                |State(f): State<Fake>,
                 uri: Uri,
                 headers: HeaderMap,
                 Path(id): Path<String>,| async move {
                    f.record(&uri, &headers);
 let q = query(&uri);
                    if !authorized(&headers) {
                        return unauthorized();
                    }
                    if id != "group" {
                        return json_response(
                            StatusCode::NOT_FOUND,
                            &[],
                            json!({ "message": "404 Group Not Found" }),
                        );
                    }
                    page_of(
                        vec![
                            json!({ "id": 1, "name": "", "path": "group/proj", "project_id": 9 }),
                            json!({ "id": 3, "name": "", "path": "group/other", "project_id": 10 }),
                        ],
                        &q,
                    )
                },
            ),
        )
        .route(
            "/api/v4/projects/{pid}/registry/repositories/{rid}/tags",
            get(
                |State(f): State<Fake>,
                 uri: Uri,
                 headers: HeaderMap,
                 Path((pid, rid)): Path<(u64, u64)>,| async move {
                    f.record(&uri, &headers);
 let q = query(&uri);
                    if !authorized(&headers) {
                        return unauthorized();
                    }
                    let n = match (pid, rid) {
                        (9, 1) => 1,
                        (9, 2) => 5,
                        (10, 3) => 4,
                        _ => {
                            return json_response(
                                StatusCode::NOT_FOUND,
                                &[],
                                json!({ "message": "404 Repository Not Found" }),
                            );
                        }
                    };
                    let tags = tag_names(n)
                        .into_iter()
                        .map(|t| json!({ "name": t, "path": format!("x:{t}"), "location": "x" }))
                        .collect();
                    page_of(tags, &q)
                },
            ),
        )
}

#[tokio::test]
async fn gitlab_project_and_group_repositories_with_next_pages() {
    let fake = serve(gitlab_router()).await;
    let client = client_for(&fake.base(), 2, 50);
    let token = Credentials::new("", "glpat");

    // A project namespace; the repository is on the third page of the list,
    // its tags span three pages.
    let project = RegistrySpec::new(RegistryKind::Gitlab)
        .with_url(fake.base())
        .with_namespace("group/proj");
    let tags = client
        .list_tags(&project, "sub", Some(&token))
        .await
        .unwrap();
    assert_eq!(tags, tag_names(5));
    let repo_pages = fake.seen("/api/v4/projects/group%2Fproj/registry/repositories");
    assert_eq!(repo_pages.len(), 3, "{repo_pages:?}");
    let tag_pages = fake.seen("/api/v4/projects/9/registry/repositories/2/tags");
    let queries: Vec<_> = tag_pages.iter().map(|p| p.query.as_str()).collect();
    assert_eq!(
        queries,
        ["per_page=2", "per_page=2&page=2", "per_page=2&page=3"]
    );
    assert!(
        fake.log
            .lock()
            .unwrap()
            .iter()
            .all(|s| s.private_token.as_deref() == Some("glpat"))
    );

    // The project's own (root) repository.
    let tags = client
        .list_tags(&project, "group/proj", Some(&token))
        .await
        .unwrap();
    assert_eq!(tags, tag_names(1));

    // A group namespace (gitlab.com by default, here the fake): not a
    // project, so the group's repositories are searched.
    let group = RegistrySpec::new(RegistryKind::Gitlab).with_namespace("group");
    let tags = client
        .list_tags(&group, "other", Some(&token))
        .await
        .unwrap();
    assert_eq!(tags, tag_names(4));
    assert_eq!(fake.seen("/api/v4/groups/group/").len(), 1);
    assert_eq!(
        fake.seen("/api/v4/projects/10/registry/repositories/3/tags")
            .len(),
        2
    );

    // Unknown repository in a known project, unknown namespace.
    let err = client
        .list_tags(&project, "nope", Some(&token))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            TagsError::UnknownImage {
                anonymous: false,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("group/proj/nope"), "{err}");
    let nowhere = RegistrySpec::new(RegistryKind::Gitlab).with_namespace("elsewhere");
    let err = client
        .list_tags(&nowhere, "app", Some(&token))
        .await
        .unwrap_err();
    assert!(matches!(err, TagsError::UnknownImage { .. }), "{err:?}");

    // No token, wrong token.
    let err = client.list_tags(&project, "sub", None).await.unwrap_err();
    assert!(
        matches!(err, TagsError::BadCredentials { sent: false, .. }),
        "{err:?}"
    );
    let err = client
        .list_tags(&project, "sub", Some(&Credentials::new("", "wrong")))
        .await
        .unwrap_err();
    assert!(
        matches!(err, TagsError::BadCredentials { sent: true, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("401 Unauthorized"), "{err}");
}
