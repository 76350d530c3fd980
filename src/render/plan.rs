//! `preserve snapshot --dry-run`: what a snapshot would do, touching nothing.

use std::fmt;

use super::window_end;
use crate::{bundle::bounds::printable, check::SiteItem, config::Environment, snapshot};

/// The plan: profile, window, trigger, output directory, each collector with its kind, timeout and source; then
/// the site facts that are not as a snapshot needs them (`site`, from [`crate::check::site`]).
pub struct Plan<'a> {
    pub plan: &'a snapshot::Plan,
    pub env: &'a Environment,
    pub site: &'a [SiteItem],
}

impl fmt::Display for Plan<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self { plan, env, site } = self;
        writeln!(f, "profile: {}", plan.profile_label)?;
        writeln!(f, "window:  {} .. {}", window_end(plan.window.since), window_end(plan.window.until))?;
        let alerts: Vec<&str> = plan.trigger.alerts.iter().map(|a| a.name().unwrap_or("?")).collect();
        if alerts.is_empty() {
            writeln!(f, "trigger: the command line (no alert)")?;
        } else {
            writeln!(f, "trigger: {} alert(s): {}", alerts.len(), printable(&alerts.join(", ")))?;
        }
        writeln!(f, "output:  {}", env.out_dir.display())?;
        writeln!(f, "collectors:")?;
        let nw = plan.collectors.iter().map(|c| c.name.chars().count()).max().unwrap_or(0);
        let kw = plan.collectors.iter().map(|c| c.kind.chars().count()).max().unwrap_or(0);
        for c in &plan.collectors {
            writeln!(f, "  {:<nw$}  {:<kw$}  timeout {:>5}s  {}", c.name, c.kind, c.timeout.as_secs(), c.describe)?;
        }
        let mut warnings = site.iter().filter(|s| !s.ok).peekable();
        if warnings.peek().is_some() {
            writeln!(f, "warnings (`preserve check` also asks each collector's servers):")?;
            for s in warnings {
                writeln!(f, "  {}: {}", s.name, s.detail)?;
            }
        }
        Ok(())
    }
}
