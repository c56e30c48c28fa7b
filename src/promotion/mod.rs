//! Promotion decisions, all pure: the time gates (soak, windows, freezes) and the phase state machine. The
//! promotion controller reads the world, calls [`decide`], and writes what it returns.

mod decide;
mod gates;

pub use decide::{Step, World, decide};
pub use gates::{GateError, WindowState, soak_remaining, validate as validate_gates, window_state};
