//! The sidecar's pure, reusable pieces, for its binary and for the fuzz targets (`fuzz/`).

pub mod request;
