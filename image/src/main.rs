//! `nacre-image`: build, inspect and compare nacre node images.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::{Command, ExitCode};

#[derive(Parser)]
#[command(
    name = "nacre-image",
    about = "Build, inspect and compare nacre node images"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Partitions, UKI sections, stub version, cmdline, root hash (UKI and verity partition) and
    /// predicted measurements of a disk image or a bare UKI. No root needed.
    Inspect {
        image: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Where two images (or two UKIs) differ: GPT, partitions by byte range, ESP files, UKI
    /// sections. Exit status 1 when they differ, 0 when identical.
    Diff {
        a: PathBuf,
        b: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Build the image: runs scripts/build-image.sh (from the source tree this binary was built
    /// in, or --source) with the remaining arguments; it prints the progress of each step.
    Build {
        /// The nacre source tree (default: where nacre-image was built).
        #[arg(long)]
        source: Option<PathBuf>,
        /// Arguments for scripts/build-image.sh: OUTDIR [--variant NAME] [--cache DIR] ...
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn run() -> Result<ExitCode> {
    match Cli::parse().cmd {
        Cmd::Inspect { image, json } => {
            let i = nacre_image::inspect::inspect(&image)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&i)?);
            } else {
                nacre_image::inspect::print(&i);
            }
            Ok(if i.roothash_matches == Some(false) {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        Cmd::Diff { a, b, json } => {
            let diffs = nacre_image::diff::diff(&a, &b)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&diffs)?);
            } else if diffs.is_empty() {
                println!("identical");
            } else {
                nacre_image::diff::print(&diffs);
            }
            Ok(if diffs.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Cmd::Build { source, args } => {
            let src =
                source.unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/..")));
            let script = src.join("scripts/build-image.sh");
            if !script.is_file() {
                bail!("no {} (pass --source)", script.display());
            }
            let st = Command::new(&script)
                .args(&args)
                .status()
                .with_context(|| format!("running {}", script.display()))?;
            Ok(if st.success() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(st.code().unwrap_or(1).clamp(1, 255) as u8)
            })
        }
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("nacre-image: {e:#}");
            ExitCode::from(2)
        }
    }
}
