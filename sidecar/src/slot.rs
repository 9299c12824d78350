//! The model being served, swapped atomically: a request takes the current model (an `Arc`) and
//! keeps it until it answers, so a swap never fails a request or shows it a half-loaded model;
//! the old model is dropped when its last request is done.

use crate::model::{Loaded, Origin};
use std::sync::{Arc, RwLock};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Status {
    pub previous: Option<Origin>,
    /// Why the last load was refused (the current model kept serving), if it was.
    pub last_refusal: Option<String>,
    pub swaps: u64,
}

#[derive(Default)]
pub struct Slot {
    current: RwLock<Option<Arc<Loaded>>>,
    status: RwLock<Status>,
}

impl Slot {
    pub fn current(&self) -> Option<Arc<Loaded>> {
        self.current.read().expect("slot").clone()
    }

    /// Puts `model` in service; returns what it replaced.
    pub fn swap(&self, model: Loaded) -> Option<Origin> {
        let new = Arc::new(model);
        let old = self.current.write().expect("slot").replace(new);
        let mut status = self.status.write().expect("slot status");
        status.previous = old.as_ref().map(|m| m.origin.clone());
        status.last_refusal = None;
        status.swaps += 1;
        status.previous.clone()
    }

    pub fn refused(&self, reason: String) {
        self.status.write().expect("slot status").last_refusal = Some(reason);
    }

    pub fn status(&self) -> Status {
        self.status.read().expect("slot status").clone()
    }
}
