//! Rules of the team secrets key: sealing copies of it (`key.seal`) and
//! rotating it with every team-sealed password (`key.rotate`).

use crate::action::Action;
use crate::context::OpContext;
use crate::model::{Role, SealedKey, TeamState};
use crate::view;

use super::common::{R, RuleError, found, need_origin, need_role, not_in_family};

/// Checks a `key.*` action (see [`super::check`]).
pub(super) fn check(s: &TeamState, ctx: &OpContext, action: &Action) -> R {
    use Action as A;
    match action {
        A::KeySeal { keys } => {
            need_origin(s, ctx)?;
            let is_node =
                ctx.author == ctx.origin && view::effective_node(s, &ctx.author.to_hex()).is_some();
            if !is_node {
                need_role(s, ctx, "key.seal", Role::Admin)?;
            }
            // Copies of keys the team has, or a first key (epoch 1): a new
            // epoch comes only with a rotation, which seals every password.
            let current = view::team_key(s).map_or(0, |(e, _)| e);
            let holders = [
                format!("member:{}", ctx.author.to_hex()),
                format!("node:{}", ctx.author.to_hex()),
            ];
            for k in keys {
                check_sealed_key(s, k, k.epoch)?;
                if k.epoch == 0 || (k.epoch > current && k.epoch != 1) {
                    return Err(RuleError::Invalid {
                        what: "key epoch",
                        value: k.epoch.to_string(),
                        why: format!(
                            "the team key is at epoch {current}: a copy is of an epoch the team has, or the first key (1); use `shoal team rotate-key` for a new one"
                        ),
                    });
                }
                // Only a holder of a key seals it: the author has a copy of
                // this (epoch, public key) already, unless it is the team's
                // very first key. A key nobody holds never becomes current.
                let first = k.epoch == 1 && s.keys.is_empty();
                let held = s.keys.values().any(|h| {
                    holders.contains(&h.recipient) && h.epoch == k.epoch && h.named() == k.named()
                });
                if !first && !held {
                    return Err(RuleError::Invalid {
                        what: "team key",
                        value: k.epoch.to_string(),
                        why: "its author holds no copy of this key: only a holder seals a key, and a new key comes with `shoal team rotate-key`".into(),
                    });
                }
            }
            Ok(())
        }
        A::KeyRotate {
            epoch,
            keys,
            registries,
        } => {
            need_origin(s, ctx)?;
            need_role(s, ctx, "key.rotate", Role::Admin)?;
            let current = view::team_key(s).map_or(0, |(e, _)| e);
            let invalid = |what: &'static str, value: String, why: String| RuleError::Invalid {
                what,
                value,
                why,
            };
            let Some(next) = current.checked_add(1) else {
                return Err(invalid(
                    "key epoch",
                    epoch.to_string(),
                    "the team key is at the last epoch there is".into(),
                ));
            };
            if *epoch != next {
                return Err(invalid(
                    "key epoch",
                    epoch.to_string(),
                    format!("the team key is at epoch {current}, so a new one is {next}"),
                ));
            }
            let mut public = None;
            for k in keys {
                check_sealed_key(s, k, *epoch)?;
                let p = k.public();
                if public.is_some_and(|q| q != p) {
                    return Err(invalid(
                        "key recipient",
                        k.recipient.clone(),
                        "every copy of a new team key is of the same key".into(),
                    ));
                }
                public = Some(p);
            }
            let Some(Some(public)) = public else {
                return Err(invalid(
                    "team key",
                    epoch.to_string(),
                    "a new team key is sealed to at least one node".into(),
                ));
            };
            for (r, _) in view::key_recipients(s) {
                if !keys.iter().any(|k| k.recipient == r) {
                    return Err(invalid(
                        "team key",
                        epoch.to_string(),
                        format!(
                            "the new key must be sealed to every node and admin; {r} is left out"
                        ),
                    ));
                }
            }
            let want = crate::model::team_recipient(*epoch, public);
            for (id, p) in registries {
                let r = found(s.registries.get(id), "registry", id)?;
                if p.recipient != want {
                    return Err(invalid(
                        "registry password",
                        r.name.clone(),
                        format!("sealed to {}, not to the new key {want}", p.recipient),
                    ));
                }
            }
            for r in s.registries.values() {
                let team_sealed = r
                    .password
                    .as_ref()
                    .is_some_and(|p| p.recipient.starts_with("team:"));
                if team_sealed && !registries.contains_key(&r.id) {
                    return Err(invalid(
                        "team key",
                        epoch.to_string(),
                        format!(
                            "the password of registry {} must be sealed again to the new key",
                            r.name
                        ),
                    ));
                }
            }
            Ok(())
        }
        _ => Err(not_in_family(action, "key")),
    }
}

/// A copy of the team key for a node or an admin, of `epoch`, whose text
/// names that epoch and a public key.
fn check_sealed_key(s: &TeamState, k: &SealedKey, epoch: u32) -> R {
    let bad = |why: &str| RuleError::Invalid {
        what: "key recipient",
        value: k.recipient.clone(),
        why: why.into(),
    };
    if !view::key_recipient_eligible(s, &k.recipient) {
        return Err(bad(
            "the team secrets key is sealed only to nodes and admins",
        ));
    }
    match k.named() {
        Some((e, _)) if e == k.epoch && e == epoch => Ok(()),
        Some(_) => Err(bad("the sealed key names another epoch")),
        None => Err(bad(
            "the sealed key is not shoal-team-key-v1:<epoch>:<public key>:<sealed>",
        )),
    }
}
