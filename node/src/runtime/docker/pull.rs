//! Images: the registry's digest against the local image's, and a pull
//! when they differ.

use std::pin::pin;

use bollard::auth::DockerCredentials;
use bollard::query_parameters::CreateImageOptionsBuilder;
use futures::StreamExt as _;

use super::DockerRuntime;
use super::error::status_of;
use crate::runtime::common::{Reporter, registry_host};
use crate::runtime::{ImageSource, PullPolicy, RuntimeError, Step};

/// Docker Hub's server address in registry credentials.
const DOCKER_HUB: &str = "docker.io";

pub(super) struct ImageReady {
    pub(super) reference: String,
    pub(super) digest: Option<String>,
    pub(super) pulled: bool,
}

impl DockerRuntime {
    /// Makes sure the image is present and current.
    pub(super) async fn ensure_image(
        &self,
        src: &ImageSource,
        report: &Reporter<'_>,
    ) -> Result<ImageReady, RuntimeError> {
        let reference = src.reference.as_str();
        let local = match self.docker.inspect_image(reference).await {
            Ok(image) => Some(image),
            Err(e) if status_of(&e) == Some(404) => None,
            Err(e) => return Err(self.engine(format!("inspecting image {reference}"), e)),
        };
        let local_digests = local
            .as_ref()
            .and_then(|i| i.repo_digests.clone())
            .unwrap_or_default();
        if src.pull == PullPolicy::Never {
            return match local {
                Some(_) => Ok(ImageReady {
                    reference: reference.to_owned(),
                    digest: local_digests.first().and_then(|d| digest_part(d)),
                    pulled: false,
                }),
                None => Err(RuntimeError::ImageNotFound {
                    reference: reference.to_owned(),
                    detail: "not on this node, and its registry is never pulled from".into(),
                }),
            };
        }

        let credentials = docker_credentials(src);
        let remote = self
            .docker
            .inspect_registry_image(reference, credentials.clone())
            .await
            .map_err(|e| self.registry_error(reference, e))?;
        let digest = remote.descriptor.digest;
        if let Some(d) = &digest
            && local_digests
                .iter()
                .any(|l| digest_part(l).as_deref() == Some(d.as_str()))
        {
            report
                .emit(
                    Step::Pull,
                    None,
                    format!("{reference} is up to date ({})", short_digest(d)),
                )
                .await;
            return Ok(ImageReady {
                reference: reference.to_owned(),
                digest,
                pulled: false,
            });
        }

        report
            .emit(Step::Pull, None, format!("pulling {reference}"))
            .await;
        let options = CreateImageOptionsBuilder::new()
            .from_image(reference)
            .build();
        let mut stream = pin!(self.docker.create_image(Some(options), None, credentials));
        while let Some(item) = stream.next().await {
            item.map_err(|e| self.registry_error(reference, e))?;
        }
        report
            .emit(
                Step::Pull,
                None,
                match &digest {
                    Some(d) => format!("pulled {reference} ({})", short_digest(d)),
                    None => format!("pulled {reference}"),
                },
            )
            .await;
        Ok(ImageReady {
            reference: reference.to_owned(),
            digest,
            pulled: true,
        })
    }
}

fn docker_credentials(src: &ImageSource) -> Option<DockerCredentials> {
    src.credentials.as_ref().map(|c| DockerCredentials {
        username: Some(c.user.clone()),
        password: Some(c.password.clone()),
        serveraddress: Some(registry_host(&src.reference, DOCKER_HUB)),
        ..Default::default()
    })
}

/// `sha256:…` from `repo@sha256:…`.
fn digest_part(repo_digest: &str) -> Option<String> {
    repo_digest.rsplit_once('@').map(|(_, d)| d.to_owned())
}

fn short_digest(d: &str) -> &str {
    let hex = d.strip_prefix("sha256:").unwrap_or(d);
    hex.get(..12).unwrap_or(hex)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn registry_hosts_and_digests() {
        assert_eq!(
            registry_host("127.0.0.1:5000/a/b:1", DOCKER_HUB),
            "127.0.0.1:5000"
        );
        assert_eq!(registry_host("ghcr.io/org/app:1", DOCKER_HUB), "ghcr.io");
        assert_eq!(registry_host("localhost/app", DOCKER_HUB), "localhost");
        assert_eq!(registry_host("library/nginx:1", DOCKER_HUB), "docker.io");
        assert_eq!(registry_host("nginx", DOCKER_HUB), "docker.io");
        assert_eq!(
            digest_part("127.0.0.1:5000/a@sha256:abc").as_deref(),
            Some("sha256:abc")
        );
        assert_eq!(short_digest("sha256:0123456789abcdef"), "0123456789ab");
    }
}
