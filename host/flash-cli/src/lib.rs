//! Library side of the `flash` CLI: everything a command does that another tool could
//! embed (the project file, the build pipeline), kept out of the thin `commands/` layer.

pub mod build;
pub mod deploy;
pub mod project;
