//! Library side of the `flash` CLI: everything a command does that another tool could
//! embed (the project file, the build pipeline), kept out of the thin `commands/` layer.
//! The deploy lifecycle itself is the `flash-deploy` crate, re-exported as [`deploy`].

pub mod build;
pub mod connect;
pub mod local;
pub mod project;

pub use flash_deploy as deploy;
