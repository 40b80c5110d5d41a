//! Effects on what can be deployed: registries, products, versions (with
//! the deployments an auto-copying increase copies) and images.

use crate::action::Action;
use crate::context::{OpContext, copy_sources};
use crate::model::*;
use crate::table::By;

use super::common::{Write, del, new_deployment, put};

/// The writes of a registry, product, version or image action (see
/// [`super::effect`]).
pub(super) fn effect(s: &TeamState, ctx: &OpContext, action: &Action) -> Vec<Write> {
    use Action as A;
    let mut out = Vec::new();
    match action {
        A::RegistryAdd {
            id,
            name,
            kind,
            url,
            namespace,
            user,
            password,
        } => out.push(put(
            Entity::Registry(Registry {
                id: id.clone(),
                name: name.clone(),
                kind: *kind,
                url: url.clone(),
                namespace: namespace.clone(),
                user: user.clone(),
                password: password.clone(),
                created: ctx.hlc,
            }),
            id,
        )),
        A::RegistryUpdate {
            id,
            url,
            namespace,
            user,
            password,
            clear_credentials,
        } => {
            if let Some(r) = s.registries.get(id) {
                let mut r = r.clone();
                if let Some(u) = url {
                    r.url = Some(u.clone());
                }
                if let Some(n) = namespace {
                    r.namespace = Some(n.clone());
                }
                if *clear_credentials {
                    r.user = None;
                    r.password = None;
                }
                if let Some(u) = user {
                    r.user = Some(u.clone());
                    r.password = password.clone();
                }
                out.push(put(Entity::Registry(r), id));
            }
        }
        A::RegistryRemove { id } => out.push(del(Collection::Registries, id)),
        A::ProductCreate {
            id,
            name,
            kind,
            description,
            version,
        } => {
            out.push(put(
                Entity::Product(Product {
                    id: id.clone(),
                    name: name.clone(),
                    kind: *kind,
                    description: description.clone(),
                    default_version: version.clone(),
                    created: ctx.hlc,
                }),
                id,
            ));
            if let Some(v) = version {
                out.push(put(
                    Entity::Version(Version {
                        id: v.clone(),
                        product: id.clone(),
                        name: "rolling".into(),
                        kind: VersionKind::Rolling,
                        changelog: String::new(),
                        auto_copy: false,
                        parent: None,
                        child: None,
                        images: Vec::new(),
                        created: ctx.hlc,
                    }),
                    v,
                ));
            }
        }
        A::ProductRemove { id } => {
            out.push(del(Collection::Products, id));
            for v in s.versions.find_by(By::Product, id) {
                out.push(del(Collection::Versions, &v.id));
            }
            for d in s.deployments.find_by(By::Product, id) {
                out.push(del(Collection::Deployments, &d.id));
            }
        }
        A::ProductUpdate { id, description } => {
            if let Some(p) = s.products.get(id) {
                out.push(put(
                    Entity::Product(Product {
                        description: description.clone(),
                        ..p.clone()
                    }),
                    id,
                ));
            }
        }
        A::VersionUpdate {
            id,
            changelog,
            auto_copy,
        } => {
            if let Some(v) = s.versions.get(id) {
                let mut v = v.clone();
                if let Some(c) = changelog {
                    v.changelog = c.clone();
                }
                if let Some(a) = auto_copy {
                    v.auto_copy = *a;
                }
                out.push(put(Entity::Version(v), id));
            }
        }
        A::VersionCreate {
            id,
            product,
            name,
            kind,
            changelog,
            auto_copy,
        } => {
            out.push(put(
                Entity::Version(Version {
                    id: id.clone(),
                    product: product.clone(),
                    name: name.clone(),
                    kind: *kind,
                    changelog: changelog.clone(),
                    auto_copy: *auto_copy,
                    parent: None,
                    child: None,
                    images: Vec::new(),
                    created: ctx.hlc,
                }),
                id,
            ));
            if let Some(p) = s.products.get(product)
                && p.default_version.is_none()
            {
                out.push(put(
                    Entity::Product(Product {
                        default_version: Some(id.clone()),
                        ..p.clone()
                    }),
                    product,
                ));
            }
        }
        A::VersionIncrease {
            from,
            id,
            name,
            changelog,
            copies,
        } => {
            let Some(v) = s.versions.get(from) else {
                return out;
            };
            out.push(put(
                Entity::Version(Version {
                    child: Some(id.clone()),
                    ..v.clone()
                }),
                from,
            ));
            out.push(put(
                Entity::Version(Version {
                    id: id.clone(),
                    name: name.clone(),
                    changelog: changelog.clone(),
                    parent: Some(from.clone()),
                    child: None,
                    created: ctx.hlc,
                    ..v.clone()
                }),
                id,
            ));
            for (src, new_id) in copy_sources(s, v).into_iter().zip(copies) {
                let mut d = new_deployment(ctx, new_id, src);
                d.version = id.clone();
                out.push(put(Entity::Deployment(Box::new(d)), new_id));
            }
        }
        A::VersionDefault { version } => {
            if let Some(v) = s.versions.get(version)
                && let Some(p) = s.products.get(&v.product)
            {
                out.push(put(
                    Entity::Product(Product {
                        default_version: Some(version.clone()),
                        ..p.clone()
                    }),
                    &p.id,
                ));
            }
        }
        A::VersionRemove { id } => {
            let Some(v) = s.versions.get(id) else {
                return out;
            };
            out.push(del(Collection::Versions, id));
            for d in s.deployments.find_by(By::Version, id) {
                out.push(del(Collection::Deployments, &d.id));
            }
            if let Some(parent) = v.parent.as_ref().and_then(|p| s.versions.get(p)) {
                out.push(put(
                    Entity::Version(Version {
                        child: None,
                        ..parent.clone()
                    }),
                    &parent.id,
                ));
            }
            if let Some(p) = s.products.get(&v.product)
                && p.default_version.as_deref() == Some(id)
            {
                let next = v.parent.clone().or_else(|| {
                    s.versions
                        .find_by(By::Product, &v.product)
                        .filter(|x| &x.id != id)
                        .max_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)))
                        .map(|x| x.id.clone())
                });
                out.push(put(
                    Entity::Product(Product {
                        default_version: next,
                        ..p.clone()
                    }),
                    &p.id,
                ));
            }
        }
        A::ProductImport {
            product,
            product_name,
            description,
            version,
            name,
            changelog,
            images,
        } => {
            let base = match product_name {
                Some(pname) => Some(Product {
                    id: product.clone(),
                    name: pname.clone(),
                    kind: ProductKind::Complex,
                    description: description.clone(),
                    default_version: None,
                    created: ctx.hlc,
                }),
                None => s.products.get(product).cloned(),
            };
            // The product when new, or when this is its first version.
            if let Some(p) = base
                && (product_name.is_some() || p.default_version.is_none())
            {
                out.push(put(
                    Entity::Product(Product {
                        default_version: Some(p.default_version.clone().unwrap_or(version.clone())),
                        ..p
                    }),
                    product,
                ));
            }
            out.push(put(
                Entity::Version(Version {
                    id: version.clone(),
                    product: product.clone(),
                    name: name.clone(),
                    kind: VersionKind::Incremental,
                    changelog: changelog.clone(),
                    auto_copy: false,
                    parent: None,
                    child: None,
                    images: images.clone(),
                    created: ctx.hlc,
                }),
                version,
            ));
        }
        A::ImageAdd { version, image } => {
            if let Some(v) = s.versions.get(version) {
                let mut v = v.clone();
                v.images.push((**image).clone());
                out.push(put(Entity::Version(v), version));
            }
        }
        A::ImageRemove { version, name } => {
            if let Some(v) = s.versions.get(version) {
                let mut v = v.clone();
                v.images.retain(|i| &i.name != name);
                out.push(put(Entity::Version(v), version));
            }
        }
        A::ImageConfig {
            version,
            name,
            image,
            config,
        } => {
            if let Some(v) = s.versions.get(version) {
                let mut v = v.clone();
                for i in v.images.iter_mut().filter(|i| &i.name == name) {
                    i.image = image.clone();
                    i.config = (**config).clone();
                }
                out.push(put(Entity::Version(v), version));
            }
        }
        A::ImageOrder { version, names } => {
            if let Some(v) = s.versions.get(version) {
                let mut v = v.clone();
                v.images
                    .sort_by_key(|i| names.iter().position(|n| n == &i.name));
                out.push(put(Entity::Version(v), version));
            }
        }
        // Not of this family: the dispatcher never sends one, and the rules
        // refuse it anyway.
        _ => {}
    }
    out
}
