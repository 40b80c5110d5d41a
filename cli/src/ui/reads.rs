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

/// How often the change feed asks the daemon for the team's op count and
/// heads (one small local request).
pub const POLL: Duration = Duration::from_millis(500);
/// Every this many polls the feed sends a `tick` (node liveness and
/// container state change without an op).
const TICK_EVERY: u32 = 6;

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

/// The change feed: `change` (data: the op count) whenever the team's op
/// count or heads move, `tick` every few seconds, `daemon` (data: the
/// error) when the daemon stops answering and `daemon` with no data when
/// it answers again. It ends when the page goes away (the stream is
/// dropped) or `shoal ui` stops.
pub fn feed(ui: Arc<Ui>) -> impl Stream<Item = Result<Event, Infallible>> {
    struct State {
        ui: Arc<Ui>,
        poll: tokio::time::Interval,
        polls: u32,
        last: Option<(u64, Vec<String>)>,
        down: bool,
    }
    let stop = ui.stop.clone();
    let state = State {
        poll: tokio::time::interval(POLL),
        ui,
        polls: 0,
        last: None,
        down: false,
    };
    futures::stream::unfold(state, |mut st| async move {
        loop {
            st.poll.tick().await;
            st.polls = st.polls.wrapping_add(1);
            match st.ui.ctx.client.try_get::<TeamInfo>(&st.ui.base).await {
                Ok(info) => {
                    if st.down {
                        st.down = false;
                        return Some((Ok(Event::default().event("daemon").data("")), st));
                    }
                    let now = (info.ops, info.heads);
                    if st.last.as_ref() != Some(&now) {
                        let ops = now.0;
                        st.last = Some(now);
                        let e = Event::default().event("change").data(ops.to_string());
                        return Some((Ok(e), st));
                    }
                }
                Err(e) if !st.down => {
                    st.down = true;
                    let e = Event::default().event("daemon").data(e.to_string());
                    return Some((Ok(e), st));
                }
                Err(_) => {}
            }
            if st.polls % TICK_EVERY == 0 {
                return Some((Ok(Event::default().event("tick").data("")), st));
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
