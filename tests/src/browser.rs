//! A real headless Chromium driven through chromedriver (WebDriver), for the console
//! tests. `cargo xtask test` (and `cargo xtask browser`) install Debian's `chromium` and
//! `chromium-driver` with `apt-get` when they are missing.

use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use crate::channels::eventually_async;
use crate::redis::free_port;

/// A chromedriver on a free loopback port and one headless Chromium session through it.
pub struct Browser {
    /// The WebDriver session.
    pub client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Start chromedriver and a headless Chromium with a fresh profile and a
    /// `width`×`height` window.
    pub async fn start(width: u32, height: u32) -> Result<Self> {
        let port = free_port()?;
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group: stopping it stops the Chromium it started too.
            .process_group(0)
            .spawn()
            .context(
                "cannot start chromedriver: run `cargo xtask browser` (installs Debian's \
                 chromium and chromium-driver)",
            )?;
        let profile = tempfile::tempdir()?;
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "args": [
                    "--headless=new",
                    // Tests run as root in CI containers, where Chromium's sandbox cannot start.
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    format!("--window-size={width},{height}"),
                    format!("--user-data-dir={}", profile.path().display()),
                ]
            }),
        );
        let url = format!("http://127.0.0.1:{port}");
        let client = eventually_async(|| {
            let capabilities = capabilities.clone();
            let url = url.clone();
            async move {
                ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                    .capabilities(capabilities)
                    .connect(&url)
                    .await
                    .map_err(|error| format!("chromedriver on {url} not ready: {error}"))
            }
        })
        .await;
        Ok(Self {
            client,
            driver,
            _profile: profile,
        })
    }

    /// Go to `url`.
    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.expect("navigate");
    }

    /// The path of the current page.
    pub async fn path(&self) -> String {
        self.client
            .current_url()
            .await
            .expect("current url")
            .path()
            .to_owned()
    }

    /// Wait until the current page's path is `expected` (a click that submits a form
    /// returns before the browser has followed the answer), panicking with the path it
    /// stayed on and that page's `#problem` text, if any.
    pub async fn wait_for_path(&self, expected: &str) {
        eventually_async(|| async move {
            let path = self
                .client
                .current_url()
                .await
                .map_err(|error| error.to_string())?
                .path()
                .to_owned();
            if path == expected {
                return Ok(());
            }
            let problem = match self.client.find(Locator::Css("#problem")).await {
                Ok(element) => element.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            Err(format!(
                "the browser stayed on {path}, not {expected}; its #problem: {problem:?}"
            ))
        })
        .await;
    }

    /// The visible text of the element `css`, waiting for it to exist. An element the
    /// page dropped between finding and reading it (a navigation just then) is found
    /// again.
    pub async fn text(&self, css: &str) -> String {
        eventually_async(|| async move {
            let element = self
                .client
                .wait()
                .at_most(crate::WAIT)
                .for_element(Locator::Css(css))
                .await
                .map_err(|error| format!("no `{css}`: {error}"))?;
            element
                .text()
                .await
                .map_err(|error| format!("`{css}` not readable: {error}"))
        })
        .await
    }

    /// Type `text` into the field `css`.
    pub async fn fill(&self, css: &str, text: &str) {
        let field = self
            .client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|error| panic!("no field `{css}`: {error}"));
        field.clear().await.expect("clear");
        field.send_keys(text).await.expect("type");
    }

    /// Choose the file at `path` in the file input `css`.
    pub async fn choose_file(&self, css: &str, path: &std::path::Path) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|error| panic!("no file input `{css}`: {error}"))
            .send_keys(&path.display().to_string())
            .await
            .expect("choose file");
    }

    /// Click the element `css`.
    pub async fn click(&self, css: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|error| panic!("no `{css}`: {error}"))
            .click()
            .await
            .expect("click");
    }

    /// Wait until the element `css` holds `expected` in its text, reloading the page
    /// between looks when `reload` (without: the page must change by itself).
    pub async fn wait_for_text(&self, css: &str, expected: &str, reload: bool) {
        eventually_async(|| async move {
            if reload {
                self.client
                    .refresh()
                    .await
                    .map_err(|error| error.to_string())?;
            }
            let text = match self.client.find(Locator::Css(css)).await {
                Ok(element) => element.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            if text.contains(expected) {
                Ok(())
            } else {
                Err(format!("`{css}` never showed {expected:?}; last: {text:?}"))
            }
        })
        .await;
    }

    /// The value of cookie `name`.
    pub async fn cookie(&self, name: &str) -> String {
        self.client
            .get_named_cookie(name)
            .await
            .expect("cookie")
            .value()
            .to_owned()
    }

    /// Save a PNG screenshot of the page to `path` (directories made as needed).
    pub async fn screenshot(&self, path: &std::path::Path) {
        let png = self.client.screenshot().await.expect("screenshot");
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("screenshot dir");
        }
        std::fs::write(path, png).expect("write screenshot");
    }

    /// End the session (Chromium quits), then chromedriver.
    pub async fn stop(self) {
        let _ = self.client.clone().close().await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // A failing test still stops its chromedriver and the Chromium it started: the
        // whole process group chromedriver leads (killing chromedriver alone would leave
        // Chromium running).
        let group = format!("-{}", self.driver.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.driver.wait();
    }
}
