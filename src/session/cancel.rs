//! Cancel keys: each client gets its own BackendKeyData, mapped to whichever server connection
//! is running its query right now.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

/// The server-side key of the connection a client is using.
#[derive(Debug, Clone, Copy)]
pub struct ServerKey {
    pub addr: SocketAddr,
    pub pid: i32,
    pub secret: i32,
}

pub type CancelSlot = Arc<Mutex<Option<ServerKey>>>;

#[derive(Default)]
pub struct CancelMap {
    next_pid: AtomicI32,
    slots: Mutex<HashMap<i32, (i32, CancelSlot)>>,
}

/// Removes the client's key when its session ends.
pub struct CancelGuard<'a> {
    map: &'a CancelMap,
    pub pid: i32,
    pub secret: i32,
    pub slot: CancelSlot,
}

impl Drop for CancelGuard<'_> {
    fn drop(&mut self) {
        self.map.slots.lock().expect("cancel map").remove(&self.pid);
    }
}

impl CancelMap {
    pub fn register(&self) -> CancelGuard<'_> {
        let pid = self
            .next_pid
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_add(1)
            & 0x7fff_ffff;
        let secret: i32 = rand::random();
        let slot = CancelSlot::default();
        self.slots
            .lock()
            .expect("cancel map")
            .insert(pid, (secret, slot.clone()));
        CancelGuard {
            map: self,
            pid,
            secret,
            slot,
        }
    }

    /// Forwards a CancelRequest to the right server; unknown or wrong keys are ignored.
    pub async fn cancel(&self, pid: i32, secret: i32) -> bool {
        let target = {
            let slots = self.slots.lock().expect("cancel map");
            match slots.get(&pid) {
                Some((s, slot)) if *s == secret => *slot.lock().expect("cancel slot"),
                _ => None,
            }
        };
        let Some(key) = target else {
            return false;
        };
        let mut buf = BytesMut::new();
        postgres_protocol::message::frontend::cancel_request(key.pid, key.secret, &mut buf);
        match tokio::net::TcpStream::connect(key.addr).await {
            Ok(mut s) => s.write_all(&buf).await.is_ok(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot forward cancel request");
                false
            }
        }
    }
}
