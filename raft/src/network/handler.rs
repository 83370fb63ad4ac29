//! What the server calls for each request: the [`Handler`] trait, object-safe so the transport
//! holds an `Arc<dyn Handler>` and knows nothing of what is behind it (the openraft adapter puts
//! its `Raft` handle there).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use super::chunks::ChunkStream;

/// A boxed, sendable future: what handler methods return.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// A handler's answer: response bytes, or an error message the caller receives as
/// [`RpcError::Remote`](super::RpcError::Remote).
pub type HandlerResult = Result<Vec<u8>, String>;

/// Serves requests for one node. Each request runs in its own task; a handler is called
/// concurrently and must not assume any order between requests.
///
/// If the caller goes away (deadline passed, connection lost) the future is dropped, so handler
/// futures must be cancel-safe. At shutdown, running handlers get a grace period.
pub trait Handler: Send + Sync + 'static {
    /// A unary request of application `kind` (0..=0x7F) with its payload.
    fn call(&self, kind: u8, payload: Vec<u8>) -> BoxFuture<HandlerResult>;

    /// A streamed request of application `kind`: its header, then chunks to read from `chunks`
    /// (each read bounded by the server's no-progress timeout). The default refuses every
    /// streamed request.
    fn stream(&self, kind: u8, header: Vec<u8>, chunks: ChunkStream) -> BoxFuture<HandlerResult> {
        drop((header, chunks));
        Box::pin(async move { Err(format!("kind {kind} takes no streamed requests")) })
    }
}

/// A [`Handler`] for unary requests from a closure returning a future.
///
/// ```
/// use tasklog_raft::network::handler_fn;
/// let echo = handler_fn(|_kind, payload| async move { Ok(payload) });
/// # drop(echo);
/// ```
pub fn handler_fn<F, Fut>(f: F) -> Arc<dyn Handler>
where
    F: Fn(u8, Vec<u8>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HandlerResult> + Send + 'static,
{
    Arc::new(FnHandler(f))
}

struct FnHandler<F>(F);

impl<F, Fut> Handler for FnHandler<F>
where
    F: Fn(u8, Vec<u8>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HandlerResult> + Send + 'static,
{
    fn call(&self, kind: u8, payload: Vec<u8>) -> BoxFuture<HandlerResult> {
        Box::pin((self.0)(kind, payload))
    }
}
