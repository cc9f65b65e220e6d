//! `evaluate`: separation quality of models on the held-out corpus songs, in SDR (dB).
//!
//! ```text
//! evaluate --corpus ~/.cache/stemsep/corpus --model model/default/htdemucs.onnx \
//!          [--baseline model/tiny/tiny.onnx] [--split test]
//! ```
//! Every song of the split goes through the same engine the worker uses (WAV in, planar stems
//! out, no MP3 step), and each stem is scored over the whole song with the MDX challenge's SDR.
//! Next to each model it scores the mixture itself used as every estimate: a model below that line
//! separates nothing.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use stemsep_cli::quality::{sdr_table_row, CorpusSong};
use stemsep_engine::Separator;

/// Score models on the corpus that model/corpus.py renders.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The corpus directory (model/corpus.py -o DIR).
    #[arg(long)]
    corpus: PathBuf,
    /// Which part of the corpus to score.
    #[arg(long, default_value = "test")]
    split: String,
    /// The model to evaluate (split HT-Demucs ONNX export).
    #[arg(long)]
    model: PathBuf,
    /// Models to score alongside it on the same songs, e.g. a random-weight one.
    #[arg(long)]
    baseline: Vec<PathBuf>,
}

fn main() -> ExitCode {
    // SAFETY: the first statement of main, before this process starts any thread.
    unsafe { stemsep_engine::keep_freed_memory() };
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("evaluate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let split_dir = args.corpus.join(&args.split);
    let dirs = CorpusSong::dirs(&split_dir).with_context(|| {
        format!(
            "reading {} (render it with model/corpus.py)",
            split_dir.display()
        )
    })?;
    anyhow::ensure!(!dirs.is_empty(), "no songs under {}", split_dir.display());
    let mut systems = Vec::new();
    for path in std::iter::once(&args.model).chain(&args.baseline) {
        let separator =
            Separator::load(path).with_context(|| format!("loading {}", path.display()))?;
        let label = format!(
            "{} ({})",
            separator.info().name,
            path.file_name().unwrap_or_default().to_string_lossy()
        );
        systems.push((label, Some(separator)));
    }
    systems.push(("mixture as estimate".to_string(), None));
    let sources = systems
        .iter()
        .find_map(|(_, s)| s.as_ref())
        .map(|s| s.info().sources.clone())
        .unwrap_or_default();

    let width = 34;
    let columns: String = sources
        .iter()
        .map(String::as_str)
        .chain(["avg"])
        .map(|s| format!("{s:>8}"))
        .collect();
    println!(
        "SDR in dB (MDX definition, whole song) on {}",
        split_dir.display()
    );
    println!("{:<26} {:<width$} {columns}", "song", "system");
    let mut totals = vec![vec![0.0f64; sources.len()]; systems.len()];
    let mut seconds = 0.0;
    let started = Instant::now();
    for dir in &dirs {
        let song = CorpusSong::read(dir, &sources)
            .with_context(|| format!("reading {}", dir.display()))?;
        seconds += song.mixture.seconds();
        for ((label, separator), total) in systems.iter().zip(&mut totals) {
            let scores = match separator {
                Some(separator) => song
                    .model_sdr(separator)
                    .with_context(|| format!("separating {}", song.name))?,
                None => song.mixture_sdr(),
            };
            total.iter_mut().zip(&scores).for_each(|(t, s)| *t += s);
            println!(
                "{:<26} {label:<width$} {}",
                song.name,
                sdr_table_row(&scores)
            );
        }
    }
    println!(
        "\naverage over {} songs ({:.0} s of audio)",
        dirs.len(),
        seconds
    );
    println!("{:<26} {:<width$} {columns}", "", "system");
    for ((label, _), total) in systems.iter().zip(&totals) {
        let mean: Vec<f64> = total.iter().map(|t| t / dirs.len() as f64).collect();
        println!("{:<26} {label:<width$} {}", "", sdr_table_row(&mean));
    }
    eprintln!("evaluated in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}
