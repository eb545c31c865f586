//! What the benchmarks measure of the binaries they run as processes: where the release
//! build put them, and their memory as the kernel reports it.

use std::path::PathBuf;

/// A release binary next to the running bench (`target/release/<name>`); panics with the
/// build command when it is missing.
pub fn release_binary(name: &str, package: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("bench path");
    // target/release/deps/<bench>-<hash> → target/release/<name>
    let release = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target dir");
    let binary = release.join(name);
    assert!(
        binary.exists(),
        "{} is missing: run `cargo build --release -p {package} --bin {name}` first",
        binary.display()
    );
    binary
}

/// A `/proc/<pid>/status` field in KiB, e.g. `VmRSS:` (now) or `VmHWM:` (peak).
pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kib| kib.parse().ok())
}

/// Peak resident memory of `pid` in KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    proc_status_kib(pid, "VmHWM:")
}

/// The glibc setting the image ships (`ENV` in the Dockerfile): a fixed mmap threshold, so
/// freed large buffers go back to the kernel instead of raising the heap's high-water mark.
pub const IMAGE_MALLOC_ENV: (&str, &str) = ("MALLOC_MMAP_THRESHOLD_", "131072");

/// A binary under measurement, killed when dropped.
#[derive(Debug)]
pub struct Process(pub std::process::Child);

impl Process {
    /// Starts `binary` with `args` as the image would run it (its malloc setting), talking to
    /// the API server through `kubeconfig`; its stdout is discarded, warnings go to stderr.
    pub fn spawn(binary: &std::path::Path, args: &[String], kubeconfig: &std::path::Path) -> Self {
        Self(
            std::process::Command::new(binary)
                .args(args)
                .env("KUBECONFIG", kubeconfig)
                .env(IMAGE_MALLOC_ENV.0, IMAGE_MALLOC_ENV.1)
                .env("RUST_LOG", "warn")
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display())),
        )
    }

    /// Its resident memory now, KiB.
    pub fn rss_kib(&self) -> u64 {
        proc_status_kib(self.0.id(), "VmRSS:").unwrap_or(0)
    }

    /// Its peak resident memory, KiB.
    pub fn peak_kib(&self) -> u64 {
        peak_rss_kib(self.0.id()).unwrap_or(0)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Writes a kubeconfig for `user` of the in-process `server` to `path`.
pub fn write_kubeconfig(
    server: &kube_testserver::TestApiServer,
    user: kube_testserver::UserInfo,
    path: &std::path::Path,
) {
    let yaml = serde_saphyr::to_string(&server.kubeconfig(user)).expect("yaml");
    std::fs::write(path, yaml).expect("kubeconfig");
}

/// A serving certificate for a webhook process on 127.0.0.1, written to `dir` as `tls.crt`
/// and `tls.key`: the webhook's `--tls-cert-file`/`--tls-key-file` arguments, and the CA (PEM)
/// a webhook configuration trusts.
pub fn webhook_certificate(dir: &std::path::Path) -> ([String; 2], String) {
    let certs = hostport_webhook::tls::generate(
        &["localhost".into()],
        &[std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)],
        std::time::Duration::from_secs(3600),
    )
    .expect("certs");
    let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    std::fs::write(&cert, &certs.cert_pem).expect("cert");
    std::fs::write(&key, &certs.key_pem).expect("key");
    (
        [
            format!("--tls-cert-file={}", cert.display()),
            format!("--tls-key-file={}", key.display()),
        ],
        certs.ca_pem,
    )
}

/// A TCP port free on 127.0.0.1 now (for a process told where to listen).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The in-process API server a process bench runs its binaries against (an event log long
/// enough for their watches), and a fresh temporary directory named after `bench` for their
/// kubeconfigs and certificates.
pub async fn bench_server(bench: &str) -> (kube_testserver::TestApiServer, PathBuf) {
    let server = kube_testserver::TestApiServer::start_with(kube_testserver::Options {
        log_capacity: 10_000,
        ..crate::test_server_options()
    })
    .await
    .expect("server");
    (server, bench_dir(bench))
}

/// A fresh temporary directory named after `bench` and this process, for a bench's
/// kubeconfigs and certificates.
pub fn bench_dir(bench: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hostport-{bench}-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// The ServiceAccounts of the three binaries, as `config/rbac` names them.
pub const ACCOUNTS: [&str; 3] = [
    "hostport-controller",
    "hostport-webhook",
    "hostport-publisher",
];

/// A kubeconfig in `dir` for each ServiceAccount of `hostport-system` in `accounts`.
pub fn service_account_kubeconfigs<const N: usize>(
    server: &kube_testserver::TestApiServer,
    dir: &std::path::Path,
    accounts: [&str; N],
) -> [PathBuf; N] {
    accounts.map(|account| {
        let path = dir.join(format!("{account}.kubeconfig"));
        write_kubeconfig(
            server,
            kube_testserver::UserInfo::service_account("hostport-system", account),
            &path,
        );
        path
    })
}

/// The release publisher in edge mode, dry-run (it computes every forward, applies none).
pub fn edge_publisher(kubeconfig: &std::path::Path) -> Process {
    Process::spawn(
        &release_binary("hostport-publisher", "publisher"),
        &[
            "--mode=edge".into(),
            "--backend=nft".into(),
            "--dry-run".into(),
            "--metrics-address=127.0.0.1:0".into(),
        ],
        kubeconfig,
    )
}

/// A bench setting from the environment variable `name`, else `default`.
pub fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(default)
}

/// A multi-threaded runtime for a bench's `main`, with the TLS provider installed.
pub fn bench_runtime() -> tokio::runtime::Runtime {
    let _ = rustls::crypto::ring::default_provider().install_default();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// The release controller (no leader election, any metrics port) with `extra` flags.
pub fn controller(kubeconfig: &std::path::Path, extra: &[&str]) -> Process {
    let mut args = vec![
        "--leader-election=false".to_owned(),
        "--metrics-address=127.0.0.1:0".to_owned(),
    ];
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    Process::spawn(
        &release_binary("hostport-controller", "controller"),
        &args,
        kubeconfig,
    )
}

/// The release webhook serving admission on `listen_port` and health on `metrics_port`
/// (0: any) with the `--tls-*` flags of [`webhook_certificate`].
pub fn webhook(
    kubeconfig: &std::path::Path,
    tls: &[String; 2],
    listen_port: u16,
    metrics_port: u16,
) -> Process {
    Process::spawn(
        &release_binary("hostport-webhook", "webhook"),
        &[
            format!("--listen=127.0.0.1:{listen_port}"),
            format!("--metrics-address=127.0.0.1:{metrics_port}"),
            tls[0].clone(),
            tls[1].clone(),
        ],
        kubeconfig,
    )
}

/// Runs `make(i)` for every `i` in `0..count` on `writers` concurrent tasks.
pub async fn in_parallel<F, Fut>(count: usize, writers: usize, make: F)
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let make = make.clone();
            tokio::spawn(async move {
                for i in (w..count).step_by(writers) {
                    make(i).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("writer");
    }
}

/// A claim of `class` as the claim webhook leaves it (with the finalizer), for benches that
/// create claims without the webhook registered.
pub fn claim_with_finalizer(name: &str, class: &str) -> hostport_api::HostPortClaim {
    let mut claim =
        hostport_api::HostPortClaim::new(name, hostport_api::HostPortClaimSpec::of_class(class));
    claim.metadata.finalizers = Some(vec![hostport_api::FINALIZER.into()]);
    claim
}
