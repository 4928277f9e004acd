//! Tags that two or more digests share: the rare entries that must be named by their full
//! digest because the 96 bits an entry keeps do not tell them apart.
//!
//! Such a pair can only be crafted (the engine's own digests are keyed by the namespace's
//! secret; a caller's RIPEMD-160 digests agree in 108 bits by chance about once in 2^54
//! pairs). A write that finds its tag held by another digest (it reads the holder's record
//! to know) moves the holder here under its full digest, and from then on every entry of
//! that tag lives here, found by digest. Every copy written while a tag is shared is
//! flagged on the device (`format::FLAG_SHARED_TAG`), so that a cold start knows which
//! copies need their full digest compared (`recovery`).
//!
//! Invariants: a shared tag has no entry in the partition's sprigs; the digests here are
//! distinct. Cost: a lookup of any tag checks `is_empty` (one branch) while none is
//! shared, and a linear search of a handful of entries otherwise.

use super::entry::{DigestTag, IndexEntry};
use crate::format::Digest;

/// How an entry is named within its partition: by its tag, or, where its tag is shared,
/// by its full digest. A walk over the index gives each entry its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntryName {
    Tag(DigestTag),
    Digest(Digest),
}

impl EntryName {
    pub fn tag(&self) -> DigestTag {
        match self {
            EntryName::Tag(tag) => *tag,
            EntryName::Digest(digest) => DigestTag::of(digest),
        }
    }
}

#[derive(Default)]
pub(super) struct SharedTags {
    entries: Vec<(Digest, IndexEntry)>,
}

impl SharedTags {
    pub fn is_shared(&self, tag: DigestTag) -> bool {
        !self.entries.is_empty() && self.entries.iter().any(|(_, e)| e.tag() == tag)
    }

    pub fn get(&self, digest: &Digest) -> Option<&IndexEntry> {
        self.entries.iter().find(|(d, _)| d == digest).map(|(_, e)| e)
    }

    /// Inserts or replaces `digest`'s entry; returns the one it replaced.
    pub fn upsert(&mut self, digest: &Digest, entry: IndexEntry) -> Option<IndexEntry> {
        debug_assert!(entry.tag() == DigestTag::of(digest));
        match self.entries.iter_mut().find(|(d, _)| d == digest) {
            Some((_, held)) => Some(std::mem::replace(held, entry)),
            None => {
                self.entries.push((*digest, entry));
                None
            }
        }
    }

    pub fn remove(&mut self, digest: &Digest) -> Option<IndexEntry> {
        let at = self.entries.iter().position(|(d, _)| d == digest)?;
        Some(self.entries.swap_remove(at).1)
    }

    pub fn iter(&self) -> impl Iterator<Item = &(Digest, IndexEntry)> + '_ {
        self.entries.iter()
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut IndexEntry> + '_ {
        self.entries.iter_mut().map(|(_, e)| e)
    }

    pub fn allocated_bytes(&self) -> usize {
        self.entries.capacity() * std::mem::size_of::<(Digest, IndexEntry)>()
    }

    /// Checks the invariants of the module comment; for tests.
    #[cfg(test)]
    pub fn check(&self) {
        for (i, (digest, entry)) in self.entries.iter().enumerate() {
            assert_eq!(entry.tag(), DigestTag::of(digest), "a shared entry under another digest");
            assert!(self.entries[..i].iter().all(|(d, _)| d != digest), "a digest shared twice");
        }
    }
}
