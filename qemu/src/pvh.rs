//! Reading the PVH `hvm_start_info` handed over by QEMU.
//!
//! The structure, its memory map and the command line sit in low memory that
//! the kernel later reuses, so [`StartInfo::read`] copies everything it needs
//! into fixed-size fields.
//!
//! Layout (Xen `arch-x86/hvm/start_info.h`, version 1):
//! `{ magic u32, version u32, flags u32, nr_modules u32, modlist_paddr u64,
//! cmdline_paddr u64, rsdp_paddr u64, memmap_paddr u64, memmap_entries u32,
//! reserved u32 }`, memory map entries `{ addr u64, size u64, type u32,
//! reserved u32 }` with e820 types.

use core::ptr;

/// `hvm_start_info.magic`.
pub const START_INFO_MAGIC: u32 = 0x336e_c578;

/// How many memory map entries are kept.
pub const MAX_MEMORY_REGIONS: usize = 64;

/// How many bytes of the command line are kept.
pub const MAX_CMDLINE: usize = 512;

#[repr(C)]
#[derive(Clone, Copy)]
struct RawStartInfo {
    magic: u32,
    version: u32,
    flags: u32,
    nr_modules: u32,
    modlist_paddr: u64,
    cmdline_paddr: u64,
    rsdp_paddr: u64,
    memmap_paddr: u64,
    memmap_entries: u32,
    reserved: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct RawMemmapEntry {
    addr: u64,
    size: u64,
    kind: u32,
    reserved: u32,
}

/// An e820 memory type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryKind {
    /// Usable RAM (type 1).
    Ram,
    /// Reserved by firmware or devices (type 2).
    Reserved,
    /// ACPI tables, reclaimable once parsed (type 3).
    AcpiReclaimable,
    /// ACPI non-volatile storage (type 4).
    AcpiNvs,
    /// Defective memory (type 5).
    Unusable,
    /// Any other type number.
    Other(u32),
}

impl MemoryKind {
    fn from_e820(kind: u32) -> Self {
        match kind {
            1 => MemoryKind::Ram,
            2 => MemoryKind::Reserved,
            3 => MemoryKind::AcpiReclaimable,
            4 => MemoryKind::AcpiNvs,
            5 => MemoryKind::Unusable,
            other => MemoryKind::Other(other),
        }
    }
}

/// One memory map entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryRegion {
    /// Physical start address.
    pub start: u64,
    /// Length in bytes.
    pub len: u64,
    /// What the memory is.
    pub kind: MemoryKind,
}

impl MemoryRegion {
    const EMPTY: MemoryRegion = MemoryRegion {
        start: 0,
        len: 0,
        kind: MemoryKind::Reserved,
    };

    /// One past the last byte.
    pub fn end(&self) -> u64 {
        self.start.saturating_add(self.len)
    }
}

/// Why the start info could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartInfoError {
    /// `magic` is not [`START_INFO_MAGIC`].
    BadMagic(u32),
    /// Version 0 has no memory map.
    NoMemoryMap,
}

/// The parts of `hvm_start_info` the kernel uses, copied out of low memory.
#[derive(Clone, Debug)]
pub struct StartInfo {
    /// Physical address of the structure itself.
    pub paddr: usize,
    /// `hvm_start_info.version`.
    pub version: u32,
    /// Physical address of the ACPI RSDP, or 0.
    pub rsdp_paddr: u64,
    memory_map: [MemoryRegion; MAX_MEMORY_REGIONS],
    memory_map_len: usize,
    /// Entries the firmware reported beyond [`MAX_MEMORY_REGIONS`].
    pub memory_map_dropped: usize,
    cmdline: [u8; MAX_CMDLINE],
    cmdline_len: usize,
    /// Physical ranges occupied by the structure, its memory map and its
    /// command line, as `(start, len)`.
    pub footprint: [(usize, usize); 3],
}

impl StartInfo {
    /// Copies the start info at physical address `paddr`.
    ///
    /// # Safety
    /// `paddr` must be the address QEMU passed in `%ebx`, with the structure
    /// and everything it points to still intact and identity-mapped.
    pub unsafe fn read(paddr: usize) -> Result<StartInfo, StartInfoError> {
        // SAFETY: the caller guarantees a valid start info at `paddr`.
        let raw = unsafe { ptr::read_unaligned(paddr as *const RawStartInfo) };
        if raw.magic != START_INFO_MAGIC {
            return Err(StartInfoError::BadMagic(raw.magic));
        }
        if raw.version < 1 || raw.memmap_paddr == 0 {
            return Err(StartInfoError::NoMemoryMap);
        }

        let mut info = StartInfo {
            paddr,
            version: raw.version,
            rsdp_paddr: raw.rsdp_paddr,
            memory_map: [MemoryRegion::EMPTY; MAX_MEMORY_REGIONS],
            memory_map_len: 0,
            memory_map_dropped: 0,
            cmdline: [0; MAX_CMDLINE],
            cmdline_len: 0,
            footprint: [(0, 0); 3],
        };

        let entries = raw.memmap_entries as usize;
        for i in 0..entries {
            let at = raw.memmap_paddr as usize + i * core::mem::size_of::<RawMemmapEntry>();
            // SAFETY: the firmware reports `entries` entries at memmap_paddr.
            let e = unsafe { ptr::read_unaligned(at as *const RawMemmapEntry) };
            if info.memory_map_len == MAX_MEMORY_REGIONS {
                info.memory_map_dropped += 1;
                continue;
            }
            info.memory_map[info.memory_map_len] = MemoryRegion {
                start: e.addr,
                len: e.size,
                kind: MemoryKind::from_e820(e.kind),
            };
            info.memory_map_len += 1;
        }

        let mut cmdline_bytes = 0;
        if raw.cmdline_paddr != 0 {
            let src = raw.cmdline_paddr as *const u8;
            loop {
                // SAFETY: the command line is a NUL-terminated string.
                let b = unsafe { *src.add(cmdline_bytes) };
                if b == 0 {
                    break;
                }
                if cmdline_bytes < MAX_CMDLINE {
                    info.cmdline[cmdline_bytes] = b;
                    info.cmdline_len = cmdline_bytes + 1;
                }
                cmdline_bytes += 1;
            }
            cmdline_bytes += 1;
        }

        info.footprint = [
            (paddr, core::mem::size_of::<RawStartInfo>()),
            (
                raw.memmap_paddr as usize,
                entries * core::mem::size_of::<RawMemmapEntry>(),
            ),
            (raw.cmdline_paddr as usize, cmdline_bytes),
        ];
        Ok(info)
    }

    /// The memory map as reported (up to [`MAX_MEMORY_REGIONS`] entries).
    pub fn memory_map(&self) -> &[MemoryRegion] {
        &self.memory_map[..self.memory_map_len]
    }

    /// The command line (`-append`), cut at [`MAX_CMDLINE`] bytes; empty if
    /// it is not UTF-8.
    pub fn cmdline(&self) -> &str {
        core::str::from_utf8(&self.cmdline[..self.cmdline_len]).unwrap_or("")
    }
}
