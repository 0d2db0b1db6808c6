//! CollisionOS Monitor backend, hosted in-process by the desktop shell or run headless by the
//! `collisionos` binary. No `tauri` dependency: everything here builds and tests without WebKit.

pub mod api;
pub mod config;
pub mod events;
pub mod logging;
pub mod monitor;
pub mod subscriptions;
