//! Tearing one deployment down: the objects its latest try applied (found
//! by their team and deployment labels), its volume claims only when asked,
//! and the namespace when shoal made it and nothing of shoal is left in it.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim, Secret, Service};
use kube::api::{Api, DeleteParams, ListParams};

use super::KubernetesRuntime;
use super::meta::{
    created_by_shoal, deployment_selector, is_label_value, is_shoal_object, label_of, name_of,
    runtime_name, team_label,
};
use crate::runtime::{LABEL_TEAM, Removed, RuntimeError};

impl KubernetesRuntime {
    pub(super) async fn run_teardown(
        &self,
        team: &str,
        deployment: &str,
        prefix: &str,
        volumes: bool,
    ) -> Result<Removed, RuntimeError> {
        let ns_api: Api<Namespace> = Api::all(self.client.clone());
        let Some(ns) = ns_api
            .get_opt(prefix)
            .await
            .map_err(|e| self.err(format!("reading namespace {prefix}"), e))?
        else {
            return Ok(Removed::default());
        };
        // No object can carry an id that is not a label value.
        if deployment.is_empty() || !is_label_value(deployment) {
            return Ok(Removed::default());
        }
        let lp = ListParams::default().labels(&deployment_selector(team, deployment));
        let ctx = |what: &str| format!("listing {what} of {prefix}");
        let mut removed = Removed::default();

        let deployments = self
            .api::<Deployment>(prefix)
            .list(&lp)
            .await
            .map_err(|e| self.err(ctx("deployments"), e))?;
        for d in &deployments.items {
            self.delete::<Deployment>(prefix, name_of(&d.metadata), "deployment")
                .await?;
            removed.containers.extend(runtime_name(d));
        }
        let services = self
            .api::<Service>(prefix)
            .list(&lp)
            .await
            .map_err(|e| self.err(ctx("services"), e))?;
        for s in &services.items {
            self.delete::<Service>(prefix, name_of(&s.metadata), "service")
                .await?;
        }
        // Secret env values and image pull secrets alike.
        let secrets = self
            .api::<Secret>(prefix)
            .list(&lp)
            .await
            .map_err(|e| self.err(ctx("secrets"), e))?;
        for s in &secrets.items {
            self.delete::<Secret>(prefix, name_of(&s.metadata), "secret")
                .await?;
        }
        if volumes {
            let claims = self
                .api::<PersistentVolumeClaim>(prefix)
                .list(&lp)
                .await
                .map_err(|e| self.err(ctx("volume claims"), e))?;
            for c in &claims.items {
                let name = name_of(&c.metadata);
                self.delete::<PersistentVolumeClaim>(prefix, name, "volume claim")
                    .await?;
                removed.volumes.push(name.to_owned());
            }
        }

        let ours = label_of(&ns.metadata, LABEL_TEAM).as_deref() == Some(team_label(team).as_str());
        if ours && created_by_shoal(&ns) && !self.holds_shoal_objects(prefix).await? {
            match ns_api.delete(prefix, &DeleteParams::background()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(self.err(format!("deleting namespace {prefix}"), e)),
            }
            removed.networks.push(prefix.to_owned());
        }
        Ok(removed)
    }

    /// True while the namespace holds an object of shoal (of any team,
    /// product or deployment) that is not being deleted.
    async fn holds_shoal_objects(&self, ns: &str) -> Result<bool, RuntimeError> {
        let lp = ListParams::default();
        let ctx = |what: &str| format!("listing {what} of {ns}");
        let deployments = self
            .api::<Deployment>(ns)
            .list(&lp)
            .await
            .map_err(|e| self.err(ctx("deployments"), e))?;
        if deployments
            .items
            .iter()
            .any(|o| is_shoal_object(&o.metadata))
        {
            return Ok(true);
        }
        let services = self
            .api::<Service>(ns)
            .list(&lp)
            .await
            .map_err(|e| self.err(ctx("services"), e))?;
        if services.items.iter().any(|o| is_shoal_object(&o.metadata)) {
            return Ok(true);
        }
        let secrets = self
            .api::<Secret>(ns)
            .list(&lp)
            .await
            .map_err(|e| self.err(ctx("secrets"), e))?;
        if secrets.items.iter().any(|o| is_shoal_object(&o.metadata)) {
            return Ok(true);
        }
        let claims = self
            .api::<PersistentVolumeClaim>(ns)
            .list(&lp)
            .await
            .map_err(|e| self.err(ctx("volume claims"), e))?;
        Ok(claims.items.iter().any(|o| is_shoal_object(&o.metadata)))
    }
}
