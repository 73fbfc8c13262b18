//! Flash end to end, in one test binary: `flash build` (`build`), deploys on a real
//! `flash server` (`deploy`), the CPU container image's entrypoint as its workers (`image`),
//! Python functions across languages (`python`), and the account commands, `flash app`,
//! `flash env` and `flash login` (`accounts`).

mod accounts;
mod build;
mod deploy;
mod image;
mod python;
