//! Product templates for common stacks, shipped in the binary as files in
//! the format of `shoal export` (`cli/templates/*.yaml`), so
//! `shoal product templates NAME > f.yaml && shoal apply -f f.yaml` makes
//! the product in a team.

use anyhow::{Context as _, Result};

use crate::cmd::export::Manifest;

/// Name, one-line description and file of each template.
pub const TEMPLATES: &[(&str, &str, &str)] = &[
    (
        "postgres",
        "a database: PostgreSQL 16, data in a volume, health-checked",
        include_str!("../templates/postgres.yaml"),
    ),
    (
        "caddy",
        "a reverse proxy: Caddy 2 on ports 80 and 443",
        include_str!("../templates/caddy.yaml"),
    ),
    (
        "rabbitmq",
        "a queue: RabbitMQ 3 with the management UI, health-checked",
        include_str!("../templates/rabbitmq.yaml"),
    ),
];

/// The template called `name`, as its file's text.
pub fn find(name: &str) -> Option<&'static str> {
    TEMPLATES
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, _, text)| *text)
}

/// A template's file, parsed as `shoal apply` reads it.
pub fn parse(text: &str) -> Result<Manifest> {
    serde_norway::from_str(text).context("a template is not a valid product file")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every template is a file `apply` takes, named as listed, with at
    /// least one image from the team's default registry.
    #[test]
    fn every_template_is_an_applicable_product_file() {
        for (name, _, text) in TEMPLATES {
            let m = parse(text).unwrap_or_else(|e| panic!("{name}: {e:#}"));
            assert_eq!(&m.product.name, name);
            assert!(find(name).is_some());
            let images: Vec<_> = m.product.versions.iter().flat_map(|v| &v.images).collect();
            assert!(!images.is_empty(), "{name} has no image");
            assert!(images.iter().all(|i| i.registry == "hub"), "{name}");
        }
        assert!(find("nope").is_none());
    }
}
