//! What the fused CPU optimizer passes share: the parameter and gradient slices of an in-place
//! op, checked against the length of the optimizer state they update with them.

use candle_core::{CpuStorage, Layout, Result};

/// The parameter (mutable) and gradient f32 slices under their layouts, both contiguous and
/// `state_len` long; errors start with `what` (the optimizer).
pub(crate) fn param_and_grad<'a>(
    what: &str,
    (s1, l1): (&'a mut CpuStorage, &Layout),
    (s2, l2): (&'a CpuStorage, &Layout),
    state_len: usize,
) -> Result<(&'a mut [f32], &'a [f32])> {
    let range = |l: &Layout, role: &str| -> Result<(usize, usize)> {
        l.contiguous_offsets()
            .ok_or_else(|| candle_core::Error::Msg(format!("{what}: the {role} is not contiguous")))
    };
    let ((a1, b1), (a2, b2)) = (range(l1, "parameter")?, range(l2, "gradient")?);
    if b1 - a1 != b2 - a2 || b1 - a1 != state_len {
        candle_core::bail!("{what}: parameter, gradient and optimizer state differ in size");
    }
    match (s1, s2) {
        (CpuStorage::F32(p), CpuStorage::F32(g)) => Ok((&mut p[a1..b1], &g[a2..b2])),
        _ => candle_core::bail!("{what}: expects f32 tensors"),
    }
}
