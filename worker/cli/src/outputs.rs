//! What files one separated song gives, as demucs' `separate` names and mixes them: every stem,
//! or with `--two-stems S` the stem `S` and its complement (`no_S`, the other stems added; or
//! `minus_S`, the song less `S`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// How `--two-stems` forms the complement of its stem (demucs' `--other-method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OtherMethod {
    /// No complement: the stem alone.
    None,
    /// `no_<stem>`: the other stems added.
    Add,
    /// `minus_<stem>`: the song less the stem.
    Minus,
}

/// One output: a name and what it sums.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    /// The `{stem}` of the file name: a source, `no_<s>` or `minus_<s>`.
    pub name: String,
    /// Model sources added, each with its sign.
    pub sources: Vec<(usize, f32)>,
    /// Whether the song itself is added (for `minus_<s>`).
    pub with_song: bool,
}

/// The outputs of a model with `sources`: all of them, or `two_stems` and its complement.
pub fn plan(
    sources: &[String],
    two_stems: Option<&str>,
    other: OtherMethod,
) -> Result<Vec<Output>, String> {
    let Some(stem) = two_stems else {
        return Ok(sources
            .iter()
            .enumerate()
            .map(|(s, name)| Output {
                name: name.clone(),
                sources: vec![(s, 1.0)],
                with_song: false,
            })
            .collect());
    };
    let s = sources.iter().position(|n| n == stem).ok_or_else(|| {
        format!(
            "stem {stem:?} is not in the model; it has {}",
            sources.join(", ")
        )
    })?;
    let alone = Output {
        name: stem.to_string(),
        sources: vec![(s, 1.0)],
        with_song: false,
    };
    Ok(match other {
        OtherMethod::None => vec![alone],
        OtherMethod::Add => vec![
            alone,
            Output {
                name: format!("no_{stem}"),
                sources: (0..sources.len())
                    .filter(|&o| o != s)
                    .map(|o| (o, 1.0))
                    .collect(),
                with_song: false,
            },
        ],
        OtherMethod::Minus => vec![
            Output {
                name: format!("minus_{stem}"),
                sources: vec![(s, -1.0)],
                with_song: true,
            },
            alone,
        ],
    })
}

impl Output {
    /// This output's samples from the separated `stems[s][c][n]` and the `song` (at the model's
    /// rate, as long as the stems).
    pub fn mix(&self, stems: &[Vec<Vec<f32>>], song: &[Vec<f32>]) -> Vec<Vec<f32>> {
        let song = self.with_song.then_some((song, 1.0));
        let terms: Vec<(&[Vec<f32>], f32)> = song
            .into_iter()
            .chain(
                self.sources
                    .iter()
                    .map(|&(s, sign)| (stems[s].as_slice(), sign)),
            )
            .collect();
        stemsep_audio::mix(&terms)
    }
}

/// A file name template with demucs' `{track}`, `{trackext}`, `{stem}` and `{ext}`.
#[derive(Debug, Clone)]
pub struct Template(String);

impl Template {
    /// Checks that `pattern` uses only the four placeholders and names a relative path.
    pub fn new(pattern: &str) -> Result<Template, String> {
        let vars = BTreeMap::from([
            ("track", "t"),
            ("trackext", "e"),
            ("stem", "s"),
            ("ext", "x"),
        ]);
        let filled = fill(pattern, &vars)?;
        if Path::new(&filled).is_absolute() || filled.is_empty() {
            return Err(format!(
                "--filename {pattern:?} must name a relative path under the output directory"
            ));
        }
        Ok(Template(pattern.to_string()))
    }

    /// The path of `stem` of `track` (the input file) with extension `ext`.
    pub fn path(&self, track: &Path, stem: &str, ext: &str) -> PathBuf {
        // As demucs: the name up to its last dot, and what follows it.
        let name = track
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let (base, trackext) = name.rsplit_once('.').unwrap_or((&name, &name));
        let vars = BTreeMap::from([
            ("track", base),
            ("trackext", trackext),
            ("stem", stem),
            ("ext", ext),
        ]);
        PathBuf::from(fill(&self.0, &vars).expect("checked by Template::new"))
    }
}

/// `pattern` with each `{name}` replaced by `vars[name]`; `{{` and `}}` are literal braces.
fn fill(pattern: &str, vars: &BTreeMap<&str, &str>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = pattern;
    while let Some(i) = rest.find(['{', '}']) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(after) = tail.strip_prefix("{{").or_else(|| tail.strip_prefix("}}")) {
            out.push_str(&tail[..1]);
            rest = after;
            continue;
        }
        let end = tail
            .find('}')
            .filter(|_| tail.starts_with('{'))
            .ok_or_else(|| format!("--filename {pattern:?}: unmatched brace"))?;
        let name = &tail[1..end];
        let value = vars.get(name).ok_or_else(|| {
            format!("--filename {pattern:?}: {{{name}}} is not one of {{track}}, {{trackext}}, {{stem}}, {{ext}}")
        })?;
        out.push_str(value);
        rest = &tail[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(outputs: &[Output]) -> Vec<&str> {
        outputs.iter().map(|o| o.name.as_str()).collect()
    }

    #[test]
    fn two_stems_give_the_stem_and_its_complement() {
        let sources: Vec<String> = ["drums", "bass", "other", "vocals"]
            .map(String::from)
            .into();
        let all = plan(&sources, None, OtherMethod::Add).unwrap();
        assert_eq!(names(&all), ["drums", "bass", "other", "vocals"]);
        let add = plan(&sources, Some("vocals"), OtherMethod::Add).unwrap();
        assert_eq!(names(&add), ["vocals", "no_vocals"]);
        assert_eq!(add[1].sources, [(0, 1.0), (1, 1.0), (2, 1.0)]);
        let minus = plan(&sources, Some("drums"), OtherMethod::Minus).unwrap();
        assert_eq!(names(&minus), ["minus_drums", "drums"]);
        let e = plan(&sources, Some("guitar"), OtherMethod::Add).unwrap_err();
        assert!(e.contains("drums, bass, other, vocals"), "{e}");
    }

    #[test]
    fn mixes_add_and_subtract() {
        let stems = vec![vec![vec![1.0, 2.0]], vec![vec![10.0, 20.0]]];
        let song = vec![vec![100.0, 200.0]];
        let no_first = Output {
            name: "no_a".into(),
            sources: vec![(1, 1.0)],
            with_song: false,
        };
        assert_eq!(no_first.mix(&stems, &song), [vec![10.0, 20.0]]);
        let minus = Output {
            name: "minus_a".into(),
            sources: vec![(0, -1.0)],
            with_song: true,
        };
        assert_eq!(minus.mix(&stems, &song), [vec![99.0, 198.0]]);
    }

    #[test]
    fn file_names_follow_demucs_template() {
        let t = Template::new("{track}/{stem}.{ext}").unwrap();
        assert_eq!(
            t.path(Path::new("in/My.Song.mp3"), "vocals", "flac"),
            Path::new("My.Song/vocals.flac")
        );
        let t = Template::new("{track}_{trackext}-{stem}.{ext}").unwrap();
        assert_eq!(
            t.path(Path::new("a.wav"), "bass", "mp3"),
            Path::new("a_wav-bass.mp3")
        );
        assert!(Template::new("{song}/{stem}").is_err());
        assert!(Template::new("{stem").is_err());
        assert!(Template::new("/abs/{stem}.{ext}").is_err());
    }
}
