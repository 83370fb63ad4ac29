//! Compact task and context ids for the in-memory task table: a canonical UUID (the ids the store
//! assigns, and what A2A recommends) is kept as its 16 bytes inline, any other id as a boxed
//! string. 24 bytes either way, and no heap allocation for a UUID, which keeps an idle task small
//! (DESIGN.md §6, E7).

use std::fmt;

/// A task or context id.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CompactId {
    /// A UUID in canonical lowercase hyphenated form (`8-4-4-4-12` hex digits).
    Uuid([u8; 16]),
    /// Any other id, verbatim.
    Text(Box<str>),
}

const _: () = assert!(size_of::<CompactId>() == 24);

impl CompactId {
    /// The compact form of `id`; it prints back exactly as given.
    pub fn new(id: &str) -> Self {
        parse_canonical_uuid(id).map_or_else(|| CompactId::Text(id.into()), CompactId::Uuid)
    }

    /// Whether this is `id`.
    pub fn is(&self, id: &str) -> bool {
        match self {
            CompactId::Uuid(bytes) => parse_canonical_uuid(id).is_some_and(|other| other == *bytes),
            CompactId::Text(text) => **text == *id,
        }
    }
}

impl fmt::Display for CompactId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CompactId::Uuid(bytes) => {
                for (i, byte) in bytes.iter().enumerate() {
                    if matches!(i, 4 | 6 | 8 | 10) {
                        f.write_str("-")?;
                    }
                    write!(f, "{byte:02x}")?;
                }
                Ok(())
            }
            CompactId::Text(text) => f.write_str(text),
        }
    }
}

impl fmt::Debug for CompactId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

/// The 16 bytes of a UUID written in canonical lowercase hyphenated form, else `None` (so that
/// every id prints back byte for byte as it came in).
fn parse_canonical_uuid(text: &str) -> Option<[u8; 16]> {
    let bytes = text.as_bytes();
    if bytes.len() != 36 {
        return None;
    }
    let mut out = [0u8; 16];
    let mut nibbles = 0usize;
    for (i, c) in bytes.iter().enumerate() {
        if matches!(i, 8 | 13 | 18 | 23) {
            if *c != b'-' {
                return None;
            }
            continue;
        }
        let value = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return None,
        };
        let slot = out.get_mut(nibbles / 2)?;
        *slot = (*slot << 4) | value;
        nibbles += 1;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_inline_and_everything_prints_back_verbatim() {
        let uuid = "0f9d7a34-1c2b-4e5f-8a9b-0c1d2e3f4a5b";
        let id = CompactId::new(uuid);
        assert!(matches!(id, CompactId::Uuid(_)));
        assert_eq!(id.to_string(), uuid);
        assert!(id.is(uuid));
        for other in [
            "0F9D7A34-1C2B-4E5F-8A9B-0C1D2E3F4A5B",
            "task-1",
            "",
            "0f9d7a34-1c2b-4e5f-8a9b-0c1d2e3f4a5",
            "0f9d7a34x1c2b-4e5f-8a9b-0c1d2e3f4a5b",
        ] {
            let id = CompactId::new(other);
            assert!(matches!(id, CompactId::Text(_)), "{other}");
            assert_eq!(id.to_string(), other);
            assert!(id.is(other) && !id.is(uuid));
        }
    }
}
