//! Helpers the protocol's test files share: editing an Automerge change
//! as a hostile author would, through automerge's public API.
#![allow(clippy::unwrap_used)]

use automerge::{ExpandedChange, legacy};

/// Moves a change's ops to start at `start`: its own op ids move with it.
pub fn move_start(e: &mut ExpandedChange, start: u64) {
    let (old, actor) = (e.start_op.get(), e.actor_id.clone());
    let shift = |id: &mut legacy::OpId| {
        if id.1 == actor && id.0 >= old {
            id.0 = id.0 - old + start;
        }
    };
    for op in &mut e.operations {
        if let legacy::ObjectId::Id(id) = &mut op.obj {
            shift(id);
        }
        if let legacy::Key::Seq(legacy::ElementId::Id(id)) = &mut op.key {
            shift(id);
        }
        let mut pred: Vec<legacy::OpId> = op.pred.iter().cloned().collect();
        pred.iter_mut().for_each(shift);
        op.pred = pred.into();
    }
    e.start_op = std::num::NonZeroU64::new(start).unwrap();
}
