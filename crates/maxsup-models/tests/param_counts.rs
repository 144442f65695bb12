//! Parameter counts must equal torchvision's / timm's (`sum(p.numel() for p in m.parameters())`).

use candle_core::Device;
use maxsup_models::{create_model, ModelOptions};

fn count(name: &str, classes: Option<usize>) -> anyhow::Result<usize> {
    let m = create_model(
        name,
        &ModelOptions {
            num_classes: classes,
            ..Default::default()
        },
        &Device::Cpu,
    )?;
    Ok(m.params().num_trainable_params())
}

#[test]
fn counts_match_torchvision_and_timm() -> anyhow::Result<()> {
    assert_eq!(count("resnet18", None)?, 11_689_512);
    assert_eq!(count("resnet50", None)?, 25_557_032);
    assert_eq!(count("deit_small_patch16_224", None)?, 22_050_664);
    // He et al. report 0.27M for ResNet-20 with option-A shortcuts; option B adds two 1x1
    // projections + BN: 16*32 + 2*32 + 32*64 + 2*64 = 2,752 (fc here: 64*10+10).
    assert_eq!(count("resnet20_cifar", Some(10))?, 269_722 + 2_752);
    Ok(())
}

#[test]
fn buffers_are_not_trainable() -> anyhow::Result<()> {
    let m = create_model("resnet18", &ModelOptions::default(), &Device::Cpu)?;
    let buffers: Vec<_> = m.params().buffers().map(|b| b.name.clone()).collect();
    assert!(buffers
        .iter()
        .all(|n| n.ends_with("running_mean") || n.ends_with("running_var")));
    assert_eq!(buffers.len(), 2 * 20, "resnet18 has 20 BatchNorms");
    assert!(m.params().trainable().all(|p| !p.name.contains("running")));
    Ok(())
}
