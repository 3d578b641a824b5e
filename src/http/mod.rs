//! Pure HTTP/1.1: request heads (via `httparse`), body framing (Content-Length and chunked,
//! decoded in place), response encoding, streamed response bodies (chunked out).
//!
//! Nothing here touches a socket, a clock or a thread: functions take byte slices (and the
//! time, when a `Date` header needs it) and return values or errors. That is what lets the
//! same code serve all three I/O models and be tested with plain byte strings.
//!
//! The exchange engine is generic over a [`Service`] (the routes implement it), so nothing
//! in here imports the routes, the app, ingestion or the counters.

pub mod chunked;
pub mod exchange;
pub mod request;
pub mod response;
pub mod service;
pub mod stream;

pub use chunked::{ChunkError, ChunkedDecoder};
pub use request::{BodyFraming, HeadError, Method, RequestHead, Version, parse_head};
pub use response::{ResponseWriter, reason};
pub use service::{Limits, Reply, RouteId, Service};
pub use stream::BodySource;
