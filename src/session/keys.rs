//! Where the signing keys come from: `SESSION_SECRET`, or a secret every instance shares.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use secrecy::SecretString;
use tokio::sync::OnceCell;

use super::SessionError;
use super::cookie::Keyring;
use super::id::os_random;
use super::store::{SessionStore, StoreKind};

/// The signing keys, known at start-up or fetched once from the shared store.
#[derive(Debug)]
pub struct Keys(Source);

#[derive(Debug)]
enum Source {
    Ready(Arc<Keyring>),
    /// Fetched on first use, so that a Redis that is down at boot delays only sessions.
    Shared(OnceCell<Arc<Keyring>>),
}

impl Keys {
    /// Keys for a store: the configured secrets, or a generated one (with a WARN).
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
                Ok(Self(Source::Shared(OnceCell::new())))
            }
        }
    }

    /// The keyring, fetching the shared secret on first use.
    pub async fn get(&self, store: &dyn SessionStore) -> Result<&Keyring, SessionError> {
        match &self.0 {
            Source::Ready(ring) => Ok(ring),
            Source::Shared(cell) => {
                let ring = cell
                    .get_or_try_init(|| async {
                        let secret = store.shared_secret(random_secret()?).await?;
                        Keyring::new(&[secret])
                            .map(Arc::new)
                            .ok_or(SessionError::NoKeys)
                    })
                    .await?;
                Ok(ring)
            }
        }
    }
}

fn random_secret() -> Result<SecretString, SessionError> {
    Ok(SecretString::from(
        URL_SAFE_NO_PAD.encode(os_random::<48>()?),
    ))
}
