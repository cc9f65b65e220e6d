//! The shipped demo model (model/default/htdemucs.onnx, trained by model/train.py) separates: on
//! 20 s of a held-out corpus song it never saw in training, every stem's SDR beats the mixture used
//! as the estimate by a margin and beats silence (0 dB), and the stems' average beats silence by a
//! margin. A model that puts the whole mix into one stem and nothing in the others fails. The
//! random-weight tiny model, run through the same check, must fail it too, so the check itself can
//! tell separation from noise.
//!
//! `make corpus-excerpt` (part of `make test`) renders the excerpt into `$STEMSEP_CORPUS_EXCERPT`
//! and is the one place that names it: the_fast_route, 110-130 s, the 20 s window of the held-out
//! songs where the quietest stem is loudest, chosen from the ground truth alone, so every stem is
//! there to be separated.

use std::path::{Path, PathBuf};

use stemsep_cli::quality::{sdr_table_row, CorpusSong};
use stemsep_cli::DEMO_MODEL;
use stemsep_engine::Separator;

/// dB by which each stem must beat the mixture used as its estimate.
const MIXTURE_MARGIN_DB: f64 = 3.0;
/// dB by which the stems' average must beat silence as the estimate (0 dB on every stem; each stem
/// must beat it too). A near-silent output scores ~0 dB and beats the mixture line on quiet stems,
/// so the mixture alone does not catch it.
const SILENCE_MARGIN_DB: f64 = 1.0;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The one held-out song `make corpus-excerpt` rendered.
fn excerpt(sources: &[String]) -> CorpusSong {
    let root = std::env::var_os("STEMSEP_CORPUS_EXCERPT").expect(
        "STEMSEP_CORPUS_EXCERPT is not set: `make corpus-excerpt` renders the held-out excerpt \
         (model/corpus.py) and `make test` sets it",
    );
    let split = PathBuf::from(root).join("test");
    let dirs = CorpusSong::dirs(&split)
        .unwrap_or_else(|e| panic!("{}: {e} (run `make corpus-excerpt`)", split.display()));
    let [dir] = &dirs[..] else {
        panic!(
            "{}: expected the one song `make corpus-excerpt` renders, found {dirs:?}",
            split.display()
        );
    };
    CorpusSong::read(dir, sources).unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
}

/// Per stem: (name, model SDR, mixture SDR).
fn scores(model: &Path) -> Vec<(String, f64, f64)> {
    let separator = Separator::load(model).unwrap();
    let sources = separator.info().sources.clone();
    let song = excerpt(&sources);
    let model_sdr = song.model_sdr(&separator).unwrap();
    let mixture_sdr = song.mixture_sdr();
    eprintln!("{}: {}", model.display(), sdr_table_row(&model_sdr));
    eprintln!("mixture as estimate: {}", sdr_table_row(&mixture_sdr));
    sources
        .into_iter()
        .zip(model_sdr.into_iter().zip(mixture_sdr))
        .map(|(s, (m, x))| (s, m, x))
        .collect()
}

/// What keeps `scores` from counting as separation, one line each; empty if it separates.
fn shortfalls(scores: &[(String, f64, f64)]) -> Vec<String> {
    let mut short: Vec<String> = scores
        .iter()
        .filter(|(_, model, mixture)| *model < mixture + MIXTURE_MARGIN_DB || *model <= 0.0)
        .map(|(s, model, mixture)| {
            format!(
                "{s}: {model:.2} dB, not {MIXTURE_MARGIN_DB} dB above the mixture \
                 ({mixture:.2} dB) and above silence (0 dB)"
            )
        })
        .collect();
    let average = scores.iter().map(|(_, m, _)| m).sum::<f64>() / scores.len() as f64;
    if average < SILENCE_MARGIN_DB {
        short.push(format!(
            "average {average:.2} dB, not {SILENCE_MARGIN_DB} dB above silence"
        ));
    }
    short
}

#[test]
fn demo_model_beats_mixture_and_silence_on_every_stem_of_a_held_out_song() {
    let scores = scores(Path::new(DEMO_MODEL));
    let short = shortfalls(&scores);
    assert!(
        short.is_empty(),
        "the demo model does not separate: {short:?}"
    );
}

#[test]
fn random_weights_do_not_pass_the_same_check() {
    let scores = scores(&repo().join("model/tiny/tiny.onnx"));
    assert!(
        !shortfalls(&scores).is_empty(),
        "the random-weight tiny model passed the separation check: it cannot tell separation \
         from noise"
    );
}
