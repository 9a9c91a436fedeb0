//! CPU identification for per-CPU data.
//!
//! Per-CPU heaps need a small dense index for the running CPU. x86 names
//! CPUs by local APIC ID, which firmware may assign sparsely, so each CPU
//! registers once at bring-up and receives the next free index. Afterwards
//! [`current_cpu_index`] returns it, by the fastest route the CPU offers:
//!
//! | registered with | `current_cpu_index` reads | cost |
//! |---|---|---|
//! | [`register_current_cpu_fast`] on a CPU with RDPID | `IA32_TSC_AUX` by `rdpid` | a few cycles, no hypervisor exit |
//! | [`register_current_cpu_fast`] on a CPU with only RDTSCP | `IA32_TSC_AUX` by `rdtscp` | tens of cycles, no hypervisor exit |
//! | [`register_current_cpu`] (or a CPU with neither) | the APIC ID by `cpuid`, then a table | 100+ cycles; `cpuid` exits to a hypervisor (µs) |
//!
//! `register_current_cpu_fast` writes the index into the CPU's
//! `IA32_TSC_AUX` register, with a tag so a value someone else left there is
//! not mistaken for an index; it needs ring 0 and must not be used by a
//! kernel that gives `IA32_TSC_AUX` another meaning (Linux keeps its CPU
//! number there for user space: such a kernel passes its own index
//! function to [`KernelAlloc`](crate::KernelAlloc)). A kernel with a
//! `gs`-relative per-CPU block can do the same and read the index from it.
//!
//! APIC IDs are the 32-bit x2APIC IDs of CPUID leaf 0xB where the CPU has
//! it, the 8-bit initial IDs of leaf 1 otherwise; up to [`MAX_CPUS`] CPUs
//! register (further calls return `None`, and those CPUs use
//! `KernelAlloc`'s shared heap).
//!
//! [`KernelAlloc`](crate::KernelAlloc) asks for the index on every call
//! through a [`CpuIndex`]: a function ([`IndexFn`], what
//! `KernelAlloc::new` takes), the registration above ([`Registered`]), or
//! a field of the kernel's `gs`-relative per-CPU block ([`GsField`]).
//! The last two are read inline, without a call.

use core::sync::atomic::{AtomicU16, AtomicU32, AtomicU8, AtomicUsize, Ordering};

/// The most CPUs the kernel supports; indices are `0..MAX_CPUS`.
pub const MAX_CPUS: usize = 256;

/// How [`KernelAlloc`](crate::KernelAlloc) learns which CPU runs it: read
/// on every allocation, free and reallocation, so it should cost a few
/// instructions and be inlined (a type whose `current` is a plain read,
/// rather than a function pointer).
pub trait CpuIndex: Sync {
    /// The running CPU's dense index (below [`MAX_CPUS`]), or `None` if it
    /// has none yet (it then uses the shared heaps).
    fn current(&self) -> Option<usize>;
}

/// A [`CpuIndex`] that calls a function: what
/// [`KernelAlloc::new`](crate::KernelAlloc::new) takes. The call is
/// indirect, so the allocator's fast paths keep their arguments across it
/// (about 12 instructions a call more than an inlined read).
#[derive(Clone, Copy, Debug)]
pub struct IndexFn(pub fn() -> Option<usize>);

impl CpuIndex for IndexFn {
    #[inline(always)]
    fn current(&self) -> Option<usize> {
        (self.0)()
    }
}

/// A [`CpuIndex`] over this module's registration: [`current_cpu_index`],
/// inlined.
#[derive(Clone, Copy, Debug, Default)]
pub struct Registered;

impl CpuIndex for Registered {
    #[inline(always)]
    fn current(&self) -> Option<usize> {
        current_cpu_index()
    }
}

/// A [`CpuIndex`] that reads the index from a kernel's per-CPU block: the
/// `u32` at byte `OFFSET` from the `gs` base, where the kernel keeps the
/// running CPU's index (any value from [`MAX_CPUS`] up, such as
/// `u32::MAX`, for "none yet"). One `mov` a call.
#[derive(Clone, Copy, Debug)]
pub struct GsField<const OFFSET: usize>(());

impl<const OFFSET: usize> GsField<OFFSET> {
    /// The index at `gs:[OFFSET]`.
    ///
    /// # Safety
    /// Whenever the allocator runs, on every CPU, `IA32_GS_BASE` points at
    /// that CPU's per-CPU block, which holds a readable `u32` at byte
    /// `OFFSET`: the kernel sets both on each CPU before the CPU
    /// allocates, and a kernel that switches `gs` on entry from user space
    /// (`swapgs`) does not allocate before it has swapped back.
    pub const unsafe fn new() -> Self {
        GsField(())
    }
}

#[cfg(target_arch = "x86_64")]
impl<const OFFSET: usize> CpuIndex for GsField<OFFSET> {
    #[inline(always)]
    fn current(&self) -> Option<usize> {
        let index: u32;
        // SAFETY: the contract of `GsField::new`, the only way to get a
        // `GsField`: `gs:[OFFSET]` is the running CPU's index field. A
        // read, nothing else.
        unsafe {
            core::arch::asm!(
                "mov {0:e}, gs:[{1}]",
                out(reg) index,
                const OFFSET,
                options(nostack, preserves_flags, readonly),
            )
        };
        let index = index as usize;
        (index < MAX_CPUS).then_some(index)
    }
}

/// Slots of the APIC ID table: twice [`MAX_CPUS`], so linear probing stays
/// short.
const TABLE: usize = 2 * MAX_CPUS;

/// APIC ID + 1 of each table slot; 0 marks a free slot.
static TABLE_ID: [AtomicU32; TABLE] = [const { AtomicU32::new(0) }; TABLE];
/// Dense index of each table slot, valid once its ID is published.
static TABLE_INDEX: [AtomicU16; TABLE] = [const { AtomicU16::new(0) }; TABLE];

/// Indices handed out so far.
static REGISTERED: AtomicUsize = AtomicUsize::new(0);

/// How [`current_cpu_index`] finds the index (one of the `ROUTE_` values).
static ROUTE: AtomicU8 = AtomicU8::new(ROUTE_CPUID);
const ROUTE_CPUID: u8 = 0;
const ROUTE_RDTSCP: u8 = 1;
const ROUTE_RDPID: u8 = 2;

/// Whether CPUID leaf 0xB (x2APIC IDs) is there: 0 unknown, 1 no, 2 yes.
static HAS_LEAF_B: AtomicU8 = AtomicU8::new(0);

/// Bits 31:24 of an index published in `IA32_TSC_AUX`; the low 24 bits hold
/// the index. Anything else there (0 after reset) reads as "no index".
const TSC_AUX_TAG: u32 = 0xa5 << 24;
const TSC_AUX_INDEX: u32 = (1 << 24) - 1;

/// The running CPU's APIC ID: the x2APIC ID (CPUID leaf 0xB) where the CPU
/// reports one, else the 8-bit initial APIC ID (leaf 1).
pub fn apic_id() -> u32 {
    #[cfg(target_arch = "x86_64")]
    {
        use core::arch::x86_64::{__cpuid, __cpuid_count};
        let mut has_b = HAS_LEAF_B.load(Ordering::Relaxed);
        if has_b == 0 {
            // Leaf 0xB exists when the maximum leaf reaches it and its
            // sub-leaf 0 describes a level (EBX non-zero).
            // SAFETY: cpuid exists on every x86_64 CPU.
            let yes = __cpuid(0).eax >= 0xb && __cpuid_count(0xb, 0).ebx != 0;
            has_b = if yes { 2 } else { 1 };
            HAS_LEAF_B.store(has_b, Ordering::Relaxed);
        }
        if has_b == 2 {
            __cpuid_count(0xb, 0).edx
        } else {
            __cpuid(1).ebx >> 24
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        0
    }
}

/// The initial 8-bit local APIC ID (CPUID leaf 1, bits 31:24 of EBX).
pub fn lapic_id() -> u8 {
    #[cfg(target_arch = "x86_64")]
    {
        (core::arch::x86_64::__cpuid(1).ebx >> 24) as u8
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        0
    }
}

/// The first table slot to probe for `id`: a multiplicative hash, since
/// x2APIC IDs often differ only in high bits (package and die fields).
fn home(id: u32) -> usize {
    (id.wrapping_mul(0x9e37_79b1) >> 16) as usize % TABLE
}

/// The dense index registered for APIC ID `id`, if any.
fn lookup(id: u32) -> Option<usize> {
    let key = id.wrapping_add(1);
    let mut slot = home(id);
    for _ in 0..TABLE {
        match TABLE_ID[slot].load(Ordering::Acquire) {
            0 => return None,
            k if k == key => return Some(TABLE_INDEX[slot].load(Ordering::Relaxed) as usize),
            _ => slot = (slot + 1) % TABLE,
        }
    }
    None
}

/// Registers APIC ID `id`: returns its index, a new one if it had none, or
/// `None` once [`MAX_CPUS`] are registered.
fn register_id(id: u32) -> Option<usize> {
    if let Some(i) = lookup(id) {
        return Some(i);
    }
    let index = REGISTERED
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < MAX_CPUS).then_some(n + 1)
        })
        .ok()?;
    let key = id.wrapping_add(1);
    let mut slot = home(id);
    // The table has twice as many slots as indices, so a free slot exists.
    loop {
        // The index is written before the ID is published (Release), so a
        // reader that sees the ID sees the index.
        match TABLE_ID[slot].compare_exchange(0, u32::MAX, Ordering::Acquire, Ordering::Acquire) {
            Ok(_) => {
                TABLE_INDEX[slot].store(index as u16, Ordering::Relaxed);
                TABLE_ID[slot].store(key, Ordering::Release);
                return Some(index);
            }
            Err(_) => slot = (slot + 1) % TABLE,
        }
    }
}

/// Gives the running CPU the next dense index, or returns the one it already
/// has. `None` once [`MAX_CPUS`] CPUs are registered. Call it once per CPU,
/// on that CPU, before anything uses [`current_cpu_index`].
pub fn register_current_cpu() -> Option<usize> {
    register_id(apic_id())
}

/// What the CPU offers for reading `IA32_TSC_AUX`: `ROUTE_RDPID`,
/// `ROUTE_RDTSCP`, or `ROUTE_CPUID` for neither (then the register does not
/// exist).
fn tsc_aux_route() -> u8 {
    #[cfg(target_arch = "x86_64")]
    {
        use core::arch::x86_64::{__cpuid, __cpuid_count};
        let max = __cpuid(0).eax;
        if max >= 7 && __cpuid_count(7, 0).ecx & (1 << 22) != 0 {
            return ROUTE_RDPID;
        }
        if __cpuid(0x8000_0000).eax >= 0x8000_0001 && __cpuid(0x8000_0001).edx & (1 << 27) != 0 {
            return ROUTE_RDTSCP;
        }
    }
    ROUTE_CPUID
}

/// [`register_current_cpu`], then publishes the index in this CPU's
/// `IA32_TSC_AUX` register so [`current_cpu_index`] reads it with one
/// instruction (RDPID, or RDTSCP on older CPUs). On a CPU with neither, the
/// register does not exist and this is `register_current_cpu` alone.
///
/// Every CPU should register the same way: one that registered with plain
/// `register_current_cpu` while others use this one still gets its index,
/// but by the slow route, after a wasted RDPID.
///
/// # Safety
/// Ring 0 (it writes a model-specific register), on the CPU being
/// registered, and nothing else in the kernel uses `IA32_TSC_AUX`.
pub unsafe fn register_current_cpu_fast() -> Option<usize> {
    let index = register_current_cpu()?;
    let route = tsc_aux_route();
    if route != ROUTE_CPUID {
        // SAFETY: ring 0 and the register is ours (the caller's promise);
        // it exists because RDPID or RDTSCP does.
        unsafe { write_tsc_aux(TSC_AUX_TAG | index as u32) };
        // Every CPU of one machine reports the same features, so the route
        // is the same whoever stores it last.
        ROUTE.store(route, Ordering::Release);
    }
    Some(index)
}

/// Writes `IA32_TSC_AUX` (MSR 0xC000_0103).
///
/// # Safety
/// Ring 0, on a CPU with RDTSCP or RDPID.
#[cfg(target_arch = "x86_64")]
unsafe fn write_tsc_aux(value: u32) {
    // SAFETY: the caller's promise; wrmsr touches only that register.
    unsafe {
        core::arch::asm!(
            "wrmsr",
            in("ecx") 0xc000_0103u32,
            in("eax") value,
            in("edx") 0u32,
            options(nostack, preserves_flags)
        );
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn write_tsc_aux(_value: u32) {}

/// The index encoded in an `IA32_TSC_AUX` value, if it carries the tag.
#[inline(always)]
fn decode_tsc_aux(aux: u32) -> Option<usize> {
    (aux & !TSC_AUX_INDEX == TSC_AUX_TAG).then_some((aux & TSC_AUX_INDEX) as usize)
}

/// `IA32_TSC_AUX` read by RDPID.
///
/// # Safety
/// The CPU must have RDPID (CPUID leaf 7, ECX bit 22).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn tsc_aux_by_rdpid() -> u32 {
    let aux: u64;
    // SAFETY: the caller's promise; it reads IA32_TSC_AUX and nothing else.
    unsafe { core::arch::asm!("rdpid {}", out(reg) aux, options(nomem, nostack, preserves_flags)) };
    aux as u32
}

/// `IA32_TSC_AUX` read by RDTSCP (which also reads the time stamp counter).
///
/// # Safety
/// The CPU must have RDTSCP (CPUID leaf 0x8000_0001, EDX bit 27).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn tsc_aux_by_rdtscp() -> u32 {
    let mut aux = 0u32;
    // SAFETY: the caller's promise.
    unsafe { core::arch::x86_64::__rdtscp(&mut aux) };
    aux
}

/// The dense index of the running CPU, or `None` if it never registered.
///
/// Once a CPU has used [`register_current_cpu_fast`], CPUs read their
/// `IA32_TSC_AUX`; one that finds no index there (it registered with
/// [`register_current_cpu`], or has not registered yet) falls back to the
/// APIC-ID table, so mixing the two only costs speed.
#[inline]
pub fn current_cpu_index() -> Option<usize> {
    #[cfg(target_arch = "x86_64")]
    {
        let aux = match ROUTE.load(Ordering::Relaxed) {
            // SAFETY: the route is RDPID only when the CPU has it.
            ROUTE_RDPID => decode_tsc_aux(unsafe { tsc_aux_by_rdpid() }),
            // SAFETY: the route is RDTSCP only when the CPU has it.
            ROUTE_RDTSCP => decode_tsc_aux(unsafe { tsc_aux_by_rdtscp() }),
            _ => None,
        };
        if aux.is_some() {
            return aux;
        }
    }
    lookup(apic_id())
}

/// The route [`current_cpu_index`] takes: `"rdpid"`, `"rdtscp"` or
/// `"cpuid"`.
pub fn index_route() -> &'static str {
    match ROUTE.load(Ordering::Relaxed) {
        ROUTE_RDPID => "rdpid",
        ROUTE_RDTSCP => "rdtscp",
        _ => "cpuid",
    }
}

/// The route [`register_current_cpu_fast`] takes on this CPU (see
/// [`index_route`]), from CPUID alone.
pub fn fast_route_available() -> &'static str {
    match tsc_aux_route() {
        ROUTE_RDPID => "rdpid",
        ROUTE_RDTSCP => "rdtscp",
        _ => "cpuid",
    }
}

/// How many CPUs have registered.
pub fn registered_cpus() -> usize {
    REGISTERED.load(Ordering::Acquire)
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;

    // Host threads migrate between CPUs, so only properties that hold on any
    // CPU are checked here; the SMP test kernels check the rest.
    #[test]
    fn registration_gives_small_indices() {
        let index = register_current_cpu().unwrap();
        assert!(index < MAX_CPUS);
        assert!(registered_cpus() >= 1 && registered_cpus() <= MAX_CPUS);
        assert!(current_cpu_index().is_none_or(|i| i < registered_cpus()));
    }

    #[test]
    fn wide_and_colliding_apic_ids_get_distinct_indices() {
        // x2APIC IDs above 255, IDs equal in their low 8 bits, and IDs that
        // share a home slot all keep indices of their own.
        let ids = [
            0x1_0000u32,
            0x2_0000,
            0x100,
            0x200,
            0xffff_fffe,
            7,
            7 + TABLE as u32,
        ];
        let got: std::vec::Vec<usize> = ids.iter().map(|&id| register_id(id).unwrap()).collect();
        for (k, &id) in ids.iter().enumerate() {
            assert_eq!(lookup(id), Some(got[k]), "id {id:#x}");
            assert_eq!(register_id(id), Some(got[k]), "registering again");
            assert!(got[..k].iter().all(|&g| g != got[k]), "{got:?}");
        }
        assert_eq!(lookup(0xdead_beef), None);
    }

    #[test]
    fn rdpid_and_rdtscp_read_the_same_register() {
        // Linux lets user space read IA32_TSC_AUX (it holds the CPU number)
        // with both instructions, which checks the RDPID encoding here; the
        // test kernels check the kernel side (QEMU's TCG has no RDPID).
        if fast_route_available() != "rdpid" {
            return;
        }
        for _ in 0..1000 {
            // SAFETY: RDPID exists (checked above), and so does RDTSCP on
            // every CPU that has RDPID.
            let (a, b, c) =
                unsafe { (tsc_aux_by_rdtscp(), tsc_aux_by_rdpid(), tsc_aux_by_rdtscp()) };
            if a == c {
                assert_eq!(a, b);
                return;
            }
            // The thread moved to another CPU between the reads: again.
        }
        panic!("the thread never stayed on one CPU for three instructions");
    }

    #[test]
    fn tsc_aux_values_without_the_tag_are_no_index() {
        assert_eq!(decode_tsc_aux(TSC_AUX_TAG | 5), Some(5));
        assert_eq!(decode_tsc_aux(TSC_AUX_TAG | 255), Some(255));
        assert_eq!(decode_tsc_aux(0), None, "value after reset");
        // Linux's value: CPU number, NUMA node from bit 12.
        assert_eq!(decode_tsc_aux(3 | (1 << 12)), None);
        assert_eq!(decode_tsc_aux(0xa4 << 24 | 1), None);
    }
}
