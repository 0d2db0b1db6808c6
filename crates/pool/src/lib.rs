//! Bounded pool of leases. Filled in by the pool work.
