//! Starting the server, its shared state, and the handles scenarios use to steer it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State as AxumState};
use axum::response::{IntoResponse, Response};
use kube::config::{
    AuthInfo, Cluster, Context, Kubeconfig, NamedAuthInfo, NamedCluster, NamedContext,
};
use serde_json::Value;
use tokio::sync::oneshot;

use crate::admission::WebhookCaller;
use crate::db::Db;
use crate::faults::{RequestMatch, Verb};
use crate::identity::{Tokens, UserInfo};
use crate::request::{Query, Route, parse_path};
use crate::status::ApiError;
use crate::store::DEFAULT_LOG_CAPACITY;
use crate::watch::WatchHub;
use crate::{discovery, verbs};

/// How to start the server.
#[derive(Clone, Debug)]
pub struct Options {
    /// Directory whose `*.yaml` CRDs are created at start (default: none).
    pub crds_dir: Option<PathBuf>,
    /// Writes a watch can resume across before it gets 410 Gone.
    pub log_capacity: usize,
    /// How often watches that asked for bookmarks get one.
    pub bookmark_interval: Duration,
    /// Address to listen on (port 0: any free port).
    pub listen: SocketAddr,
    /// Namespaces created at start (`default` and `kube-system`, like a real cluster).
    pub namespaces: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            crds_dir: None,
            log_capacity: DEFAULT_LOG_CAPACITY,
            bookmark_interval: Duration::from_secs(5),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            namespaces: vec!["default".into(), "kube-system".into()],
        }
    }
}

/// What the HTTP entry point hands out: each verb gets only the part it needs.
#[derive(Debug)]
struct Shared {
    db: Arc<Db>,
    tokens: Tokens,
    webhooks: WebhookCaller,
    watches: WatchHub,
}

impl Shared {
    fn handles(&self) -> verbs::Handles<'_> {
        verbs::Handles {
            db: &self.db,
            webhooks: &self.webhooks,
            watches: &self.watches,
        }
    }
}

/// A running server. Dropping it stops it.
#[derive(Debug)]
pub struct TestApiServer {
    url: String,
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
}

impl Drop for TestApiServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Why the server did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The listen address is unusable.
    #[error("binding {addr}: {source}")]
    Bind {
        /// Address asked for.
        addr: SocketAddr,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A CRD file could not be read or served.
    #[error("loading CRD {path}: {message}")]
    Crd {
        /// File.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

impl TestApiServer {
    /// Starts a server with the default options (no CRDs installed).
    pub async fn start() -> Result<Self, StartError> {
        Self::start_with(Options::default()).await
    }

    /// Starts a server.
    pub async fn start_with(options: Options) -> Result<Self, StartError> {
        let listener = tokio::net::TcpListener::bind(options.listen)
            .await
            .map_err(|source| StartError::Bind {
                addr: options.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: options.listen,
            source,
        })?;
        let shared = Arc::new(Shared {
            db: Arc::new(Db::new(options.log_capacity)),
            tokens: Tokens::default(),
            webhooks: WebhookCaller::default(),
            watches: WatchHub::new(options.bookmark_interval),
        });
        for namespace in &options.namespaces {
            verbs::seed(
                shared.handles(),
                "",
                "namespaces",
                serde_json::json!({
                    "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}
                }),
            )
            .map_err(|e| StartError::Crd {
                path: PathBuf::from(namespace),
                message: e.message,
            })?;
        }
        if let Some(dir) = &options.crds_dir {
            load_crds(shared.handles(), dir)?;
        }
        let app = Router::new().fallback(entry).with_state(shared.clone());
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async {
                let _ = rx.await;
            });
            if let Err(error) = serve.await {
                tracing::error!(%error, "test API server stopped");
            }
        });
        Ok(Self {
            url: format!("http://{addr}"),
            shared,
            shutdown: Some(tx),
        })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A client authenticated as the administrator.
    pub fn client(&self) -> kube::Client {
        self.client_as(UserInfo::admin())
    }

    /// A client authenticated as `user` (webhooks see it in `userInfo`; faults can match it).
    pub fn client_as(&self, user: UserInfo) -> kube::Client {
        kube::Client::try_from(self.config_as(user))
            .unwrap_or_else(|e| panic!("client for the test API server: {e}"))
    }

    /// Client configuration for `user`.
    pub fn config_as(&self, user: UserInfo) -> kube::Config {
        let url = self
            .url
            .parse()
            .unwrap_or_else(|e| panic!("server URL {}: {e}", self.url));
        let mut config = kube::Config::new(url);
        config.default_namespace = "default".into();
        config.auth_info.token = Some(self.shared.tokens.issue(user).into());
        config
    }

    /// A kubeconfig pointing at this server as `user` (for `kubectl` and the binaries).
    pub fn kubeconfig(&self, user: UserInfo) -> Kubeconfig {
        let token = self.shared.tokens.issue(user.clone());
        let name = "kube-testserver".to_owned();
        Kubeconfig {
            clusters: vec![NamedCluster {
                name: name.clone(),
                cluster: Some(Cluster {
                    server: Some(self.url.clone()),
                    ..Cluster::default()
                }),
                other: Default::default(),
            }],
            auth_infos: vec![NamedAuthInfo {
                name: user.username.clone(),
                auth_info: Some(AuthInfo {
                    token: Some(token.into()),
                    ..AuthInfo::default()
                }),
                other: Default::default(),
            }],
            contexts: vec![NamedContext {
                name: name.clone(),
                context: Some(Context {
                    cluster: name.clone(),
                    user: Some(user.username),
                    namespace: Some("default".into()),
                    ..Context::default()
                }),
                other: Default::default(),
            }],
            current_context: Some(name),
            ..Kubeconfig::default()
        }
    }

    /// Requests served so far that match.
    pub fn count(&self, target: &RequestMatch) -> u64 {
        self.shared.db.state().faults.count(target)
    }

    /// Every request counter: `(user, verb, resource) → requests`.
    pub fn counts(&self) -> std::collections::BTreeMap<(String, Verb, String), u64> {
        self.shared.db.state().faults.counts()
    }

    /// Writes (create, update, patch, delete) counted since the last reset whose user and
    /// resource (`hostports/status`) `which` accepts.
    pub fn writes(&self, which: impl Fn(&str, &str) -> bool) -> u64 {
        self.counts()
            .into_iter()
            .filter(|((user, verb, resource), _)| {
                matches!(
                    verb,
                    Verb::Create | Verb::Update | Verb::Patch | Verb::Delete
                ) && which(user, resource)
            })
            .map(|(_, count)| count)
            .sum()
    }

    /// Zeroes the request counters.
    pub fn reset_counts(&self) {
        self.shared.db.state().faults.reset_counts();
    }

    /// Fails the next `count` matching requests with HTTP `code`.
    pub fn fail_next(&self, target: RequestMatch, count: u32, code: u16) {
        self.shared.db.state().faults.fail_next(target, count, code);
    }

    /// Delays every matching request until `clear_faults`.
    pub fn add_latency(&self, target: RequestMatch, delay: Duration) {
        self.shared.db.state().faults.add_latency(target, delay);
    }

    /// Holds back events of matching watches (a stale cache) until `thaw_watches`.
    pub fn freeze_watches(&self, target: RequestMatch) {
        self.shared.db.state().faults.freeze_watches(target);
    }

    /// Delivers what frozen watches held back and lets them run.
    pub fn thaw_watches(&self) {
        self.shared.db.state().faults.thaw_watches();
        self.shared.watches.thawed();
    }

    /// Removes every fault (and thaws watches).
    pub fn clear_faults(&self) {
        self.shared.db.state().faults.clear();
        self.shared.watches.thawed();
    }

    /// Closes every open watch; clients re-watch from their last resourceVersion.
    pub fn close_watches(&self) {
        self.shared.db.state().store.close_watches();
    }

    /// Drops the watch history, so resuming any earlier resourceVersion gets 410 Gone.
    pub fn compact(&self) {
        self.shared.db.state().store.compact();
    }

    /// Number of open watches.
    pub fn watch_count(&self) -> usize {
        self.shared.db.state().store.watch_count()
    }

    /// The stored object, bypassing the API (for assertions).
    pub fn stored(
        &self,
        group: &str,
        plural: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        let state = self.shared.db.state();
        state
            .store
            .get(
                &(group.to_owned(), plural.to_owned()),
                &(namespace.unwrap_or_default().to_owned(), name.to_owned()),
            )
            .map(|v| (*v).clone())
    }
}

fn load_crds(handles: verbs::Handles<'_>, dir: &std::path::Path) -> Result<(), StartError> {
    let crd_error = |path: &std::path::Path, message: String| StartError::Crd {
        path: path.to_owned(),
        message,
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| crd_error(dir, e.to_string()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|e| e == "yaml") && !p.ends_with("kustomization.yaml")
        })
        .collect();
    files.sort();
    for path in files {
        let text = std::fs::read_to_string(&path).map_err(|e| crd_error(&path, e.to_string()))?;
        let crd: Value =
            serde_saphyr::from_str(&text).map_err(|e| crd_error(&path, e.to_string()))?;
        verbs::seed(
            handles,
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            crd,
        )
        .map_err(|e| crd_error(&path, e.message))?;
    }
    Ok(())
}

async fn entry(AxumState(shared): AxumState<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let user = shared.tokens.authenticate(
        parts
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
    );
    let query = Query::parse(parts.uri.query());
    match parse_path(parts.uri.path()) {
        None => ApiError::no_such_resource(parts.uri.path()).into_response(),
        Some(Route::Resource(path)) => {
            let body = match axum::body::to_bytes(body, 3 * 1024 * 1024).await {
                Ok(bytes) => bytes,
                Err(e) => {
                    return ApiError::bad_request(format!("reading request body: {e}"))
                        .into_response();
                }
            };
            verbs::serve(
                shared.handles(),
                parts.method,
                parts.headers,
                path,
                query,
                body,
                user,
            )
            .await
        }
        Some(route) => discovery::serve(&shared.db, &route),
    }
}

/// An empty 200 response.
pub(crate) fn ok_text(text: &'static str) -> Response {
    Response::new(Body::from(text))
}
