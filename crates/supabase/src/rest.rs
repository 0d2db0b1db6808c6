//! PostgREST client. Filled in by the REST work.
