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
}

#[cfg(feature = "failpoints")]
mod armed {
    use super::Action;
    use std::sync::Mutex;

    pub static ARMED: Mutex<Vec<(&'static str, Action)>> = Mutex::new(Vec::new());

    pub fn action(name: &str) -> Option<Action> {
        let armed = ARMED.lock().unwrap_or_else(|e| e.into_inner());
        armed.iter().find(|(n, _)| *n == name).map(|&(_, a)| a)
    }
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
        Some(Action::Fail) => {
            return Err(crate::error::Error::io(
                "failpoint",
                0,
                std::io::Error::other(format!("failpoint {name}")),
            ))
        }
        Some(Action::Panic) => panic!("failpoint {name}"),
        None => {}
    }
    let _ = name;
    Ok(())
}
