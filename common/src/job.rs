//! The job record: song hash, tracks, state, and what the client asked for.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha224};
use std::fmt;
use std::str::FromStr;

use crate::output::Settings;
use crate::{Error, Result};

/// The model used when a request names none (the lab clients never do).
pub const DEFAULT_MODEL: &str = "htdemucs";

/// A song's identity: the SHA-224 hex digest (56 lowercase hex chars) of the MP3 bytes, with the
/// model name mixed in for any model but the default so different models never share stems.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SongHash(String);

impl SongHash {
    /// Hash of `mp3` separated by `model`. For [`DEFAULT_MODEL`] this is exactly the lab's songhash,
    /// `sha224(mp3).hexdigest()`.
    pub fn compute(mp3: &[u8], model: &str) -> Self {
        SongHash::with_shifts(mp3, model, 0)
    }

    /// Hash of `audio` separated by `model` with `shifts` random shifts: [`SongHash::compute`]
    /// for 0, with the count mixed in otherwise (the stems differ, so the hash must).
    pub fn with_shifts(audio: &[u8], model: &str, shifts: u32) -> Self {
        let mut h = Sha224::new();
        h.update(audio);
        if model != DEFAULT_MODEL {
            // A separator byte that cannot end an MP3 frame keeps "song+model" unambiguous.
            h.update(b"\0stemsep-model:");
            h.update(model.as_bytes());
        }
        if shifts != 0 {
            h.update(b"\0stemsep-shifts:");
            h.update(shifts.to_string().as_bytes());
        }
        SongHash(hex::encode(h.finalize()))
    }

    /// The hex digest.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for SongHash {
    type Err = Error;
    /// Accepts only 56 hex digits, so a hash can never carry a path or a Redis key trick.
    fn from_str(s: &str) -> Result<Self> {
        if s.len() == 56 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(SongHash(s.to_ascii_lowercase()))
        } else {
            Err(Error::Invalid {
                what: "song hash",
                value: s.chars().take(80).collect(),
            })
        }
    }
}

impl TryFrom<String> for SongHash {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<SongHash> for String {
    fn from(h: SongHash) -> String {
        h.0
    }
}

impl fmt::Display for SongHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One output stem of a job: a source of its model (`vocals`, `guitar`, …), as named in URLs,
/// object keys and callbacks.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Track(String);

impl Track {
    /// The lab's four stems, in the order the API lists them: every 4-stem model of the Demucs
    /// family has exactly these.
    pub const LAB: [&'static str; 4] = ["vocals", "drums", "bass", "other"];

    /// [`Track::LAB`] as tracks.
    pub fn lab() -> Vec<Track> {
        Track::LAB.iter().map(|&t| Track(t.to_owned())).collect()
    }

    /// A model's sources as the API lists them: the lab's four first, in the lab's order, then
    /// any others in the model's order.
    pub fn of_sources<S: AsRef<str>>(sources: &[S]) -> Result<Vec<Track>> {
        let mut tracks = sources
            .iter()
            .map(|s| s.as_ref().parse())
            .collect::<Result<Vec<Track>>>()?;
        tracks.sort_by_key(|t| {
            Track::LAB
                .iter()
                .position(|&l| l == t.0)
                .unwrap_or(Track::LAB.len())
        });
        Ok(tracks)
    }

    /// The lowercase name, as in URLs and file names.
    pub fn name(&self) -> &str {
        &self.0
    }

    /// `no_<this>`: the song without this stem.
    pub fn without(&self) -> Track {
        Track(format!("no_{}", self.0))
    }
}

impl FromStr for Track {
    type Err = Error;
    /// A stem name (lowercase letters, digits, `_`), with or without `.mp3`; `base` is the lab
    /// text's spelling of bass.
    fn from_str(s: &str) -> Result<Self> {
        let stem = s.strip_suffix(".mp3").unwrap_or(s);
        let stem = if stem == "base" { "bass" } else { stem };
        if stemsep_manifest::valid_stem_name(stem) {
            Ok(Track(stem.to_owned()))
        } else {
            Err(Error::Invalid {
                what: "track",
                value: s.chars().take(80).collect(),
            })
        }
    }
}

impl TryFrom<String> for Track {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<Track> for String {
    fn from(t: Track) -> String {
        t.0
    }
}

impl fmt::Display for Track {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waiting in `toWorker`.
    Queued,
    /// Claimed by a worker that holds its lease.
    Running,
    /// All four stems are in storage.
    Done,
    /// Gave up after the configured number of attempts; in the dead-letter list.
    Failed,
}

impl JobState {
    /// The lowercase name stored in Redis.
    pub fn name(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Done => "done",
            JobState::Failed => "failed",
        }
    }
}

impl FromStr for JobState {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "queued" => Ok(JobState::Queued),
            "running" => Ok(JobState::Running),
            "done" => Ok(JobState::Done),
            "failed" => Ok(JobState::Failed),
            _ => Err(Error::Corrupt(format!("job state {s:?}"))),
        }
    }
}

/// Where to POST when the job ends, and opaque data echoed back (the lab's `callback` object).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Callback {
    /// An http or https URL.
    pub url: String,
    /// Anything the client wants back, echoed verbatim.
    #[serde(default)]
    pub data: serde_json::Value,
}

/// One submission of a song: names its uploaded input (`queue/<hash>-<upload>.mp3`), so the
/// input of a resubmission is never the object a finished attempt deletes. 16 lowercase hex
/// digits from the operating system's random source.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UploadId(String);

impl UploadId {
    /// A fresh random id.
    pub fn random() -> Self {
        let mut bytes = [0u8; 8];
        // Without the OS's random source there is no safe id to make; that machine is unusable.
        getrandom::fill(&mut bytes).expect("the operating system provides random bytes");
        UploadId(hex::encode(bytes))
    }

    /// The hex digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for UploadId {
    type Err = Error;
    /// Accepts 1 to 32 hex digits only: the id becomes part of an object name.
    fn from_str(s: &str) -> Result<Self> {
        if (1..=32).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(UploadId(s.to_ascii_lowercase()))
        } else {
            Err(Error::Invalid {
                what: "upload id",
                value: s.chars().take(80).collect(),
            })
        }
    }
}

impl TryFrom<String> for UploadId {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<UploadId> for String {
    fn from(u: UploadId) -> String {
        u.0
    }
}

impl fmt::Display for UploadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The job record kept in the Redis hash `job:<hash>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// The song's identity.
    pub hash: SongHash,
    /// Model name (a model in the worker's model directory).
    pub model: String,
    /// The model's stems, as the API lists them (see [`Track::of_sources`]); empty when they
    /// were not known at submission, which stands for the lab's four.
    pub stems: Vec<Track>,
    /// demucs' `--two-stems`: the job's tracks are this stem and `no_<stem>` instead of every
    /// stem (the others can still be fetched).
    pub two_stems: Option<Track>,
    /// Random time shifts averaged (demucs' `--shifts`; 0: one pass, no shift).
    pub shifts: u32,
    /// How the job's files are made unless a download says otherwise.
    pub output: Settings,
    /// Optional completion callback.
    pub callback: Option<Callback>,
    /// The submission this record belongs to; `None` for records written before uploads had
    /// ids (their input is `queue/<hash>.mp3`).
    pub upload: Option<UploadId>,
    /// Current state.
    pub state: JobState,
    /// Percent of segments separated, 0–100.
    pub progress: u8,
    /// How many times a worker has claimed the job.
    pub attempts: u32,
    /// Why the last attempt failed, or why the callback was refused/failed.
    pub error: Option<String>,
    /// Outcome of the callback, once fired (e.g. "delivered", "refused: private address").
    pub callback_status: Option<String>,
    /// Unix seconds when first submitted.
    pub created_at: u64,
    /// Unix seconds of the last state change.
    pub updated_at: u64,
}

impl Job {
    /// A fresh queued job, with a new [`UploadId`].
    pub fn new(hash: SongHash, model: String, callback: Option<Callback>) -> Self {
        let now = unix_now();
        Job {
            hash,
            model,
            stems: Vec::new(),
            two_stems: None,
            shifts: 0,
            output: Settings::default(),
            callback,
            upload: Some(UploadId::random()),
            state: JobState::Queued,
            progress: 0,
            attempts: 0,
            error: None,
            callback_status: None,
            created_at: now,
            updated_at: now,
        }
    }
}

impl Job {
    /// The model's stems: the recorded ones, or the lab's four when they were not recorded.
    pub fn sources(&self) -> Vec<Track> {
        if self.stems.is_empty() {
            Track::lab()
        } else {
            self.stems.clone()
        }
    }

    /// The tracks this job gives (its MP3s when done, its zip): the model's stems, or with
    /// [`Job::two_stems`] that stem and `no_<stem>`.
    pub fn tracks(&self) -> Vec<Track> {
        match &self.two_stems {
            Some(stem) => vec![stem.clone(), stem.without()],
            None => self.sources(),
        }
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_model_hash_is_plain_sha224() {
        // sha224("") from FIPS 180-4 test vectors.
        assert_eq!(
            SongHash::compute(b"", DEFAULT_MODEL).as_str(),
            "d14a028c2a3a2bc9476102bb288234c415a2b01f828ea62ac5b3e42f"
        );
        assert_ne!(
            SongHash::compute(b"", DEFAULT_MODEL),
            SongHash::compute(b"", "tiny")
        );
    }

    #[test]
    fn hashes_reject_path_tricks() {
        for bad in [
            "../etc/passwd",
            "",
            "zz",
            &"a".repeat(55),
            &"a".repeat(57),
            &format!("{}/", "a".repeat(55)),
        ] {
            assert!(bad.parse::<SongHash>().is_err(), "{bad}");
        }
        assert!("A".repeat(56).parse::<SongHash>().is_ok());
    }

    #[test]
    fn upload_ids_are_random_hex_and_checked() {
        let (a, b) = (UploadId::random(), UploadId::random());
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 16);
        assert_eq!(a.as_str().parse::<UploadId>().unwrap(), a);
        for bad in ["", "../x", "zz", &"a".repeat(33)] {
            assert!(bad.parse::<UploadId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn track_aliases() {
        assert_eq!("base.mp3".parse::<Track>().unwrap().name(), "bass");
        assert_eq!("vocals".parse::<Track>().unwrap().name(), "vocals");
        assert_eq!("piano.mp3".parse::<Track>().unwrap().name(), "piano");
        for bad in [
            "../vocals.mp3",
            "",
            "Vocals",
            "a b",
            "vocals.flac/x",
            ".mp3",
        ] {
            assert!(bad.parse::<Track>().is_err(), "{bad}");
        }
    }

    #[test]
    fn sources_are_listed_lab_first() {
        let six = ["drums", "bass", "other", "vocals", "guitar", "piano"];
        let names: Vec<String> = Track::of_sources(&six)
            .unwrap()
            .into_iter()
            .map(String::from)
            .collect();
        assert_eq!(
            names,
            ["vocals", "drums", "bass", "other", "guitar", "piano"]
        );
        assert!(Track::of_sources(&["Drums"]).is_err());
    }
}
