//! Decodes an input into an allocator configuration and a sequence of
//! operations, runs them against a fresh instance and checks every result
//! against the shadow model.
//!
//! Input layout: four configuration bytes (see [`decode_config`]), then
//! operations, each an opcode byte and its operands. The input ends the
//! run wherever it runs out.

use std::panic::{catch_unwind, AssertUnwindSafe};

use apex_core::layout::{LARGE_MAX, MAX_CLASS_SIZE, SEGMENT_SIZE, SLICE_SIZE};

use crate::api::{Config, Instance};
use crate::arena::{splitmix, FatalReport, Flavor, Setup, ARENA_SIZE, PROVIDER};
use crate::model::{Block, Model};

/// Which target runs: plain operations, or operations plus attacks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Ops,
    Corrupt,
}

/// How a run ended (failures never return: they panic).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every operation ran and every check passed.
    Completed,
    /// After an attack, the allocator ended through its fatal path.
    Fatal(String),
    /// After an attack, the heap's own check reported it broken.
    Detected(String),
}

/// Whether `APEX_FUZZ_TRACE` is set: each operation and its result are
/// printed to stderr, to read what a crashing input does.
pub fn tracing() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("APEX_FUZZ_TRACE").is_some())
}

#[macro_export]
macro_rules! trace {
    ($($arg:tt)*) => {
        if $crate::engine::tracing() {
            eprintln!($($arg)*);
        }
    };
}
pub(crate) use trace;

/// Live blocks at once.
const MAX_LIVE: usize = 256;
/// Bytes in live blocks at once (with the alignment slack of big
/// alignments): bounds each input's memory and time.
pub const MAX_LIVE_BYTES: usize = 128 << 20;
/// Operations beyond the configuration bytes that are executed.
const MAX_OPS: usize = 4096;

/// Sizes at and around the core's thresholds.
const EDGES: [usize; 24] = [
    0,
    1,
    8,
    16,
    17,
    32,
    128,
    129,
    1024,
    1025,
    4096,
    8192,
    16384,
    65536,
    MAX_CLASS_SIZE - 16,
    MAX_CLASS_SIZE,
    MAX_CLASS_SIZE + 1,
    SLICE_SIZE,
    SLICE_SIZE + 1,
    LARGE_MAX - SLICE_SIZE,
    LARGE_MAX,
    LARGE_MAX + 1,
    SEGMENT_SIZE - 4 * SLICE_SIZE,
    SEGMENT_SIZE,
];

/// A cursor over the input.
pub struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    pub fn u8(&mut self) -> Option<u8> {
        let b = *self.data.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    pub fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes([self.u8()?, self.u8()?]))
    }

    /// An index below `n` (which must not be zero).
    pub fn index(&mut self, n: usize) -> Option<usize> {
        Some(self.u16()? as usize % n)
    }

    pub fn bytes(&mut self, n: usize) -> Option<&[u8]> {
        let s = self.data.get(self.pos..self.pos + n)?;
        self.pos += n;
        Some(s)
    }

    pub fn size(&mut self) -> Option<usize> {
        let sel = self.u8()?;
        let v = self.u16()? as usize;
        let delta = (sel >> 4) as usize;
        Some(match sel & 15 {
            0..=5 => v % 257,
            6..=8 => v % 2049,
            9 => v % 16385,
            10 => v * 8 % (MAX_CLASS_SIZE + 1),
            11 | 15 => (EDGES[v % EDGES.len()] + delta).saturating_sub(8),
            12 => MAX_CLASS_SIZE + v * 64,
            13 => v * 256,
            _ => LARGE_MAX + v * 128,
        })
    }
}

/// The configuration bytes:
/// - byte 0: bits 0-1 provider flavour, bit 2 clock, bits 3-4 reservation
///   budget (unbounded, 1 GiB, 256 MiB, 96 MiB), bits 5-6 purge delay
///   (100, 0, 1, 10 ms or events);
/// - byte 1: bits 0-1 segment cache slots (8, 0, 1, 2), bits 2-3 resident
///   cache budget (256 MiB, 0, 1 MiB, 64 MiB);
/// - byte 2: mitigations: the core's default preset (bits 0-1 = 0 or 1),
///   all (2), or bits 2-7 with byte 3's low nibble as the flags (3);
/// - byte 3: mixed into the entropy the core's keys come from.
pub fn decode_config(c: [u8; 4]) -> Config {
    let seed = splitmix(u32::from_le_bytes(c) as u64);
    Config {
        setup: Setup {
            flavor: Flavor::from_bits(c[0]),
            clock: c[0] & 4 != 0,
            budget: [ARENA_SIZE, 1 << 30, 256 << 20, 96 << 20][(c[0] >> 3) as usize & 3],
            seed,
        },
        purge_delay_ms: [100, 0, 1, 10][(c[0] >> 5) as usize & 3],
        segment_cache: [8, 0, 1, 2][c[1] as usize & 3],
        huge_cache_bytes: [256 << 20, 0, 1 << 20, 64 << 20][(c[1] >> 2) as usize & 3],
        mitigations: match c[2] & 3 {
            0 | 1 => None,
            2 => Some(u32::MAX),
            _ => Some((c[2] >> 2) as u32 | ((c[3] as u32 & 15) << 6)),
        },
    }
}

/// Runs one input. Panics on any finding: a check that failed, or (in the
/// ops target, or before any attack) the allocator's fatal path.
pub fn run(data: &[u8], mode: Mode) -> Outcome {
    let Some(cfg) = data.get(..4) else {
        return Outcome::Completed;
    };
    let mut cfg = decode_config([cfg[0], cfg[1], cfg[2], cfg[3]]);
    if mode == Mode::Corrupt {
        cfg.mitigations = crate::api::with_attack_mitigations(cfg.mitigations);
    }
    trace!("config {cfg:?}");
    let mut inst = Instance::start(&cfg);
    let mut model = Model::default();
    let mut r = Reader { data, pos: 4 };
    let result = catch_unwind(AssertUnwindSafe(|| {
        let mut n = 0;
        while n < MAX_OPS {
            n += 1;
            match step(&mut inst, &mut model, &mut r, mode) {
                Some(Ok(())) => {}
                Some(Err(detected)) => return Outcome::Detected(detected),
                None => break,
            }
        }
        finish(&mut inst, &mut model)
    }));
    if let Err(e) = &result {
        trace!("unwound: {:?}", e.downcast_ref::<FatalReport>());
    }
    match result {
        Ok(outcome) => {
            trace!("outcome: {outcome:?}");
            outcome
        }
        Err(payload) => match payload.downcast::<FatalReport>() {
            Ok(report) => {
                assert!(
                    mode == Mode::Corrupt && model.corrupted,
                    "fatal report without any misuse: {}",
                    report.0
                );
                Outcome::Fatal(report.0)
            }
            Err(other) => std::panic::resume_unwind(other),
        },
    }
}

/// A null block is acceptable only when a reservation was refused (the
/// budget) or after an attack.
fn check_null(model: &Model, what: &str, size: usize) {
    assert!(
        PROVIDER.refusals() > 0 || model.corrupted,
        "{what}({size}) returned null with memory to spare"
    );
}

/// Runs one operation. `None`: the input ended. `Some(Err)`: the heap's
/// check found the damage of an attack.
fn step(
    inst: &mut Instance,
    model: &mut Model,
    r: &mut Reader,
    mode: Mode,
) -> Option<Result<(), String>> {
    let mut op = r.u8()?;
    if mode == Mode::Ops {
        op %= 14;
    } else {
        op %= 19;
    }
    match op {
        0..=4 => {
            let sel = r.u8()?;
            let size = r.size()?;
            let heap = (sel & 1) as usize;
            let (zeroed, align) = match op {
                3 => (true, 16),
                4 => (sel & 2 != 0, 1usize << (4 + (sel >> 2) % 23)),
                _ => (false, 16),
            };
            let footprint = size + if align > 4096 { align } else { 0 };
            if model.live.len() >= MAX_LIVE || model.live_bytes + footprint > MAX_LIVE_BYTES {
                return Some(Ok(()));
            }
            let p = match (zeroed, align > 16 || op == 4) {
                (false, false) => inst.malloc(heap, size),
                (true, false) => inst.zalloc(heap, size),
                (false, true) => inst.malloc_aligned(heap, size, align),
                (true, true) => inst.zalloc_aligned(heap, size, align),
            };
            trace!("alloc op {op} heap {heap} size {size} align {align} -> {p:?}");
            if p.is_null() {
                check_null(model, "malloc", size);
                return Some(Ok(()));
            }
            // SAFETY: just allocated.
            let usable = unsafe { model.check_new(inst, p, size, align, zeroed) };
            let b = Block {
                size,
                usable,
                align,
                seed: sel ^ (size as u8),
                heap,
                tainted: false,
            };
            // SAFETY: a new block of `usable` bytes, checked accessible.
            unsafe { Model::fill(p, &b) };
            model.insert(p as usize, b);
        }
        5 | 6 => {
            let sel = r.u8()?;
            if model.keys.is_empty() {
                return Some(Ok(()));
            }
            let i = r.index(model.keys.len())?;
            let size = r.size()?.max(1);
            let (p, old) = model.remove_at(i);
            // SAFETY: a live block of the model.
            unsafe { Model::check(p as *mut u8, &old, usize::MAX) };
            let growth =
                size.saturating_sub(old.size) + if old.align > 4096 { old.align } else { 0 };
            if model.live_bytes + old.footprint() + growth > MAX_LIVE_BYTES {
                model.insert(p, old);
                return Some(Ok(()));
            }
            let heap = if sel & 1 != 0 { old.heap ^ 1 } else { old.heap };
            let aligned = op == 6 && old.align > 16;
            // SAFETY: a live block of this instance, allocated with `old.align`.
            let q = unsafe {
                if aligned {
                    inst.realloc_aligned(heap, p as *mut u8, old.align, size)
                } else {
                    inst.realloc(heap, p as *mut u8, size)
                }
            };
            trace!(
                "realloc {p:#x} (size {}) heap {heap} to {size} -> {q:?}",
                old.size
            );
            if q.is_null() {
                check_null(model, "realloc", size);
                model.insert(p, old);
                return Some(Ok(()));
            }
            let align = if aligned || q as usize == p {
                old.align
            } else {
                16
            };
            // SAFETY: just returned by `realloc`; the preserved bytes are
            // checked after the block was found accessible.
            let usable = unsafe { model.check_new(inst, q, size, align, false) };
            // SAFETY: as above.
            unsafe { Model::check(q, &old, size.min(old.size)) };
            if q as usize != p {
                model.remember_freed(p, old.usable);
            }
            let b = Block {
                size,
                usable,
                align,
                heap: if q as usize == p { old.heap } else { heap },
                ..old
            };
            // SAFETY: the block `realloc` returned, checked accessible.
            unsafe { Model::fill(q, &b) };
            model.insert(q as usize, b);
        }
        7..=9 => {
            if model.keys.is_empty() {
                return Some(Ok(()));
            }
            let i = r.index(model.keys.len())?;
            let (p, b) = model.remove_at(i);
            // SAFETY: a live block of the model.
            unsafe { Model::check(p as *mut u8, &b, usize::MAX) };
            let heap = if op == 9 { b.heap ^ 1 } else { b.heap };
            trace!("free {p:#x} (size {}) heap {heap}", b.size);
            // SAFETY: a live block of this instance, freed once.
            unsafe { inst.free(heap, p as *mut u8) };
            model.remember_freed(p, b.usable);
        }
        10 => {
            trace!("verify");
            if let Err(e) = inst.verify() {
                assert!(model.corrupted, "verify: {e}");
                return Some(Err(e));
            }
            if !model.corrupted {
                let (blocks, _) = inst.live_counts();
                assert_eq!(blocks, model.live.len() as u64, "live block count");
            }
            for (&p, b) in model.live.iter().take(8) {
                // SAFETY: live blocks of this instance.
                let usable = unsafe { inst.usable_size(p as *const u8) };
                assert_eq!(usable, b.usable, "usable size of {p:#x} changed");
            }
        }
        11 => {
            let sel = r.u8()?;
            trace!("advance {} ms, decay heap {}", sel as u64 * 4, sel & 1);
            PROVIDER.advance(sel as u64 * 4);
            inst.decay((sel & 1) as usize);
        }
        12 => {
            let sel = r.u8()?;
            trace!("release (now: {}) heap {}", sel & 2 != 0, sel & 1);
            if sel & 2 != 0 {
                inst.release_now((sel & 1) as usize);
            } else {
                inst.release_empty_slabs((sel & 1) as usize);
            }
        }
        13 => {
            let sel = r.u8()?;
            trace!("recreate heap {}", sel & 1);
            inst.recreate((sel & 1) as usize);
        }
        _ => crate::attack::attack(inst, model, r, op - 14)?,
    }
    Some(Ok(()))
}

/// At the end of an input: every block still holds its pattern, frees
/// cleanly, and (without attacks) the counters come back to zero.
fn finish(inst: &mut Instance, model: &mut Model) -> Outcome {
    if let Err(e) = inst.verify() {
        assert!(model.corrupted, "verify at the end: {e}");
        return Outcome::Detected(e);
    }
    while !model.keys.is_empty() {
        let (p, b) = model.remove_at(model.keys.len() - 1);
        // SAFETY: a live block of the model.
        unsafe { Model::check(p as *mut u8, &b, usize::MAX) };
        // Alternate the freeing heap so both paths see the ends of slabs.
        let heap = b.heap ^ (p >> 4 & 1);
        // SAFETY: a live block of this instance, freed once.
        unsafe { inst.free(heap, p as *mut u8) };
    }
    for h in 0..2 {
        inst.release_now(h);
    }
    if let Err(e) = inst.verify() {
        assert!(model.corrupted, "verify after freeing everything: {e}");
        return Outcome::Detected(e);
    }
    if !model.corrupted {
        assert_eq!(
            inst.live_counts(),
            (0, 0),
            "blocks or bytes still counted as live"
        );
    }
    Outcome::Completed
}
