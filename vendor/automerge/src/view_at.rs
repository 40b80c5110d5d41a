//! (shoal patch) Reading a document as at some heads with the heads' clock
//! worked out once.
//!
//! Every `*_at(heads)` read of [`ReadDoc`](crate::ReadDoc) works out the
//! clock of `heads` again, by walking the change graph back from them. A
//! reader that hydrates a whole entity at one set of heads makes dozens of
//! reads; this view makes the walk once.

use std::ops::RangeBounds;

use crate::clock::Clock;
use crate::exid::ExId;
use crate::iter::{Keys, ListRange, MapRange};
use crate::{Automerge, AutomergeError, ChangeHash, ObjType, Parents, Prop, ReadDoc, Value};

/// The document as at `heads` (see [`Automerge::view_at`]).
#[derive(Debug, Clone)]
pub struct ViewAt<'a> {
    doc: &'a Automerge,
    heads: Vec<ChangeHash>,
    /// `None` when `heads` are the document's current heads.
    clock: Option<Clock>,
}

impl Automerge {
    /// A view of the document as at `heads`; each read answers as the
    /// same read `*_at(heads)` would.
    pub fn view_at(&self, heads: &[ChangeHash]) -> ViewAt<'_> {
        ViewAt {
            doc: self,
            heads: heads.to_vec(),
            clock: self.clock_at(heads),
        }
    }
}

impl<'a> ViewAt<'a> {
    pub fn heads(&self) -> &[ChangeHash] {
        &self.heads
    }

    pub fn get<O: AsRef<ExId>, P: Into<Prop>>(
        &self,
        obj: O,
        prop: P,
    ) -> Result<Option<(Value<'a>, ExId)>, AutomergeError> {
        self.doc
            .get_for(obj.as_ref(), prop.into(), self.clock.clone())
    }

    pub fn object_type<O: AsRef<ExId>>(&self, obj: O) -> Result<ObjType, AutomergeError> {
        ReadDoc::object_type(self.doc, obj)
    }

    pub fn keys<O: AsRef<ExId>>(&self, obj: O) -> Keys<'a> {
        self.doc.keys_for(obj.as_ref(), self.clock.clone())
    }

    pub fn map_range<O: AsRef<ExId>, R: RangeBounds<String> + 'a>(
        &self,
        obj: O,
        range: R,
    ) -> MapRange<'a> {
        self.doc
            .map_range_for(obj.as_ref(), range, self.clock.clone())
    }

    pub fn list_range<O: AsRef<ExId>, R: RangeBounds<usize>>(
        &self,
        obj: O,
        range: R,
    ) -> ListRange<'a> {
        self.doc
            .list_range_for(obj.as_ref(), range, self.clock.clone())
    }

    pub fn length<O: AsRef<ExId>>(&self, obj: O) -> usize {
        self.doc.length_for(obj.as_ref(), self.clock.clone())
    }

    pub fn text<O: AsRef<ExId>>(&self, obj: O) -> Result<String, AutomergeError> {
        self.doc.text_for(obj.as_ref(), self.clock.clone())
    }

    pub fn parents<O: AsRef<ExId>>(&self, obj: O) -> Result<Parents<'a>, AutomergeError> {
        self.doc.parents_for(obj.as_ref(), self.clock.clone())
    }
}
