//! A blocking client for a node's HTTP API ([`crate::http`]): what `tasklog cluster` drives its
//! demo with and what the process tests use. Plain HTTP/1.1 (ureq); every call has a deadline;
//! an error answer is decoded into [`ClientError::Api`] with the node's reason.

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tasklog_raft::NodeId;
use tasklog_raft::node::NodeStatus;

use crate::http::{
    AddLearnerRequest, AppendRequest, CreateRequest, GetResponse, TransferRequest, VotersRequest,
    WriteResponse,
};

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The node answered with an error.
    #[error("HTTP {status} {reason}: {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// The `ErrorInfo` reason (`TASK_NOT_FOUND`, `VERSION_CONFLICT`, `NO_LEADER`, …).
        reason: String,
        /// The message.
        message: String,
    },
    /// No answer: connection refused, reset, timed out.
    #[error("{0}")]
    Transport(String),
    /// An answer that is not what the route returns.
    #[error("bad answer: {0}")]
    Decode(String),
}

impl ClientError {
    /// The `ErrorInfo` reason of an error answer.
    pub fn reason(&self) -> Option<&str> {
        match self {
            ClientError::Api { reason, .. } => Some(reason),
            _ => None,
        }
    }
}

/// A node's HTTP API.
#[derive(Clone)]
pub struct Client {
    agent: ureq::Agent,
    base: String,
}

impl Client {
    /// Talks to the node at `base_url` (`http://127.0.0.1:8001`), each call bounded by
    /// `timeout`.
    pub fn new(base_url: impl Into<String>, timeout: Duration) -> Self {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .build()
            .new_agent();
        Client {
            agent,
            base: base_url.into().trim_end_matches('/').to_owned(),
        }
    }

    /// The base URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Whether `/healthz` answers 200.
    pub fn healthy(&self) -> bool {
        self.agent
            .get(format!("{}/healthz", self.base))
            .call()
            .is_ok_and(|response| response.status() == 200)
    }

    /// The node's status.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub fn status(&self) -> Result<NodeStatus, ClientError> {
        self.get_json("/tasklog/v1/status")
    }

    /// Creates a task.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub fn create(&self, request: &CreateRequest) -> Result<WriteResponse, ClientError> {
        self.send("POST", "/tasklog/v1/tasks", request)
    }

    /// Appends events to a task.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub fn append(
        &self,
        task_id: &str,
        request: &AppendRequest,
    ) -> Result<WriteResponse, ClientError> {
        let path = format!("/tasklog/v1/tasks/{}/events", encode_segment(task_id));
        self.send("POST", &path, request)
    }

    /// Reads a task; `query` is the URL query without `?` (`atLeastPosition=12`, may be empty).
    ///
    /// # Errors
    /// See [`ClientError`].
    pub fn get(&self, task_id: &str, query: &str) -> Result<GetResponse, ClientError> {
        let mut path = format!("/tasklog/v1/tasks/{}", encode_segment(task_id));
        if !query.is_empty() {
            path.push('?');
            path.push_str(query);
        }
        self.get_json(&path)
    }

    /// Adds a learner (leader only).
    ///
    /// # Errors
    /// See [`ClientError`].
    pub fn add_learner(&self, request: &AddLearnerRequest) -> Result<NodeStatus, ClientError> {
        self.send("POST", "/tasklog/v1/cluster/learners", request)
    }

    /// Sets the voters (leader only).
    ///
    /// # Errors
    /// See [`ClientError`].
    pub fn set_voters(&self, request: &VotersRequest) -> Result<NodeStatus, ClientError> {
        self.send("PUT", "/tasklog/v1/cluster/voters", request)
    }

    /// Removes a node (leader only).
    ///
    /// # Errors
    /// See [`ClientError`].
    pub fn remove_node(&self, id: NodeId) -> Result<NodeStatus, ClientError> {
        let response = self
            .agent
            .delete(format!("{}/tasklog/v1/cluster/nodes/{id}", self.base))
            .call()
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        decode(response)
    }

    /// Hands leadership to `to` (leader only).
    ///
    /// # Errors
    /// See [`ClientError`].
    pub fn transfer_leader(&self, to: NodeId) -> Result<NodeStatus, ClientError> {
        self.send(
            "POST",
            "/tasklog/v1/cluster/leader",
            &TransferRequest { to },
        )
    }

    fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let response = self
            .agent
            .get(format!("{}{path}", self.base))
            .call()
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        decode(response)
    }

    fn send<B: Serialize, T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let url = format!("{}{path}", self.base);
        let request = match method {
            "PUT" => self.agent.put(url),
            _ => self.agent.post(url),
        };
        let response = request
            .send_json(body)
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        decode(response)
    }
}

fn decode<T: DeserializeOwned>(
    mut response: ureq::http::Response<ureq::Body>,
) -> Result<T, ClientError> {
    let status = response.status().as_u16();
    let text = response
        .body_mut()
        .read_to_string()
        .map_err(|e| ClientError::Transport(e.to_string()))?;
    if (200..300).contains(&status) {
        return serde_json::from_str(&text)
            .map_err(|e| ClientError::Decode(format!("{e}: {text}")));
    }
    let body: serde_json::Value = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
    let error = &body["error"];
    Err(ClientError::Api {
        status,
        reason: error["details"][0]["reason"]
            .as_str()
            .unwrap_or("UNKNOWN")
            .to_owned(),
        message: error["message"].as_str().unwrap_or(&text).to_owned(),
    })
}

/// Percent-encodes a path segment (everything but RFC 3986 unreserved characters).
fn encode_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(encode_segment("task-1.a_b~"), "task-1.a_b~");
        assert_eq!(encode_segment("a/b c?"), "a%2Fb%20c%3F");
        assert_eq!(encode_segment("é"), "%C3%A9");
    }
}
