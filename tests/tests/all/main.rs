//! Flash end to end, in one test binary: `flash build` (`build`), deploys on a real
//! `flash server` (`deploy`), the CPU container image's entrypoint as its workers (`image`),
//! Python functions across languages (`python`), JavaScript and TypeScript functions (`js`), watching a deployed app through its
//! metrics and the web console in a headless browser (`console`), and the account commands, `flash app`,
//! `flash env` and `flash login` (`accounts`).

mod accounts;
mod build;
mod console;
mod deploy;
mod image;
mod js;
mod python;
