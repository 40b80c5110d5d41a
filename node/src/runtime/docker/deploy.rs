//! One try of a deployment: images, network and volumes, init containers,
//! replacing the product's containers (see `replace.rs`) and starting the
//! new ones in order, each waited for in its expected state.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use bollard::models::{
    ContainerStateStatusEnum, EndpointSettings, HealthStatusEnum, NetworkConnectRequest,
};
use bollard::query_parameters::CreateContainerOptionsBuilder;
use futures::future::join_all;
use shoal_protocol::model::ContainerState;
use tokio::sync::mpsc;

use super::spec::{Expect, InitSpec, Spec, build_spec, network_name, validate_plan};
use super::state::Seen;
use super::{DockerRuntime, INIT_TIMEOUT, POLL_INTERVAL, RUNNING_SETTLE, STEP_SETTLE};
use crate::runtime::common::Reporter;
use crate::runtime::{DeployOutcome, DeployPlan, ImageSource, ProgressEvent, RuntimeError, Step};

impl DockerRuntime {
    pub(super) async fn run_deploy(
        &self,
        plan: &DeployPlan,
        progress: &mpsc::Sender<ProgressEvent>,
    ) -> Result<DeployOutcome, RuntimeError> {
        validate_plan(plan)?;
        let network = network_name(&plan.prefix);
        let specs = plan
            .containers
            .iter()
            .map(|pc| build_spec(plan, pc, &network))
            .collect::<Result<Vec<_>, _>>()?;
        let report = Reporter::new(progress);

        // Images, each distinct reference once, concurrently.
        let mut sources: BTreeMap<&str, &ImageSource> = BTreeMap::new();
        for pc in &plan.containers {
            sources.entry(&pc.image.reference).or_insert(&pc.image);
            for src in pc.init_images.values() {
                sources.entry(&src.reference).or_insert(src);
            }
        }
        let ready = join_all(sources.values().map(|src| self.ensure_image(src, &report))).await;
        let mut digests = BTreeMap::new();
        let mut pulled = Vec::new();
        for r in ready {
            let r = r?;
            if r.pulled {
                pulled.push(r.reference.clone());
            }
            digests.insert(r.reference, r.digest);
        }

        // Network and volumes.
        self.ensure_network(&plan.team, &plan.prefix, &report)
            .await?;
        let shared: BTreeSet<&str> = specs
            .iter()
            .flat_map(|s| s.extra_networks.iter().map(String::as_str))
            .collect();
        for name in shared {
            self.ensure_shared_network(&plan.team, name, &report)
                .await?;
        }
        self.ensure_volumes(plan, &specs, &report).await?;

        // Nothing is touched when a name the plan needs is someone else's.
        self.check_names(plan, &specs).await?;

        // Init containers, in order, before anything of the previous try goes.
        self.remove_product_inits(plan, &report).await?;
        for spec in &specs {
            for init in &spec.inits {
                self.run_init(spec, init, &report).await?;
            }
        }

        // Set the product's previous containers aside, start the new ones in
        // order, each in its expected state before the next; then drop the
        // previous ones, or bring them back when the try fails.
        let kept = self.set_aside(plan, &report).await?;
        let finals = match self.start_in_order(&specs, &report).await {
            Ok(finals) => finals,
            Err(failure) if kept.is_empty() => return Err(failure),
            Err(failure) => {
                report
                    .emit(
                        Step::Remove,
                        None,
                        format!("the try failed ({failure}); restoring the previous version"),
                    )
                    .await;
                return match self.restore(plan, &kept, &report).await {
                    Ok(()) => Err(RuntimeError::Restored {
                        failure: Box::new(failure),
                    }),
                    Err(e) => Err(RuntimeError::RestoreFailed {
                        failure: Box::new(failure),
                        detail: e.to_string(),
                    }),
                };
            }
        };
        self.drop_kept(&kept, &report).await?;

        let mut containers = BTreeMap::new();
        for (spec, mut state) in specs.iter().zip(finals) {
            state.image = match digests.get(&spec.reference).cloned().flatten() {
                Some(d) if !spec.reference.contains('@') => format!("{}@{d}", spec.reference),
                _ => spec.reference.clone(),
            };
            containers.insert(spec.container.clone(), state);
        }
        report
            .emit(
                Step::Done,
                None,
                format!(
                    "deployment {} try {} is up ({} container(s))",
                    plan.deployment,
                    plan.try_number,
                    containers.len()
                ),
            )
            .await;
        Ok(DeployOutcome {
            containers,
            pulled,
            events: report.into_events(),
        })
    }

    /// Creates and starts each container in the plan's order, waiting for
    /// its expected state before the next one starts.
    async fn start_in_order(
        &self,
        specs: &[Spec],
        report: &Reporter<'_>,
    ) -> Result<Vec<ContainerState>, RuntimeError> {
        let mut finals = Vec::with_capacity(specs.len());
        let mut settling = Vec::new();
        for spec in specs {
            self.create(spec, report).await?;
            let since = Instant::now();
            self.start(spec, report).await?;
            report
                .emit(
                    Step::Wait,
                    Some(&spec.container),
                    format!(
                        "waiting for {} to be {}",
                        spec.name,
                        spec.expect.describe(spec.has_health)
                    ),
                )
                .await;
            let plain = matches!(spec.expect, Expect::Running) && !spec.has_health;
            let settle = if plain { STEP_SETTLE } else { RUNNING_SETTLE };
            finals.push(
                self.wait_expected(spec, since, settle, Some(report))
                    .await?,
            );
            if plain {
                settling.push((spec, since));
            }
        }
        // Every container without a health check must have stayed up for
        // the full settle time, counted from its own start.
        if !settling.is_empty() {
            report
                .emit(
                    Step::Wait,
                    None,
                    format!(
                        "checking that {} container(s) stay up for {}s",
                        settling.len(),
                        RUNNING_SETTLE.as_secs()
                    ),
                )
                .await;
        }
        for (spec, since) in settling {
            self.wait_expected(spec, since, RUNNING_SETTLE, None)
                .await?;
        }
        Ok(finals)
    }

    async fn run_init(
        &self,
        spec: &Spec,
        init: &InitSpec,
        report: &Reporter<'_>,
    ) -> Result<(), RuntimeError> {
        let container = spec.container.as_str();
        report
            .emit(
                Step::Init,
                Some(container),
                format!("running init container {}", init.init),
            )
            .await;
        let options = CreateContainerOptionsBuilder::new()
            .name(&init.name)
            .build();
        self.docker
            .create_container(Some(options), init.body.clone())
            .await
            .map_err(|e| self.create_error(container, &init.name, e))?;
        self.docker
            .start_container(&init.name, None)
            .await
            .map_err(|e| self.start_error(container, &init.name, e))?;
        let failed = |detail: String| RuntimeError::InitFailed {
            container: container.to_owned(),
            init: init.init.clone(),
            detail,
        };
        let deadline = Instant::now() + INIT_TIMEOUT;
        loop {
            let info = self
                .docker
                .inspect_container(&init.name, None)
                .await
                .map_err(|e| self.engine(format!("inspecting container {}", init.name), e))?;
            let seen = Seen::of(&info);
            if matches!(
                seen.status,
                Some(ContainerStateStatusEnum::EXITED | ContainerStateStatusEnum::DEAD)
            ) {
                let code = seen.exit_code.unwrap_or(-1);
                if code != 0 {
                    return Err(failed(format!(
                        "exited with code {code}; its container {} is kept for its logs",
                        init.name
                    )));
                }
                self.remove_container(&init.name).await?;
                report
                    .emit(
                        Step::Init,
                        Some(container),
                        format!("init container {} done", init.init),
                    )
                    .await;
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(failed(format!(
                    "still {} after {}s",
                    seen.describe(),
                    INIT_TIMEOUT.as_secs()
                )));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    async fn create(&self, spec: &Spec, report: &Reporter<'_>) -> Result<(), RuntimeError> {
        let options = CreateContainerOptionsBuilder::new()
            .name(&spec.name)
            .build();
        self.docker
            .create_container(Some(options), spec.body.clone())
            .await
            .map_err(|e| self.create_error(&spec.container, &spec.name, e))?;
        for network in &spec.extra_networks {
            let request = NetworkConnectRequest {
                container: spec.name.clone(),
                endpoint_config: Some(EndpointSettings {
                    aliases: Some(vec![spec.container.clone()]),
                    ..Default::default()
                }),
            };
            self.docker
                .connect_network(network, request)
                .await
                .map_err(|e| self.engine(format!("connecting {} to {network}", spec.name), e))?;
        }
        report
            .emit(
                Step::Create,
                Some(&spec.container),
                format!("created {}", spec.name),
            )
            .await;
        Ok(())
    }

    async fn start(&self, spec: &Spec, report: &Reporter<'_>) -> Result<(), RuntimeError> {
        self.docker
            .start_container(&spec.name, None)
            .await
            .map_err(|e| self.start_error(&spec.container, &spec.name, e))?;
        report
            .emit(
                Step::Start,
                Some(&spec.container),
                format!("started {}", spec.name),
            )
            .await;
        Ok(())
    }

    /// Waits until the container is in its expected state, or fails.
    /// A container without a health check counts as running once it has
    /// been up without a restart for `settle` since `started`.
    async fn wait_expected(
        &self,
        spec: &Spec,
        started: Instant,
        settle: Duration,
        report: Option<&Reporter<'_>>,
    ) -> Result<ContainerState, RuntimeError> {
        let deadline = started + spec.timeout;
        let settle = settle.min(spec.timeout);
        let container = spec.container.clone();
        let expected = spec.expect.describe(spec.has_health);
        loop {
            let info = self
                .docker
                .inspect_container(&spec.name, None)
                .await
                .map_err(|e| self.engine(format!("inspecting container {}", spec.name), e))?;
            let seen = Seen::of(&info);
            let unexpected = |actual: String| RuntimeError::UnexpectedState {
                container: container.clone(),
                expected: expected.clone(),
                actual,
            };
            let exited = matches!(
                seen.status,
                Some(ContainerStateStatusEnum::EXITED | ContainerStateStatusEnum::DEAD)
            );
            match spec.expect {
                Expect::Running => {
                    if exited {
                        return Err(unexpected(format!(
                            "exited with code {}",
                            seen.exit_code.unwrap_or(-1)
                        )));
                    }
                    if seen.restarts > 0
                        || seen.status == Some(ContainerStateStatusEnum::RESTARTING)
                    {
                        return Err(unexpected(format!(
                            "keeps restarting ({} restart(s), last exit code {})",
                            seen.restarts,
                            seen.exit_code.unwrap_or(-1)
                        )));
                    }
                    if seen.status == Some(ContainerStateStatusEnum::RUNNING) {
                        let done = if spec.has_health {
                            match seen.health {
                                Some(HealthStatusEnum::HEALTHY) => true,
                                Some(HealthStatusEnum::UNHEALTHY) => {
                                    return Err(RuntimeError::Unhealthy {
                                        container,
                                        detail: seen
                                            .health_output
                                            .unwrap_or_else(|| "the health check failed".into()),
                                    });
                                }
                                _ => false,
                            }
                        } else {
                            started.elapsed() >= settle
                        };
                        if done {
                            if let Some(report) = report {
                                report
                                    .emit(
                                        Step::Wait,
                                        Some(&container),
                                        format!("{} is {}", spec.name, seen.describe()),
                                    )
                                    .await;
                            }
                            return Ok(ContainerState {
                                state: "running".into(),
                                exit_code: None,
                                image: String::new(),
                            });
                        }
                    }
                }
                Expect::Exited(code) => {
                    if exited {
                        let got = seen.exit_code.unwrap_or(-1);
                        if got != code {
                            return Err(unexpected(format!("exited with code {got}")));
                        }
                        if let Some(report) = report {
                            report
                                .emit(
                                    Step::Wait,
                                    Some(&container),
                                    format!("{} exited with code {got}", spec.name),
                                )
                                .await;
                        }
                        return Ok(ContainerState {
                            state: "exited".into(),
                            exit_code: Some(got),
                            image: String::new(),
                        });
                    }
                }
            }
            if Instant::now() >= deadline {
                return Err(RuntimeError::Timeout {
                    container,
                    expected,
                    seconds: spec.timeout.as_secs(),
                    last: seen.describe(),
                });
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
}
