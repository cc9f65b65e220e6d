//! `separate`: one song in, one MP3 per stem out, through the same engine the worker uses.
//!
//! ```text
//! separate song.mp3 -o out/ [--model htdemucs.onnx] [--bitrate 320] [--max-minutes 20]
//! ```
//! writes `out/<source>.mp3` for each of the model's sources (htdemucs: drums, bass, other,
//! vocals). The model is
//! `--model`, else `$STEMSEP_MODEL_PATH`, else the checkout's demo model
//! (`model/default/htdemucs.onnx`, trained on synthetic renders: for real music export the
//! pretrained htdemucs as README.md's "Models" shows).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use stemsep_cli::DEMO_MODEL;
use stemsep_engine::{Mp3Sink, Separator};

/// Separate a song (MP3, WAV or FLAC) into one MP3 per stem of the model.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The song to separate.
    song: PathBuf,
    /// Directory for one `<stem>.mp3` per source of the model (created if missing).
    #[arg(short, long)]
    output: PathBuf,
    /// The split HT-Demucs ONNX export (see model/README.md) [default: the checkout's demo model,
    /// model/default/htdemucs.onnx].
    #[arg(long, env = "STEMSEP_MODEL_PATH")]
    model: Option<PathBuf>,
    /// MP3 bitrate of the stems, in kbit/s.
    #[arg(long, default_value_t = 320)]
    bitrate: u32,
    /// Refuse songs longer than this many minutes.
    #[arg(long, default_value_t = 20.0)]
    max_minutes: f64,
}

fn main() -> ExitCode {
    // SAFETY: the first statement of main, before this process starts any thread.
    unsafe { stemsep_engine::keep_freed_memory() };
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("separate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.max_minutes.is_finite() && args.max_minutes > 0.0,
        "--max-minutes must be a positive number"
    );
    let input =
        std::fs::read(&args.song).with_context(|| format!("reading {}", args.song.display()))?;
    let started = Instant::now();
    let model = args.model.unwrap_or_else(|| {
        let demo = PathBuf::from(DEMO_MODEL);
        eprintln!(
            "no --model or STEMSEP_MODEL_PATH: using the demo model {}, trained on synthetic \
             renders (README.md, Models: how to export the pretrained htdemucs)",
            demo.display()
        );
        demo
    });
    let separator = Separator::load(&model)?;
    let info = separator.info();
    eprintln!(
        "model {} ({} sources, {:.1} s segments) loaded in {:.1} s",
        info.name,
        info.sources.len(),
        info.segment_samples as f64 / info.sample_rate as f64,
        started.elapsed().as_secs_f64()
    );
    let max_duration = Duration::try_from_secs_f64(args.max_minutes * 60.0)
        .context("--max-minutes is out of range")?;
    let mut sink = Mp3Sink::per_source(info.sources.len(), info.sample_rate, args.bitrate)?;
    let bar = ProgressBar::new(100).with_style(
        ProgressStyle::with_template(
            "{spinner} separating [{bar:40}] {pos:>3}% {elapsed_precise} (eta {eta})",
        )
        .expect("static template")
        .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let started = Instant::now();
    let separated = stemsep_audio::decode(&input, max_duration)
        .map_err(anyhow::Error::from)
        .and_then(|audio| {
            separator.separate(audio, &mut sink, &|p: u8| bar.set_position(p.into()))?;
            Ok(sink.finish()?)
        });
    bar.finish_and_clear();
    let stems = separated.with_context(|| format!("separating {}", args.song.display()))?;
    std::fs::create_dir_all(&args.output)
        .with_context(|| format!("creating {}", args.output.display()))?;
    for (source, mp3) in info.sources.iter().zip(&stems) {
        let path = args.output.join(format!("{source}.mp3"));
        std::fs::write(&path, mp3).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("{} ({} KiB)", path.display(), mp3.len() / 1024);
    }
    eprintln!("separated in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}
