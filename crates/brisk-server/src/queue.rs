//! The bound on requests waiting for their first token (`brisk serve --max-waiting`).
//!
//! A request holds a ticket from the moment it is handed to the engine until its first token
//! (or its end): that is the time it spends queued or in prefill. When the bound is reached,
//! new requests are refused at once with 429 and `Retry-After` (TGI's "model is overloaded")
//! rather than queued without limit, so that under overload latency stays bounded for the
//! requests the server did accept and clients learn early that they should back off.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::error::ApiError;

/// Requests accepted but not yet producing tokens, and their limit.
#[derive(Debug, Default)]
pub struct WaitingQueue {
    limit: Option<usize>,
    waiting: AtomicUsize,
}

impl WaitingQueue {
    /// A queue refusing requests beyond `limit` waiting ones (`None`: unbounded).
    pub fn new(limit: Option<usize>) -> Self {
        Self {
            limit,
            waiting: AtomicUsize::new(0),
        }
    }

    /// Requests now waiting for their first token.
    pub fn len(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Whether no request is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A ticket for one more waiting request, or the 429 to answer when the queue is full.
    pub fn enter(self: &Arc<Self>) -> Result<WaitingTicket, ApiError> {
        let limit = self.limit.unwrap_or(usize::MAX);
        self.waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .map_err(|n| {
                ApiError::overloaded(format!(
                    "the server is overloaded: {n} requests are already waiting \
                     (--max-waiting {limit}); retry later"
                ))
            })?;
        Ok(WaitingTicket {
            queue: Some(Arc::clone(self)),
        })
    }
}

/// One waiting request's place; released by [`WaitingTicket::release`] or on drop.
#[derive(Debug)]
pub struct WaitingTicket {
    queue: Option<Arc<WaitingQueue>>,
}

impl WaitingTicket {
    /// The request has its first token (or has ended): it no longer waits.
    pub fn release(&mut self) {
        if let Some(q) = self.queue.take() {
            q.waiting.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Drop for WaitingTicket {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_refuses_until_a_ticket_is_released() {
        let q = Arc::new(WaitingQueue::new(Some(2)));
        let mut a = q.enter().unwrap();
        let b = q.enter().unwrap();
        let refused = q.enter().unwrap_err();
        assert_eq!(refused.status.as_u16(), 429);
        assert!(refused.message.contains("--max-waiting 2"), "{refused:?}");
        a.release();
        a.release(); // idempotent
        assert_eq!(q.len(), 1);
        let c = q.enter().unwrap();
        drop((b, c));
        assert!(q.is_empty());
    }

    #[test]
    fn unbounded_by_default() {
        let q = Arc::new(WaitingQueue::default());
        let tickets: Vec<_> = (0..1000).map(|_| q.enter().unwrap()).collect();
        assert_eq!(q.len(), 1000);
        drop(tickets);
        assert!(q.is_empty());
    }
}
