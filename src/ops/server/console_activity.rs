//! What counts as a person's activity on a console, for `--console-idle-timeout`.
//!
//! On `serial` every byte from the client is someone typing. On `screen` it is not: noVNC
//! sends FramebufferUpdateRequests for as long as the screen is shown, so the client-to-server
//! RFB stream (RFB 3.8, RFC 6143) is framed here just enough to tell messages apart, and only
//! KeyEvent (4), QEMU's extended KeyEvent (255/0, what noVNC sends QEMU instead), a
//! PointerEvent (5) that presses or releases a button or moves, and ClientCutText (6) count.
//! The parser only watches: the bytes go to the VM unchanged. A stream it cannot frame (an
//! unknown message type, a security type it does not know, cut text longer than QEMU takes)
//! is [`Unframeable`]: the console is closed, since a well-behaved client never sends one.
//!
//! Pure and incremental: bytes are fed as they come, split anywhere, and nothing from the
//! client is buffered beyond one fixed-size message header (cut text is skipped, not kept).

use crate::hypervisor::ConsoleKind;

/// The longest ClientCutText taken (QEMU refuses longer ones too: 1 MiB).
pub const MAX_CUT_TEXT: u32 = 1 << 20;
/// The longest header kept while a message is framed (SetPixelFormat's 20 bytes).
const MAX_HEADER: usize = 20;

/// Why a client's stream cannot be framed (said in the log line of the console's close).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unframeable(pub String);

impl std::fmt::Display for Unframeable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The activity counter of one console connection.
pub enum Activity {
    /// Any byte is activity.
    Serial,
    Screen(RfbClient),
}

impl Activity {
    pub fn new(kind: ConsoleKind) -> Activity {
        match kind {
            ConsoleKind::Serial => Activity::Serial,
            ConsoleKind::Screen => Activity::Screen(RfbClient::default()),
        }
    }

    /// Takes the next bytes from the client: whether they held a person's activity.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<bool, Unframeable> {
        match self {
            Activity::Serial => Ok(!bytes.is_empty()),
            Activity::Screen(rfb) => rfb.feed(bytes),
        }
    }
}

/// Where the client-to-server RFB stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// "RFB 003.00x\n", 12 bytes.
    Version,
    /// RFB 3.7 and 3.8: the security type chosen, one byte.
    SecurityType,
    /// VNC authentication's 16-byte response.
    VncAuthResponse,
    /// ClientInit: the shared flag, one byte.
    ClientInit,
    /// Normal messages: a header of `need` bytes is being gathered.
    Messages,
    /// The text of a ClientCutText (or a fence's payload): this many bytes are skipped.
    Skip(u32),
}

/// The framing state of a client-to-server RFB stream.
#[derive(Debug, Clone)]
pub struct RfbClient {
    phase: Phase,
    header: [u8; MAX_HEADER],
    have: usize,
    /// The button mask and position of the last PointerEvent.
    pointer: Option<(u8, u16, u16)>,
}

impl Default for RfbClient {
    fn default() -> Self {
        RfbClient {
            phase: Phase::Version,
            header: [0; MAX_HEADER],
            have: 0,
            pointer: None,
        }
    }
}

/// What the header gathered so far says.
enum Framed {
    /// This many header bytes in all are needed first.
    Need(usize),
    /// A whole message of the header's length, then `skip` bytes of payload.
    Done { active: bool, skip: u32 },
}

impl RfbClient {
    /// Takes the next bytes: whether they completed a message that is a person's activity.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<bool, Unframeable> {
        let mut active = false;
        while !bytes.is_empty() {
            if let Phase::Skip(left) = self.phase {
                let n = (left as usize).min(bytes.len());
                bytes = &bytes[n..];
                let left = left - n as u32;
                self.phase = if left == 0 {
                    Phase::Messages
                } else {
                    Phase::Skip(left)
                };
                continue;
            }
            let need = match self.frame()? {
                Framed::Need(need) => need,
                Framed::Done { .. } => unreachable!("a message is taken when it completes"),
            };
            let n = (need - self.have).min(bytes.len());
            self.header[self.have..self.have + n].copy_from_slice(&bytes[..n]);
            self.have += n;
            bytes = &bytes[n..];
            if let Framed::Done { active: a, skip } = self.frame()? {
                active |= a;
                self.next_phase(skip);
            }
        }
        Ok(active)
    }

    /// After a complete header: the phase that follows it.
    fn next_phase(&mut self, skip: u32) {
        let header = &self.header[..self.have];
        self.phase = match self.phase {
            // 3.3: the server chose the security type and, on QEMU's own socket, it is none.
            Phase::Version if header == b"RFB 003.003\n" => Phase::ClientInit,
            Phase::Version => Phase::SecurityType,
            Phase::SecurityType if header[0] == 2 => Phase::VncAuthResponse,
            Phase::SecurityType | Phase::VncAuthResponse => Phase::ClientInit,
            Phase::ClientInit | Phase::Messages if skip > 0 => Phase::Skip(skip),
            Phase::ClientInit | Phase::Messages => Phase::Messages,
            Phase::Skip(_) => unreachable!("skipping has no header"),
        };
        self.have = 0;
    }

    /// How far the header gathered is from a whole message, or why it cannot be one.
    fn frame(&mut self) -> Result<Framed, Unframeable> {
        let h = &self.header[..self.have];
        let done = |len: usize, active: bool, skip: u32| {
            Ok(if h.len() < len {
                Framed::Need(len)
            } else {
                Framed::Done { active, skip }
            })
        };
        match self.phase {
            Phase::Version => {
                if h.len() < 12 {
                    return Ok(Framed::Need(12));
                }
                match h {
                    b"RFB 003.003\n" | b"RFB 003.007\n" | b"RFB 003.008\n" => Ok(Framed::Done {
                        active: false,
                        skip: 0,
                    }),
                    _ => Err(Unframeable(format!(
                        "not an RFB 3.3, 3.7 or 3.8 client: {:?}",
                        String::from_utf8_lossy(h)
                    ))),
                }
            }
            Phase::SecurityType => match h.first() {
                None => Ok(Framed::Need(1)),
                Some(1 | 2) => done(1, false, 0),
                Some(other) => Err(Unframeable(format!("security type {other}"))),
            },
            Phase::VncAuthResponse => done(16, false, 0),
            Phase::ClientInit => done(1, false, 0),
            Phase::Skip(_) => unreachable!("skipping has no header"),
            Phase::Messages => self.frame_message(),
        }
    }

    /// Frames one normal client message (RFC 6143 7.5, and the extensions noVNC sends QEMU).
    fn frame_message(&mut self) -> Result<Framed, Unframeable> {
        let h = &self.header[..self.have];
        let Some(&kind) = h.first() else {
            return Ok(Framed::Need(1));
        };
        let need = |len: usize| Ok(Framed::Need(len));
        let quiet = |len: usize, skip: u32| {
            Ok(if h.len() < len {
                Framed::Need(len)
            } else {
                Framed::Done {
                    active: false,
                    skip,
                }
            })
        };
        match kind {
            // SetPixelFormat.
            0 => quiet(20, 0),
            // SetEncodings: a count of 4-byte encodings.
            2 if h.len() < 4 => need(4),
            2 => quiet(4, u16::from_be_bytes([h[2], h[3]]) as u32 * 4),
            // FramebufferUpdateRequest.
            3 => quiet(10, 0),
            // KeyEvent.
            4 if h.len() < 8 => need(8),
            4 => Ok(Framed::Done {
                active: true,
                skip: 0,
            }),
            // PointerEvent: activity when the buttons or the position change.
            5 if h.len() < 6 => need(6),
            5 => {
                let now = (
                    h[1],
                    u16::from_be_bytes([h[2], h[3]]),
                    u16::from_be_bytes([h[4], h[5]]),
                );
                let active = self.pointer != Some(now);
                self.pointer = Some(now);
                Ok(Framed::Done { active, skip: 0 })
            }
            // ClientCutText; a negative length is the extended clipboard's, of its absolute
            // value.
            6 if h.len() < 8 => need(8),
            6 => {
                let length = i32::from_be_bytes([h[4], h[5], h[6], h[7]]).unsigned_abs();
                if length > MAX_CUT_TEXT {
                    return Err(Unframeable(format!(
                        "cut text of {length} bytes (at most {MAX_CUT_TEXT})"
                    )));
                }
                Ok(Framed::Done {
                    active: true,
                    skip: length,
                })
            }
            // EnableContinuousUpdates.
            150 => quiet(10, 0),
            // ClientFence: flags, then a payload of at most 64 bytes.
            248 if h.len() < 9 => need(9),
            248 if h[8] > 64 => Err(Unframeable(format!("a fence of {} bytes", h[8]))),
            248 => quiet(9, h[8] as u32),
            // xvp (Ctrl-Alt-Del and the like where the server offers it): not a key.
            250 => quiet(4, 0),
            // SetDesktopSize (the browser's window was resized): 16 bytes a screen.
            251 if h.len() < 8 => need(8),
            251 => quiet(8, h[6] as u32 * 16),
            // QEMU's messages: 0 is the extended KeyEvent, 1 audio control.
            255 if h.len() < 2 => need(2),
            255 => match h[1] {
                0 if h.len() < 12 => need(12),
                0 => Ok(Framed::Done {
                    active: true,
                    skip: 0,
                }),
                1 if h.len() < 4 => need(4),
                1 => match u16::from_be_bytes([h[2], h[3]]) {
                    0 | 1 => quiet(4, 0),
                    2 => quiet(10, 0),
                    other => Err(Unframeable(format!("QEMU audio message {other}"))),
                },
                other => Err(Unframeable(format!("QEMU client message {other}"))),
            },
            other => Err(Unframeable(format!("RFB client message type {other}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HANDSHAKE: &[u8] = b"RFB 003.008\n\x01\x01";

    fn key(down: bool) -> Vec<u8> {
        vec![4, down as u8, 0, 0, 0, 0, 0, 0x61]
    }

    fn pointer(mask: u8, x: u16, y: u16) -> Vec<u8> {
        let mut m = vec![5, mask];
        m.extend(x.to_be_bytes());
        m.extend(y.to_be_bytes());
        m
    }

    fn update_request() -> Vec<u8> {
        vec![3, 1, 0, 0, 0, 0, 2, 128, 1, 224]
    }

    fn set_encodings(encodings: &[i32]) -> Vec<u8> {
        let mut m = vec![2, 0];
        m.extend((encodings.len() as u16).to_be_bytes());
        for e in encodings {
            m.extend(e.to_be_bytes());
        }
        m
    }

    fn cut_text(text: &[u8]) -> Vec<u8> {
        let mut m = vec![6, 0, 0, 0];
        m.extend((text.len() as u32).to_be_bytes());
        m.extend(text);
        m
    }

    /// Feeds `stream` split at `at` (a position of each split): each message's activity, as
    /// the parser reported it per piece, or the error.
    fn feed_split(stream: &[u8], at: &[usize]) -> Result<Vec<bool>, Unframeable> {
        let mut rfb = RfbClient::default();
        let mut seen = Vec::new();
        let mut start = 0;
        for &end in at.iter().chain([stream.len()].iter()) {
            seen.push(rfb.feed(&stream[start..end])?);
            start = end;
        }
        Ok(seen)
    }

    fn session(messages: &[Vec<u8>]) -> Vec<u8> {
        let mut s = HANDSHAKE.to_vec();
        for m in messages {
            s.extend(m);
        }
        s
    }

    #[test]
    fn update_requests_encodings_and_pixel_formats_are_not_activity() {
        let mut format = vec![0u8; 20];
        format[4] = 32;
        let stream = session(&[
            format,
            set_encodings(&[0, 1, -223, -258, 0x0c0a1e5ce_u32 as i32]),
            update_request(),
            update_request(),
        ]);
        assert_eq!(feed_split(&stream, &[]), Ok(vec![false]));
        // Split at every byte boundary, into two pieces and into single bytes.
        for at in 0..=stream.len() {
            let seen = feed_split(&stream, &[at]).unwrap();
            assert!(seen.iter().all(|a| !a), "split at {at}");
        }
        let every: Vec<usize> = (1..stream.len()).collect();
        assert!(feed_split(&stream, &every).unwrap().iter().all(|a| !a));
    }

    #[test]
    fn keys_count_wherever_the_stream_is_split() {
        let before = session(&[update_request(), set_encodings(&[0])]);
        let mut stream = before.clone();
        stream.extend(key(true));
        stream.extend(update_request());
        let key_end = before.len() + 8;
        for at in 0..=stream.len() {
            let seen = feed_split(&stream, &[at]).unwrap();
            // The piece the key's last byte is in reports it; the other does not.
            let expected = if at >= key_end {
                vec![true, false]
            } else {
                vec![false, true]
            };
            assert_eq!(seen, expected, "split at {at}");
        }
        let every: Vec<usize> = (1..stream.len()).collect();
        let seen = feed_split(&stream, &every).unwrap();
        assert_eq!(seen.iter().filter(|a| **a).count(), 1);
        assert!(seen[key_end - 1], "the key's last byte completes it");
    }

    #[test]
    fn qemus_extended_key_event_counts() {
        let mut stream = session(&[]);
        stream.extend([255, 0, 0, 1, 0, 0, 0, 0x61, 0, 0, 0, 30]);
        for at in 0..stream.len() {
            let seen = feed_split(&stream, &[at]).unwrap();
            assert_eq!(seen, vec![false, true], "split at {at}");
        }
    }

    #[test]
    fn a_pointer_counts_when_it_moves_or_clicks() {
        let mut rfb = RfbClient::default();
        assert_eq!(rfb.feed(HANDSHAKE), Ok(false));
        assert_eq!(rfb.feed(&pointer(0, 10, 10)), Ok(true));
        assert_eq!(rfb.feed(&pointer(0, 10, 10)), Ok(false), "the same again");
        assert_eq!(rfb.feed(&pointer(0, 11, 10)), Ok(true), "moved");
        assert_eq!(rfb.feed(&pointer(1, 11, 10)), Ok(true), "pressed");
        assert_eq!(rfb.feed(&pointer(0, 11, 10)), Ok(true), "released");
        assert_eq!(rfb.feed(&update_request()), Ok(false));
        assert_eq!(rfb.feed(&pointer(0, 11, 10)), Ok(false));
    }

    #[test]
    fn cut_text_counts_and_its_text_is_skipped_not_parsed() {
        // The text is bytes that would be unknown message types if they were framed.
        let text = [0xee; 300];
        let stream = session(&[cut_text(&text), update_request()]);
        for at in 0..=stream.len() {
            let seen = feed_split(&stream, &[at]).unwrap();
            assert!(seen.iter().any(|a| *a), "split at {at}");
        }
        let every: Vec<usize> = (1..stream.len()).collect();
        assert_eq!(
            feed_split(&stream, &every)
                .unwrap()
                .iter()
                .filter(|a| **a)
                .count(),
            1
        );
    }

    #[test]
    fn huge_cut_text_is_refused_without_waiting_for_it() {
        let mut rfb = RfbClient::default();
        rfb.feed(HANDSHAKE).unwrap();
        let mut header = vec![6, 0, 0, 0];
        header.extend(i32::MAX.to_be_bytes());
        assert!(rfb.feed(&header).is_err(), "2 GiB announced");
        let mut rfb = RfbClient::default();
        rfb.feed(HANDSHAKE).unwrap();
        let mut header = vec![6, 0, 0, 0];
        header.extend(i32::MIN.to_be_bytes());
        assert!(rfb.feed(&header).is_err(), "the extended clipboard's sign");
        // The largest allowed is skipped piecewise, then framing resumes.
        let mut rfb = RfbClient::default();
        rfb.feed(HANDSHAKE).unwrap();
        let mut header = vec![6, 0, 0, 0];
        header.extend(MAX_CUT_TEXT.to_be_bytes());
        assert_eq!(rfb.feed(&header), Ok(true));
        let chunk = vec![0xff; 64 * 1024];
        for _ in 0..MAX_CUT_TEXT as usize / chunk.len() {
            assert_eq!(rfb.feed(&chunk), Ok(false));
        }
        assert_eq!(rfb.feed(&key(true)), Ok(true));
    }

    #[test]
    fn unknown_message_types_cannot_be_framed() {
        for kind in [1u8, 7, 100, 249, 254] {
            let mut rfb = RfbClient::default();
            rfb.feed(HANDSHAKE).unwrap();
            assert!(rfb.feed(&[kind, 0, 0, 0]).is_err(), "type {kind}");
        }
        let mut rfb = RfbClient::default();
        rfb.feed(HANDSHAKE).unwrap();
        assert!(rfb.feed(&[255, 9]).is_err(), "an unknown QEMU message");
        // Nor can a stream that is not RFB, or a security type not known here.
        assert!(RfbClient::default().feed(b"GET / HTTP/1.1\r\n").is_err());
        assert!(RfbClient::default().feed(b"RFB 003.008\n\x13").is_err());
    }

    #[test]
    fn older_handshakes_and_vnc_authentication_are_framed() {
        let mut rfb = RfbClient::default();
        assert_eq!(rfb.feed(b"RFB 003.003\n\x01"), Ok(false));
        assert_eq!(rfb.feed(&key(true)), Ok(true));
        let mut rfb = RfbClient::default();
        let mut stream = b"RFB 003.008\n\x02".to_vec();
        // The response's bytes would be KeyEvents if they were framed as messages.
        stream.extend([4u8; 16]);
        stream.push(1);
        assert_eq!(rfb.feed(&stream), Ok(false));
        assert_eq!(rfb.feed(&update_request()), Ok(false));
    }

    #[test]
    fn serial_counts_every_byte() {
        let mut serial = Activity::new(ConsoleKind::Serial);
        assert_eq!(serial.feed(&[3]), Ok(true));
        assert_eq!(serial.feed(&[]), Ok(false));
        let mut screen = Activity::new(ConsoleKind::Screen);
        assert_eq!(screen.feed(HANDSHAKE), Ok(false));
        assert_eq!(screen.feed(&update_request()), Ok(false));
    }
}
