//! Local Supabase stack. Filled in by the stack work.
