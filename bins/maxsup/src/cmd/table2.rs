//! `maxsup table2`: the paper's linear-transfer table. For each pretrained run, a multinomial
//! logistic regression (L2, L-BFGS, lambda chosen among 45 log-spaced values on a held-out split)
//! is fitted on frozen features of a second dataset and scored on its test split.
//!
//! Expects `<runs>/<method>/transfer_{train,test}.safetensors`, as `just reproduce-table2` writes.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Result;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory with one sub-directory per method.
    #[arg(long)]
    pub runs: PathBuf,
    /// Also write the table as markdown here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// A line describing how the runs were made, for the markdown file.
    #[arg(long, default_value = "")]
    pub note: String,
}

pub fn run(args: Args) -> Result<()> {
    let mut md = maxsup_analysis::tables::table2(&args.runs)?.to_markdown();
    md.push_str("\nRuns (from each method's config.json):\n");
    for line in maxsup_analysis::tables::describe_runs(&args.runs) {
        writeln!(md, "- {line}")?;
    }
    print!("{md}");
    if let Some(out) = &args.out {
        let mut doc = String::from("# Table 2 reproduction (linear transfer)\n\n");
        if !args.note.is_empty() {
            writeln!(doc, "{}\n", args.note)?;
        }
        doc.push_str(&md);
        std::fs::write(out, doc)?;
        println!("\nwrote {}", out.display());
    }
    Ok(())
}
