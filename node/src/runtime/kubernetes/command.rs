//! Acting on a team's containers: start, stop, restart and remove one, or
//! remove everything of a prefix.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim, Secret, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch};
use serde_json::{Value, json};
use shoal_protocol::model::ContainerAction;

use super::meta::{
    configured_replicas, created_by_shoal, label_of, merge_params, name_of, runtime_name,
    team_label, team_selector,
};
use super::{ANNOTATION_RESTARTED_AT, KubernetesRuntime, REGISTRY_SUFFIX, SECRETS_SUFFIX};
use crate::runtime::{LABEL_TEAM, Removed, RuntimeError};

impl KubernetesRuntime {
    pub(super) async fn run_command(
        &self,
        team: &str,
        name: &str,
        action: ContainerAction,
    ) -> Result<(), RuntimeError> {
        let d = self.resolve(team, name).await?;
        let ns = d.metadata.namespace.clone().unwrap_or_default();
        let dname = name_of(&d.metadata).to_owned();
        let api = self.api::<Deployment>(&ns);
        let merge = |patch: Value| {
            let api = api.clone();
            let dname = dname.clone();
            async move {
                api.patch(&dname, &merge_params(), &Patch::Merge(&patch))
                    .await
                    .map(|_| ())
            }
        };
        let context = format!("{} deployment {ns}/{dname}", action.as_str());
        match action {
            ContainerAction::Start => {
                let replicas = configured_replicas(&d);
                merge(json!({ "spec": { "replicas": replicas } }))
                    .await
                    .map_err(|e| self.err(context, e))
            }
            ContainerAction::Stop => merge(json!({ "spec": { "replicas": 0 } }))
                .await
                .map_err(|e| self.err(context, e)),
            ContainerAction::Restart => {
                let now = k8s_openapi::jiff::Timestamp::now().to_string();
                merge(
                    json!({ "spec": { "template": { "metadata": { "annotations": {
                    ANNOTATION_RESTARTED_AT: now
                } } } } }),
                )
                .await
                .map_err(|e| self.err(context, e))
            }
            ContainerAction::Remove => {
                self.delete::<Deployment>(&ns, &dname, "deployment").await?;
                self.delete::<Service>(&ns, &dname, "service").await?;
                self.delete::<Secret>(&ns, &format!("{dname}{SECRETS_SUFFIX}"), "secret")
                    .await?;
                self.delete::<Secret>(&ns, &format!("{dname}{REGISTRY_SUFFIX}"), "secret")
                    .await?;
                Ok(())
            }
            ContainerAction::RemoveVolumes | ContainerAction::PruneImages => {
                Err(crate::runtime::not_a_container_command(action))
            }
        }
    }

    pub(super) async fn run_remove_prefix(
        &self,
        team: &str,
        prefix: &str,
    ) -> Result<Removed, RuntimeError> {
        let ns_api: Api<Namespace> = Api::all(self.client.clone());
        let Some(ns) = ns_api
            .get_opt(prefix)
            .await
            .map_err(|e| self.err(format!("reading namespace {prefix}"), e))?
        else {
            return Ok(Removed::default());
        };
        let lp = ListParams::default().labels(&team_selector(team));
        let deployments = self
            .api::<Deployment>(prefix)
            .list(&lp)
            .await
            .map_err(|e| self.err(format!("listing deployments of {prefix}"), e))?;
        let claims = self
            .api::<PersistentVolumeClaim>(prefix)
            .list(&lp)
            .await
            .map_err(|e| self.err(format!("listing volume claims of {prefix}"), e))?;
        let mut removed = Removed {
            containers: deployments.items.iter().filter_map(runtime_name).collect(),
            networks: Vec::new(),
            volumes: claims
                .items
                .iter()
                .map(|c| name_of(&c.metadata).to_owned())
                .collect(),
        };
        let ours = label_of(&ns.metadata, LABEL_TEAM).as_deref() == Some(team_label(team).as_str());
        if ours && created_by_shoal(&ns) {
            match ns_api.delete(prefix, &DeleteParams::background()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(self.err(format!("deleting namespace {prefix}"), e)),
            }
            removed.networks.push(prefix.to_owned());
            return Ok(removed);
        }
        for d in &deployments.items {
            self.delete::<Deployment>(prefix, name_of(&d.metadata), "deployment")
                .await?;
        }
        let services = self
            .api::<Service>(prefix)
            .list(&lp)
            .await
            .map_err(|e| self.err(format!("listing services of {prefix}"), e))?;
        for s in &services.items {
            self.delete::<Service>(prefix, name_of(&s.metadata), "service")
                .await?;
        }
        let secrets = self
            .api::<Secret>(prefix)
            .list(&lp)
            .await
            .map_err(|e| self.err(format!("listing secrets of {prefix}"), e))?;
        for s in &secrets.items {
            self.delete::<Secret>(prefix, name_of(&s.metadata), "secret")
                .await?;
        }
        for c in &claims.items {
            self.delete::<PersistentVolumeClaim>(prefix, name_of(&c.metadata), "volume claim")
                .await?;
        }
        Ok(removed)
    }
}
