//! Interrupts for the test kernels: an IDT with a local APIC timer handler.
//!
//! [`start_timer`] masks the legacy PICs (the firmware leaves the PIT
//! routed to vectors that are CPU exceptions in long mode), installs an IDT
//! whose timer vector calls a Rust function, and starts the local APIC
//! timer in periodic mode; [`stop_timer`] stops it and masks interrupts.
//! The handler runs with interrupts masked (an interrupt gate), on the
//! interrupted code's stack (the targets have no red zone).
//!
//! Only the boot CPU uses it; other vectors (exceptions) have no handler and
//! triple-fault the VM, which the runner reports as a failure.

use core::sync::atomic::{AtomicUsize, Ordering};

use crate::smp::LocalApic;

/// The vector of the timer interrupt.
pub const TIMER_VECTOR: u8 = 0x40;
/// The spurious-interrupt vector (bits 3:0 set, as older APICs require).
const SPURIOUS_VECTOR: u8 = 0xff;

const LVT_TIMER: usize = 0x320;
const TIMER_INITIAL: usize = 0x380;
const TIMER_DIVIDE: usize = 0x3e0;
const EOI: usize = 0x0b0;
const LVT_PERIODIC: u32 = 1 << 17;
const LVT_MASKED: u32 = 1 << 16;
/// Kernel code selector of the boot GDT.
const CODE_SELECTOR: u16 = 0x08;

/// One 64-bit interrupt gate.
#[derive(Clone, Copy)]
#[repr(C)]
struct Gate {
    offset_low: u16,
    selector: u16,
    ist: u8,
    type_attr: u8,
    offset_mid: u16,
    offset_high: u32,
    reserved: u32,
}

impl Gate {
    const MISSING: Gate = Gate {
        offset_low: 0,
        selector: 0,
        ist: 0,
        type_attr: 0,
        offset_mid: 0,
        offset_high: 0,
        reserved: 0,
    };

    /// A present ring-0 interrupt gate (interrupts masked on entry).
    fn interrupt(handler: usize) -> Gate {
        Gate {
            offset_low: handler as u16,
            selector: CODE_SELECTOR,
            ist: 0,
            type_attr: 0x8e,
            offset_mid: (handler >> 16) as u16,
            offset_high: (handler >> 32) as u32,
            reserved: 0,
        }
    }
}

#[repr(C, align(16))]
struct Idt([Gate; 256]);

/// Written only by [`start_timer`] on the boot CPU before `lidt`.
static mut IDT: Idt = Idt([Gate::MISSING; 256]);

/// The Rust handler, as an address; 0 for none.
static HANDLER: AtomicUsize = AtomicUsize::new(0);
/// Timer interrupts taken.
static TICKS: AtomicUsize = AtomicUsize::new(0);

// The entry stubs. The timer stub saves the registers a C call may change,
// calls `apex_timer_dispatch` and returns with `iretq`. On entry the CPU
// has pushed 5 quadwords onto a 16-byte aligned stack; 9 more pushes make
// it 16-byte aligned again for the call.
// Its own section: the assembler's current section at this point depends
// on the order in which global_asm blocks are emitted.
core::arch::global_asm!(
    ".pushsection .text.apex_interrupts, \"ax\", @progbits",
    ".global apex_timer_entry",
    "apex_timer_entry:",
    "push rax",
    "push rcx",
    "push rdx",
    "push rsi",
    "push rdi",
    "push r8",
    "push r9",
    "push r10",
    "push r11",
    "cld",
    "call apex_timer_dispatch",
    "pop r11",
    "pop r10",
    "pop r9",
    "pop r8",
    "pop rdi",
    "pop rsi",
    "pop rdx",
    "pop rcx",
    "pop rax",
    "iretq",
    ".global apex_spurious_entry",
    "apex_spurious_entry:",
    "iretq",
    ".popsection",
);

extern "C" {
    fn apex_timer_entry();
    fn apex_spurious_entry();
}

#[no_mangle]
extern "C" fn apex_timer_dispatch() {
    TICKS.fetch_add(1, Ordering::Relaxed);
    let handler = HANDLER.load(Ordering::Acquire);
    if handler != 0 {
        // SAFETY: only `start_timer` stores a non-zero value, a `fn()`.
        let f: fn() = unsafe { core::mem::transmute::<usize, fn()>(handler) };
        f();
    }
    LocalApic::current().write(EOI, 0);
}

/// Starts the local APIC timer on this CPU: `handler` runs every
/// `initial_count` APIC timer ticks (divider 1), with interrupts masked.
///
/// # Safety
/// Boot CPU only, once the kernel is ready to take interrupts; nothing else
/// uses the IDT, the PICs or the APIC timer.
pub unsafe fn start_timer(initial_count: u32, handler: fn()) {
    HANDLER.store(handler as usize, Ordering::Release);
    // SAFETY: the caller's promise: nothing else uses these devices, and
    // interrupts are still masked while the IDT is written.
    unsafe {
        // Mask every line of both legacy PICs.
        crate::io::outb(0x21, 0xff);
        crate::io::outb(0xa1, 0xff);
        let idt = &mut *core::ptr::addr_of_mut!(IDT);
        idt.0[TIMER_VECTOR as usize] = Gate::interrupt(apex_timer_entry as *const () as usize);
        idt.0[SPURIOUS_VECTOR as usize] =
            Gate::interrupt(apex_spurious_entry as *const () as usize);
        #[repr(C, packed)]
        struct Pointer {
            limit: u16,
            base: u64,
        }
        let ptr = Pointer {
            limit: (core::mem::size_of::<Idt>() - 1) as u16,
            base: idt as *const Idt as u64,
        };
        core::arch::asm!("lidt [{}]", in(reg) &ptr, options(readonly, nostack, preserves_flags));
    }
    let apic = LocalApic::current();
    apic.write(
        LocalApic::SPURIOUS,
        apic.read(LocalApic::SPURIOUS) | 0x100 | u32::from(SPURIOUS_VECTOR),
    );
    apic.write(TIMER_DIVIDE, 0b1011);
    apic.write(LVT_TIMER, u32::from(TIMER_VECTOR) | LVT_PERIODIC);
    apic.write(TIMER_INITIAL, initial_count);
    // SAFETY: the IDT handles the only interrupt source now enabled.
    unsafe { core::arch::asm!("sti", options(nomem, nostack)) };
}

/// Masks interrupts on this CPU and stops the timer.
pub fn stop_timer() {
    // SAFETY: masking interrupts is always allowed in ring 0.
    unsafe { core::arch::asm!("cli", options(nomem, nostack)) };
    let apic = LocalApic::current();
    apic.write(TIMER_INITIAL, 0);
    apic.write(LVT_TIMER, u32::from(TIMER_VECTOR) | LVT_MASKED);
}

/// Timer interrupts taken so far.
pub fn ticks() -> usize {
    TICKS.load(Ordering::Relaxed)
}
