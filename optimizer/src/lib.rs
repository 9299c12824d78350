//! edgefleet-optimizer as a library: ONNX model handling, datasets, evaluation with real
//! runtimes, the passes and the search, and one run from request to result (`job`). The binary
//! (`main.rs`) is only its command line.

pub mod budget;
pub mod calibrate;
pub mod dataset;
pub mod eval;
pub mod job;
pub mod model;
pub mod npy;
pub mod optimize;
pub mod output;
pub mod passes;
pub mod profile;
pub mod progress;
pub mod publish;
pub mod recipe;
pub mod report;
pub mod selftest;
pub mod size;
pub mod source;
pub mod widths;
