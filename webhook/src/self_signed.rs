//! `--self-signed`: the webhook makes its own CA and serving certificate, keeps them in a
//! Secret so every replica serves the same one, writes the CA into the webhook
//! configurations' `caBundle`, and rotates well before expiry.
//!
//! Rotation with several replicas never leaves one serving a certificate the `caBundle`
//! does not trust: the replica that rotates keeps the previous CA in the Secret
//! (`previous-ca.crt`, trusted until [`PREVIOUS_CA_UNTIL_ANNOTATION`]); every replica, on
//! seeing the Secret change (it watches it), first publishes the whole trust bundle (new and
//! previous CA) into `caBundle`, then serves the new certificate. The previous CA leaves the
//! bundle once its overlap has passed, by which time every replica serves the new one.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, ObjectMeta, PostParams};
use kube::{Client, ResourceExt};

use crate::tls::{GeneratedCerts, SwappableCert, certified_key, generate};

/// How long a generated certificate is valid.
pub const VALIDITY: Duration = Duration::from_secs(365 * 86_400);
/// Rotate when less than this remains.
pub const ROTATE_BEFORE: Duration = Duration::from_secs(60 * 86_400);
/// Annotation on the Secret holding the certificate's expiry (RFC 3339).
pub const NOT_AFTER_ANNOTATION: &str = "hostport.rmb938.com/not-after";
/// Annotation on the Secret: until when (RFC 3339) the previous CA stays in the trust bundle.
pub const PREVIOUS_CA_UNTIL_ANNOTATION: &str = "hostport.rmb938.com/previous-ca-until";
/// Secret key of the previous CA after a rotation.
const PREVIOUS_CA_KEY: &str = "previous-ca.crt";
/// How long the previous CA stays trusted after a rotation: far longer than replicas take to
/// see the new Secret through their watch, and than the hourly fallback check.
pub const PREVIOUS_CA_OVERLAP: Duration = Duration::from_secs(2 * 3600);

/// What the Secret holds, as a replica uses it.
#[derive(Clone, Debug)]
pub struct Published {
    /// The certificate to serve.
    pub certs: GeneratedCerts,
    /// The CAs to trust, PEM: the current CA, plus the previous one during its overlap.
    pub bundle: String,
}

fn signed(duration: Duration) -> SignedDuration {
    SignedDuration::try_from(duration).unwrap_or_default()
}

/// Where the certificate lives and who must trust it.
#[derive(Clone, Debug)]
pub struct SelfSigned {
    /// Namespace of the Secret.
    pub namespace: String,
    /// Name of the Secret.
    pub secret: String,
    /// DNS names the certificate is for (the Service's names).
    pub dns_names: Vec<String>,
    /// MutatingWebhookConfigurations whose `caBundle` to set.
    pub mutating: Vec<String>,
    /// ValidatingWebhookConfigurations whose `caBundle` to set.
    pub validating: Vec<String>,
}

/// Why self-signed TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SelfSignedError {
    /// An API call failed.
    #[error("{action}: {source}")]
    Api {
        /// What was being done.
        action: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },
    /// The Secret lacks a key or annotation this project writes.
    #[error(
        "{secret} is incomplete (ca.crt, tls.crt, tls.key and the not-after annotation are needed): delete it and the webhook makes a new one"
    )]
    Incomplete {
        /// The Secret.
        secret: String,
    },
    /// Generating or loading the certificate failed.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

fn api_error(action: impl Into<String>) -> impl FnOnce(kube::Error) -> SelfSignedError {
    let action = action.into();
    move |source| SelfSignedError::Api { action, source }
}

/// What a Secret holds: the certificate, its expiry, and the previous CA with the end of its
/// overlap (if a rotation kept one).
struct Stored {
    certs: GeneratedCerts,
    not_after: Timestamp,
    previous: Option<(String, Timestamp)>,
}

impl Stored {
    /// The trust bundle at `now`: the current CA, and the previous one while it overlaps.
    fn published(self, now: Timestamp) -> Published {
        let mut bundle = self.certs.ca_pem.clone();
        if let Some((previous, until)) = self.previous
            && until > now
        {
            bundle.push_str(&previous);
        }
        Published {
            certs: self.certs,
            bundle,
        }
    }
}

fn from_secret(secret: &Secret) -> Option<Stored> {
    let data = secret.data.as_ref()?;
    let text = |key: &str| String::from_utf8(data.get(key)?.0.clone()).ok();
    let annotation =
        |key: &str| -> Option<Timestamp> { secret.annotations().get(key)?.parse().ok() };
    let previous = text(PREVIOUS_CA_KEY).zip(annotation(PREVIOUS_CA_UNTIL_ANNOTATION));
    Some(Stored {
        certs: GeneratedCerts {
            ca_pem: text("ca.crt")?,
            cert_pem: text("tls.crt")?,
            key_pem: text("tls.key")?,
        },
        not_after: annotation(NOT_AFTER_ANNOTATION)?,
        previous,
    })
}

fn secret_for(config: &SelfSigned, stored: &Stored) -> Secret {
    let pem = |text: &str| ByteString(text.as_bytes().to_vec());
    let mut data = BTreeMap::from([
        ("ca.crt".to_owned(), pem(&stored.certs.ca_pem)),
        ("tls.crt".to_owned(), pem(&stored.certs.cert_pem)),
        ("tls.key".to_owned(), pem(&stored.certs.key_pem)),
    ]);
    let mut annotations = BTreeMap::from([(
        NOT_AFTER_ANNOTATION.to_owned(),
        stored.not_after.to_string(),
    )]);
    if let Some((previous, until)) = &stored.previous {
        data.insert(PREVIOUS_CA_KEY.to_owned(), pem(previous));
        annotations.insert(PREVIOUS_CA_UNTIL_ANNOTATION.to_owned(), until.to_string());
    }
    Secret {
        metadata: ObjectMeta {
            name: Some(config.secret.clone()),
            namespace: Some(config.namespace.clone()),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(data),
        ..Secret::default()
    }
}

/// The certificate in the Secret, made (or remade, when it expires within `ROTATE_BEFORE`,
/// keeping the old CA trusted for [`PREVIOUS_CA_OVERLAP`]) if needed. Replicas racing to
/// make it agree on the first one written.
pub async fn ensure(client: &Client, config: &SelfSigned) -> Result<Published, SelfSignedError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &config.namespace);
    let name = format!("Secret {}/{}", config.namespace, config.secret);
    for _ in 0..3 {
        let existing = secrets
            .get_opt(&config.secret)
            .await
            .map_err(api_error(format!("reading {name}")))?;
        let now = Timestamp::now();
        let stored = existing.as_ref().and_then(from_secret);
        let previous_ca = match stored {
            Some(stored) if stored.not_after - signed(ROTATE_BEFORE) > now => {
                return Ok(stored.published(now));
            }
            Some(stored) => Some(stored.certs.ca_pem),
            None => None,
        };
        let fresh = Stored {
            certs: generate(&config.dns_names, &[], VALIDITY)?,
            not_after: now + signed(VALIDITY),
            previous: previous_ca.map(|ca| (ca, now + signed(PREVIOUS_CA_OVERLAP))),
        };
        let mut secret = secret_for(config, &fresh);
        let written = match existing {
            None => secrets.create(&PostParams::default(), &secret).await,
            Some(old) => {
                secret.metadata.resource_version = old.resource_version();
                secrets
                    .replace(&config.secret, &PostParams::default(), &secret)
                    .await
            }
        };
        match written {
            Ok(_) => {
                tracing::info!(secret = %name, not_after = %fresh.not_after, "generated a new self-signed webhook certificate");
                return Ok(fresh.published(now));
            }
            // Another replica wrote it first: use theirs.
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            Err(source) => {
                return Err(SelfSignedError::Api {
                    action: format!("writing {name}"),
                    source,
                });
            }
        }
    }
    Err(SelfSignedError::Api {
        action: format!("writing {name}"),
        source: kube::Error::Api(Box::new(kube::core::Status::failure(
            "kept conflicting with other replicas",
            "Conflict",
        ))),
    })
}

/// Webhook configurations whose webhooks' `clientConfig` can be reached.
trait WebhookConfiguration:
    kube::Resource<DynamicType = ()>
    + Clone
    + serde::de::DeserializeOwned
    + serde::Serialize
    + std::fmt::Debug
{
    fn client_configs(&mut self) -> Vec<&mut WebhookClientConfig>;
}

impl WebhookConfiguration for MutatingWebhookConfiguration {
    fn client_configs(&mut self) -> Vec<&mut WebhookClientConfig> {
        self.webhooks
            .iter_mut()
            .flatten()
            .map(|w| &mut w.client_config)
            .collect()
    }
}

impl WebhookConfiguration for ValidatingWebhookConfiguration {
    fn client_configs(&mut self) -> Vec<&mut WebhookClientConfig> {
        self.webhooks
            .iter_mut()
            .flatten()
            .map(|w| &mut w.client_config)
            .collect()
    }
}

/// The trust bundle the Secret holds now (read from the API server).
async fn current_bundle(client: &Client, config: &SelfSigned) -> Result<String, SelfSignedError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &config.namespace);
    let name = format!("Secret {}/{}", config.namespace, config.secret);
    let secret = secrets
        .get(&config.secret)
        .await
        .map_err(api_error(format!("reading {name}")))?;
    let stored =
        from_secret(&secret).ok_or_else(|| SelfSignedError::Incomplete { secret: name })?;
    Ok(stored.published(Timestamp::now()).bundle)
}

/// Sets `caBundle` on every webhook of configuration `name` to the Secret's trust bundle.
///
/// The bundle is computed from a read of the Secret made *after* the read of the
/// configuration, and the write is guarded by the configuration's resourceVersion: a replica
/// that read an older Secret can therefore never overwrite the bundle another replica
/// published for a newer one (which would leave that replica's certificate untrusted).
async fn set_ca_bundle<K: WebhookConfiguration>(
    client: &Client,
    name: &str,
    config: &SelfSigned,
) -> Result<(), SelfSignedError> {
    let api: Api<K> = Api::all(client.clone());
    let kind = K::kind(&());
    let mut last_conflict = None;
    for _ in 0..5 {
        let mut object = api
            .get(name)
            .await
            .map_err(api_error(format!("reading {kind} {name}")))?;
        let bundle = ByteString(current_bundle(client, config).await?.into_bytes());
        let configs = object.client_configs();
        if configs
            .iter()
            .all(|c| c.ca_bundle.as_ref() == Some(&bundle))
        {
            return Ok(());
        }
        configs
            .into_iter()
            .for_each(|c| c.ca_bundle = Some(bundle.clone()));
        match api.replace(name, &PostParams::default(), &object).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(status)) if status.code == 409 => {
                last_conflict = Some(kube::Error::Api(status));
            }
            Err(source) => {
                return Err(SelfSignedError::Api {
                    action: format!("writing the caBundle of {kind} {name}"),
                    source,
                });
            }
        }
    }
    // Unwritten: the caller must not serve a certificate the bundle may not trust yet.
    Err(SelfSignedError::Api {
        action: format!("writing the caBundle of {kind} {name} (kept conflicting)"),
        source: last_conflict.unwrap_or_else(|| {
            kube::Error::Api(Box::new(kube::core::Status::failure(
                "conflict", "Conflict",
            )))
        }),
    })
}

/// Publishes the Secret's trust bundle as `caBundle` on every webhook of the named
/// configurations.
pub async fn publish_trust(client: &Client, config: &SelfSigned) -> Result<(), SelfSignedError> {
    for name in &config.mutating {
        set_ca_bundle::<MutatingWebhookConfiguration>(client, name, config).await?;
    }
    for name in &config.validating {
        set_ca_bundle::<ValidatingWebhookConfiguration>(client, name, config).await?;
    }
    Ok(())
}

/// Brings this replica in line with the Secret: publishes its trust bundle, then serves its
/// certificate (trust first, so clients accept the new certificate when it arrives).
async fn follow_secret(
    client: &Client,
    config: &SelfSigned,
    certs: &SwappableCert,
    served: &mut GeneratedCerts,
) -> Result<(), SelfSignedError> {
    let published = ensure(client, config).await?;
    publish_trust(client, config).await?;
    if published.certs.cert_pem != served.cert_pem {
        certs.swap(certified_key(
            published.certs.cert_pem.as_bytes(),
            published.certs.key_pem.as_bytes(),
        )?);
        tracing::info!("serving the rotated self-signed webhook certificate");
        *served = published.certs;
    }
    Ok(())
}

/// Keeps the certificate current: follows the Secret whenever its watch reports a change
/// (another replica rotated), and re-checks it every `every` (time alone brings a rotation,
/// and ends a previous CA's overlap).
pub async fn keep_rotated(
    client: Client,
    config: SelfSigned,
    certs: Arc<SwappableCert>,
    mut served: GeneratedCerts,
    every: Duration,
) {
    let changed = Arc::new(tokio::sync::Notify::new());
    let watch = tokio::spawn(watch_secret(
        client.clone(),
        config.clone(),
        changed.clone(),
    ));
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = changed.notified() => {}
        }
        if let Err(error) = follow_secret(&client, &config, &certs, &mut served).await {
            tracing::warn!(%error, "checking the self-signed certificate failed; retrying later");
        }
        if watch.is_finished() {
            tracing::warn!(
                "the watch of the certificate Secret ended; checking every {every:?} only"
            );
        }
    }
}

/// Notifies `changed` on every change of the certificate Secret.
async fn watch_secret(client: Client, config: SelfSigned, changed: Arc<tokio::sync::Notify>) {
    use futures::StreamExt;
    use kube::runtime::{WatchStreamExt, watcher};
    let secrets: Api<Secret> = Api::namespaced(client, &config.namespace);
    let selector = format!("metadata.name={}", config.secret);
    let stream = watcher(secrets, watcher::Config::default().fields(&selector)).default_backoff();
    let mut stream = std::pin::pin!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_) | watcher::Event::InitDone) => {
                changed.notify_one();
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(%error, "watching the certificate Secret failed; retrying")
            }
        }
    }
}
