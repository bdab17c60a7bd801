//! What the functions' tests share beyond [`api::testing`]: the moto
//! emulator on loopback ([`moto`]) and SDK clients of it, s3s-fs, an S3
//! server that checks signatures ([`s3s_fs`]), a plain HTTP client
//! ([`http`]), a client's requests through presigned URLs, and the check
//! that a function's init makes no SDK client ([`init`]).
//!
//! A dev-dependency only. It has no binary, so it is no function: `cargo
//! xtask build` never packages it, and no function's zip depends on it.

pub mod http;
pub mod init;
pub mod moto;
pub mod s3s_fs;
