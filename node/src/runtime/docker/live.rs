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
        let options = EventsOptionsBuilder::new().filters(&filters).build();
        let events = self.docker.events(Some(options));
        // An error ends the stream: the caller asks for a new one.
        Ok(events
            .take_while(|e| futures::future::ready(e.is_ok()))
            .map(|_| ())
            .boxed())
    }
}
