//! The QRS call slots, shared fairly between callers.
//!
//! QRS is the repository of the whole Sense site, so butler-edge keeps at most
//! `maxConcurrentCalls` calls in flight. A plain FIFO semaphore would let one caller's burst
//! (hundreds of lookups) queue ahead of everyone else's single start. Here, while slots are
//! free anyone takes one at once; when callers have to wait, each freed slot goes to the next
//! *caller* in turn (round robin over callers with waiters, FIFO within a caller), so a
//! caller's wait grows with the number of callers waiting, not with how much another caller
//! asked for. tokio's `Semaphore` is FIFO only and no maintained crate offers a keyed fair
//! semaphore, hence this small one.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// Slots handed out fairly between callers (named by any string key).
pub struct FairSlots {
    state: Arc<Mutex<State>>,
}

struct State {
    free: usize,
    /// Waiters per caller, oldest first.
    waiting: HashMap<String, VecDeque<oneshot::Sender<()>>>,
    /// Callers with waiters, in the order their next waiter is served.
    turn: VecDeque<String>,
}

/// One slot, given back when dropped.
pub struct Slot {
    state: Arc<Mutex<State>>,
}

impl FairSlots {
    pub fn new(slots: usize) -> FairSlots {
        FairSlots {
            state: Arc::new(Mutex::new(State {
                free: slots.max(1),
                waiting: HashMap::new(),
                turn: VecDeque::new(),
            })),
        }
    }

    /// A slot for `caller`: at once if one is free and nobody waits, else in its turn.
    pub async fn acquire(&self, caller: &str) -> Slot {
        let receiver = {
            let mut state = lock(&self.state);
            if state.free > 0 && state.turn.is_empty() {
                state.free -= 1;
                return Slot {
                    state: self.state.clone(),
                };
            }
            let (sender, receiver) = oneshot::channel();
            let state = &mut *state;
            let queue = state.waiting.entry(caller.to_string()).or_default();
            if queue.is_empty() {
                state.turn.push_back(caller.to_string());
            }
            queue.push_back(sender);
            receiver
        };
        let mut waiting = Waiting {
            receiver,
            state: self.state.clone(),
        };
        // The sender is dropped only with the whole `FairSlots`, which outlives requests.
        let _ = (&mut waiting.receiver).await;
        waiting.receiver.close();
        Slot {
            state: self.state.clone(),
        }
    }
}

/// A caller waiting for its turn. If it gives up (its request ended) after a slot was
/// handed to it, dropping this hands the slot on.
struct Waiting {
    receiver: oneshot::Receiver<()>,
    state: Arc<Mutex<State>>,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if self.receiver.try_recv().is_ok() {
            drop(Slot {
                state: self.state.clone(),
            });
        }
    }
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Drop for Slot {
    /// Hands the slot to the next caller in turn, or back to the free pool.
    fn drop(&mut self) {
        let mut state = lock(&self.state);
        while let Some(caller) = state.turn.pop_front() {
            let Some(queue) = state.waiting.get_mut(&caller) else {
                continue;
            };
            let next = queue.pop_front();
            if queue.is_empty() {
                state.waiting.remove(&caller);
            } else {
                state.turn.push_back(caller);
            }
            // A waiter that gave up has dropped its receiver: try the next one.
            if next.is_some_and(|sender| sender.send(()).is_ok()) {
                return;
            }
        }
        state.free += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_second_caller_is_served_before_the_first_callers_backlog() {
        let slots = Arc::new(FairSlots::new(1));
        let held = slots.acquire("burst").await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut waiters = Vec::new();
        for (i, caller) in ["burst", "burst", "burst", "other"].iter().enumerate() {
            let (slots, order) = (slots.clone(), order.clone());
            waiters.push(tokio::spawn(async move {
                let _slot = slots.acquire(caller).await;
                order.lock().unwrap().push(format!("{caller}{i}"));
                tokio::time::sleep(Duration::from_millis(5)).await;
            }));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        drop(held);
        for w in waiters {
            w.await.unwrap();
        }
        let order = order.lock().unwrap().clone();
        assert_eq!(order, ["burst0", "other3", "burst1", "burst2"]);
    }

    #[tokio::test]
    async fn a_waiter_that_gave_up_does_not_keep_a_slot() {
        let slots = Arc::new(FairSlots::new(1));
        let held = slots.acquire("a").await;
        let gave_up = {
            let slots = slots.clone();
            tokio::spawn(async move { slots.acquire("b").await })
        };
        tokio::time::sleep(Duration::from_millis(5)).await;
        gave_up.abort();
        let _ = gave_up.await;
        drop(held);
        let again = tokio::time::timeout(Duration::from_secs(1), slots.acquire("c")).await;
        assert!(
            again.is_ok(),
            "the slot was lost with the waiter that gave up"
        );
    }
}
