//! Password verification off the async reactor, with bounded concurrency and a cache of
//! successful verifications so reconnect storms cost no scrypt work.

use std::sync::{Arc, Mutex};

use foldhash::{HashSet, HashSetExt};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use super::hash::{HashError, verify_password};

/// Entries above this are dropped wholesale; the cache only saves CPU, it never decides.
const CACHE_LIMIT: usize = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Hash(#[from] HashError),
    #[error("verification task failed")]
    Task,
}

pub struct Verifier {
    permits: Arc<Semaphore>,
    /// Digests of (process key, stored hash, password) that verified; a changed row or password misses.
    cache: Mutex<HashSet<[u8; 32]>>,
    key: [u8; 32],
}

impl Verifier {
    pub fn new(concurrency: usize) -> Self {
        Verifier {
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            cache: Mutex::new(HashSet::new()),
            key: rand::random(),
        }
    }

    fn digest(&self, stored: &str, password: &[u8]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.key);
        h.update((stored.len() as u64).to_le_bytes());
        h.update(stored.as_bytes());
        h.update(password);
        h.finalize().into()
    }

    /// Ok when `password` matches the stored easy-scrypt hash.
    pub async fn verify(&self, stored: &str, password: &[u8]) -> Result<bool, VerifyError> {
        let d = self.digest(stored, password);
        if self.cache.lock().expect("verifier cache").contains(&d) {
            return Ok(true);
        }
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| VerifyError::Task)?;
        // A burst of first logins of one tenant queues above; the first to verify fills the
        // cache for the rest, so only it pays for scrypt.
        if self.cache.lock().expect("verifier cache").contains(&d) {
            return Ok(true);
        }
        let (stored_owned, pw) = (stored.to_owned(), password.to_vec());
        let res = tokio::task::spawn_blocking(move || verify_password(&stored_owned, &pw))
            .await
            .map_err(|_| VerifyError::Task)?;
        match res {
            Ok(()) => {
                let mut cache = self.cache.lock().expect("verifier cache");
                if cache.len() >= CACHE_LIMIT {
                    cache.clear();
                }
                cache.insert(d);
                Ok(true)
            }
            Err(HashError::Mismatch) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}
