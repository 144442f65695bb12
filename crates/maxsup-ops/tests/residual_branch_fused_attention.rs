//! The attention sub-block's graph node (the path CUDA takes) with the fused attention on
//! (`set_fused_attention`: the forward and backward ops, here their CPU kernels) against the
//! composed ops, in the output and every gradient. A test binary of its own, since the setting
//! is process-wide and the other sub-block tests run the unfused path.

mod common;
use candle_core::Result;
use common::branch::check_against_composed;

#[test]
fn graph_node_with_fused_attention_matches_composed_in_values_and_every_gradient() -> Result<()> {
    maxsup_ops::set_fused_attention(true);
    check_against_composed(Some(3), true)
}
