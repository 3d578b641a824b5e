//! What the exchange engine needs from the application: the [`Service`] trait, and the
//! [`Reply`] a service answers with.
//!
//! The engine (`exchange.rs`) owns HTTP/1 framing: heads, bodies, pipelining, keep-alive,
//! limits, `100 Continue`. Everything that depends on *which* endpoint a request is for —
//! whether it is admitted, what answers it, which error body shape its path uses, what is
//! counted — sits behind this trait, which `routes.rs` implements for `App`. That keeps
//! `http/` free of any import from routes, the app, ingestion or the counters, and the
//! engine is generic over the trait (static dispatch, nothing boxed on the request path).
//! Nothing here may do I/O or read a clock.

use std::time::SystemTime;

use crate::http::request::{Method, RequestHead};
use crate::http::response::ResponseWriter;
use crate::http::stream::BodySource;

/// A response, minus its body (which the service wrote into its body buffer, see
/// [`Service::buffers`], or which comes from a [`BodySource`]) and the headers every
/// response carries.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub content_type: Option<&'static str>,
    /// Send the body buffer with `Content-Length` (ignored for bodiless statuses).
    pub has_body: bool,
    pub headers: Vec<(&'static str, Vec<u8>)>,
    /// Close the connection after this response.
    pub close: bool,
    /// The answer holds until the service's deferred work is done (a write being made
    /// durable, a delete being applied): the engine encodes it but does not count it, stops
    /// after it and reports [`crate::http::exchange::Progress::AwaitDurable`]; whoever
    /// completes the work counts it, or replaces it with the final answer (an error, or a
    /// body only known then). Only requests that [`Service::defers`] answer so.
    pub defer: bool,
    /// The body is streamed from this source instead of the body buffer (see
    /// `http/stream.rs`): chunked for HTTP/1.1, up to the close for HTTP/1.0.
    pub stream: Option<Box<dyn BodySource>>,
}

impl Reply {
    pub fn empty(status: u16) -> Reply {
        Reply {
            status,
            content_type: None,
            has_body: false,
            headers: Vec::new(),
            close: false,
            defer: false,
            stream: None,
        }
    }

    /// This reply, held until the deferred work completes (see [`Reply::defer`]).
    pub fn deferred(mut self) -> Reply {
        self.defer = true;
        self
    }

    pub fn with_body(status: u16, content_type: &'static str) -> Reply {
        Reply {
            status,
            content_type: Some(content_type),
            has_body: true,
            headers: Vec::new(),
            close: false,
            defer: false,
            stream: None,
        }
    }

    /// A reply whose body is streamed from `source`, a part per call of the engine, each
    /// produced once the previous one was written. Not for bodiless statuses.
    pub fn stream(status: u16, content_type: &'static str, source: Box<dyn BodySource>) -> Reply {
        Reply {
            stream: Some(source),
            ..Reply::with_body(status, content_type)
        }
    }
}

/// What [`Service::admit`] decided a request is for: an index into the service's own route
/// table, handed back to [`Service::handle`] once the body is complete. A plain number so
/// the connection state that carries it while the body arrives needs no type parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteId(pub u16);

/// The request limits the engine enforces while framing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Request line plus headers (`431` past it).
    pub max_header_bytes: usize,
    /// Body after chunked decoding (`413` past it).
    pub max_body_bytes: usize,
}

/// The application behind the engine (like hyper's `Service`): admit a head, answer a
/// complete request, shape an error for a path, count what was answered.
pub trait Service {
    /// Per-thread scratch reused by every request a thread serves (response writer, body
    /// buffer, parser state): a steady-state request allocates nothing.
    type Local;
    /// Which error body an error for a given path or route gets.
    type ErrorShape: Copy;

    fn limits(&self) -> Limits;

    /// Fresh scratch for a serving thread whose clock reads `now` (drivers without a
    /// server: `replay`, benches, fuzzing).
    fn new_local(&self, instance: u32, now: SystemTime) -> Self::Local;

    /// The response writer and the body buffer replies are written from.
    fn buffers(local: &mut Self::Local) -> (&mut ResponseWriter, &mut Vec<u8>);

    /// Decides from the head alone (authentication, path, method, whether a body is
    /// welcome), so a refused request is answered before its body is read. `Err` is the
    /// refusal, its body written into the body buffer.
    fn admit(&self, local: &mut Self::Local, head: &RequestHead<'_>) -> Result<RouteId, Reply>;

    /// Answers a complete, admitted request; the response body goes into the body buffer.
    fn handle(
        &self,
        local: &mut Self::Local,
        route: RouteId,
        head: &RequestHead<'_>,
        body: &[u8],
    ) -> Reply;

    /// The error shape for a request to `path` (`None`: the request line was unreadable).
    fn path_error_shape(&self, path: Option<&str>) -> Self::ErrorShape;

    /// The error shape for an admitted request.
    fn route_error_shape(&self, route: RouteId) -> Self::ErrorShape;

    /// Whether a `method` request to `route` may answer with a deferred reply
    /// ([`Reply::defer`]). The engine then makes that reply the only thing in its output:
    /// with earlier responses waiting it stops (`WriteFirst`) before answering the request.
    fn defers(&self, route: RouteId, method: Method) -> bool;

    /// Writes an error body for `status` into `body` and returns its reply.
    fn error(
        &self,
        shape: Self::ErrorShape,
        status: u16,
        message: &str,
        body: &mut Vec<u8>,
    ) -> Reply;

    /// A request head was received (parsed or refused).
    fn count_request(&self);

    /// A response with `status` was encoded.
    fn count_response(&self, status: u16);
}

/// A shared service serves like the service itself (the reactor holds the app in an `Arc`).
impl<S: Service> Service for std::sync::Arc<S> {
    type Local = S::Local;
    type ErrorShape = S::ErrorShape;

    fn limits(&self) -> Limits {
        (**self).limits()
    }
    fn new_local(&self, instance: u32, now: SystemTime) -> S::Local {
        (**self).new_local(instance, now)
    }
    fn buffers(local: &mut S::Local) -> (&mut ResponseWriter, &mut Vec<u8>) {
        S::buffers(local)
    }
    fn admit(&self, local: &mut S::Local, head: &RequestHead<'_>) -> Result<RouteId, Reply> {
        (**self).admit(local, head)
    }
    fn handle(
        &self,
        local: &mut S::Local,
        route: RouteId,
        head: &RequestHead<'_>,
        body: &[u8],
    ) -> Reply {
        (**self).handle(local, route, head, body)
    }
    fn path_error_shape(&self, path: Option<&str>) -> S::ErrorShape {
        (**self).path_error_shape(path)
    }
    fn route_error_shape(&self, route: RouteId) -> S::ErrorShape {
        (**self).route_error_shape(route)
    }
    fn defers(&self, route: RouteId, method: Method) -> bool {
        (**self).defers(route, method)
    }
    fn error(&self, shape: S::ErrorShape, status: u16, message: &str, body: &mut Vec<u8>) -> Reply {
        (**self).error(shape, status, message, body)
    }
    fn count_request(&self) {
        (**self).count_request()
    }
    fn count_response(&self, status: u16) {
        (**self).count_response(status)
    }
}
