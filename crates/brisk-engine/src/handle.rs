//! The handle the server holds: a command channel into the engine thread.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use brisk_scheduler::Priority;
use tokio::sync::mpsc as tokio_mpsc;

use crate::export::{BlockExport, MoveError, RequestExport};
use crate::request::{EngineEvent, EngineRequest, RequestId};
use crate::stats::EngineStats;

/// A command for the engine thread.
pub(crate) enum Command {
    /// Schedule a request; its events go to `events`.
    Add {
        id: RequestId,
        /// Boxed: a request is far larger than the other commands.
        request: Box<EngineRequest>,
        events: tokio_mpsc::UnboundedSender<EngineEvent>,
    },
    /// Stop a request and free its blocks.
    Abort(RequestId),
    /// End a request as a stop (a stop string matched) and free its blocks.
    Stop(RequestId),
    /// What a request needs to continue in another engine, but its first `first_block`
    /// blocks (sent ahead).
    Export {
        id: RequestId,
        first_block: usize,
        reply: tokio::sync::oneshot::Sender<Result<RequestExport, MoveError>>,
    },
    /// At most `max_blocks` of a running request's full blocks from `first_block` on, sent
    /// ahead of its move.
    ExportBlocks {
        id: RequestId,
        first_block: usize,
        max_blocks: usize,
        reply: tokio::sync::oneshot::Sender<Result<Option<BlockExport>, MoveError>>,
    },
    /// Blocks sent ahead of a move, into the prefix cache.
    ImportBlocks {
        blocks: Box<BlockExport>,
        reply: tokio::sync::oneshot::Sender<Result<usize, MoveError>>,
    },
    /// Take in a request another engine exported; its events go to `events`.
    Import {
        id: RequestId,
        export: Box<RequestExport>,
        events: tokio_mpsc::UnboundedSender<EngineEvent>,
        reply: tokio::sync::oneshot::Sender<Result<(), MoveError>>,
    },
    /// Forget a request that moved elsewhere: free its blocks, close its stream quietly.
    Release(RequestId),
    /// Let a request paused for a move run on here.
    Resume(RequestId),
    /// Forget a request that moved elsewhere and hand over its event channel, so that the
    /// caller can feed it what the destination streams.
    Handoff {
        id: RequestId,
        reply: tokio::sync::oneshot::Sender<Option<tokio_mpsc::UnboundedSender<EngineEvent>>>,
    },
    /// The ids of the requests the engine holds (of one class, if given).
    Requests {
        class: Option<Priority>,
        reply: tokio::sync::oneshot::Sender<Vec<RequestId>>,
    },
}

/// The engine has stopped (its thread ended); no request can be served.
#[derive(Debug, thiserror::Error)]
#[error("the engine is not running")]
pub struct EngineStopped;

/// A cloneable handle to the engine actor.
#[derive(Clone)]
pub struct EngineHandle {
    pub(crate) commands: mpsc::Sender<Command>,
    pub(crate) next_id: Arc<AtomicU64>,
    pub(crate) stats: Arc<Mutex<EngineStats>>,
}

impl EngineHandle {
    /// Submits a request; events arrive on the returned stream. Dropping the stream before
    /// the request finished aborts it, which frees its blocks at the engine's next step.
    pub fn submit(&self, request: EngineRequest) -> Result<RequestStream, EngineStopped> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = tokio_mpsc::unbounded_channel();
        self.commands
            .send(Command::Add {
                id,
                request: Box::new(request),
                events: tx,
            })
            .map_err(|_| EngineStopped)?;
        Ok(RequestStream {
            id,
            events: rx,
            commands: self.commands.clone(),
            finished: false,
        })
    }

    /// What request `id` needs to continue in another engine of the same model (see
    /// [`crate::EngineCore::export`]); it is paused here until [`Self::release`] (moved) or
    /// [`Self::resume`] (the move failed).
    pub async fn export(&self, id: RequestId) -> Result<RequestExport, MoveError> {
        self.export_from(id, 0).await
    }

    /// [`Self::export`] without the K/V of the first `first_block` blocks, sent ahead
    /// ([`Self::export_blocks`]).
    pub async fn export_from(
        &self,
        id: RequestId,
        first_block: usize,
    ) -> Result<RequestExport, MoveError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.commands
            .send(Command::Export {
                id,
                first_block,
                reply,
            })
            .map_err(|_| MoveError::Stopped)?;
        answer.await.map_err(|_| MoveError::Stopped)?
    }

    /// At most `max_blocks` of running request `id`'s full blocks from `first_block` on, to
    /// send ahead of its move while it keeps running (see
    /// [`crate::EngineCore::export_blocks`]).
    pub async fn export_blocks(
        &self,
        id: RequestId,
        first_block: usize,
        max_blocks: usize,
    ) -> Result<Option<BlockExport>, MoveError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.commands
            .send(Command::ExportBlocks {
                id,
                first_block,
                max_blocks,
                reply,
            })
            .map_err(|_| MoveError::Stopped)?;
        answer.await.map_err(|_| MoveError::Stopped)?
    }

    /// Takes blocks sent ahead of a move into the prefix cache; returns how many full
    /// blocks of their tokens are cached here now (see [`crate::EngineCore::import_blocks`]).
    pub async fn import_blocks(&self, blocks: BlockExport) -> Result<usize, MoveError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.commands
            .send(Command::ImportBlocks {
                blocks: Box::new(blocks),
                reply,
            })
            .map_err(|_| MoveError::Stopped)?;
        answer.await.map_err(|_| MoveError::Stopped)?
    }

    /// Takes in a request another engine exported; it continues here from its next token,
    /// which arrives on the returned stream like a submitted request's. Refused, with
    /// nothing kept, when this engine has no room or another kind of KV pool.
    pub async fn import(&self, export: RequestExport) -> Result<RequestStream, MoveError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (events, rx) = tokio_mpsc::unbounded_channel();
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.commands
            .send(Command::Import {
                id,
                export: Box::new(export),
                events,
                reply,
            })
            .map_err(|_| MoveError::Stopped)?;
        answer.await.map_err(|_| MoveError::Stopped)??;
        Ok(RequestStream {
            id,
            events: rx,
            commands: self.commands.clone(),
            finished: false,
        })
    }

    /// Forgets request `id`, which now runs in another engine: its blocks are freed and its
    /// stream here ends without a `Finished` event.
    pub fn release(&self, id: RequestId) -> Result<(), EngineStopped> {
        self.commands
            .send(Command::Release(id))
            .map_err(|_| EngineStopped)
    }

    /// Forgets request `id`, which now runs elsewhere, and returns the sending end of its
    /// event stream here: what the caller sends on it reaches the request's client as if the
    /// engine had (the source of a move relays the destination's events this way). `None`
    /// when the engine does not hold it.
    pub async fn handoff(
        &self,
        id: RequestId,
    ) -> Result<Option<tokio_mpsc::UnboundedSender<EngineEvent>>, EngineStopped> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.commands
            .send(Command::Handoff { id, reply })
            .map_err(|_| EngineStopped)?;
        answer.await.map_err(|_| EngineStopped)
    }

    /// The ids of the requests the engine holds (waiting or running), in no order; with
    /// `class`, only those of that priority class.
    pub async fn requests(&self, class: Option<Priority>) -> Result<Vec<RequestId>, EngineStopped> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.commands
            .send(Command::Requests { class, reply })
            .map_err(|_| EngineStopped)?;
        answer.await.map_err(|_| EngineStopped)
    }

    /// Lets a request paused by [`Self::export`] run on here (its move failed).
    pub fn resume(&self, id: RequestId) -> Result<(), EngineStopped> {
        self.commands
            .send(Command::Resume(id))
            .map_err(|_| EngineStopped)
    }

    /// The latest statistics published by the engine.
    pub fn stats(&self) -> EngineStats {
        self.stats
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// The events of one request. Aborts the request when dropped unfinished.
pub struct RequestStream {
    id: RequestId,
    events: tokio_mpsc::UnboundedReceiver<EngineEvent>,
    commands: mpsc::Sender<Command>,
    finished: bool,
}

impl RequestStream {
    /// The engine's id for this request.
    pub fn id(&self) -> RequestId {
        self.id
    }

    /// Asks the engine to abandon this request (its deadline passed, say). Its `Finished`
    /// event, with reason `Abort`, still arrives and carries the usage counts.
    pub fn abort(&self) {
        let _ = self.commands.send(Command::Abort(self.id));
    }

    /// Asks the engine to end this request as a stop: a stop string matched in its text.
    /// Its `Finished` event, with reason `Stop`, carries the usage counts (tokens the engine
    /// generated meanwhile arrive before it and count).
    pub fn stop(&self) {
        let _ = self.commands.send(Command::Stop(self.id));
    }

    /// The next event, or `None` once the engine dropped the request (after `Finished`).
    pub async fn next(&mut self) -> Option<EngineEvent> {
        let event = self.events.recv().await;
        match &event {
            Some(
                EngineEvent::Finished { .. } | EngineEvent::Failed(_) | EngineEvent::Rejected(_),
            )
            | None => {
                self.finished = true;
            }
            Some(EngineEvent::Token(_)) => {}
        }
        event
    }
}

impl Drop for RequestStream {
    fn drop(&mut self) {
        if !self.finished {
            // If the engine is gone there is nothing left to free.
            let _ = self.commands.send(Command::Abort(self.id));
        }
    }
}
