//! What a scenario runs against: the in-process API server (default) or a real cluster
//! (`E2E_KUBECONFIG`), a fresh labelled namespace, and the controller started for it,
//! in-process (a task that can be killed at any point) or as a process.

use std::future::Future;
use std::time::Duration;

use hostport_api::{
    HostPort, HostPortClaim, HostPortClaimSpec, HostPortClass, HostPortClassSpec, NAMESPACE_LABEL,
};
use hostport_controller::RunOptions;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

pub use crate::controllers::{ControllerHandle, ControllerProcess, spawn_controller};
use crate::local::LocalWebhook;
use kube_testserver::{TestApiServer, UserInfo};

/// Namespace of the controller's service account in scenarios: the install's.
pub const SYSTEM_NAMESPACE: &str = hostport_api::identity::DEFAULT_NAMESPACE;

/// The controller's identity.
pub fn controller_user() -> UserInfo {
    UserInfo::service_account(
        SYSTEM_NAMESPACE,
        hostport_api::identity::CONTROLLER_SERVICE_ACCOUNT,
    )
}

/// The webhook's identity.
pub fn webhook_user() -> UserInfo {
    UserInfo::service_account(
        SYSTEM_NAMESPACE,
        hostport_api::identity::WEBHOOK_SERVICE_ACCOUNT,
    )
}

/// Creates namespace `name` with `labels`; one that exists already is fine.
pub async fn ensure_namespace(
    client: &Client,
    name: &str,
    labels: serde_json::Value,
) -> Result<(), kube::Error> {
    let object: Namespace =
        serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}}))
            .map_err(kube::Error::SerdeError)?;
    match Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &object)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(error) => Err(error),
    }
}

/// Label that ties a namespace to its scenario (webhooks of one scenario see only its pods).
pub(crate) const SCENARIO_LABEL: &str = "hostport-e2e/scenario";

/// A scenario's environment.
pub struct Env {
    /// Client as a cluster administrator (what a person would use).
    pub client: Client,
    /// A fresh namespace labelled `hostport.rmb938.com: "true"`.
    pub namespace: String,
    /// Prefix for cluster-scoped names (classes), unique per scenario.
    pub prefix: String,
    server: Option<TestApiServer>,
    /// The real cluster's client configuration (`E2E_KUBECONFIG`).
    cluster_config: Option<kube::Config>,
    /// On a real cluster, scenarios of one process run one at a time: each runs a controller
    /// that watches the whole cluster, and parallel ones would race for each other's claims
    /// (safe, and what `robustness` tests on purpose, but it makes who wrote which Event, or
    /// when a Lease is held, a matter of timing).
    _one_at_a_time: Option<tokio::sync::OwnedMutexGuard<()>>,
}

static CLUSTER_TURN: std::sync::LazyLock<std::sync::Arc<tokio::sync::Mutex<()>>> =
    std::sync::LazyLock::new(Default::default);

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Env")
            .field("namespace", &self.namespace)
            .field("in_process", &self.server.is_some())
            .finish()
    }
}

static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl Env {
    /// [`Env::new`] for a scenario that needs the in-process API server (it counts its
    /// requests or runs binaries against it): `None`, said why, on a real cluster, before
    /// anything is made there.
    pub async fn in_process(name: &str) -> Option<Self> {
        if std::env::var_os("E2E_KUBECONFIG").is_some() {
            eprintln!("skipped on a real cluster: {name} needs the in-process API server");
            return None;
        }
        Some(Self::new(name).await)
    }

    /// An environment for scenario `name`: a real cluster when `E2E_KUBECONFIG` is set, else
    /// a fresh in-process API server with the CRDs installed.
    pub async fn new(name: &str) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let unique = format!("{name}-{}-{n}", std::process::id());
        let mut cluster_config = None;
        let mut turn = None;
        let (client, server) = match std::env::var_os("E2E_KUBECONFIG") {
            Some(path) => {
                turn = Some(CLUSTER_TURN.clone().lock_owned().await);
                let kubeconfig = kube::config::Kubeconfig::read_from(&path)
                    .unwrap_or_else(|e| panic!("E2E_KUBECONFIG {path:?}: {e}"));
                let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                    .await
                    .unwrap_or_else(|e| panic!("E2E_KUBECONFIG {path:?}: {e}"));
                cluster_config = Some(config.clone());
                (Client::try_from(config).expect("client"), None)
            }
            None => {
                let server = crate::start_test_server().await;
                (server.client(), Some(server))
            }
        };
        let env = Self {
            client,
            namespace: unique.clone(),
            prefix: unique,
            server,
            cluster_config,
            _one_at_a_time: turn,
        };
        if env.server.is_none() {
            crate::cluster::prepare(&env.client, std::env::var_os("E2E_RBAC").is_some()).await;
            crate::cluster::sweep_earlier_runs(&env.client).await;
        }
        let labels = json!({NAMESPACE_LABEL: "true", SCENARIO_LABEL: env.prefix});
        for (namespace, labels) in [
            (env.namespace.as_str(), labels),
            (SYSTEM_NAMESPACE, json!({})),
        ] {
            ensure_namespace(&env.client, namespace, labels)
                .await
                .unwrap_or_else(|e| panic!("creating namespace {namespace}: {e}"));
        }
        env
    }

    /// A namespace of this scenario *without* the `hostport.rmb938.com` label, so the pod
    /// webhook leaves its pods alone (what a tenant or an admin does outside the allocator);
    /// deleted with the scenario.
    pub async fn plain_namespace(&self, suffix: &str) -> String {
        let name = format!("{}-{suffix}", self.namespace);
        ensure_namespace(&self.client, &name, json!({SCENARIO_LABEL: self.prefix}))
            .await
            .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
        name
    }

    /// The in-process API server (fault injection, counters); `None` on a real cluster.
    pub fn server(&self) -> Option<&TestApiServer> {
        self.server.as_ref()
    }

    /// A client authenticated as `user` (on a real cluster: the admin client).
    ///
    /// On a real cluster with `E2E_RBAC=1` the client impersonates the user (config/rbac is
    /// applied first), so a missing permission fails the scenario; otherwise it is the
    /// kubeconfig's own user.
    pub fn client_as(&self, user: UserInfo) -> Client {
        match (&self.server, &self.cluster_config) {
            (Some(server), _) => server.client_as(user),
            (None, Some(config)) if std::env::var_os("E2E_RBAC").is_some() => {
                let mut config = config.clone();
                config.auth_info.impersonate = Some(user.username);
                config.auth_info.impersonate_groups = Some(user.groups);
                Client::try_from(config).expect("impersonating client")
            }
            _ => self.client.clone(),
        }
    }

    /// A tenant of this scenario's namespace: the ServiceAccount `tenant` there, allowed to
    /// create, update, patch and delete claims and pods in it and nothing more (on a real
    /// cluster with `E2E_RBAC=1` a Role and RoleBinding say so; impersonated). `None` on a
    /// real cluster without `E2E_RBAC`, where every client is the kubeconfig's admin.
    pub async fn tenant(&self) -> Option<Client> {
        let user = UserInfo::service_account(&self.namespace, "tenant");
        if self.server.is_some() {
            return Some(self.client_as(user));
        }
        // Without impersonation every client is the admin: no tenant to play.
        std::env::var_os("E2E_RBAC")?;
        let all_verbs = [
            "get", "list", "watch", "create", "update", "patch", "delete",
        ];
        self.grant_tenant(
            "tenant",
            json!([
                {"apiGroups": [hostport_api::GROUP], "resources": ["hostportclaims"], "verbs": all_verbs},
                {"apiGroups": [""], "resources": ["pods"], "verbs": all_verbs},
            ]),
        )
        .await;
        Some(self.client_as(user))
    }

    /// Grants the scenario's tenant `rules` in its namespace (a Role and RoleBinding named
    /// `name`). Only a real cluster authorizes; the in-process server allows everything.
    pub async fn grant_tenant(&self, name: &str, rules: serde_json::Value) {
        use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
        let apply = kube::api::PatchParams::apply("hostport-e2e").force();
        let role = json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": name, "namespace": self.namespace},
            "rules": rules,
        });
        let binding = json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": name, "namespace": self.namespace},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": "tenant", "namespace": self.namespace}],
        });
        Api::<Role>::namespaced(self.client.clone(), &self.namespace)
            .patch(name, &apply, &kube::api::Patch::Apply(&role))
            .await
            .unwrap_or_else(|e| panic!("Role {name}: {e}"));
        Api::<RoleBinding>::namespaced(self.client.clone(), &self.namespace)
            .patch(name, &apply, &kube::api::Patch::Apply(&binding))
            .await
            .unwrap_or_else(|e| panic!("RoleBinding {name}: {e}"));
    }

    /// Whether binaries run as their own ServiceAccounts (in-process server, or `E2E_RBAC`).
    pub fn as_service_accounts(&self) -> bool {
        self.server.is_some() || std::env::var_os("E2E_RBAC").is_some()
    }

    /// Starts a controller in-process (without leader election unless `options` says so).
    pub fn start_controller(&self, options: RunOptions) -> ControllerHandle {
        self.start_controller_as(controller_user(), options)
    }

    /// Starts the controller command line `binary` as a process against this environment, as
    /// `user` (a kubeconfig is written for it; on a real cluster it is `E2E_KUBECONFIG`).
    /// Tests pass `env!("CARGO_BIN_EXE_hostport-controller-under-test")`.
    pub fn start_controller_process(
        &self,
        binary: &std::path::Path,
        user: UserInfo,
        args: &[&str],
    ) -> ControllerProcess {
        let kubeconfig = self.kubeconfig_for("controller", user);
        let child = std::process::Command::new(binary)
            .args(args)
            .env("KUBECONFIG", &kubeconfig)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
        ControllerProcess { child }
    }

    /// A kubeconfig file for `user` (named after `who`) of the in-process API server; on a
    /// real cluster `E2E_KUBECONFIG`.
    pub fn kubeconfig_for(&self, who: &str, user: UserInfo) -> std::path::PathBuf {
        match (&self.server, std::env::var_os("E2E_KUBECONFIG")) {
            (Some(server), _) => {
                let path = std::env::temp_dir().join(format!("{}-{who}.kubeconfig", self.prefix));
                crate::measure::write_kubeconfig(server, user, &path);
                path
            }
            (None, Some(path)) => std::path::PathBuf::from(path),
            (None, None) => unreachable!("an environment is in-process or on a cluster"),
        }
    }

    /// `kubectl` as the admin on this environment's API server (in-process or real), in the
    /// scenario's namespace: its output or what it said. It runs off the runtime, which may
    /// be the in-process API server's own.
    pub async fn kubectl(&self, args: &[&str]) -> Result<String, String> {
        let program = std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into());
        let kubeconfig = self.kubeconfig_for("admin", UserInfo::admin());
        let mut command = std::process::Command::new(program);
        command
            .args(["--namespace", &self.namespace])
            .args(args)
            .env("KUBECONFIG", kubeconfig);
        tokio::task::spawn_blocking(move || crate::run_command(&mut command))
            .await
            .map_err(|e| format!("kubectl did not finish: {e}"))?
    }

    /// Starts a controller in-process as `user`.
    pub fn start_controller_as(&self, user: UserInfo, options: RunOptions) -> ControllerHandle {
        spawn_controller(self.client_as(user), options)
    }

    /// Starts the webhook in-process on 127.0.0.1 and registers its configurations (pods
    /// in this scenario's namespace only, so scenarios sharing a real cluster do not meet).
    pub async fn start_webhook(&self) -> LocalWebhook {
        self.start_webhook_with(hostport_webhook::RunOptions::default())
            .await
    }

    /// [`Env::start_webhook`] with `options` (its allocator users are the scenario's).
    pub async fn start_webhook_with(&self, options: hostport_webhook::RunOptions) -> LocalWebhook {
        // Without impersonation, the in-process controller writes as the kubeconfig's user.
        let allocator_users = if self.as_service_accounts() {
            vec![controller_user().username]
        } else {
            vec![controller_user().username, self.admin_username().await]
        };
        let client = self.client_as(webhook_user());
        let options = hostport_webhook::RunOptions {
            allocator_users,
            ..options
        };
        let mut webhook = crate::local::start_webhook(client, options).await;
        let selector =
            json!({"matchLabels": {NAMESPACE_LABEL: "true", SCENARIO_LABEL: self.prefix}});
        let name = self.webhook_configurations();
        crate::local::register_webhooks(&self.client, &name, &webhook, selector)
            .await
            .expect("registering the webhooks");
        if let Some(config) = &self.cluster_config {
            webhook.unregister_on_drop(config.clone(), name);
        }
        webhook
    }

    /// Name of this scenario's webhook configurations.
    pub fn webhook_configurations(&self) -> String {
        format!("hostport-e2e-{}", self.prefix)
    }

    /// The user name the admin client authenticates as on a real cluster.
    async fn admin_username(&self) -> String {
        let review = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"});
        let request = http::Request::post("/apis/authentication.k8s.io/v1/selfsubjectreviews")
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&review).expect("json"))
            .expect("request");
        let answer: serde_json::Value = self
            .client
            .request(request)
            .await
            .expect("SelfSubjectReview");
        answer["status"]["userInfo"]["username"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Claims in the scenario's namespace.
    pub fn claims(&self) -> Api<HostPortClaim> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// HostPorts (cluster-wide).
    pub fn host_ports(&self) -> Api<HostPort> {
        Api::all(self.client.clone())
    }

    /// Classes (cluster-wide).
    pub fn classes(&self) -> Api<HostPortClass> {
        Api::all(self.client.clone())
    }

    /// A class name unique to this scenario.
    pub fn class_name(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    /// Creates a class with `pools` (inclusive `(start, end)`); returns its name.
    ///
    /// Every scenario has port ranges of its own, because on a real cluster the port space
    /// is one for all classes: HostPorts an earlier run left in them (it crashed before its
    /// cleanup) are deleted first, so a second run on the same cluster starts clean.
    pub async fn create_class(&self, name: &str, pools: &[(i32, i32)]) -> String {
        self.try_create_class(name, pools)
            .await
            .unwrap_or_else(|e| panic!("create class {name}: {e}"))
    }

    /// [`Env::create_class`], the API server's refusal returned (a webhook not reachable yet).
    pub async fn try_create_class(
        &self,
        name: &str,
        pools: &[(i32, i32)],
    ) -> Result<String, kube::Error> {
        let name = self.class_name(name);
        if self.server.is_none() {
            self.sweep_host_ports(pools).await;
        }
        let class = HostPortClass::new(&name, HostPortClassSpec::with_pools(pools));
        self.classes()
            .create(&PostParams::default(), &class)
            .await?;
        Ok(name)
    }

    /// Creates a claim of `class` (optionally requesting `port`).
    pub async fn create_claim(&self, name: &str, class: &str, port: Option<i32>) -> HostPortClaim {
        let claim = HostPortClaim::new(
            name,
            HostPortClaimSpec {
                host_port_class_name: class.into(),
                host_port_name: None,
                port,
                port_policy: None,
                count: None,
                alignment: None,
            },
        );
        self.claims()
            .create(&PostParams::default(), &claim)
            .await
            .expect("create claim")
    }

    /// Waits until `check` returns `Some`, polling; panics with `what` after `timeout`.
    pub async fn wait_for<T, F, Fut>(&self, what: &str, timeout: Duration, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(value) = check().await {
                return value;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!("timed out after {timeout:?} waiting for {what}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the claim is Bound; returns it.
    pub async fn bound(&self, name: &str) -> HostPortClaim {
        let claims = self.claims();
        self.wait_for(
            &format!("claim {name} to be Bound"),
            Duration::from_secs(30),
            || {
                let claims = claims.clone();
                async move {
                    claims
                        .get(name)
                        .await
                        .ok()
                        .filter(|c| c.bound_port().is_some())
                }
            },
        )
        .await
    }

    /// Waits until claim `name` has the `Bound` condition reason `reason`; returns it.
    pub async fn claim_with_reason(&self, name: &str, reason: &str) -> HostPortClaim {
        let claims = self.claims();
        self.wait_for(
            &format!("claim {name} with reason {reason}"),
            Duration::from_secs(30),
            || {
                let claims = claims.clone();
                async move {
                    let claim = claims.get_opt(name).await.ok().flatten()?;
                    let found = claim.bound_condition().map(|c| c.reason.clone());
                    (found.as_deref() == Some(reason)).then_some(claim)
                }
            },
        )
        .await
    }

    /// Reasons of the Events in this scenario's namespace.
    pub async fn event_reasons(&self) -> Vec<String> {
        let events: Api<k8s_openapi::api::events::v1::Event> =
            Api::namespaced(self.client.clone(), &self.namespace);
        events
            .list(&ListParams::default())
            .await
            .expect("events")
            .items
            .into_iter()
            .filter_map(|e| e.reason)
            .collect()
    }

    /// Whether an Event with `reason` shows up in the scenario's namespace within 10 s (an
    /// Event is written after the status it announces, by whichever controller wrote it).
    pub async fn has_event(&self, reason: &str) -> bool {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if self.event_reasons().await.iter().any(|r| r == reason) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// HostPorts bound to this scenario's namespace.
    pub async fn namespace_host_ports(&self) -> Vec<HostPort> {
        self.host_ports()
            .list(&ListParams::default())
            .await
            .expect("list HostPorts")
            .items
            .into_iter()
            .filter(|hp| hp.claim_key().is_some_and(|(ns, _)| ns == self.namespace))
            .collect()
    }

    /// Deletes what the scenario created on a real cluster (namespace, classes, HostPorts in
    /// its port ranges) and waits until it is gone; the in-process server just goes away.
    ///
    /// A controller of its own runs meanwhile, whatever became of the scenario's (killed,
    /// crashed, never started): it removes the finalizers, so nothing is left Terminating.
    pub async fn cleanup(self) {
        if self.server.is_some() {
            return;
        }
        let _controller = self.start_controller(RunOptions::default());
        crate::local::unregister_webhooks(&self.client, &self.webhook_configurations()).await;
        // Leader-election Leases a scenario's processes took under its name.
        let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
            Api::namespaced(self.client.clone(), SYSTEM_NAMESPACE);
        if let Ok(list) = leases.list(&ListParams::default()).await {
            for lease in list.items {
                let name = lease.name_any();
                if name == self.prefix || name.starts_with(&format!("{}-", self.prefix)) {
                    let _ = leases.delete(&name, &DeleteParams::default()).await;
                }
            }
        }
        let own_namespaces = self.own_namespaces().await;
        for namespace in &own_namespaces {
            let _ = Api::<Namespace>::all(self.client.clone())
                .delete(namespace, &DeleteParams::default())
                .await;
        }
        let classes = self.own_classes().await;
        let pools: Vec<(i32, i32)> = classes
            .iter()
            .flat_map(|class| class.spec.pools.iter().map(|p| (p.start, p.end)))
            .collect();
        for class in &classes {
            let _ = self
                .classes()
                .delete(&class.name_any(), &DeleteParams::default())
                .await;
        }
        let namespaces = Api::<Namespace>::all(self.client.clone());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            let mut namespace_left = false;
            for namespace in &own_namespaces {
                namespace_left |= matches!(namespaces.get_opt(namespace).await, Ok(Some(_)));
            }
            let classes_left = self.own_classes().await.len();
            if !namespace_left && classes_left == 0 {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                eprintln!(
                    "cleanup of {}: after 120 s the namespace is {}and {classes_left} class(es) remain",
                    self.prefix,
                    if namespace_left {
                        "still there "
                    } else {
                        "gone "
                    }
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        // What the scenario wrote itself (reservations, other writers' HostPorts).
        self.sweep_host_ports(&pools).await;
    }

    /// Deletes every HostPort holding a port in `pools` (finalizers of the Go project's
    /// HostPorts included): on a real cluster only, in this scenario's own ranges only.
    async fn sweep_host_ports(&self, pools: &[(i32, i32)]) {
        let in_pools = |hp: &HostPort| {
            hp.port().is_some_and(|p| {
                pools
                    .iter()
                    .any(|&(start, end)| (start..=end).contains(&i32::from(p)))
            })
        };
        let host_ports = self.host_ports();
        let found = host_ports
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        for host_port in found.iter().filter(|hp| in_pools(hp)) {
            crate::cluster::force_delete(&host_ports, &host_port.name_any()).await;
        }
    }

    /// This scenario's namespaces: its own and those of [`Self::plain_namespace`].
    async fn own_namespaces(&self) -> Vec<String> {
        let selector = format!("{SCENARIO_LABEL}={}", self.prefix);
        let mut found: Vec<String> = Api::<Namespace>::all(self.client.clone())
            .list(&ListParams::default().labels(&selector))
            .await
            .map(|l| l.items.iter().map(ResourceExt::name_any).collect())
            .unwrap_or_default();
        if !found.contains(&self.namespace) {
            found.push(self.namespace.clone());
        }
        found
    }

    /// Classes this scenario created (named with its prefix).
    async fn own_classes(&self) -> Vec<HostPortClass> {
        self.classes()
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default()
            .into_iter()
            .filter(|class| class.name_any().starts_with(&self.prefix))
            .collect()
    }
}
