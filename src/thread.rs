//! One way to start a thread, one way to stop threads and one way to lock a mutex.
//!
//! Every thread of the node starts through [`spawn`] (or [`spawn_with_stack`],
//! [`spawn_scoped`]): it has a name, its end is logged at debug level (target `thread`), and a
//! panic is logged as an error naming the thread before it goes on unwinding, so that whoever
//! joins the thread still sees it as `Err`. [`lock`] takes a mutex even if a thread panicked
//! while holding it: every mutex here guards state that stays consistent between statements.
//!
//! Every subsystem stops through a [`Shutdown`]: one call ([`Shutdown::stop`]) sets a flag
//! that loops check, closes a channel that `select!` loops and sleeps wait on, and runs the
//! wakers registered by threads blocked where neither reaches them (a socket read, an
//! `accept`, a server's queue). Nothing polls a timer to notice a stop.

use std::any::Any;
use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::thread::{Builder, JoinHandle, Scope, ScopedJoinHandle};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, bounded};

use log::{debug, error};

const LOG: &str = "thread";

/// Starts a thread named `name` running `f`; see the module documentation.
pub fn spawn<F, T>(name: &str, f: F) -> io::Result<JoinHandle<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    Builder::new().name(name.into()).spawn(logged(f))
}

/// [`spawn`] with a stack of `stack` bytes (for threads started per connection).
pub fn spawn_with_stack<F, T>(name: &str, stack: usize, f: F) -> io::Result<JoinHandle<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    Builder::new()
        .name(name.into())
        .stack_size(stack)
        .spawn(logged(f))
}

/// [`spawn`] inside a [`std::thread::scope`].
pub fn spawn_scoped<'scope, F, T>(
    scope: &'scope Scope<'scope, '_>,
    name: &str,
    f: F,
) -> io::Result<ScopedJoinHandle<'scope, T>>
where
    F: FnOnce() -> T + Send + 'scope,
    T: Send + 'scope,
{
    Builder::new()
        .name(name.into())
        .spawn_scoped(scope, logged(f))
}

/// Locks `m`, recovering the guard if a thread panicked while holding it.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The calling thread's stack, to give back the pages its deep calls touched once they
/// have returned (a thread per connection idles in a read with a shallow stack; the pages a
/// JSON parse or a reply touched below it would otherwise stay resident for the
/// connection's life).
///
/// Linux with glibc only: elsewhere [`StackTrim::new`] is `None`.
#[derive(Debug, Clone, Copy)]
pub struct StackTrim {
    /// Lowest address ever released: [`TRIM_FLOOR`] above the stack's usable bottom (the
    /// guard page lies below that bottom).
    floor: usize,
    /// The top of the stack's mapping (glibc keeps the thread's descriptor and its
    /// thread-local storage there, above the first frame).
    top: usize,
    page: usize,
}

/// Bytes above the stack's usable bottom that [`StackTrim::release`] never touches.
const TRIM_FLOOR: usize = 16 * 1024;
/// Bytes below the releasing frame's own locals kept resident: far more than the
/// `madvise` call needs beneath that frame (a return address; the system call itself
/// runs on the kernel's stack).
const TRIM_GAP: usize = 1024;

impl StackTrim {
    /// The calling thread's stack bounds, read once; `None` where they cannot be read (or
    /// off Linux/glibc).
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    pub fn new() -> Option<StackTrim> {
        let (low, high) = stack_bounds()?;
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).ok()?;
        if !page.is_power_of_two() || high <= low {
            return None;
        }
        let floor = (low + TRIM_FLOOR + page - 1) & !(page - 1);
        Some(StackTrim {
            floor,
            top: high,
            page,
        })
    }

    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    pub fn new() -> Option<StackTrim> {
        None
    }

    /// Gives back to the system the calling thread's stack pages below this call's frame
    /// (less [`TRIM_GAP`]); the next call that reaches them finds them zeroed, as a fresh
    /// stack is. One `madvise` system call. Must be called on the thread whose
    /// [`StackTrim`] this is: on another, whose frame is not in the range read, it
    /// releases nothing.
    #[inline(never)]
    pub fn release(&self) {
        let here = 0u8;
        let sp = std::hint::black_box(&here) as *const u8 as usize;
        let end = sp.saturating_sub(TRIM_GAP) & !(self.page - 1);
        if sp > self.top || end <= self.floor {
            return;
        }
        self.madvise(end);
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn madvise(&self, end: usize) {
        // SAFETY: [floor, end) lies in this thread's own stack mapping (private and
        // anonymous), wholly below the frame of `release` (by at least `TRIM_GAP`, far more
        // than the madvise call itself pushes): it holds only frames that have returned,
        // which nothing may still point to. MADV_DONTNEED on such memory drops its pages;
        // a later touch gets zeroed pages, as the untouched stack would give. A signal
        // handler that runs on this stack meanwhile only refaults pages.
        unsafe {
            libc::madvise(
                self.floor as *mut libc::c_void,
                end - self.floor,
                libc::MADV_DONTNEED,
            );
        }
    }

    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    fn madvise(&self, _end: usize) {}
}

/// The calling thread's stack as (lowest usable address, top of its mapping).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn stack_bounds() -> Option<(usize, usize)> {
    let mut attr = std::mem::MaybeUninit::<libc::pthread_attr_t>::uninit();
    // SAFETY: pthread_getattr_np initialises `attr` when it returns 0 (and only then is it
    // read and destroyed); pthread_attr_getstack writes two values through valid pointers
    // to locals.
    unsafe {
        if libc::pthread_getattr_np(libc::pthread_self(), attr.as_mut_ptr()) != 0 {
            return None;
        }
        let mut addr: *mut libc::c_void = std::ptr::null_mut();
        let mut size: libc::size_t = 0;
        let rc = libc::pthread_attr_getstack(attr.as_ptr(), &mut addr, &mut size);
        libc::pthread_attr_destroy(attr.as_mut_ptr());
        (rc == 0).then(|| (addr as usize, addr as usize + size))
    }
}

/// How long a waker that connects to a listener to end its `accept` may take.
const WAKE_CONNECT: Duration = Duration::from_secs(1);

/// A stop signal shared by a subsystem's threads; cloning it shares the same signal.
#[derive(Clone)]
pub struct Shutdown(Arc<Signal>);

struct Signal {
    stopped: AtomicBool,
    /// Dropped at stop, which disconnects `closed`: a `recv` on it returns at once from
    /// then on.
    open: Mutex<Option<Sender<()>>>,
    closed: Receiver<()>,
    wakers: Mutex<Wakers>,
}

#[derive(Default)]
struct Wakers {
    next: u64,
    waiting: HashMap<u64, Box<dyn FnOnce() + Send>>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown::new()
    }
}

impl std::fmt::Debug for Shutdown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shutdown")
            .field("stopped", &self.is_stopped())
            .finish()
    }
}

impl Shutdown {
    pub fn new() -> Shutdown {
        let (open, closed) = bounded(0);
        Shutdown(Arc::new(Signal {
            stopped: AtomicBool::new(false),
            open: Mutex::new(Some(open)),
            closed,
            wakers: Mutex::default(),
        }))
    }

    /// Signals the stop: sets the flag, closes the channel and runs every registered
    /// waker (once). Later calls do nothing.
    pub fn stop(&self) {
        if self.0.stopped.swap(true, Ordering::SeqCst) {
            return;
        }
        lock(&self.0.open).take();
        let waiting = std::mem::take(&mut lock(&self.0.wakers).waiting);
        for (_, wake) in waiting {
            wake();
        }
    }

    pub fn is_stopped(&self) -> bool {
        self.0.stopped.load(Ordering::SeqCst)
    }

    /// A channel that never carries a message and is disconnected at stop: `recv` on it
    /// in a `select!` fires once the stop is signalled.
    pub fn signal(&self) -> &Receiver<()> {
        &self.0.closed
    }

    /// Sleeps for `d` or until the stop, whichever comes first; true if stopped.
    pub fn sleep(&self, d: Duration) -> bool {
        !matches!(
            self.0.closed.recv_timeout(d),
            Err(RecvTimeoutError::Timeout)
        ) || self.is_stopped()
    }

    /// Registers `wake`, run once at stop, for as long as the returned [`Waker`] lives;
    /// run at once if the stop was already signalled.
    pub fn on_stop(&self, wake: impl FnOnce() + Send + 'static) -> Waker {
        let mut wakers = lock(&self.0.wakers);
        // `stop` sets the flag before it takes the wakers, under this lock: either it
        // takes this one, or the flag is seen here.
        if self.is_stopped() {
            drop(wakers);
            wake();
            return Waker {
                signal: Weak::new(),
                id: 0,
            };
        }
        let id = wakers.next;
        wakers.next += 1;
        wakers.waiting.insert(id, Box::new(wake));
        Waker {
            signal: Arc::downgrade(&self.0),
            id,
        }
    }

    /// A waker that shuts `stream` down at stop, ending a read blocked on it.
    pub fn close_on_stop(&self, stream: &TcpStream) -> io::Result<Waker> {
        let stream = stream.try_clone()?;
        Ok(self.on_stop(move || {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }))
    }

    /// A waker that ends a blocking `accept` on `listener` at stop, by connecting to it
    /// (the accept loop checks [`is_stopped`](Self::is_stopped) on every connection).
    pub fn wake_accept_on_stop(&self, listener: &TcpListener) -> io::Result<Waker> {
        let addr = loopback(listener.local_addr()?);
        Ok(self.on_stop(move || {
            let _ = TcpStream::connect_timeout(&addr, WAKE_CONNECT);
        }))
    }

    /// How many wakers are registered (tests).
    #[cfg(test)]
    fn wakers(&self) -> usize {
        lock(&self.0.wakers).waiting.len()
    }
}

/// A registration made by [`Shutdown::on_stop`]; dropping it withdraws the waker.
#[must_use = "the waker is withdrawn when this is dropped"]
pub struct Waker {
    signal: Weak<Signal>,
    id: u64,
}

impl Drop for Waker {
    fn drop(&mut self) {
        if let Some(signal) = self.signal.upgrade() {
            lock(&signal.wakers).waiting.remove(&self.id);
        }
    }
}

/// `addr`, with an unspecified IP (a listener on every address) made the loopback one.
fn loopback(mut addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
        });
    }
    addr
}

/// `f`, logging its end and any panic (which then goes on unwinding).
fn logged<F: FnOnce() -> T, T>(f: F) -> impl FnOnce() -> T {
    move || {
        let result = panic::catch_unwind(AssertUnwindSafe(f));
        let current = std::thread::current();
        let name = current.name().unwrap_or("unnamed");
        match result {
            Ok(value) => {
                debug!(target: LOG, "thread {name} ended");
                value
            }
            Err(payload) => {
                error!(target: LOG, "thread {name} panicked: {}", message(&*payload));
                panic::resume_unwind(payload)
            }
        }
    }
}

/// A panic's message, when it has one.
fn message(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "(no message)"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// Resident pages of `trim`'s stack, from its release floor up to its top (`mincore`).
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn resident_pages(trim: &StackTrim) -> usize {
        let mut v = vec![0u8; (trim.top - trim.floor).div_ceil(trim.page)];
        // SAFETY: [floor, top) is mapped (the calling thread's stack) and floor is page
        // aligned; mincore writes one byte per page into `v`, which holds that many.
        let rc = unsafe {
            libc::mincore(
                trim.floor as *mut libc::c_void,
                trim.top - trim.floor,
                v.as_mut_ptr(),
            )
        };
        assert_eq!(rc, 0, "mincore: {}", io::Error::last_os_error());
        v.iter().filter(|b| *b & 1 != 0).count()
    }

    /// Fills 64 KiB of stack below the caller with a pattern and sums it back.
    #[inline(never)]
    fn deep(seed: u8) -> u64 {
        let mut buf = [0u8; 64 * 1024];
        for (i, b) in buf.iter_mut().enumerate() {
            *b = seed.wrapping_add(i as u8);
        }
        std::hint::black_box(&mut buf);
        buf.iter().map(|&b| u64::from(b)).sum()
    }

    fn expected(seed: u8) -> u64 {
        (0..64 * 1024usize)
            .map(|i| u64::from(seed.wrapping_add(i as u8)))
            .sum()
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn a_released_stack_gives_its_deep_pages_back_and_still_works() {
        let t = spawn_with_stack("test_trim", 256 * 1024, || {
            let trim = StackTrim::new().expect("the stack's bounds");
            let shallow = resident_pages(&trim);
            assert_eq!(deep(1), expected(1));
            let touched = resident_pages(&trim);
            trim.release();
            let released = resident_pages(&trim);
            // The deep call used again: zeroed pages fault back in and hold what it writes.
            assert_eq!(deep(7), expected(7));
            let again = resident_pages(&trim);
            trim.release();
            (shallow, touched, released, again, resident_pages(&trim))
        })
        .unwrap();
        let (shallow, touched, released, again, last) = t.join().unwrap();
        assert!(touched >= shallow + 16, "{shallow} then {touched} pages");
        assert!(
            released <= shallow + 1,
            "{released} pages left of {touched}"
        );
        assert!(
            again >= released + 16,
            "{again} pages after a second deep call"
        );
        assert!(last <= shallow + 1, "{last} pages left of {again}");
    }

    #[test]
    fn a_release_on_another_thread_releases_nothing() {
        let Some(trim) = StackTrim::new() else {
            return;
        };
        let t = spawn("test_trim_other", move || {
            let before = deep(3);
            trim.release();
            (before, deep(3))
        })
        .unwrap();
        assert_eq!(t.join().unwrap(), (expected(3), expected(3)));
        assert_eq!(deep(5), expected(5));
    }

    #[test]
    fn join_returns_the_result() {
        let t = spawn("test_result", || 6 * 7).unwrap();
        assert_eq!(t.thread().name(), Some("test_result"));
        assert_eq!(t.join().unwrap(), 42);
    }

    #[test]
    fn a_stack_size_is_kept_and_the_result_returned() {
        let t = spawn_with_stack("test_stack", 256 * 1024, || "done").unwrap();
        assert_eq!(t.join().unwrap(), "done");
    }

    #[test]
    fn a_panic_reaches_join() {
        let t = spawn("test_panic", || -> u32 { panic!("on purpose") }).unwrap();
        let payload = t.join().unwrap_err();
        assert_eq!(message(&*payload), "on purpose");
    }

    #[test]
    fn scoped_threads_return_and_panic() {
        let data = [1, 2, 3];
        std::thread::scope(|s| {
            let sum = spawn_scoped(s, "test_scoped", || data.iter().sum::<i32>()).unwrap();
            assert_eq!(sum.join().unwrap(), 6);
            let failed = spawn_scoped(s, "test_scoped_panic", || panic!("{}", data.len()));
            let payload = failed.unwrap().join().unwrap_err();
            assert_eq!(message(&*payload), "3");
        });
    }

    #[test]
    fn stop_closes_the_signal_sets_the_flag_and_ends_sleeps() {
        let shutdown = Shutdown::new();
        assert!(!shutdown.is_stopped());
        assert!(!shutdown.sleep(Duration::from_millis(1)));
        let s = shutdown.clone();
        let sleeper = spawn("test_sleeper", move || s.sleep(Duration::from_secs(60))).unwrap();
        let s = shutdown.clone();
        let selector = spawn("test_select", move || {
            crossbeam_channel::select! {
                recv(s.signal()) -> m => m.is_err(),
                default(Duration::from_secs(60)) => false,
            }
        })
        .unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let started = std::time::Instant::now();
        shutdown.stop();
        assert!(sleeper.join().unwrap());
        assert!(selector.join().unwrap());
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(shutdown.is_stopped());
        shutdown.stop();
    }

    #[test]
    fn wakers_run_once_at_stop_unless_dropped_and_at_once_after_it() {
        let shutdown = Shutdown::new();
        let runs = Arc::new(Mutex::new(Vec::new()));
        let r = runs.clone();
        let kept = shutdown.on_stop(move || lock(&r).push("kept"));
        let r = runs.clone();
        let dropped = shutdown.on_stop(move || lock(&r).push("dropped"));
        drop(dropped);
        assert_eq!(shutdown.wakers(), 1);
        shutdown.stop();
        shutdown.stop();
        assert_eq!(*lock(&runs), ["kept"]);
        drop(kept);
        let r = runs.clone();
        let _late = shutdown.on_stop(move || lock(&r).push("late"));
        assert_eq!(*lock(&runs), ["kept", "late"]);
        assert_eq!(shutdown.wakers(), 0);
    }

    #[test]
    fn a_blocked_read_and_a_blocked_accept_end_at_stop() {
        use std::io::Read;
        let shutdown = Shutdown::new();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = TcpStream::connect(addr).unwrap();
        let (server, _) = listener.accept().unwrap();
        let s = shutdown.clone();
        let reader = spawn("test_reader", move || {
            let _waker = s.close_on_stop(&server).unwrap();
            let mut buf = [0u8; 16];
            (&server).read(&mut buf).map_err(|e| e.kind())
        })
        .unwrap();
        let s = shutdown.clone();
        let acceptor = spawn("test_acceptor", move || {
            let _waker = s.wake_accept_on_stop(&listener).unwrap();
            for conn in listener.incoming() {
                if s.is_stopped() {
                    return conn.is_ok();
                }
            }
            false
        })
        .unwrap();
        std::thread::sleep(Duration::from_millis(50));
        shutdown.stop();
        assert_eq!(reader.join().unwrap(), Ok(0));
        assert!(acceptor.join().unwrap());
    }

    #[test]
    fn lock_recovers_a_poisoned_mutex() {
        let m = Arc::new(Mutex::new(1));
        let holder = m.clone();
        let t = spawn("test_poison", move || {
            let mut g = holder.lock().unwrap();
            *g = 2;
            panic!("while holding the lock");
        })
        .unwrap();
        assert!(t.join().is_err());
        assert!(m.is_poisoned());
        *lock(&m) += 1;
        assert_eq!(*lock(&m), 3);
    }
}
