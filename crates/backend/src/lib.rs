//! CollisionOS Monitor backend, hosted in-process by the desktop shell or run headless by the
//! `collisionos` binary. No `tauri` dependency: everything here builds and tests without WebKit.
//!
//! Modules, one owner per concern:
//! - [`config`]: layered configuration and its validation;
//! - [`events`]: the bounded event bus;
//! - [`monitor`]: memory sampling, thresholds, leak detection, the health-sample ring;
//! - [`upstream`]: the lease pool in front of PostgREST and the online/offline state;
//! - [`subscriptions`]: the realtime subscription manager;
//! - [`api`]: the axum HTTP API;
//! - [`backend`]: start-up and ordered shutdown of all of the above.

pub mod api;
pub mod backend;
pub mod config;
pub mod events;
pub mod logging;
pub mod monitor;
pub mod subscriptions;
pub mod upstream;

pub use backend::{Backend, BackendHandle, HealthLevel, ShutdownReport, StartError, StartOptions};
