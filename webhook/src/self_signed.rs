//! `--self-signed`: the webhook makes its own CA and serving certificate, keeps them in a
//! Secret so every replica serves the same one, writes the CA into the webhook
//! configurations' `caBundle`, and rotates well before expiry.

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
    /// Generating or loading the certificate failed.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

fn api_error(action: impl Into<String>) -> impl FnOnce(kube::Error) -> SelfSignedError {
    let action = action.into();
    move |source| SelfSignedError::Api { action, source }
}

fn from_secret(secret: &Secret) -> Option<(GeneratedCerts, Timestamp)> {
    let data = secret.data.as_ref()?;
    let text = |key: &str| String::from_utf8(data.get(key)?.0.clone()).ok();
    let not_after: Timestamp = secret
        .annotations()
        .get(NOT_AFTER_ANNOTATION)?
        .parse()
        .ok()?;
    Some((
        GeneratedCerts {
            ca_pem: text("ca.crt")?,
            cert_pem: text("tls.crt")?,
            key_pem: text("tls.key")?,
        },
        not_after,
    ))
}

fn secret_for(config: &SelfSigned, certs: &GeneratedCerts, not_after: Timestamp) -> Secret {
    let data = BTreeMap::from([
        (
            "ca.crt".to_owned(),
            ByteString(certs.ca_pem.clone().into_bytes()),
        ),
        (
            "tls.crt".to_owned(),
            ByteString(certs.cert_pem.clone().into_bytes()),
        ),
        (
            "tls.key".to_owned(),
            ByteString(certs.key_pem.clone().into_bytes()),
        ),
    ]);
    Secret {
        metadata: ObjectMeta {
            name: Some(config.secret.clone()),
            namespace: Some(config.namespace.clone()),
            annotations: Some(BTreeMap::from([(
                NOT_AFTER_ANNOTATION.to_owned(),
                not_after.to_string(),
            )])),
            ..ObjectMeta::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(data),
        ..Secret::default()
    }
}

/// The certificate in the Secret, made (or remade, when it expires within `ROTATE_BEFORE`)
/// if needed. Replicas racing to make it agree on the first one written.
pub async fn ensure(
    client: &Client,
    config: &SelfSigned,
) -> Result<GeneratedCerts, SelfSignedError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &config.namespace);
    let name = format!("Secret {}/{}", config.namespace, config.secret);
    for _ in 0..3 {
        let existing = secrets
            .get_opt(&config.secret)
            .await
            .map_err(api_error(format!("reading {name}")))?;
        let fresh_enough = |not_after: &Timestamp| {
            *not_after - SignedDuration::try_from(ROTATE_BEFORE).unwrap_or_default()
                > Timestamp::now()
        };
        if let Some((certs, not_after)) = existing.as_ref().and_then(from_secret)
            && fresh_enough(&not_after)
        {
            return Ok(certs);
        }
        let certs = generate(&config.dns_names, &[], VALIDITY)?;
        let not_after = Timestamp::now() + SignedDuration::try_from(VALIDITY).unwrap_or_default();
        let mut secret = secret_for(config, &certs, not_after);
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
                tracing::info!(secret = %name, %not_after, "generated a new self-signed webhook certificate");
                return Ok(certs);
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

/// Sets `caBundle` on every webhook of configuration `name` (no write when already set).
async fn set_ca_bundle<K: WebhookConfiguration>(
    client: &Client,
    name: &str,
    bundle: &ByteString,
) -> Result<(), SelfSignedError> {
    let api: Api<K> = Api::all(client.clone());
    let kind = K::kind(&());
    for _ in 0..5 {
        let mut object = api
            .get(name)
            .await
            .map_err(api_error(format!("reading {kind} {name}")))?;
        let configs = object.client_configs();
        if configs.iter().all(|c| c.ca_bundle.as_ref() == Some(bundle)) {
            return Ok(());
        }
        configs
            .into_iter()
            .for_each(|c| c.ca_bundle = Some(bundle.clone()));
        match api.replace(name, &PostParams::default(), &object).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            Err(source) => {
                return Err(SelfSignedError::Api {
                    action: format!("writing the caBundle of {kind} {name}"),
                    source,
                });
            }
        }
    }
    Ok(())
}

/// Sets `caBundle` on every webhook of the named configurations.
pub async fn patch_ca_bundles(
    client: &Client,
    config: &SelfSigned,
    ca_pem: &str,
) -> Result<(), SelfSignedError> {
    let bundle = ByteString(ca_pem.as_bytes().to_vec());
    for name in &config.mutating {
        set_ca_bundle::<MutatingWebhookConfiguration>(client, name, &bundle).await?;
    }
    for name in &config.validating {
        set_ca_bundle::<ValidatingWebhookConfiguration>(client, name, &bundle).await?;
    }
    Ok(())
}

/// Keeps the certificate current: re-checks the Secret every `every` and swaps in a new
/// certificate (and CA bundle) once one was made.
pub async fn keep_rotated(
    client: Client,
    config: SelfSigned,
    certs: Arc<SwappableCert>,
    mut served: GeneratedCerts,
    every: Duration,
) {
    loop {
        tokio::time::sleep(every).await;
        let result = async {
            let current = ensure(&client, &config).await?;
            if current.cert_pem != served.cert_pem {
                // Trust first, then serve: clients must accept the new certificate when it arrives.
                patch_ca_bundles(
                    &client,
                    &config,
                    &format!("{}{}", current.ca_pem, served.ca_pem),
                )
                .await?;
                certs.swap(certified_key(
                    current.cert_pem.as_bytes(),
                    current.key_pem.as_bytes(),
                )?);
                patch_ca_bundles(&client, &config, &current.ca_pem).await?;
                tracing::info!("rotated the self-signed webhook certificate");
                served = current;
            }
            Ok::<_, SelfSignedError>(())
        }
        .await;
        if let Err(error) = result {
            tracing::warn!(%error, "checking the self-signed certificate failed; retrying later");
        }
    }
}
