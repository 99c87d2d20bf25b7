// The panel's console pages (src/api/panel/console.rs): a server's screen in noVNC, or its
// serial port in xterm.js, over the console WebSocket of this server with the page's one-time
// token (GetConsoleAccess).
import RFB from '/panel/assets/novnc/novnc.min.js';

const element = document.getElementById('console');
const state = document.getElementById('console-state');

function say(text) {
  if (state) state.textContent = text;
}

function socketUrl(token) {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${location.host}/console/ws?token=${encodeURIComponent(token)}`;
}

// US keyboard symbols typed with Shift: QEMU turns keysyms into key presses, so the Shift key
// is pressed around them as a person would.
const SHIFTED = '~!@#$%^&*()_+{}|:"<>?';
const XK_SHIFT_L = 0xffe1;
const XK_RETURN = 0xff0d;
const XK_TAB = 0xff09;

function typeText(rfb, text, enter) {
  for (const ch of text) {
    if (ch === '\n') { rfb.sendKey(XK_RETURN, 'Enter'); continue; }
    if (ch === '\t') { rfb.sendKey(XK_TAB, 'Tab'); continue; }
    const code = ch.codePointAt(0);
    // Latin-1 characters are their own keysyms; others are 0x01000000 + the code point.
    const keysym = code < 0x100 ? code : 0x01000000 + code;
    const shift = SHIFTED.includes(ch) || (ch >= 'A' && ch <= 'Z');
    if (shift) rfb.sendKey(XK_SHIFT_L, 'ShiftLeft', true);
    rfb.sendKey(keysym, null);
    if (shift) rfb.sendKey(XK_SHIFT_L, 'ShiftLeft', false);
  }
  if (enter) rfb.sendKey(XK_RETURN, 'Enter');
}

function screen(token) {
  const rfb = new RFB(element, socketUrl(token), { wsProtocols: ['binary'] });
  // Fits the screen to the page, down to a phone's width.
  rfb.scaleViewport = true;
  rfb.focusOnClick = true;
  rfb.addEventListener('connect', () => { say('Connected.'); element.dataset.connected = 'yes'; rfb.focus(); });
  rfb.addEventListener('disconnect', (e) => {
    element.dataset.connected = 'no';
    say(e.detail.clean ? 'The console closed.' : 'The console was cut off.');
  });
  document.getElementById('send-cad').addEventListener('click', () => rfb.sendCtrlAltDel());
  document.getElementById('paste-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const input = document.getElementById('paste-text');
    typeText(rfb, input.value, document.getElementById('paste-enter').checked);
    input.value = '';
    rfb.focus();
  });
  window.extilityConsole = rfb;
}

function serial(token) {
  // 80 columns: the box scrolls sideways on a narrow screen (a phone's).
  const term = new window.Terminal({ cols: 80, rows: 24, cursorBlink: true, fontSize: 14 });
  term.open(element);
  const socket = new WebSocket(socketUrl(token), ['binary']);
  socket.binaryType = 'arraybuffer';
  const encoder = new TextEncoder();
  socket.addEventListener('open', () => { say('Connected.'); element.dataset.connected = 'yes'; term.focus(); });
  socket.addEventListener('message', (e) => term.write(new Uint8Array(e.data)));
  socket.addEventListener('close', (e) => {
    element.dataset.connected = 'no';
    say(e.reason ? `The console closed: ${e.reason}.` : 'The console closed.');
  });
  term.onData((data) => {
    if (socket.readyState === WebSocket.OPEN) socket.send(encoder.encode(data));
  });
  window.extilityConsole = term;
}

if (element) {
  if (element.dataset.kind === 'screen') screen(element.dataset.token);
  else serial(element.dataset.token);
}
