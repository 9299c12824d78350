//! Bytes over the air: what a model costs once compressed with zstd, the codec of the artifact's
//! weight layer.

/// zstd level used for artifact layers (a good ratio at edge-friendly decompression speed).
pub const ZSTD_LEVEL: i32 = 19;

/// Size of `bytes` after zstd compression at [`ZSTD_LEVEL`].
pub fn zstd_bytes(bytes: &[u8]) -> usize {
    zstd::bulk::compress(bytes, ZSTD_LEVEL)
        .map(|c| c.len())
        .expect("zstd compresses in memory")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repetitive_bytes_compress_and_round_trip() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 7) as u8).collect();
        assert!(zstd_bytes(&data) < data.len() / 20);
        let packed = zstd::bulk::compress(&data, ZSTD_LEVEL).unwrap();
        assert_eq!(zstd::bulk::decompress(&packed, data.len()).unwrap(), data);
    }
}
