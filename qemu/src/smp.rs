//! Starting the application processors (APs).
//!
//! APs wake in 16-bit real mode at the page named by the SIPI vector. The
//! trampoline below is copied to [`AP_TRAMPOLINE`] (vector 0x08); it loads its
//! own GDT, enables PAE, loads the boot page tables (`boot_pml4`, shared
//! identity map), sets EFER.LME and turns on protection and paging in one
//! step, landing in 64-bit code. There each AP takes the next index with
//! `lock xadd`, switches to its own stack in `AP_STACKS` and calls
//! `ap_rust_entry`, which registers the CPU and runs the function given to
//! [`start_aps`].
//!
//! The trampoline runs from its copy, so it must not use %rip-relative
//! operands: every address inside it is `AP_TRAMP + label - ap_tramp_start`.
//!
//! The boot CPU starts the APs through its local APIC: INIT to all others,
//! then two start-up IPIs, then waits for them to check in.

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};

use apex_bare_metal::percpu;

use crate::memory::AP_TRAMPOLINE;

/// Stack size of each AP.
pub const AP_STACK_SIZE: usize = 64 * 1024;

/// The most CPUs these test kernels start: each AP's stack is in `.bss`,
/// so this stays far below `percpu::MAX_CPUS`.
pub const MAX_CPUS: usize = 32;
const _: () = assert!(MAX_CPUS <= percpu::MAX_CPUS);

/// Stacks of the APs (at most `MAX_CPUS - 1`), written only by them.
#[repr(C, align(4096))]
struct ApStacks([u8; AP_STACK_SIZE * (MAX_CPUS - 1)]);

/// Only the trampoline touches this, through its address.
static mut AP_STACKS: ApStacks = ApStacks([0; AP_STACK_SIZE * (MAX_CPUS - 1)]);

/// The next AP number; the trampoline increments it.
static AP_NEXT: AtomicU32 = AtomicU32::new(0);

/// APs that reached Rust.
static ONLINE: AtomicUsize = AtomicUsize::new(0);
/// APs whose function returned.
static FINISHED: AtomicUsize = AtomicUsize::new(0);
/// The function the APs run, as an address.
static AP_MAIN: AtomicUsize = AtomicUsize::new(0);
static STARTED: AtomicBool = AtomicBool::new(false);

core::arch::global_asm!(
    r#"
    .set AP_TRAMP, {tramp}

    .section .text.ap_trampoline, "ax", @progbits
    .balign 16
    .global ap_tramp_start
    .global ap_tramp_end
    .code16
ap_tramp_start:
    cli
    cld
    xor %ax, %ax
    mov %ax, %ds
    lgdtl (AP_TRAMP + ap_gdt_ptr - ap_tramp_start)
    mov %cr4, %eax
    or $0x20, %eax                  /* PAE */
    mov %eax, %cr4
    mov $boot_pml4, %eax
    mov %eax, %cr3
    mov $0xc0000080, %ecx           /* EFER */
    rdmsr
    or $0x100, %eax                 /* LME */
    wrmsr
    mov %cr0, %eax
    or $0x80000001, %eax            /* PG | PE: real mode straight to long mode */
    mov %eax, %cr0
    ljmpl $0x08, $(AP_TRAMP + ap_tramp64 - ap_tramp_start)

    .code64
ap_tramp64:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    xor %ax, %ax
    mov %ax, %fs
    mov %ax, %gs
    mov $1, %eax
    lock xaddl %eax, {next}          /* %eax = this AP's number */
    mov %eax, %edi                   /* ap_rust_entry(number) */
    lea 1(%rax), %rcx
    imul ${stack_size}, %rcx
    movabs ${stacks}, %rsp
    add %rcx, %rsp                   /* top of stack number %eax */
    movabs ${entry}, %rax
    call *%rax
1:  cli
    hlt
    jmp 1b

    .balign 8
ap_gdt:
    .quad 0
    .quad 0x00af9a000000ffff        /* 0x08: 64-bit code */
    .quad 0x00cf92000000ffff        /* 0x10: data */
ap_gdt_ptr:
    .word 23
    .long AP_TRAMP + ap_gdt - ap_tramp_start
ap_tramp_end:
"#,
    tramp = const AP_TRAMPOLINE.start,
    next = sym AP_NEXT,
    stack_size = const AP_STACK_SIZE,
    stacks = sym AP_STACKS,
    entry = sym ap_rust_entry,
    options(att_syntax)
);

extern "C" {
    static ap_tramp_start: u8;
    static ap_tramp_end: u8;
}

/// Where each AP lands once on its own stack.
extern "C" fn ap_rust_entry(_ap_number: u32) -> ! {
    percpu::register_current_cpu();
    ONLINE.fetch_add(1, Ordering::AcqRel);
    let main = AP_MAIN.load(Ordering::Acquire);
    if main != 0 {
        // SAFETY: only `start_aps` stores a non-zero value, a `fn(usize)`
        // converted to an address.
        let main = unsafe { core::mem::transmute::<usize, fn(usize)>(main) };
        main(percpu::current_cpu_index().expect("registered above"));
    }
    FINISHED.fetch_add(1, Ordering::AcqRel);
    crate::exit::halt_forever()
}

/// The local APIC's registers, found through IA32_APIC_BASE.
pub(crate) struct LocalApic {
    base: usize,
}

impl LocalApic {
    pub(crate) const SPURIOUS: usize = 0xf0;
    const ICR_LOW: usize = 0x300;
    const ICR_HIGH: usize = 0x310;
    const DELIVERY_PENDING: u32 = 1 << 12;

    pub(crate) fn current() -> Self {
        let (lo, hi): (u32, u32);
        // SAFETY: reading IA32_APIC_BASE (MSR 0x1b) has no side effects.
        unsafe {
            core::arch::asm!("rdmsr", in("ecx") 0x1bu32, out("eax") lo, out("edx") hi,
                options(nomem, nostack, preserves_flags));
        }
        let base = ((u64::from(hi) << 32 | u64::from(lo)) & 0xf_ffff_f000) as usize;
        LocalApic { base }
    }

    pub(crate) fn read(&self, reg: usize) -> u32 {
        // SAFETY: the APIC page is identity-mapped (below 4 GiB) and `reg`
        // is a register offset inside it.
        unsafe { core::ptr::read_volatile((self.base + reg) as *const u32) }
    }

    pub(crate) fn write(&self, reg: usize, value: u32) {
        // SAFETY: as in `read`.
        unsafe { core::ptr::write_volatile((self.base + reg) as *mut u32, value) }
    }

    /// Sends an IPI to all CPUs but this one and waits until it is delivered.
    fn broadcast_others(&self, command: u32) {
        self.write(Self::ICR_HIGH, 0);
        self.write(Self::ICR_LOW, command | 0x000c_0000);
        while self.read(Self::ICR_LOW) & Self::DELIVERY_PENDING != 0 {
            core::hint::spin_loop();
        }
    }
}

/// Waits roughly `iterations` pause instructions; QEMU needs no exact timing.
fn delay(iterations: usize) {
    for _ in 0..iterations {
        core::hint::spin_loop();
    }
}

/// Starts every other CPU QEMU has, each running `main(cpu_index)` once and
/// then halting. Returns the number of APs that came online. Call at most
/// once, from the boot CPU.
pub fn start_aps(main: fn(usize)) -> usize {
    assert!(
        !STARTED.swap(true, Ordering::AcqRel),
        "start_aps called twice"
    );
    let cpus = crate::fw_cfg::cpu_count();
    assert!(
        cpus <= MAX_CPUS,
        "{cpus} CPUs; at most {MAX_CPUS} are supported"
    );
    let expected = cpus - 1;
    if expected == 0 {
        return 0;
    }
    AP_MAIN.store(main as usize, Ordering::Release);

    // Only the symbols' addresses are taken, never their contents.
    let start = core::ptr::addr_of!(ap_tramp_start) as usize;
    let end = core::ptr::addr_of!(ap_tramp_end) as usize;
    assert!(end - start <= AP_TRAMPOLINE.len());
    // SAFETY: the trampoline page is below 1 MiB, identity-mapped and kept
    // out of the page allocator; the PVH data there was copied at boot.
    unsafe {
        core::ptr::copy_nonoverlapping(
            start as *const u8,
            AP_TRAMPOLINE.start as *mut u8,
            end - start,
        )
    };

    let apic = LocalApic::current();
    apic.write(LocalApic::SPURIOUS, apic.read(LocalApic::SPURIOUS) | 0x100);
    apic.broadcast_others(0x4500); // INIT
    delay(100_000);
    let sipi = 0x4600 | (AP_TRAMPOLINE.start >> 12) as u32;
    for _ in 0..2 {
        apic.broadcast_others(sipi);
        delay(10_000);
    }

    let mut spins = 0usize;
    while ONLINE.load(Ordering::Acquire) < expected && spins < 500_000_000 {
        core::hint::spin_loop();
        spins += 1;
    }
    ONLINE.load(Ordering::Acquire)
}

/// APs whose function has returned.
pub fn finished_aps() -> usize {
    FINISHED.load(Ordering::Acquire)
}

/// Waits until `n` APs have returned from their function.
pub fn wait_for_aps(n: usize) {
    while finished_aps() < n {
        core::hint::spin_loop();
    }
}
