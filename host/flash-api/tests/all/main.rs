//! Integration tests of `flash-api` (one binary, wasmtime's layout): the client against a
//! State Manager stand-in on loopback ([`flash_api::stub`]), creates whose answer is lost
//! on the way back from a real `flash server`, and every GraphQL document against `flash
//! server`'s own schema.

mod client;
mod creates;
mod schema;
