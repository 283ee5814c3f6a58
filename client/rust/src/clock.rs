use std::time::SystemTime;

/// The time the cache judges freshness by. Tests pass a clock they move; everyone else
/// uses [`SystemClock`].
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> SystemTime;
}

#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}
