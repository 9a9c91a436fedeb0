//! What naming the running CPU costs, per route `KernelAlloc` can be given:
//! a thread-local (what a `gs`-relative per-CPU field costs), RDPID,
//! RDTSCP, and CPUID (`percpu::current_cpu_index` without the fast
//! registration). Under a hypervisor CPUID exits to it; the others do not.

use std::hint::black_box;
use std::time::Instant;

/// Nanoseconds per call of `f`, over `n` calls.
fn per_call(n: u32, mut f: impl FnMut() -> u64) -> f64 {
    let t = Instant::now();
    let mut acc = 0u64;
    for _ in 0..n {
        acc = acc.wrapping_add(f());
    }
    black_box(acc);
    t.elapsed().as_nanos() as f64 / f64::from(n)
}

/// A Markdown table of the costs.
pub fn report() -> String {
    use std::arch::x86_64::{__cpuid, __cpuid_count, __rdtscp};
    thread_local! {
        static INDEX: std::cell::Cell<u64> = const { std::cell::Cell::new(3) };
    }
    let mut rows = vec![(
        "thread-local (a `gs`-relative field)",
        per_call(10_000_000, || INDEX.with(|c| black_box(c.get()))),
    )];
    let leaf7 = __cpuid_count(7, 0);
    if leaf7.ecx & (1 << 22) != 0 {
        rows.push((
            "RDPID",
            per_call(10_000_000, || {
                let v: u64;
                // SAFETY: the CPU has RDPID (checked above); Linux allows it
                // in user mode.
                unsafe { std::arch::asm!("rdpid {}", out(reg) v, options(nomem, nostack)) };
                v
            }),
        ));
    }
    if __cpuid(0x8000_0001).edx & (1 << 27) != 0 {
        rows.push((
            "RDTSCP",
            per_call(10_000_000, || {
                let mut aux = 0u32;
                // SAFETY: the CPU has RDTSCP (checked above).
                unsafe { __rdtscp(&mut aux) };
                u64::from(aux)
            }),
        ));
    }
    apex_bare_metal::percpu::register_current_cpu();
    rows.push((
        "CPUID + table (`percpu::current_cpu_index`, slow registration)",
        per_call(200_000, || {
            apex_bare_metal::percpu::current_cpu_index().map_or(0, |i| i as u64)
        }),
    ));
    let mut s = String::from("| route | ns per call |\n|---|---|\n");
    for (name, ns) in rows {
        s.push_str(&format!("| {name} | {ns:.1} |\n"));
    }
    s
}
