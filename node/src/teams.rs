//! The running teams as the rest of the daemon sees them: the live team
//! table ([`TeamMap`]) and the handle to the service that starts and stops
//! teams ([`ServiceHandle`]). The service actor (`service.rs`) owns the
//! teams and sits above the control API; the API and the metrics endpoint
//! only need these types, so they live here, below both.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use shoal_protocol::action::NewMember;
use shoal_protocol::ticket::{Ticket, TicketError};
use shoal_protocol::{Op, OpBody, TeamId};
use tokio::sync::{mpsc, oneshot};

use crate::daemon::DaemonError;
use crate::join::JoinError;
use crate::mesh::{MeshError, MeshHandle};
use crate::query::QueryHandler;
use crate::runtime::RuntimeError;
use crate::socket::ApiError;
use crate::sync::{SyncError, SyncHandle};

/// One team the daemon runs.
#[derive(Clone)]
pub struct TeamEntry {
    /// The team's name when it started (the live name is in the state).
    pub name: String,
    pub sync: SyncHandle,
    pub mesh: MeshHandle,
    /// The team's private-network key (for tickets).
    pub psk: [u8; 32],
    /// This node's listen addresses on the team's mesh, ending in `/p2p/..`.
    pub addrs: Vec<String>,
    /// Answers questions about this node's containers of the team.
    pub queries: QueryHandler,
    /// This node's live state for the team, as its heartbeats carry it.
    pub live: tokio::sync::watch::Receiver<Option<Box<shoal_protocol::heartbeat::Live>>>,
}

impl std::fmt::Debug for TeamEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TeamEntry")
            .field("name", &self.name)
            .field("addrs", &self.addrs)
            .finish_non_exhaustive()
    }
}

/// The live table of running teams, shared with the control API.
pub type TeamMap = Arc<RwLock<BTreeMap<TeamId, TeamEntry>>>;

/// Errors of the service.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Daemon(#[from] DaemonError),
    #[error(transparent)]
    Mesh(#[from] MeshError),
    #[error(transparent)]
    Sync(#[from] SyncError),
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Ticket(#[from] TicketError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("cannot join: {0}")]
    Join(#[from] JoinError),
    #[error("this node is already in team {0}: see `shoal team list`")]
    AlreadyIn(String),
    #[error("{0}")]
    Invalid(String),
    #[error(
        "no join of team {0} is in progress (it may have timed out): run `shoal team join` again"
    )]
    NoPendingJoin(String),
    #[error("the daemon is shutting down")]
    Closed,
    #[error("joining took too long ({0}): check that the ticket's node is up, then try again")]
    Timeout(&'static str),
}

pub(crate) type Reply<T> = oneshot::Sender<Result<T, ServiceError>>;

/// What a join did, or still needs.
#[derive(Debug, Clone)]
pub struct JoinStep {
    pub team: TeamId,
    pub name: String,
    /// For a member join: the op body for the member's CLI to sign and hand
    /// to [`ServiceHandle::finish_join`]. `None` once joined.
    pub body: Option<OpBody>,
}

#[derive(Debug)]
pub(crate) enum Command {
    GenesisBody {
        name: String,
        owner: NewMember,
        reply: Reply<OpBody>,
    },
    CreateTeam {
        op: Box<Op>,
        reply: Reply<(TeamId, String)>,
    },
    Join {
        ticket: Box<Ticket>,
        member: Option<NewMember>,
        reply: Reply<JoinStep>,
    },
    FinishJoin {
        team: TeamId,
        op: Box<Op>,
        reply: Reply<JoinStep>,
    },
}

/// A cloneable handle to the service.
#[derive(Debug, Clone)]
pub struct ServiceHandle {
    pub(crate) commands: mpsc::Sender<Command>,
}

impl ServiceHandle {
    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, ServiceError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| ServiceError::Closed)?;
        rx.await.map_err(|_| ServiceError::Closed)?
    }

    /// The unsigned genesis op of a new team owned by `owner`, with this
    /// node as its first node.
    pub async fn genesis_body(
        &self,
        name: String,
        owner: NewMember,
    ) -> Result<OpBody, ServiceError> {
        self.call(|reply| Command::GenesisBody { name, owner, reply })
            .await
    }

    /// Creates a team from its signed genesis op and starts running it.
    pub async fn create_team(&self, op: Op) -> Result<(TeamId, String), ServiceError> {
        self.call(|reply| Command::CreateTeam {
            op: Box::new(op),
            reply,
        })
        .await
    }

    /// Redeems a ticket. A node ticket (no `member`) completes at once; a
    /// member ticket returns the body of the member's join op to sign.
    pub async fn join(
        &self,
        ticket: Ticket,
        member: Option<NewMember>,
    ) -> Result<JoinStep, ServiceError> {
        self.call(|reply| Command::Join {
            ticket: Box::new(ticket),
            member,
            reply,
        })
        .await
    }

    /// Completes a member join with the signed op.
    pub async fn finish_join(&self, team: TeamId, op: Op) -> Result<JoinStep, ServiceError> {
        self.call(|reply| Command::FinishJoin {
            team,
            op: Box::new(op),
            reply,
        })
        .await
    }
}
