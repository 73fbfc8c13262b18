//! flash-deploy's integration tests, in one binary (wasmtime's layout): the provisioning
//! engine and the environment lease against a real `flash server` (`engine`).

mod engine;
