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
