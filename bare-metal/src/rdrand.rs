//! Hardware randomness through the `rdrand` instruction.
//!
//! Not every CPU has it (QEMU's default `qemu64` model does not), so callers
//! check [`available`] and fall back when it is false.

/// How often one 64-bit word is retried before giving up, as Intel advises
/// for a transiently exhausted generator.
const RETRIES: usize = 10;

/// True if this CPU implements `rdrand` (CPUID leaf 1, ECX bit 30).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        let leaf1 = core::arch::x86_64::__cpuid(1);
        leaf1.ecx & (1 << 30) != 0
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Fills `buf` with random bytes; false if `rdrand` is missing or keeps
/// failing (then `buf` holds partial output and must not be used).
pub fn fill(buf: &mut [u8]) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        if !available() {
            return false;
        }
        for chunk in buf.chunks_mut(8) {
            // SAFETY: `available()` just confirmed the CPU supports rdrand.
            match unsafe { next_u64() } {
                Some(word) => chunk.copy_from_slice(&word.to_le_bytes()[..chunk.len()]),
                None => return false,
            }
        }
        true
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = buf;
        false
    }
}

/// One random word, retried up to [`RETRIES`] times. Calling it requires a
/// CPU with `rdrand` ([`available`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "rdrand")]
fn next_u64() -> Option<u64> {
    for _ in 0..RETRIES {
        let mut word = 0u64;
        if core::arch::x86_64::_rdrand64_step(&mut word) == 1 {
            return Some(word);
        }
    }
    None
}

/// Fills `buf` from the time-stamp counter when `rdrand` is missing: each
/// word mixes many counter reads, whose low bits jitter with interrupts,
/// cache misses and (under a hypervisor) the host's scheduling. Weaker than
/// `rdrand` but different on every boot, which is what the allocator's
/// secrets (link encoding, canaries, header cookies) need to differ
/// between runs. Returns false only where there is no counter.
pub fn tsc_fill(buf: &mut [u8]) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for chunk in buf.chunks_mut(8) {
            for _ in 0..64 {
                // SAFETY: `rdtsc` exists on every x86_64 CPU and has no
                // side effects.
                let t = unsafe { core::arch::x86_64::_rdtsc() };
                state = (state ^ t).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                state ^= state >> 31;
            }
            chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
        }
        true
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = buf;
        false
    }
}
