//! Which containers a try owns, and replacing a product's previous
//! containers without ever leaving neither version (§4).
//!
//! A try touches only the containers of its own product on its prefix
//! (labels team, prefix and product; containers made before the product
//! label existed count as the product's when their container name is one of
//! the plan's). Before the new containers are created, each previous one is
//! renamed to `<name>.prev-up` (it was running) or `<name>.prev` (it was
//! not) and stopped. The suffixes cannot occur in a regular name (container
//! names are DNS labels, without dots), so they mark, also after a crash,
//! the previous version kept aside. When the try reaches its expected
//! state they are removed; when it fails the try's containers are removed
//! and the previous ones get their names back and are started again when
//! they were running.
//!
//! A try cut short (the daemon killed) is run again by the executor. It
//! finds the previous containers still aside, removes what the cut-short
//! run of the same try made, and carries on: the end is the new version or
//! the previous one, never a mix. A try that had finished but was never
//! reported finds no container aside: its containers are a whole version
//! and are set aside like any previous one.

use std::collections::HashMap;

use bollard::models::{ContainerSummary, ContainerSummaryStateEnum};
use bollard::query_parameters::RenameContainerOptions;

use super::DockerRuntime;
use super::error::status_of;
use super::spec::Spec;
use super::state::summary_name;
use crate::runtime::common::Reporter;
use crate::runtime::{
    DeployPlan, LABEL_CONTAINER, LABEL_DEPLOYMENT, LABEL_INIT, LABEL_PRODUCT, LABEL_TRY,
    RuntimeError, Step,
};

/// Suffix of a previous container that was running when it was set aside.
pub(super) const PREV_UP_SUFFIX: &str = ".prev-up";
/// Suffix of a previous container that was not running (a finished job).
pub(super) const PREV_SUFFIX: &str = ".prev";

/// A previous container kept aside while a try runs.
#[derive(Clone, Debug)]
pub(super) struct Kept {
    /// Its name now (with the suffix).
    pub(super) name: String,
    /// Its regular name, given back on restore.
    pub(super) base: String,
    /// Whether it is started again on restore.
    pub(super) up: bool,
    /// Its name in its version (label), to restore in the plan's order.
    pub(super) container: String,
}

/// A container of the product under its regular name.
struct Current {
    name: String,
    /// Made by this plan's deployment and try (an earlier run of it).
    this_try: bool,
    running: bool,
}

/// The product's containers on the plan's prefix.
#[derive(Default)]
struct Found {
    kept: Vec<Kept>,
    current: Vec<Current>,
    inits: Vec<String>,
}

/// The previous name of a container set aside, and whether it was up.
pub(super) fn kept_base(name: &str) -> Option<(&str, bool)> {
    if let Some(base) = name.strip_suffix(PREV_UP_SUFFIX) {
        return Some((base, true));
    }
    name.strip_suffix(PREV_SUFFIX).map(|base| (base, false))
}

/// True when a container with these labels belongs to the plan's product.
fn owned(plan: &DeployPlan, labels: &HashMap<String, String>) -> bool {
    match labels.get(LABEL_PRODUCT) {
        Some(p) => *p == plan.product,
        // Made before containers named their product: ours when the plan
        // has a container of that name (it would collide anyway).
        None => labels
            .get(LABEL_CONTAINER)
            .is_some_and(|c| plan.containers.iter().any(|pc| pc.name == *c)),
    }
}

impl DockerRuntime {
    async fn find_product(&self, plan: &DeployPlan) -> Result<Found, RuntimeError> {
        let list = self.list(&plan.team, Some(&plan.prefix), false).await?;
        let mut found = Found::default();
        for s in &list {
            let labels = s.labels.clone().unwrap_or_default();
            let Some(name) = summary_name(s) else {
                continue;
            };
            if !owned(plan, &labels) {
                continue;
            }
            if labels.contains_key(LABEL_INIT) {
                found.inits.push(name);
                continue;
            }
            let container = labels.get(LABEL_CONTAINER).cloned().unwrap_or_default();
            if let Some((base, up)) = kept_base(&name) {
                found.kept.push(Kept {
                    base: base.to_owned(),
                    name,
                    up,
                    container,
                });
                continue;
            }
            let this_try = labels.get(LABEL_DEPLOYMENT) == Some(&plan.deployment)
                && labels.get(LABEL_TRY) == Some(&plan.try_number.to_string());
            found.current.push(Current {
                name,
                this_try,
                running: is_running(s),
            });
        }
        Ok(found)
    }

    /// Fails with `NameInUse` when a name the plan needs is taken by a
    /// container that is not this product's (another product of the prefix,
    /// another team, or not made by shoal). Nothing is touched before.
    pub(super) async fn check_names(
        &self,
        plan: &DeployPlan,
        specs: &[Spec],
    ) -> Result<(), RuntimeError> {
        let found = self.find_product(plan).await?;
        for spec in specs {
            if found.current.iter().any(|c| c.name == spec.name) {
                continue;
            }
            match self.docker.inspect_container(&spec.name, None).await {
                Ok(_) => {
                    return Err(RuntimeError::NameInUse {
                        kind: "container",
                        name: spec.name.clone(),
                    });
                }
                Err(e) if status_of(&e) == Some(404) => {}
                Err(e) => {
                    return Err(self.engine(format!("inspecting container {}", spec.name), e));
                }
            }
        }
        Ok(())
    }

    /// Removes the product's leftover init containers (of a try that failed
    /// or was cut short).
    pub(super) async fn remove_product_inits(
        &self,
        plan: &DeployPlan,
        report: &Reporter<'_>,
    ) -> Result<(), RuntimeError> {
        let found = self.find_product(plan).await?;
        for name in &found.inits {
            self.stop_and_remove(name).await?;
        }
        if !found.inits.is_empty() {
            report
                .emit(
                    Step::Remove,
                    None,
                    format!("removed {} leftover init container(s)", found.inits.len()),
                )
                .await;
        }
        Ok(())
    }

    /// Sets the product's previous containers aside (renamed, stopped) and
    /// removes what a cut-short run of this same try left. Returns every
    /// container now aside, also those an interrupted run had set aside.
    pub(super) async fn set_aside(
        &self,
        plan: &DeployPlan,
        report: &Reporter<'_>,
    ) -> Result<Vec<Kept>, RuntimeError> {
        let found = self.find_product(plan).await?;
        let mut kept = found.kept;
        // With containers aside, or when some are missing, this try's own
        // are half made: removed. Else they are a whole version (the try
        // ended but was never reported) and are kept like any previous one.
        let interrupted = !kept.is_empty() || !whole_try(plan, &found.current);
        if !kept.is_empty() {
            report
                .emit(
                    Step::Remove,
                    None,
                    format!(
                        "an interrupted try left the previous containers aside ({}): resuming the replacement",
                        names(&kept)
                    ),
                )
                .await;
            // Set aside but maybe not yet stopped when the run was cut.
            for k in &kept {
                self.stop_quietly(&k.name).await?;
            }
        }
        for c in found.current {
            let already = kept.iter().any(|k| k.base == c.name);
            if (c.this_try && interrupted) || already {
                self.stop_and_remove(&c.name).await?;
                report
                    .emit(
                        Step::Remove,
                        None,
                        format!("removed {} left by an interrupted run", c.name),
                    )
                    .await;
                continue;
            }
            let suffix = if c.running {
                PREV_UP_SUFFIX
            } else {
                PREV_SUFFIX
            };
            let aside = format!("{}{suffix}", c.name);
            self.rename(&c.name, &aside).await?;
            self.stop_quietly(&aside).await?;
            report
                .emit(
                    Step::Remove,
                    None,
                    format!(
                        "stopped the previous {} (kept until the new version is ready)",
                        c.name
                    ),
                )
                .await;
            kept.push(Kept {
                container: String::new(),
                base: c.name,
                name: aside,
                up: c.running,
            });
        }
        Ok(kept)
    }

    /// Removes the containers set aside, once the new version is ready.
    pub(super) async fn drop_kept(
        &self,
        kept: &[Kept],
        report: &Reporter<'_>,
    ) -> Result<(), RuntimeError> {
        if kept.is_empty() {
            return Ok(());
        }
        for k in kept {
            self.stop_and_remove(&k.name).await?;
        }
        report
            .emit(
                Step::Remove,
                None,
                format!("removed previous containers: {}", names(kept)),
            )
            .await;
        Ok(())
    }

    /// Undoes a failed try: removes the product's containers under regular
    /// names and gives the containers aside their names back, starting the
    /// ones that were running, in the plan's order where they are in it.
    pub(super) async fn restore(
        &self,
        plan: &DeployPlan,
        kept: &[Kept],
        report: &Reporter<'_>,
    ) -> Result<(), RuntimeError> {
        let found = self.find_product(plan).await?;
        for c in &found.current {
            self.stop_and_remove(&c.name).await?;
        }
        // The kept list of a resumed run may have been read before; the
        // engine's view is what counts.
        let mut aside = found.kept;
        if aside.is_empty() {
            aside = kept.to_vec();
        }
        let rank = |k: &Kept| {
            let c = if k.container.is_empty() {
                k.base
                    .strip_prefix(&format!("{}-", plan.prefix))
                    .unwrap_or(&k.base)
            } else {
                k.container.as_str()
            };
            plan.containers
                .iter()
                .position(|pc| pc.name == c)
                .unwrap_or(usize::MAX)
        };
        aside.sort_by_key(|k| rank(k));
        // Started before it gets its name back: cut short in between, a
        // re-run still finds it aside and marked as running.
        for k in &aside {
            if k.up {
                self.docker
                    .start_container(&k.name, None)
                    .await
                    .map_err(|e| self.engine(format!("starting container {}", k.name), e))?;
            }
            self.rename(&k.name, &k.base).await?;
        }
        report
            .emit(
                Step::Remove,
                None,
                format!("restored the previous containers: {}", names(&aside)),
            )
            .await;
        Ok(())
    }

    async fn rename(&self, from: &str, to: &str) -> Result<(), RuntimeError> {
        let options = RenameContainerOptions {
            name: to.to_owned(),
        };
        self.docker
            .rename_container(from, options)
            .await
            .map_err(|e| self.engine(format!("renaming container {from} to {to}"), e))
    }
}

/// True when an earlier run of this try made every container of the plan.
fn whole_try(plan: &DeployPlan, current: &[Current]) -> bool {
    plan.containers.iter().all(|pc| {
        let name = format!("{}-{}", plan.prefix, pc.name);
        current.iter().any(|c| c.this_try && c.name == name)
    })
}

fn is_running(s: &ContainerSummary) -> bool {
    matches!(
        s.state,
        Some(ContainerSummaryStateEnum::RUNNING | ContainerSummaryStateEnum::RESTARTING)
    )
}

fn names(kept: &[Kept]) -> String {
    kept.iter()
        .map(|k| k.base.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_aside_are_recognised() {
        assert_eq!(kept_base("p-web.prev-up"), Some(("p-web", true)));
        assert_eq!(kept_base("p-job.prev"), Some(("p-job", false)));
        assert_eq!(kept_base("p-web"), None);
        assert_eq!(kept_base("p-prev"), None);
    }
}
