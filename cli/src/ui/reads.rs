//! What the page may read: the daemon's team routes it needs, each named
//! here (never the network key of `bootstrap`, the team key's holders or
//! sealed values), and the live change feed.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::response::sse::Event;
use futures::{Stream, StreamExt as _};
use shoal_api::teams::TeamInfo;

use super::Ui;

/// How long one long poll of the change feed waits at the daemon for the
/// team's next op (the daemon's own limit): an idle page costs one small
/// local request this often.
pub const FEED_WAIT: Duration = Duration::from_secs(10);
/// How long the change feed waits before asking again a daemon that did
/// not answer.
const FEED_RETRY: Duration = Duration::from_secs(1);

/// A daemon read the page may make: each is read back as its `shoal-api`
/// type and sent on from that, so the page gets the fields the API
/// defines and nothing else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    Team,
    Status,
    Nodes,
    Members,
    Invites,
    Sync,
    Registries,
    Registry,
    Tags,
    Products,
    Product,
    Versions,
    Version,
    Rollback,
    Deployments,
    Deployment,
    Containers,
    Logs,
    Progress,
    Audit,
    AuditVerify,
}

/// The read `tail` (under `/v1/teams/<team>/`, percent-encoded) is, if
/// the page may make it.
pub fn read_of(tail: &str) -> Option<Read> {
    let segs: Vec<&str> = tail.split('/').collect();
    let clean = segs.iter().all(|s| {
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"%-._~".contains(&b))
            && *s != "."
            && *s != ".."
    });
    if !clean {
        return None;
    }
    Some(match segs.as_slice() {
        [""] => Read::Team,
        ["status"] => Read::Status,
        ["nodes"] => Read::Nodes,
        ["members"] => Read::Members,
        ["invites"] => Read::Invites,
        ["sync"] => Read::Sync,
        ["registries"] => Read::Registries,
        ["registries", _] => Read::Registry,
        ["registries", _, "tags"] => Read::Tags,
        ["products"] => Read::Products,
        ["products", _] => Read::Product,
        ["products", _, "versions"] => Read::Versions,
        ["products", _, "versions", _] => Read::Version,
        ["products", _, "rollback"] => Read::Rollback,
        ["deployments"] => Read::Deployments,
        ["deployments", _] => Read::Deployment,
        ["nodes", _, "containers"] => Read::Containers,
        ["nodes", _, "containers", _, "logs"] => Read::Logs,
        ["nodes", _, "deployments", _, "progress"] => Read::Progress,
        ["audit"] => Read::Audit,
        ["audit", "verify"] => Read::AuditVerify,
        _ => return None,
    })
}

/// Whether a query string may be passed on as is.
pub fn clean_query(q: &str) -> bool {
    q.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"%-._~=&+".contains(&b))
}

/// The change feed: `change` (data: the op count) when it opens and
/// whenever the team's op count moves, `daemon` (data: the error) when the
/// daemon stops answering and `daemon` with no data when it answers again.
/// It is driven by the daemon's change counter: each step is one long
/// poll (`GET /v1/teams/<team>?unless_ops=N`) that the daemon answers as
/// soon as an op lands, or after [`FEED_WAIT`] unchanged. It ends when the
/// page goes away (the stream is dropped) or `shoal ui` stops.
pub fn feed(ui: Arc<Ui>) -> impl Stream<Item = Result<Event, Infallible>> {
    struct State {
        ui: Arc<Ui>,
        last: Option<u64>,
        down: bool,
    }
    let stop = ui.stop.clone();
    let state = State {
        ui,
        last: None,
        down: false,
    };
    futures::stream::unfold(state, |mut st| async move {
        loop {
            let route = match st.last {
                Some(n) => format!(
                    "{}?unless_ops={n}&wait_ms={}",
                    st.ui.base,
                    FEED_WAIT.as_millis()
                ),
                None => st.ui.base.clone(),
            };
            match st.ui.ctx.client.try_get::<TeamInfo>(&route).await {
                Ok(info) => {
                    if st.down {
                        st.down = false;
                        // Asked again at once: ops may have landed meanwhile.
                        st.last = None;
                        return Some((Ok(Event::default().event("daemon").data("")), st));
                    }
                    if st.last != Some(info.ops) {
                        st.last = Some(info.ops);
                        let e = Event::default().event("change").data(info.ops.to_string());
                        return Some((Ok(e), st));
                    }
                }
                Err(e) => {
                    tokio::time::sleep(FEED_RETRY).await;
                    if !st.down {
                        st.down = true;
                        let e = Event::default().event("daemon").data(e.to_string());
                        return Some((Ok(e), st));
                    }
                }
            }
        }
    })
    .take_until(stop.cancelled_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_named_reads_pass() {
        for ok in [
            "",
            "status",
            "deployments",
            "deployments/3f2a",
            "products/my%20shop/versions/1.0.0",
            "nodes/b/containers/prod-web/logs",
            "audit/verify",
        ] {
            assert!(read_of(ok).is_some(), "{ok}");
        }
        for no in [
            "bootstrap",
            "keys",
            "deployments/3f2a/sealed",
            "ids",
            "prepare",
            "products/../bootstrap",
            "products/a b",
            "products/a/versions/b/c",
        ] {
            assert_eq!(read_of(no), None, "{no}");
        }
        assert_eq!(read_of("products/a/rollback"), Some(Read::Rollback));
        assert!(clean_query("node=b&prefix=prod"));
        assert!(!clean_query("a=b#c"));
        assert!(!clean_query("a=b\r\nX: y"));
    }
}
