//! The files a job gives: each of its tracks (a stem, or `no_<stem>`: the song without it) in
//! MP3, FLAC or WAV, at settings the request chose. The model's stems are kept as lossless
//! masters ([`stemsep_audio::master_writer`]); every file is made from them ([`render`],
//! [`Mix`]), never by separating again.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use stemsep_audio::{ClipMode, Depth, Format};

use crate::job::{SongHash, Track};
use crate::queue::Queue;
use crate::storage::{ObjectKey, Storage};
use crate::{Error, Result};

/// The container of a file, named by its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// MP3, at the job's bitrate.
    Mp3,
    /// FLAC, 16 or 24 bit.
    Flac,
    /// WAV, 16 or 24 bit, or 32-bit float.
    Wav,
}

impl Kind {
    /// Every kind, in the order the API lists them.
    pub const ALL: [Kind; 3] = [Kind::Mp3, Kind::Flac, Kind::Wav];

    /// The extension, without the dot.
    pub fn extension(self) -> &'static str {
        match self {
            Kind::Mp3 => "mp3",
            Kind::Flac => "flac",
            Kind::Wav => "wav",
        }
    }
}

impl FromStr for Kind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.extension() == s)
            .ok_or_else(|| Error::Invalid {
                what: "format (mp3, flac or wav)",
                value: s.chars().take(40).collect(),
            })
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.extension())
    }
}

/// How a job's files are made unless a download says otherwise: set by the request that
/// created the job. Serialised as its record field ([`Settings::field`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Settings {
    /// MP3 bitrate, kbit/s (one of [`stemsep_audio::BITRATES_KBPS`]).
    pub mp3_kbps: u32,
    /// Sample format of FLAC (16 or 24 bit) and WAV (also 32-bit float) files.
    pub depth: Depth,
    /// What happens to samples beyond full scale.
    pub clip: ClipMode,
    /// Kinds made as soon as the job is done (MP3 always is), besides any made on demand.
    pub ready: Vec<Kind>,
}

impl Default for Settings {
    /// The lab's files: 320 kbit/s MP3; lossless files 24-bit (a DAW's working depth, and what
    /// a stem beyond full scale needs least rescaling in); demucs' default clip mode, rescale,
    /// which distorts nothing.
    fn default() -> Self {
        Settings {
            mp3_kbps: 320,
            depth: Depth::Int24,
            clip: ClipMode::Rescale,
            ready: vec![Kind::Mp3],
        }
    }
}

impl Settings {
    /// The format of a `kind` file at these settings; FLAC has no float samples, so a float
    /// depth is refused for it, as is a bitrate LAME lacks.
    pub fn format(&self, kind: Kind) -> Result<Format, stemsep_audio::AudioError> {
        let format = match kind {
            Kind::Mp3 => Format::Mp3 {
                kbps: self.mp3_kbps,
                preset: 2,
            },
            Kind::Flac => Format::Flac(self.depth),
            Kind::Wav => Format::Wav(self.depth),
        };
        format.validated()
    }

    /// Checks that every kind of `ready` can be made at these settings.
    pub fn validated(self) -> Result<Settings, stemsep_audio::AudioError> {
        for &kind in &self.ready {
            self.format(kind)?;
        }
        self.format(Kind::Mp3)?;
        Ok(self)
    }

    /// Bits as the API spells them: 16, 24, or 32 for float.
    pub fn bits(&self) -> u32 {
        self.depth.bits().into()
    }

    /// These settings with those a request or a download names instead: an MP3 bitrate, `bits`
    /// (16, 24, 32 for float) and a clip mode (`rescale`, `clamp`, `none`), each checked.
    pub fn overridden(
        &self,
        mp3_kbps: Option<u32>,
        bits: Option<u32>,
        clip: Option<&str>,
    ) -> Result<Settings> {
        let mut out = self.clone();
        if let Some(kbps) = mp3_kbps {
            out.mp3_kbps = kbps;
        }
        if let Some(bits) = bits {
            out.depth = depth(bits)?;
        }
        if let Some(clip) = clip {
            out.clip = clip.parse().map_err(|_| Error::Invalid {
                what: "clip mode (rescale, clamp or none)",
                value: clip.chars().take(40).collect(),
            })?;
        }
        Ok(out)
    }

    /// The file `track` in `kind` at these settings.
    pub fn rendition(
        &self,
        track: &Track,
        kind: Kind,
    ) -> Result<Rendition, stemsep_audio::AudioError> {
        Ok(Rendition {
            track: track.clone(),
            format: self.format(kind)?,
            clip: self.clip,
        })
    }

    /// The record's `output` field: `mp3=320;bits=24;clip=rescale;ready=mp3,flac`.
    pub fn field(&self) -> String {
        let ready: Vec<&str> = self.ready.iter().map(|k| k.extension()).collect();
        format!(
            "mp3={};bits={};clip={};ready={}",
            self.mp3_kbps,
            self.bits(),
            self.clip,
            ready.join(",")
        )
    }

    /// Reads [`Settings::field`] back.
    pub fn from_field(s: &str) -> Result<Settings> {
        let corrupt = || Error::Corrupt(format!("output settings {s:?}"));
        let mut out = Settings::default();
        for pair in s.split(';').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').ok_or_else(corrupt)?;
            match k {
                "mp3" => out.mp3_kbps = v.parse().map_err(|_| corrupt())?,
                "bits" => out.depth = depth(v.parse().map_err(|_| corrupt())?)?,
                "clip" => out.clip = v.parse().map_err(|_| corrupt())?,
                "ready" => {
                    out.ready = v
                        .split(',')
                        .filter(|k| !k.is_empty())
                        .map(str::parse)
                        .collect::<Result<_>>()?
                }
                _ => {}
            }
        }
        Ok(out)
    }
}

impl TryFrom<String> for Settings {
    type Error = Error;
    fn try_from(s: String) -> Result<Settings> {
        Settings::from_field(&s)
    }
}

impl From<Settings> for String {
    fn from(s: Settings) -> String {
        s.field()
    }
}

/// The depth the API's `bits` names: 16, 24, or 32 (float).
pub fn depth(bits: u32) -> Result<Depth> {
    Depth::from_bits(bits).ok_or_else(|| Error::Invalid {
        what: "bits (16, 24, or 32 for float WAV)",
        value: bits.to_string(),
    })
}

/// One file of a job: a track in a format, after a clip mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendition {
    /// A stem of the job's model or `no_<stem>`.
    pub track: Track,
    /// The container and its parameters.
    pub format: Format,
    /// What happens to samples beyond full scale.
    pub clip: ClipMode,
}

impl Rendition {
    /// The name of its object and of its entry in the job's list of made files:
    /// `<track>.<format>.<clip>.<ext>`, e.g. `no_vocals.flac24.rescale.flac`.
    pub fn slug(&self) -> String {
        // The format's own name, without the `:` an object name should not hold.
        let format = self.format.name().replace(':', "-");
        format!(
            "{}.{format}.{}.{}",
            self.track,
            self.clip,
            self.format.extension()
        )
    }

    /// Reads a [`Rendition::slug`] back; anything else is refused, so no stored name can become
    /// an object key it was not made from.
    pub fn from_slug(s: &str) -> Result<Rendition> {
        let invalid = || Error::Invalid {
            what: "file name",
            value: s.chars().take(80).collect(),
        };
        let mut parts = s.split('.');
        let (Some(track), Some(format), Some(clip), Some(ext), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(invalid());
        };
        let r = Rendition {
            track: track.parse()?,
            format: format
                .replacen("mp3-", "mp3:", 1)
                .parse::<Format>()
                .map_err(|_| invalid())?,
            clip: clip.parse().map_err(|_| invalid())?,
        };
        if r.format.extension() != ext || r.slug() != s {
            return Err(invalid());
        }
        Ok(r)
    }

    /// The model sources this file sums, out of `sources` (the job's model's): the track itself,
    /// or for `no_<stem>` every other one; `None` when the track is neither.
    pub fn parts(&self, sources: &[Track]) -> Option<Vec<Track>> {
        parts(&self.track, sources)
    }
}

/// The sources `track` sums: itself if it is one of `sources`, all the others for
/// `no_<source>`; `None` otherwise.
pub fn parts(track: &Track, sources: &[Track]) -> Option<Vec<Track>> {
    if sources.contains(track) {
        return Some(vec![track.clone()]);
    }
    let stem = track.name().strip_prefix("no_")?;
    sources.iter().any(|s| s.name() == stem).then(|| {
        sources
            .iter()
            .filter(|s| s.name() != stem)
            .cloned()
            .collect()
    })
}

/// Makes `rendition` from the masters of its parts, `master(part)` giving each one's bytes (a
/// part is asked for once, and its bytes dropped once added). CPU-bound: run it off an async
/// event loop.
pub fn render(
    rendition: &Rendition,
    sources: &[Track],
    mut master: impl FnMut(&Track) -> Result<bytes::Bytes>,
) -> Result<Vec<u8>> {
    let mut mix = Mix::default();
    for part in rendition.parts(sources).ok_or_else(|| Error::Invalid {
        what: "track of this model",
        value: rendition.track.to_string(),
    })? {
        mix.add(&master(&part)?)?;
    }
    mix.encode(rendition)
}

/// Stores a made file of `hash`, listing it for retention first (so retention never misses
/// one); returns its key.
pub async fn store(
    queue: &Queue,
    storage: &dyn Storage,
    hash: &SongHash,
    rendition: &Rendition,
    bytes: bytes::Bytes,
) -> Result<ObjectKey> {
    queue.add_file(hash, rendition).await?;
    let key = ObjectKey::rendition(hash, rendition);
    storage.put(&key, bytes).await?;
    Ok(key)
}

/// The sum of masters a file is made of, growing one master at a time.
#[derive(Default)]
pub struct Mix {
    channels: [Vec<f32>; 2],
    rate: Option<u32>,
}

impl Mix {
    /// Adds one master.
    pub fn add(&mut self, master: &[u8]) -> Result<()> {
        let rate = stemsep_audio::add_master(master, &mut self.channels)?;
        if self.rate.is_some_and(|r| r != rate) {
            return Err(Error::Corrupt(format!(
                "masters at {rate} Hz and {} Hz",
                self.rate.unwrap_or_default()
            )));
        }
        self.rate = Some(rate);
        Ok(())
    }

    /// The finished file.
    pub fn encode(&self, rendition: &Rendition) -> Result<Vec<u8>> {
        let rate = self.rate.ok_or_else(|| Error::Invalid {
            what: "mix of no stems",
            value: rendition.track.to_string(),
        })?;
        Ok(rendition
            .format
            .encode(&self.channels, rate, rendition.clip)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracks(names: &[&str]) -> Vec<Track> {
        names.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn slugs_round_trip_and_nothing_else_parses() {
        for (track, format, clip) in [
            ("vocals", Format::MP3_320, ClipMode::Rescale),
            ("no_vocals", Format::Flac(Depth::Int24), ClipMode::Clamp),
            ("guitar", Format::Wav(Depth::Float32), ClipMode::None),
            ("drums", Format::Wav(Depth::Int16), ClipMode::Rescale),
        ] {
            let r = Rendition {
                track: track.parse().unwrap(),
                format,
                clip,
            };
            assert_eq!(Rendition::from_slug(&r.slug()).unwrap(), r, "{}", r.slug());
        }
        for bad in [
            "vocals.mp3",
            "vocals.mp3-100.rescale.mp3",
            "vocals.flac32.rescale.flac",
            "vocals.flac24.rescale.wav",
            "../x.flac24.rescale.flac",
            "vocals.flac24.loud.flac",
            "vocals.flac24.rescale.flac.x",
            "vocals.mp3-0320.rescale.mp3",
        ] {
            assert!(Rendition::from_slug(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn no_stem_is_every_other_source() {
        let sources = tracks(&["vocals", "drums", "bass", "other"]);
        let t = |n: &str| n.parse::<Track>().unwrap();
        assert_eq!(parts(&t("drums"), &sources), Some(tracks(&["drums"])));
        assert_eq!(
            parts(&t("no_vocals"), &sources),
            Some(tracks(&["drums", "bass", "other"]))
        );
        assert_eq!(parts(&t("no_guitar"), &sources), None);
        assert_eq!(parts(&t("piano"), &sources), None);
    }

    #[test]
    fn settings_survive_the_record_and_refuse_float_flac() {
        let s = Settings {
            mp3_kbps: 192,
            depth: Depth::Int16,
            clip: ClipMode::Clamp,
            ready: vec![Kind::Mp3, Kind::Wav],
        };
        assert_eq!(Settings::from_field(&s.field()).unwrap(), s);
        assert_eq!(Settings::from_field("").unwrap(), Settings::default());
        let float = Settings {
            depth: Depth::Float32,
            ready: vec![Kind::Flac],
            ..Settings::default()
        };
        assert!(float.clone().validated().is_err());
        assert!(Settings {
            ready: vec![Kind::Wav],
            ..float
        }
        .validated()
        .is_ok());
    }
}
