//! Flash end to end, in one test binary: `flash build` (`build`), deploys on a real
//! `flash server` (`deploy`), and Python functions across languages (`python`).

mod build;
mod deploy;
mod python;
