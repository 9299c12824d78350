//! Bytes over the air: what a model costs once compressed as the artifact's weight layer is.

/// Size of `bytes` after the artifact's layer compression ([`edgefleet_artifact::codec`]).
pub fn zstd_bytes(bytes: &[u8]) -> usize {
    edgefleet_artifact::codec::compress(bytes)
        .map(|c| c.len())
        .expect("zstd compresses in memory")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_the_size_of_the_published_layer() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 7) as u8).collect();
        assert!(zstd_bytes(&data) < data.len() / 20);
        assert_eq!(
            zstd_bytes(&data),
            edgefleet_artifact::codec::compress(&data).unwrap().len()
        );
    }
}
