//! The node's HTTP surface (axum), today: health, status, the store API that writes and reads
//! tasks on the replicated log from any node, and membership operations. The A2A bindings
//! (JSON-RPC, HTTP+JSON, SSE) and the worker API join this router next (DESIGN.md §5).
//!
//! | route | what |
//! |---|---|
//! | `GET /healthz` | 200 while the process serves |
//! | `GET /readyz` | 200 when the node knows a leader and has applied what it knows committed, else 503 |
//! | `GET /tasklog/v1/status` | [`NodeStatus`]: role, term, leader, positions, members |
//! | `POST /tasklog/v1/tasks` | create a task ([`CreateRequest`]) → [`WriteResponse`] (201) |
//! | `POST /tasklog/v1/tasks/{id}/events` | append events ([`AppendRequest`]) → [`WriteResponse`] |
//! | `GET /tasklog/v1/tasks/{id}` | the task, its version and the applied position ([`GetQuery`]) |
//! | `POST /tasklog/v1/cluster/learners` | add a learner ([`AddLearnerRequest`]), leader only |
//! | `PUT /tasklog/v1/cluster/voters` | set the voters ([`VotersRequest`]), leader only |
//! | `DELETE /tasklog/v1/cluster/nodes/{id}` | remove a node, leader only |
//! | `POST /tasklog/v1/cluster/leader` | hand leadership to another node ([`TransferRequest`]) |
//!
//! Writes on a follower go to the leader (over the nodes' mutual-TLS link); without a leader
//! they wait for one up to a bound, then get 503 with `Retry-After`. Every error is the
//! google.rpc.Status JSON form A2A's HTTP binding uses, with an `ErrorInfo` naming the reason
//! ([`ApiError`]). The membership routes change the cluster: serve this port on a private network
//! only (there is no client authentication yet).

use std::collections::BTreeSet;
use std::time::Duration;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tasklog_engine::event::Event;
use tasklog_engine::model::{Artifact, Json as JsonValue, Message, Task, TaskState, TaskStatus};
use tasklog_engine::{NewTask, Position, Write, Written};
use tasklog_raft::forward::Forwarder;
use tasklog_raft::node::NodeStatus;
use tasklog_raft::{Node, NodeError, NodeId};

/// Largest request body: an event batch is at most 1 MiB archived
/// ([`tasklog_engine::limits::EVENT_BATCH_BYTES_MAX`]); its JSON (base64 for raw bytes) is larger.
pub const BODY_BYTES_MAX: usize = 4 * 1024 * 1024;

/// How long a read waits for `atLeastPosition` by default, and at most.
const WAIT_DEFAULT: Duration = Duration::from_secs(5);
const WAIT_MAX: Duration = Duration::from_secs(30);

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    forwarder: Forwarder,
}

impl AppState {
    /// Serves `forwarder`'s node.
    pub fn new(forwarder: Forwarder) -> Self {
        AppState { forwarder }
    }

    fn node(&self) -> &Node {
        self.forwarder.node()
    }
}

/// The router of a node.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/tasklog/v1/status", get(status))
        .route("/tasklog/v1/tasks", post(create))
        .route("/tasklog/v1/tasks/{id}", get(get_task))
        .route("/tasklog/v1/tasks/{id}/events", post(append))
        .route("/tasklog/v1/cluster/learners", post(add_learner))
        .route("/tasklog/v1/cluster/voters", put(set_voters))
        .route("/tasklog/v1/cluster/nodes/{id}", delete(remove_node))
        .route("/tasklog/v1/cluster/leader", post(transfer_leader))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(BODY_BYTES_MAX))
        .with_state(state)
}

/// A new task.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateRequest {
    /// Insert-if-absent id; omitted: the node assigns a UUID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    /// Omitted: the node assigns a UUID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_id: Option<String>,
    /// First state; omitted: `TASK_STATE_SUBMITTED`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<TaskState>,
    /// The message that created the task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<Message>,
    /// Free-form metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<JsonValue>,
}

/// Events for one task, all or none.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AppendRequest {
    /// Only if the task is at exactly this version (optimistic concurrency).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_version: Option<u64>,
    /// The events, at least one.
    pub events: Vec<EventBody>,
}

/// One event, as JSON: exactly one member.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum EventBody {
    /// A new status (its previous message moves into the history).
    Status(TaskStatus),
    /// An artifact added, replaced or extended.
    Artifact {
        /// The artifact or the parts to append.
        artifact: Artifact,
        /// Extend the artifact with the same id.
        #[serde(default)]
        append: bool,
        /// The last chunk of a streamed artifact.
        #[serde(default)]
        last_chunk: bool,
    },
    /// A message joins the history.
    Message(Message),
    /// The metadata is replaced.
    Metadata(JsonValue),
}

impl From<EventBody> for Event {
    fn from(body: EventBody) -> Self {
        match body {
            EventBody::Status(status) => Event::Status(status),
            EventBody::Artifact {
                artifact,
                append,
                last_chunk,
            } => Event::Artifact {
                artifact,
                append,
                last_chunk,
            },
            EventBody::Message(message) => Event::Message(message),
            EventBody::Metadata(metadata) => Event::Metadata(metadata),
        }
    }
}

/// What a write did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WriteResponse {
    /// The task.
    pub task_id: String,
    /// Its version after the write.
    pub version: u64,
    /// The write's log position: pass it as `atLeastPosition` to read your write on any node.
    pub position: u64,
}

impl From<Written> for WriteResponse {
    fn from(written: Written) -> Self {
        WriteResponse {
            task_id: written.task_id,
            version: written.version,
            position: written.position.get(),
        }
    }
}

/// `GET /tasklog/v1/tasks/{id}` query.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GetQuery {
    /// Most recent messages to keep.
    pub history_length: Option<usize>,
    /// Read your writes: wait until this node has applied this position (from a write's
    /// response) first.
    pub at_least_position: Option<u64>,
    /// `local` (default: this node's applied state) or `linearizable` (confirmed with the leader
    /// first; every write acknowledged before the request is seen).
    pub consistency: Option<String>,
    /// How long `atLeastPosition` may wait, in milliseconds (default 5000, at most 30000).
    pub wait_ms: Option<u64>,
}

/// A task read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetResponse {
    /// The task, as A2A `GetTask` returns it.
    pub task: Task,
    /// Its version (for `expectedVersion`).
    pub version: u64,
    /// The position this node had applied when it read.
    pub applied_position: u64,
}

/// `POST /tasklog/v1/cluster/learners`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AddLearnerRequest {
    /// The new node's id.
    pub id: NodeId,
    /// Its QUIC address.
    pub addr: String,
    /// Answer only once it has caught up.
    #[serde(default)]
    pub wait: bool,
}

/// `PUT /tasklog/v1/cluster/voters`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VotersRequest {
    /// The voters from now on (each already a member).
    pub voters: BTreeSet<NodeId>,
    /// Voters left out stay as learners (else they leave).
    #[serde(default)]
    pub keep_as_learners: bool,
}

/// `POST /tasklog/v1/cluster/leader`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TransferRequest {
    /// The node to lead.
    pub to: NodeId,
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<AppState>) -> Response {
    let status = state.node().status();
    let ready = status.leader.is_some() && status.applied_position >= status.committed_position;
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(status)).into_response()
}

async fn status(State(state): State<AppState>) -> Json<NodeStatus> {
    Json(state.node().status())
}

async fn create(
    State(state): State<AppState>,
    body: Result<Json<CreateRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<WriteResponse>), ApiError> {
    let Json(request) = body.map_err(ApiError::body)?;
    let write = Write::Create(NewTask {
        task_id: request.task_id,
        context_id: request.context_id,
        state: request.state.unwrap_or(TaskState::Submitted),
        message: request.message,
        metadata: request.metadata,
    });
    let written = state.forwarder.write(write).await?;
    Ok((StatusCode::CREATED, Json(written.into())))
}

async fn append(
    State(state): State<AppState>,
    task_id: Result<Path<String>, PathRejection>,
    body: Result<Json<AppendRequest>, JsonRejection>,
) -> Result<Json<WriteResponse>, ApiError> {
    let Path(task_id) = task_id.map_err(ApiError::path)?;
    let Json(request) = body.map_err(ApiError::body)?;
    let write = Write::Append {
        task_id,
        expected_version: request.expected_version,
        events: request.events.into_iter().map(Event::from).collect(),
    };
    Ok(Json(state.forwarder.write(write).await?.into()))
}

async fn get_task(
    State(state): State<AppState>,
    task_id: Result<Path<String>, PathRejection>,
    query: Result<Query<GetQuery>, QueryRejection>,
) -> Result<Json<GetResponse>, ApiError> {
    let Path(task_id) = task_id.map_err(ApiError::path)?;
    let Query(query) = query.map_err(|e| ApiError::invalid(e.body_text()))?;
    let node = state.node();
    match query.consistency.as_deref() {
        None | Some("local") => {}
        Some("linearizable") => {
            state.forwarder.read_point().await?;
        }
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "consistency {other:?}: use local or linearizable"
            )));
        }
    }
    if let Some(position) = query.at_least_position {
        let wait = query
            .wait_ms
            .map_or(WAIT_DEFAULT, Duration::from_millis)
            .min(WAIT_MAX);
        node.wait_applied(Position::new(position), wait).await?;
    }
    let store = node.store();
    // The version read on both sides of the fold: equal means the task did not change between.
    for _ in 0..8 {
        let applied_position = node.applied_position();
        let before = store.version(&task_id);
        let task = store
            .get(&task_id, query.history_length)
            .map_err(NodeError::from)?;
        let after = store.version(&task_id);
        if let (Some(version), true) = (before, before == after) {
            return Ok(Json(GetResponse {
                task,
                version,
                applied_position,
            }));
        }
    }
    Err(ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "UNAVAILABLE",
        "BUSY",
        format!("task {task_id} changed during every read; try again"),
    ))
}

async fn add_learner(
    State(state): State<AppState>,
    body: Result<Json<AddLearnerRequest>, JsonRejection>,
) -> Result<Json<NodeStatus>, ApiError> {
    let Json(request) = body.map_err(ApiError::body)?;
    request
        .addr
        .parse::<std::net::SocketAddr>()
        .map_err(|e| ApiError::invalid(format!("addr {:?}: {e}", request.addr)))?;
    state
        .node()
        .add_learner(request.id, request.addr, request.wait)
        .await?;
    Ok(Json(state.node().status()))
}

async fn set_voters(
    State(state): State<AppState>,
    body: Result<Json<VotersRequest>, JsonRejection>,
) -> Result<Json<NodeStatus>, ApiError> {
    let Json(request) = body.map_err(ApiError::body)?;
    if request.voters.is_empty() {
        return Err(ApiError::invalid("voters must not be empty"));
    }
    state
        .node()
        .change_voters(request.voters, request.keep_as_learners)
        .await?;
    Ok(Json(state.node().status()))
}

async fn remove_node(
    State(state): State<AppState>,
    id: Result<Path<NodeId>, PathRejection>,
) -> Result<Json<NodeStatus>, ApiError> {
    let Path(id) = id.map_err(ApiError::path)?;
    state.node().remove_nodes(BTreeSet::from([id])).await?;
    Ok(Json(state.node().status()))
}

async fn transfer_leader(
    State(state): State<AppState>,
    body: Result<Json<TransferRequest>, JsonRejection>,
) -> Result<Json<NodeStatus>, ApiError> {
    let Json(request) = body.map_err(ApiError::body)?;
    let status = state.node().status();
    if !status.voters.contains(&request.to) {
        return Err(ApiError::invalid(format!(
            "node {} is not a voter (voters: {:?})",
            request.to, status.voters
        )));
    }
    state.node().transfer_leader(request.to).await?;
    Ok(Json(state.node().status()))
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "UNIMPLEMENTED",
        "METHOD_NOT_ALLOWED",
        "this route does not take that method",
    )
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        "NO_SUCH_ROUTE",
        "no such route",
    )
}

/// An error answer: HTTP status, google.rpc.Status body with one `ErrorInfo`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code_name: &'static str,
    reason: &'static str,
    message: String,
    metadata: serde_json::Map<String, serde_json::Value>,
    retry_after: Option<u64>,
}

impl ApiError {
    fn new(
        status: StatusCode,
        code_name: &'static str,
        reason: &'static str,
        message: impl Into<String>,
    ) -> Self {
        ApiError {
            status,
            code_name,
            reason,
            message: message.into(),
            metadata: serde_json::Map::new(),
            retry_after: None,
        }
    }

    fn invalid(message: impl Into<String>) -> Self {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "INVALID_ARGUMENT",
            message,
        )
    }

    fn body(rejection: JsonRejection) -> Self {
        let status = rejection.status();
        let mut error = ApiError::invalid(rejection.body_text());
        if status == StatusCode::UNSUPPORTED_MEDIA_TYPE {
            error.status = status;
            error.reason = "CONTENT_TYPE_NOT_SUPPORTED";
        } else if status == StatusCode::PAYLOAD_TOO_LARGE {
            error.status = status;
            error.reason = "TOO_LARGE";
        }
        error
    }

    fn path(rejection: PathRejection) -> Self {
        ApiError::invalid(rejection.body_text())
    }

    fn with(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.metadata.insert(key.to_owned(), value.into());
        self
    }
}

impl From<NodeError> for ApiError {
    fn from(error: NodeError) -> Self {
        use tasklog_engine::Error;
        let message = error.to_string();
        match error {
            NodeError::Rejected(Error::TaskNotFound { task_id }) => ApiError::new(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                "TASK_NOT_FOUND",
                message,
            )
            .with("taskId", task_id),
            NodeError::Rejected(Error::TaskExists { task_id }) => ApiError::new(
                StatusCode::CONFLICT,
                "ALREADY_EXISTS",
                "TASK_EXISTS",
                message,
            )
            .with("taskId", task_id),
            NodeError::Rejected(Error::VersionConflict {
                task_id,
                expected,
                actual,
            }) => ApiError::new(StatusCode::CONFLICT, "ABORTED", "VERSION_CONFLICT", message)
                .with("taskId", task_id)
                .with("expectedVersion", expected.to_string())
                .with("actualVersion", actual.to_string()),
            NodeError::Rejected(Error::TaskTerminal { task_id, .. }) => ApiError::new(
                StatusCode::BAD_REQUEST,
                "FAILED_PRECONDITION",
                "TASK_TERMINAL",
                message,
            )
            .with("taskId", task_id),
            NodeError::Rejected(Error::TooLarge { .. }) => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "INVALID_ARGUMENT",
                "TOO_LARGE",
                message,
            ),
            NodeError::Rejected(Error::InvalidEvent { .. } | Error::InvalidArgument(_)) => {
                ApiError::invalid(message)
            }
            NodeError::Rejected(Error::Closed) => {
                let mut error = ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "UNAVAILABLE",
                    "CLOSING",
                    message,
                );
                error.retry_after = Some(1);
                error
            }
            NodeError::Rejected(_) | NodeError::Raft(_) => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL",
                "INTERNAL",
                message,
            ),
            NodeError::NotLeader { leader, .. } => {
                let mut error = ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "UNAVAILABLE",
                    "NO_LEADER",
                    message,
                );
                if let Some(leader) = leader {
                    error.reason = "NOT_LEADER";
                    error = error.with("leader", leader.to_string());
                }
                error.retry_after = Some(1);
                error
            }
            NodeError::Unknown => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
                "OUTCOME_UNKNOWN",
                format!("{message}; read the task to learn whether it was written"),
            ),
            NodeError::Timeout(_) => ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "DEADLINE_EXCEEDED",
                "NOT_APPLIED_YET",
                message,
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({
            "error": {
                "code": self.status.as_u16(),
                "status": self.code_name,
                "message": self.message,
                "details": [{
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": self.reason,
                    "domain": "tasklog",
                    "metadata": self.metadata,
                }],
            }
        });
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}
