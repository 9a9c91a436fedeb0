//! Backtraces of sampled blocks: `_Unwind_Backtrace` of libgcc_s, loaded
//! with `dlopen` once start-up is done, bounded to [`DEPTH`] frames after
//! the allocator's own (those inside this library's code, or a fixed
//! number when the allocator is linked into the program).

use core::ffi::{c_char, c_int, c_void};

use spin::Once;

/// Frames kept per backtrace (after the allocator's own).
pub(crate) const DEPTH: usize = 16;
/// Frames walked at most, the allocator's included: bounds the cost.
const WALK_MAX: usize = DEPTH + 24;

/// Loads the unwinder and finds the library's own code, once (this may
/// allocate: the caller marks its thread busy).
pub(super) fn start() {
    UNWINDER.call_once(load_unwinder);
    OWN_CODE.call_once(find_own_code);
}

type TraceFn = extern "C" fn(*mut c_void, *mut c_void) -> c_int;
type BacktraceFn = unsafe extern "C" fn(TraceFn, *mut c_void) -> c_int;
type GetIpFn = unsafe extern "C" fn(*mut c_void) -> usize;

/// `_Unwind_Backtrace` and `_Unwind_GetIP`, if libgcc_s could be loaded.
#[derive(Clone, Copy)]
struct Unwinder {
    backtrace: BacktraceFn,
    get_ip: GetIpFn,
}

static UNWINDER: Once<Option<Unwinder>> = Once::new();

const URC_NO_REASON: c_int = 0;
const URC_NORMAL_STOP: c_int = 4;

/// Loads libgcc_s (already loaded in C++ and Rust programs) and finds
/// the two functions.
fn load_unwinder() -> Option<Unwinder> {
    // SAFETY: dlopen and dlsym with NUL-terminated names; the handle is
    // never closed, so the functions stay valid; their types are those of
    // libgcc's unwind.h.
    unsafe {
        let lib = libc::dlopen(c"libgcc_s.so.1".as_ptr(), libc::RTLD_NOW);
        if lib.is_null() {
            return None;
        }
        let backtrace = libc::dlsym(lib, c"_Unwind_Backtrace".as_ptr());
        let get_ip = libc::dlsym(lib, c"_Unwind_GetIP".as_ptr());
        if backtrace.is_null() || get_ip.is_null() {
            return None;
        }
        Some(Unwinder {
            backtrace: core::mem::transmute::<*mut c_void, BacktraceFn>(backtrace),
            get_ip: core::mem::transmute::<*mut c_void, GetIpFn>(get_ip),
        })
    }
}

/// The executable address range of the object holding this code, when it
/// is a shared library (`libapexalloc.so`): its frames are the
/// allocator's. `None` when the allocator is linked into the program.
static OWN_CODE: Once<Option<(usize, usize)>> = Once::new();

/// Frames skipped when the allocator is part of the program: `capture`,
/// and the sampler's `sample` and `on_alloc` (all never inlined).
const FIXED_SKIP: usize = 3;

struct FindOwn {
    addr: usize,
    found: Option<(usize, usize)>,
}

/// See [`OWN_CODE`].
fn find_own_code() -> Option<(usize, usize)> {
    let mut f = FindOwn {
        addr: capture as fn(&mut [usize; DEPTH]) -> usize as usize,
        found: None,
    };
    // SAFETY: the callback only reads the loader's descriptions and the
    // `FindOwn` passed through `data`.
    unsafe { libc::dl_iterate_phdr(Some(find_own_step), (&mut f as *mut FindOwn).cast()) };
    f.found
}

/// `dl_iterate_phdr`'s callback for [`find_own_code`]: stops (returns 1)
/// at the object whose executable segment holds `FindOwn::addr`.
///
/// # Safety
/// `info` must describe a loaded object and `data` point to a `FindOwn`.
unsafe extern "C" fn find_own_step(
    info: *mut libc::dl_phdr_info,
    _size: usize,
    data: *mut c_void,
) -> c_int {
    // SAFETY: the loader passes a valid description; `data` is the
    // `FindOwn` of `find_own_code`.
    let (info, f) = unsafe { (&*info, &mut *(data as *mut FindOwn)) };
    for i in 0..usize::from(info.dlpi_phnum) {
        // SAFETY: `dlpi_phdr` has `dlpi_phnum` entries.
        let ph = unsafe { &*info.dlpi_phdr.add(i) };
        if ph.p_type != libc::PT_LOAD || ph.p_flags & libc::PF_X == 0 {
            continue;
        }
        let start = (info.dlpi_addr as usize).wrapping_add(ph.p_vaddr as usize);
        let end = start.wrapping_add(ph.p_memsz as usize);
        if (start..end).contains(&f.addr) {
            // SAFETY: the name is null or a NUL-terminated string; the
            // main program's is empty.
            let in_program = info.dlpi_name.is_null() || unsafe { *info.dlpi_name } == 0 as c_char;
            if !in_program {
                f.found = Some((start, end));
            }
            return 1;
        }
    }
    0
}

/// One backtrace being taken.
struct Walk {
    frames: *mut usize,
    depth: usize,
    seen: usize,
    own: Option<(usize, usize)>,
    get_ip: GetIpFn,
}

/// The unwinder's callback, once per frame from `capture`'s outwards:
/// skips the allocator's frames, keeps the next [`DEPTH`].
extern "C" fn walk_step(ctx: *mut c_void, data: *mut c_void) -> c_int {
    // SAFETY: `data` is the `Walk` of `capture`, alive for the walk.
    let w = unsafe { &mut *(data as *mut Walk) };
    // SAFETY: `ctx` is the unwinder's context for this frame.
    let ip = unsafe { (w.get_ip)(ctx) };
    w.seen += 1;
    if ip == 0 || w.seen > WALK_MAX {
        return URC_NORMAL_STOP;
    }
    if w.depth == 0 {
        let own = match w.own {
            Some((start, end)) => (start..end).contains(&ip),
            None => w.seen <= FIXED_SKIP,
        };
        if own {
            return URC_NO_REASON;
        }
    }
    // SAFETY: `frames` has DEPTH entries and `depth < DEPTH` here.
    unsafe { *w.frames.add(w.depth) = ip };
    w.depth += 1;
    if w.depth == DEPTH {
        URC_NORMAL_STOP
    } else {
        URC_NO_REASON
    }
}

/// Fills `frames` with the return addresses of the callers of the
/// allocator, innermost first; returns how many (0 without an unwinder).
#[inline(never)]
pub(super) fn capture(frames: &mut [usize; DEPTH]) -> usize {
    let Some(Some(u)) = UNWINDER.get() else {
        return 0;
    };
    let mut w = Walk {
        frames: frames.as_mut_ptr(),
        depth: 0,
        seen: 0,
        own: OWN_CODE.get().copied().flatten(),
        get_ip: u.get_ip,
    };
    // SAFETY: `walk_step` matches the unwinder's callback type and gets
    // the `Walk` above, which outlives the call.
    unsafe { (u.backtrace)(walk_step, (&mut w as *mut Walk).cast()) };
    w.depth
}
