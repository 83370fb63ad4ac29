//! A [`Write`] as bytes, for a node that forwards a client's write to the Raft leader: the leader
//! decides it against its own state, so what crosses the network is the request, not a prepared
//! batch. rkyv like the log (the same archived events), validated on decode; the leader's
//! [`TaskStore::prepare`](crate::TaskStore::prepare) then applies every limit and rule as for a
//! local write.
//!
//! Layout: one version byte ([`WRITE_WIRE_VERSION`]), then the archived request (a private
//! rkyv enum with the fields of [`Write`]).

use crate::error::{Error, Result};
use crate::event::Event;
use crate::model::{Json, Message, TaskState};
use crate::record;
use crate::store::{NewTask, Write};

/// Version of the encoding; a decoder refuses any other.
pub const WRITE_WIRE_VERSION: u8 = 1;

/// A write as archived on the wire.
#[derive(Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
enum WireWrite {
    Create {
        task_id: Option<String>,
        context_id: Option<String>,
        state: TaskState,
        message: Option<Message>,
        metadata: Option<Json>,
    },
    Append {
        task_id: String,
        expected_version: Option<u64>,
        events: Vec<Event>,
    },
}

/// Encodes `write` for [`decode_write`].
///
/// # Errors
/// [`Error::InvalidArgument`] if rkyv cannot serialize it.
pub fn encode_write(write: &Write) -> Result<Vec<u8>> {
    let wire = match write.clone() {
        Write::Create(NewTask {
            task_id,
            context_id,
            state,
            message,
            metadata,
        }) => WireWrite::Create {
            task_id,
            context_id,
            state,
            message,
            metadata,
        },
        Write::Append {
            task_id,
            expected_version,
            events,
        } => WireWrite::Append {
            task_id,
            expected_version,
            events,
        },
    };
    let archived = record::to_payload(&wire)?;
    let mut bytes = Vec::with_capacity(1 + archived.len());
    bytes.push(WRITE_WIRE_VERSION);
    bytes.extend_from_slice(&archived);
    Ok(bytes)
}

/// Decodes a write made by [`encode_write`], checking every byte.
///
/// # Errors
/// [`Error::InvalidArgument`] for an unknown version or bytes that are not a valid write.
pub fn decode_write(bytes: &[u8]) -> Result<Write> {
    let Some((&version, archived)) = bytes.split_first() else {
        return Err(Error::InvalidArgument("empty write".into()));
    };
    if version != WRITE_WIRE_VERSION {
        return Err(Error::InvalidArgument(format!(
            "write encoding version {version}, this node reads {WRITE_WIRE_VERSION}"
        )));
    }
    let wire: WireWrite = record::decode_bytes(0, archived)
        .map_err(|e| Error::InvalidArgument(format!("not a valid write: {e}")))?;
    Ok(match wire {
        WireWrite::Create {
            task_id,
            context_id,
            state,
            message,
            metadata,
        } => Write::Create(NewTask {
            task_id,
            context_id,
            state,
            message,
            metadata,
        }),
        WireWrite::Append {
            task_id,
            expected_version,
            events,
        } => Write::Append {
            task_id,
            expected_version,
            events,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Artifact, Part, Role, TaskStatus};

    fn samples() -> Vec<Write> {
        let message = Message::text("m-1", Role::User, "hello");
        vec![
            Write::Create(NewTask::submitted(None)),
            Write::Create(NewTask {
                task_id: Some("t-1".into()),
                context_id: Some("c-1".into()),
                state: TaskState::Working,
                message: Some(message.clone()),
                metadata: Some(Json::from_text(r#"{"k":[1,2]}"#).unwrap()),
            }),
            Write::Append {
                task_id: "t-1".into(),
                expected_version: Some(3),
                events: vec![
                    Event::Status(TaskStatus::new(TaskState::Completed)),
                    Event::Message(message),
                    Event::Artifact {
                        artifact: Artifact {
                            artifact_id: "a-1".into(),
                            name: None,
                            description: None,
                            parts: vec![Part::text("x")],
                            metadata: None,
                            extensions: Vec::new(),
                        },
                        append: true,
                        last_chunk: false,
                    },
                ],
            },
            Write::Append {
                task_id: "t-2".into(),
                expected_version: None,
                events: vec![Event::Deleted],
            },
        ]
    }

    #[test]
    fn every_write_round_trips() {
        for write in samples() {
            let bytes = encode_write(&write).unwrap();
            assert_eq!(bytes[0], WRITE_WIRE_VERSION);
            assert_eq!(decode_write(&bytes).unwrap(), write);
            // Misaligned input decodes too (the network gives no alignment).
            let mut shifted = vec![0u8];
            shifted.extend_from_slice(&bytes);
            assert_eq!(decode_write(&shifted[1..]).unwrap(), write);
        }
    }

    #[test]
    fn bad_bytes_are_invalid_arguments() {
        let good = encode_write(&samples()[2]).unwrap();
        let mut wrong_version = good.clone();
        wrong_version[0] = 9;
        let mut cut = good.clone();
        cut.truncate(good.len() / 2);
        for bytes in [&[][..], &wrong_version, &cut, &[1, 2, 3]] {
            assert!(
                matches!(decode_write(bytes), Err(Error::InvalidArgument(_))),
                "{bytes:?}"
            );
        }
        // Any one byte changed: an error or some write, never a panic.
        for at in 0..good.len() {
            let mut flipped = good.clone();
            flipped[at] ^= 0xa5;
            let _ = decode_write(&flipped);
        }
    }
}
