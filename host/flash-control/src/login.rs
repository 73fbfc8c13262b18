//! `flash login` against this server: RunPod's authorization-request flow (reference §1.6).
//!
//! A CLI without a key calls `createFlashAuthRequest`, shows the person the page
//! `/flash/login?request=<id>`, and polls `flashAuthRequestStatus` until the request is
//! decided. On that page the person proves they may have the key (here: by entering the
//! server's API key, the part RunPod's console does with its own session) and approves or
//! denies. The first status poll after approval returns the key and consumes the request.
//!
//! Both GraphQL operations are the only ones answered without a key (see
//! [`anonymous_operation`]), so a request's id is what guards the key until it is consumed:
//! ids are random secrets, requests expire after [`REQUEST_TTL_MS`], and at most
//! [`MAX_PENDING`] are open at once.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;

use crate::state::AppState;
use flash_api::credential::keys_match;

use crate::util::{now_ms, random_secret, rfc3339};

/// How long a request may wait for a decision (RunPod's: 10 minutes).
pub const REQUEST_TTL_MS: i64 = 10 * 60 * 1000;
/// Open (undecided, unexpired) requests at once; more are refused until some end.
pub const MAX_PENDING: usize = 64;

/// Where a request stands, as `flashAuthRequestStatus` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Pending,
    Approved,
    Denied,
    /// Approved, and its key was handed out once.
    Consumed,
    Expired,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "PENDING",
            Status::Approved => "APPROVED",
            Status::Denied => "DENIED",
            Status::Consumed => "CONSUMED",
            Status::Expired => "EXPIRED",
        }
    }
}

/// What a status poll sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub id: String,
    pub status: Status,
    pub expires_at: String,
    /// Only on the poll that consumes an approved request.
    pub api_key: Option<String>,
}

#[derive(Debug)]
struct Request {
    status: Status,
    expires_at_ms: i64,
}

/// Errors a CLI or the approval page can cause.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LoginError {
    #[error(
        "too many login requests are waiting ({MAX_PENDING}); approve or let them expire, then \
         run `flash login` again"
    )]
    TooMany,
    #[error("no login request `{0}` on this server (it may have expired): run `flash login` again")]
    Unknown(String),
    #[error("login request `{0}` was already {1}")]
    Decided(String, &'static str),
}

/// The server's login requests, in memory: a restart ends them all (the CLI then says the
/// request is unknown and asks for a new login).
#[derive(Debug, Default)]
pub struct LoginRequests {
    requests: Mutex<HashMap<String, Request>>,
}

impl LoginRequests {
    /// Opens a request; returns its id and expiry.
    pub fn create(&self, now_ms: i64) -> Result<Seen, LoginError> {
        let mut requests = self.lock();
        requests.retain(|_, r| now_ms < r.expires_at_ms + REQUEST_TTL_MS);
        let open = requests
            .values()
            .filter(|r| r.status == Status::Pending && now_ms < r.expires_at_ms)
            .count();
        if open >= MAX_PENDING {
            return Err(LoginError::TooMany);
        }
        let id = format!("auth-{}", random_secret());
        let expires_at_ms = now_ms + REQUEST_TTL_MS;
        requests.insert(
            id.clone(),
            Request {
                status: Status::Pending,
                expires_at_ms,
            },
        );
        Ok(Seen {
            id,
            status: Status::Pending,
            expires_at: rfc3339(expires_at_ms),
            api_key: None,
        })
    }

    /// A status poll: hands out `key` once, on the first poll after approval.
    pub fn poll(&self, id: &str, key: &str, now_ms: i64) -> Result<Seen, LoginError> {
        let mut requests = self.lock();
        let request = current(&mut requests, id, now_ms)?;
        let api_key = (request.status == Status::Approved).then(|| key.to_string());
        let status = request.status;
        if status == Status::Approved {
            request.status = Status::Consumed;
        }
        Ok(Seen {
            id: id.to_string(),
            status,
            expires_at: rfc3339(request.expires_at_ms),
            api_key,
        })
    }

    /// Approves or denies a pending request.
    pub fn decide(&self, id: &str, approve: bool, now_ms: i64) -> Result<Status, LoginError> {
        let mut requests = self.lock();
        let request = current(&mut requests, id, now_ms)?;
        if request.status != Status::Pending {
            let was = match request.status {
                Status::Expired => "expired",
                Status::Denied => "denied",
                _ => "approved",
            };
            return Err(LoginError::Decided(id.to_string(), was));
        }
        request.status = if approve {
            Status::Approved
        } else {
            Status::Denied
        };
        Ok(request.status)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Request>> {
        // A poisoned map only means a panic elsewhere mid-update of plain data.
        self.requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Request `id` as of `now_ms`: a pending one past its expiry becomes expired.
fn current<'a>(
    requests: &'a mut HashMap<String, Request>,
    id: &str,
    now_ms: i64,
) -> Result<&'a mut Request, LoginError> {
    let request = requests
        .get_mut(id)
        .ok_or_else(|| LoginError::Unknown(id.to_string()))?;
    if request.status == Status::Pending && now_ms >= request.expires_at_ms {
        request.status = Status::Expired;
    }
    Ok(request)
}

/// Whether `query` asks only for the login operations (`createFlashAuthRequest`,
/// `flashAuthRequestStatus`), which are answered without a key. Anything else, fragments
/// included, is not.
pub fn anonymous_operation(query: &str, operation_name: Option<&str>) -> bool {
    crate::graphql::selects_only(
        query,
        operation_name,
        &[
            "createFlashAuthRequest",
            "flashAuthRequestStatus",
            "__typename",
        ],
    )
}

#[derive(Debug, Deserialize)]
pub struct PageQuery {
    request: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Decision {
    request: String,
    api_key: String,
    decision: String,
}

/// `GET /flash/login?request=<id>`: the approval page.
pub async fn page(State(state): State<AppState>, Query(query): Query<PageQuery>) -> Response {
    let Some(id) = query.request.filter(|id| !id.trim().is_empty()) else {
        return page_response(
            StatusCode::BAD_REQUEST,
            "No login request",
            "<p>Open the address <code>flash login</code> printed; it names the request.</p>",
        );
    };
    let key_file = crate::auth::api_key_path(&state.config.data_dir);
    let body = format!(
        "<p>A <code>flash login</code> asks for this server's API key (request \
         <code>{id}</code>). Approve only if you started it.</p>\
         <form method=\"post\" action=\"/flash/login\">\
         <input type=\"hidden\" name=\"request\" value=\"{id}\">\
         <p><label>API key of this server (in <code>{key_file}</code>)<br>\
         <input type=\"password\" name=\"api_key\" autocomplete=\"off\" required size=\"50\"></label></p>\
         <p><button name=\"decision\" value=\"approve\">Approve</button> \
         <button name=\"decision\" value=\"deny\">Deny</button></p>\
         </form>",
        id = escape(&id),
        key_file = escape(&key_file.display().to_string()),
    );
    page_response(StatusCode::OK, "Authorize flash", &body)
}

/// `POST /flash/login`: approves or denies a request, given the server's key.
pub async fn decide(
    State(state): State<AppState>,
    axum::Form(form): axum::Form<Decision>,
) -> Response {
    if !keys_match(form.api_key.trim(), state.auth.user_key()) {
        return page_response(
            StatusCode::FORBIDDEN,
            "Wrong key",
            "<p>That is not this server's API key; nothing was decided. Go back and try \
             again.</p>",
        );
    }
    let approve = match form.decision.as_str() {
        "approve" => true,
        "deny" => false,
        other => {
            return page_response(
                StatusCode::BAD_REQUEST,
                "Unknown decision",
                &format!("<p>`{}` is neither approve nor deny.</p>", escape(other)),
            );
        }
    };
    match state.logins.decide(&form.request, approve, now_ms()) {
        Ok(Status::Approved) => {
            tracing::info!(request = %form.request, "login approved");
            page_response(
                StatusCode::OK,
                "Approved",
                "<p>flash is logged in. Return to your terminal.</p>",
            )
        }
        Ok(_) => {
            tracing::info!(request = %form.request, "login denied");
            page_response(
                StatusCode::OK,
                "Denied",
                "<p>The login was denied; flash says so in your terminal.</p>",
            )
        }
        Err(e) => page_response(
            StatusCode::CONFLICT,
            "Not decided",
            &format!("<p>{}</p>", escape(&e.to_string())),
        ),
    }
}

fn page_response(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title} · flash server</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:40em;margin:3em auto;padding:0 1em}}\
         code{{background:#eee;padding:0 .2em}}</style></head>\
         <body><h1>{title}</h1>{body}</body></html>"
    );
    (status, Html(html)).into_response()
}

/// `text` safe inside HTML text and attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_hands_out_the_key_once_after_approval() {
        let logins = LoginRequests::default();
        let created = logins.create(1_000).unwrap();
        assert_eq!(created.status, Status::Pending);
        assert!(created.id.len() > 20, "ids are secrets: {}", created.id);
        let pending = logins.poll(&created.id, "k", 2_000).unwrap();
        assert_eq!((pending.status, pending.api_key), (Status::Pending, None));
        assert_eq!(
            logins.decide(&created.id, true, 3_000),
            Ok(Status::Approved)
        );
        let approved = logins.poll(&created.id, "k", 4_000).unwrap();
        assert_eq!(
            (approved.status, approved.api_key.as_deref()),
            (Status::Approved, Some("k"))
        );
        let again = logins.poll(&created.id, "k", 5_000).unwrap();
        assert_eq!((again.status, again.api_key), (Status::Consumed, None));
        assert_eq!(
            logins.decide(&created.id, true, 6_000),
            Err(LoginError::Decided(created.id.clone(), "approved"))
        );
    }

    #[test]
    fn denied_expired_and_unknown_requests_give_no_key() {
        let logins = LoginRequests::default();
        let denied = logins.create(0).unwrap();
        logins.decide(&denied.id, false, 1).unwrap();
        let seen = logins.poll(&denied.id, "k", 2).unwrap();
        assert_eq!((seen.status, seen.api_key), (Status::Denied, None));

        let late = logins.create(0).unwrap();
        let seen = logins.poll(&late.id, "k", REQUEST_TTL_MS).unwrap();
        assert_eq!((seen.status, seen.api_key), (Status::Expired, None));
        assert_eq!(
            logins.decide(&late.id, true, REQUEST_TTL_MS + 1),
            Err(LoginError::Decided(late.id.clone(), "expired"))
        );

        assert_eq!(
            logins.poll("auth-guess", "k", 0),
            Err(LoginError::Unknown("auth-guess".into()))
        );
    }

    #[test]
    fn open_requests_are_bounded_and_expired_ones_make_room() {
        let logins = LoginRequests::default();
        for _ in 0..MAX_PENDING {
            logins.create(0).unwrap();
        }
        assert_eq!(logins.create(1), Err(LoginError::TooMany));
        // Once they expire, new ones are accepted again (and the old ones are dropped
        // after another TTL).
        assert!(logins.create(REQUEST_TTL_MS).is_ok());
        logins.create(3 * REQUEST_TTL_MS).unwrap();
        assert_eq!(logins.lock().len(), 1);
    }

    #[test]
    fn only_the_login_operations_are_anonymous() {
        for query in [
            "mutation { createFlashAuthRequest { id status expiresAt } }",
            "query Q($id: String!) { flashAuthRequestStatus(flashAuthRequestId: $id) { status apiKey } }",
            "{ __typename flashAuthRequestStatus(flashAuthRequestId: \"x\") { status } }",
        ] {
            assert!(anonymous_operation(query, None), "{query}");
        }
        for query in [
            "{ myself { flashApps { id } } }",
            "mutation { createFlashAuthRequest { id } deleteEndpoint(id: \"e\") }",
            "{ ...F } fragment F on Query { flashAuthRequestStatus(flashAuthRequestId: \"x\") { status } }",
            "{ __schema { types { name } } }",
            "not graphql",
            "",
        ] {
            assert!(!anonymous_operation(query, None), "{query}");
        }
        let two = "query A { myself { id } } mutation B { createFlashAuthRequest { id } }";
        assert!(anonymous_operation(two, Some("B")));
        assert!(!anonymous_operation(two, Some("A")));
        assert!(!anonymous_operation(two, None));
    }

    #[test]
    fn the_page_escapes_what_it_shows() {
        assert_eq!(
            escape("<a href=\"x\">'&"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;"
        );
    }
}
