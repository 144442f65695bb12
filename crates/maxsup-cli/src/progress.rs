//! Terminal progress: a bar per epoch with loss, LR and images/s, and one line per evaluation.

use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};
use maxsup_train::{Event, Observer};

/// Draws the progress bar (or, with `quiet`, only the per-epoch lines).
pub struct TerminalProgress {
    bar: Option<ProgressBar>,
    quiet: bool,
}

impl TerminalProgress {
    pub fn new(quiet: bool) -> Self {
        Self { bar: None, quiet }
    }

    fn line(&self, text: String) {
        match &self.bar {
            Some(bar) => bar.println(text),
            None => eprintln!("{text}"),
        }
    }
}

impl Observer for TerminalProgress {
    fn on_event(&mut self, event: &Event) -> Result<()> {
        match event {
            Event::EpochStart {
                epoch,
                epochs,
                batches,
                lr,
                alpha,
            } => {
                if !self.quiet {
                    let bar = ProgressBar::new(*batches as u64);
                    bar.set_style(
                        ProgressStyle::with_template(
                            "{prefix} [{bar:30}] {pos}/{len} {msg} eta {eta}",
                        )?
                        .progress_chars("=> "),
                    );
                    bar.set_prefix(format!("epoch {}/{}", epoch + 1, epochs));
                    bar.set_message(format!("lr {lr:.4} alpha {alpha:.3}"));
                    self.bar = Some(bar);
                }
            }
            Event::Step {
                batch,
                loss,
                lr,
                images_per_second,
                ..
            } => {
                if let Some(bar) = &self.bar {
                    bar.set_position(*batch as u64 + 1);
                    bar.set_message(format!(
                        "loss {loss:.4} lr {lr:.4} {images_per_second:.0} img/s"
                    ));
                }
            }
            Event::Train(t) => {
                if let Some(bar) = self.bar.take() {
                    bar.finish_and_clear();
                }
                self.line(format!(
                    "epoch {:>3} train loss {:.4} acc {:.2}% | LS reg {:.4} err {:+.4} | {:.0} img/s, {:.0}s (loader stall {:.1}s)",
                    t.epoch + 1,
                    t.loss,
                    100.0 * t.accuracy,
                    t.ls_regularization,
                    t.ls_error_amplification,
                    t.images_per_second,
                    t.seconds,
                    t.loader_stall_seconds,
                ));
            }
            Event::Eval(e) => self.line(eval_line("eval ", e)),
            Event::EmaEval(e) => self.line(eval_line("ema  ", e)),
            Event::Replicas {
                epoch,
                world_size,
                checksum,
            } => self.line(format!(
                "epoch {:>3} {world_size} processes hold identical weights (checksum {checksum})",
                epoch + 1
            )),
            Event::Checkpoint { .. } => {}
        }
        Ok(())
    }
}

/// One evaluation as a line: `what` is `eval` for the model, `ema` for its EMA weights.
fn eval_line(what: &str, e: &maxsup_train::EvalStats) -> String {
    format!(
        "epoch {:>3} {what} top1 {:.2}% top5 {:.2}% nll {:.4} ece15 {:.4} ({} images, {:.0}s)",
        e.epoch + 1,
        100.0 * e.top1,
        100.0 * e.top5,
        e.nll,
        e.ece15,
        e.samples,
        e.seconds
    )
}
