//! Where the signing keys come from: `SESSION_SECRET`, or a secret every instance shares.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use secrecy::{ExposeSecret, SecretString};

use super::SessionError;
use super::cookie::Keyring;
use super::id::os_random;
use super::store::{SessionStore, StoreKind};

/// How often an instance re-checks the shared secret in Redis.
///
/// If Redis loses its data (a restart without persistence, a failover), the first instance to
/// check puts its secret back, so running instances and ones started later keep agreeing.
const SHARED_SECRET_REFRESH: Duration = Duration::from_secs(30);

/// The signing keys, known at start-up or shared through the store.
#[derive(Debug)]
pub struct SigningKeys(Source);

#[derive(Debug)]
enum Source {
    Ready(Arc<Keyring>),
    /// Fetched on first use, so that a Redis that is down at boot delays only sessions.
    Shared {
        cache: RwLock<Option<Shared>>,
        every: Duration,
    },
}

#[derive(Clone, Debug)]
struct Shared {
    ring: Arc<Keyring>,
    secret: SecretString,
    checked: Instant,
}

impl SigningKeys {
    /// SigningKeys for a store: the configured secrets, or a generated one (with a WARN).
    ///
    /// Without `SESSION_SECRET` the memory store signs with a random per-process key, and
    /// Redis keeps one generated secret for every instance and restart to agree on, which
    /// lets a plain `cf push` work with no setup.
    pub fn for_store(secrets: &[SecretString], kind: StoreKind) -> Result<Self, SessionError> {
        if let Some(ring) = Keyring::new(secrets) {
            return Ok(Self(Source::Ready(Arc::new(ring))));
        }
        match kind {
            StoreKind::Memory => {
                tracing::warn!(
                    "SESSION_SECRET is not set: signing cookies with a random key of this process; \
                     cookies stop working when it restarts"
                );
                let ring = Keyring::new(&[random_secret()?]).ok_or(SessionError::NoKeys)?;
                Ok(Self(Source::Ready(Arc::new(ring))))
            }
            StoreKind::Redis => {
                tracing::warn!(
                    "SESSION_SECRET is not set: using a secret generated once and kept in Redis, \
                     shared by all instances; set SESSION_SECRET to control and rotate it"
                );
                Ok(Self::shared(SHARED_SECRET_REFRESH))
            }
        }
    }

    /// SigningKeys from a secret kept in the store, re-checked every `every`.
    pub fn shared(every: Duration) -> Self {
        Self(Source::Shared {
            cache: RwLock::new(None),
            every,
        })
    }

    /// The keyring if it needs no store call now: configured, or fetched and not yet due for
    /// a re-check.
    pub fn ready(&self) -> Option<Arc<Keyring>> {
        self.fresh().ok()
    }

    /// The keyring if it is ready, else the cache a fetch of the shared secret refills.
    fn fresh(&self) -> Result<Arc<Keyring>, &RwLock<Option<Shared>>> {
        let (cache, every) = match &self.0 {
            Source::Ready(ring) => return Ok(ring.clone()),
            Source::Shared { cache, every } => (cache, *every),
        };
        cache
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .filter(|c| c.checked.elapsed() < every)
            .map(|c| c.ring.clone())
            .ok_or(cache)
    }

    /// The keyring, fetching or re-checking the shared secret when it is due.
    pub async fn get(&self, store: &dyn SessionStore) -> Result<Arc<Keyring>, SessionError> {
        let lock = match self.fresh() {
            Ok(ring) => return Ok(ring),
            Err(cache) => cache,
        };
        let cached = lock.read().unwrap_or_else(|p| p.into_inner()).clone();
        // Offer the secret we sign with, so a Redis that lost it gets the same one back.
        let candidate = match &cached {
            Some(c) => c.secret.clone(),
            None => random_secret()?,
        };
        let fresh = match store.shared_secret(candidate).await {
            Ok(secret) => {
                let ring = match &cached {
                    Some(c) if c.secret.expose_secret() == secret.expose_secret() => c.ring.clone(),
                    // Another instance's secret won: sign with it, still accept our old cookies.
                    Some(c) => {
                        crate::telemetry::in_request(|| {
                            tracing::warn!(
                                "the shared session secret in Redis changed; adopting it"
                            )
                        });
                        Arc::new(
                            Keyring::new(&[secret.clone(), c.secret.clone()])
                                .ok_or(SessionError::NoKeys)?,
                        )
                    }
                    None => Arc::new(
                        Keyring::new(std::slice::from_ref(&secret)).ok_or(SessionError::NoKeys)?,
                    ),
                };
                Shared {
                    ring,
                    secret,
                    checked: Instant::now(),
                }
            }
            // Redis is down: keep signing with what we have rather than fail the request,
            // and try again after the next interval.
            Err(e) => match cached {
                Some(c) => Shared {
                    checked: Instant::now(),
                    ..c
                },
                None => return Err(e.into()),
            },
        };
        let ring = fresh.ring.clone();
        *lock.write().unwrap_or_else(|p| p.into_inner()) = Some(fresh);
        Ok(ring)
    }
}

fn random_secret() -> Result<SecretString, SessionError> {
    Ok(SecretString::from(
        URL_SAFE_NO_PAD.encode(os_random::<48>()?),
    ))
}
