//! Effects on the team secrets key: sealed copies, and a rotation that drops
//! stale copies and seals the registry passwords again.

use crate::action::Action;
use crate::model::*;
use crate::view;

use super::common::{Write, del, put};

/// The writes of a `key.*` action (see [`super::effect`]).
pub(super) fn effect(s: &TeamState, action: &Action) -> Vec<Write> {
    use Action as A;
    let mut out = Vec::new();
    match action {
        A::KeySeal { keys } => {
            for k in keys {
                out.push(put(Entity::Key(k.clone()), &k.entity_id()));
            }
        }
        A::KeyRotate {
            epoch,
            keys,
            registries,
        } => {
            // Entries of those who should no longer hold the key, and of
            // epochs before the previous one, go: every registry is sealed
            // to the new key now, and one made concurrently with this op
            // used at most the previous epoch.
            for (id, k) in &s.keys {
                if k.epoch.saturating_add(1) < *epoch
                    || !view::key_recipient_eligible(s, &k.recipient)
                {
                    out.push(del(Collection::Keys, id));
                }
            }
            for k in keys {
                out.push(put(Entity::Key(k.clone()), &k.entity_id()));
            }
            for (id, password) in registries {
                if let Some(r) = s.registries.get(id) {
                    out.push(put(
                        Entity::Registry(Registry {
                            password: Some(password.clone()),
                            ..r.clone()
                        }),
                        id,
                    ));
                }
            }
        }
        // Not of this family: the dispatcher never sends one, and the rules
        // refuse it anyway.
        _ => {}
    }
    out
}
