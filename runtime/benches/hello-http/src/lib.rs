//! Answers every request with "hello" (wasi:http proxy world), like the
//! `echo` handler answers every call.
use std::io::Write;
use wasi::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

wasi::http::proxy::export!(Hello);

struct Hello;

impl wasi::exports::http::incoming_handler::Guest for Hello {
    fn handle(_req: IncomingRequest, out: ResponseOutparam) {
        let resp = OutgoingResponse::new(Fields::new());
        let body = resp.body().expect("a body");
        ResponseOutparam::set(out, Ok(resp));
        let mut w = body.write().expect("a stream");
        w.write_all(b"hello").expect("written");
        w.flush().expect("flushed");
        drop(w);
        OutgoingBody::finish(body, None).expect("finished");
    }
}
