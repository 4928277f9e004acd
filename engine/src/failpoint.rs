//! Named failpoints (`module::operation::condition`) at the steps between two device
//! writes, where a simulated device alone cannot place a failure: between writing a
//! freed block's header and syncing it, between writing the shutdown snapshot and
//! flipping the header, inside the flusher and a put's index update.
//!
//! Compiled only with the `failpoints` feature; without it `hit` is an empty inline
//! function. Tests arm a failpoint with [`arm`] and the returned guard disarms it.

use crate::error::Result;

/// What an armed failpoint does when reached.
#[cfg_attr(not(feature = "failpoints"), allow(dead_code))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Returns an injected I/O error from the step.
    Fail,
    /// Panics in the thread that reached it.
    Panic,
    /// Holds the thread that reached it until the failpoint is disarmed: a step that
    /// takes as long as a test needs (a scan of a large device, say).
    Hold,
}

#[cfg(feature = "failpoints")]
mod armed {
    use super::Action;
    use std::sync::Mutex;

    pub static ARMED: Mutex<Vec<(&'static str, Action)>> = Mutex::new(Vec::new());
    /// How often each armed failpoint was reached while armed.
    pub static HITS: Mutex<Vec<(&'static str, u64)>> = Mutex::new(Vec::new());

    pub fn count_hit(name: &'static str) {
        let mut hits = HITS.lock().unwrap_or_else(|e| e.into_inner());
        match hits.iter_mut().find(|(n, _)| *n == name) {
            Some((_, count)) => *count += 1,
            None => hits.push((name, 1)),
        }
    }

    pub fn action(name: &str) -> Option<Action> {
        let armed = ARMED.lock().unwrap_or_else(|e| e.into_inner());
        armed.iter().find(|(n, _)| *n == name).map(|&(_, a)| a)
    }
}

/// How many times the failpoint `name` was reached while armed, since the start.
#[cfg(feature = "failpoints")]
pub fn hits(name: &str) -> u64 {
    let hits = armed::HITS.lock().unwrap_or_else(|e| e.into_inner());
    hits.iter().find(|(n, _)| *n == name).map_or(0, |&(_, count)| count)
}

/// Disarms its failpoint when dropped.
#[cfg(feature = "failpoints")]
pub struct Armed(&'static str);

/// Arms the failpoint `name` until the guard is dropped.
#[cfg(feature = "failpoints")]
pub fn arm(name: &'static str, action: Action) -> Armed {
    armed::ARMED.lock().unwrap_or_else(|e| e.into_inner()).push((name, action));
    Armed(name)
}

#[cfg(feature = "failpoints")]
impl Drop for Armed {
    fn drop(&mut self) {
        armed::ARMED.lock().unwrap_or_else(|e| e.into_inner()).retain(|(n, _)| *n != self.0);
    }
}

/// Reached at the step `name`: an error or a panic when armed, nothing otherwise.
#[inline(always)]
pub(crate) fn hit(name: &'static str) -> Result<()> {
    #[cfg(feature = "failpoints")]
    match armed::action(name) {
        Some(Action::Hold) => {
            armed::count_hit(name);
            // Hold: a test-only wait, polled because the guard's drop has no one to wake.
            while armed::action(name) == Some(Action::Hold) {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
        Some(Action::Fail) => {
            armed::count_hit(name);
            return Err(crate::error::Error::io(
                "failpoint",
                0,
                std::io::Error::other(format!("failpoint {name}")),
            ));
        }
        Some(Action::Panic) => {
            armed::count_hit(name);
            panic!("failpoint {name}")
        }
        None => {}
    }
    let _ = name;
    Ok(())
}
