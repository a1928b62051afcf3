//! Panic containment: running one connection's work so that a panic in it (a bug: nothing from the
//! network may cause one) costs that connection only, and fault injection that lets the tests prove it.
//!
//! Injection exists only with the `fault-injection` feature, which the test builds enable through the
//! package's dev-dependency on itself; in every other build [`inject`] is an empty inline function.
//! Even with the feature, nothing is injected until the process calls `arm` (the tests' in-process
//! balancers do; the `lb` binary never does). Cargo unifies features across the targets of one
//! invocation, so `cargo build --release --all-targets` or `cargo bench` build the binary with the
//! feature on, and a request must not be able to panic or stall such a binary. Once armed, a request
//! whose target starts with `/__lb_fault/panic-at-<stage>` panics at that stage, and one with
//! `/__lb_fault/stall-at-<stage>` stalls its thread there.

use std::any::Any;
use std::panic::{self, AssertUnwindSafe};

/// Where an injected panic fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// A backend was picked and the request counted in flight on it.
    Request,
    /// The backend's response head arrived; nothing was sent to the client yet.
    Response,
}

impl Stage {
    #[cfg(feature = "fault-injection")]
    fn name(self) -> &'static [u8] {
        match self {
            Stage::Request => b"request",
            Stage::Response => b"response",
        }
    }
}

/// How long `/__lb_fault/stall-at-<stage>` stops the thread that serves it.
#[cfg(feature = "fault-injection")]
pub const STALL_FOR: std::time::Duration = std::time::Duration::from_secs(3);

#[cfg(feature = "fault-injection")]
static ARMED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Lets requests inject faults into this process from now on.
#[cfg(feature = "fault-injection")]
pub fn arm() {
    ARMED.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Panics if this process was armed and `target` asks for a fault at `stage` (or, for
/// `/__lb_fault/stall-at-<stage>`, stops the thread for [`STALL_FOR`]).
#[cfg(feature = "fault-injection")]
pub fn inject(target: &[u8], stage: Stage) {
    if !ARMED.load(std::sync::atomic::Ordering::Relaxed) {
        return;
    }
    const PREFIX: &[u8] = b"/__lb_fault/panic-at-";
    const STALL: &[u8] = b"/__lb_fault/stall-at-";
    if let Some(rest) = target.strip_prefix(PREFIX)
        && rest.starts_with(stage.name())
    {
        panic!("fault injected at stage {stage:?}");
    }
    // A worker stuck in a long computation or a page fault storm: its thread does nothing else.
    if let Some(rest) = target.strip_prefix(STALL)
        && rest.starts_with(stage.name())
    {
        std::thread::sleep(STALL_FOR);
    }
}

#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn inject(_target: &[u8], _stage: Stage) {}

/// Runs `work`, turning a panic into `Err` with the panic's message. The caller then tears down what
/// the work was about; the state it shares with other connections must stay consistent across an
/// unwind, which is why nothing shared is left half-updated between two calls that could panic.
pub fn contain<T>(work: impl FnOnce() -> T) -> Result<T, String> {
    panic::catch_unwind(AssertUnwindSafe(work)).map_err(|payload| message(payload.as_ref()))
}

/// The text a panic was raised with.
pub fn message(payload: &(dyn Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_string()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "panic with a non-text payload".to_string()
    }
}

/// Makes panics log through `log` (with their location) instead of printing to stderr on their own:
/// a contained panic then shows up as one error line in the log, next to the line saying which
/// connection it cost.
pub fn log_panics() {
    panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map_or_else(String::new, |l| format!(" at {}:{}", l.file(), l.line()));
        log::error!("panic{location}: {}", message(info.payload()));
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contain_turns_a_panic_into_its_message() {
        assert_eq!(contain(|| 7), Ok(7));
        let text = contain(|| panic!("boom {}", 1));
        let literal = contain(|| panic!("static"));
        let other = contain(|| std::panic::panic_any(5u8));
        assert_eq!(text, Err("boom 1".to_string()));
        assert_eq!(literal, Err("static".to_string()));
        assert_eq!(other, Err("panic with a non-text payload".to_string()));
    }

    #[cfg(feature = "fault-injection")]
    #[test]
    fn injection_matches_the_stage_once_armed() {
        // Only this unit test arms the process (and no other sends a fault path): before it, a fault
        // path is an ordinary target.
        assert!(contain(|| inject(b"/__lb_fault/panic-at-request", Stage::Request)).is_ok());
        arm();
        inject(b"/__lb_fault/panic-at-response", Stage::Request);
        inject(b"/normal", Stage::Request);
        assert!(contain(|| inject(b"/__lb_fault/panic-at-request", Stage::Request)).is_err());
    }
}
