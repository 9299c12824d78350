//! edgefleet-optimizer as a library: ONNX model handling, datasets, evaluation with real
//! runtimes. The binary (`main.rs`) is a thin command-line layer over it.

pub mod calibrate;
pub mod dataset;
pub mod eval;
pub mod images;
pub mod model;
pub mod npy;
pub mod optimize;
pub mod passes;
pub mod profile;
pub mod publish;
pub mod recipe;
pub mod report;
pub mod selftest;
pub mod size;
pub mod source;
