//! The live state of a team's containers: the list with each container's
//! restart count (from inspect), and the engine's event stream, which says
//! when to look again.

use std::collections::HashMap;

use bollard::query_parameters::EventsOptionsBuilder;
use futures::StreamExt as _;
use futures::stream::BoxStream;
use shoal_protocol::heartbeat::LiveContainer;

use super::DockerRuntime;
use super::state::container_info;
use crate::runtime::{LABEL_TEAM, RuntimeError, live_container};

impl DockerRuntime {
    pub(super) async fn run_live(&self, team: &str) -> Result<Vec<LiveContainer>, RuntimeError> {
        let mut out = Vec::new();
        for summary in self.list(team, None, false).await? {
            let Some(info) = container_info(&summary) else {
                continue;
            };
            // A container removed between the list and the inspect is gone:
            // it is left out, as the next look would.
            let restarts = match self.docker.inspect_container(&info.id, None).await {
                Ok(i) => i.restart_count.and_then(|r| u32::try_from(r).ok()),
                Err(_) => continue,
            };
            out.push(live_container(&info, restarts));
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The engine's container events of the team, as "something changed".
    pub(super) async fn run_changes(
        &self,
        team: &str,
    ) -> Result<BoxStream<'static, ()>, RuntimeError> {
        let filters = HashMap::from([
            ("type", vec!["container".to_owned()]),
            ("label", vec![format!("{LABEL_TEAM}={team}")]),
        ]);
        // The request starts when the stream is first polled: `since` now
        // makes the engine replay what happened in between, so no change
        // falls between asking and listening.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let since = format!("{}.{:09}", now.as_secs(), now.subsec_nanos());
        let options = EventsOptionsBuilder::new()
            .since(&since)
            .filters(&filters)
            .build();
        let events = self.docker.events(Some(options));
        // An error ends the stream: the caller asks for a new one.
        Ok(events
            .take_while(|e| futures::future::ready(e.is_ok()))
            .map(|_| ())
            .boxed())
    }
}

/// A reference as the engine lists it: Docker Hub's `docker.io/` and
/// `library/` left out, so `library/nginx:1` and `nginx:1` compare equal.
pub(super) fn normal_reference(r: &str) -> String {
    let r = r.strip_prefix("docker.io/").unwrap_or(r);
    r.strip_prefix("library/").unwrap_or(r).to_owned()
}

/// The repository of a tagged reference (what precedes the tag's `:`, the
/// `:` of a registry port excepted).
pub(super) fn repository(r: &str) -> Option<&str> {
    let slash = r.rfind('/').map_or(0, |i| i + 1);
    r[slash..].rfind(':').map(|i| &r[..slash + i])
}

impl DockerRuntime {
    pub(super) async fn run_prune_images(
        &self,
        repos: &std::collections::BTreeSet<String>,
        keep: &std::collections::BTreeSet<String>,
    ) -> Result<Vec<String>, RuntimeError> {
        use bollard::query_parameters::{ListImagesOptionsBuilder, RemoveImageOptionsBuilder};
        let repos: std::collections::BTreeSet<String> =
            repos.iter().map(|r| normal_reference(r)).collect();
        let keep: std::collections::BTreeSet<String> =
            keep.iter().map(|r| normal_reference(r)).collect();
        let images = self
            .docker
            .list_images(Some(ListImagesOptionsBuilder::new().all(false).build()))
            .await
            .map_err(|e| self.engine("listing images", e))?;
        let mut removed = Vec::new();
        for image in images {
            for tag in &image.repo_tags {
                let tag = normal_reference(tag);
                let ours = repository(&tag).is_some_and(|r| repos.contains(r));
                if !ours || keep.contains(&tag) {
                    continue;
                }
                // Never forced: an image a container uses stays.
                let options = RemoveImageOptionsBuilder::new().force(false).build();
                match self.docker.remove_image(&tag, Some(options), None).await {
                    Ok(_) => removed.push(tag),
                    Err(e) if matches!(super::error::status_of(&e), Some(404 | 409)) => {}
                    Err(e) => return Err(self.engine(format!("removing image {tag}"), e)),
                }
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_and_repositories() {
        assert_eq!(normal_reference("library/nginx:1"), "nginx:1");
        assert_eq!(normal_reference("docker.io/library/nginx:1"), "nginx:1");
        assert_eq!(
            repository("127.0.0.1:5000/shoal-test/busybox:1.0"),
            Some("127.0.0.1:5000/shoal-test/busybox")
        );
        assert_eq!(repository("nginx:1"), Some("nginx"));
        assert_eq!(repository("127.0.0.1:5000/app"), None);
    }
}
