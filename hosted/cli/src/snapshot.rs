//! The statistics document the library writes with `APEX_SHOW_STATS=json`
//! (to `APEX_STATS_FILE`), as Rust types.
//!
//! Top-level keys and totals are required, so a document of another shape is
//! reported instead of read as zeros; the per-span details are optional,
//! since a free span has no size class.

use std::fmt;
use std::path::Path;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};

/// One statistics document: the state of one process's heap.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct Snapshot {
    /// The library's version.
    #[serde(rename = "apexalloc")]
    pub version: String,
    /// Process id of the program that wrote it.
    pub pid: u64,
    /// The program's name.
    #[serde(default)]
    pub program: String,
    /// The hardening preset named in `APEX_HARDEN`.
    #[serde(default)]
    pub preset: String,
    /// The mitigations in force.
    #[serde(default)]
    pub harden: Vec<String>,
    /// Figures summed over the whole process.
    pub totals: Totals,
    /// Per size class.
    #[serde(default)]
    pub classes: Vec<Class>,
    /// Per thread (threads alive at exit, and those whose counters were kept).
    #[serde(default)]
    pub threads: Vec<ThreadStats>,
    /// Every segment with its spans.
    #[serde(default)]
    pub segments: Vec<Segment>,
}

/// Process-wide figures, in bytes unless named otherwise.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct Totals {
    /// Bytes in live blocks (usable size).
    pub allocated: u64,
    /// Bytes in spans in use (slabs and large blocks) plus huge blocks.
    pub active: u64,
    /// Bytes the allocator holds in memory (touched and not given back).
    pub resident: u64,
    /// Bytes of address space mapped.
    pub mapped: u64,
    /// Bytes mapped but given back to the system (kept as address space).
    pub retained: u64,
    /// Segments held.
    pub segments: u64,
    /// Blocks allocated so far.
    pub mallocs: u64,
    /// Blocks freed so far.
    pub frees: u64,
    /// Frees made by a thread other than the block's owner.
    pub remote_frees: u64,
    /// Highest `active` reached.
    pub peak_active: u64,
    /// Bytes of `active` not in live blocks, in percent of `active`.
    pub fragmentation_pct: f64,
}

/// One size class.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct Class {
    /// Class index.
    pub class: u32,
    /// Block size of the class.
    pub size: u64,
    /// Bytes in live blocks of this class.
    pub allocated: u64,
    /// Live blocks.
    pub active_blocks: u64,
    /// Slabs of this class.
    pub slabs: u64,
}

/// One thread's counters.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct ThreadStats {
    /// Thread id.
    pub tid: u64,
    /// Bytes allocated by this thread.
    pub allocated: u64,
    /// Bytes freed by this thread.
    pub deallocated: u64,
    /// Blocks allocated.
    pub mallocs: u64,
    /// Blocks freed.
    pub frees: u64,
}

/// What a segment is.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SegmentKind {
    /// A 32 MiB segment carved into slices and spans.
    Small,
    /// The mapping of one huge block.
    Huge,
    /// A kind this version does not know.
    #[serde(other)]
    Other,
}

/// One segment and its spans.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct Segment {
    /// Start address.
    #[serde(deserialize_with = "hex_address", serialize_with = "to_hex")]
    pub base: u64,
    /// Bytes of address space.
    pub size: u64,
    /// Small or huge.
    pub kind: SegmentKind,
    /// The owning heap's thread id (0: no owner, shared or abandoned).
    #[serde(default)]
    pub owner: u64,
    /// Spans in address order.
    #[serde(default)]
    pub spans: Vec<Span>,
}

/// What a span holds.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum SpanKind {
    /// Blocks of one size class.
    Slab,
    /// One large block.
    Large,
    /// One huge block (its own mapping).
    Huge,
    /// Free pages.
    Free,
    /// A kind this version does not know.
    #[serde(other)]
    Other,
}

impl fmt::Display for SpanKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SpanKind::Slab => "slab",
            SpanKind::Large => "large",
            SpanKind::Huge => "huge",
            SpanKind::Free => "free",
            SpanKind::Other => "other",
        })
    }
}

/// One span: a run of slices inside a segment.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct Span {
    /// Offset from the segment's base, in bytes.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
    /// What it holds.
    pub kind: SpanKind,
    /// Size class (slabs).
    #[serde(default)]
    pub class: Option<u32>,
    /// Block size (slabs; the block's size for large and huge spans).
    #[serde(default)]
    pub block_size: Option<u64>,
    /// Blocks in use.
    #[serde(default)]
    pub used: u64,
    /// Blocks the span holds.
    #[serde(default)]
    pub blocks: u64,
}

impl Span {
    /// Fraction of blocks in use, from 0 to 1; `None` for spans without
    /// blocks (free spans, or a span the library reported no count for).
    pub fn occupancy(&self) -> Option<f64> {
        (self.blocks > 0).then(|| self.used.min(self.blocks) as f64 / self.blocks as f64)
    }
}

fn hex_address<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Addr {
        Text(String),
        Number(u64),
    }
    match Addr::deserialize(d)? {
        Addr::Number(n) => Ok(n),
        Addr::Text(s) => {
            let digits = s
                .strip_prefix("0x")
                .or_else(|| s.strip_prefix("0X"))
                .unwrap_or(&s);
            u64::from_str_radix(digits, 16)
                .map_err(|_| de::Error::custom(format!("not a hexadecimal address: {s:?}")))
        }
    }
}

fn to_hex<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{v:#x}"))
}

/// Reads every statistics document in `text` (a file may hold several, one
/// appended per process that wrote to it).
pub fn parse_all(text: &str) -> Result<Vec<Snapshot>, serde_json::Error> {
    serde_json::Deserializer::from_str(text)
        .into_iter::<Snapshot>()
        .collect()
}

/// Reads the last statistics document of a file.
pub fn load(path: &Path) -> Result<Snapshot, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut docs = parse_all(&text).map_err(|e| {
        format!(
            "{} is not an ApexAlloc statistics document (APEX_SHOW_STATS=json): {e}",
            path.display()
        )
    })?;
    docs.pop()
        .ok_or_else(|| format!("{} holds no statistics document", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_hex_text_or_numbers() {
        let seg: Segment =
            serde_json::from_str(r#"{"base": "0x7f0000010000", "size": 1, "kind": "huge"}"#)
                .unwrap();
        assert_eq!(seg.base, 0x7f00_0001_0000);
        let seg: Segment =
            serde_json::from_str(r#"{"base": 4096, "size": 1, "kind": "small"}"#).unwrap();
        assert_eq!(seg.base, 4096);
        assert!(
            serde_json::from_str::<Segment>(r#"{"base": "zz", "size": 1, "kind": "small"}"#)
                .is_err()
        );
    }

    #[test]
    fn unknown_kinds_and_missing_span_details_are_accepted() {
        let span: Span =
            serde_json::from_str(r#"{"offset": 0, "len": 65536, "kind": "guard"}"#).unwrap();
        assert_eq!(span.kind, SpanKind::Other);
        assert_eq!(span.occupancy(), None);
        let span: Span = serde_json::from_str(
            r#"{"offset": 0, "len": 65536, "kind": "slab", "class": 3, "block_size": 48, "used": 3, "blocks": 12}"#,
        )
        .unwrap();
        assert_eq!(span.occupancy(), Some(0.25));
    }

    #[test]
    fn several_documents_in_one_file() {
        let one = r#"{"apexalloc": "0.1.0", "pid": 7, "totals": {"allocated": 1, "active": 2,
            "resident": 3, "mapped": 4, "retained": 0, "segments": 1, "mallocs": 5, "frees": 4,
            "remote_frees": 0, "peak_active": 2, "fragmentation_pct": 50.0}}"#;
        let two = one.replace("\"pid\": 7", "\"pid\": 8");
        let docs = parse_all(&format!("{one}\n{two}\n")).unwrap();
        assert_eq!(docs.iter().map(|d| d.pid).collect::<Vec<_>>(), [7, 8]);
        // A document without totals is not taken for an empty heap.
        assert!(parse_all(r#"{"apexalloc": "0.1.0", "pid": 7}"#).is_err());
    }
}
