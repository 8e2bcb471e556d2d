//! One way to start a thread and one way to lock a mutex.
//!
//! Every thread of the node starts through [`spawn`] (or [`spawn_with_stack`],
//! [`spawn_scoped`]): it has a name, its end is logged at debug level (target `thread`), and a
//! panic is logged as an error naming the thread before it goes on unwinding, so that whoever
//! joins the thread still sees it as `Err`. [`lock`] takes a mutex even if a thread panicked
//! while holding it: every mutex here guards state that stays consistent between statements.

use std::any::Any;
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Mutex, MutexGuard};
use std::thread::{Builder, JoinHandle, Scope, ScopedJoinHandle};

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
