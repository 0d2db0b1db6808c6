//! Test support for CollisionOS Monitor: a local Supabase ([`stack`]) for cross-component tests,
//! benchmarks and trying the app in online mode (`supabase-local`).

pub mod realtime;
pub mod stack;
