//! `bench-report`: turns the JSON lines `bench/run` collected into
//! `docs/benchmarks.md` and its plot.

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::Parser;
use netserver_bench::report::{self, Table, markdown, plot};

/// Writes the benchmark report: medians over rounds, ratios to native, a
/// table in markdown and a plot in SVG.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The results: one JSON record per load-generator run.
    #[arg(long)]
    results: PathBuf,
    /// The markdown file to write.
    #[arg(long, default_value = "docs/benchmarks.md")]
    markdown: PathBuf,
    /// The SVG plot to write (the markdown links it by file name).
    #[arg(long, default_value = "docs/benchmarks.svg")]
    svg: PathBuf,
    /// A `KEY=VALUE` line for the setup section (repeatable).
    #[arg(long = "setup", value_name = "KEY=VALUE")]
    setup: Vec<String>,
    /// A note for the notes section (repeatable).
    #[arg(long = "note")]
    notes: Vec<String>,
    /// A markdown file placed after the targets table (repeatable, in
    /// order): measured costs, what bounds the targets.
    #[arg(long = "section")]
    sections: Vec<PathBuf>,
    /// The mux section's measurements (issue 23), JSON lines: idle memory
    /// per connection and broadcast times.
    #[arg(long)]
    mux: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let text = std::fs::read_to_string(&args.results)
        .with_context(|| format!("read {}", args.results.display()))?;
    let table = Table::from_records(&report::parse_records(&text)?);
    let setup = args
        .setup
        .iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => Ok((k.to_owned(), v.to_owned())),
            None => bail!("--setup {kv:?}: expected KEY=VALUE"),
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let plot_name = args
        .svg
        .file_name()
        .map(|n| n.to_string_lossy().into_owned());
    let sections = args
        .sections
        .iter()
        .map(|path| {
            std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mux = match &args.mux {
        Some(path) => report::mux::parse_mux_records(
            &std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?,
        )?,
        None => Vec::new(),
    };
    let context = markdown::Context {
        setup,
        notes: args.notes,
        plot: plot_name,
        sections,
        mux,
    };
    let svg = plot::render_svg(
        &table,
        "netserver-host vs native tokio and Perl Net::Server",
    )?;
    std::fs::write(&args.svg, svg).with_context(|| format!("write {}", args.svg.display()))?;
    std::fs::write(&args.markdown, markdown::render(&table, &context))
        .with_context(|| format!("write {}", args.markdown.display()))?;
    eprintln!(
        "wrote {} and {}",
        args.markdown.display(),
        args.svg.display()
    );
    Ok(())
}
