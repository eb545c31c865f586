//! The command line: `kubectl hostport <command> [-n NAMESPACE | -A] [-o table|json]`, with
//! kubectl's `--kubeconfig` and `--context`.

use clap::{Parser, Subcommand, ValueEnum};
use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::error::Error;
use crate::snapshot::Snapshot;
use crate::why::Target;

/// kubectl hostport: who holds which host port, what is free, and why a claim or pod waits.
#[derive(Debug, Parser)]
#[command(name = "kubectl hostport", version, about)]
pub struct Args {
    /// The command.
    #[command(subcommand)]
    pub command: Command,
    /// Namespace of the claims and pods (default: the kubeconfig context's, else `default`).
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
    /// `ports`: every namespace (the default for `ports`; `-n` narrows it).
    #[arg(short = 'A', long, global = true)]
    pub all_namespaces: bool,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// Path to the kubeconfig file (default: $KUBECONFIG, else ~/.kube/config).
    #[arg(long, global = true, env = "KUBECONFIG")]
    pub kubeconfig: Option<std::path::PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long, global = true)]
    pub context: Option<String>,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Every held port: class, claim, the pods using it, their nodes, its public address.
    Ports,
    /// The free ranges of a class's pools.
    Free {
        /// The HostPortClass.
        class: String,
    },
    /// Why a claim or pod is where it is: `claim/<name>` (or a bare name) or `pod/<name>`.
    Why {
        /// `claim/<name>`, `pod/<name>`, or a claim's name.
        target: Target,
    },
    /// Hold a port back from every claim (an admin's reservation: HostPort `port-<n>`).
    Reserve {
        /// The port.
        port: u16,
        /// The class the reservation is counted in.
        #[arg(long)]
        class: String,
    },
    /// Give a reserved port back (never a port a claim holds).
    Release {
        /// The port.
        port: u16,
    },
}

/// How answers are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns, as kubectl prints.
    Table,
    /// JSON, for scripts.
    Json,
}

fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default() + "\n"
}

/// Runs `args` with `client`; `default_namespace` is the context's. The text to print.
pub async fn run(args: &Args, client: &Client, default_namespace: &str) -> Result<String, Error> {
    let namespace = args.namespace.as_deref().unwrap_or(default_namespace);
    let table = args.output == Output::Table;
    match &args.command {
        Command::Ports => {
            let scope = args.namespace.as_deref().filter(|_| !args.all_namespaces);
            let snapshot = Snapshot::fetch(client, scope).await?;
            let rows = crate::ports::held_ports(&snapshot, scope);
            Ok(if table {
                crate::ports::table(&rows)
            } else {
                json(&rows)
            })
        }
        Command::Free { class } => {
            let snapshot = Snapshot::fetch(client, Some(namespace)).await?;
            let free = crate::free::free_ports(&snapshot, class)?;
            Ok(if table {
                crate::free::table(&free)
            } else {
                json(&free)
            })
        }
        Command::Why { target } => {
            let snapshot = Snapshot::fetch(client, Some(namespace)).await?;
            let why = crate::why::why(client, &snapshot, namespace, target).await?;
            Ok(if table {
                crate::why::table(&why)
            } else {
                json(&why)
            })
        }
        Command::Reserve { port, class } => {
            crate::reservations::reserve(client, *port, class).await
        }
        Command::Release { port } => crate::reservations::release(client, *port).await,
    }
}

/// A client for `args`' kubeconfig and context, and the context's namespace.
pub async fn connect(args: &Args) -> Result<(Client, String), Error> {
    let options = KubeConfigOptions {
        context: args.context.clone(),
        ..KubeConfigOptions::default()
    };
    let config = match &args.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &options).await
        }
        None => kube::Config::from_kubeconfig(&options).await,
    }
    .map_err(|e| Error::Config(e.to_string()))?;
    let namespace = config.default_namespace.clone();
    let client = Client::try_from(config).map_err(|e| Error::Config(e.to_string()))?;
    Ok((client, namespace))
}

/// Parses the command line, runs it, prints the answer (or the error, exit code 1).
pub async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let answer = match connect(&args).await {
        Ok((client, namespace)) => run(&args, &client, &namespace).await,
        Err(error) => Err(error),
    };
    match answer {
        Ok(text) => {
            print!("{text}");
            std::process::ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}
