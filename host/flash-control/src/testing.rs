//! A real `flash server` on loopback for the tests of the crates that talk to it (the
//! client in `flash-api`, the provisioning engine in `flash-deploy`): one helper, so that
//! every such test starts it the same way.

/// A `flash server` on `127.0.0.1` with its own data dir, running on the current tokio
/// runtime until that runtime ends; the data dir goes with this value.
pub struct LocalServer {
    /// Its base URL (`http://127.0.0.1:<port>`).
    pub url: String,
    /// Its API key (the user's).
    pub key: String,
    _dir: tempfile::TempDir,
}

impl LocalServer {
    /// Binds and starts the server. Panics when it cannot (a test setup failure).
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir for the flash server's data dir");
        let config = crate::Config::new(
            dir.path().to_path_buf(),
            "127.0.0.1:0".parse().expect("loopback address"),
        );
        let server = crate::Server::bind(config)
            .await
            .expect("binding the flash server");
        let (url, key) = (server.url(), server.api_key().to_string());
        tokio::spawn(server.run(std::future::pending()));
        Self {
            url,
            key,
            _dir: dir,
        }
    }
}
