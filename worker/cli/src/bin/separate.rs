//! `separate`: songs in, stems out, through the same engine the worker uses, with demucs'
//! command line:
//!
//! ```text
//! separate song.mp3 other.flac [-n htdemucs_ft] [--two-stems vocals] [--flac | --mp3]
//!          [--int24 | --float32] [--shifts 2] [-o separated] [--filename '{track}/{stem}.{ext}']
//! ```
//! writes `separated/<model>/<track>/<stem>.wav` for each stem of the model (htdemucs: drums,
//! bass, other, vocals). `-n` names a model of the model directory (`--repo`, else
//! `$STEMSEP_MODEL_DIR`, else `data/models`) or is a path; without a pretrained htdemucs the
//! checkout's demo model (`model/default/htdemucs.onnx`, trained on synthetic renders) stands in.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use stemsep_audio::{ClipMode, Depth, Format};
use stemsep_cli::outputs::{plan, OtherMethod, Output, Template};
use stemsep_cli::DEMO_MODEL;
use stemsep_engine::{CollectSink, Manifest, SeparateOptions, Separator};

/// Separate songs (MP3, WAV, FLAC, Ogg Vorbis, AAC/M4A) into the stems of a Demucs model.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The songs to separate.
    #[arg(required_unless_present = "list_models")]
    tracks: Vec<PathBuf>,
    /// Model: a name in the model directory, or the path of a model directory, manifest or
    /// single `.onnx` core.
    #[arg(
        short = 'n',
        long,
        visible_alias = "model",
        env = "STEMSEP_MODEL_PATH",
        default_value = "htdemucs"
    )]
    name: String,
    /// Directory of models to find `-n` in (`<name>/manifest.json` or `<name>.onnx`).
    #[arg(long, env = "STEMSEP_MODEL_DIR", default_value = "data/models")]
    repo: PathBuf,
    /// List the models in the model directory and exit.
    #[arg(long)]
    list_models: bool,
    /// Folder for the stems: they go into `<out>/<model>/`.
    #[arg(short, long, default_value = "separated")]
    out: PathBuf,
    /// Name of each output file under `<out>/<model>/`: `{track}` (the input's name without
    /// its extension), `{trackext}`, `{stem}`, `{ext}`.
    #[arg(long, default_value = "{track}/{stem}.{ext}")]
    filename: String,
    /// Passes over the song after random shifts of up to half a second, averaged (demucs'
    /// shifts; its command line defaults to 1, this one to none so that it gives the service's
    /// samples). Each costs a whole separation.
    #[arg(long, default_value_t = 0)]
    shifts: usize,
    /// Seed of the random shifts: the same seed, the same stems.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Fraction of a segment consecutive segments share [default: the model's, 0.25].
    #[arg(long)]
    overlap: Option<f64>,
    /// Only the stem STEM and its complement (`no_STEM`, see --other-method).
    #[arg(long, value_name = "STEM")]
    two_stems: Option<String>,
    /// How --two-stems forms the complement: the other stems added (no_STEM), the song less the
    /// stem (minus_STEM), or none.
    #[arg(long, value_enum, default_value_t = OtherMethod::Add)]
    other_method: OtherMethod,
    /// 24-bit integer samples (WAV, FLAC).
    #[arg(long, conflicts_with = "float32")]
    int24: bool,
    /// 32-bit float samples (WAV): nothing clips.
    #[arg(long)]
    float32: bool,
    /// Keeping samples beyond full scale from clipping: scale the whole file down when needed
    /// (rescale), clamp each sample to ±0.99 (clamp), or leave them (none: saturating in integer
    /// formats and MP3, kept in float WAV).
    #[arg(long, default_value = "rescale")]
    clip_mode: ClipMode,
    /// FLAC instead of WAV.
    #[arg(long, conflicts_with = "mp3")]
    flac: bool,
    /// MP3 instead of WAV.
    #[arg(long)]
    mp3: bool,
    /// MP3 bitrate, kbit/s.
    #[arg(long, default_value_t = 320)]
    mp3_bitrate: u32,
    /// MP3 encoder preset: 2 best quality … 7 fastest.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(2..=7))]
    mp3_preset: u8,
    /// Refuse songs longer than this many minutes.
    #[arg(long, default_value_t = 20.0)]
    max_minutes: f64,
}

impl Args {
    fn format(&self) -> anyhow::Result<Format> {
        let depth = match (self.int24, self.float32) {
            (true, _) => Depth::Int24,
            (_, true) => Depth::Float32,
            _ => Depth::Int16,
        };
        let format = match (self.mp3, self.flac) {
            (true, _) => Format::Mp3 {
                kbps: self.mp3_bitrate,
                preset: self.mp3_preset,
            },
            (_, true) => Format::Flac(depth),
            _ => Format::Wav(depth),
        };
        Ok(format.validated()?)
    }
}

fn main() -> ExitCode {
    // SAFETY: the first statement of main, before this process starts any thread.
    unsafe { stemsep_engine::keep_freed_memory() };
    match run(Args::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("separate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Separates every track; false when any failed (the others are still written).
fn run(args: Args) -> anyhow::Result<bool> {
    if args.list_models {
        list_models(&args.repo)?;
        return Ok(true);
    }
    anyhow::ensure!(
        args.max_minutes.is_finite() && args.max_minutes > 0.0,
        "--max-minutes must be a positive number"
    );
    let max_duration = Duration::try_from_secs_f64(args.max_minutes * 60.0)
        .context("--max-minutes is out of range")?;
    let format = args.format()?;
    let template = Template::new(&args.filename).map_err(anyhow::Error::msg)?;
    let started = Instant::now();
    let model = resolve(&args.name, &args.repo)?;
    let separator = Separator::load(&model)?;
    let info = separator.info();
    let outputs = plan(&info.sources, args.two_stems.as_deref(), args.other_method)
        .map_err(anyhow::Error::msg)?;
    eprintln!(
        "model {} ({}; {} member(s), {:.1} s segments) loaded in {:.1} s",
        info.name,
        info.sources.join(", "),
        info.members,
        info.segment_samples as f64 / info.sample_rate as f64,
        started.elapsed().as_secs_f64()
    );
    let out = args.out.join(&info.name);
    eprintln!("separated tracks go to {}", out.display());
    let options = SeparateOptions {
        shifts: args.shifts,
        seed: args.seed,
        overlap: args.overlap,
    };
    let job = Job {
        separator: &separator,
        outputs: &outputs,
        options,
        max_duration,
        format,
        clip: args.clip_mode,
    };
    let mut all_ok = true;
    for track in &args.tracks {
        let written = job.separate(track).and_then(|files| {
            let mut paths = Vec::new();
            for (name, bytes) in files {
                let path = out.join(template.path(track, &name, format.extension()));
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)
                        .with_context(|| format!("creating {}", dir.display()))?;
                }
                std::fs::write(&path, &bytes)
                    .with_context(|| format!("writing {}", path.display()))?;
                paths.push((path, bytes.len()));
            }
            Ok(paths)
        });
        match written {
            Ok(paths) => {
                for (path, size) in paths {
                    eprintln!("  {} ({} KiB)", path.display(), size / 1024);
                }
            }
            Err(e) => {
                all_ok = false;
                eprintln!("separate: {}: {e:#}", track.display());
            }
        }
    }
    Ok(all_ok)
}

/// What every track of one call is separated with.
struct Job<'a> {
    separator: &'a Separator,
    outputs: &'a [Output],
    options: SeparateOptions,
    max_duration: Duration,
    format: Format,
    clip: ClipMode,
}

impl Job<'_> {
    /// Separates `track` and encodes its outputs: `(stem name, file bytes)` in plan order.
    fn separate(&self, track: &Path) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
        let info = self.separator.info();
        let bytes = std::fs::read(track).with_context(|| format!("reading {}", track.display()))?;
        let audio = stemsep_audio::decode(&bytes, self.max_duration)?;
        let seconds = audio.seconds();
        let bar = ProgressBar::new(100).with_style(
            ProgressStyle::with_template(
                "{msg} [{bar:40}] {pos:>3}% {elapsed_precise} (eta {eta})",
            )
            .expect("static template")
            .progress_chars("=> "),
        );
        bar.set_message(track.display().to_string());
        bar.enable_steady_tick(Duration::from_millis(200));
        let started = Instant::now();
        // At the model's rate here (the engine would resample it anyway), so that a minus mix
        // takes the song as the model saw it without resampling it a second time.
        let audio = self.separator.to_model_rate(audio)?;
        let song = match self.outputs.iter().any(|o| o.with_song) {
            true => audio.channels.clone(),
            false => Vec::new(),
        };
        let mut sink = CollectSink::default();
        let separated = self
            .separator
            .separate_with(audio, &self.options, &mut sink, &|p: u8| {
                bar.set_position(p.into())
            });
        bar.finish_and_clear();
        separated?;
        let elapsed = started.elapsed().as_secs_f64();
        eprintln!(
            "{}: {seconds:.1} s of audio separated in {elapsed:.1} s (RTF {:.2})",
            track.display(),
            elapsed / seconds.max(1e-9)
        );
        let stems = sink.stems;
        // The outputs encode side by side, one thread each.
        std::thread::scope(|scope| {
            let encoders: Vec<_> = self
                .outputs
                .iter()
                .map(|output| {
                    let (stems, song) = (&stems, &song);
                    scope.spawn(move || -> anyhow::Result<(String, Vec<u8>)> {
                        let samples = output.mix(stems, song);
                        let bytes = self.format.encode(&samples, info.sample_rate, self.clip)?;
                        Ok((output.name.clone(), bytes))
                    })
                })
                .collect();
            encoders
                .into_iter()
                .map(|e| {
                    e.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("an encoder panicked")))
                })
                .collect()
        })
    }
}

/// The model `name` stands for: an existing path, or a model of `repo`; the demo model when
/// htdemucs is asked for and the directory has none.
fn resolve(name: &str, repo: &Path) -> anyhow::Result<PathBuf> {
    let path = Path::new(name);
    if path.exists() {
        return Ok(path.to_path_buf());
    }
    for candidate in [repo.join(name), repo.join(format!("{name}.onnx"))] {
        if candidate.exists() {
            return Ok(candidate);
        }
    }
    if name == "htdemucs" {
        eprintln!(
            "no htdemucs in {}: using the demo model {DEMO_MODEL}, trained on synthetic renders \
             (README.md, Models: how to export the pretrained htdemucs)",
            repo.display()
        );
        return Ok(PathBuf::from(DEMO_MODEL));
    }
    bail!(
        "model {name:?} is neither a path nor a model in {} (--list-models shows them)",
        repo.display()
    )
}

/// Prints the models of `repo`, as demucs' `--list-models` does, with their stems.
fn list_models(repo: &Path) -> anyhow::Result<()> {
    let found = Manifest::discover(repo)
        .with_context(|| format!("listing the models in {}", repo.display()))?;
    let (mut bags, mut singles) = (Vec::new(), Vec::new());
    for model in found {
        match model {
            Ok(m) => {
                let line = format!(
                    "{} ({}; {:?} weights)",
                    m.name,
                    m.sources.join(", "),
                    m.weights
                );
                match m.members.len() {
                    1 => singles.push(line),
                    n => bags.push(format!("{line}, {n} members")),
                }
            }
            Err(e) => eprintln!("separate: {e}"),
        }
    }
    println!("Bag of models:\n    {}", bags.join("\n    "));
    println!("Single models:\n    {}", singles.join("\n    "));
    Ok(())
}
