//! Hardening: the mitigations against heap exploitation, each a flag that
//! names the attack it stops, and the presets that group them.
//!
//! One binary serves every preset: the flags are read once, when an
//! instance starts (`Global::set_mitigations`), and each
//! heap keeps a copy beside its hot fields, so a disabled mitigation costs
//! one predictable branch at most.
//!
//! | preset | flags |
//! |---|---|
//! | `off` | none: links are still encoded with a per-slab secret, misuse that the allocator trips over is still reported |
//! | `default` | `links`, `bitmap`, `foreign`, `guards`, `shuffle` |
//! | `full` | everything |
//!
//! Text form (`APEX_HARDEN`, [`Mitigations::parse`]): a preset, then flags
//! added with `+name` or removed with `-name`, separated by commas:
//! `default,+zero,-shuffle`. A bare flag name means `+name`.

use bitflags::bitflags;

bitflags! {
    /// The mitigations in force. Each flag's documentation says which
    /// attack it stops and how.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Mitigations: u32 {
        /// Free-list link forgery: every link popped from a free list must
        /// land on a block boundary inside the carved part of the same slab
        /// (links are encoded with a per-slab secret and a multiplicative
        /// tweak of their slot, so a reader of freed memory does not see
        /// pointers). A forged link to anything else ends the process.
        const LINKS = 1 << 0;
        /// Double and invalid frees, and handing out a live block: one bit
        /// per 16-byte granule, out of line in the segment header, says
        /// which blocks are handed out. A free of a block whose bit is clear
        /// (never allocated, already freed, also from another thread) ends
        /// the process, and so does a free list that offers a live block.
        const BITMAP = 1 << 1;
        /// Foreign pointers: `free` or `realloc` of a pointer that is not in
        /// this allocator's memory (stack, globals, another allocator's
        /// blocks, forged addresses) ends the process instead of being
        /// ignored; a freed huge block freed again is reported too.
        const FOREIGN = 1 << 2;
        /// Bookkeeping within reach of a linear overflow: an inaccessible
        /// guard page sits between each segment's header (descriptors,
        /// bitmap) and its first block, so a backward fill from a block
        /// faults instead of rewriting metadata.
        const GUARDS = 1 << 3;
        /// Predictable layout: fresh blocks are carved in a random order
        /// inside groups of neighbours (at least four blocks and 256 bytes,
        /// so blocks handed out together stay within a few cache lines),
        /// new slabs start at a random free span, and segments are placed
        /// at random addresses where the provider allows.
        const SHUFFLE = 1 << 4;
        /// Overflow into a live neighbour: the last 8 bytes of every small
        /// block hold a keyed canary (not part of the usable size), checked
        /// when the block is freed.
        const CANARY = 1 << 5;
        /// Use after free and uninitialised reads: freed small blocks are
        /// zeroed (secrets do not survive `free`), and a block is checked to
        /// still be zero when it is handed out again, so a write after free
        /// is caught.
        const ZERO = 1 << 6;
        /// Use after free: a thread's freed small blocks of its own wait
        /// in a FIFO quarantine before they can be reused, and freed large
        /// blocks are made inaccessible while they wait, so a dangling
        /// pointer does not reach the next owner's data soon after the
        /// free. (Another thread's blocks go back to their owner at once,
        /// where the live-block bitmap catches a second free.)
        const QUARANTINE = 1 << 7;
        /// Cross-class reuse: a slab keeps its size class while its segment
        /// lives (an empty slab goes back to its class, never to another
        /// size), so a dangling pointer of one size never lands inside a
        /// block of another size.
        const ISOLATE = 1 << 8;
        /// Overflows off the end of big blocks: an inaccessible guard page
        /// after every large and huge block, so a linear overflow faults
        /// before it reaches a neighbour. (Segments themselves are kept
        /// apart by unmapped space when [`Mitigations::SHUFFLE`] places
        /// them at random, so an overflow off a segment's end faults
        /// before it reaches the next segment's header.)
        const LARGE_GUARDS = 1 << 9;
        /// Predictable layout, more entropy: fresh blocks are carved in a
        /// random order across each whole carve (up to 4 KiB of blocks)
        /// rather than inside groups of neighbours. Blocks allocated one
        /// after another then land anywhere in the carve, which costs
        /// programs that use them together their cache locality (CPython:
        /// about 25% of its time).
        const WIDE_SHUFFLE = 1 << 10;
    }
}

/// Flag names in the text form, in the order they are listed.
const NAMES: [(&str, Mitigations); 11] = [
    ("links", Mitigations::LINKS),
    ("bitmap", Mitigations::BITMAP),
    ("foreign", Mitigations::FOREIGN),
    ("guards", Mitigations::GUARDS),
    ("shuffle", Mitigations::SHUFFLE),
    ("canary", Mitigations::CANARY),
    ("zero", Mitigations::ZERO),
    ("quarantine", Mitigations::QUARANTINE),
    ("isolate", Mitigations::ISOLATE),
    ("large-guards", Mitigations::LARGE_GUARDS),
    ("wide-shuffle", Mitigations::WIDE_SHUFFLE),
];

/// Why a text form was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownWord<'a>(pub &'a str);

impl Mitigations {
    /// No mitigation beyond what the allocator's own consistency needs.
    pub const OFF: Mitigations = Mitigations::empty();
    /// The cheap mitigations, on unless asked otherwise.
    pub const DEFAULT: Mitigations = Mitigations::LINKS
        .union(Mitigations::BITMAP)
        .union(Mitigations::FOREIGN)
        .union(Mitigations::GUARDS)
        .union(Mitigations::SHUFFLE);
    /// Every mitigation.
    pub const FULL: Mitigations = Mitigations::all();
    /// The mitigations that take the out-of-line malloc and free paths.
    pub const SLOW_PATHS: Mitigations = Mitigations::CANARY
        .union(Mitigations::ZERO)
        .union(Mitigations::QUARANTINE);

    /// Parses the text form (see the module docs). On an unknown word the
    /// whole value is rejected, so a typo never silently weakens anything.
    pub fn parse(text: &str) -> Result<Mitigations, UnknownWord<'_>> {
        let mut m = Mitigations::DEFAULT;
        for (i, word) in text.split(',').map(str::trim).enumerate() {
            if word.is_empty() {
                continue;
            }
            let preset = match word {
                "off" | "none" => Some(Mitigations::OFF),
                "default" => Some(Mitigations::DEFAULT),
                "full" | "all" => Some(Mitigations::FULL),
                _ => None,
            };
            if let Some(p) = preset {
                if i != 0 {
                    return Err(UnknownWord(word));
                }
                m = p;
                continue;
            }
            let (add, name) = match word.as_bytes()[0] {
                b'+' => (true, &word[1..]),
                b'-' => (false, &word[1..]),
                _ => (true, word),
            };
            let Some(&(_, flag)) = NAMES.iter().find(|(n, _)| *n == name) else {
                return Err(UnknownWord(word));
            };
            m.set(flag, add);
        }
        Ok(m)
    }

    /// Writes the flags in force as a comma-separated list of names
    /// (`none` when empty), without allocating.
    pub fn describe(self, out: &mut dyn core::fmt::Write) -> core::fmt::Result {
        let mut first = true;
        for (name, flag) in NAMES {
            if self.contains(flag) {
                if !first {
                    out.write_str(",")?;
                }
                out.write_str(name)?;
                first = false;
            }
        }
        if first {
            out.write_str("none")?;
        }
        Ok(())
    }

    /// The preset these flags equal, if any.
    pub fn preset_name(self) -> Option<&'static str> {
        match self {
            m if m == Mitigations::OFF => Some("off"),
            m if m == Mitigations::DEFAULT => Some("default"),
            m if m == Mitigations::FULL => Some("full"),
            _ => None,
        }
    }
}

impl Default for Mitigations {
    fn default() -> Self {
        Mitigations::DEFAULT
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fatal::LineBuf;

    #[test]
    fn presets_and_single_flags_parse() {
        assert_eq!(Mitigations::parse("off"), Ok(Mitigations::OFF));
        assert_eq!(Mitigations::parse("full"), Ok(Mitigations::FULL));
        assert_eq!(Mitigations::parse(""), Ok(Mitigations::DEFAULT));
        assert_eq!(
            Mitigations::parse("default,+zero,-shuffle"),
            Ok((Mitigations::DEFAULT | Mitigations::ZERO) - Mitigations::SHUFFLE)
        );
        assert_eq!(
            Mitigations::parse("off, canary ,+large-guards"),
            Ok(Mitigations::CANARY | Mitigations::LARGE_GUARDS)
        );
        assert_eq!(
            Mitigations::parse("full,-quarantine"),
            Ok(Mitigations::FULL - Mitigations::QUARANTINE)
        );
    }

    #[test]
    fn unknown_words_are_rejected_whole() {
        assert_eq!(Mitigations::parse("fulll"), Err(UnknownWord("fulll")));
        assert_eq!(
            Mitigations::parse("default,+zer0"),
            Err(UnknownWord("+zer0"))
        );
        // A preset after the first word would silently drop earlier flags.
        assert_eq!(Mitigations::parse("+zero,off"), Err(UnknownWord("off")));
    }

    #[test]
    fn every_flag_has_a_name_and_describe_round_trips() {
        let mut named = Mitigations::empty();
        for (_, f) in NAMES {
            named |= f;
        }
        assert_eq!(named, Mitigations::all());
        for m in [
            Mitigations::OFF,
            Mitigations::DEFAULT,
            Mitigations::FULL,
            Mitigations::CANARY | Mitigations::SHUFFLE,
        ] {
            let mut line = LineBuf::new();
            m.describe(&mut line).unwrap();
            let text = line.as_str();
            let back = if text == "none" {
                Mitigations::parse("off")
            } else {
                // Flags alone are added to `off`.
                let mut s = LineBuf::new();
                core::fmt::Write::write_str(&mut s, "off,").unwrap();
                core::fmt::Write::write_str(&mut s, text).unwrap();
                Mitigations::parse(s.as_str()).map_err(|_| UnknownWord("?"))
            };
            assert_eq!(back, Ok(m), "{text}");
        }
        assert_eq!(Mitigations::DEFAULT.preset_name(), Some("default"));
        assert_eq!(Mitigations::CANARY.preset_name(), None);
    }
}
