//! Keeps a host's rules equal to the desired forwards: the first sync (and every sync after
//! a failure) replaces the whole ruleset; later ones apply the change only (nftables) or
//! rewrite our chains (iptables). Denied ports are dropped before anything is rendered.

use std::time::Duration;

use hostport_api::IpFamily;

use crate::deny::DenyList;
use crate::forwarding::exec::{ExecError, Executor};
use crate::forwarding::iptables;
use crate::forwarding::nft::{self, Rules};
use crate::forwarding::rules::{Forward, ForwardSet};

/// Which firewall the rules are written for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    /// nftables: `nft -f -`.
    Nft,
    /// iptables fallback: `<command>-restore` and `<command>` (`iptables`,
    /// `iptables-legacy`, `iptables-nft`), run by `sh -s`.
    Iptables {
        /// The iptables command.
        command: String,
    },
}

/// Forwards the deny-list let through, and the ones it left out (only [`Syncer::allowed`]
/// makes one, so what is synced has always been through the deny-list).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allowed {
    forwards: ForwardSet,
    denied: Vec<Forward>,
}

impl Allowed {
    /// The forwards let through.
    pub fn forwards(&self) -> &ForwardSet {
        &self.forwards
    }

    /// The forwards left out.
    pub fn denied(&self) -> &[Forward] {
        &self.denied
    }
}

/// What one sync did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The host already had these rules.
    Unchanged,
    /// Only the changed forwards were applied.
    Changed {
        /// Forwards removed or retargeted.
        removed: usize,
        /// Forwards added or retargeted.
        added: usize,
    },
    /// The whole ruleset was written.
    Replaced {
        /// Forwards in it.
        forwards: usize,
    },
}

/// One host's rules, as last applied.
#[derive(Debug)]
pub struct Syncer {
    backend: Backend,
    rules: Rules,
    deny: DenyList,
    executor: Executor,
    timeout: Duration,
    /// `None` until a sync succeeded (or after a failure): the next one is a full one.
    applied: Option<ForwardSet>,
    dry_run: bool,
}

impl Outcome {
    /// `unchanged`, `changed` or `replaced` (a metric label).
    pub fn label(&self) -> &'static str {
        match self {
            Self::Unchanged => "unchanged",
            Self::Changed { .. } => "changed",
            Self::Replaced { .. } => "replaced",
        }
    }
}

impl Syncer {
    /// A syncer that has applied nothing yet. With `dry_run`, scripts are printed to stdout
    /// instead of applied.
    pub fn new(
        backend: Backend,
        rules: Rules,
        deny: DenyList,
        executor: Executor,
        dry_run: bool,
    ) -> Self {
        Self {
            backend,
            rules,
            deny,
            executor,
            timeout: Duration::from_secs(30),
            applied: None,
            dry_run,
        }
    }

    /// The deny-list.
    pub fn deny(&self) -> &DenyList {
        &self.deny
    }

    /// `desired` without denied ports, and the forwards left out for that.
    pub fn allowed(&self, desired: &ForwardSet) -> Allowed {
        let (forwards, denied) = desired.split_denied(&self.deny);
        Allowed { forwards, denied }
    }

    /// The whole ruleset for `desired` (denied ports left out), as this backend writes it:
    /// an `nft -f` script, or the `iptables-restore` then the `ip6tables-restore` input.
    pub fn render(&self, desired: &ForwardSet) -> String {
        let allowed = self.allowed(desired).forwards;
        match &self.backend {
            Backend::Nft => nft::full(&self.rules, &allowed),
            Backend::Iptables { command } => IpFamily::ALL
                .into_iter()
                .map(|family| {
                    let restore = match family {
                        IpFamily::Ipv4 => command.clone(),
                        IpFamily::Ipv6 => iptables::ip6tables(command),
                    };
                    format!(
                        "# {restore}-restore --noflush\n{}",
                        iptables::restore_input(&self.rules, &allowed, family)
                    )
                })
                .collect(),
        }
    }

    /// Makes the host's rules forward `desired` (denied ports left out).
    pub async fn sync(&mut self, desired: &ForwardSet) -> Result<Outcome, ExecError> {
        let allowed = self.allowed(desired);
        self.sync_allowed(allowed).await
    }

    /// Makes the host's rules forward what [`Syncer::allowed`] let through.
    pub async fn sync_allowed(&mut self, allowed: Allowed) -> Result<Outcome, ExecError> {
        let Allowed {
            forwards: allowed,
            denied,
        } = allowed;
        for forward in &denied {
            tracing::warn!(protocol = %forward.protocol, port = forward.port, target = %forward.target, "port is on the deny-list; not forwarded");
        }
        if let Some(applied) = &self.applied {
            if *applied == allowed {
                return Ok(Outcome::Unchanged);
            }
            if self.backend == Backend::Nft {
                let delta = applied.delta(&allowed);
                let outcome = Outcome::Changed {
                    removed: delta.removed.len(),
                    added: delta.added.len(),
                };
                match self.apply(&nft::delta(applied, &allowed)).await {
                    Ok(()) => {
                        self.applied = Some(allowed);
                        return Ok(outcome);
                    }
                    // The table is not what we wrote (flushed, edited): replace it.
                    Err(error) => {
                        tracing::warn!(%error, "applying the change failed; replacing the whole table");
                    }
                }
            }
        }
        self.applied = None;
        let script = match &self.backend {
            Backend::Nft => nft::full(&self.rules, &allowed),
            Backend::Iptables { command } => iptables::script(command, &self.rules, &allowed),
        };
        self.apply(&script).await?;
        let forwards = allowed.len();
        self.applied = Some(allowed);
        Ok(Outcome::Replaced { forwards })
    }

    /// The forwards last applied (`None` before the first sync and after a failure).
    pub fn applied(&self) -> Option<&ForwardSet> {
        self.applied.as_ref()
    }

    /// Forgets what was applied: the next sync writes the whole ruleset (repairs changes
    /// made behind our back).
    pub fn forget(&mut self) {
        self.applied = None;
    }

    /// Removes our table or chains from the host.
    pub async fn cleanup(&mut self) -> Result<(), ExecError> {
        self.applied = None;
        let script = match &self.backend {
            Backend::Nft => nft::cleanup(),
            Backend::Iptables { command } => iptables::cleanup(command),
        };
        self.apply(&script).await
    }

    async fn apply(&self, script: &str) -> Result<(), ExecError> {
        if self.dry_run {
            println!("{script}");
            return Ok(());
        }
        let program: &[&str] = match &self.backend {
            Backend::Nft => &["nft", "-f", "-"],
            Backend::Iptables { .. } => &["sh", "-s"],
        };
        self.executor.run(program, script, self.timeout).await
    }
}
