//! Graph transformations. Each pass is one module, takes a graph and returns what it changed;
//! every pass is unit-tested on small graphs built in code and checked by running them.

pub mod cluster;
pub mod float16;
pub mod fold_bn;
pub mod gptq;
pub mod graph;
pub mod int8_weights;
pub mod prune;
pub mod qdq;
pub mod weights;

#[cfg(test)]
pub(crate) mod testing;
