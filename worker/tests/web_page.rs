//! The web page at `/` in a real browser: Debian's Chromium, headless, driven over WebDriver
//! (`chromedriver`) against redis-server, `stemsep-rest` and a `stemsep-worker` with the committed
//! tiny model as `htdemucs`, all on free ports. The page refuses a file over the body limit and a
//! file that is not audio with the API's own words, separates a real MP3 with live progress to
//! 100, shows one player per stem with a drawn waveform, plays them, mutes and solos, downloads a
//! stem (the very bytes the API serves) and lists the song again after a reload.
//!
//! Screenshots (desktop in light, phone in dark) go to `rest/web/screenshots/latest/`, which git
//! ignores; README.md shows copies committed beside it.
//!
//! Needs `chromium` and `chromium-driver` (`make test` installs them) and the rest binary built
//! (`cargo build --workspace --bins`).

mod e2e_support;
mod webdriver;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;
use e2e_support::{Env, PATIENCE, SERIAL};
use serde_json::{json, Value};
use stemsep_common::job::{SongHash, DEFAULT_MODEL};
use stemsep_testkit::tone_mp3;
use webdriver::Browser;

/// Waits until `script` returns something other than null or false; returns that.
async fn wait_js(b: &Browser, what: &str, script: &str, env: &Env) -> Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let v = b.js(script).await;
        if !v.is_null() && v != Value::Bool(false) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "the page never showed {what}\n{}\n{}",
            b.js("return document.body.innerText").await,
            env.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Fits the window to the page's whole height at `width` CSS pixels, then saves a PNG.
async fn screenshot(b: &Browser, width: u32, path: &Path) {
    b.set_window_size(width, 900).await;
    let height = b
        .js("window.scrollTo(0, 0); \
             return document.documentElement.scrollHeight + window.outerHeight - window.innerHeight")
        .await
        .as_u64()
        .unwrap();
    b.set_window_size(width, height as u32).await;
    // Waveforms redraw for the new width on the next frame.
    b.js("return new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)))")
        .await;
    std::fs::write(path, b.screenshot().await).unwrap();
}

/// Chooses a file `name` holding `bytes` in the page and waits for its refusal; checks that the
/// page shows the API's own refusal of the same request. Returns the API's status and words.
async fn refusal(
    b: &Browser,
    env: &Env,
    api: &str,
    dir: &Path,
    name: &str,
    bytes: &[u8],
) -> (u16, String) {
    let (status, said) = api_refusal(api, request_body(bytes)).await;
    std::fs::write(dir.join(name), bytes).unwrap();
    choose_file(b, &dir.join(name)).await;
    let shown = wait_js(
        b,
        &format!("the refusal of {name}"),
        &format!(
            "const m = document.querySelector('#upload-message.error'); \
             return m && m.textContent.startsWith('{name}') && m.textContent"
        ),
        env,
    )
    .await;
    assert_eq!(shown, json!(format!("{name} was refused: {said}")));
    (status, said)
}

/// Chooses `file` in the page's file picker, as a person would.
async fn choose_file(b: &Browser, file: &Path) {
    b.type_into("#file", &file.display().to_string()).await;
}

/// What the API itself answers to `body` (a JSON request body): its status and `error` text.
async fn api_refusal(api: &str, body: String) -> (u16, String) {
    let r = reqwest::Client::new()
        .post(format!("{api}/apiv1/separate"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap();
    (status, body["error"].as_str().unwrap().to_owned())
}

fn request_body(file: &[u8]) -> String {
    json!({
        "mp3": base64::engine::general_purpose::STANDARD.encode(file),
        "model": DEFAULT_MODEL,
    })
    .to_string()
}

/// The models the page should offer: `/apiv1/models` where the server has it, else the list the
/// server was configured with.
async fn served_models(api: &str, configured: &[&str]) -> Vec<String> {
    let r = reqwest::get(format!("{api}/apiv1/models")).await.unwrap();
    if r.status() != 200 {
        return configured.iter().map(|m| m.to_string()).collect();
    }
    let body: Value = r.json().await.unwrap();
    let list = body.get("models").unwrap_or(&body).as_array().unwrap();
    list.iter()
        .map(|m| {
            m.as_str()
                .or_else(|| m["name"].as_str())
                .unwrap()
                .to_owned()
        })
        .collect()
}

const WAVEFORMS: &str = r#"
return [...document.querySelectorAll('#stems li.stem')].map((li) => {
  const c = li.querySelector('canvas');
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let painted = 0;
  const rows = new Set();
  for (let i = 3; i < d.length; i += 4) {
    if (d[i] > 0) {
      painted++;
      rows.add(Math.floor((i >> 2) / c.width));
    }
  }
  return { stem: li.dataset.stem, width: c.width, height: c.height, painted, rows: rows.size };
});"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_song_dropped_on_the_page_comes_back_as_a_mixer() {
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let configured = ["htdemucs", "htdemucs_ft"];
    let mut env = Env::new("web", 3, 3).await;
    let api = env
        .spawn_rest(&[("STEMSEP_MODELS", &configured.join(","))])
        .await;
    env.spawn_worker("w-web", &[("STEMSEP_PUBLIC_URL", api.as_str())]);
    let b = Browser::start().await;
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("../rest/web/screenshots/latest");
    std::fs::create_dir_all(&shots).unwrap();
    let files = tempfile::tempdir().unwrap();

    // The worker announces its models; until then the API offers the configured names. Load the
    // page once the list has settled, so that page and test read the same one.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let body: Value = reqwest::get(format!("{api}/apiv1/models"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if body["models"][0]["stems"]
            .as_array()
            .is_some_and(|s| !s.is_empty())
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the worker never announced its model\n{}",
            env.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    b.goto(&api).await;
    assert_eq!(b.title().await, "stemsep: split a song into its stems");
    // The model choice comes from the server, not from the page.
    let offered = wait_js(
        &b,
        "the model choice",
        "const s = document.querySelector('select[name=model]'); \
             return s && [...s.options].map((o) => o.value)",
        &env,
    )
    .await;
    assert_eq!(offered, json!(served_models(&api, &configured).await));

    // Refused before sending, in the words of the API's 413: 12.6 MB is 16.8 MB in base64, over
    // the default 16 MiB.
    let big: Vec<u8> = (0..12_600_000u64).map(|i| (i * 7919 % 251) as u8).collect();
    let (status, said) = refusal(&b, &env, &api, files.path(), "big.mp3", &big).await;
    assert_eq!(status, 413);
    assert!(said.contains("too large"), "{said}");

    // Sent, and refused by the server's audio check (422), whose message the page shows.
    let text = b"these are liner notes, not a song\n".repeat(50);
    let (status, said) = refusal(&b, &env, &api, files.path(), "notes.mp3", &text).await;
    assert_eq!(status, 422);
    assert!(said.contains("not decodable audio"), "{said}");

    // A real song: its progress reaches 100 and the mixer opens by itself.
    let song = tone_mp3(330.0, 4.0, 3100);
    let hash = SongHash::compute(&song, DEFAULT_MODEL).to_string();
    std::fs::write(files.path().join("tone.mp3"), &song).unwrap();
    choose_file(&b, &files.path().join("tone.mp3")).await;
    let job = format!("#jobs li[data-hash='{hash}']");
    let done = wait_js(
        &b,
        "the song done",
        &format!(
            "const li = document.querySelector(\"{job}\"); \
                 return li && li.dataset.state === 'done' && \
                 [li.querySelector('progress').value, li.querySelector('.job-status').textContent]"
        ),
        &env,
    )
    .await;
    let status: Value = reqwest::get(format!("{api}/apiv1/status/{hash}"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let tracks: Vec<String> = serde_json::from_value(status["tracks"].clone()).unwrap();
    assert_eq!(status["progress"], 100);
    assert_eq!(done, json!([100, format!("Done: {} stems", tracks.len())]));

    // One player per stem of the job, each with a waveform drawn from its audio.
    wait_js(
        &b,
        "the mixer ready",
        "return document.querySelector('#mixer').dataset.state === 'ready'",
        &env,
    )
    .await;
    let rows = b
        .js("return [...document.querySelectorAll('#stems li.stem')].map((li) => li.dataset.stem)")
        .await;
    assert_eq!(rows, json!(tracks));
    let waves = b.js(WAVEFORMS).await;
    for w in waves.as_array().unwrap() {
        let (width, height) = (w["width"].as_u64().unwrap(), w["height"].as_u64().unwrap());
        assert!(width > 100 && height > 20, "{w}");
        // More than the one-pixel line silence draws: the wave spans rows and fills columns.
        assert!(w["rows"].as_u64().unwrap() > height / 4, "{w}");
        assert!(w["painted"].as_u64().unwrap() > 2 * width, "{w}");
    }
    screenshot(&b, 1280, &shots.join("desktop-light.png")).await;

    // One transport plays every stem.
    b.click("#play").await;
    wait_js(
        &b,
        "the song playing",
        "const m = document.querySelector('#mixer'); \
         const [m1, s1] = document.querySelector('#clock').value.split(' / ')[0].split(':'); \
         return m.dataset.state === 'playing' && Number(m1) * 60 + Number(s1) >= 0.5",
        &env,
    )
    .await;

    // Mute the first stem, solo the second: only the second is heard; unsolo: all but the first.
    let audible = "return [...document.querySelectorAll('#stems li.stem')].map((li) => li.dataset.audible === 'true')";
    let (first, second) = (&tracks[0], &tracks[1]);
    b.click(&format!("li.stem[data-stem='{first}'] button.mute"))
        .await;
    let expected: Vec<bool> = tracks.iter().map(|t| t != first).collect();
    assert_eq!(b.js(audible).await, json!(expected));
    b.click(&format!("li.stem[data-stem='{second}'] button.solo"))
        .await;
    assert_eq!(
        b.js(audible).await,
        json!(tracks.iter().map(|t| t == second).collect::<Vec<_>>())
    );
    b.click(&format!("li.stem[data-stem='{second}'] button.solo"))
        .await;
    assert_eq!(b.js(audible).await, json!(expected));
    let pressed = b
        .js(&format!(
            "return document.querySelector(\"li.stem[data-stem='{first}'] button.mute\").getAttribute('aria-pressed')"
        ))
        .await;
    assert_eq!(pressed, "true");

    // Space, with the focus on no control, pauses and plays again.
    let state = "return document.querySelector('#mixer').dataset.state";
    b.js("document.activeElement.blur()").await;
    b.press(" ").await;
    assert_eq!(b.js(state).await, "ready");
    b.press(" ").await;
    wait_js(&b, "playing again", &format!("{state} === 'playing'"), &env).await;

    // The download link saves exactly the stem the API serves.
    let link = format!("li.stem[data-stem='{second}'] a.download");
    let url = format!("{api}/apiv1/track/{hash}/{second}.mp3");
    saves_what_the_api_serves(&b, &link, "mp3", &url, &env).await;
    // The song without the first stem, as FLAC: made from the masters on this first download.
    let link = format!("#downloads a.download[data-file='no_{first}.flac']");
    let url = format!("{api}/apiv1/track/{hash}/no_{first}.flac");
    saves_what_the_api_serves(&b, &link, "flac", &url, &env).await;
    let zips = b
        .js("return [...document.querySelectorAll('#downloads a.download')].map((a) => a.dataset.file).filter((f) => f.startsWith('zip-'))")
        .await;
    assert_eq!(zips, json!(["zip-mp3", "zip-flac"]));

    // Phone width, dark colour scheme.
    b.click("#stop").await;
    b.cdp(
        "Emulation.setEmulatedMedia",
        json!({ "features": [{ "name": "prefers-color-scheme", "value": "dark" }] }),
    )
    .await;
    screenshot(&b, 390, &shots.join("phone-dark.png")).await;

    // After a reload the song is listed again, from this browser's storage.
    b.refresh().await;
    wait_js(
        &b,
        "the song listed after a reload",
        &format!(
            "const li = document.querySelector(\"{job}\"); \
             return li && li.dataset.state === 'done' && li.querySelector('strong').textContent === 'tone.mp3'"
        ),
        &env,
    )
    .await;

    // Nothing was refused by the Content-Security-Policy and no script failed. (Chromium logs the
    // API's 4xx answers as failed loads; those are expected.)
    let console = b.console().await;
    let bad: Vec<&String> = console
        .iter()
        .filter(|l| !l.contains("Failed to load resource"))
        .filter(|l| l.starts_with("SEVERE") || l.contains("Content Security Policy"))
        .collect();
    assert!(bad.is_empty(), "console: {console:#?}");
    b.close().await;
    eprintln!(
        "browser test: {:.1} s; screenshots in {}",
        started.elapsed().as_secs_f64(),
        shots.display()
    );
}

/// Clicks the download link `link` and checks that the `ext` file saved is exactly what the API
/// serves at `url`.
async fn saves_what_the_api_serves(b: &Browser, link: &str, ext: &str, url: &str, env: &Env) {
    b.click(link).await;
    let saved = wait_for_download(&b.downloads(), ext, env).await;
    let served = reqwest::get(url).await.unwrap().bytes().await.unwrap();
    assert!(!served.is_empty());
    assert_eq!(saved.len(), served.len());
    assert!(
        saved == served,
        "the file saved from {link} differs from {url}"
    );
}

/// Waits until Chromium has finished saving one `ext` file in `dir`; returns its bytes.
async fn wait_for_download(dir: &Path, ext: &str, env: &Env) -> Vec<u8> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let done: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == ext))
            .collect();
        if let [file] = done.as_slice() {
            return std::fs::read(file).unwrap();
        }
        assert!(
            done.len() <= 1 && Instant::now() < deadline,
            "download never finished: {done:?}\n{}",
            env.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
