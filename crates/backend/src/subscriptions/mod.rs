//! Realtime subscription manager. Filled in by the realtime work.
