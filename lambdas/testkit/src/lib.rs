//! What the functions' tests share beyond [`api::testing`]: the moto
//! emulator on loopback ([`moto`]) and DynamoDB clients of it.
//!
//! A dev-dependency only. It has no binary, so it is no function: `cargo
//! xtask build` never packages it, and no function's zip depends on it.

pub mod moto;
