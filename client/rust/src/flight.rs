//! One fetch shared by every caller that misses on the same token at the same time.
use std::future::poll_fn;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::{Poll, Waker};

use crate::cache::{Answer, Generation};
use crate::error::Error;

/// What a fetch answered: an answer to cache, or an error every waiting caller gets.
pub(crate) type Outcome = Result<Answer, Error>;

pub(crate) struct Flight {
    /// The evictions that could touch the key when the fetch began.
    generation: Generation,
    state: Mutex<State>,
}

enum State {
    Running(Vec<Waker>),
    Landed(Outcome),
    /// The leading caller went away before the fetch ended.
    Abandoned,
}

impl Flight {
    pub(crate) fn new(generation: Generation) -> Self {
        Self {
            generation,
            state: Mutex::new(State::Running(Vec::new())),
        }
    }

    pub(crate) fn generation(&self) -> Generation {
        self.generation
    }

    /// The leader's outcome, or `None` when the flight was abandoned.
    pub(crate) async fn outcome(&self) -> Option<Outcome> {
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
    pub(crate) fn land(&self, outcome: Option<Outcome>) {
        let landed = outcome.map_or(State::Abandoned, State::Landed);
        let previous = std::mem::replace(&mut *self.lock(), landed);
        if let State::Running(wakers) = previous {
            wakers.into_iter().for_each(Waker::wake);
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
