//! The defmt global logger: raw frames on COM2.
//!
//! With the `defmt` feature, `defmt::info!` and friends (here and in
//! `apex-bare-metal`) encode frames onto COM2, which `run.sh` stores in
//! `<kernel>.defmt`; `defmt-print -e <kernel>` decodes them. Without the
//! feature this module is empty.

/// Sets up logging (COM2 is initialized with the console).
pub fn init() {
    #[cfg(feature = "defmt")]
    defmt::info!("defmt logging on COM2");
}

#[cfg(feature = "defmt")]
mod imp {
    use core::sync::atomic::{AtomicBool, Ordering};

    use crate::serial::{Uart, COM2};

    static TAKEN: AtomicBool = AtomicBool::new(false);
    static mut ENCODER: defmt::Encoder = defmt::Encoder::new();

    fn write_com2(bytes: &[u8]) {
        Uart::new(COM2).write_bytes(bytes);
    }

    #[defmt::global_logger]
    struct Com2Logger;

    // SAFETY: `acquire` spins until it owns TAKEN, so one frame is encoded at
    // a time and the encoder is only touched between acquire and release.
    // Interrupts are never enabled in these kernels, so no handler can
    // re-enter the logger on the same CPU.
    unsafe impl defmt::Logger for Com2Logger {
        fn acquire() {
            while TAKEN
                .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
            {
                core::hint::spin_loop();
            }
            // SAFETY: TAKEN is ours, so nobody else uses the encoder.
            unsafe { (*core::ptr::addr_of_mut!(ENCODER)).start_frame(write_com2) };
        }

        unsafe fn flush() {}

        unsafe fn release() {
            // SAFETY: called after `acquire` by the same owner of TAKEN.
            unsafe { (*core::ptr::addr_of_mut!(ENCODER)).end_frame(write_com2) };
            TAKEN.store(false, Ordering::Release);
        }

        unsafe fn write(bytes: &[u8]) {
            // SAFETY: called between `acquire` and `release`.
            unsafe { (*core::ptr::addr_of_mut!(ENCODER)).write(bytes, write_com2) };
        }
    }
}
