//! A real browser for the control panel's tests: Debian's `chromium`, headless, driven over
//! WebDriver by `fantoccini`. One `chromedriver` (started on a free port by the first test
//! that asks) serves every test of the binary, each test opening its own browser sessions;
//! it dies with the test binary. Every page's console is read through chromedriver's log
//! (`goog:loggingPrefs`), so a test can assert that no page logged an error.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

/// How long a wait for something the page should show may last.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// The shared chromedriver's address (`http://127.0.0.1:PORT`).
fn driver_url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // Started from a thread that lives as long as the test binary: the driver gets SIGKILL
        // when the thread that started it ends (PR_SET_PDEATHSIG), so never outlives the tests.
        let (started, result) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("chromedriver".into())
            .spawn(move || {
                use std::os::unix::process::CommandExt;
                let mut command = Command::new("chromedriver");
                command
                    .arg(format!("--port={port}"))
                    .stdout(Stdio::null())
                    .stderr(Stdio::null());
                // SAFETY: prctl(2) in the child before exec, async-signal-safe.
                unsafe {
                    command.pre_exec(|| {
                        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                        Ok(())
                    });
                }
                let child = command.spawn();
                let failed = child.is_err();
                let _ = started.send(child.map(|_| ()));
                if !failed {
                    loop {
                        std::thread::park();
                    }
                }
            })
            .unwrap();
        result.recv().unwrap().expect(
            "chromedriver must be installed (Debian's chromium-driver: see scripts/test.sh)",
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        format!("http://127.0.0.1:{port}")
    })
}

/// The Chromium binary (Debian's `/usr/bin/chromium` is a launcher script in front of it).
fn chromium_binary() -> &'static str {
    if std::path::Path::new("/usr/lib/chromium/chromium").exists() {
        "/usr/lib/chromium/chromium"
    } else {
        "/usr/bin/chromium"
    }
}

/// chromedriver's command that reads (and empties) the browser console's log.
#[derive(Debug)]
struct ReadLog;

impl WebDriverCompatibleCommand for ReadLog {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!("session/{}/se/log", session_id.unwrap_or("")))
    }

    fn method_and_body(&self, _: &url::Url) -> (axum::http::Method, Option<String>) {
        (
            axum::http::Method::POST,
            Some(json!({"type": "browser"}).to_string()),
        )
    }
}

/// One browser session (a window with its own cookies).
pub struct Browser {
    pub client: Client,
    session_id: String,
    closed: bool,
}

impl Browser {
    /// A new headless browser, `width` × `height` pixels.
    pub async fn open(width: u32, height: u32) -> Browser {
        Self::with_options(json!({
            "binary": chromium_binary(),
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                format!("--window-size={width},{height}"),
                "--hide-scrollbars", "--force-device-scale-factor=1",
            ],
        }))
        .await
    }

    /// A new headless browser showing pages as a phone `width` × `height` CSS pixels wide
    /// does (a headless window is never narrower than 500 pixels: this emulates the phone).
    pub async fn phone(width: u32, height: u32) -> Browser {
        Self::with_options(json!({
            "binary": chromium_binary(),
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
            "mobileEmulation": {
                "deviceMetrics": {"width": width, "height": height, "pixelRatio": 1.0},
            },
        }))
        .await
    }

    async fn with_options(chrome_options: Value) -> Browser {
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": chrome_options,
            "goog:loggingPrefs": {"browser": "ALL"},
        });
        let Value::Object(caps) = caps else {
            unreachable!()
        };
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(driver_url())
            .await
            .expect("starting a chromium session");
        let session_id = client.session_id().await.unwrap().unwrap();
        Browser {
            client,
            session_id,
            closed: false,
        }
    }

    pub async fn close(mut self) {
        self.closed = true;
        let _ = self.client.clone().close().await;
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    pub async fn url(&self) -> String {
        self.client.current_url().await.unwrap().to_string()
    }

    pub async fn find(&self, css: &str) -> fantoccini::elements::Element {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css}: {e}"))
    }

    /// The element `css`, once it is there (polling until [`DEADLINE`]).
    pub async fn wait_for(&self, css: &str) -> fantoccini::elements::Element {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Ok(el) = self.client.find(Locator::Css(css)).await {
                return el;
            }
            assert!(
                Instant::now() < deadline,
                "{css} did not appear on {}:\n{}",
                self.url().await,
                self.text("body").await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Polls `check` (a JavaScript expression) until it is true, or fails after [`DEADLINE`]
    /// saying `what`.
    pub async fn wait_until(&self, expression: &str, what: &str) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let value = self
                .client
                .execute(&format!("return !!({expression});"), vec![])
                .await
                .unwrap_or(Value::Bool(false));
            if value == Value::Bool(true) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: still not so on {}:\n{}",
                self.url().await,
                self.text("body").await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The text of the first `css` element ("" when there is none).
    pub async fn text(&self, css: &str) -> String {
        match self.client.find(Locator::Css(css)).await {
            Ok(el) => el.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// Runs JavaScript, returning its value.
    pub async fn js(&self, script: &str) -> Value {
        self.client.execute(script, vec![]).await.unwrap()
    }

    /// Types `text` into the field `css` (emptied first).
    pub async fn fill(&self, css: &str, text: &str) {
        let el = self.wait_for(css).await;
        el.clear().await.unwrap();
        el.send_keys(text).await.unwrap();
    }

    /// Chooses the option of value `value` in the select `css`.
    pub async fn choose(&self, css: &str, value: &str) {
        self.wait_for(css)
            .await
            .select_by_value(value)
            .await
            .unwrap_or_else(|e| panic!("no option {value} in {css}: {e}"));
    }

    pub async fn click(&self, css: &str) {
        self.wait_for(css).await.click().await.unwrap();
    }

    /// What the console logged since the last call: `(level, message)`.
    pub async fn console(&self) -> Vec<(String, String)> {
        let log = self.client.issue_cmd(ReadLog).await.unwrap();
        log.as_array()
            .map(|entries| {
                entries
                    .iter()
                    .map(|e| {
                        (
                            e["level"].as_str().unwrap_or("").to_string(),
                            e["message"].as_str().unwrap_or("").to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Fails if the console logged a warning or an error since the last look.
    pub async fn assert_console_clean(&self, page: &str) {
        let bad: Vec<_> = self
            .console()
            .await
            .into_iter()
            .filter(|(level, _)| level == "SEVERE" || level == "WARNING")
            .collect();
        assert!(bad.is_empty(), "{page} logged to the console: {bad:#?}");
    }

    /// A PNG of the window.
    pub async fn screenshot(&self, path: &std::path::Path) {
        let png = self.client.screenshot().await.unwrap();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
    }

    /// The value of the cookie `name` (HttpOnly ones too: WebDriver sees them).
    pub async fn cookie(&self, name: &str) -> Option<fantoccini::cookies::Cookie<'static>> {
        self.client.get_named_cookie(name).await.ok()
    }
}

impl Drop for Browser {
    /// A test that failed never reached `close`: end its session anyway (by hand, since its
    /// runtime is going away), so no browser outlives the test.
    fn drop(&mut self) {
        if self.closed {
            return;
        }
        let url = driver_url().trim_start_matches("http://").to_string();
        if let Ok(mut stream) = TcpStream::connect(&url) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let _ = write!(
                stream,
                "DELETE /session/{} HTTP/1.1\r\nHost: {url}\r\nConnection: close\r\n\r\n",
                self.session_id
            );
            let mut answer = Vec::new();
            let _ = stream.read_to_end(&mut answer);
        }
    }
}
