//! 16550 UART output: COM1 carries the kernel's text, COM2 raw defmt frames.
//!
//! [`print!`](crate::print) and [`println!`](crate::println) write to COM1
//! under a lock, so lines from different CPUs do not interleave.
//! [`PanicWriter`] bypasses the lock for the panic handler, which may run
//! while the lock is held.

use core::fmt::{self, Write};

use spin::Mutex;

use crate::io::{inb, outb};

/// COM1's I/O base: QEMU's first `-serial` (stdio in `run.sh`).
pub const COM1: u16 = 0x3f8;
/// COM2's I/O base: QEMU's second `-serial` (a file in `run.sh`).
pub const COM2: u16 = 0x2f8;

/// A 16550 UART at a fixed I/O base.
#[derive(Clone, Copy)]
pub struct Uart {
    base: u16,
}

impl Uart {
    /// The UART at `base`.
    pub const fn new(base: u16) -> Self {
        Uart { base }
    }

    /// Programs 115200 baud, 8N1, FIFOs on, interrupts off.
    pub fn init(&self) {
        let b = self.base;
        // SAFETY: the standard 16550 initialization sequence on a UART port.
        unsafe {
            outb(b + 1, 0x00); // no interrupts
            outb(b + 3, 0x80); // DLAB: divisor follows
            outb(b, 0x01); // divisor 1 = 115200 baud
            outb(b + 1, 0x00);
            outb(b + 3, 0x03); // 8 bits, no parity, one stop bit
            outb(b + 2, 0xc7); // FIFOs on and cleared
            outb(b + 4, 0x03); // DTR, RTS
        }
    }

    /// Sends one byte, waiting for room in the transmitter.
    pub fn write_byte(&self, byte: u8) {
        // SAFETY: reading the line status register and writing the transmit
        // register of a UART only sends data.
        unsafe {
            while inb(self.base + 5) & 0x20 == 0 {
                core::hint::spin_loop();
            }
            outb(self.base, byte);
        }
    }

    /// Sends raw bytes.
    pub fn write_bytes(&self, bytes: &[u8]) {
        for &b in bytes {
            self.write_byte(b);
        }
    }
}

impl Write for Uart {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                self.write_byte(b'\r');
            }
            self.write_byte(b);
        }
        Ok(())
    }
}

static CONSOLE: Mutex<Uart> = Mutex::new(Uart::new(COM1));

/// Initializes COM1 (and COM2 for defmt).
pub fn init() {
    CONSOLE.lock().init();
    Uart::new(COM2).init();
}

/// Writes formatted text to COM1 under the console lock.
pub fn print(args: fmt::Arguments<'_>) {
    // A UART write cannot fail.
    let _ = CONSOLE.lock().write_fmt(args);
}

/// A COM1 writer that ignores the console lock, for the panic handler.
pub struct PanicWriter;

impl Write for PanicWriter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        Uart::new(COM1).write_str(s)
    }
}

/// Prints to COM1.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::serial::print(format_args!($($arg)*)) };
}

/// Prints a line to COM1.
#[macro_export]
macro_rules! println {
    () => { $crate::print!("\n") };
    ($($arg:tt)*) => { $crate::serial::print(format_args!("{}\n", format_args!($($arg)*))) };
}
