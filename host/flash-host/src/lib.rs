//! flash-host: the container entrypoint; these modules discover the live manifest and peer URLs.
pub mod manifest_fetcher;
pub mod state_manager;
