//! The RPC envelope: the only bytes the transport itself puts on a QUIC stream.
//!
//! Every message on a stream, in either direction, is one envelope:
//!
//! ```text
//!  0         1         2                                       6
//!  +---------+---------+---------+---------+---------+---------+================+
//!  | version |  kind   |          len (u32, little-endian)     | payload        |
//!  +---------+---------+---------+---------+---------+---------+================+
//!                                                               <--- len bytes -->
//! ```
//!
//! | offset | size | field   | meaning                                                     |
//! |--------|------|---------|-------------------------------------------------------------|
//! | 0      | 1    | version | [`VERSION`] (1); any other value is refused                 |
//! | 1      | 1    | kind    | what the payload is (table below)                           |
//! | 2      | 4    | len     | payload bytes, little-endian; checked against a cap before anything is allocated |
//! | 6      | len  | payload | opaque to the transport except for the kinds it owns        |
//!
//! Kinds (one namespace for both directions; the position on the stream says which are legal):
//!
//! | kind          | value       | sent by | payload                                             |
//! |---------------|-------------|---------|-----------------------------------------------------|
//! | request       | 0x00..=0x7F | client  | the application's request; the kind is the application's |
//! | [`KIND_STREAM_OPEN`] | 0xE0 | client  | application kind (1 byte, 0x00..=0x7F), then the application's header |
//! | [`KIND_CHUNK`] | 0xE1       | client  | one chunk of a streamed request                     |
//! | [`KIND_END`]  | 0xE2        | client  | total chunk bytes sent (u64, little-endian)          |
//! | [`KIND_OK`]   | 0xF0        | server  | the handler's response                              |
//! | [`KIND_REMOTE_ERROR`] | 0xF1 | server | the handler's error message (UTF-8)                 |
//! | [`KIND_REFUSED`] | 0xF2     | server  | [`Refusal`] code (1 byte), then a message (UTF-8)   |
//!
//! A stream carries exactly one exchange: a unary RPC is `request` → `OK | REMOTE_ERROR |
//! REFUSED`; a streamed RPC is `STREAM_OPEN CHUNK* END` → `OK | REMOTE_ERROR | REFUSED` (the server
//! may answer before `END` to cut a transfer short). Each side finishes its half after its last
//! envelope.
//!
//! Decoding never panics and never allocates from a length it has not checked: every failure is a
//! [`WireError`].
#![deny(clippy::indexing_slicing)]

use thiserror::Error;

/// The envelope format version this build writes and accepts.
pub const VERSION: u8 = 1;
/// Bytes in an envelope header (version, kind, len).
pub const HEADER_LEN: usize = 6;

const VERSION_OFFSET: usize = 0;
const KIND_OFFSET: usize = VERSION_OFFSET + size_of::<u8>();
const LEN_OFFSET: usize = KIND_OFFSET + size_of::<u8>();
const PAYLOAD_OFFSET: usize = LEN_OFFSET + size_of::<u32>();
const _: () = assert!(PAYLOAD_OFFSET == HEADER_LEN);

/// The largest kind an application may use for its requests; the kinds above belong to the
/// transport.
pub const KIND_APP_MAX: u8 = 0x7F;
/// Opens a streamed request: payload = application kind (1 byte), then the application's header.
pub const KIND_STREAM_OPEN: u8 = 0xE0;
/// One chunk of a streamed request.
pub const KIND_CHUNK: u8 = 0xE1;
/// Ends a streamed request: payload = total chunk bytes sent, u64 little-endian.
pub const KIND_END: u8 = 0xE2;
/// A successful response: payload = the handler's response.
pub const KIND_OK: u8 = 0xF0;
/// The handler failed: payload = its message, UTF-8.
pub const KIND_REMOTE_ERROR: u8 = 0xF1;
/// The transport refused the request before (or instead of) calling the handler: payload =
/// [`Refusal`] code, then a UTF-8 message.
pub const KIND_REFUSED: u8 = 0xF2;

/// Bytes in the payload of an `END` envelope.
pub const END_PAYLOAD_LEN: usize = size_of::<u64>();

/// Whether `kind` is one an application may use for a request.
pub fn is_app_kind(kind: u8) -> bool {
    kind <= KIND_APP_MAX
}

/// A decoded envelope header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// What the payload is.
    pub kind: u8,
    /// Payload bytes that follow the header.
    pub len: u32,
}

impl Header {
    /// The header of an envelope of `kind` with `len` payload bytes.
    pub fn new(kind: u8, len: u32) -> Self {
        Self { kind, len }
    }

    /// `version u8 | kind u8 | len u32le`
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let [l0, l1, l2, l3] = self.len.to_le_bytes();
        [VERSION, self.kind, l0, l1, l2, l3]
    }

    /// Decodes a header and checks its version and its length against `len_max`, before the
    /// caller allocates anything for the payload.
    ///
    /// # Errors
    /// [`WireError::Version`] for an unknown version, [`WireError::TooLarge`] when `len` exceeds
    /// `len_max`.
    pub fn decode(bytes: &[u8; HEADER_LEN], len_max: u32) -> Result<Self, WireError> {
        let [version, kind, l0, l1, l2, l3] = *bytes;
        if version != VERSION {
            return Err(WireError::Version { found: version });
        }
        let len = u32::from_le_bytes([l0, l1, l2, l3]);
        if len > len_max {
            return Err(WireError::TooLarge {
                len: u64::from(len),
                max: len_max,
            });
        }
        Ok(Self { kind, len })
    }
}

/// `header | payload`: one whole envelope.
///
/// # Errors
/// [`WireError::TooLarge`] when the payload does not fit the `u32` length field.
pub fn encode(kind: u8, payload: &[u8]) -> Result<Vec<u8>, WireError> {
    let len = payload_len(payload.len(), u32::MAX)?;
    let mut bytes = Vec::with_capacity(HEADER_LEN + payload.len());
    bytes.extend_from_slice(&Header::new(kind, len).encode());
    bytes.extend_from_slice(payload);
    Ok(bytes)
}

/// Decodes exactly one envelope filling all of `bytes`.
///
/// # Errors
/// [`WireError::Truncated`] when `bytes` ends early, [`WireError::Trailing`] when bytes follow the
/// payload, and the errors of [`Header::decode`].
pub fn decode(bytes: &[u8], len_max: u32) -> Result<(Header, &[u8]), WireError> {
    let (header, rest) = bytes
        .split_first_chunk::<HEADER_LEN>()
        .ok_or(WireError::Truncated {
            needed: HEADER_LEN as u64,
            got: bytes.len() as u64,
        })?;
    let header = Header::decode(header, len_max)?;
    let len = header.len as usize;
    let payload = rest.get(..len).ok_or(WireError::Truncated {
        needed: (HEADER_LEN + len) as u64,
        got: bytes.len() as u64,
    })?;
    if rest.len() > len {
        return Err(WireError::Trailing {
            extra: (rest.len() - len) as u64,
        });
    }
    Ok((header, payload))
}

/// The checked `u32` length of a payload of `len` bytes, at most `len_max`.
///
/// # Errors
/// [`WireError::TooLarge`] when `len` exceeds `len_max`.
pub fn payload_len(len: usize, len_max: u32) -> Result<u32, WireError> {
    match u32::try_from(len) {
        Ok(len) if len <= len_max => Ok(len),
        _ => Err(WireError::TooLarge {
            len: len as u64,
            max: len_max,
        }),
    }
}

/// `app_kind u8 | header`: the payload of a `STREAM_OPEN` envelope.
pub fn encode_stream_open(app_kind: u8, header: &[u8]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(1 + header.len());
    payload.push(app_kind);
    payload.extend_from_slice(header);
    payload
}

/// Splits the payload of a `STREAM_OPEN` envelope into the application kind and its header.
///
/// # Errors
/// [`WireError::BadPayload`] when the payload is empty or names a kind an application may not use.
pub fn decode_stream_open(payload: &[u8]) -> Result<(u8, &[u8]), WireError> {
    match payload.split_first() {
        Some((&kind, header)) if is_app_kind(kind) => Ok((kind, header)),
        Some(_) => Err(WireError::BadPayload {
            kind: KIND_STREAM_OPEN,
            reason: "application kind above 0x7F",
        }),
        None => Err(WireError::BadPayload {
            kind: KIND_STREAM_OPEN,
            reason: "empty (no application kind)",
        }),
    }
}

/// `total u64le`: the payload of an `END` envelope.
pub fn encode_end(total: u64) -> [u8; END_PAYLOAD_LEN] {
    total.to_le_bytes()
}

/// The total chunk bytes an `END` envelope declares.
///
/// # Errors
/// [`WireError::BadPayload`] unless the payload is exactly 8 bytes.
pub fn decode_end(payload: &[u8]) -> Result<u64, WireError> {
    let bytes: [u8; END_PAYLOAD_LEN] = payload.try_into().map_err(|_| WireError::BadPayload {
        kind: KIND_END,
        reason: "not 8 bytes",
    })?;
    Ok(u64::from_le_bytes(bytes))
}

/// Why the transport refused a request (the first byte of a `REFUSED` payload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// The request (or one chunk of it) was larger than the receiver's cap.
    TooLarge,
    /// The bytes were not a valid request envelope.
    Malformed,
    /// The request did not arrive in time, or a streamed request stopped making progress.
    Timeout,
    /// The receiver is shutting down and takes no new requests.
    ShuttingDown,
    /// A code this build does not know (sent by a newer peer).
    Other(u8),
}

impl Refusal {
    /// The code on the wire.
    pub fn code(self) -> u8 {
        match self {
            Refusal::TooLarge => 1,
            Refusal::Malformed => 2,
            Refusal::Timeout => 3,
            Refusal::ShuttingDown => 4,
            Refusal::Other(code) => code,
        }
    }

    /// The refusal for a wire code.
    pub fn from_code(code: u8) -> Self {
        match code {
            1 => Refusal::TooLarge,
            2 => Refusal::Malformed,
            3 => Refusal::Timeout,
            4 => Refusal::ShuttingDown,
            other => Refusal::Other(other),
        }
    }
}

/// `code u8 | message utf8`: the payload of a `REFUSED` envelope.
pub fn encode_refusal(refusal: Refusal, message: &str) -> Vec<u8> {
    let mut payload = Vec::with_capacity(1 + message.len());
    payload.push(refusal.code());
    payload.extend_from_slice(message.as_bytes());
    payload
}

/// The refusal and message of a `REFUSED` payload; a message that is not UTF-8 is decoded lossily
/// (it is only ever shown to people).
///
/// # Errors
/// [`WireError::BadPayload`] when the payload is empty.
pub fn decode_refusal(payload: &[u8]) -> Result<(Refusal, String), WireError> {
    let (&code, message) = payload.split_first().ok_or(WireError::BadPayload {
        kind: KIND_REFUSED,
        reason: "empty (no refusal code)",
    })?;
    Ok((
        Refusal::from_code(code),
        String::from_utf8_lossy(message).into_owned(),
    ))
}

/// Bytes that are not a valid envelope.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum WireError {
    /// The bytes end before the envelope does.
    #[error("truncated envelope: needed {needed} bytes, got {got}")]
    Truncated {
        /// Bytes the envelope needs.
        needed: u64,
        /// Bytes there were.
        got: u64,
    },
    /// A version byte this build does not speak.
    #[error("unsupported envelope version {found} (this build speaks {VERSION})")]
    Version {
        /// The version byte found.
        found: u8,
    },
    /// A length above the cap.
    #[error("payload of {len} bytes exceeds the cap of {max} bytes")]
    TooLarge {
        /// The declared (or actual) payload length.
        len: u64,
        /// The cap.
        max: u32,
    },
    /// Bytes after the end of the envelope.
    #[error("{extra} bytes after the envelope")]
    Trailing {
        /// How many.
        extra: u64,
    },
    /// A kind that is not legal at this point of the exchange.
    #[error("unexpected envelope kind {kind:#04x}, expected {expected}")]
    UnexpectedKind {
        /// The kind found.
        kind: u8,
        /// What was legal here.
        expected: &'static str,
    },
    /// A transport-owned payload that does not parse.
    #[error("bad payload for envelope kind {kind:#04x}: {reason}")]
    BadPayload {
        /// The envelope kind.
        kind: u8,
        /// What is wrong with it.
        reason: &'static str,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAP: u32 = 64;

    #[test]
    fn golden_request_envelope() {
        // version 1, kind 0x05, len 3 (little-endian), payload "abc".
        let golden = [0x01, 0x05, 0x03, 0x00, 0x00, 0x00, b'a', b'b', b'c'];
        assert_eq!(encode(5, b"abc").unwrap(), golden);
        let (header, payload) = decode(&golden, CAP).unwrap();
        assert_eq!(header, Header::new(5, 3));
        assert_eq!(payload, b"abc");
    }

    #[test]
    fn golden_header_with_a_multi_byte_length() {
        let header = Header::new(KIND_OK, 0x0102_0304);
        assert_eq!(header.encode(), [0x01, 0xF0, 0x04, 0x03, 0x02, 0x01]);
        assert_eq!(Header::decode(&header.encode(), u32::MAX).unwrap(), header);
    }

    #[test]
    fn golden_transport_payloads() {
        assert_eq!(encode_stream_open(7, b"hd"), [0x07, b'h', b'd']);
        assert_eq!(
            decode_stream_open(&[0x07, b'h', b'd']).unwrap(),
            (7, &b"hd"[..])
        );
        assert_eq!(encode_end(0x0102), [0x02, 0x01, 0, 0, 0, 0, 0, 0]);
        assert_eq!(decode_end(&[0x02, 0x01, 0, 0, 0, 0, 0, 0]).unwrap(), 0x0102);
        assert_eq!(
            encode_refusal(Refusal::TooLarge, "big"),
            [0x01, b'b', b'i', b'g']
        );
        assert_eq!(
            decode_refusal(&[0x01, b'b', b'i', b'g']).unwrap(),
            (Refusal::TooLarge, "big".to_owned())
        );
        assert_eq!(
            encode(KIND_END, &encode_end(3)).unwrap(),
            [0x01, 0xE2, 0x08, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0]
        );
    }

    #[test]
    fn empty_payload_round_trips() {
        let bytes = encode(0, b"").unwrap();
        assert_eq!(bytes, [0x01, 0x00, 0, 0, 0, 0]);
        let (header, payload) = decode(&bytes, 0).unwrap();
        assert_eq!(header.len, 0);
        assert!(payload.is_empty());
    }

    #[test]
    fn every_truncation_is_a_typed_error() {
        let bytes = encode(9, b"payload").unwrap();
        for cut in 0..bytes.len() {
            let error = decode(&bytes[..cut], CAP).unwrap_err();
            assert!(
                matches!(error, WireError::Truncated { got, .. } if got == cut as u64),
                "cut at {cut}: {error}"
            );
        }
    }

    #[test]
    fn oversized_length_is_refused_from_the_header_alone() {
        // A header claiming 4 GiB - 1 with no payload behind it: refused without allocating.
        let header = [0x01, 0x01, 0xFF, 0xFF, 0xFF, 0xFF];
        assert_eq!(
            Header::decode(&header, CAP).unwrap_err(),
            WireError::TooLarge {
                len: u64::from(u32::MAX),
                max: CAP
            }
        );
        assert!(matches!(
            decode(&header, CAP),
            Err(WireError::TooLarge { .. })
        ));
        assert!(matches!(
            payload_len(CAP as usize + 1, CAP),
            Err(WireError::TooLarge { len: 65, max: CAP })
        ));
        assert_eq!(payload_len(CAP as usize, CAP).unwrap(), CAP);
    }

    #[test]
    fn garbage_is_refused() {
        assert_eq!(
            decode(b"GET / HTTP/1.1\r\n", CAP).unwrap_err(),
            WireError::Version { found: b'G' }
        );
        assert!(matches!(
            decode(&[0x01, 0x00, 0x01, 0, 0, 0, 0xAA, 0xBB], CAP),
            Err(WireError::Trailing { extra: 1 })
        ));
        assert!(matches!(
            decode_stream_open(&[]),
            Err(WireError::BadPayload { .. })
        ));
        assert!(matches!(
            decode_stream_open(&[0x80]),
            Err(WireError::BadPayload { .. })
        ));
        assert!(matches!(
            decode_end(&[0; 7]),
            Err(WireError::BadPayload { .. })
        ));
        assert!(matches!(
            decode_end(&[0; 9]),
            Err(WireError::BadPayload { .. })
        ));
        assert!(matches!(
            decode_refusal(&[]),
            Err(WireError::BadPayload { .. })
        ));
        assert_eq!(
            decode_refusal(&[0x63, 0xFF]).unwrap(),
            (Refusal::Other(0x63), "\u{FFFD}".to_owned())
        );
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics() {
        // A small deterministic generator (xorshift) over lengths 0..64: every input decodes to
        // a value or a typed error.
        let mut state = 0x9E37_79B9_7F4A_7C15_u64;
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let len = (state % 64) as usize;
            let mut bytes = Vec::with_capacity(len);
            let mut word = state;
            for _ in 0..len {
                word = word.rotate_left(8) ^ 0xA5;
                bytes.push(word as u8);
            }
            if let Some(first) = bytes.first_mut() {
                // Half the inputs get a valid version so the later checks run too.
                if state & 1 == 0 {
                    *first = VERSION;
                }
            }
            let _ = decode(&bytes, CAP);
            let _ = decode_stream_open(&bytes);
            let _ = decode_end(&bytes);
            let _ = decode_refusal(&bytes);
        }
    }

    #[test]
    fn refusal_codes_round_trip() {
        for refusal in [
            Refusal::TooLarge,
            Refusal::Malformed,
            Refusal::Timeout,
            Refusal::ShuttingDown,
            Refusal::Other(200),
        ] {
            assert_eq!(Refusal::from_code(refusal.code()), refusal);
        }
    }

    #[test]
    fn kinds_do_not_overlap() {
        for kind in [
            KIND_STREAM_OPEN,
            KIND_CHUNK,
            KIND_END,
            KIND_OK,
            KIND_REMOTE_ERROR,
            KIND_REFUSED,
        ] {
            assert!(!is_app_kind(kind));
        }
        assert!(is_app_kind(0) && is_app_kind(KIND_APP_MAX));
    }
}
