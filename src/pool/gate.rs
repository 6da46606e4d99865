//! MaxOpen as the pool enforces it: a semaphore whose limit can drop below the number of
//! connections in use, the shortfall repaid as they come back.
//!
//! deadpool's own `resize` cannot do this: shrinking a pool that is not full forgets one permit
//! per idle object it drops, not one per slot removed, so the surplus lets the next burst open
//! more connections than the new limit. deadpool therefore only ever grows (to the largest
//! MaxOpen seen) and this gate holds the current limit.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

#[derive(Debug, PartialEq, Eq)]
pub enum GateError {
    Timeout,
    Closed,
}

pub struct Gate {
    sem: Arc<Semaphore>,
    /// Changed only under this lock, together with permits forgotten or returned, so a permit
    /// is never available while a debt is outstanding.
    state: Mutex<Limit>,
    waiting: AtomicUsize,
}

struct Limit {
    max: usize,
    /// Connections in use beyond `max`: each one returning is closed and its permit retired.
    debt: usize,
}

/// The right to hold one server connection.
pub struct Pass {
    permit: Option<OwnedSemaphorePermit>,
    gate: Arc<Gate>,
}

impl Gate {
    pub fn new(max: usize) -> Arc<Gate> {
        Arc::new(Gate {
            sem: Arc::new(Semaphore::new(max)),
            state: Mutex::new(Limit { max, debt: 0 }),
            waiting: AtomicUsize::new(0),
        })
    }

    /// Waits at most `wait` for a free slot.
    pub async fn enter(self: &Arc<Self>, wait: Duration) -> Result<Pass, GateError> {
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let acquired = tokio::time::timeout(wait, self.sem.clone().acquire_owned()).await;
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        match acquired {
            Ok(Ok(permit)) => Ok(Pass {
                permit: Some(permit),
                gate: self.clone(),
            }),
            Ok(Err(_)) => Err(GateError::Closed),
            Err(_) => Err(GateError::Timeout),
        }
    }

    pub fn max(&self) -> usize {
        self.state.lock().expect("gate lock").max
    }

    /// Free slots right now.
    pub fn available(&self) -> usize {
        self.sem.available_permits()
    }

    /// Sessions waiting for a slot.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Sets a new limit. Shrinking takes free slots at once and the rest as passes return;
    /// growing first forgives that debt, then frees slots.
    pub fn resize(&self, max: usize) {
        let mut st = self.state.lock().expect("gate lock");
        if max < st.max {
            let cut = st.max - max;
            let taken = self.sem.forget_permits(cut);
            st.debt += cut - taken;
        } else {
            let add = max - st.max;
            let forgiven = add.min(st.debt);
            st.debt -= forgiven;
            self.sem.add_permits(add - forgiven);
        }
        st.max = max;
    }

    /// Wakes every waiter with [`GateError::Closed`].
    pub fn close(&self) {
        self.sem.close();
    }
}

impl Pass {
    /// Gives the slot back. `give_back(true)` must return the connection to the pool,
    /// `give_back(false)` must close it (the gate is over its limit). The connection goes back
    /// before the slot does, so the next checkout finds it idle instead of opening another.
    pub fn leave(mut self, give_back: impl FnOnce(bool)) {
        self.settle(give_back);
    }

    fn settle(&mut self, give_back: impl FnOnce(bool)) {
        let Some(permit) = self.permit.take() else {
            return;
        };
        let mut st = self.gate.state.lock().expect("gate lock");
        if st.debt > 0 {
            st.debt -= 1;
            permit.forget();
            give_back(false);
        } else {
            give_back(true);
            drop(permit);
        }
    }
}

impl Drop for Pass {
    fn drop(&mut self) {
        self.settle(|_| {});
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Duration = Duration::from_millis(1);

    #[tokio::test]
    async fn shrinking_below_use_is_repaid_by_returns() {
        let gate = Gate::new(4);
        let a = gate.enter(NOW).await.unwrap();
        let b = gate.enter(NOW).await.unwrap();
        let c = gate.enter(NOW).await.unwrap();
        gate.resize(1);
        assert_eq!(gate.available(), 0);
        assert_eq!(gate.enter(NOW).await.err(), Some(GateError::Timeout));
        let mut kept = Vec::new();
        for p in [a, b, c] {
            p.leave(|keep| kept.push(keep));
        }
        // Two over the limit are closed, the third goes back to the pool.
        assert_eq!(kept, [false, false, true]);
        assert_eq!(gate.available(), 1);
        let d = gate.enter(NOW).await.unwrap();
        assert_eq!(gate.enter(NOW).await.err(), Some(GateError::Timeout));
        drop(d);
        assert_eq!(gate.available(), 1);
    }

    #[tokio::test]
    async fn shrinking_an_idle_gate_leaves_exactly_the_new_limit() {
        let gate = Gate::new(8);
        let held = gate.enter(NOW).await.unwrap();
        gate.resize(2);
        assert_eq!((gate.max(), gate.available()), (2, 1));
        let second = gate.enter(NOW).await.unwrap();
        assert_eq!(gate.enter(NOW).await.err(), Some(GateError::Timeout));
        drop((held, second));
        assert_eq!(gate.available(), 2);
    }

    #[tokio::test]
    async fn growing_forgives_debt_before_adding_slots() {
        let gate = Gate::new(3);
        let passes: Vec<Pass> = futures::future::join_all((0..3).map(|_| gate.enter(NOW)))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        gate.resize(1); // debt 2
        gate.resize(2); // debt 1, nothing free
        assert_eq!(gate.available(), 0);
        let mut kept = Vec::new();
        for p in passes {
            p.leave(|keep| kept.push(keep));
        }
        assert_eq!(kept, [false, true, true]);
        assert_eq!(gate.available(), 2);
        gate.resize(5);
        assert_eq!(gate.available(), 5);
    }

    #[tokio::test]
    async fn closing_wakes_waiters() {
        let gate = Gate::new(1);
        let _held = gate.enter(NOW).await.unwrap();
        let waiter = {
            let gate = gate.clone();
            tokio::spawn(async move { gate.enter(Duration::from_secs(30)).await.err() })
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while gate.waiting() == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "waiter never waited"
            );
            tokio::task::yield_now().await;
        }
        gate.close();
        assert_eq!(waiter.await.unwrap(), Some(GateError::Closed));
    }
}
