//! What tests do with a spawned app, as its methods: sign in to the panel (in a browser or
//! over plain HTTP), fetch a guest's disk, boot a server from it, wait for its console to
//! print something, and where screenshots go. The panel tests and the guest tests use these
//! instead of repeating the API calls each of them takes.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use reqwest::header;
use serde_json::{Value, json};

use super::browser::Browser;
use super::catalogue::{BLANK_IMAGE, DISK_20GB, SERVER_1CPU_1GB};
use super::fetch_disk::{disks, fetch, fetch_args};
use super::image_server::ImageServer;
use super::{Customer, TestApp};

/// An SSH public key of alice's laptop (ed25519), as the guest tests give it to servers.
pub const LAPTOP_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJPq6JkZdznBikD0F5uhrPqrkPdmj7iMqIo7tz12MBpw alice@laptop";

/// The server `TestApp::create_server` and `TestApp::boot` make: its name, its VLAN (-1:
/// none), its image (the blank one unless said), its offers, the SSH keys its first boot
/// installs.
pub struct Boot<'a> {
    pub name: &'a str,
    pub vlan_id: i64,
    pub image_id: i64,
    pub server_offer: i64,
    pub disk_offer: i64,
    pub ssh_key_ids: Vec<i64>,
}

impl Default for Boot<'_> {
    fn default() -> Self {
        Boot {
            name: "guest",
            vlan_id: -1,
            image_id: BLANK_IMAGE,
            server_offer: SERVER_1CPU_1GB,
            disk_offer: DISK_20GB,
            ssh_key_ids: Vec::new(),
        }
    }
}

impl TestApp {
    /// Serves the disk image at `image` over HTTP and fetches it (FetchDisk) into a disk of
    /// alice's VDC named `name`; returns the disk.
    pub async fn fetch_guest(&self, image: &Path, name: &str) -> Value {
        self.fetch_bytes(std::fs::read(image).unwrap(), name).await
    }

    /// Serves `image` over HTTP and fetches it into a disk of alice's VDC named `name`;
    /// returns the disk.
    pub async fn fetch_bytes(&self, image: Vec<u8>, name: &str) -> Value {
        let files = ImageServer::start().await;
        let url = files.put_data("guest.img", image);
        let alice = self.alice();
        let vdc = self.alice.vdc_id;
        alice
            .job_ok(fetch(&alice, fetch_args(&url, vdc, name)).await)
            .await;
        disks(&alice, vdc)
            .await
            .into_iter()
            .find(|d| d["disk_name"] == name)
            .unwrap_or_else(|| panic!("no disk named {name} after FetchDisk"))
    }

    /// A VLAN of alice's VDC, named `name`; returns its id.
    pub async fn vlan(&self, name: &str) -> i64 {
        let vdc = self.alice.vdc_id;
        self.alice()
            .call("CreateVLAN", json!({"vdc_id": vdc, "vlan_name": name}))
            .await["vlan_id"]
            .as_i64()
            .unwrap()
    }

    /// alice's SSH key [`LAPTOP_KEY`], named `laptop`; returns its id.
    pub async fn laptop_key(&self) -> i64 {
        self.alice()
            .call(
                "CreateSSHKey",
                json!({"name": "laptop", "public_key": LAPTOP_KEY}),
            )
            .await["ssh_key_id"]
            .as_i64()
            .unwrap()
    }

    /// A stopped server of alice's VDC, as `server` says; returns the server.
    pub async fn create_server(&self, server: Boot<'_>) -> Value {
        self.alice()
            .call(
                "CreateServer",
                json!({"vdc_id": self.alice.vdc_id, "vlan_id": server.vlan_id,
                       "server_name": server.name, "image_id": server.image_id,
                       "server_productoffer_id": server.server_offer,
                       "disk_productoffer_ids": [server.disk_offer],
                       "ssh_key_ids": server.ssh_key_ids}),
            )
            .await
    }

    /// Starts alice's server: StartServer's job has succeeded.
    pub async fn start_server(&self, server_id: i64) {
        let alice = self.alice();
        let job = alice
            .call("StartServer", json!({"server_id": server_id}))
            .await;
        alice.job_ok(job["job_id"].as_i64().unwrap()).await;
    }

    /// Attaches `disk` to alice's server as its first disk (the one it boots from).
    pub async fn attach_first(&self, server_id: i64, disk: &Value) {
        let attached = self
            .alice()
            .call(
                "AttachDisk",
                json!({"server_id": server_id, "disk_id": disk["disk_id"], "index": 0}),
            )
            .await;
        assert_eq!(attached["result"], 1);
    }

    /// A server of alice's (as `server` says) whose first disk is `disk`, started. Returns the
    /// server's id.
    pub async fn boot(&self, disk: &Value, server: Boot<'_>) -> i64 {
        let server_id = self.create_server(server).await["server_id"]
            .as_i64()
            .unwrap();
        self.attach_first(server_id, disk).await;
        self.start_server(server_id).await;
        server_id
    }

    /// alice's server's console log once it shows `text` (`timeout` passed first fails the
    /// test), with the serial console's line ends removed.
    pub async fn console_until(&self, server_id: i64, text: &str, timeout: Duration) -> String {
        super::guest::console_until(&self.alice(), server_id, text, timeout).await
    }

    /// [`TestApp::console_until`], then prints, under the test's name `test`, how long the
    /// guest took and what it said from its `GUEST INIT` line on.
    pub async fn guest_says(
        &self,
        test: &str,
        server_id: i64,
        text: &str,
        timeout: Duration,
    ) -> String {
        let asked = Instant::now();
        let log = self.console_until(server_id, text, timeout).await;
        let lines: Vec<&str> = log.lines().map(str::trim).collect();
        let from_init = lines.iter().position(|l| *l == "GUEST INIT").unwrap_or(0);
        eprintln!(
            "{test}: the guest said '{text}' {:?} after it was started:\n{}",
            asked.elapsed(),
            lines[from_init..].join("\n")
        );
        log
    }

    /// Signs `who` in through the panel's sign-in form in the browser `b`, which lands on
    /// the Servers tab.
    pub async fn sign_in(&self, b: &Browser, who: &Customer) {
        b.goto(&format!("{}/panel/signin", self.server.url)).await;
        b.fill("#email", &who.email).await;
        b.fill("#password", &who.password).await;
        b.click(".signin button[type=submit]").await;
        b.wait_until(
            "location.pathname === '/panel/servers'",
            "signed in, on the Servers tab",
        )
        .await;
    }

    /// Sends the panel's sign-in form over plain HTTP, as a browser does (the form's cookie
    /// and token first), with `email` and `password`; returns the answer.
    pub async fn post_sign_in(
        &self,
        http: &reqwest::Client,
        email: &str,
        password: &str,
    ) -> reqwest::Response {
        let base = &self.server.url;
        let form = http
            .get(format!("{base}/panel/signin"))
            .send()
            .await
            .unwrap();
        let signin_cookie = cookie_value(&set_cookie(&form, "extility_panel_signin").unwrap());
        let token = csrf_field(&form.text().await.unwrap());
        http.post(format!("{base}/panel/signin"))
            .header(
                header::COOKIE,
                format!("extility_panel_signin={signin_cookie}"),
            )
            .form(&[
                ("_csrf", token.as_str()),
                ("email", email),
                ("password", password),
            ])
            .send()
            .await
            .unwrap()
    }

    /// Signs `who` in over plain HTTP; returns the session cookie's value.
    pub async fn http_sign_in(&self, http: &reqwest::Client, who: &Customer) -> String {
        let response = self.post_sign_in(http, &who.email, &who.password).await;
        assert_eq!(response.status(), 303);
        cookie_value(&set_cookie(&response, "extility_panel").expect("a session cookie"))
    }
}

/// The value of the hidden `_csrf` field in a page.
pub fn csrf_field(html: &str) -> String {
    let at = html.find("name=\"_csrf\" value=\"").expect("a _csrf field") + 20;
    html[at..].split('"').next().unwrap().to_string()
}

/// The value the response sets cookie `name` to, with its attributes.
pub fn set_cookie(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(str::to_string)
}

/// A `Set-Cookie` header's value, without its attributes.
pub fn cookie_value(set_cookie: &str) -> String {
    set_cookie
        .split(';')
        .next()
        .unwrap()
        .split_once('=')
        .unwrap()
        .1
        .to_string()
}

/// Where a test saves screenshot `name`: `target/tmp/screenshots/`, so that a test run leaves
/// the tree as it was; or the folder `EXTILITY_SCREENSHOTS` names, which is how
/// `scripts/refresh-screenshots.sh` refreshes the committed ones (`docs/src/screenshots/`).
pub fn screenshot_path(name: &str) -> PathBuf {
    let dir = match std::env::var_os("EXTILITY_SCREENSHOTS") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots"),
    };
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}
