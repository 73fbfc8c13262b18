//! `GET /stats` of `examples/quickstart`, written against `wasi:http/proxy` directly, so
//! that `wasmtime serve` (a fresh instance per request, like flash-host) can serve the
//! same route for `scripts/bench.sh`'s load-balanced row. It answers the same JSON body
//! (`served_by` from `FLASH_RESOURCE_NAME`), and 404 for any other path.

use wasi::exports::http::incoming_handler::Guest;
use wasi::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

struct Stats;

wasi::http::proxy::export!(Stats);

impl Guest for Stats {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let is_stats = matches!(request.method(), Method::Get)
            && request.path_with_query().as_deref() == Some("/stats");
        let (status, body) = if is_stats {
            let served_by = wasi::cli::environment::get_environment()
                .into_iter()
                .find(|(k, _)| k == "FLASH_RESOURCE_NAME")
                .map(|(_, v)| format!("\"{v}\""))
                .unwrap_or_else(|| "null".into());
            (
                200,
                format!(r#"{{"app":"quickstart","version":"0.1.0","served_by":{served_by}}}"#),
            )
        } else {
            (404, r#"{"error":"not found"}"#.to_string())
        };
        let headers = Fields::from_list(&[(
            "content-type".to_string(),
            b"application/json".to_vec(),
        )])
        .expect("a valid header");
        let response = OutgoingResponse::new(headers);
        response.set_status_code(status).expect("a valid status");
        let outgoing = response.body().expect("the body, taken once");
        ResponseOutparam::set(response_out, Ok(response));
        let stream = outgoing.write().expect("the body's stream, taken once");
        stream
            .blocking_write_and_flush(body.as_bytes())
            .expect("loopback write");
        drop(stream);
        OutgoingBody::finish(outgoing, None).expect("finish the body");
    }
}
