//! Memory monitor. Filled in by the monitor work.
