//! One piece of work shared by every caller that needs it at the same time: a cache miss
//! on one token, or an exchange of the API key for a service token.
use std::future::poll_fn;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::{Poll, Waker};

pub(crate) struct Flight<T> {
    state: Mutex<State<T>>,
}

enum State<T> {
    Running(Vec<Waker>),
    Landed(T),
    /// The leading caller went away before the work ended.
    Abandoned,
}

impl<T: Clone> Flight<T> {
    pub(crate) fn new() -> Self {
        Self {
            state: Mutex::new(State::Running(Vec::new())),
        }
    }

    /// The leader's outcome, or `None` when the flight was abandoned.
    pub(crate) async fn outcome(&self) -> Option<T> {
        poll_fn(|cx| match &mut *self.lock() {
            State::Running(wakers) => {
                if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
                    wakers.push(cx.waker().clone());
                }
                Poll::Pending
            }
            State::Landed(outcome) => Poll::Ready(Some(outcome.clone())),
            State::Abandoned => Poll::Ready(None),
        })
        .await
    }

    /// Ends the flight with the leader's outcome (`None`: abandoned) and wakes the
    /// followers.
    pub(crate) fn land(&self, outcome: Option<T>) {
        let landed = outcome.map_or(State::Abandoned, State::Landed);
        let previous = std::mem::replace(&mut *self.lock(), landed);
        if let State::Running(wakers) = previous {
            wakers.into_iter().for_each(Waker::wake);
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
