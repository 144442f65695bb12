//! `maxsup table1`: the paper's Table 1 (intra-class variation and inter-class separability,
//! train and validation) from the feature files of a set of runs, beside the paper's numbers.
//!
//! Expects `<runs>/<method>/features_{train,val}.safetensors` for the methods present, as
//! `just reproduce-table1` writes them.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Result;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory with one sub-directory per method (ce, ls, ols, zipf, maxsup, lp).
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
    let mut md = maxsup_analysis::tables::table1(&args.runs)?.to_markdown();
    md.push_str("\nRuns (from each method's config.json):\n");
    for line in maxsup_analysis::tables::describe_runs(&args.runs) {
        writeln!(md, "- {line}")?;
    }
    print!("{md}");
    if let Some(out) = &args.out {
        let mut doc = String::from("# Table 1 reproduction\n\n");
        if !args.note.is_empty() {
            writeln!(doc, "{}\n", args.note)?;
        }
        doc.push_str(&md);
        std::fs::write(out, doc)?;
        println!("\nwrote {}", out.display());
    }
    Ok(())
}
