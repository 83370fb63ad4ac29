//! The Raft messages on the transport: which application kind carries which openraft RPC, and
//! how its request and response are encoded inside the transport's envelope payload.
//!
//! Every payload (request, response, snapshot header) is one format version byte followed by the
//! postcard encoding (serde, not self-describing, varint integers) of one openraft message:
//!
//! ```text
//!  0          1
//!  +----------+==========================================+
//!  | version  | postcard(message)                        |
//!  +----------+==========================================+
//! ```
//!
//! | kind                     | value | request                  | response                             |
//! |--------------------------|-------|--------------------------|--------------------------------------|
//! | [`KIND_APPEND_ENTRIES`]  | 0x01  | `AppendEntriesRequest`   | `Reply<AppendEntriesResponse>`       |
//! | [`KIND_VOTE`]            | 0x02  | `VoteRequest`            | `Reply<VoteResponse>`                |
//! | [`KIND_PRE_VOTE`]        | 0x03  | `VoteRequest`            | `Reply<VoteResponse>`                |
//! | [`KIND_TRANSFER_LEADER`] | 0x04  | `TransferLeaderRequest`  | `Reply<TransferLeaderResponse>`      |
//! | [`KIND_FULL_SNAPSHOT`]   | 0x10  | streamed: [`SnapshotHeader`] as the header, then the snapshot file's bytes | `Reply<SnapshotResponse>` |
//!
//! A response is a [`Reply`]: the openraft response, or the receiving Raft's error as text. A
//! request the receiver cannot decode is answered with a transport-level handler error instead
//! (the caller sees `RpcError::Remote`), so "the peer's Raft failed" and "the peer could not read
//! us" stay apart.
//!
//! The postcard layout of openraft's types is openraft's (with its `serde` feature): openraft is
//! pinned to an exact version, and any change of either that alters the bytes must bump
//! [`FORMAT_VERSION`]. Decoding never panics, checks the version first, refuses trailing bytes,
//! and allocates only as the input proves (serde caps a sequence's pre-allocation whatever
//! length it claims); encoding stops as soon as the output passes the caller's cap.
#![deny(clippy::indexing_slicing)]

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::wire::KIND_APP_MAX;
use crate::types::{SnapshotMeta, Vote};

/// `AppendEntriesRequest` → `Reply<AppendEntriesResponse>`: replication and heartbeats.
pub const KIND_APPEND_ENTRIES: u8 = 0x01;
/// `VoteRequest` → `Reply<VoteResponse>`: a candidate asks for a vote.
pub const KIND_VOTE: u8 = 0x02;
/// `VoteRequest` → `Reply<VoteResponse>`: a pre-candidate asks whether it *would* get a vote
/// (pre-vote, so that a partitioned node does not disturb the cluster with higher terms).
pub const KIND_PRE_VOTE: u8 = 0x03;
/// `TransferLeaderRequest` → `Reply<TransferLeaderResponse>`: the leader hands leadership over.
pub const KIND_TRANSFER_LEADER: u8 = 0x04;
/// Streamed: a [`SnapshotHeader`], then the snapshot file → `Reply<SnapshotResponse>`.
pub const KIND_FULL_SNAPSHOT: u8 = 0x10;

const _: () = assert!(KIND_FULL_SNAPSHOT <= KIND_APP_MAX);
const _: () = assert!(KIND_TRANSFER_LEADER < KIND_FULL_SNAPSHOT);

/// The format version this build writes and accepts (the first byte of every payload).
pub const FORMAT_VERSION: u8 = 1;

/// A response: the receiving Raft's answer, or its error (as text: openraft's `Fatal` is not
/// meant to be rebuilt on another node; the caller reports it as a network error).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply<T> {
    /// The openraft response.
    Ok(T),
    /// The receiving Raft failed (it is shutting down, or its storage failed).
    RaftError(String),
}

/// The header of a streamed snapshot: what `install_full_snapshot` needs besides the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotHeader {
    /// The sending leader's vote.
    pub vote: Vote,
    /// The snapshot's meta (last log id and membership).
    pub meta: SnapshotMeta,
    /// The snapshot file's length: the receiver refuses more, or a transfer that ends short.
    pub snapshot_bytes: u64,
}

/// Why a Raft message could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The encoding would exceed the cap; encoding stopped there.
    #[error("{what} exceeds the cap of {max} bytes")]
    TooLarge {
        /// The message.
        what: &'static str,
        /// The cap.
        max: u32,
    },
    /// The payload is empty: not even a version byte.
    #[error("{what}: empty payload")]
    Empty {
        /// The message.
        what: &'static str,
    },
    /// A format version this build does not know.
    #[error("{what}: format version {found}, this build speaks {FORMAT_VERSION}")]
    Version {
        /// The message.
        what: &'static str,
        /// The version byte found.
        found: u8,
    },
    /// The bytes are not a valid encoding of the message.
    #[error("{what}: invalid encoding: {reason}")]
    Invalid {
        /// The message.
        what: &'static str,
        /// postcard's reason.
        reason: String,
    },
    /// Bytes follow a complete message.
    #[error("{what}: {extra} trailing bytes")]
    Trailing {
        /// The message.
        what: &'static str,
        /// How many.
        extra: usize,
    },
    /// The value cannot be encoded at all (a serde error, not a size problem).
    #[error("{what}: cannot encode: {reason}")]
    Unencodable {
        /// The message.
        what: &'static str,
        /// postcard's reason.
        reason: String,
    },
}

/// A postcard output that refuses to grow past a cap, so an oversized message is refused after
/// at most `max` bytes, not after it has been built whole.
struct Capped {
    bytes: Vec<u8>,
    max: usize,
    overflowed: bool,
}

impl postcard::ser_flavors::Flavor for Capped {
    type Output = Vec<u8>;

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        if self.bytes.len().saturating_add(data.len()) > self.max {
            self.overflowed = true;
            return Err(postcard::Error::SerializeBufferFull);
        }
        self.bytes.extend_from_slice(data);
        Ok(())
    }

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.try_extend(&[data])
    }

    fn finalize(self) -> postcard::Result<Vec<u8>> {
        Ok(self.bytes)
    }
}

/// `version u8 | postcard(value)`, refused once it passes `bytes_max` bytes.
///
/// # Errors
/// [`CodecError::TooLarge`] past the cap, [`CodecError::Unencodable`] for a value serde cannot
/// encode.
pub fn encode<T: Serialize>(
    value: &T,
    bytes_max: u32,
    what: &'static str,
) -> Result<Vec<u8>, CodecError> {
    let max = usize::try_from(bytes_max).unwrap_or(usize::MAX);
    if max == 0 {
        return Err(CodecError::TooLarge {
            what,
            max: bytes_max,
        });
    }
    let mut output = Capped {
        bytes: Vec::new(),
        max,
        overflowed: false,
    };
    output.bytes.push(FORMAT_VERSION);
    let mut serializer = postcard::Serializer { output };
    match value.serialize(&mut serializer) {
        Ok(()) => Ok(serializer.output.bytes),
        Err(_) if serializer.output.overflowed => Err(CodecError::TooLarge {
            what,
            max: bytes_max,
        }),
        Err(error) => Err(CodecError::Unencodable {
            what,
            reason: error.to_string(),
        }),
    }
}

/// Decodes exactly one message filling all of `bytes` (the transport has already capped their
/// length).
///
/// # Errors
/// [`CodecError::Empty`], [`CodecError::Version`], [`CodecError::Invalid`],
/// [`CodecError::Trailing`].
pub fn decode<T: DeserializeOwned>(bytes: &[u8], what: &'static str) -> Result<T, CodecError> {
    let (&version, body) = bytes.split_first().ok_or(CodecError::Empty { what })?;
    if version != FORMAT_VERSION {
        return Err(CodecError::Version {
            what,
            found: version,
        });
    }
    let (value, rest) = postcard::take_from_bytes(body).map_err(|error| CodecError::Invalid {
        what,
        reason: error.to_string(),
    })?;
    if rest.is_empty() {
        Ok(value)
    } else {
        Err(CodecError::Trailing {
            what,
            extra: rest.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use openraft::impls::BasicNode;
    use openraft::raft::{
        AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
        VoteRequest, VoteResponse,
    };
    use openraft::raft::{TransferLeaderError, TransferLeaderResponse};
    use openraft::{EntryPayload, Membership};

    use super::*;
    use crate::types::{Command, Entry, LogId, StoredMembership, TypeConfig};

    const MAX: u32 = 1024 * 1024;

    fn vote(term: u64, node: u64, committed: bool) -> Vote {
        if committed {
            Vote::new_committed(term, node)
        } else {
            Vote::new(term, node)
        }
    }

    fn membership() -> Membership<u64, BasicNode> {
        let voters = BTreeSet::from([1, 2, 3]);
        let nodes: BTreeMap<u64, BasicNode> = [1, 2, 3, 4]
            .into_iter()
            .map(|id| (id, BasicNode::new(format!("127.0.0.1:700{id}"))))
            .collect();
        Membership::new(vec![voters], nodes).unwrap()
    }

    fn entries() -> Vec<Entry> {
        vec![
            Entry {
                log_id: LogId::new_term_index(2, 7),
                payload: EntryPayload::Blank,
            },
            Entry {
                log_id: LogId::new_term_index(2, 8),
                payload: EntryPayload::Membership(membership()),
            },
            Entry {
                log_id: LogId::new_term_index(2, 9),
                payload: EntryPayload::Normal(Command {
                    kind: 0x20,
                    payload: (0..=255).collect(),
                }),
            },
        ]
    }

    fn append_request() -> AppendEntriesRequest<TypeConfig> {
        AppendEntriesRequest {
            vote: vote(2, 1, true),
            prev_log_id: Some(LogId::new_term_index(1, 6)),
            entries: entries(),
            leader_commit: Some(LogId::new_term_index(1, 5)),
        }
    }

    fn snapshot_header() -> SnapshotHeader {
        SnapshotHeader {
            vote: vote(3, 2, true),
            meta: SnapshotMeta {
                last_log_id: Some(LogId::new_term_index(3, 40)),
                last_membership: StoredMembership::new(
                    Some(LogId::new_term_index(1, 0)),
                    membership(),
                ),
            },
            snapshot_bytes: 1 << 33,
        }
    }

    fn round_trip<T>(value: &T, what: &'static str)
    where
        T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
    {
        let bytes = encode(value, MAX, what).unwrap();
        assert_eq!(bytes.first(), Some(&FORMAT_VERSION));
        let back: T = decode(&bytes, what).unwrap();
        assert_eq!(&back, value, "{what}");
    }

    /// `AppendEntriesRequest` has no `PartialEq`: compare its fields.
    fn append_round_trip(request: &AppendEntriesRequest<TypeConfig>) {
        let what = "append entries request";
        let bytes = encode(request, MAX, what).unwrap();
        let back: AppendEntriesRequest<TypeConfig> = decode(&bytes, what).unwrap();
        assert_eq!(back.vote, request.vote);
        assert_eq!(back.prev_log_id, request.prev_log_id);
        assert_eq!(back.leader_commit, request.leader_commit);
        assert_eq!(back.entries, request.entries);
        assert_eq!(encode(&back, MAX, what).unwrap(), bytes);
    }

    #[test]
    fn every_message_round_trips() {
        append_round_trip(&append_request());
        append_round_trip(&AppendEntriesRequest::<TypeConfig> {
            vote: vote(1, 1, true),
            prev_log_id: None,
            entries: Vec::new(),
            leader_commit: None,
        });
        for response in [
            AppendEntriesResponse::<TypeConfig>::Success,
            AppendEntriesResponse::PartialSuccess(Some(LogId::new_term_index(2, 8))),
            AppendEntriesResponse::PartialSuccess(None),
            AppendEntriesResponse::Conflict,
            AppendEntriesResponse::HigherVote(vote(5, 3, false)),
        ] {
            round_trip(&Reply::Ok(response), "append entries response");
        }
        round_trip(
            &VoteRequest::<TypeConfig>::new(vote(4, 2, false), Some(LogId::new_term_index(3, 9))),
            "vote request",
        );
        round_trip(
            &Reply::Ok(VoteResponse::<TypeConfig>::new(
                vote(4, 2, false),
                None,
                true,
            )),
            "vote response",
        );
        round_trip(
            &TransferLeaderRequest::<TypeConfig>::new(
                vote(4, 2, true),
                3,
                Some(LogId::new_term_index(4, 11)),
            ),
            "transfer leader request",
        );
        let refused: TransferLeaderResponse<TypeConfig> = Err(TransferLeaderError::LogNotFlushed {
            expected: Some(LogId::new_term_index(4, 11)),
            actual: None,
        });
        round_trip(&Reply::Ok(refused), "transfer leader response");
        round_trip(&snapshot_header(), "snapshot header");
        round_trip(
            &Reply::Ok(SnapshotResponse::<TypeConfig>::new(vote(3, 2, true))),
            "snapshot response",
        );
        round_trip(
            &Reply::<SnapshotResponse<TypeConfig>>::RaftError("raft stopped".into()),
            "error reply",
        );
    }

    #[test]
    fn golden_bytes_of_a_small_reply() {
        // version 1 | enum variant 0 (Ok) | AppendEntriesResponse variant 0 (Success)
        let bytes = encode(
            &Reply::Ok(AppendEntriesResponse::<TypeConfig>::Success),
            MAX,
            "append entries response",
        )
        .unwrap();
        assert_eq!(bytes, [FORMAT_VERSION, 0, 0]);
        // version 1 | variant 1 (RaftError) | varint len 2 | "no"
        let bytes = encode(&Reply::<()>::RaftError("no".into()), MAX, "error").unwrap();
        assert_eq!(bytes, [FORMAT_VERSION, 1, 2, b'n', b'o']);
    }

    #[test]
    fn garbage_is_a_typed_error() {
        let what = "append entries request";
        let decode_append = |bytes: &[u8]| decode::<AppendEntriesRequest<TypeConfig>>(bytes, what);
        assert_eq!(decode_append(&[]).err(), Some(CodecError::Empty { what }));
        assert_eq!(
            decode_append(&[9, 0, 0]).err(),
            Some(CodecError::Version { what, found: 9 })
        );
        assert!(matches!(
            decode_append(&[FORMAT_VERSION, 0xFF, 0xFF]),
            Err(CodecError::Invalid { .. })
        ));
        let mut bytes = encode(&append_request(), MAX, what).unwrap();
        bytes.push(0);
        assert_eq!(
            decode_append(&bytes).err(),
            Some(CodecError::Trailing { what, extra: 1 })
        );
        // Every truncation of a valid message fails cleanly.
        bytes.pop();
        for len in 0..bytes.len() {
            assert!(decode_append(bytes.get(..len).unwrap()).is_err(), "{len}");
        }
        // A reply of the wrong message type does not pass for the right one.
        let vote_reply = encode(
            &Reply::Ok(VoteResponse::<TypeConfig>::new(
                vote(1, 1, false),
                None,
                false,
            )),
            MAX,
            "vote response",
        )
        .unwrap();
        assert!(decode::<SnapshotHeader>(&vote_reply, "snapshot header").is_err());
    }

    #[test]
    fn a_huge_claimed_length_fails_without_allocating_it() {
        // vote, then no prev_log_id, then an entry count of u64::MAX (a 10-byte varint) and
        // nothing behind it: decoding must fail at the end of input, not try to reserve it.
        let mut bytes = encode(&vote(1, 1, true), MAX, "vote").unwrap();
        bytes.push(0);
        bytes.extend_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]);
        let result = decode::<AppendEntriesRequest<TypeConfig>>(&bytes, "append entries request");
        assert!(
            matches!(result, Err(CodecError::Invalid { .. })),
            "{result:?}"
        );
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let valid = encode(&append_request(), MAX, "append").unwrap();
        for round in 0..2_000u32 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let mut bytes = valid.clone();
            // Flip a few bytes of a valid message, or make bytes from nothing.
            if round % 2 == 0 {
                for flip in 0..3u64 {
                    let at = ((state >> (flip * 16)) as usize) % bytes.len();
                    if let Some(byte) = bytes.get_mut(at) {
                        *byte ^= (state >> 56) as u8 | 1;
                    }
                }
            } else {
                bytes = state.to_le_bytes().repeat(1 + (round as usize % 5));
                if let Some(first) = bytes.first_mut() {
                    *first = FORMAT_VERSION;
                }
            }
            let _ = decode::<AppendEntriesRequest<TypeConfig>>(&bytes, "append");
            let _ = decode::<SnapshotHeader>(&bytes, "snapshot header");
            let _ = decode::<Reply<VoteResponse<TypeConfig>>>(&bytes, "vote response");
        }
    }

    #[test]
    fn oversized_messages_are_refused_while_encoding() {
        let what = "append entries request";
        let request = append_request();
        let len = encode(&request, MAX, what).unwrap().len();
        let exact = u32::try_from(len).unwrap();
        assert!(encode(&request, exact, what).is_ok());
        assert_eq!(
            encode(&request, exact - 1, what).err(),
            Some(CodecError::TooLarge {
                what,
                max: exact - 1
            })
        );
        assert!(matches!(
            encode(&request, 0, what),
            Err(CodecError::TooLarge { .. })
        ));
    }

    #[test]
    fn kinds_are_application_kinds_and_distinct() {
        let kinds = [
            KIND_APPEND_ENTRIES,
            KIND_VOTE,
            KIND_PRE_VOTE,
            KIND_TRANSFER_LEADER,
            KIND_FULL_SNAPSHOT,
        ];
        let distinct: BTreeSet<u8> = kinds.into_iter().collect();
        assert_eq!(distinct.len(), kinds.len());
        assert!(
            kinds
                .iter()
                .all(|kind| super::super::wire::is_app_kind(*kind))
        );
    }
}
