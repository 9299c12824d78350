pub mod crds;
