//! What an attacker with a heap bug does, for the `corrupt` target: write
//! into freed blocks (their first 16 bytes hold the free-list links), free
//! a block twice, free pointers that are not block starts, and overflow
//! live blocks.
//!
//! Every write stays in memory the provider has reserved and made
//! accessible (so the harness itself never faults) and off every live
//! block, except overflows, which mark the live blocks they reach as
//! tainted: the model stops checking what the attack overwrote, and checks
//! everything else as before.

use crate::api::Instance;
use crate::arena::PROVIDER;
use crate::engine::Reader;
use crate::model::Model;

/// Runs attack number `which` (0..5). `None`: the input ended.
pub fn attack(inst: &mut Instance, model: &mut Model, r: &mut Reader, which: u8) -> Option<()> {
    let sel = r.u8()?;
    let heap = (sel & 1) as usize;
    match which {
        0 => {
            // Use after free: a write into a freed block.
            if model.freed.is_empty() {
                return Some(());
            }
            let (addr, usable) = model.freed[r.index(model.freed.len())?];
            let len = 1 + (r.u8()? as usize % 16);
            // Half of the writes go to the link words at the start.
            let off = if sel & 2 != 0 {
                (sel >> 2) as usize % 16
            } else {
                r.u16()? as usize % usable.max(1)
            };
            let data = r.bytes(len)?;
            let at = addr + off;
            if model.hits_live(at, len) || !PROVIDER.is_open(at, len) {
                return Some(());
            }
            model.corrupted = true;
            crate::trace!("attack: write {data:02x?} at {at:#x} (freed block {addr:#x}+{off})");
            // SAFETY: reserved, accessible arena memory holding no live
            // block (checked above).
            unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), at as *mut u8, len) };
            model.remember_dirty(at, len);
        }
        1 => {
            // Double free.
            if model.freed.is_empty() {
                return Some(());
            }
            let (addr, _) = model.freed[r.index(model.freed.len())?];
            if model.hits_live(addr, 1) {
                return Some(());
            }
            model.corrupted = true;
            crate::trace!("attack: free {addr:#x} again, heap {heap}");
            // SAFETY: deliberately a freed block; the core reads only its
            // own metadata, all in the arena.
            unsafe { inst.free(heap, addr as *mut u8) };
        }
        2 => {
            // A pointer inside a live block, to free or realloc.
            if model.keys.is_empty() {
                return Some(());
            }
            let p = model.keys[r.index(model.keys.len())?];
            let b = model.live[&p];
            if b.usable < 2 {
                return Some(());
            }
            let at = p + 1 + r.u16()? as usize % (b.usable - 1);
            model.corrupted = true;
            crate::trace!(
                "attack: free/realloc ({}) interior {at:#x} of {p:#x}",
                sel & 2 != 0
            );
            if sel & 2 != 0 {
                // SAFETY: deliberately an interior pointer.
                unsafe { inst.free(heap, at as *mut u8) };
            } else {
                // SAFETY: deliberately an interior pointer.
                let q = unsafe { inst.realloc(heap, at as *mut u8, 64) };
                if !q.is_null() {
                    // Accepted: the new block must still be a proper one.
                    // SAFETY: just returned by `realloc`.
                    let usable = unsafe { model.check_new(inst, q, 64, 16, false) };
                    let nb = crate::model::Block {
                        size: 64,
                        usable,
                        align: 16,
                        seed: sel,
                        heap,
                        tainted: false,
                    };
                    // SAFETY: the new block, checked accessible.
                    unsafe { Model::fill(q, &nb) };
                    model.insert(q as usize, nb);
                }
            }
        }
        3 => {
            // A pointer that was never handed out.
            let v = r.u16()? as usize;
            let stack = [0u8; 64];
            let foreign = Box::new([0u8; 64]);
            let target = match (sel >> 1) & 3 {
                // Anywhere in the segment of a live block: a page, plus
                // some granules, plus one byte (misaligned) when the
                // heap bit is set.
                0 | 1 if !model.keys.is_empty() => {
                    let p = model.keys[v % model.keys.len()];
                    let seg = p & !(apex_core::layout::SEGMENT_SIZE - 1);
                    let off = (v * 4096 + (sel as usize >> 3) * 16 + (sel & 1) as usize)
                        % apex_core::layout::SEGMENT_SIZE;
                    seg + off
                }
                // Just past a live block: the next block slot, which may
                // be free, never carved or another live block.
                2 if !model.keys.is_empty() => {
                    let p = model.keys[v % model.keys.len()];
                    p + model.live[&p].usable * (1 + (sel as usize >> 3) % 3)
                }
                // Memory the allocator does not own.
                _ => match v % 3 {
                    0 => stack.as_ptr() as usize + 16,
                    1 => foreign.as_ptr() as usize,
                    _ => PROVIDER.arena().0 + PROVIDER.arena().1 - 4096,
                },
            };
            if model.live.contains_key(&target) {
                return Some(());
            }
            model.corrupted = true;
            crate::trace!("attack: free never-allocated {target:#x}, heap {heap}");
            // SAFETY: deliberately not a live block; the core reads only
            // its segment map and, for its own segments, their headers.
            unsafe { inst.free(heap, target as *mut u8) };
            drop(foreign);
        }
        _ => {
            // A linear overflow off the end of a live block (from the end
            // of the requested size, or of the usable size).
            if model.keys.is_empty() {
                return Some(());
            }
            let p = model.keys[r.index(model.keys.len())?];
            let b = model.live[&p];
            let at = p + if sel & 2 != 0 { b.size } else { b.usable };
            let len = 1 + (r.u8()? as usize % 32);
            let data = r.bytes(len)?;
            if !PROVIDER.is_open(at, len) {
                return Some(());
            }
            // Whatever the write reaches is no longer checked: the block's
            // own slack past its requested size, and any live neighbour.
            let hit: Vec<usize> = model.live_overlapping(at, len).collect();
            for q in hit {
                if let Some(v) = model.live.get_mut(&q) {
                    v.tainted = true;
                }
            }
            let own_end = p + b.usable;
            if at + len > own_end {
                model.corrupted = true;
                let from = own_end.max(at);
                model.remember_dirty(from, at + len - from);
            }
            crate::trace!(
                "attack: overflow {data:02x?} at {at:#x} (block {p:#x}+{})",
                b.size
            );
            // SAFETY: reserved, accessible arena memory (checked above);
            // the live blocks it reaches are tainted in the model.
            unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), at as *mut u8, len) };
        }
    }
    Some(())
}
