//! Reading and writing entities in the Automerge document, at the current
//! heads or at any past heads (an op's causal past).

use automerge::{self as am, ChangeHash, ObjId, ROOT};
use autosurgeon::{Hydrate, HydrateError, ReadDoc, Reconcile, ReconcileError};

use crate::model::{Collection, Entity, TeamState};

mod fresh;
mod skip;

/// A read-only view of a document at given heads, for autosurgeon. The
/// heads' clock (a walk of the change graph) is worked out once, when the
/// view is made, not once per read (see the vendored automerge's `ViewAt`).
#[derive(Debug)]
pub struct AtHeads<'a> {
    view: am::ViewAt<'a>,
}

impl<'a> AtHeads<'a> {
    pub fn new(doc: &'a am::Automerge, heads: &[ChangeHash]) -> Self {
        AtHeads {
            view: doc.view_at(heads),
        }
    }
}

impl ReadDoc for AtHeads<'_> {
    type Parents<'b>
        = am::Parents<'b>
    where
        Self: 'b;

    fn get_heads(&self) -> Vec<ChangeHash> {
        self.view.heads().to_vec()
    }

    fn get<P: Into<am::Prop>>(
        &self,
        obj: &ObjId,
        prop: P,
    ) -> Result<Option<(am::Value<'_>, ObjId)>, am::AutomergeError> {
        self.view.get(obj, prop)
    }

    fn object_type<O: AsRef<ObjId>>(&self, obj: O) -> Option<am::ObjType> {
        self.view.object_type(obj).ok()
    }

    fn map_range<'b, O, R>(&'b self, obj: O, range: R) -> am::iter::MapRange<'b>
    where
        R: std::ops::RangeBounds<String> + 'b,
        O: AsRef<ObjId>,
    {
        self.view.map_range(obj, range)
    }

    fn list_range<O: AsRef<ObjId>, R: std::ops::RangeBounds<usize>>(
        &self,
        obj: O,
        range: R,
    ) -> am::iter::ListRange<'_> {
        self.view.list_range(obj, range)
    }

    fn length<O: AsRef<ObjId>>(&self, obj: O) -> usize {
        self.view.length(obj)
    }

    fn text<O: AsRef<ObjId>>(&self, obj: O) -> Result<String, am::AutomergeError> {
        self.view.text(obj)
    }

    fn parents<O: AsRef<ObjId>>(&self, obj: O) -> Result<Self::Parents<'_>, am::AutomergeError> {
        self.view.parents(obj)
    }

    fn is_empty(&self) -> bool {
        self.view.keys(ROOT).count() == 0
    }
}

pub fn collection_obj<D: ReadDoc>(doc: &D, c: Collection) -> Result<Option<ObjId>, HydrateError> {
    Ok(match doc.get(&ROOT, c.key())? {
        Some((am::Value::Object(am::ObjType::Map), id)) => Some(id),
        _ => None,
    })
}

/// Reads one entity; `None` if it is absent.
pub fn read_entity<D: ReadDoc>(
    doc: &D,
    c: Collection,
    id: &str,
) -> Result<Option<Entity>, HydrateError> {
    match collection_obj(doc, c)? {
        Some(coll) => read_entity_in(doc, &coll, c, id),
        None => Ok(None),
    }
}

/// [`read_entity`] in the collection's map `coll`.
pub fn read_entity_in<D: ReadDoc>(
    doc: &D,
    coll: &ObjId,
    c: Collection,
    id: &str,
) -> Result<Option<Entity>, HydrateError> {
    if doc.get(coll, id)?.is_none() {
        return Ok(None);
    }
    fn h<D: ReadDoc, T: Hydrate>(doc: &D, coll: &ObjId, id: &str) -> Result<T, HydrateError> {
        autosurgeon::hydrate_prop(doc, coll, id)
    }
    Ok(Some(match c {
        Collection::Team => Entity::Team(h(doc, coll, id)?),
        Collection::Members => Entity::Member(h(doc, coll, id)?),
        Collection::Nodes => Entity::Node(h(doc, coll, id)?),
        Collection::Invites => Entity::Invite(h(doc, coll, id)?),
        Collection::Registries => Entity::Registry(h(doc, coll, id)?),
        Collection::Products => Entity::Product(h(doc, coll, id)?),
        Collection::Versions => Entity::Version(h(doc, coll, id)?),
        Collection::Deployments => Entity::Deployment(Box::new(h(doc, coll, id)?)),
        Collection::Commands => Entity::Command(h(doc, coll, id)?),
        Collection::Keys => Entity::Key(h(doc, coll, id)?),
    }))
}

/// Reads the whole typed state.
pub fn read_state<D: ReadDoc>(doc: &D) -> Result<TeamState, HydrateError> {
    autosurgeon::hydrate(doc)
}

/// Writes (or deletes) one entity inside a transaction: the ops
/// autosurgeon's reconcile makes, found with fewer lookups (see [`skip`]).
pub fn write_entity(
    tx: &mut am::transaction::Transaction<'_>,
    c: Collection,
    id: &str,
    value: Option<&Entity>,
) -> Result<(), ReconcileError> {
    write_entity_with(tx, c, id, value, true)
}

/// The object type and the ops a new entity is written with (see
/// [`fresh`]); `None` when the recording cannot follow it.
fn entity_ops(value: &Entity) -> Option<(am::ObjType, Vec<am::transaction::FreshOp>)> {
    match value {
        Entity::Team(v) => fresh::record(v),
        Entity::Member(v) => fresh::record(v),
        Entity::Node(v) => fresh::record(v),
        Entity::Invite(v) => fresh::record(v),
        Entity::Registry(v) => fresh::record(v),
        Entity::Product(v) => fresh::record(v),
        Entity::Version(v) => fresh::record(v),
        Entity::Deployment(v) => fresh::record(v.as_ref()),
        Entity::Command(v) => fresh::record(v),
        Entity::Key(v) => fresh::record(v),
    }
}

/// Writes `value` at the absent key `id` of `coll` as reconcile would, with
/// one splice for all its ops; `false` (nothing written) when the recording
/// cannot follow it.
fn put_new(
    tx: &mut am::transaction::Transaction<'_>,
    coll: &ObjId,
    id: &str,
    value: &Entity,
) -> bool {
    // `put_fresh` checks the ops whole before it writes anything, so on a
    // refusal reconcile can still write the entity.
    entity_ops(value).is_some_and(|(typ, ops)| tx.put_fresh(coll, id, typ, &ops).is_ok())
}

/// What a change says besides its ops.
#[derive(Clone, Debug)]
pub struct ChangeHeader {
    pub actor: am::ActorId,
    pub seq: u64,
    pub start_op: u64,
    pub time: i64,
    pub deps: Vec<ChangeHash>,
}

/// The change a transaction at `header.deps` (numbering its ops from
/// `header.start_op`) makes when it writes each of `writes` with
/// [`write_entity`] at a key of its collection that holds nothing at those
/// deps, built without a transaction: every entity goes in as
/// `put_fresh` puts it. Also returns, per write, the number of ops written
/// up to it. `None` when some write is not such a put (a second write to
/// one key, a collection the document lacks, an entity reconcile would
/// write): then only a transaction knows the change.
///
/// That the keys hold nothing at the deps is the caller's to know (a
/// replica has the typed state there); this reads only the collections'
/// maps, which genesis made and nothing moves.
pub fn new_entities_change<'a>(
    doc: &am::Automerge,
    writes: impl IntoIterator<Item = (Collection, &'a str, &'a Entity)>,
    header: ChangeHeader,
) -> Option<(am::Change, Vec<usize>)> {
    let mut operations = Vec::new();
    let mut ends = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (c, id, value) in writes {
        if !seen.insert((c, id)) {
            return None;
        }
        let coll = collection_obj(doc, c).ok()??;
        let (typ, ops) = entity_ops(value)?;
        let first = header.start_op + operations.len() as u64;
        operations.extend(fresh::change_ops(
            &coll,
            id,
            typ,
            &ops,
            first,
            &header.actor,
        )?);
        ends.push(operations.len());
    }
    if operations.is_empty() {
        return None;
    }
    let change = am::ExpandedChange {
        operations,
        actor_id: header.actor,
        hash: None,
        seq: header.seq,
        start_op: std::num::NonZeroU64::new(header.start_op)?,
        time: header.time,
        message: None,
        deps: header.deps,
        extra_bytes: Vec::new(),
        author: None,
    };
    Some((am::Change::from(change), ends))
}

/// [`write_entity`] with autosurgeon reading every field itself
/// (`skip == false`): the reference the faster writer must equal.
pub fn write_entity_with(
    tx: &mut am::transaction::Transaction<'_>,
    c: Collection,
    id: &str,
    value: Option<&Entity>,
    skip: bool,
) -> Result<(), ReconcileError> {
    use am::transaction::Transactable as _;
    let coll = match am::ReadDoc::get(tx, ROOT, c.key())? {
        Some((am::Value::Object(am::ObjType::Map), id)) => id,
        _ => tx.put_object(ROOT, c.key(), am::ObjType::Map)?,
    };
    let Some(value) = value else {
        if am::ReadDoc::get(tx, &coll, id)?.is_some() {
            tx.delete(&coll, id)?;
        }
        return Ok(());
    };
    let held = am::ReadDoc::get(tx, &coll, id)?.map(|(v, obj)| match v {
        am::Value::Object(am::ObjType::Map) => Some(obj),
        _ => None,
    });
    // A new entity: its ops recorded first and entered in one splice (see
    // [`fresh`]), unless the recording cannot follow it.
    if skip && held.is_none() && put_new(tx, &coll, id, value) {
        return Ok(());
    }
    // A new entity (or one a conflict made something other than a map)
    // starts as an empty map: nothing to skip, but no field is looked up.
    let snapshot = match held {
        _ if !skip => None,
        Some(Some(obj)) => Some(skip::Snapshot::read(tx, &obj)),
        _ => Some(skip::Snapshot::default()),
    };
    fn r<T: Reconcile>(
        tx: &mut am::transaction::Transaction<'_>,
        coll: &ObjId,
        id: &str,
        v: &T,
        snapshot: Option<&skip::Snapshot>,
    ) -> Result<(), ReconcileError> {
        match snapshot {
            Some(snapshot) => {
                autosurgeon::reconcile_prop(tx, coll, id, skip::Skipping { value: v, snapshot })
            }
            None => autosurgeon::reconcile_prop(tx, coll, id, v),
        }
    }
    let s = snapshot.as_ref();
    match value {
        Entity::Team(v) => r(tx, &coll, id, v, s),
        Entity::Member(v) => r(tx, &coll, id, v, s),
        Entity::Node(v) => r(tx, &coll, id, v, s),
        Entity::Invite(v) => r(tx, &coll, id, v, s),
        Entity::Registry(v) => r(tx, &coll, id, v, s),
        Entity::Product(v) => r(tx, &coll, id, v, s),
        Entity::Version(v) => r(tx, &coll, id, v, s),
        Entity::Deployment(v) => r(tx, &coll, id, v.as_ref(), s),
        Entity::Command(v) => r(tx, &coll, id, v, s),
        Entity::Key(v) => r(tx, &coll, id, v, s),
    }
}
