//! Headless Chromium driven through `chromedriver` with the W3C WebDriver protocol: JSON over HTTP
//! on loopback, spoken with the `reqwest` the tests already use.
//!
//! Why not a WebDriver crate: fantoccini (through webdriver → icu_segmenter) turns on features of
//! `syn` and `time` that nothing else in the workspace uses, so `cargo test --workspace` would no
//! longer share one build with `cargo build --workspace --bins` and `make test` would compile
//! every dependency (tract included) twice. The dozen commands the browser test needs are below.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};
use stemsep_testkit::free_port;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Headless and quiet: on a closed network, Chromium without the background-networking flags
/// spends its time trying to reach Google's services.
const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,900",
];

/// The key under which W3C WebDriver returns an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// One WebDriver session on its own chromedriver, with a fresh profile and download directory.
/// Dropping it ends chromedriver and every Chromium process it started.
pub struct Browser {
    http: reqwest::Client,
    /// `http://127.0.0.1:<port>/session/<id>`.
    session: String,
    driver: Child,
    dir: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver on a free port and opens a session on headless Chromium.
    pub async fn start() -> Browser {
        for bin in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(bin).is_file(),
                "{bin} is missing: apt-get install chromium chromium-driver (make test does)"
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("stemsep-browser-")
            .tempdir()
            .unwrap();
        let downloads = dir.path().join("downloads");
        std::fs::create_dir_all(&downloads).unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("chromedriver.log")).unwrap();
        let mut command = Command::new(CHROMEDRIVER);
        command
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        // Its own process group: Drop signals the group, Chromium included.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let driver = command.spawn().expect("chromedriver starts");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !http
            .get(format!("{base}/status"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            assert!(Instant::now() < deadline, "chromedriver never answered");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|f| f.to_string()).collect();
        args.push(format!(
            "--user-data-dir={}",
            dir.path().join("profile").display()
        ));
        let capabilities = json!({ "alwaysMatch": {
            "browserName": "chrome",
            "goog:loggingPrefs": { "browser": "ALL" },
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": args,
                "prefs": {
                    "download.default_directory": downloads,
                    "download.prompt_for_download": false,
                },
            },
        }});
        let mut browser = Browser {
            http,
            session: format!("{base}/session"),
            driver,
            dir,
        };
        let created = browser
            .command(
                reqwest::Method::POST,
                "",
                json!({ "capabilities": capabilities }),
            )
            .await;
        let id = created["sessionId"]
            .as_str()
            .expect("a session id")
            .to_owned();
        browser.session = format!("{base}/session/{id}");
        browser
    }

    /// Where Chromium saves downloads.
    pub fn downloads(&self) -> PathBuf {
        self.dir.path().join("downloads")
    }

    /// One WebDriver command on this session (`path` after `/session/<id>`); returns its `value`.
    async fn command(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.session);
        let mut req = self.http.request(method.clone(), &url);
        if method != reqwest::Method::GET && method != reqwest::Method::DELETE {
            req = req.json(&body);
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"));
        let status = resp.status();
        let mut reply: Value = resp.json().await.unwrap_or(Value::Null);
        assert!(
            status.is_success(),
            "WebDriver {method} {path} failed ({status}): {}",
            reply["value"]["message"]
        );
        reply["value"].take()
    }

    /// Loads `url` and waits for it.
    pub async fn goto(&self, url: &str) {
        self.command(reqwest::Method::POST, "/url", json!({ "url": url }))
            .await;
    }

    /// Reloads the page.
    pub async fn refresh(&self) {
        self.command(reqwest::Method::POST, "/refresh", json!({}))
            .await;
    }

    /// The document's title.
    pub async fn title(&self) -> String {
        let v = self
            .command(reqwest::Method::GET, "/title", Value::Null)
            .await;
        v.as_str().unwrap().to_owned()
    }

    /// Runs `script` as a function body in the page; a returned promise is awaited.
    pub async fn js(&self, script: &str) -> Value {
        self.command(
            reqwest::Method::POST,
            "/execute/sync",
            json!({ "script": script, "args": [] }),
        )
        .await
    }

    async fn element(&self, selector: &str) -> String {
        let v = self
            .command(
                reqwest::Method::POST,
                "/element",
                json!({ "using": "css selector", "value": selector }),
            )
            .await;
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element reference for {selector}: {v}"))
            .to_owned()
    }

    /// Clicks the element `selector` finds, as a person would (a trusted user gesture).
    pub async fn click(&self, selector: &str) {
        let id = self.element(selector).await;
        self.command(
            reqwest::Method::POST,
            &format!("/element/{id}/click"),
            json!({}),
        )
        .await;
    }

    /// Types `text` into the element `selector` finds; for a file input, `text` is a path.
    pub async fn type_into(&self, selector: &str, text: &str) {
        let id = self.element(selector).await;
        self.command(
            reqwest::Method::POST,
            &format!("/element/{id}/value"),
            json!({ "text": text }),
        )
        .await;
    }

    /// Presses and releases `key` (a character; `" "` is Space) wherever the focus is.
    pub async fn press(&self, key: &str) {
        let keys = json!([
            { "type": "keyDown", "value": key },
            { "type": "keyUp", "value": key },
        ]);
        self.command(
            reqwest::Method::POST,
            "/actions",
            json!({ "actions": [{ "type": "key", "id": "keyboard", "actions": keys }] }),
        )
        .await;
    }

    /// Resizes the window, CSS pixels (headless: the viewport).
    pub async fn set_window_size(&self, width: u32, height: u32) {
        self.command(
            reqwest::Method::POST,
            "/window/rect",
            json!({ "width": width, "height": height }),
        )
        .await;
    }

    /// A PNG of the viewport.
    pub async fn screenshot(&self) -> Vec<u8> {
        let v = self
            .command(reqwest::Method::GET, "/screenshot", Value::Null)
            .await;
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap()
    }

    /// A Chrome DevTools Protocol command, through chromedriver's `goog/cdp/execute`.
    pub async fn cdp(&self, cmd: &str, params: Value) -> Value {
        self.command(
            reqwest::Method::POST,
            "/goog/cdp/execute",
            json!({ "cmd": cmd, "params": params }),
        )
        .await
    }

    /// The page's console messages since the last call, as `LEVEL message` lines.
    pub async fn console(&self) -> Vec<String> {
        let entries = self
            .command(
                reqwest::Method::POST,
                "/se/log",
                json!({ "type": "browser" }),
            )
            .await;
        entries
            .as_array()
            .unwrap()
            .iter()
            .map(|e| format!("{} {}", e["level"].as_str().unwrap_or("?"), e["message"]))
            .collect()
    }

    /// Ends the session (Chromium exits); Drop ends chromedriver.
    pub async fn close(self) {
        self.command(reqwest::Method::DELETE, "", Value::Null).await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.driver.id())])
            .status();
        let _ = self.driver.wait();
    }
}
