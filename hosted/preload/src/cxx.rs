//! C++ `operator new` and `operator delete` in all their forms.
//!
//! A throwing `new` that fails must throw `std::bad_alloc`. The library does
//! not link the C++ runtime (C programs would pay for it); a program that
//! calls `operator new` has it loaded, so the exception is built with the
//! runtime's own `__cxa_allocate_exception`/`__cxa_throw`, found with
//! `dlsym`. The exception unwinds through the `new` frame, which is why
//! those functions use the "C-unwind" ABI.
//!
//! Before giving up, every form of `new` calls the program's
//! `std::new_handler` (found the same way) and retries, for as long as
//! one is installed, as the C++ standard asks: a handler may free memory
//! and return, uninstall itself, throw `bad_alloc` or end the program.
//! The `nothrow` forms call it too and return null once no handler is
//! left; a handler that throws from inside one propagates its exception,
//! as it does through mimalloc's and the C++ runtime's own
//! `operator new`.

use core::ffi::{c_char, c_void};

use hosted as apex;

type AllocException = unsafe extern "C" fn(usize) -> *mut c_void;
type NewHandler = unsafe extern "C-unwind" fn();
type GetNewHandler = unsafe extern "C" fn() -> Option<NewHandler>;
type Throw = unsafe extern "C-unwind" fn(*mut c_void, *const c_void, *const c_void) -> !;

fn lookup(name: &core::ffi::CStr) -> *mut c_void {
    // SAFETY: dlsym with a NUL-terminated name.
    unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr() as *const c_char) }
}

/// Throws `std::bad_alloc`, or aborts when no C++ runtime is loaded.
#[cold]
#[inline(never)]
fn throw_bad_alloc() -> ! {
    let alloc = lookup(c"__cxa_allocate_exception");
    let throw = lookup(c"__cxa_throw");
    let typeinfo = lookup(c"_ZTISt9bad_alloc");
    let vtable = lookup(c"_ZTVSt9bad_alloc");
    let dtor = lookup(c"_ZNSt9bad_allocD1Ev");
    if alloc.is_null() || throw.is_null() || typeinfo.is_null() || vtable.is_null() {
        apex::report::write_stderr("apexalloc: fatal: out of memory in operator new\n");
        // SAFETY: abort is always safe.
        unsafe { libc::abort() }
    }
    // SAFETY: the symbols are the C++ runtime's; a bad_alloc object is one
    // vtable pointer, which points 16 bytes into the vtable symbol (after the
    // offset-to-top and typeinfo slots).
    unsafe {
        let alloc: AllocException = core::mem::transmute(alloc);
        let throw: Throw = core::mem::transmute(throw);
        let exc = alloc(core::mem::size_of::<usize>());
        *(exc as *mut usize) = vtable as usize + 16;
        throw(exc, typeinfo, dtor)
    }
}

/// The program's installed `std::new_handler`, if it has a C++ runtime
/// and a handler is installed.
fn new_handler() -> Option<NewHandler> {
    // Looked up at each failure: a runtime loaded later (dlopen) counts,
    // and a failing `new` is rare.
    let get = lookup(c"_ZSt15get_new_handlerv");
    if get.is_null() {
        return None;
    }
    // SAFETY: the C++ runtime's `std::get_new_handler()`, which returns a
    // function pointer or null.
    unsafe {
        let get: GetNewHandler = core::mem::transmute(get);
        get()
    }
}

/// What a `new` does once `alloc` failed: calls the new-handler and
/// retries while one is installed; then null (`nothrow`) or `bad_alloc`.
#[cold]
#[inline(never)]
fn new_failed(alloc: impl Fn() -> *mut u8, nothrow: bool) -> *mut c_void {
    while let Some(handler) = new_handler() {
        // SAFETY: the program's handler, called as `operator new` would;
        // it may unwind (this path and its callers are "C-unwind").
        unsafe { handler() };
        let p = alloc();
        if !p.is_null() {
            return p as *mut c_void;
        }
    }
    if nothrow {
        return core::ptr::null_mut();
    }
    throw_bad_alloc()
}

#[inline(always)]
fn new_or_throw(size: usize) -> *mut c_void {
    let p = apex::malloc(size);
    if p.is_null() {
        return new_failed(|| apex::malloc(size), false);
    }
    p as *mut c_void
}

#[inline(always)]
fn new_aligned_or_throw(size: usize, align: usize) -> *mut c_void {
    let p = apex::malloc_aligned(size, align.max(1));
    if p.is_null() {
        return new_failed(|| apex::malloc_aligned(size, align.max(1)), false);
    }
    p as *mut c_void
}

macro_rules! throwing_new {
    ($($name:ident),*) => {$(
        /// # Safety
        /// As C++ `operator new`.
        #[no_mangle]
        pub unsafe extern "C-unwind" fn $name(size: usize) -> *mut c_void {
            new_or_throw(size)
        }
    )*};
}
throwing_new!(_Znwm, _Znam);

macro_rules! throwing_new_aligned {
    ($($name:ident),*) => {$(
        /// # Safety
        /// As C++ `operator new(size_t, align_val_t)`.
        #[no_mangle]
        pub unsafe extern "C-unwind" fn $name(size: usize, align: usize) -> *mut c_void {
            new_aligned_or_throw(size, align)
        }
    )*};
}
throwing_new_aligned!(_ZnwmSt11align_val_t, _ZnamSt11align_val_t);

macro_rules! nothrow_new {
    ($($name:ident),*) => {$(
        /// # Safety
        /// As C++ `operator new(size_t, nothrow_t const&)`.
        #[no_mangle]
        pub unsafe extern "C-unwind" fn $name(size: usize, _nt: *const c_void) -> *mut c_void {
            let p = apex::malloc(size);
            if p.is_null() {
                return new_failed(|| apex::malloc(size), true);
            }
            p as *mut c_void
        }
    )*};
}
nothrow_new!(_ZnwmRKSt9nothrow_t, _ZnamRKSt9nothrow_t);

macro_rules! nothrow_new_aligned {
    ($($name:ident),*) => {$(
        /// # Safety
        /// As C++ `operator new(size_t, align_val_t, nothrow_t const&)`.
        #[no_mangle]
        pub unsafe extern "C-unwind" fn $name(size: usize, align: usize, _nt: *const c_void) -> *mut c_void {
            let p = apex::malloc_aligned(size, align.max(1));
            if p.is_null() {
                return new_failed(|| apex::malloc_aligned(size, align.max(1)), true);
            }
            p as *mut c_void
        }
    )*};
}
nothrow_new_aligned!(
    _ZnwmSt11align_val_tRKSt9nothrow_t,
    _ZnamSt11align_val_tRKSt9nothrow_t
);

macro_rules! delete {
    ($($name:ident ( $($arg:ident : $ty:ty),* )),*) => {$(
        /// # Safety
        /// As the C++ `operator delete` of the same signature.
        #[no_mangle]
        pub unsafe extern "C" fn $name(p: *mut c_void $(, $arg: $ty)*) {
            $(let _ = $arg;)*
            // SAFETY: `p` is NULL or came from an operator new.
            unsafe { apex::free(p as *mut u8) }
        }
    )*};
}
delete!(
    _ZdlPv(),
    _ZdaPv(),
    _ZdlPvm(size: usize),
    _ZdaPvm(size: usize),
    _ZdlPvRKSt9nothrow_t(nt: *const c_void),
    _ZdaPvRKSt9nothrow_t(nt: *const c_void),
    _ZdlPvSt11align_val_t(align: usize),
    _ZdaPvSt11align_val_t(align: usize),
    _ZdlPvmSt11align_val_t(size: usize, align: usize),
    _ZdaPvmSt11align_val_t(size: usize, align: usize),
    _ZdlPvSt11align_val_tRKSt9nothrow_t(align: usize, nt: *const c_void),
    _ZdaPvSt11align_val_tRKSt9nothrow_t(align: usize, nt: *const c_void)
);

/// The unwinder's personality routine for this library's frames.
///
/// `std::bad_alloc` thrown by [`throw_bad_alloc`] unwinds through the
/// `operator new` frames above, which own nothing that needs cleaning up.
/// This library is `no_std` with `panic = "abort"`, so it has no
/// personality of its own; this one tells the unwinder to pass through
/// every frame (`_URC_CONTINUE_UNWIND`), running no landing pad.
#[no_mangle]
pub extern "C" fn rust_eh_personality(
    _version: i32,
    _actions: i32,
    _exception_class: u64,
    _exception: *mut c_void,
    _context: *mut c_void,
) -> i32 {
    const URC_CONTINUE_UNWIND: i32 = 8;
    URC_CONTINUE_UNWIND
}
