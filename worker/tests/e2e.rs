//! End to end with real processes: redis-server, `stemsep-rest`, two `stemsep-worker`s and the
//! committed tiny model standing in for `htdemucs`. Requests have the lab client's shape.
//!
//! `stemsep-rest` must be built (`cargo build --workspace --bins`; `cargo test --workspace`
//! builds it too): it is looked up next to `stemsep-worker` in the target directory
//! (`e2e_support::rest_binary`).

mod e2e_support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use base64::Engine as _;
use e2e_support::{mp3_seconds, rest_binary, Env, Listener, LISTENER_IP, PATIENCE, SERIAL};
use serde_json::{json, Value};
use stemsep_testkit::tone_mp3;

/// Redis, the rest API and two workers.
struct Stack {
    env: Env,
    api: String,
    http: reqwest::Client,
    /// Sent as `X-API-Key` with every request, when set.
    key: Option<String>,
}

impl Stack {
    /// Starts the stack; `models` are `(name, path)` pairs installed in the workers' model
    /// directory beside the tiny default.
    async fn start(
        label: &str,
        rest_extra: &[(&str, &str)],
        worker_extra: &[(&str, &str)],
        models: &[(&str, PathBuf)],
    ) -> Stack {
        let mut env = Env::new(label, 3, 3).await;
        for (name, path) in models {
            env.install_model(name, path);
        }
        // The tests poll /apiv1/status 20 times a second, over the default rate for one address.
        let mut rest_vars = vec![("STEMSEP_RATE_PER_MIN", "0")];
        rest_vars.extend_from_slice(rest_extra);
        let public = env.spawn_rest(&rest_vars).await;
        let mut extra = vec![("STEMSEP_PUBLIC_URL", public.as_str())];
        extra.extend_from_slice(worker_extra);
        env.spawn_worker("w-a", &extra);
        env.spawn_worker("w-b", &extra);
        // A fresh connection per request: a pooled one can be closed by the server's keep-alive
        // timer just as a request goes out (hyper's IncompleteMessage), which is not under test.
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(0)
            .build()
            .unwrap();
        Stack {
            env,
            api: public,
            http,
            key: None,
        }
    }

    /// A request to the API, with the key if the stack has one.
    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, format!("{}{path}", self.api));
        match &self.key {
            Some(k) => r.header("X-API-Key", k),
            None => r,
        }
    }

    /// POSTs a lab-shaped request; returns the reply body.
    async fn separate(&self, mp3: &[u8], model: Option<&str>, callback: Value) -> Value {
        let mut body = json!({"callback": callback});
        if let Some(m) = model {
            body["model"] = m.into();
        }
        self.separate_with(mp3, body).await
    }

    /// POSTs `body` with the song as `mp3`; returns the reply body.
    async fn separate_with(&self, song: &[u8], mut body: Value) -> Value {
        body["mp3"] = base64::engine::general_purpose::STANDARD
            .encode(song)
            .into();
        let r = self
            .request(reqwest::Method::POST, "/apiv1/separate")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{:?}", r.text().await);
        r.json().await.unwrap()
    }

    async fn status(&self, hash: &str) -> Value {
        let r = self
            .request(reqwest::Method::GET, &format!("/apiv1/status/{hash}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }

    /// Polls `/apiv1/status` until `pred` holds.
    async fn wait_status(&self, hash: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let s = self.status(hash).await;
            if pred(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "{hash} never {what}: {s}\n{}",
                self.env.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The body of a 200 answer to GET `path`, and its content type.
    async fn fetch(&self, path: &str) -> (String, Vec<u8>) {
        let r = self
            .request(reqwest::Method::GET, path)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let kind = r.headers()[reqwest::header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_owned();
        let body = r.bytes().await.unwrap().to_vec();
        assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
        (kind, body)
    }

    async fn track(&self, hash: &str, track: &str) -> reqwest::Response {
        self.request(
            reqwest::Method::GET,
            &format!("/apiv1/track/{hash}/{track}"),
        )
        .send()
        .await
        .unwrap()
    }
}

fn is_final(s: &Value) -> bool {
    s["state"] == "done" || s["state"] == "failed"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lab_requests_come_back_as_four_playable_stems() {
    let _serial = SERIAL.lock().await;
    let hook = Listener::start().await;
    let stack = Stack::start(
        "e2e-lab",
        &[],
        &[("STEMSEP_CALLBACK_ALLOW", LISTENER_IP)],
        &[],
    )
    .await;

    let songs: Vec<Vec<u8>> = (0..3)
        .map(|i| tone_mp3(330.0 + 60.0 * i as f32, 3.0 + i as f32, 500 + i as u64))
        .collect();
    let mut hashes = Vec::new();
    for (i, song) in songs.iter().enumerate() {
        let cb = json!({ "url": hook.url, "data": { "mp3": format!("song{i}.mp3"), "n": i } });
        let reply = stack.separate(song, None, cb).await;
        assert_eq!(reply["reason"], "Song enqueued for separation");
        hashes.push(reply["hash"].as_str().unwrap().to_owned());
    }
    // The stock client's own callback target: refused by the worker, the song still separated.
    let stock = stack
        .separate(
            &tone_mp3(880.0, 2.0, 599),
            None,
            json!({ "url": "http://localhost:5000", "data": {} }),
        )
        .await["hash"]
        .as_str()
        .unwrap()
        .to_owned();

    for (h, song) in hashes.iter().zip(&songs) {
        let s = stack.wait_status(h, "final", is_final).await;
        assert_eq!(s["state"], "done", "{s}\n{}", stack.env.logs());
        assert_eq!(s["progress"], 100);
        assert_eq!(s["tracks"].as_array().unwrap().len(), 4, "{s}");
        let secs = mp3_seconds(song);
        for track in ["vocals.mp3", "drums", "bass.mp3", "base.mp3", "other.mp3"] {
            let r = stack.track(h, track).await;
            assert_eq!(r.status(), 200, "{track}");
            assert_eq!(r.headers()["content-type"], "audio/mpeg");
            let got = mp3_seconds(&r.bytes().await.unwrap());
            assert!((got - secs).abs() < 0.1, "{track}: {got} s of {secs} s");
        }
    }
    let calls = hook
        .wait_for(
            &hashes
                .iter()
                .map(|h| h.parse().unwrap())
                .collect::<Vec<_>>(),
        )
        .await;
    for (i, h) in hashes.iter().enumerate() {
        let c = &calls[h.as_str()][0];
        assert_eq!(c["state"], "done");
        assert_eq!(c["data"], json!({ "mp3": format!("song{i}.mp3"), "n": i }));
        let url = c["tracks"]["drums"].as_str().unwrap();
        // The callback's URLs are the real download addresses.
        let r = stack.http.get(url).send().await.unwrap();
        assert_eq!(r.status(), 200, "{url}");
    }
    let s = stack
        .wait_status(&stock, "called back", |s| s["callback_status"].is_string())
        .await;
    assert_eq!(s["state"], "done");
    assert!(
        s["callback_status"]
            .as_str()
            .unwrap()
            .starts_with("refused:"),
        "{s}"
    );
    assert!(!calls.contains_key(&stock));

    // Removing a stem, then submitting the song again, regenerates it.
    let h = &hashes[0];
    let r = stack
        .http
        .delete(format!("{}/apiv1/remove/{h}/vocals", stack.api))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{:?}", r.text().await);
    assert_eq!(stack.track(h, "vocals").await.status(), 404);
    let cb = json!({ "url": hook.url, "data": "again" });
    let reply = stack.separate(&songs[0], None, cb).await;
    assert_eq!(reply["hash"], h.as_str());
    assert!(
        reply["reason"].as_str().unwrap().contains("re-enqueued"),
        "{reply}"
    );
    stack
        .wait_status(h, "done again", |s| {
            s["state"] == "done" && s["tracks"].as_array().unwrap().len() == 4
        })
        .await;
    let r = stack.track(h, "vocals").await;
    assert_eq!(r.status(), 200);
    assert!((mp3_seconds(&r.bytes().await.unwrap()) - mp3_seconds(&songs[0])).abs() < 0.1);
    hook.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_job_fails_visibly_while_the_others_complete() {
    let _serial = SERIAL.lock().await;
    // A model whose manifest reads but whose core is not ONNX: the workers announce it, so the
    // API offers it, and every attempt fails in the worker.
    let ghost = tempfile::tempdir().unwrap();
    let model = ghost.path().join("ghost");
    std::fs::create_dir(&model).unwrap();
    std::fs::write(
        model.join("manifest.json"),
        r#"{"format": 1, "name": "ghost", "version": "none", "weights": "random",
            "sources": ["drums", "bass", "other", "vocals"], "sample_rate": 44100, "channels": 2,
            "members": [{"file": "ghost.onnx", "segment_samples": 44100, "weights": [1, 1, 1, 1]}]}"#,
    )
    .unwrap();
    std::fs::write(model.join("ghost.onnx"), b"not an ONNX file").unwrap();
    let stack = Stack::start("e2e-poison", &[], &[], &[("ghost", model)]).await;
    let bad = stack
        .separate(&tone_mp3(700.0, 2.0, 700), Some("ghost"), Value::Null)
        .await;
    let bad = bad["hash"].as_str().unwrap().to_owned();
    let mut good = Vec::new();
    for i in 0..3u64 {
        let r = stack
            .separate(
                &tone_mp3(250.0 + 30.0 * i as f32, 2.5, 710 + i),
                None,
                Value::Null,
            )
            .await;
        good.push(r["hash"].as_str().unwrap().to_owned());
    }
    let s = stack.wait_status(&bad, "final", is_final).await;
    assert_eq!(s["state"], "failed", "{s}");
    assert_eq!(s["attempts"], 3);
    assert!(
        s["error"].as_str().unwrap().contains("cannot load ONNX"),
        "{s}"
    );
    assert_eq!(s["tracks"], json!([]));
    for h in &good {
        let s = stack.wait_status(h, "final", is_final).await;
        assert_eq!(s["state"], "done", "{s}");
    }
    assert_eq!(
        stack.env.queue.dead_letters().await.unwrap(),
        vec![bad.clone()]
    );
    assert_eq!(stack.env.depths().await, (0, 0, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_model_gives_its_own_stems() {
    let _serial = SERIAL.lock().await;
    // The committed tiny six-source model and two-member bag stand in for htdemucs_6s and
    // htdemucs_ft; the workers announce them, the API offers them.
    let tiny = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../model/tiny");
    let models = [
        ("htdemucs_6s", tiny.join("6s")),
        ("htdemucs_ft", tiny.join("bag-onehot")),
    ];
    let stack = Stack::start("e2e-family", &[], &[], &models).await;
    let listed = |body: &Value| {
        body["models"]
            .as_array()
            .map(|m| m.iter().map(|m| m["name"].clone()).collect::<Vec<_>>())
    };
    let deadline = Instant::now() + PATIENCE;
    loop {
        let body: Value = stack
            .http
            .get(format!("{}/apiv1/models", stack.api))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if listed(&body)
            == Some(vec![
                json!("htdemucs"),
                json!("htdemucs_6s"),
                json!("htdemucs_ft"),
            ])
        {
            assert_eq!(
                body["models"][1]["stems"],
                json!(["vocals", "drums", "bass", "other", "guitar", "piano"])
            );
            assert_eq!(body["models"][2]["members"], 2);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "models never announced: {body}\n{}",
            stack.env.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let song = tone_mp3(392.0, 2.5, 801);
    let secs = mp3_seconds(&song);
    let six = stack
        .separate(&song, Some("htdemucs_6s"), Value::Null)
        .await;
    let bag = stack
        .separate(&song, Some("htdemucs_ft"), Value::Null)
        .await;
    for (reply, stems) in [
        (
            &six,
            &["vocals", "drums", "bass", "other", "guitar", "piano"][..],
        ),
        (&bag, &["vocals", "drums", "bass", "other"][..]),
    ] {
        let hash = reply["hash"].as_str().unwrap();
        let s = stack.wait_status(hash, "final", is_final).await;
        assert_eq!(s["state"], "done", "{s}\n{}", stack.env.logs());
        assert_eq!(s["tracks"], json!(stems), "{s}");
        for stem in stems {
            let r = stack.track(hash, &format!("{stem}.mp3")).await;
            assert_eq!(r.status(), 200, "{stem}");
            let got = mp3_seconds(&r.bytes().await.unwrap());
            assert!((got - secs).abs() < 0.1, "{stem}: {got} s of {secs} s");
        }
    }
    let r = stack
        .track(bag["hash"].as_str().unwrap(), "guitar.mp3")
        .await;
    assert_eq!(r.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_keys_on_the_lab_flow_needs_a_key_and_get_cannot_remove() {
    let _serial = SERIAL.lock().await;
    let key = "lab-key-0123456789abcdef";
    let mut stack = Stack::start(
        "e2e-keys",
        &[
            ("STEMSEP_AUTH", "keys"),
            ("STEMSEP_API_KEYS", key),
            ("STEMSEP_REMOVE_BY_GET", "false"),
        ],
        &[],
        &[],
    )
    .await;
    let song = tone_mp3(360.0, 2.0, 800);
    let body = json!({ "mp3": base64::engine::general_purpose::STANDARD.encode(&song) });
    // The stock client, which sends no key: refused, nothing queued.
    let r = stack
        .http
        .post(format!("{}/apiv1/separate", stack.api))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(stack.env.queue.waiting().await.unwrap().is_empty());

    stack.key = Some(key.to_owned());
    let hash = stack.separate(&song, None, Value::Null).await["hash"]
        .as_str()
        .unwrap()
        .to_owned();
    let s = stack.wait_status(&hash, "final", is_final).await;
    assert_eq!(s["state"], "done", "{s}");
    assert_eq!(stack.track(&hash, "vocals").await.status(), 200);
    let remove = format!("/apiv1/remove/{hash}/vocals");
    let r = stack
        .request(reqwest::Method::GET, &remove)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(stack.track(&hash, "vocals").await.status(), 200);
    let r = stack
        .request(reqwest::Method::DELETE, &remove)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(stack.track(&hash, "vocals").await.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_settings_stop_the_api_at_start_up() {
    let _serial = SERIAL.lock().await;
    let mut env = Env::new("e2e-config", 3, 3).await;
    for (extra, says) in [
        (vec![("STEMSEP_AUTH", "keys")], "STEMSEP_API_KEYS"),
        (
            vec![("STEMSEP_AUTH", "keys"), ("STEMSEP_API_KEYS", "short")],
            "at least 16",
        ),
        (vec![("STEMSEP_MAX_BODY_MIB", "0")], "max-body-mib"),
        // Within 8..=320, but not a bitrate LAME encodes.
        (vec![("STEMSEP_BITRATE", "300")], "STEMSEP_BITRATE"),
        (vec![("STEMSEP_RENDERS", "0")], "renders"),
        (vec![("STEMSEP_REMOVE_BY_GET", "perhaps")], "remove-by-get"),
    ] {
        let mut vars = env.common_env();
        vars.push(("STEMSEP_BIND".into(), "127.0.0.1:0".into()));
        vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let i = env.spawn("rest-bad", &rest_binary(), vars, 0);
        let status = env.proc(i).wait_exit(PATIENCE);
        assert_eq!(status.code(), Some(2), "{extra:?}\n{}", env.logs());
        let log = env.proc(i).log_text();
        assert!(log.contains(says), "{extra:?}: {log}");
    }
}

/// One song's samples, decoded, left channel then right.
fn samples(bytes: &[u8]) -> Vec<f32> {
    let audio = stemsep_audio::decode(bytes, Duration::from_secs(60)).unwrap();
    assert_eq!(audio.channels.len(), 2);
    assert_eq!(audio.sample_rate, 44_100);
    audio.channels.concat()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_come_as_mixes_formats_and_zips_from_one_separation() {
    let _serial = SERIAL.lock().await;
    let stack = Stack::start("e2e-shapes", &[], &[], &[]).await;
    // A quiet WAV upload: the tiny model's noise-like stems then stay below full scale, so the
    // figures below measure each format's precision, not clipping.
    let secs = 3.0;
    let chord: Vec<Vec<f32>> = [220.0f32, 277.0]
        .iter()
        .map(|f| {
            (0..(secs * 44_100.0) as usize)
                .map(|i| 0.05 * (std::f32::consts::TAU * f * i as f32 / 44_100.0).sin())
                .collect()
        })
        .collect();
    let song = stemsep_audio::Format::Wav(stemsep_audio::Depth::Int16)
        .encode(&chord, 44_100, stemsep_audio::ClipMode::None)
        .unwrap();
    let karaoke = json!({"two_stems": "vocals", "formats": ["flac"], "mp3_bitrate": 192});
    let hash_of = |reply: Value| reply["hash"].as_str().unwrap().to_owned();
    let hash = hash_of(stack.separate_with(&song, karaoke.clone()).await);
    let s = stack.wait_status(&hash, "final", is_final).await;
    assert_eq!(s["state"], "done", "{s}\n{}", stack.env.logs());
    assert_eq!(s["tracks"], json!(["vocals", "no_vocals"]), "{s}");
    assert_eq!(s["two_stems"], "vocals", "{s}");
    assert_eq!(s["mp3_bitrate"], 192, "{s}");

    // What the request asked to have ready was made by the worker, before any download.
    let ready = stack
        .env
        .storage_dir()
        .join(format!("output/{hash}-no_vocals.flac24.rescale.flac"));
    assert!(ready.is_file(), "{}", ready.display());
    let (kind, mp3) = stack.fetch(&format!("/apiv1/track/{hash}/no_vocals")).await;
    assert_eq!(kind, "audio/mpeg");
    let kbps = mp3.len() as f64 * 8.0 / secs / 1000.0;
    assert!((170.0..215.0).contains(&kbps), "{kbps} kbit/s");

    // Every stem of the model can still be had, in any format, made from the masters.
    let float = |t: &str| format!("/apiv1/track/{hash}/{t}.wav?bits=32&clip=none");
    let mut sum: Vec<f32> = Vec::new();
    for stem in ["drums", "bass", "other", "vocals"] {
        let (kind, wav) = stack.fetch(&float(stem)).await;
        assert_eq!(kind, "audio/wav");
        let x = samples(&wav);
        assert!(
            (x.len() as f64 / 2.0 / 44_100.0 - secs).abs() < 0.05,
            "{stem}"
        );
        if sum.is_empty() {
            sum = x;
        } else {
            sum.iter_mut().zip(&x).for_each(|(a, b)| *a += b);
        }
    }
    // vocals + no_vocals is the stems' sum to within each format's error.
    for (ext, query, at_least) in [
        ("wav", "?bits=32&clip=none", 120.0),
        ("flac", "?clip=none", 100.0),
        ("flac", "?bits=16&clip=none", 50.0),
        ("mp3", "?bitrate=320&clip=none", 3.0),
    ] {
        let (_, vocals) = stack
            .fetch(&format!("/apiv1/track/{hash}/vocals.{ext}{query}"))
            .await;
        let (_, rest) = stack
            .fetch(&format!("/apiv1/track/{hash}/no_vocals.{ext}{query}"))
            .await;
        let mut both = samples(&vocals);
        both.iter_mut()
            .zip(samples(&rest))
            .for_each(|(a, b)| *a += b);
        let n = both.len().min(sum.len());
        let snr = stemsep_testkit::snr_db(&sum[..n], &both[..n]);
        println!("vocals + no_vocals as {ext}{query}: {snr:.1} dB from the stems' sum");
        assert!(snr >= at_least, "{ext}{query}: {snr:.1} dB");
    }

    // The zip holds the job's tracks in the format asked for.
    let (kind, zipped) = stack
        .fetch(&format!("/apiv1/zip/{hash}?format=flac&bits=16"))
        .await;
    assert_eq!(kind, "application/zip");
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zipped)).unwrap();
    let mut names = Vec::new();
    for i in 0..archive.len() {
        let mut file = archive.by_index(i).unwrap();
        names.push(file.name().unwrap().into_owned());
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut file, &mut bytes).unwrap();
        assert!((samples(&bytes).len() as f64 / 2.0 / 44_100.0 - secs).abs() < 0.05);
    }
    assert_eq!(
        names,
        [
            format!("{hash}/vocals.flac"),
            format!("{hash}/no_vocals.flac")
        ]
    );

    // Shifts give other stems under another hash, reproducibly; the same request again is
    // the same job, not another separation.
    let shifted = hash_of(stack.separate_with(&song, json!({"shifts": 1})).await);
    assert_ne!(shifted, hash);
    let s = stack.wait_status(&shifted, "final", is_final).await;
    assert_eq!(s["state"], "done", "{s}\n{}", stack.env.logs());
    assert_eq!(s["shifts"], 1, "{s}");
    let again = stack.separate_with(&song, json!({"shifts": 1})).await;
    assert_eq!(hash_of(again), shifted);
    let (_, plain) = stack.fetch(&float("vocals")).await;
    let (_, moved) = stack
        .fetch(&format!(
            "/apiv1/track/{shifted}/vocals.wav?bits=32&clip=none"
        ))
        .await;
    assert_ne!(samples(&plain), samples(&moved));
    assert_eq!(hash_of(stack.separate_with(&song, karaoke).await), hash);
    // Two separations in all: every file above came from the masters.
    let done: usize = stack
        .env
        .procs()
        .iter()
        .map(|p| p.log_count("job done"))
        .sum();
    assert_eq!(done, 2, "{}", stack.env.logs());
}
