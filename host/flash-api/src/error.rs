//! [`ApiError`]: every way a call to the State Manager can fail, classified for retries and
//! worded for the person who reads it, often in a container log with no other context.
//!
//! Two questions decide whether a failed call may be sent again:
//!
//! - [`ApiError::is_transient`]: may another attempt succeed?
//! - [`ApiError::reached_server`]: may the server have received (and applied) the request?
//!   Only a failure to connect proves it did not: reqwest's `is_connect()` (refused, DNS,
//!   TLS handshake, connect timeout) happens before a byte of the request is written. A
//!   response timeout, a reset or a broken body after connecting, an HTTP status or a
//!   GraphQL error all mean the request may have been applied, whatever the answer says.

use std::time::Duration;

use crate::config::KeySource;

/// GraphQL error texts that mean "try again" (reference §1.1; matched case-insensitively,
/// as substrings).
const TRANSIENT_MESSAGES: [&str; 5] = [
    "try again later",
    "internal server error",
    "service unavailable",
    "too many requests",
    "temporarily unavailable",
];

/// A failed call to the State Manager.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The client cannot be built from the given settings.
    #[error("{0}")]
    Config(String),

    /// Nothing accepts connections at the URL. Not retried: waiting does not start a server,
    /// and the person at the terminal should hear it at once.
    #[error(
        "cannot reach the server at {url} ({detail}): start a local one with `flash server`, \
         or point --server / FLASH_SERVER_URL (the CLI) or RUNPOD_API_BASE_URL (a worker) at \
         a running one"
    )]
    Unreachable { url: String, detail: String },

    /// The exchange broke after connecting (reset, TLS, DNS), or the answer is not JSON (a
    /// proxy's HTML page, for instance).
    #[error("could not talk to the State Manager at {url}: {detail}")]
    Transport { url: String, detail: String },

    /// No connection within the connect timeout: nothing was sent, so any request may be
    /// sent again.
    #[error(
        "could not connect to the State Manager at {url} within {timeout:?} (nothing was \
         sent); check the network and the server URL"
    )]
    ConnectTimeout { url: String, timeout: Duration },

    /// No answer within the configured timeout (the request was sent: the server may have
    /// applied it).
    #[error(
        "the State Manager at {url} did not answer within {timeout:?}; check the network and \
         the server's load"
    )]
    Timeout { url: String, timeout: Duration },

    /// HTTP 401 or 403: the key is wrong for this server (or it wants one where Flash sent
    /// none).
    #[error(
        "the State Manager at {url} {}: {}",
        rejected(key_source),
        key_source.remedy()
    )]
    Unauthorized { url: String, key_source: KeySource },

    /// Any other HTTP status ≥ 400.
    #[error("the State Manager at {url} answered HTTP {status}: {body}{}", http_hint(*.status))]
    Http {
        url: String,
        status: u16,
        body: String,
    },

    /// The answer carried an `errors` key (even alongside `data`).
    #[error("the State Manager rejected `{operation}`: {message}")]
    GraphQl { operation: String, message: String },

    /// The object asked for does not exist (a `null` root field or a "not found" error).
    #[error(
        "{kind} `{id}` not found in the State Manager; check the id, and that the API key \
         belongs to the account that deployed it"
    )]
    NotFound { kind: &'static str, id: String },

    /// The answer is JSON but not the shape the operation selects.
    #[error("unexpected State Manager answer to `{operation}`: {detail}")]
    Malformed { operation: String, detail: String },

    /// A create may have been applied, but its answer was lost, and looking for what it
    /// made failed too.
    #[error(
        "`{operation}` may have been applied, but its answer was lost ({lost}), and looking \
         for what it made failed too ({lookup}); run the command again: it looks for the \
         object by name before creating it"
    )]
    CreateUnconfirmed {
        operation: String,
        lost: Box<ApiError>,
        lookup: Box<ApiError>,
    },

    /// A query failed on every attempt; `last` is the final failure.
    #[error("`{operation}` failed after {attempts} attempts; last error: {last}")]
    RetriesExhausted {
        operation: String,
        attempts: u32,
        #[source]
        last: Box<ApiError>,
    },
}

fn rejected(source: &KeySource) -> String {
    match source {
        KeySource::Anonymous => "refused a request sent without an API key".to_owned(),
        source => format!("rejected the API key from {source}"),
    }
}

fn http_hint(status: u16) -> &'static str {
    match status {
        404 => " (the State Manager serves POST {base}/graphql: check the server URL)",
        429 => " (the State Manager is rate limiting this key)",
        _ => "",
    }
}

impl ApiError {
    /// Whether another attempt of the same request may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Transport { .. } | Self::Timeout { .. } | Self::ConnectTimeout { .. } => true,
            Self::Http { status, .. } => *status >= 500 || *status == 429,
            Self::GraphQl { message, .. } => {
                let message = message.to_ascii_lowercase();
                TRANSIENT_MESSAGES.iter().any(|m| message.contains(m))
            }
            Self::Config(_)
            | Self::Unreachable { .. }
            | Self::Unauthorized { .. }
            | Self::NotFound { .. }
            | Self::Malformed { .. }
            | Self::CreateUnconfirmed { .. }
            | Self::RetriesExhausted { .. } => false,
        }
    }

    /// Whether the request may have reached the server (and been applied there). `false`
    /// only when it provably never left this process: nothing listened, the connection was
    /// not established in time, or the client refused to send it.
    pub fn reached_server(&self) -> bool {
        match self.root() {
            Self::Config(_) | Self::Unreachable { .. } | Self::ConnectTimeout { .. } => false,
            Self::Transport { .. }
            | Self::Timeout { .. }
            | Self::Unauthorized { .. }
            | Self::Http { .. }
            | Self::GraphQl { .. }
            | Self::NotFound { .. }
            | Self::Malformed { .. }
            | Self::CreateUnconfirmed { .. }
            | Self::RetriesExhausted { .. } => true,
        }
    }

    /// Whether the server rejected the document because it does not know the root field or
    /// input type `field` (an extension of `flash server` sent to RunPod's API, for
    /// instance). GraphQL
    /// servers answer this at validation time, as an `errors` entry or an HTTP 400 whose
    /// body quotes the field: `Cannot query field "x" on type "Mutation"` (graphql-js),
    /// `Unknown field "x" on type "Mutation"` (async-graphql).
    pub fn is_unknown_field(&self, field: &str) -> bool {
        let text = match self.root() {
            Self::GraphQl { message, .. } => message,
            Self::Http {
                status: 400, body, ..
            } => body,
            _ => return false,
        };
        let lower = text.to_ascii_lowercase();
        text.contains(field)
            && (lower.contains("cannot query field")
                || lower.contains("unknown field")
                || lower.contains("unknown type")
                || lower.contains("not defined"))
    }

    /// Whether the server said the object does not exist (RunPod reports a missing app,
    /// environment or endpoint as a GraphQL error containing "not found").
    pub fn is_not_found(&self) -> bool {
        match self.root() {
            Self::NotFound { .. } => true,
            Self::GraphQl { message, .. } => message.to_ascii_lowercase().contains("not found"),
            _ => false,
        }
    }

    /// The underlying failure: for [`ApiError::RetriesExhausted`] the last attempt's error,
    /// otherwise `self`.
    pub fn root(&self) -> &ApiError {
        match self {
            Self::RetriesExhausted { last, .. } => last.root(),
            other => other,
        }
    }

    /// A "not found" GraphQL error as [`ApiError::NotFound`] of `kind` `id`.
    pub(crate) fn not_found_as(self, kind: &'static str, id: &str) -> Self {
        if self.is_not_found() {
            Self::NotFound {
                kind,
                id: id.to_owned(),
            }
        } else {
            self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_classification() {
        let gql = |m: &str| ApiError::GraphQl {
            operation: "op".into(),
            message: m.into(),
        };
        assert!(gql("Service Unavailable, try again").is_transient());
        assert!(gql("Too Many Requests").is_transient());
        assert!(!gql("environment not found").is_transient());
        assert!(gql("environment not found").is_not_found());
        let http = |status| ApiError::Http {
            url: "u".into(),
            status,
            body: String::new(),
        };
        assert!(http(503).is_transient());
        assert!(http(429).is_transient());
        assert!(!http(400).is_transient());
        let unreachable = ApiError::Unreachable {
            url: "http://127.0.0.1:9".into(),
            detail: "connection refused".into(),
        };
        assert!(!unreachable.is_transient());
        assert!(unreachable.to_string().contains("flash server"));
    }

    #[test]
    fn only_connect_failures_prove_a_request_was_not_sent() {
        let unsent = [
            ApiError::Unreachable {
                url: "u".into(),
                detail: "refused".into(),
            },
            ApiError::ConnectTimeout {
                url: "u".into(),
                timeout: Duration::from_secs(1),
            },
            ApiError::Config("bad".into()),
        ];
        for e in &unsent {
            assert!(!e.reached_server(), "{e:?}");
        }
        let sent = [
            ApiError::Transport {
                url: "u".into(),
                detail: "connection reset".into(),
            },
            ApiError::Timeout {
                url: "u".into(),
                timeout: Duration::from_secs(1),
            },
            ApiError::Http {
                url: "u".into(),
                status: 503,
                body: String::new(),
            },
            ApiError::GraphQl {
                operation: "op".into(),
                message: "Internal server error".into(),
            },
        ];
        for e in &sent {
            assert!(e.reached_server(), "{e:?}");
        }
        let exhausted = ApiError::RetriesExhausted {
            operation: "op".into(),
            attempts: 2,
            last: Box::new(ApiError::ConnectTimeout {
                url: "u".into(),
                timeout: Duration::from_secs(1),
            }),
        };
        assert!(!exhausted.reached_server(), "judged by the last attempt");
    }

    #[test]
    fn unknown_fields_are_recognised_in_either_shape() {
        let field = "acquireFlashEnvironmentLease";
        let graphql_js = ApiError::Http {
            url: "u".into(),
            status: 400,
            body: format!(
                r#"{{"errors":[{{"message":"Cannot query field \"{field}\" on type \"Mutation\"."}}]}}"#
            ),
        };
        assert!(graphql_js.is_unknown_field(field));
        let async_graphql = ApiError::GraphQl {
            operation: "op".into(),
            message: format!(r#"Unknown field "{field}" on type "Mutation"."#),
        };
        assert!(async_graphql.is_unknown_field(field));
        assert!(!async_graphql.is_unknown_field("other"));
        let refusal = ApiError::GraphQl {
            operation: "op".into(),
            message: format!("{field}: environment not found"),
        };
        assert!(!refusal.is_unknown_field(field));
        let unknown_type = ApiError::Http {
            url: "u".into(),
            status: 400,
            body: r#"{"errors":[{"message":"Unknown type \"FlashEnvironmentLeaseInput\"."}]}"#
                .into(),
        };
        assert!(unknown_type.is_unknown_field("FlashEnvironmentLeaseInput"));
    }
}
