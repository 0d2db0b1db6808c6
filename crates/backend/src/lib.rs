//! CollisionOS Monitor backend, hosted in-process by the desktop shell or run headless by the
//! `collisionos` binary. No `tauri` dependency: everything here builds and tests without WebKit.
//!
//! Modules, one owner per concern:
//! - [`config`]: layered configuration and its validation;
//! - [`events`]: the bounded event bus;
//! - [`monitor`]: memory sampling, thresholds, leak detection, the health-sample ring;
//! - [`subscriptions`]: the realtime subscription manager;
//! - [`api`]: the axum HTTP API.

pub mod api;
pub mod config;
pub mod events;
pub mod monitor;
pub mod subscriptions;
