//! Interactive consoles (issue 24), on real guests: a Linux guest (Debian's kernel, busybox)
//! runs one shell on its screen (tty1) and another on its serial port (ttyS0).
//!
//! - "Keys reach the guest", in headless Chromium: the panel's Console button opens the
//!   screen in noVNC, and its "Paste text" types `echo screen-typed-<random> >/dev/ttyS0` at
//!   the screen's shell: the line shows up in GetConsoleLog. The serial page (xterm.js) gets
//!   `echo $((6*7))-serial` typed into it and shows `42-serial`. Both pages are screenshotted
//!   for the book (`docs/src/screenshots/panel-console-*.png`, refreshed by `scripts/refresh-screenshots.sh`), and the screen page fits a phone's width.
//! - "The API path": GetConsoleAccess over JSON, then this test's own WebSocket client speaks
//!   RFB until a framebuffer update covers the screen the server announced.
//! - Refusals: a token used twice, an expired one, a foreign `Origin`, another customer's
//!   server (NOT_FOUND), a customer past the limit of open consoles (LIMIT_EXCEEDED). After a
//!   restart of `extility serve` the serial port still answers, and stopping the server
//!   closes an open console.
//! - "Idleness": with `--console-idle-timeout 3`, a screen that only asks for updates (as noVNC
//!   does while shown) is closed with code 4000, one typed at stays open until typing stops,
//!   and RFB that cannot be framed closes a console (1008). The BIOS screen of a blank disk.
//! - "Across nodes": the screen of a VM on node A, opened through node B, relayed with the
//!   cluster key.
//!
//! Needs root (Debian's kernel is readable by root only), QEMU, and Chromium with
//! chromedriver for the browser part (scripts/test.sh installs them).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::support::browser::Browser;
use crate::support::catalogue::{BLANK_IMAGE, DISK_1GB, SERVER_1CPU_512MB};
use crate::support::fetch_disk::{disks, fetch, fetch_args};
use crate::support::guest::{GuestDisk, console_until, qemu_options};
use crate::support::image_server::ImageServer;
use crate::support::server_db::ServerDb;
use crate::support::test_app::screenshot_path;
use crate::support::{Api, Backend, Cluster, TestApp, id};

type Socket = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

const BOOT_TIMEOUT: Duration = Duration::from_secs(300);

/// A shell on the screen (tty1) and one on the serial port (ttyS0), each a session leader
/// whose terminal is its own.
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs dev /dev 2>/dev/null
setsid sh -c 'exec sh -i </dev/tty1 >/dev/tty1 2>&1' &
setsid sh -c 'exec sh -i </dev/ttyS0 >/dev/ttyS0 2>&1' &
echo "CONSOLES READY"
while :; do sleep 3600; done
"#;

/// GetConsoleAccess of `kind`.
async fn access(api: &Api, server_id: i64, kind: &str) -> Value {
    api.call(
        "GetConsoleAccess",
        json!({"server_id": server_id, "kind": kind}),
    )
    .await
}

/// Opens the console WebSocket of `access`, with `origin` as the `Origin` header if given:
/// the socket, or the HTTP status it was refused with.
async fn connect(access: &Value, origin: Option<&str>) -> Result<Socket, u16> {
    let url = format!(
        "{}?token={}",
        access["url"].as_str().unwrap(),
        access["token"].as_str().unwrap()
    );
    let mut request = url.into_client_request().unwrap();
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("origin", origin.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((socket, _)) => Ok(socket),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Err(response.status().as_u16())
        }
        Err(err) => panic!("connecting to the console: {err}"),
    }
}

/// An RFB client over the console WebSocket, as far as a framebuffer update.
struct Rfb {
    socket: Socket,
    buffer: VecDeque<u8>,
}

impl Rfb {
    async fn read(&mut self, n: usize) -> Vec<u8> {
        while self.buffer.len() < n {
            let message = tokio::time::timeout(Duration::from_secs(60), self.socket.next())
                .await
                .expect("RFB bytes within a minute")
                .expect("the socket is open")
                .unwrap();
            match message {
                Message::Binary(bytes) => self.buffer.extend(bytes.iter()),
                Message::Close(frame) => panic!("the console closed: {frame:?}"),
                _ => {}
            }
        }
        self.buffer.drain(..n).collect()
    }

    async fn send(&mut self, bytes: Vec<u8>) {
        self.socket
            .send(Message::Binary(bytes.into()))
            .await
            .unwrap();
    }

    /// The handshake (version 3.8, no authentication, a shared session): the screen's size.
    async fn handshake(&mut self) -> (u16, u16, u8) {
        let version = self.read(12).await;
        assert_eq!(
            version, b"RFB 003.008\n",
            "QEMU's VNC server speaks RFB 3.8"
        );
        self.send(b"RFB 003.008\n".to_vec()).await;
        let count = self.read(1).await[0] as usize;
        let types = self.read(count).await;
        assert!(
            types.contains(&1),
            "no authentication on the server's own socket: {types:?}"
        );
        self.send(vec![1]).await;
        assert_eq!(self.read(4).await, [0, 0, 0, 0], "security result OK");
        self.send(vec![1]).await; // ClientInit: shared
        let init = self.read(24).await;
        let width = u16::from_be_bytes([init[0], init[1]]);
        let height = u16::from_be_bytes([init[2], init[3]]);
        let bits_per_pixel = init[4];
        let name_len = u32::from_be_bytes([init[20], init[21], init[22], init[23]]) as usize;
        self.read(name_len).await;
        (width, height, bits_per_pixel)
    }

    /// Asks for the whole screen and reads one framebuffer update (raw encoding): the area its
    /// rectangles cover, each checked to be inside the screen.
    async fn full_update(&mut self, width: u16, height: u16, bits_per_pixel: u8) -> u64 {
        let mut request = vec![3, 0, 0, 0, 0, 0];
        request.extend(width.to_be_bytes());
        request.extend(height.to_be_bytes());
        self.send(request).await;
        let header = self.read(4).await;
        assert_eq!(header[0], 0, "a FramebufferUpdate");
        let rects = u16::from_be_bytes([header[2], header[3]]);
        let mut area = 0u64;
        for _ in 0..rects {
            let r = self.read(12).await;
            let [x, y, w, h] = [0, 2, 4, 6].map(|i| u16::from_be_bytes([r[i], r[i + 1]]) as u64);
            let encoding = i32::from_be_bytes([r[8], r[9], r[10], r[11]]);
            assert_eq!(encoding, 0, "raw, the one encoding this client accepts");
            assert!(x + w <= width as u64 && y + h <= height as u64);
            self.read((w * h * bits_per_pixel as u64 / 8) as usize)
                .await;
            area += w * h;
        }
        area
    }
}

/// Speaks RFB over a console socket until a full update of the announced screen arrives.
async fn assert_screen_update(socket: Socket) -> Socket {
    let mut rfb = Rfb {
        socket,
        buffer: VecDeque::new(),
    };
    let (width, height, bpp) = rfb.handshake().await;
    assert!(width >= 320 && height >= 200, "{width}x{height}");
    let area = rfb.full_update(width, height, bpp).await;
    assert_eq!(
        area,
        width as u64 * height as u64,
        "the update covers the {width}x{height} screen"
    );
    rfb.socket
}

/// Waits until the socket is closed by the server (a close frame or the end of the stream).
async fn closed_by_server(socket: &mut Socket, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, socket.next()).await {
            Err(_) => return false,
            Ok(None | Some(Err(_)) | Some(Ok(Message::Close(_)))) => return true,
            Ok(Some(Ok(_))) => {}
        }
    }
}

async fn create_and_start(api: &Api, vdc: i64, name: &str, disk_url: Option<&str>) -> i64 {
    let server = api
        .call(
            "CreateServer",
            json!({"vdc_id": vdc, "vlan_id": -1, "server_name": name, "image_id": BLANK_IMAGE,
                   "server_productoffer_id": SERVER_1CPU_512MB,
                   "disk_productoffer_ids": [DISK_1GB]}),
        )
        .await;
    let server_id = id(&server, "server_id");
    if let Some(url) = disk_url {
        api.job_ok(fetch(api, fetch_args(url, vdc, "guest disk")).await)
            .await;
        let disk = disks(api, vdc)
            .await
            .into_iter()
            .find(|d| d["disk_name"] == "guest disk")
            .unwrap();
        api.call(
            "AttachDisk",
            // First: the BIOS boots it.
            json!({"server_id": server_id, "disk_id": disk["disk_id"], "index": 0}),
        )
        .await;
    }
    let job = api
        .call("StartServer", json!({"server_id": server_id}))
        .await;
    api.job_ok(id(&job, "job_id")).await;
    server_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_types_at_the_screen_and_the_serial_port() {
    let _heavy = crate::support::CPU_HEAVY.read().await;
    let mut app = TestApp::start_with(
        Backend::Sqlite,
        qemu_options(&["--max-consoles-per-customer", "2"]),
    )
    .await;
    let disk = GuestDisk::new(INIT)
        .append("quiet")
        .build(app.dir.path(), "consoles");
    let files = ImageServer::start().await;
    let url = files.put_data("guest.img", std::fs::read(&disk).unwrap());
    let alice = app.alice();
    let server_id = create_and_start(&alice, app.alice.vdc_id, "typed", Some(&url)).await;
    console_until(&alice, server_id, "CONSOLES READY", BOOT_TIMEOUT).await;

    // The API path: a token, a WebSocket, RFB as far as a framebuffer update of the screen.
    let screen = access(&alice, server_id, "screen").await;
    assert_eq!(screen["kind"], "screen");
    assert!(
        screen["url"].as_str().unwrap().starts_with("ws://")
            && screen["url"].as_str().unwrap().ends_with("/console/ws"),
        "{screen}"
    );
    let socket = connect(&screen, None).await.expect("the console opens");
    let socket = assert_screen_update(socket).await;

    // Refusals. The token was for one connection.
    assert_eq!(
        connect(&screen, None).await.err(),
        Some(403),
        "a token works once"
    );
    // Another customer's server is one that does not exist.
    let bob = app.bob();
    let err = bob
        .fail(
            "GetConsoleAccess",
            json!({"server_id": server_id, "kind": "screen"}),
        )
        .await;
    assert_eq!(err.code, "NOT_FOUND", "{err:?}");
    let err = alice
        .fail(
            "GetConsoleAccess",
            json!({"server_id": server_id, "kind": "keyboard"}),
        )
        .await;
    assert_eq!(err.code, "INVALID_ARGUMENT", "{err:?}");
    // A page of another site cannot use a token (nor spend it).
    let serial = access(&alice, server_id, "serial").await;
    assert_eq!(
        connect(&serial, Some("http://evil.example")).await.err(),
        Some(403)
    );
    // Past the limit of two open consoles: refused, saying why.
    let mut second = connect(&serial, None)
        .await
        .expect("the same token, no Origin");
    let err = alice
        .fail(
            "GetConsoleAccess",
            json!({"server_id": server_id, "kind": "screen"}),
        )
        .await;
    assert_eq!(err.code, "LIMIT_EXCEEDED", "{err:?}");
    assert!(err.message.contains("consoles open"), "{}", err.message);
    drop(socket);
    second.close(None).await.unwrap();
    // The places come back once the server has seen the sockets close.
    let deadline = Instant::now() + Duration::from_secs(30);
    let late = loop {
        match alice
            .try_call(
                "GetConsoleAccess",
                json!({"server_id": server_id, "kind": "screen"}),
            )
            .await
        {
            Ok(access) => break access,
            Err(err) if err.code == "LIMIT_EXCEEDED" && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(err) => panic!("{err:?}"),
        }
    };
    // An expired token (its 60 seconds passed, as the database now says) is refused.
    let db = ServerDb::open(&app.server).await;
    sqlx::query("UPDATE console_tokens SET expires_at = 1 WHERE used_at IS NULL")
        .execute(db.pool())
        .await
        .unwrap();
    assert_eq!(connect(&late, None).await.err(), Some(403), "expired");

    // Every console opened is in the audit trail.
    let events = alice.call("ListAuditEvents", json!({})).await;
    let opened: Vec<&Value> = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["operation"].as_str().unwrap().starts_with("Open") && e["outcome"] == "OK")
        .collect();
    assert_eq!(opened.len(), 2, "{events}");
    assert!(
        opened
            .iter()
            .all(|e| e["ids"] == format!("server_id={server_id}")),
        "{opened:?}"
    );
    assert!(opened.iter().any(|e| e["operation"] == "OpenScreenConsole"));
    assert!(opened.iter().any(|e| e["operation"] == "OpenSerialConsole"));

    // Keys reach the guest from a browser: the panel's screen page.
    let b = Browser::open(1280, 900).await;
    let base = &app.server.url;
    app.sign_in(&b, &app.alice).await;
    b.click(&format!("a[href='/panel/servers/{server_id}/console']"))
        .await;
    b.wait_until(
        "document.querySelector('#console[data-connected=yes] canvas') !== null",
        "noVNC connected",
    )
    .await;
    let marker = format!("screen-typed-{}", uuid::Uuid::new_v4().simple());
    b.fill("#paste-text", &format!("echo {marker} >/dev/ttyS0"))
        .await;
    b.click("#paste-form button[type=submit]").await;
    let log = console_until(&alice, server_id, &marker, Duration::from_secs(120)).await;
    assert!(
        // The output (after the serial shell's prompt, perhaps), not the command typed.
        log.lines()
            .any(|l| l.trim_end().ends_with(&marker) && !l.contains("echo")),
        "the shell on the screen ran the line: {log}"
    );
    // The typed command is on the screen; give noVNC a frame of it for the screenshot.
    b.wait_until(
        "document.querySelector('#console canvas').width > 0",
        "the screen is drawn",
    )
    .await;
    b.screenshot(&screenshot_path("panel-console-screen.png"))
        .await;

    // The serial port in xterm.js.
    b.goto(&format!(
        "{base}/panel/servers/{server_id}/console?kind=serial"
    ))
    .await;
    b.wait_until(
        "document.querySelector('#console[data-connected=yes] .xterm-helper-textarea') !== null",
        "xterm.js connected",
    )
    .await;
    b.find(".xterm-helper-textarea")
        .await
        .send_keys("echo $((6*7))-serial\u{e007}")
        .await
        .unwrap();
    b.wait_until(
        "document.querySelector('.xterm-rows').textContent.includes('42-serial')",
        "the serial shell's answer in the terminal",
    )
    .await;
    b.screenshot(&screenshot_path("panel-console-serial.png"))
        .await;
    b.assert_console_clean("the serial console page").await;
    b.close().await;

    // At a phone's width the screen page fits the page, without sideways scrolling.
    let phone = Browser::phone(390, 844).await;
    app.sign_in(&phone, &app.alice).await;
    phone
        .goto(&format!("{base}/panel/servers/{server_id}/console"))
        .await;
    phone
        .wait_until(
            "document.querySelector('#console[data-connected=yes] canvas') !== null",
            "noVNC connected on a phone",
        )
        .await;
    let fits = phone
        .js(
            "const c = document.querySelector('#console canvas').getBoundingClientRect(); \
             return document.documentElement.scrollWidth <= window.innerWidth && c.right <= window.innerWidth;",
        )
        .await;
    assert_eq!(fits, json!(true), "the screen fits a phone's width");
    phone.close().await;

    // The consoles survive a restart of `extility serve` (as the VM does), and stopping the
    // server closes an open console.
    app.server.restart();
    // On a new port.
    let alice = app.alice();
    let deadline = Instant::now() + Duration::from_secs(30);
    let serial = loop {
        match alice
            .try_call(
                "GetConsoleAccess",
                json!({"server_id": server_id, "kind": "serial"}),
            )
            .await
        {
            Ok(access) => match connect(&access, None).await {
                Ok(socket) => break socket,
                Err(429) if Instant::now() < deadline => {}
                Err(status) => panic!("refused with {status}"),
            },
            Err(err) if err.code == "LIMIT_EXCEEDED" && Instant::now() < deadline => {}
            Err(err) => panic!("{err:?}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut serial = serial;
    serial
        .send(Message::Binary(b"echo $((5*5))-again\r".to_vec().into()))
        .await
        .unwrap();
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("25-again") {
        match tokio::time::timeout(Duration::from_secs(60), serial.next()).await {
            Ok(Some(Ok(Message::Binary(bytes)))) => seen.extend_from_slice(&bytes),
            Ok(Some(Ok(_))) => {}
            other => panic!(
                "no answer on the serial port after a restart: {other:?} {}",
                String::from_utf8_lossy(&seen)
            ),
        }
    }
    let job = alice
        .call(
            "StopServer",
            json!({"server_id": server_id, "stop_method": 2}),
        )
        .await;
    alice.job_ok(id(&job, "job_id")).await;
    assert!(
        closed_by_server(&mut serial, Duration::from_secs(30)).await,
        "stopping the server closed the console"
    );
    let err = alice
        .fail(
            "GetConsoleAccess",
            json!({"server_id": server_id, "kind": "serial"}),
        )
        .await;
    assert_eq!(err.code, "CONFLICT", "a stopped server has no console");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_console_opens_through_another_node() {
    let _heavy = crate::support::CPU_HEAVY.read().await;
    let cluster = Cluster::new(
        Backend::Postgres,
        &["--hypervisor", "qemu", "--qemu-accel", "tcg"],
    )
    .await;
    let a = cluster.node("node-a");
    let b = cluster.node("node-b");
    let customer = a.add_customer("cora@example.com", "cora-password", &[]);
    let on_a = a.api(&customer.email, &customer.password);
    let on_b = b.api(&customer.email, &customer.password);
    // A server with a blank disk: its BIOS screen is a screen all the same.
    let server_id = create_and_start(&on_a, customer.vdc_id, "relayed", None).await;
    let server = on_a
        .call("GetServer", json!({"server_id": server_id}))
        .await;
    let (runs, other, other_api) = match server["node"].as_str().unwrap() {
        "node-a" => (&a, &b, &on_b),
        _ => (&b, &a, &on_a),
    };

    // The BIOS switches the screen's mode as it starts (640x480, then 640x400 text): a console
    // opened just before the switch announces the old size and is sent the new one, which
    // this raw-only client cannot be told. A later connection announces the new size.
    let mut attempts = 0;
    let mut socket = loop {
        attempts += 1;
        let screen = access(other_api, server_id, "screen").await;
        assert!(
            screen["url"]
                .as_str()
                .unwrap()
                .starts_with(&other.url.replace("http://", "ws://")),
            "the URL is the asked node's: {screen}"
        );
        let mut rfb = Rfb {
            socket: connect(&screen, None).await.expect("the console opens"),
            buffer: VecDeque::new(),
        };
        let (width, height, bpp) = rfb.handshake().await;
        let area = rfb.full_update(width, height, bpp).await;
        if area == width as u64 * height as u64 {
            break rfb.socket;
        }
        // Within the per-server limit of 4 open consoles, however late the closes are seen.
        assert!(
            attempts < 3,
            "the update covers the {width}x{height} screen: {area}"
        );
        rfb.socket.close(None).await.unwrap();
    };
    assert!(
        runs.log_text()
            .contains("serving a console to another node"),
        "the node running the VM served it: {}",
        runs.log_text()
    );
    socket.close(None).await.unwrap();
}

/// A screen console past its RFB handshake.
async fn screen_session(api: &Api, server_id: i64) -> Socket {
    let screen = access(api, server_id, "screen").await;
    let mut rfb = Rfb {
        socket: connect(&screen, None).await.expect("the console opens"),
        buffer: VecDeque::new(),
    };
    rfb.handshake().await;
    rfb.socket
}

/// FramebufferUpdateRequest, incremental, of the top left corner: what noVNC sends as it draws.
const UPDATE_REQUEST: [u8; 10] = [3, 1, 0, 0, 0, 0, 0, 64, 0, 64];

/// KeyEvent of Shift (which the BIOS screen ignores), pressed or released.
fn shift(down: bool) -> Vec<u8> {
    vec![4, down as u8, 0, 0, 0, 0, 0xff, 0xe1]
}

/// Sends `messages`, then reads what comes for `pause`: the close code if the server closed
/// the console meanwhile.
async fn send_then_read(socket: &mut Socket, messages: &[Vec<u8>], pause: Duration) -> Option<u16> {
    for m in messages {
        if socket
            .send(Message::Binary(m.clone().into()))
            .await
            .is_err()
        {
            return Some(0);
        }
    }
    let until = tokio::time::Instant::now() + pause;
    loop {
        match tokio::time::timeout_at(until, socket.next()).await {
            Err(_) => return None,
            Ok(Some(Ok(Message::Close(frame)))) => {
                return Some(frame.map(|f| u16::from(f.code)).unwrap_or(0));
            }
            Ok(None | Some(Err(_))) => return Some(0),
            Ok(Some(Ok(_))) => {}
        }
    }
}

/// `--console-idle-timeout` counts what a person sends: a screen that only asks for updates
/// (as noVNC does while it is shown) is closed after it with code 4000; one typed at every
/// half second is not, however long; RFB that cannot be framed closes a console at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_screen_only_watched_idles_out_and_one_typed_at_stays() {
    let _heavy = crate::support::CPU_HEAVY.read().await;
    const IDLE: Duration = Duration::from_secs(3);
    let app = TestApp::start_with(
        Backend::Sqlite,
        qemu_options(&["--console-idle-timeout", "3"]),
    )
    .await;
    let alice = app.alice();
    // A blank disk: the BIOS screen is enough.
    let server_id = create_and_start(&alice, app.alice.vdc_id, "idle", None).await;
    let update = UPDATE_REQUEST.to_vec();

    // Before the server's clock of the first console starts.
    let opened = Instant::now();
    let mut watched = screen_session(&alice, server_id).await;
    let mut typed = screen_session(&alice, server_id).await;
    let mut down = true;
    let watched_closed = loop {
        assert!(
            opened.elapsed() < Duration::from_secs(60),
            "a screen only asking for updates stayed open"
        );
        let closed = send_then_read(
            &mut typed,
            &[shift(down), update.clone()],
            Duration::from_millis(250),
        )
        .await;
        assert_eq!(closed, None, "the console typed at was closed");
        down = !down;
        if let Some(code) = send_then_read(
            &mut watched,
            std::slice::from_ref(&update),
            Duration::from_millis(250),
        )
        .await
        {
            break code;
        }
    };
    assert_eq!(watched_closed, 4000, "closed for idleness");
    assert!(opened.elapsed() >= IDLE, "not before the timeout");

    // The one typed at outlives two more timeouts while typing goes on...
    let typing_until = Instant::now() + 2 * IDLE;
    while Instant::now() < typing_until {
        let closed = send_then_read(
            &mut typed,
            &[shift(down), update.clone()],
            Duration::from_millis(500),
        )
        .await;
        assert_eq!(closed, None, "the console typed at was closed");
        down = !down;
    }
    // ...and once only updates are asked for, it idles out too.
    let stopped = Instant::now();
    let typed_closed = loop {
        assert!(
            stopped.elapsed() < Duration::from_secs(60),
            "stayed open without typing"
        );
        if let Some(code) = send_then_read(
            &mut typed,
            std::slice::from_ref(&update),
            Duration::from_millis(250),
        )
        .await
        {
            break code;
        }
    };
    assert_eq!(typed_closed, 4000);

    // A message type RFB does not have closes the console (policy violation), with a log line.
    let mut hostile = screen_session(&alice, server_id).await;
    let closed = send_then_read(&mut hostile, &[vec![77, 0, 0, 0]], Duration::from_secs(30)).await;
    assert_eq!(closed, Some(1008));
    assert!(
        app.server
            .log_text()
            .contains("closing a console whose client sent what cannot be framed"),
        "{}",
        app.server.log_text()
    );
}
