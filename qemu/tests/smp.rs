//! SMP: every CPU reserves from the shared BuddyProvider at the same time;
//! the reservations must be disjoint and keep their contents.
//!
//! Runs with 4 CPUs (`qemu_smp!(4)`) unless QEMU_SMP says otherwise.

#![no_std]
#![no_main]

extern crate alloc;

use alloc::vec::Vec;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};

use apex_bare_metal::percpu::{self, CpuIndex, GsField, MAX_CPUS};
use apex_core::provider::{PageProvider, PAGE_SIZE};
use apex_qemu::memory::PROVIDER;
use apex_qemu::rng::XorShift;
use apex_qemu::{entry_point, qemu_smp, run_tests, smp, BootInfo, Test};
use spin::Mutex;

entry_point!(main);
qemu_smp!(4);

const TESTS: &[Test] = &[(
    "all_cpus_reserve_concurrently",
    all_cpus_reserve_concurrently,
)];

/// Reservations each CPU keeps until the end.
const KEEP: usize = 64;
/// Reserve/check/release rounds each CPU runs against the others.
const CHURN: usize = 2000;

/// `(cpu index, address, len)` of every kept reservation.
static KEPT: Mutex<Vec<(usize, usize, usize)>> = Mutex::new(Vec::new());
/// Released only when every CPU is ready, so the phases overlap.
static GO: AtomicBool = AtomicBool::new(false);
static READY: AtomicUsize = AtomicUsize::new(0);
static SEEN: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];

/// A kernel's per-CPU block as a `gs`-based index sees it: the index is
/// the `u32` at byte 8.
#[repr(C)]
struct PerCpuBlock {
    self_ptr: u64,
    index: AtomicU32,
}

static PER_CPU_BLOCKS: [PerCpuBlock; MAX_CPUS] = [const {
    PerCpuBlock {
        self_ptr: 0,
        index: AtomicU32::new(u32::MAX),
    }
}; MAX_CPUS];

/// Points this CPU's `gs` at `base` (`IA32_GS_BASE`).
///
/// # Safety
/// Ring 0; nothing on this CPU relies on the old `gs` base.
unsafe fn set_gs_base(base: u64) {
    // SAFETY: the caller's promise; wrmsr touches only that register.
    unsafe {
        core::arch::asm!(
            "wrmsr",
            in("ecx") 0xc000_0101u32,
            in("eax") base as u32,
            in("edx") (base >> 32) as u32,
            options(nostack, preserves_flags),
        )
    };
}

fn main(info: &'static BootInfo) -> ! {
    run_tests(info, TESTS)
}

fn fill(addr: usize, len: usize, tag: u64) {
    for off in (0..len).step_by(PAGE_SIZE) {
        // SAFETY: the caller owns the `len`-byte reservation at `addr`.
        unsafe { ((addr + off) as *mut u64).write(tag ^ off as u64) };
    }
}

fn check(addr: usize, len: usize, tag: u64) {
    for off in (0..len).step_by(PAGE_SIZE) {
        // SAFETY: the caller owns the reservation and filled it.
        let v = unsafe { ((addr + off) as *const u64).read() };
        assert_eq!(
            v,
            tag ^ off as u64,
            "reservation {addr:#x}+{off:#x} overwritten by another CPU"
        );
    }
}

fn tag(cpu: usize, addr: usize) -> u64 {
    ((cpu as u64) << 56) ^ addr as u64
}

/// What every CPU, the boot CPU included, runs.
fn worker(cpu: usize) {
    assert!(
        !SEEN[cpu].swap(true, Ordering::AcqRel),
        "CPU index {cpu} given twice"
    );
    // The APIC-ID table gives back the index this CPU got at start-up...
    assert_eq!(percpu::register_current_cpu(), Some(cpu));
    // ...and once it is published in IA32_TSC_AUX, the one-instruction
    // route (RDPID or RDTSCP, where the CPU model has them) reads it too.
    // SAFETY: ring 0, on this CPU; nothing else here uses IA32_TSC_AUX.
    assert_eq!(unsafe { percpu::register_current_cpu_fast() }, Some(cpu));
    assert_eq!(percpu::index_route(), percpu::fast_route_available());
    assert_eq!(percpu::current_cpu_index(), Some(cpu));
    assert_eq!(percpu::Registered.current(), Some(cpu));
    // A kernel's own per-CPU block, reached through `gs`: before the CPU
    // points `gs` at it the field says "no index", then it names the CPU.
    let block = &PER_CPU_BLOCKS[cpu];
    block.index.store(u32::MAX, Ordering::Relaxed);
    // SAFETY: ring 0, on this CPU; nothing else here uses `gs`. The block
    // is a static that lives for good.
    unsafe { set_gs_base(block as *const PerCpuBlock as u64) };
    // SAFETY: `gs` points at this CPU's block, whose `u32` at byte 8 is
    // its index field, from here on.
    let gs = unsafe { GsField::<8>::new() };
    assert_eq!(gs.current(), None);
    block.index.store(cpu as u32, Ordering::Relaxed);
    assert_eq!(gs.current(), Some(cpu));
    READY.fetch_add(1, Ordering::AcqRel);
    while !GO.load(Ordering::Acquire) {
        core::hint::spin_loop();
    }

    let p: &dyn PageProvider = &PROVIDER;
    let mut rng = XorShift::new(0x5eed + cpu as u64);
    let mut mine = Vec::with_capacity(KEEP);
    for round in 0..CHURN + KEEP {
        let len = (1 + rng.below(16)) * PAGE_SIZE;
        let align = PAGE_SIZE << rng.below(6);
        let ptr = p.reserve(len, align).expect("memory");
        let addr = ptr.as_ptr() as usize;
        assert_eq!(addr % align, 0);
        fill(addr, len, tag(cpu, addr));
        if round < CHURN {
            core::hint::spin_loop();
            check(addr, len, tag(cpu, addr));
            // SAFETY: released exactly as reserved, once.
            unsafe { p.release(ptr, len) };
        } else {
            mine.push((cpu, addr, len));
        }
    }
    KEPT.lock().extend_from_slice(&mine);
}

fn all_cpus_reserve_concurrently(_info: &'static BootInfo) {
    let free = PROVIDER.free_bytes();
    let cpus = apex_qemu::fw_cfg::cpu_count();
    let aps = smp::start_aps(worker);
    assert_eq!(aps, cpus - 1, "not every AP came online");
    assert_eq!(percpu::registered_cpus(), cpus);

    while READY.load(Ordering::Acquire) < aps {
        core::hint::spin_loop();
    }
    GO.store(true, Ordering::Release);
    worker(percpu::current_cpu_index().unwrap());
    smp::wait_for_aps(aps);
    apex_qemu::println!("CPU index route: {}", percpu::index_route());

    let mut kept = core::mem::take(&mut *KEPT.lock());
    assert_eq!(kept.len(), cpus * KEEP);
    kept.sort_unstable_by_key(|&(_, addr, _)| addr);
    for w in kept.windows(2) {
        let (c0, a0, l0) = w[0];
        let (c1, a1, _) = w[1];
        assert!(
            a0 + l0 <= a1,
            "CPU {c0} at {a0:#x} overlaps CPU {c1} at {a1:#x}"
        );
    }
    for &(cpu, addr, len) in &kept {
        check(addr, len, tag(cpu, addr));
        // SAFETY: kept reservations are released once, exactly as reserved.
        unsafe { PROVIDER.release(NonNull::new(addr as *mut u8).unwrap(), len) };
    }
    assert_eq!(PROVIDER.free_bytes(), free);
    PROVIDER.lock().verify().unwrap();
}
