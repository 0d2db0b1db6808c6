//! Supabase wire clients. `rest`: PostgREST; `realtime`: Phoenix channels.
pub mod rest;
