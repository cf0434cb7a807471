//! One HTTP stream through a [`Vm`], in Envoy's order of callbacks: request
//! headers, then the upstream's (or the local reply's) response headers, body
//! chunks and trailers, then the end-of-stream callbacks.
//!
//! It owns what a test feeds in ([`Upstream`]) and what the client saw
//! ([`Exchange`]), and decides what Envoy would do with each callback's action.
//! It must not touch guest memory: the filter reads and writes the stream through
//! the `abi` functions, on the [`StreamState`] this module fills and empties.

use std::ops::ControlFlow;

use wasmtime::WasmParams;

use super::Vm;
use crate::state::{CallPhase, StreamState};
use crate::ACTION_CONTINUE;
use crate::{header, header_text, headers, lower_keys, Headers, LocalReply, Result};

/// The upstream (kubelet) response a test feeds through the filter.
#[derive(Debug, Clone, Default)]
pub struct Upstream {
    pub headers: Headers,
    /// Body chunks as Envoy would deliver them; the last one carries end of stream
    /// unless there are trailers. An empty vector is a response without a body.
    pub chunks: Vec<Vec<u8>>,
    pub trailers: Option<Headers>,
}

impl Upstream {
    /// A 200 with this content type and `body` split in `chunk_size` chunks.
    pub fn ok(content_type: &str, body: &[u8], chunk_size: usize) -> Upstream {
        Upstream {
            headers: headers(&[
                (":status", "200"),
                ("content-type", content_type),
                ("content-length", &body.len().to_string()),
            ]),
            chunks: body.chunks(chunk_size.max(1)).map(<[u8]>::to_vec).collect(),
            trailers: None,
        }
    }

    /// The response Envoy makes of a local reply (it then runs the encoder chain).
    fn local_reply(reply: &LocalReply) -> Upstream {
        Upstream {
            headers: local_reply_headers(reply),
            chunks: if reply.body.is_empty() {
                vec![]
            } else {
                vec![reply.body.clone()]
            },
            trailers: None,
        }
    }
}

/// What the client saw, and what went upstream.
#[derive(Debug, Clone, Default)]
pub struct Exchange {
    /// Request headers as they left for the upstream; `None` when the filter
    /// answered locally in the request phase.
    pub upstream_request: Option<Headers>,
    pub status: u32,
    pub headers: Headers,
    pub body: Vec<u8>,
    pub trailers: Option<Headers>,
    /// The reply came from `proxy_send_local_response`.
    pub local_reply: Option<LocalReply>,
    /// The stream was reset after the response headers went out.
    pub reset: bool,
    /// Actions returned by `on_response_body`, in order.
    pub body_actions: Vec<i32>,
}

impl Exchange {
    pub fn header(&self, name: &str) -> Option<String> {
        header_text(&self.headers, name)
    }

    pub fn upstream_header(&self, name: &str) -> Option<String> {
        self.upstream_request
            .as_ref()
            .and_then(|h| header_text(h, name))
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// `ControlFlow::Break`: the client has seen all of the exchange (a local reply
/// replaced the response, or the stream was reset).
type Flow<T = ()> = ControlFlow<(), T>;

impl Vm {
    /// One HTTP request through the filter: request headers (no request body),
    /// then `upstream`'s response, then the end-of-stream callbacks.
    pub fn exchange(&mut self, request: Headers, upstream: &Upstream) -> Result<Exchange> {
        self.check_alive()?;
        let id = self.next_id;
        self.next_id += 1;
        self.call::<_, ()>("proxy_on_context_create", (id as i32, self.root_id as i32))?;
        let result = self.run_exchange(id, request, upstream);
        // Envoy ends every stream with on_log, on_done and on_delete.
        if self.failed.is_none() {
            self.store.data_mut().active = id;
            let ends = self
                .call::<_, ()>("proxy_on_log", id as i32)
                .and_then(|()| self.call::<_, i32>("proxy_on_done", id as i32).map(|_| ()))
                .and_then(|()| self.call::<_, ()>("proxy_on_delete", id as i32));
            self.store.data_mut().active = 0;
            self.store.data_mut().streams.remove(&id);
            ends?;
        }
        result
    }

    fn enter(&mut self, id: u32, phase: CallPhase) {
        let s = self.store.data_mut();
        s.active = id;
        s.phase = phase;
        s.stop_iteration = false;
    }

    fn leave(&mut self) -> bool {
        let s = self.store.data_mut();
        s.active = 0;
        s.phase = CallPhase::None;
        std::mem::take(&mut s.stop_iteration)
    }

    /// Runs the stream callback `name` of stream `id` in `phase`: its action, and
    /// whether a local reply overrode it to stop iteration.
    fn callback<P: WasmParams>(
        &mut self,
        id: u32,
        phase: CallPhase,
        name: &str,
        args: P,
    ) -> Result<(i32, bool)> {
        self.enter(id, phase);
        let action = self.call::<P, i32>(name, args);
        let stopped = self.leave();
        Ok((action?, stopped))
    }

    fn stream_state(&mut self, id: u32) -> &mut StreamState {
        self.store.data_mut().streams.entry(id).or_default()
    }

    fn run_exchange(&mut self, id: u32, request: Headers, upstream: &Upstream) -> Result<Exchange> {
        let mut ex = Exchange::default();
        let n = request.len() as i32;
        self.stream_state(id).request_headers = lower_keys(request);
        let (action, stopped) = self.callback(
            id,
            CallPhase::RequestHeaders,
            "proxy_on_request_headers",
            (id as i32, n, 1),
        )?;
        let state = self.stream_state(id);
        let local = state.local_reply.take();
        let request_after = std::mem::take(&mut state.request_headers);
        if let Some(reply) = local {
            // The local reply runs through the encoder chain, this filter included.
            self.respond(id, &Upstream::local_reply(&reply), &mut ex)?;
            ex.local_reply = Some(reply);
            return Ok(ex);
        }
        if stopped || action != ACTION_CONTINUE {
            return Err(wasmtime::format_err!(
                "the filter stopped the request headers without a local reply (action {action})"
            ));
        }
        ex.upstream_request = Some(request_after);
        self.respond(id, upstream, &mut ex)?;
        Ok(ex)
    }

    /// Drives the response callbacks for `upstream` and collects what the client
    /// receives into `ex`.
    fn respond(&mut self, id: u32, upstream: &Upstream, ex: &mut Exchange) -> Result<()> {
        if self.respond_headers(id, upstream, ex)?.is_break() {
            return Ok(());
        }
        let Flow::Continue(buffered) = self.respond_body(id, upstream, ex)? else {
            return Ok(());
        };
        match &upstream.trailers {
            Some(trailers) => self.respond_trailers(id, trailers, buffered, ex),
            None if buffered.is_some() => {
                Err(wasmtime::format_err!("body left buffered at end of stream"))
            }
            None => Ok(()),
        }
    }

    /// `on_response_headers`: the status and headers the client gets, or the
    /// local reply that replaces them.
    fn respond_headers(&mut self, id: u32, upstream: &Upstream, ex: &mut Exchange) -> Result<Flow> {
        let no_body = upstream.chunks.is_empty() && upstream.trailers.is_none();
        let n = upstream.headers.len() as i32;
        self.stream_state(id).response_headers = lower_keys(upstream.headers.clone());
        let (action, stopped) = self.callback(
            id,
            CallPhase::ResponseHeaders,
            "proxy_on_response_headers",
            (id as i32, n, no_body as i32),
        )?;
        let state = self.stream_state(id);
        let response_headers = std::mem::take(&mut state.response_headers);
        if let Some(reply) = state.local_reply.take() {
            // Before the headers left: the local reply replaces the response
            // (Envoy sends it directly, without running the encoder filters again).
            ex.status = reply.status;
            ex.headers = local_reply_headers(&reply);
            ex.body = reply.body.clone();
            ex.local_reply = Some(reply);
            return Ok(Flow::Break(()));
        }
        if state.reset {
            ex.reset = true;
            return Ok(Flow::Break(()));
        }
        if stopped || action != ACTION_CONTINUE {
            return Err(wasmtime::format_err!(
                "the filter stopped the response headers (action {action}); nothing resumes them"
            ));
        }
        ex.headers = response_headers;
        ex.status = header(&ex.headers, ":status")
            .and_then(|s| std::str::from_utf8(s).ok())
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        Ok(Flow::Continue(()))
    }

    /// `on_response_body` for each chunk: what the filter let through goes to the
    /// client; a paused chunk is buffered and offered again with the next one.
    /// Continues with the body still buffered (only possible before trailers).
    fn respond_body(
        &mut self,
        id: u32,
        upstream: &Upstream,
        ex: &mut Exchange,
    ) -> Result<Flow<Option<Vec<u8>>>> {
        let mut buffered: Option<Vec<u8>> = None;
        let last = upstream.chunks.len();
        for (i, chunk) in upstream.chunks.iter().enumerate() {
            let end = i + 1 == last && upstream.trailers.is_none();
            let mut body = buffered.take().unwrap_or_default();
            body.extend_from_slice(chunk);
            let size = body.len() as i32;
            self.stream_state(id).body = body;
            let (action, stopped) = self.callback(
                id,
                CallPhase::ResponseBody,
                "proxy_on_response_body",
                (id as i32, size, end as i32),
            )?;
            ex.body_actions.push(action);
            let state = self.stream_state(id);
            let body = std::mem::take(&mut state.body);
            if state.reset {
                ex.reset = true;
                return Ok(Flow::Break(()));
            }
            if state.local_reply.is_some() {
                return Err(wasmtime::format_err!(
                    "local reply after the response headers were sent"
                ));
            }
            if action == ACTION_CONTINUE && !stopped {
                ex.body.extend_from_slice(&body);
            } else if end {
                return Err(wasmtime::format_err!(
                    "the filter paused the last body chunk; nothing resumes it"
                ));
            } else {
                buffered = Some(body);
            }
        }
        Ok(Flow::Continue(buffered))
    }

    /// `on_response_trailers`: the body is reachable there only when the last chunk
    /// paused (`buffered`); what the filter leaves in it goes out before them.
    fn respond_trailers(
        &mut self,
        id: u32,
        trailers: &Headers,
        buffered: Option<Vec<u8>>,
        ex: &mut Exchange,
    ) -> Result<()> {
        let n = trailers.len() as i32;
        let state = self.stream_state(id);
        state.response_trailers = lower_keys(trailers.clone());
        state.body_reachable = buffered.is_some();
        state.body = buffered.unwrap_or_default();
        let (action, stopped) = self.callback(
            id,
            CallPhase::ResponseTrailers,
            "proxy_on_response_trailers",
            (id as i32, n),
        )?;
        let state = self.stream_state(id);
        if state.reset {
            ex.reset = true;
            return Ok(());
        }
        if stopped || action != ACTION_CONTINUE {
            return Err(wasmtime::format_err!(
                "the filter paused the trailers; nothing resumes them"
            ));
        }
        let body = std::mem::take(&mut state.body);
        ex.body.extend_from_slice(&body);
        ex.trailers = Some(std::mem::take(&mut state.response_trailers));
        Ok(())
    }
}

/// The headers of a local reply as the client gets them: `:status`, the reply's
/// own headers, and a `content-length` when it has a body and none was given.
fn local_reply_headers(reply: &LocalReply) -> Headers {
    let mut h = headers(&[(":status", &reply.status.to_string())]);
    h.extend(lower_keys(reply.headers.clone()));
    if !reply.body.is_empty() && header(&h, "content-length").is_none() {
        h.push((
            b"content-length".to_vec(),
            reply.body.len().to_string().into_bytes(),
        ));
    }
    h
}
