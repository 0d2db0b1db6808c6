//! The HTTP API (axum). Health family is open on loopback; the rest needs the API token.
pub mod error;
pub mod json;
pub mod metrics;

pub use error::ApiError;
