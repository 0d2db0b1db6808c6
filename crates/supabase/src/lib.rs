//! Supabase wire clients. `rest`: PostgREST; `realtime`: Phoenix channels.
pub mod realtime;
pub mod rest;
