//! maxsup-optim against PyTorch / timm reference values (`fixtures/torch_reference.json`).

#[path = "reference/clip_ema.rs"]
mod clip_ema;
#[path = "reference/fixture.rs"]
mod fixture;
#[path = "reference/optimizers.rs"]
mod optimizers;
#[path = "reference/resume.rs"]
mod resume;
#[path = "reference/schedules.rs"]
mod schedules;
