//! `collisionos`: the headless backend.
fn main() {}
