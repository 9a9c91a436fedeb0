//! Binding heaps to threads: the TLS slot ([`crate::tls`]) on the fast
//! path, heap creation on a thread's first allocation, the heap handed back
//! at thread exit (through a pthread key's destructor), the shared heap for
//! threads without one, and the fork handlers that keep the locks
//! consistent in a child.

use core::ptr::{self, NonNull};

use apex_core::Heap;
use spin::Mutex;

use crate::{init, leaks, thread_ids, tls, GLOBAL};

/// The heap used by threads whose own heap is gone (after thread exit) or
/// could not be created; every operation on it holds the lock.
static SHARED: Mutex<Option<HeapPtr>> = Mutex::new(None);

/// The key whose destructor hands a thread's heap back at thread exit.
static mut THREAD_KEY: libc::pthread_key_t = 0;

#[derive(Clone, Copy)]
struct HeapPtr(NonNull<Heap>);
// SAFETY: the shared heap is only used under its mutex.
unsafe impl Send for HeapPtr {}

/// Creates the thread-exit key and the shared heap. Called once, by the
/// thread initialising the allocator, before the allocator is published
/// as ready.
pub(crate) fn bind_process() {
    // SAFETY: the key is written once, here, before the allocator is
    // published as ready; every later read happens after that.
    unsafe {
        libc::pthread_key_create(ptr::addr_of_mut!(THREAD_KEY), Some(thread_exit));
    }
    // The shared heap exists from the start, with a segment: it is the
    // fallback of threads that cannot get a heap or a segment of their own,
    // which happens exactly when memory is short, when it could not get one
    // either. (Address space only: nothing is touched until it is used.)
    *SHARED.lock() = create_heap().map(|mut h| {
        // SAFETY: just created, not yet shared with anybody.
        unsafe { h.as_mut().pin_segment() };
        HeapPtr(h)
    });
}

/// A new heap. With leak reports on, its fast paths are disabled, so that
/// every allocation and free reaches the out-of-line paths that sample.
fn create_heap() -> Option<NonNull<Heap>> {
    let mut h = Heap::create(&GLOBAL)?;
    if leaks::enabled() {
        // SAFETY: just created, not yet shared with anybody.
        unsafe { h.as_mut().disable_fast_paths() };
    }
    Some(h)
}

/// Registers the fork handlers (this may allocate, so it runs once the
/// allocator is ready).
pub(crate) fn register_fork_handlers() {
    // SAFETY: registering plain functions without captured state.
    unsafe {
        libc::pthread_atfork(Some(fork_prepare), Some(fork_parent), Some(fork_child));
    }
}

/// Runs the shared heap's decay (for the background purge).
pub(crate) fn decay_shared() {
    if let Some(h) = *SHARED.lock() {
        // SAFETY: the shared heap is used only under its lock.
        unsafe { (*h.0.as_ptr()).decay() };
    }
}

extern "C" fn thread_exit(value: *mut libc::c_void) {
    // From here on this thread allocates from the shared heap.
    tls::set(tls::EXITED);
    if let Some(h) = NonNull::new(value as *mut Heap) {
        thread_ids::unbind(h.as_ptr() as usize);
        // SAFETY: the key's value is this thread's heap, used by nobody else.
        unsafe { Heap::destroy(h) };
    }
}

/// The calling thread's heap, if it has a live one (one TLS load).
#[inline(always)]
pub(crate) fn own_heap() -> Option<&'static mut Heap> {
    let h = tls::heap();
    if h != tls::placeholder() {
        // SAFETY: the slot holds this thread's live heap, used only by this
        // thread, and only for the duration of one call.
        Some(unsafe { &mut *h })
    } else {
        None
    }
}

/// Runs `f` on the calling thread's heap, or `boot` while this thread is
/// initialising the allocator. The fast path is one TLS load.
#[inline(always)]
pub(crate) fn with_heap<R>(f: impl FnOnce(&mut Heap) -> R, boot: impl FnOnce() -> R) -> R {
    let h = tls::heap();
    if h != tls::placeholder() {
        // SAFETY: the slot holds this thread's live heap, used only here.
        return f(unsafe { &mut *h });
    }
    with_heap_slow(tls::get(), f, boot)
}

#[cold]
#[inline(never)]
fn with_heap_slow<R>(state: usize, f: impl FnOnce(&mut Heap) -> R, boot: impl FnOnce() -> R) -> R {
    if state == tls::IN_INIT {
        return boot();
    }
    if state == tls::UNSET {
        init::ensure_global();
        tls::set(tls::IN_INIT);
        if let Some(h) = create_heap() {
            tls::set(h.as_ptr() as usize);
            thread_ids::bind(h.as_ptr() as usize);
            // SAFETY: the key was created in `bind_process`. A nested
            // allocation inside pthread_setspecific finds the heap set.
            unsafe { libc::pthread_setspecific(THREAD_KEY, h.as_ptr() as *const libc::c_void) };
            // SAFETY: just created for this thread.
            return f(unsafe { &mut *h.as_ptr() });
        }
        tls::set(tls::EXITED);
    }
    let mut shared = SHARED.lock();
    if shared.is_none() {
        *shared = create_heap().map(HeapPtr);
    }
    match *shared {
        // SAFETY: the shared heap is used only under this lock.
        Some(h) => f(unsafe { &mut *h.0.as_ptr() }),
        None => {
            drop(shared);
            boot()
        }
    }
}

/// `f` on the shared heap (created if missing); null when there is none.
#[cold]
#[inline(never)]
pub(crate) fn from_shared(f: impl FnOnce(&mut Heap) -> *mut u8) -> *mut u8 {
    let mut shared = SHARED.lock();
    if shared.is_none() {
        *shared = create_heap().map(HeapPtr);
    }
    match *shared {
        // SAFETY: the shared heap is used only under this lock.
        Some(h) => f(unsafe { &mut *h.0.as_ptr() }),
        None => ptr::null_mut(),
    }
}

// ---------------------------------------------------------------------------
// Fork safety
// ---------------------------------------------------------------------------

extern "C" fn fork_prepare() {
    core::mem::forget(SHARED.lock());
    GLOBAL.lock_all();
    leaks::fork_prepare();
}

extern "C" fn fork_parent() {
    leaks::fork_release();
    // SAFETY: this thread took the locks in `fork_prepare`.
    unsafe {
        GLOBAL.unlock_all();
        SHARED.force_unlock();
    }
}

extern "C" fn fork_child() {
    leaks::fork_release();
    // SAFETY: the child has one thread, the one that took the locks.
    unsafe {
        GLOBAL.fork_child_reset();
        SHARED.force_unlock();
    }
    // The child's one thread has an id of its own.
    let own = own_heap().map_or(0, |h| h as *mut Heap as usize);
    thread_ids::reset_in_child(own);
}
