//! The byte forms of a task row and an event for the two key-value peers (redb and fjall), so
//! that both store exactly the same bytes. SQLite keeps the same fields as columns.
//!
//! All integers are little-endian; variable fields are length-prefixed with a `u32`, except the
//! last one, which runs to the end. Decoding checks every length and never panics.
//!
//! ```text
//! task row:  version u64 | status_ms u64 | state u8 | context_len u32 | context | status message
//! event:     version u64 | kind u8 | task_id_len u32 | task_id | payload
//! ```

use anyhow::{Context as _, Result, ensure};

use super::State;

/// A task row as the key-value peers store it (keyed by task id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TaskRow {
    pub(crate) version: u64,
    pub(crate) status_ms: u64,
    pub(crate) state: State,
    pub(crate) context_id: String,
    pub(crate) status_message: String,
}

impl TaskRow {
    /// The row's bytes.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(21 + self.context_id.len() + self.status_message.len());
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&self.status_ms.to_le_bytes());
        out.push(self.state.code());
        put_str(&mut out, &self.context_id);
        out.extend_from_slice(self.status_message.as_bytes());
        out
    }

    /// Parses [`TaskRow::encode`]'s bytes.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self> {
        let mut reader = Reader(bytes);
        let version = reader.u64()?;
        let status_ms = reader.u64()?;
        let state = State::from_code(i64::from(reader.u8()?))?;
        let context_id = reader.str()?;
        let status_message = reader.rest()?;
        Ok(TaskRow {
            version,
            status_ms,
            state,
            context_id,
            status_message,
        })
    }
}

/// An event as the key-value peers store it (keyed by its position).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EventRow {
    pub(crate) task_id: String,
    pub(crate) version: u64,
    pub(crate) kind: u8,
    pub(crate) payload: String,
}

impl EventRow {
    /// Encodes an event without building an [`EventRow`] first.
    pub(crate) fn encode(task_id: &str, version: u64, kind: u8, payload: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(13 + task_id.len() + payload.len());
        out.extend_from_slice(&version.to_le_bytes());
        out.push(kind);
        put_str(&mut out, task_id);
        out.extend_from_slice(payload.as_bytes());
        out
    }

    /// Parses [`EventRow::encode`]'s bytes.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self> {
        let mut reader = Reader(bytes);
        let version = reader.u64()?;
        let kind = reader.u8()?;
        let task_id = reader.str()?;
        let payload = reader.rest()?;
        Ok(EventRow {
            task_id,
            version,
            kind,
            payload,
        })
    }
}

fn put_str(out: &mut Vec<u8>, text: &str) {
    // Ids are a few dozen bytes; a length beyond u32 cannot come from this workload.
    let len = u32::try_from(text.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(text.as_bytes());
}

/// A cursor over bytes being decoded.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8]> {
        ensure!(
            self.0.len() >= len,
            "record too short: {} bytes left, {len} needed",
            self.0.len()
        );
        let (head, tail) = self.0.split_at(len);
        self.0 = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?.first().copied().unwrap_or_default())
    }

    fn u64(&mut self) -> Result<u64> {
        let bytes: [u8; 8] = self.take(8)?.try_into().context("eight bytes")?;
        Ok(u64::from_le_bytes(bytes))
    }

    fn str(&mut self) -> Result<String> {
        let bytes: [u8; 4] = self.take(4)?.try_into().context("four bytes")?;
        let len = usize::try_from(u32::from_le_bytes(bytes)).context("length")?;
        let text = self.take(len)?;
        Ok(std::str::from_utf8(text).context("not UTF-8")?.to_string())
    }

    fn rest(&mut self) -> Result<String> {
        let text = std::mem::take(&mut self.0);
        Ok(std::str::from_utf8(text).context("not UTF-8")?.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip_and_short_bytes_are_errors() {
        let row = TaskRow {
            version: 7,
            status_ms: 1_795_364_400_123,
            state: State::Working,
            context_id: "ctx-1".into(),
            status_message: "hello".into(),
        };
        let bytes = row.encode();
        assert_eq!(TaskRow::decode(&bytes).unwrap(), row);
        for cut in 0..21 + 5 {
            assert!(TaskRow::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let event = EventRow::encode("task-1", 3, 2, "payload");
        let decoded = EventRow::decode(&event).unwrap();
        assert_eq!(
            decoded,
            EventRow {
                task_id: "task-1".into(),
                version: 3,
                kind: 2,
                payload: "payload".into()
            }
        );
        assert!(EventRow::decode(&event[..12]).is_err());
    }
}
