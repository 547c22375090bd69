//! Scaling one picture plane.

/// Area-average downscale of one plane.
pub fn scale_plane(src: &[u8], sw: usize, sh: usize, dw: usize, dh: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(dw * dh);
    for y in 0..dh {
        let y0 = y * sh / dh;
        let y1 = ((y + 1) * sh / dh).max(y0 + 1).min(sh);
        for x in 0..dw {
            let x0 = x * sw / dw;
            let x1 = ((x + 1) * sw / dw).max(x0 + 1).min(sw);
            let mut sum = 0u32;
            for row in y0..y1 {
                let r = &src[row * sw + x0..row * sw + x1];
                sum += r.iter().map(|&p| u32::from(p)).sum::<u32>();
            }
            let n = ((y1 - y0) * (x1 - x0)) as u32;
            out.push(((sum + n / 2) / n) as u8);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downscaling_averages_areas() {
        let src = [0u8, 100, 200, 100, 0, 100, 200, 100];
        assert_eq!(scale_plane(&src, 4, 2, 2, 1), vec![50, 150]);
        assert_eq!(scale_plane(&src, 4, 2, 4, 2), src.to_vec());
    }
}
