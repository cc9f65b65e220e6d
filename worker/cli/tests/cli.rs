//! The `separate` command line as a user runs it: real files in, real files out, decoded back.
//! The random-weight tiny model keeps it quick; what is checked is the plumbing (names, formats,
//! mixes, shifts), not separation quality.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use stemsep_audio::{ClipMode, Depth, Format, PlanarAudio};
use stemsep_testkit::snr_db;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn separate(args: &[&str], dir: &Path) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_separate"))
        .args(args)
        .arg("-o")
        .arg(dir)
        .arg("--repo")
        .arg(repo().join("model/tiny"))
        .env_remove("STEMSEP_MODEL_PATH")
        .env_remove("STEMSEP_MODEL_DIR")
        .output()
        .expect("separate runs");
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    out
}

fn decode(path: &Path) -> PlanarAudio {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    stemsep_audio::decode(&bytes, Duration::from_secs(600))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The names of the files in `dir`, sorted.
fn files_in(dir: &Path) -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    files
}

/// Four seconds of a chord with a little noise, as a 16-bit WAV at `rate` Hz.
fn song_wav(dir: &Path, rate: u32) -> PathBuf {
    let n = 4 * rate as usize;
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    let mut noise = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    let channel = |f: f32, noise: &mut dyn FnMut() -> f32| -> Vec<f32> {
        (0..n)
            .map(|i| {
                let t = i as f32 / rate as f32;
                0.3 * (std::f32::consts::TAU * f * t).sin()
                    + 0.2 * (std::f32::consts::TAU * 1.5 * f * t).sin()
                    + 0.05 * noise()
            })
            .collect()
    };
    let audio = [channel(220.0, &mut noise), channel(330.0, &mut noise)];
    let bytes = Format::Wav(Depth::Int16)
        .encode(&audio, rate, ClipMode::None)
        .unwrap();
    let path = dir.join("my song.wav");
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn every_stem_as_wav_by_default_named_as_demucs_names_them() {
    let dir = tempfile::tempdir().unwrap();
    let song = song_wav(dir.path(), 44_100);
    let out = separate(&[song.to_str().unwrap(), "-n", "tiny"], dir.path());
    assert!(out.status.success());
    for stem in ["drums", "bass", "other", "vocals"] {
        let path = dir.path().join(format!("tiny/my song/{stem}.wav"));
        let audio = decode(&path);
        assert_eq!(audio.sample_rate, 44_100);
        assert_eq!(audio.channels.len(), 2);
        assert_eq!(audio.len(), 4 * 44_100, "{stem}: the input's length");
    }
}

#[test]
fn two_stems_add_up_to_the_stems_in_every_format() {
    let dir = tempfile::tempdir().unwrap();
    let song = song_wav(dir.path(), 44_100);
    let song = song.to_str().unwrap();
    // The reference: every stem as float, untouched.
    let exact = dir.path().join("exact");
    let ok = separate(
        &[song, "-n", "tiny", "--float32", "--clip-mode", "none"],
        &exact,
    );
    assert!(ok.status.success());
    let stems: Vec<PlanarAudio> = ["drums", "bass", "other", "vocals"]
        .iter()
        .map(|s| decode(&exact.join(format!("tiny/my song/{s}.wav"))))
        .collect();
    let sum_of = |which: &[usize], c: usize| -> Vec<f32> {
        (0..stems[0].len())
            .map(|i| which.iter().map(|&s| stems[s].channels[c][i]).sum())
            .collect()
    };
    // Clamp, not rescale: rescaling would scale the files against the float reference.
    for (flags, ext, floor_db) in [
        (vec!["--float32"], "wav", 100.0),
        (vec!["--flac", "--int24"], "flac", 80.0),
        (vec!["--flac"], "flac", 40.0),
        // The tiny model's stems are white noise, whose band above LAME's 20 kHz low-pass alone
        // is a tenth of it; MP3 of music-like signals is held to 70 dB in stemsep-audio's tests.
        (vec!["--mp3", "--mp3-bitrate", "320"], "mp3", 6.0),
    ] {
        let out_dir = dir.path().join(ext).join(flags.len().to_string());
        let mut args = vec![
            song,
            "-n",
            "tiny",
            "--two-stems",
            "vocals",
            "--clip-mode",
            "clamp",
        ];
        args.extend(&flags);
        assert!(separate(&args, &out_dir).status.success(), "{flags:?}");
        assert_eq!(
            files_in(&out_dir.join("tiny/my song")),
            [format!("no_vocals.{ext}"), format!("vocals.{ext}")]
        );
        let vocals = decode(&out_dir.join(format!("tiny/my song/vocals.{ext}")));
        let rest = decode(&out_dir.join(format!("tiny/my song/no_vocals.{ext}")));
        assert_eq!(vocals.len(), stems[0].len(), "{flags:?}");
        assert_eq!(rest.len(), stems[0].len(), "{flags:?}");
        for c in 0..2 {
            let (voice, others) = (sum_of(&[3], c), sum_of(&[0, 1, 2], c));
            // Clamping at ±0.99 moves samples beyond it: compare where nothing was clamped.
            let keep: Vec<usize> = (0..voice.len())
                .filter(|&i| voice[i].abs() < 0.99 && others[i].abs() < 0.99)
                .collect();
            assert!(
                keep.len() > voice.len() / 4,
                "{flags:?}: most samples are clamped"
            );
            let pick = |x: &[f32]| -> Vec<f32> { keep.iter().map(|&i| x[i]).collect() };
            let (voice, others) = (pick(&voice), pick(&others));
            let (v, o) = (pick(&vocals.channels[c]), pick(&rest.channels[c]));
            // Each file is its stems within the codec's error ...
            let (snr_v, snr_o) = (snr_db(&voice, &v), snr_db(&others, &o));
            // ... and the two add up to all stems within the two files' errors together:
            // ‖(v + o) − (voice + others)‖² ≤ 2 (‖v − voice‖² + ‖o − others‖²).
            let err = |a: &[f32], b: &[f32]| -> f64 {
                a.iter()
                    .zip(b)
                    .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
                    .sum()
            };
            let sum: Vec<f32> = voice.iter().zip(&others).map(|(a, b)| a + b).collect();
            let got: Vec<f32> = v.iter().zip(&o).map(|(a, b)| a + b).collect();
            let sum_snr = snr_db(&sum, &got);
            eprintln!(
                "{flags:?} channel {c}: vocals {snr_v:.1} dB, no_vocals {snr_o:.1} dB, their sum \
                 against all stems {sum_snr:.1} dB"
            );
            assert!(
                snr_v > floor_db && snr_o > floor_db,
                "{flags:?}: {snr_v:.1}, {snr_o:.1} dB"
            );
            assert!(
                err(&got, &sum) <= 2.0 * (err(&v, &voice) + err(&o, &others)) + 1e-9,
                "{flags:?}: vocals + no_vocals is not the stems' sum"
            );
        }
    }
}

#[test]
fn clipping_is_rescaled_or_clamped_never_wrapped() {
    let dir = tempfile::tempdir().unwrap();
    let song = song_wav(dir.path(), 44_100);
    let song = song.to_str().unwrap();
    for mode in ["rescale", "clamp", "none"] {
        let out_dir = dir.path().join(mode);
        let ok = separate(&[song, "-n", "tiny", "--clip-mode", mode], &out_dir);
        assert!(ok.status.success());
        let vocals = decode(&out_dir.join("tiny/my song/vocals.wav"));
        let peak = vocals
            .channels
            .iter()
            .flatten()
            .fold(0.0f32, |m, x| m.max(x.abs()));
        assert!(
            peak <= 1.0,
            "{mode}: 16-bit holds nothing beyond full scale"
        );
        if mode == "clamp" {
            assert!(peak <= 0.99 + 1e-4, "clamp: {peak}");
        }
    }
}

#[test]
fn shifts_are_reproducible_and_change_the_result() {
    let dir = tempfile::tempdir().unwrap();
    let song = song_wav(dir.path(), 44_100);
    let song = song.to_str().unwrap();
    let run = |name: &str, extra: &[&str]| -> Vec<u8> {
        let out_dir = dir.path().join(name);
        let mut args = vec![song, "-n", "tiny", "--float32"];
        args.extend(extra);
        assert!(separate(&args, &out_dir).status.success());
        std::fs::read(out_dir.join("tiny/my song/vocals.wav")).unwrap()
    };
    let plain = run("plain", &[]);
    let shifted = run("a", &["--shifts", "2", "--seed", "5"]);
    assert_eq!(
        shifted,
        run("b", &["--shifts", "2", "--seed", "5"]),
        "same seed, same bytes"
    );
    assert_ne!(shifted, plain, "shifted passes are not the unshifted one");
    assert_ne!(
        shifted,
        run("c", &["--shifts", "2", "--seed", "6"]),
        "another seed"
    );
}

#[test]
fn several_files_other_formats_and_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let wav = song_wav(dir.path(), 48_000);
    let mp3 = dir.path().join("tone.mp3");
    std::fs::write(&mp3, stemsep_testkit::tone_mp3(440.0, 3.0, 1)).unwrap();
    let bad = dir.path().join("bad.flac");
    std::fs::write(&bad, b"fLaC but nothing else").unwrap();
    let out = separate(
        &[
            wav.to_str().unwrap(),
            bad.to_str().unwrap(),
            mp3.to_str().unwrap(),
            "-n",
            "tiny",
            "--mp3",
            "--mp3-bitrate",
            "128",
            "--filename",
            "{track}.{trackext}-{stem}.{ext}",
        ],
        dir.path(),
    );
    assert!(!out.status.success(), "a failed file fails the call");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad.flac"), "{stderr}");
    // The good files are written all the same, at the model's rate.
    let from_48k = decode(&dir.path().join("tiny/my song.wav-bass.mp3"));
    assert_eq!(from_48k.sample_rate, 44_100);
    assert!(
        (from_48k.len() as i64 - 4 * 44_100).abs() <= 1,
        "{}",
        from_48k.len()
    );
    assert!(dir.path().join("tiny/tone.mp3-vocals.mp3").is_file());
    assert!(!dir.path().join("tiny/bad.flac-vocals.mp3").exists());
}

#[test]
fn models_are_listed_and_bad_options_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = separate(&["--list-models"], dir.path());
    assert!(out.status.success());
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        listing.contains("tiny (drums, bass, other, vocals"),
        "{listing}"
    );
    assert!(listing.contains("6s"), "{listing}");
    let song = song_wav(dir.path(), 44_100);
    let song = song.to_str().unwrap();
    for (args, says) in [
        (vec![song, "-n", "nope"], "--list-models"),
        (
            vec![song, "-n", "tiny", "--two-stems", "guitar"],
            "drums, bass, other, vocals",
        ),
        (
            vec![song, "-n", "tiny", "--flac", "--float32"],
            "FLAC holds integers",
        ),
        (
            vec![song, "-n", "tiny", "--mp3", "--mp3-bitrate", "100"],
            "bitrate",
        ),
        (vec![song, "-n", "tiny", "--overlap", "1"], "overlap"),
        (vec![song, "-n", "tiny", "--filename", "{name}"], "{name}"),
    ] {
        let out = separate(&args, dir.path());
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}

#[test]
fn minus_is_the_song_less_the_stem() {
    let dir = tempfile::tempdir().unwrap();
    let song = song_wav(dir.path(), 44_100);
    let input = decode(&song);
    let song = song.to_str().unwrap();
    let exact = ["-n", "tiny", "--float32", "--clip-mode", "none"];
    let mut args = vec![song, "--two-stems", "drums", "--other-method", "minus"];
    args.extend(exact);
    assert!(separate(&args, dir.path()).status.success());
    assert_eq!(
        files_in(&dir.path().join("tiny/my song")),
        ["drums.wav", "minus_drums.wav"]
    );
    let drums = decode(&dir.path().join("tiny/my song/drums.wav"));
    let minus = decode(&dir.path().join("tiny/my song/minus_drums.wav"));
    for c in 0..2 {
        let want: Vec<f32> = input.channels[c]
            .iter()
            .zip(&drums.channels[c])
            .map(|(x, d)| x - d)
            .collect();
        let snr = snr_db(&want, &minus.channels[c]);
        assert!(
            snr > 100.0,
            "channel {c}: minus_drums is the song less drums at {snr:.1} dB"
        );
    }
}
