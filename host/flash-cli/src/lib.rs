//! Library side of the `flash` CLI: everything a command does that another tool could
//! embed (the project file, the build pipeline), kept out of the thin `commands/` layer.
//! The deploy commands' bodies are [`deploy`], over the `flash-deploy` engine and the
//! `flash-api` client.

pub mod build;
pub mod connect;
pub mod credentials;
pub mod deploy;
pub mod local;
pub mod login;
pub mod project;
pub mod watch;
