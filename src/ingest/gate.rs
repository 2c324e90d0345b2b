//! Who may wait to authenticate on the Unix socket, and who may hold a
//! session: the listener ([`super::unix`]) gives each connection a
//! [`Gate`], the session ([`super::session`]) gives its place up once it
//! authenticated and takes a permit.
//!
//! Invariant: at most [`MAX_UNAUTHENTICATED`] connections wait at once; one
//! more pushes out the one that has waited longest.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::{oneshot, Semaphore};

/// Most connections waiting to authenticate at once.
pub const MAX_UNAUTHENTICATED: usize = 32;

/// The connections waiting to authenticate, oldest first.
#[derive(Default)]
pub struct Waiting {
    queue: Mutex<Queue>,
}

/// The last id given, and each waiting connection's id and eviction notice.
#[derive(Default)]
struct Queue {
    last: u64,
    waiting: VecDeque<(u64, oneshot::Sender<()>)>,
}

impl Waiting {
    /// Adds a connection; the oldest one is told to leave when that makes
    /// more than [`MAX_UNAUTHENTICATED`].
    pub(super) fn enter(self: &Arc<Self>) -> WaitSlot {
        let (tx, rx) = oneshot::channel();
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        q.last += 1;
        let id = q.last;
        if q.waiting.len() >= MAX_UNAUTHENTICATED {
            if let Some((_, oldest)) = q.waiting.pop_front() {
                let _ = oldest.send(());
            }
        }
        q.waiting.push_back((id, tx));
        WaitSlot {
            waiting: self.clone(),
            id,
            evicted: Some(rx),
        }
    }
}

/// A connection's place among the [`Waiting`]; given up when dropped.
pub struct WaitSlot {
    waiting: Arc<Waiting>,
    id: u64,
    evicted: Option<oneshot::Receiver<()>>,
}

impl WaitSlot {
    /// Resolves when a newer connection pushed this one out.
    pub async fn evicted(&mut self) {
        match self.evicted.as_mut() {
            Some(rx) => {
                if rx.await.is_err() {
                    // Left the queue by itself: never evicted.
                    std::future::pending::<()>().await;
                }
            }
            None => std::future::pending().await,
        }
    }
}

impl Drop for WaitSlot {
    fn drop(&mut self) {
        let mut q = self.waiting.queue.lock().unwrap_or_else(|e| e.into_inner());
        q.waiting.retain(|(id, _)| *id != self.id);
    }
}

/// What a connection needs of the listener: its place among the waiting
/// ones, then a session permit once it authenticated.
pub struct Gate {
    pub wait: WaitSlot,
    pub permits: Arc<Semaphore>,
}
