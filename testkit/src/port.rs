//! Ports for servers that stop and start again on the same port.
//!
//! A port the kernel handed out for `127.0.0.1:0` goes back to its pool while the server
//! is down, and another test's server binding `:0` at that moment may get it: the first
//! test's clients then talk to the wrong server. So test servers listen on a port below
//! the kernel's ephemeral range (`ip_local_port_range`, 32768 and up by default), which
//! `:0` never hands out.
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU32, Ordering};

/// Ports tried: below Linux's default ephemeral range, above the well-known services.
const FIRST: u32 = 20_000;
const COUNT: u32 = 12_000;

/// A free `127.0.0.1` port outside the ephemeral range. Test binaries running at once
/// start at different places (by process id) and step through the range, so they rarely
/// try the same port; one that is taken is skipped.
pub fn outside_ephemeral_range() -> SocketAddr {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id().wrapping_mul(7_919) % COUNT;
    for _ in 0..COUNT {
        let offset = (start + NEXT.fetch_add(1, Ordering::Relaxed)) % COUNT;
        let address = SocketAddr::from(([127, 0, 0, 1], (FIRST + offset) as u16));
        if TcpListener::bind(address).is_ok() {
            return address;
        }
    }
    panic!("no free port in {FIRST}..{}", FIRST + COUNT);
}
