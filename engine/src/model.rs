//! The A2A 1.0 objects the task log keeps (`../shared/A2A.md` §2): one set of types that derive
//! serde for the JSON wire form (camelCase, `TASK_STATE_*` and `ROLE_*` enum names, RFC 3339
//! timestamps, base64 bytes) and rkyv for the log.
//!
//! Free-form JSON (`metadata`, a data part's value) is kept as its JSON text ([`Json`]), which
//! archives as a string and serializes back as the same JSON, not as a quoted string.

use std::fmt;

use base64::Engine as _;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A task's lifecycle state. `Unspecified` is never stored or emitted (A2A.md §1.1).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[rkyv(derive(Debug, PartialEq, Eq, Clone, Copy))]
pub enum TaskState {
    /// Invalid; rejected wherever it appears.
    #[serde(rename = "TASK_STATE_UNSPECIFIED")]
    Unspecified,
    /// Accepted, not started.
    #[serde(rename = "TASK_STATE_SUBMITTED")]
    Submitted,
    /// Being worked on.
    #[serde(rename = "TASK_STATE_WORKING")]
    Working,
    /// Finished successfully (terminal).
    #[serde(rename = "TASK_STATE_COMPLETED")]
    Completed,
    /// Finished with an error (terminal).
    #[serde(rename = "TASK_STATE_FAILED")]
    Failed,
    /// Canceled (terminal).
    #[serde(rename = "TASK_STATE_CANCELED")]
    Canceled,
    /// Waiting for the client (interrupted).
    #[serde(rename = "TASK_STATE_INPUT_REQUIRED")]
    InputRequired,
    /// Refused by the agent (terminal).
    #[serde(rename = "TASK_STATE_REJECTED")]
    Rejected,
    /// Waiting for authentication (interrupted).
    #[serde(rename = "TASK_STATE_AUTH_REQUIRED")]
    AuthRequired,
}

impl TaskState {
    /// Completed, failed, canceled or rejected: nothing may follow.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Completed | TaskState::Failed | TaskState::Canceled | TaskState::Rejected
        )
    }

    /// Input-required or auth-required: the task waits for the client.
    pub fn is_interrupted(self) -> bool {
        matches!(self, TaskState::InputRequired | TaskState::AuthRequired)
    }

    /// The proto name, as on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Unspecified => "TASK_STATE_UNSPECIFIED",
            TaskState::Submitted => "TASK_STATE_SUBMITTED",
            TaskState::Working => "TASK_STATE_WORKING",
            TaskState::Completed => "TASK_STATE_COMPLETED",
            TaskState::Failed => "TASK_STATE_FAILED",
            TaskState::Canceled => "TASK_STATE_CANCELED",
            TaskState::InputRequired => "TASK_STATE_INPUT_REQUIRED",
            TaskState::Rejected => "TASK_STATE_REJECTED",
            TaskState::AuthRequired => "TASK_STATE_AUTH_REQUIRED",
        }
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who sent a message.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub enum Role {
    /// Invalid.
    #[serde(rename = "ROLE_UNSPECIFIED")]
    Unspecified,
    /// The client.
    #[serde(rename = "ROLE_USER")]
    User,
    /// The agent.
    #[serde(rename = "ROLE_AGENT")]
    Agent,
}

/// Milliseconds since the Unix epoch, UTC; RFC 3339 with millisecond precision and `Z` on the wire.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The wall clock now, in milliseconds since the epoch (0 before it).
    pub fn now() -> Self {
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        Timestamp(millis)
    }

    /// Formats as RFC 3339 (`2026-11-21T16:20:00.123Z`).
    pub fn to_rfc3339(self) -> String {
        let nanos = i128::from(self.0) * 1_000_000;
        match time::OffsetDateTime::from_unix_timestamp_nanos(nanos) {
            Ok(at) => {
                let (year, month, day) = (at.year(), u8::from(at.month()), at.day());
                let (hour, minute, second, milli) =
                    (at.hour(), at.minute(), at.second(), at.millisecond());
                format!(
                    "{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{milli:03}Z"
                )
            }
            Err(_) => "1970-01-01T00:00:00.000Z".to_string(),
        }
    }

    /// Parses RFC 3339 (any offset; sub-millisecond digits are dropped).
    ///
    /// # Errors
    /// A message naming the text when it is not RFC 3339.
    pub fn parse_rfc3339(text: &str) -> Result<Self, String> {
        let at = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
            .map_err(|e| format!("{text:?} is not an RFC 3339 timestamp: {e}"))?;
        i64::try_from(at.unix_timestamp_nanos() / 1_000_000)
            .map(Timestamp)
            .map_err(|_| format!("{text:?} is out of range"))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Timestamp::parse_rfc3339(&text).map_err(D::Error::custom)
    }
}

/// Any JSON value, kept as its compact text.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Json(String);

impl Json {
    /// Wraps JSON text after checking that it parses.
    ///
    /// # Errors
    /// The parse error.
    pub fn from_text(text: &str) -> Result<Self, serde_json::Error> {
        let raw: Box<serde_json::value::RawValue> = serde_json::from_str(text)?;
        Ok(Json(raw.get().to_string()))
    }

    /// From a `serde_json::Value`.
    pub fn from_value(value: &serde_json::Value) -> Self {
        Json(value.to_string())
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Serialize for Json {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let raw: &serde_json::value::RawValue =
            serde_json::from_str(&self.0).map_err(serde::ser::Error::custom)?;
        raw.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Box::<serde_json::value::RawValue>::deserialize(deserializer)?;
        Ok(Json(raw.get().to_string()))
    }
}

/// What a part holds: exactly one of text, raw bytes, a URL or a JSON value.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum PartContent {
    /// Text.
    Text(String),
    /// Bytes (base64 on the wire).
    Raw(Vec<u8>),
    /// A URL to the content.
    Url(String),
    /// Structured data.
    Data(Json),
}

/// One piece of a message or artifact.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Part {
    /// The content.
    pub content: PartContent,
    /// Free-form metadata.
    pub metadata: Option<Json>,
    /// A file name for the content.
    pub filename: Option<String>,
    /// The content's media type.
    pub media_type: Option<String>,
}

impl Part {
    /// A text part.
    pub fn text(text: impl Into<String>) -> Self {
        Part {
            content: PartContent::Text(text.into()),
            metadata: None,
            filename: None,
            media_type: None,
        }
    }
}

/// The wire shape of a part: the `oneof` as optional members, checked to hold exactly one.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PartWire {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    raw: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    data: Option<Json>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    metadata: Option<Json>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    filename: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    media_type: Option<String>,
}

impl Serialize for Part {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut wire = PartWire {
            text: None,
            raw: None,
            url: None,
            data: None,
            metadata: self.metadata.clone(),
            filename: self.filename.clone(),
            media_type: self.media_type.clone(),
        };
        match &self.content {
            PartContent::Text(text) => wire.text = Some(text.clone()),
            PartContent::Raw(bytes) => {
                wire.raw = Some(base64::engine::general_purpose::STANDARD.encode(bytes))
            }
            PartContent::Url(url) => wire.url = Some(url.clone()),
            PartContent::Data(data) => wire.data = Some(data.clone()),
        }
        wire.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Part {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let wire = PartWire::deserialize(deserializer)?;
        let mut contents = Vec::new();
        if let Some(text) = wire.text {
            contents.push(PartContent::Text(text));
        }
        if let Some(raw) = wire.raw {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(raw.as_bytes())
                .map_err(|e| D::Error::custom(format!("part.raw is not base64: {e}")))?;
            contents.push(PartContent::Raw(bytes));
        }
        if let Some(url) = wire.url {
            contents.push(PartContent::Url(url));
        }
        if let Some(data) = wire.data {
            contents.push(PartContent::Data(data));
        }
        if contents.len() != 1 {
            return Err(D::Error::custom(
                "a part needs exactly one of text, raw, url, data",
            ));
        }
        let content = contents
            .pop()
            .ok_or_else(|| D::Error::custom("a part needs content"))?;
        Ok(Part {
            content,
            metadata: wire.metadata,
            filename: wire.filename,
            media_type: wire.media_type,
        })
    }
}

/// A message between client and agent.
#[derive(
    Debug,
    Clone,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    /// Unique id of the message.
    pub message_id: String,
    /// The conversation it belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_id: Option<String>,
    /// The task it belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    /// Sender.
    pub role: Role,
    /// Content; at least one part.
    pub parts: Vec<Part>,
    /// Free-form metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Json>,
    /// Extension URIs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extensions: Vec<String>,
    /// Tasks this message refers to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reference_task_ids: Vec<String>,
}

impl Message {
    /// A message of one text part from `role`, with no context, task, metadata or references.
    pub fn text(message_id: impl Into<String>, role: Role, text: impl Into<String>) -> Self {
        Message {
            message_id: message_id.into(),
            context_id: None,
            task_id: None,
            role,
            parts: vec![Part::text(text)],
            metadata: None,
            extensions: Vec::new(),
            reference_task_ids: Vec::new(),
        }
    }
}

/// A task's state plus an optional status message and its time.
#[derive(
    Debug,
    Clone,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[serde(rename_all = "camelCase")]
pub struct TaskStatus {
    /// The state.
    pub state: TaskState,
    /// A message explaining it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<Message>,
    /// When the status was set (assigned by the store when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<Timestamp>,
}

impl TaskStatus {
    /// A status with only a state.
    pub fn new(state: TaskState) -> Self {
        TaskStatus {
            state,
            message: None,
            timestamp: None,
        }
    }
}

/// An output of a task.
#[derive(
    Debug,
    Clone,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[serde(rename_all = "camelCase")]
pub struct Artifact {
    /// Unique within the task.
    pub artifact_id: String,
    /// Human-readable name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Content; at least one part.
    pub parts: Vec<Part>,
    /// Free-form metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Json>,
    /// Extension URIs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extensions: Vec<String>,
}

/// A task, as `GetTask` returns it: the fold of its events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Task {
    /// Server-assigned id.
    pub id: String,
    /// The conversation it belongs to.
    pub context_id: String,
    /// Current status.
    pub status: TaskStatus,
    /// Outputs; absent from the JSON when empty (ListTasks without `includeArtifacts` must omit it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<Artifact>,
    /// Messages, oldest first; absent when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<Message>,
    /// Free-form metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Json>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> Message {
        Message {
            message_id: "m-1".into(),
            context_id: Some("c-1".into()),
            task_id: None,
            role: Role::User,
            parts: vec![
                Part::text("hi"),
                Part {
                    content: PartContent::Raw(vec![0, 1, 2, 255]),
                    metadata: Some(Json::from_text(r#"{"k":[1,2]}"#).unwrap()),
                    filename: Some("a.bin".into()),
                    media_type: Some("application/octet-stream".into()),
                },
            ],
            metadata: None,
            extensions: vec![],
            reference_task_ids: vec!["t-0".into()],
        }
    }

    /// Golden JSON: the wire form of each object, as A2A 1.0 spells it. The timestamp was checked
    /// independently with Python `datetime.fromtimestamp(1795364400.123, timezone.utc)`.
    #[test]
    fn golden_json_of_a_task() {
        let task = Task {
            id: "t-1".into(),
            context_id: "c-1".into(),
            status: TaskStatus {
                state: TaskState::InputRequired,
                message: None,
                timestamp: Some(Timestamp(1_795_364_400_123)),
            },
            artifacts: vec![Artifact {
                artifact_id: "a-1".into(),
                name: Some("out".into()),
                description: None,
                parts: vec![Part {
                    content: PartContent::Data(Json::from_text(r#"{"x": 1}"#).unwrap()),
                    metadata: None,
                    filename: None,
                    media_type: None,
                }],
                metadata: None,
                extensions: vec![],
            }],
            history: vec![message()],
            metadata: Some(Json::from_text(r#"{"owner":"me"}"#).unwrap()),
        };
        let json = serde_json::to_string(&task).unwrap();
        assert_eq!(
            json,
            concat!(
                r#"{"id":"t-1","contextId":"c-1","status":{"state":"TASK_STATE_INPUT_REQUIRED","timestamp":"2026-11-22T16:20:00.123Z"},"#,
                r#""artifacts":[{"artifactId":"a-1","name":"out","parts":[{"data":{"x": 1}}]}],"#,
                r#""history":[{"messageId":"m-1","contextId":"c-1","role":"ROLE_USER","parts":[{"text":"hi"},"#,
                r#"{"raw":"AAEC/w==","metadata":{"k":[1,2]},"filename":"a.bin","mediaType":"application/octet-stream"}],"#,
                r#""referenceTaskIds":["t-0"]}],"metadata":{"owner":"me"}}"#
            )
        );
        let back: Task = serde_json::from_str(&json).unwrap();
        assert_eq!(back, task);
    }

    #[test]
    fn every_state_has_its_proto_name_and_class() {
        use TaskState::*;
        for state in [
            Unspecified,
            Submitted,
            Working,
            Completed,
            Failed,
            Canceled,
            InputRequired,
            Rejected,
            AuthRequired,
        ] {
            let json = serde_json::to_string(&state).unwrap();
            assert_eq!(json, format!("\"{}\"", state.as_str()));
            assert_eq!(serde_json::from_str::<TaskState>(&json).unwrap(), state);
        }
        assert!(
            Completed.is_terminal()
                && Failed.is_terminal()
                && Canceled.is_terminal()
                && Rejected.is_terminal()
        );
        assert!(
            !Working.is_terminal()
                && InputRequired.is_interrupted()
                && AuthRequired.is_interrupted()
        );
        assert!(
            serde_json::from_str::<TaskState>("\"working\"").is_err(),
            "0.3 names are not 1.0"
        );
    }

    #[test]
    fn a_part_needs_exactly_one_content() {
        assert!(serde_json::from_str::<Part>(r#"{"text":"a","url":"http://x"}"#).is_err());
        assert!(serde_json::from_str::<Part>(r#"{"filename":"f"}"#).is_err());
        assert!(serde_json::from_str::<Part>(r#"{"raw":"not base64!"}"#).is_err());
        let part: Part = serde_json::from_str(r#"{"url":"http://x","unknownField":true}"#).unwrap();
        assert_eq!(part.content, PartContent::Url("http://x".into()));
    }

    #[test]
    fn timestamps_round_trip_and_reject_garbage() {
        let at = Timestamp::parse_rfc3339("2026-11-21T16:20:00.123+01:00").unwrap();
        assert_eq!(at.to_rfc3339(), "2026-11-21T15:20:00.123Z");
        assert!(Timestamp::parse_rfc3339("yesterday").is_err());
    }
}
