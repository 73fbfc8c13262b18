//! Flash end to end, in one test binary: `flash build` (`build`), deploys on a real
//! `flash server` (`deploy`), the CPU container image's entrypoint as its workers (`image`),
//! and Python functions across languages (`python`).

mod build;
mod deploy;
mod image;
mod python;
