//! Rules of what can be deployed: registries, products, versions and the
//! images (containers) of a version.

use crate::action::Action;
use crate::context::{OpContext, copy_sources};
use crate::model::{
    ContainerConfig, DeploymentStatus, HUB_REGISTRY_ID, Image, ImageRef, ProductKind, RegistryKind,
    Role, Runtime, TeamState, Version, VersionKind,
};
use crate::table::{By, slot};
use crate::view;

use super::common::{
    R, RuleError, check_container_name, check_name, deployment_mutable, deployment_state_err,
    found, fresh, need_origin, need_role, not_in_family,
};
use super::deployment::check_kubernetes;

/// Why an incremental version is frozen, if it is.
pub fn version_frozen(s: &TeamState, v: &Version) -> Option<String> {
    if v.kind == VersionKind::Rolling {
        return None;
    }
    if let Some(c) = &v.child {
        let name = s.versions.get(c).map(|v| v.name.as_str()).unwrap_or(c);
        return Some(format!("it has a child version {name}"));
    }
    s.deployments
        .find_by(By::Version, &v.id)
        .find(|d| {
            matches!(
                d.status,
                DeploymentStatus::InProgress
                    | DeploymentStatus::Successful
                    | DeploymentStatus::Obsolete
                    | DeploymentStatus::Downgraded
            )
        })
        .map(|d| format!("deployment {} is {}", d.id, d.status))
}

/// Checks a registry, product, version or image action (see [`super::check`]).
pub(super) fn check(s: &TeamState, ctx: &OpContext, action: &Action) -> R {
    use Action as A;
    match action {
        A::RegistryAdd {
            id,
            name,
            kind,
            url,
            namespace,
            user,
            password,
        } => {
            need_origin(s, ctx)?;
            need_role(s, ctx, "registry.add", Role::Admin)?;
            fresh(ctx, "registry", id, s.registries.contains_key(id))?;
            check_name("registry name", name)?;
            if s.registries.any_by(By::Name, name) {
                return Err(RuleError::NameTaken {
                    what: "registry",
                    name: name.clone(),
                });
            }
            let need = |field: &'static str, ok: bool| {
                if ok {
                    Ok(())
                } else {
                    Err(RuleError::Invalid {
                        what: "registry",
                        value: name.clone(),
                        why: format!("a {} registry needs --{field}", kind.as_str()),
                    })
                }
            };
            match kind {
                RegistryKind::V2 => need("url", url.is_some())?,
                RegistryKind::Github | RegistryKind::Gitlab => {
                    need("namespace", namespace.is_some())?
                }
                RegistryKind::Hub | RegistryKind::Unchecked => {}
            }
            if password.is_some() && user.is_none() {
                return Err(RuleError::Invalid {
                    what: "registry",
                    value: name.clone(),
                    why: "a password needs a --user".into(),
                });
            }
            // Sealed to the team secrets key, or to each node of the team
            // (`nodes`: one sealed copy per node in `data`).
            if let Some(p) = password
                && !(p.recipient.starts_with("team:") || p.recipient == "nodes")
            {
                return Err(RuleError::SecretRecipient {
                    key: "password".into(),
                    recipient: p.recipient.clone(),
                });
            }
            Ok(())
        }
        A::RegistryUpdate {
            id,
            url,
            namespace,
            user,
            password,
            clear_credentials,
        } => {
            need_origin(s, ctx)?;
            need_role(s, ctx, "registry.update", Role::Admin)?;
            let r = found(s.registries.get(id), "registry", id)?;
            let invalid = |why: &str| RuleError::Invalid {
                what: "registry update",
                value: r.name.clone(),
                why: why.into(),
            };
            if password.is_some() && user.is_none() {
                return Err(invalid("a password needs a --user"));
            }
            if url.is_none() && namespace.is_none() && user.is_none() && !clear_credentials {
                return Err(invalid(
                    "nothing to change: give --url, --namespace, --user with --password-stdin, or --no-credentials",
                ));
            }
            if *clear_credentials && user.is_some() {
                return Err(invalid(
                    "either new credentials or --no-credentials, not both",
                ));
            }
            if password.is_some() && user.is_none() {
                return Err(invalid("a password needs a --user"));
            }
            if let Some(p) = password
                && !p.recipient.starts_with("team:")
            {
                return Err(RuleError::SecretRecipient {
                    key: "password".into(),
                    recipient: p.recipient.clone(),
                });
            }
            Ok(())
        }
        A::RegistryRemove { id } => {
            need_origin(s, ctx)?;
            need_role(s, ctx, "registry.remove", Role::Admin)?;
            let r = found(s.registries.get(id), "registry", id)?;
            if id == HUB_REGISTRY_ID {
                return Err(RuleError::HubRegistry);
            }
            let count = s
                .versions
                .values()
                .flat_map(|v| v.images.iter())
                .filter(|i| {
                    &i.image.registry == id
                        || i.config.image.as_ref().is_some_and(|x| &x.registry == id)
                        || i.config
                            .init_containers
                            .iter()
                            .any(|c| &c.image.registry == id)
                })
                .count();
            if count > 0 {
                return Err(RuleError::RegistryInUse {
                    name: r.name.clone(),
                    count,
                });
            }
            Ok(())
        }
        A::ProductCreate {
            id,
            name,
            kind,
            version,
            ..
        } => {
            need_origin(s, ctx)?;
            need_role(s, ctx, "product.create", Role::User)?;
            fresh(ctx, "product", id, s.products.contains_key(id))?;
            check_name("product name", name)?;
            if s.products.any_by(By::Name, name) {
                return Err(RuleError::NameTaken {
                    what: "product",
                    name: name.clone(),
                });
            }
            match (kind, version) {
                (ProductKind::Simple, Some(v)) => {
                    if v == id {
                        return Err(RuleError::BadId {
                            what: "version",
                            id: v.clone(),
                        });
                    }
                    fresh(ctx, "version", v, s.versions.contains_key(v))
                }
                (ProductKind::Complex, None) => Ok(()),
                (ProductKind::Simple, None) => Err(RuleError::SimpleProduct {
                    why: "it is created with its rolling version",
                }),
                (ProductKind::Complex, Some(_)) => Err(RuleError::Invalid {
                    what: "product",
                    value: name.clone(),
                    why: "a complex product starts with no version".into(),
                }),
            }
        }
        A::ProductRemove { id } => {
            need_origin(s, ctx)?;
            need_role(s, ctx, "product.remove", Role::User)?;
            found(s.products.get(id), "product", id)?;
            if let Some(d) = s
                .deployments
                .find_by(By::Product, id)
                .find(|d| d.status == DeploymentStatus::InProgress)
            {
                return Err(deployment_state_err(
                    d,
                    "removing its product",
                    "anything but in-progress",
                ));
            }
            Ok(())
        }
        A::ProductUpdate { id, .. } => {
            need_origin(s, ctx)?;
            need_role(s, ctx, "product.update", Role::User)?;
            found(s.products.get(id), "product", id).map(|_| ())
        }
        A::VersionCreate {
            id, product, name, ..
        } => {
            need_origin(s, ctx)?;
            need_role(s, ctx, "version.create", Role::User)?;
            let p = found(s.products.get(product), "product", product)?;
            if p.kind == ProductKind::Simple {
                return Err(RuleError::SimpleProduct {
                    why: "versions cannot be added",
                });
            }
            fresh(ctx, "version", id, s.versions.contains_key(id))?;
            check_name("version name", name)?;
            if s.versions.any_by(By::Name, &slot(product, name)) {
                return Err(RuleError::NameTaken {
                    what: "version",
                    name: name.clone(),
                });
            }
            Ok(())
        }
        A::VersionIncrease {
            from,
            id,
            name,
            copies,
            ..
        } => {
            need_origin(s, ctx)?;
            need_role(s, ctx, "version.increase", Role::User)?;
            let v = found(s.versions.get(from), "version", from)?;
            if v.kind != VersionKind::Incremental {
                return Err(RuleError::NotIncremental { what: "increased" });
            }
            if let Some(c) = &v.child {
                return Err(RuleError::HasChild {
                    version: v.name.clone(),
                    child: s
                        .versions
                        .get(c)
                        .map(|c| c.name.clone())
                        .unwrap_or(c.clone()),
                });
            }
            fresh(ctx, "version", id, s.versions.contains_key(id))?;
            check_name("version name", name)?;
            if s.versions.any_by(By::Name, &slot(&v.product, name)) {
                return Err(RuleError::NameTaken {
                    what: "version",
                    name: name.clone(),
                });
            }
            let expected = if v.auto_copy {
                copy_sources(s, v).len()
            } else {
                0
            };
            if copies.len() != expected {
                return Err(RuleError::Invalid {
                    what: "copies",
                    value: copies.len().to_string(),
                    why: format!("{expected} deployment(s) are copied"),
                });
            }
            for (i, c) in copies.iter().enumerate() {
                fresh(
                    ctx,
                    "deployment",
                    c,
                    s.deployments.contains_key(c) || copies[..i].contains(c) || c == id,
                )?;
            }
            Ok(())
        }
        A::VersionDefault { version } => {
            need_origin(s, ctx)?;
            need_role(s, ctx, "version.default", Role::User)?;
            found(s.versions.get(version), "version", version).map(|_| ())
        }
        A::VersionUpdate {
            id,
            changelog,
            auto_copy,
        } => {
            need_origin(s, ctx)?;
            need_role(s, ctx, "version.update", Role::User)?;
            let v = found(s.versions.get(id), "version", id)?;
            if changelog.is_none() && auto_copy.is_none() {
                return Err(RuleError::Invalid {
                    what: "version update",
                    value: v.name.clone(),
                    why: "nothing to change: give --changelog, --auto-copy or --no-auto-copy"
                        .into(),
                });
            }
            // No frozen check, on purpose: §2 freezes what a deployed
            // version runs (its images and configs), which this does not
            // touch. A changelog only describes the version, and auto-copy
            // only decides what a later increase copies, which is judged
            // against the flag as of that increase's causal past; a deployed
            // version is exactly the one whose notes get corrected and whose
            // deployments one wants copied on the next increase.
            Ok(())
        }
        A::VersionRemove { id } => {
            need_origin(s, ctx)?;
            need_role(s, ctx, "version.remove", Role::User)?;
            let v = found(s.versions.get(id), "version", id)?;
            let p = found(s.products.get(&v.product), "product", &v.product)?;
            if p.kind == ProductKind::Simple {
                return Err(RuleError::SimpleProduct {
                    why: "its version is removed with the product",
                });
            }
            if let Some(c) = &v.child {
                return Err(RuleError::VersionNotDeletable {
                    version: v.name.clone(),
                    why: format!(
                        "it has a child version {}",
                        s.versions.get(c).map(|c| c.name.as_str()).unwrap_or(c)
                    ),
                });
            }
            if let Some(d) = s
                .deployments
                .find_by(By::Version, id)
                .find(|d| !deployment_mutable(s, d))
            {
                return Err(RuleError::VersionNotDeletable {
                    version: v.name.clone(),
                    why: format!("its deployment {} is {} and cannot change", d.id, d.status),
                });
            }
            Ok(())
        }
        A::ProductImport {
            product,
            product_name,
            version,
            name,
            images,
            ..
        } => {
            need_origin(s, ctx)?;
            need_role(s, ctx, "product.import", Role::User)?;
            match product_name {
                Some(pname) => {
                    fresh(ctx, "product", product, s.products.contains_key(product))?;
                    check_name("product name", pname)?;
                    if s.products.any_by(By::Name, pname) {
                        return Err(RuleError::NameTaken {
                            what: "product",
                            name: pname.clone(),
                        });
                    }
                }
                None => {
                    let p = found(s.products.get(product), "product", product)?;
                    if p.kind == ProductKind::Simple {
                        return Err(RuleError::SimpleProduct {
                            why: "versions cannot be added",
                        });
                    }
                }
            }
            if version == product {
                return Err(RuleError::BadId {
                    what: "version",
                    id: version.clone(),
                });
            }
            fresh(ctx, "version", version, s.versions.contains_key(version))?;
            check_name("version name", name)?;
            if s.versions.any_by(By::Name, &slot(product, name)) {
                return Err(RuleError::NameTaken {
                    what: "version",
                    name: name.clone(),
                });
            }
            let mut seen = std::collections::BTreeSet::new();
            for image in images {
                check_new_image(s, image, !seen.insert(image.name.as_str()))?;
            }
            Ok(())
        }
        A::ImageAdd { version, image } => {
            need_origin(s, ctx)?;
            need_role(s, ctx, "image.add", Role::User)?;
            let v = mutable_version(s, version)?;
            check_new_image(s, image, v.images.iter().any(|i| i.name == image.name))?;
            check_kubernetes_deployments(s, v, &image.name, &image.config)
        }
        A::ImageRemove { version, name } => {
            need_origin(s, ctx)?;
            need_role(s, ctx, "image.remove", Role::User)?;
            let v = mutable_version(s, version)?;
            found(v.images.iter().find(|i| &i.name == name), "container", name).map(|_| ())
        }
        A::ImageConfig {
            version,
            name,
            image,
            config,
        } => {
            need_origin(s, ctx)?;
            need_role(s, ctx, "image.config", Role::User)?;
            let v = mutable_version(s, version)?;
            found(v.images.iter().find(|i| &i.name == name), "container", name)?;
            found(
                s.registries.get(&image.registry),
                "registry",
                &image.registry,
            )?;
            check_image_name(image)?;
            if let Some(i) = &config.image {
                found(s.registries.get(&i.registry), "registry", &i.registry)?;
            }
            check_kubernetes_deployments(s, v, name, config)
        }
        A::ImageOrder { version, names } => {
            need_origin(s, ctx)?;
            need_role(s, ctx, "image.order", Role::User)?;
            let v = mutable_version(s, version)?;
            let mut a: Vec<&String> = v.images.iter().map(|i| &i.name).collect();
            let mut b: Vec<&String> = names.iter().collect();
            a.sort();
            b.sort();
            if a != b {
                return Err(RuleError::Invalid {
                    what: "image order",
                    value: names.join(","),
                    why: "name every container of the version exactly once".into(),
                });
            }
            Ok(())
        }
        _ => Err(not_in_family(action, "catalog")),
    }
}

/// An image config of a version deployed to a Kubernetes node must hold
/// only fields that runtime honours, with each deployment's instance
/// config layered on top.
fn check_kubernetes_deployments(
    s: &TeamState,
    v: &Version,
    name: &str,
    config: &ContainerConfig,
) -> R {
    for d in s.deployments.find_by(By::Version, &v.id) {
        let Some(n) = view::effective_node(s, &d.node) else {
            continue;
        };
        if n.runtime != Runtime::Kubernetes {
            continue;
        }
        let cfg = match d.instances.get(name) {
            Some(inst) => config.merged(inst),
            None => config.clone(),
        };
        check_kubernetes(name, &n.name, &cfg)?;
    }
    Ok(())
}

/// An image joining a version: a valid container name not `taken` in the
/// version, a registry of the team and a valid image name.
fn check_new_image(s: &TeamState, image: &Image, taken: bool) -> R {
    check_container_name(&image.name)?;
    if taken {
        return Err(RuleError::NameTaken {
            what: "container",
            name: image.name.clone(),
        });
    }
    found(
        s.registries.get(&image.image.registry),
        "registry",
        &image.image.registry,
    )?;
    check_image_name(&image.image)
}

fn check_image_name(r: &ImageRef) -> R {
    if r.name.is_empty() || r.name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(RuleError::Invalid {
            what: "image",
            value: r.name.clone(),
            why: "an image name has no spaces".into(),
        });
    }
    if r.tag.is_empty() || r.tag.len() > 128 || r.tag.chars().any(|c| c.is_whitespace() || c == '/')
    {
        return Err(RuleError::Invalid {
            what: "tag",
            value: r.tag.clone(),
            why: "a tag is 1-128 characters without spaces or slashes".into(),
        });
    }
    Ok(())
}

fn mutable_version<'a>(s: &'a TeamState, id: &str) -> Result<&'a Version, RuleError> {
    let v = found(s.versions.get(id), "version", id)?;
    if let Some(why) = version_frozen(s, v) {
        return Err(RuleError::VersionFrozen {
            version: v.name.clone(),
            why,
        });
    }
    Ok(v)
}
