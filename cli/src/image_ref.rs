//! Which team registry an image reference belongs to: the one named with
//! `--registry`, else the one whose host the reference names, else (a
//! reference without a host) the image's current registry when it has one,
//! else Docker Hub; and registry names for ids.

use anyhow::{Result, anyhow, bail};
use shoal_api::registries::{Registry, RegistryList};
use shoal_protocol::model::{HUB_REGISTRY_ID, ImageRef, RegistryKind};

use crate::ctx::Ctx;
use crate::error::Usage;
use crate::output::dash;
use crate::parse;

/// `host[:port]` of a URL, lowercased.
fn url_host(url: &str) -> String {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .unwrap_or(url);
    rest.split('/').next().unwrap_or(rest).to_ascii_lowercase()
}

/// Whether the image host `host` is served by the registry `r`.
fn serves(r: &Registry, host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    let own = r.url.as_deref().filter(|u| !u.is_empty()).map(url_host);
    match r.kind {
        RegistryKind::Hub => matches!(
            host.as_str(),
            "docker.io" | "index.docker.io" | "registry-1.docker.io"
        ),
        RegistryKind::Github => own.as_deref().unwrap_or("ghcr.io") == host,
        RegistryKind::Gitlab => match own {
            Some(o) => host == o || host == format!("registry.{o}"),
            None => host == "registry.gitlab.com",
        },
        RegistryKind::V2 | RegistryKind::Unchecked => own.as_deref() == Some(host.as_str()),
    }
}

/// The team registry and image name of `reference`: the registry named
/// with `--registry`, else the one whose host the reference names, else
/// `current` (the registry id of the image being changed, so a new tag
/// keeps its registry), else Docker Hub.
pub async fn image_ref(
    ctx: &Ctx,
    reference: &str,
    registry: Option<&str>,
    current: Option<&str>,
) -> Result<ImageRef> {
    let parts = parse::image_ref(reference).map_err(|e| Usage(e.to_string()))?;
    let list: RegistryList = ctx.get("registries").await?;
    let registry = registry.or_else(|| {
        // A reference without a host stays in the image's registry (when
        // that registry still exists).
        current.filter(|id| parts.host.is_none() && list.iter().any(|r| r.id == *id))
    });
    image_ref_in(&list, &parts, reference, registry)
}

/// [`image_ref`] against a known list of registries.
pub fn image_ref_in(
    registries: &[Registry],
    parts: &parse::ImageRefParts,
    reference: &str,
    registry: Option<&str>,
) -> Result<ImageRef> {
    let r = match (registry, &parts.host) {
        (Some(name), host) => {
            let r = registries
                .iter()
                .find(|r| r.name == name || r.id == name)
                .ok_or_else(|| {
                    anyhow!("no registry {name:?} in this team: see `shoal registry list`")
                })?;
            if let Some(h) = host
                && !serves(r, h)
            {
                bail!(
                    "image {reference} names host {h}, but registry {name} is {}: drop the host from the reference or pick the right --registry",
                    dash(r.url.clone().unwrap_or_default())
                );
            }
            r
        }
        (None, Some(h)) => registries.iter().find(|r| serves(r, h)).ok_or_else(|| {
            anyhow!(
                "no registry of this team serves {h}: add it with `shoal registry add NAME --kind v2 --url {h}`, or pass --registry NAME"
            )
        })?,
        (None, None) => registries
            .iter()
            .find(|r| r.id == HUB_REGISTRY_ID)
            .ok_or_else(|| anyhow!("this team has no Docker Hub registry: pass --registry NAME"))?,
    };
    Ok(ImageRef {
        registry: r.id.clone(),
        name: parts.name.clone(),
        tag: parts.tag.clone(),
    })
}

/// The name of the registry with id `id` (the id itself when it is gone).
pub async fn registry_name_of(ctx: &Ctx, id: &str) -> Result<String> {
    let list: RegistryList = ctx.get("registries").await?;
    Ok(list
        .iter()
        .find(|x| x.id == id)
        .map(|x| x.name.clone())
        .unwrap_or_else(|| id.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(id: &str, name: &str, kind: RegistryKind, url: Option<&str>) -> Registry {
        Registry {
            id: id.into(),
            name: name.into(),
            kind,
            url: url.map(str::to_string),
            namespace: None,
            user: None,
            password: false,
            key_epoch: None,
            sealed_for: None,
            images: 0,
            builtin: false,
            created_ms: 0,
        }
    }

    fn registries() -> Vec<Registry> {
        vec![
            registry("hub", "hub", RegistryKind::Hub, None),
            registry("r1", "local", RegistryKind::V2, Some("127.0.0.1:5000")),
            registry(
                "r2",
                "corp",
                RegistryKind::V2,
                Some("https://registry.corp.example/"),
            ),
            registry("r3", "gh", RegistryKind::Github, None),
        ]
    }

    fn resolve(reference: &str, registry: Option<&str>) -> Result<ImageRef> {
        let parts = parse::image_ref(reference)?;
        image_ref_in(&registries(), &parts, reference, registry)
    }

    #[test]
    fn references_find_their_registry() {
        let r = resolve("nginx:1.27", None).unwrap();
        assert_eq!(
            (r.registry.as_str(), r.name.as_str(), r.tag.as_str()),
            ("hub", "nginx", "1.27")
        );
        let r = resolve("127.0.0.1:5000/shoal-test/busybox", None).unwrap();
        assert_eq!(
            (r.registry.as_str(), r.name.as_str(), r.tag.as_str()),
            ("r1", "shoal-test/busybox", "latest")
        );
        assert_eq!(
            resolve("registry.corp.example/app:2", None)
                .unwrap()
                .registry,
            "r2"
        );
        assert_eq!(resolve("ghcr.io/acme/app:2", None).unwrap().registry, "r3");
        assert_eq!(
            resolve("docker.io/library/redis:7", None).unwrap().registry,
            "hub"
        );
        assert_eq!(resolve("app:1", Some("local")).unwrap().registry, "r1");
        // A registry given by id (the image's current one) works the same.
        assert_eq!(resolve("app:1", Some("r1")).unwrap().registry, "r1");
        let e = resolve("quay.io/x/y:1", None).unwrap_err().to_string();
        assert!(e.contains("shoal registry add"), "{e}");
        let e = resolve("127.0.0.1:5000/app", Some("corp"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--registry"), "{e}");
        assert!(resolve("app", Some("nope")).is_err());
    }
}
