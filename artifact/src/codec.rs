//! How layers are compressed: zstd at [`LEVEL`], one definition for the artifact writer and for
//! the optimizer's over-the-air size, so a candidate's measured size is its layer's size.

/// A good ratio at edge-friendly decompression speed (an 8 MiB window at most).
pub const LEVEL: i32 = 19;

/// `bytes` as a zstd frame at [`LEVEL`], compressed without telling zstd the input's size: given
/// the size, zstd shrinks the level's match-finder tables to fit a small input, which on a 27 KB
/// low-bit model costs 1.8% (17,876 against 17,556 bytes). So the input goes in with
/// `ZSTD_e_continue` and the frame is ended by a second, empty call; the frame then records no
/// content size, and readers bound the output themselves ([`crate::limits::decompress`]).
pub fn compress(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    use zstd::zstd_safe::{CCtx, CParameter, InBuffer, OutBuffer, zstd_sys::ZSTD_EndDirective};
    let fail = |code: usize| {
        std::io::Error::other(format!("zstd: {}", zstd::zstd_safe::get_error_name(code)))
    };
    let mut cctx = CCtx::create();
    cctx.set_parameter(CParameter::CompressionLevel(LEVEL))
        .map_err(fail)?;
    let mut out: Vec<u8> = Vec::with_capacity(zstd::zstd_safe::compress_bound(bytes.len()) + 64);
    let mut output = OutBuffer::around(&mut out);
    let mut input = InBuffer::around(bytes);
    // The output holds the worst case (compress_bound), so each call makes progress; a full
    // buffer would be a zstd bug, reported rather than looped on.
    let full = |o: &OutBuffer<'_, Vec<u8>>| o.pos() >= o.capacity();
    while input.pos() < bytes.len() {
        cctx.compress_stream2(&mut output, &mut input, ZSTD_EndDirective::ZSTD_e_continue)
            .map_err(fail)?;
        if full(&output) && input.pos() < bytes.len() {
            return Err(std::io::Error::other("zstd: output larger than its bound"));
        }
    }
    loop {
        let left = cctx
            .compress_stream2(
                &mut output,
                &mut InBuffer::around(&[]),
                ZSTD_EndDirective::ZSTD_e_end,
            )
            .map_err(fail)?;
        if left == 0 {
            break;
        }
        if full(&output) {
            return Err(std::io::Error::other("zstd: output larger than its bound"));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::{Expected, decompress};

    #[test]
    fn round_trips_and_announces_no_size() {
        let data: Vec<u8> = (0..30_000u32).map(|i| (i % 7 + i / 1000) as u8).collect();
        let z = compress(&data).unwrap();
        let sized = zstd::bulk::compress(&data, LEVEL).unwrap();
        assert!(
            z.len() <= sized.len(),
            "{} against {} with the size known",
            z.len(),
            sized.len()
        );
        assert!(z.len() < data.len() / 10);
        assert_eq!(zstd::zstd_safe::get_frame_content_size(&z).unwrap(), None);
        assert_eq!(
            decompress("t", &z, Expected::Exactly(data.len() as u64)).unwrap(),
            data
        );
        assert!(decompress("t", &z, Expected::Exactly(data.len() as u64 - 1)).is_err());
    }

    #[test]
    fn incompressible_and_empty_inputs_fit_their_bound() {
        for data in [Vec::new(), edgefleet_testenv::net::noise(300_000)] {
            let z = compress(&data).unwrap();
            assert!(z.len() <= zstd::zstd_safe::compress_bound(data.len()) + 64);
            assert_eq!(
                decompress("t", &z, Expected::AtMost(1 << 20)).unwrap(),
                data
            );
        }
    }
}
