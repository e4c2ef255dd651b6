//! SIGHUP: the configuration file is read again and what can change without a restart is
//! applied; a bad file changes nothing.
//!
//! Applied at once: access keys and public buckets (secret files read again, so a key can be
//! rotated), `log`, `default_copies`, `[limits]` (new connections and requests), `[maintenance]`
//! (background budgets, intervals) and `[tiering]`. Everything else (node id, ports, cores, I/O
//! backend, `[engine]`, `[ram_cache]`, `[replication]`, disks) is kept as it was started, and
//! the log names each section that changed in the file and needs a restart. A file that does
//! not parse or check, a secret file that can't be read, or keys removed from a node whose
//! data port needs them: the node keeps serving on its configuration and logs why.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::Config;
use crate::shared::Shared;

/// Sets the log filter (EnvFilter directives); Err with the reason when they are invalid.
pub type LogFilterSetter = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// What a reload needs: the file the node was started from (None: the embedded default, which
/// has none), and the log filter's setter (None: `PODSTORE_LOG` is set and wins).
#[derive(Default)]
pub struct Reload {
    pub path: Option<PathBuf>,
    pub set_log_filter: Option<LogFilterSetter>,
}

/// What one reload did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reloaded {
    /// Sections whose new values are in force.
    pub applied: Vec<&'static str>,
    /// Sections that changed in the file but keep their started values until a restart.
    pub need_restart: Vec<&'static str>,
}

impl Reload {
    /// Reads the file again and applies it (see the module documentation), logging the
    /// outcome; counted in `podstore_config_reloads_total{outcome}`.
    pub fn run(&self, shared: &Shared) -> Result<Reloaded, String> {
        let r = match &self.path {
            None => {
                Err("the node runs on the embedded default: there is no configuration file to read".into())
            }
            Some(path) => self.apply(shared, path),
        };
        match &r {
            Ok(done) => {
                metrics::counter!("podstore_config_reloads_total", "outcome" => "ok").increment(1);
                tracing::info!(
                    "SIGHUP: configuration reloaded; in force now: {}; changed but needs a restart: {}",
                    list(&done.applied),
                    list(&done.need_restart)
                );
            }
            Err(e) => {
                metrics::counter!("podstore_config_reloads_total", "outcome" => "failed").increment(1);
                tracing::error!("SIGHUP: configuration not reloaded, still serving on the previous one: {e}");
            }
        }
        r
    }

    fn apply(&self, shared: &Shared, path: &Path) -> Result<Reloaded, String> {
        let old = shared.cfg();
        let new = Config::load(path).map_err(|e| e.to_string())?;
        let mut next = (*old).clone();
        next.auth = new.auth.clone();
        next.log = new.log.clone();
        next.default_copies = new.default_copies.clone();
        next.limits = new.limits.clone();
        next.maintenance = new.maintenance.clone();
        next.tiering = new.tiering.clone();
        // The merged file must hold together: default_copies against the replica set in force.
        next.check().map_err(|e| e.to_string())?;
        let auth = crate::auth::Auth::load(&next.auth)?;
        next.check_exposure(auth.is_some())?;
        if let (Some(set), Some(filter)) = (&self.set_log_filter, &next.log) {
            set(filter).map_err(|e| format!("log: {e}"))?;
        }
        type Section<'a> = (&'static str, &'a dyn std::fmt::Debug, &'a dyn std::fmt::Debug);
        let changed = |sections: &[Section]| -> Vec<&'static str> {
            sections
                .iter()
                .filter(|(_, was, now)| format!("{was:?}") != format!("{now:?}"))
                .map(|s| s.0)
                .collect()
        };
        let done = Reloaded {
            applied: changed(&[
                ("auth", &old.auth, &new.auth),
                ("log", &old.log, &new.log),
                ("default_copies", &old.default_copies, &new.default_copies),
                ("limits", &old.limits, &new.limits),
                ("maintenance", &old.maintenance, &new.maintenance),
                ("tiering", &old.tiering, &new.tiering),
            ]),
            need_restart: changed(&[
                ("node_id", &old.node_id, &new.node_id),
                ("cores", &old.cores, &new.cores),
                ("io_backend", &old.io_backend, &new.io_backend),
                ("listen", &old.listen, &new.listen),
                ("engine", &old.engine, &new.engine),
                ("ram_cache", &old.ram_cache, &new.ram_cache),
                ("replication", &old.replication, &new.replication),
                ("disks", &old.disks, &new.disks),
            ]),
        };
        // Secrets are read again even when the file names the same ones: a rotated secret
        // file takes effect.
        shared.auth.store(auth.map(Arc::new));
        shared.config.store(Arc::new(next));
        Ok(done)
    }
}

impl std::fmt::Debug for Reload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reload")
            .field("path", &self.path)
            .field("set_log_filter", &self.set_log_filter.is_some())
            .finish()
    }
}

fn list(names: &[&str]) -> String {
    if names.is_empty() {
        "nothing".into()
    } else {
        names.join(", ")
    }
}
