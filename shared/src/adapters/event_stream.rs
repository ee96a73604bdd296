//! An incremental decoder for AWS's binary event-stream framing
//! (`application/vnd.amazon.eventstream`), the body of Bedrock's `ConverseStream`.
//!
//! Each message is a 12-byte prelude (total length, headers length, and the prelude's CRC32,
//! all big-endian), typed headers, a payload, and the CRC32 of everything before it. Byte
//! chunks go in as the network delivers them; whole, checked messages come out. A chunk may
//! end anywhere, a prelude included. A bad checksum, an impossible length or a malformed header
//! is an error: the stream cannot be resynchronised after one, so the call ends there.
//!
//! Only what a consumer reads is kept: string headers (`:message-type`, `:event-type`,
//! `:exception-type`, ...) and the payload. Headers of the other types are checked and skipped.

use bytes::{Buf, Bytes, BytesMut};

/// Prelude (12) plus message CRC (4).
const OVERHEAD: usize = 16;
/// The framing's own limit on one message.
const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// One decoded message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// String-valued headers, in order (`:message-type`, `:event-type`, ...).
    pub headers: Vec<(String, String)>,
    /// The payload: JSON for every Bedrock event.
    pub payload: Bytes,
}

impl Message {
    /// The value of the string header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Why a stream could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed event stream: {0}")]
pub struct FrameError(&'static str);

/// Turns byte chunks of an event-stream body into [`Message`]s (see the module docs).
#[derive(Debug, Default)]
pub struct Decoder {
    buffer: BytesMut,
}

impl Decoder {
    /// Feeds one chunk and returns the messages it completed, in order.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<Message>, FrameError> {
        self.buffer.extend_from_slice(chunk);
        let mut messages = Vec::new();
        while let Some(message) = self.next_message()? {
            messages.push(message);
        }
        Ok(messages)
    }

    fn next_message(&mut self) -> Result<Option<Message>, FrameError> {
        if self.buffer.len() < 12 {
            return Ok(None);
        }
        let total = be_u32(&self.buffer[0..4]) as usize;
        let headers_len = be_u32(&self.buffer[4..8]) as usize;
        if crc32(&self.buffer[0..8]) != be_u32(&self.buffer[8..12]) {
            return Err(FrameError("prelude checksum mismatch"));
        }
        if !(OVERHEAD..=MAX_MESSAGE_BYTES).contains(&total) || headers_len > total - OVERHEAD {
            return Err(FrameError("impossible message length"));
        }
        if self.buffer.len() < total {
            return Ok(None);
        }
        let frame = self.buffer.split_to(total).freeze();
        let body_end = total - 4;
        if crc32(&frame[..body_end]) != be_u32(&frame[body_end..]) {
            return Err(FrameError("message checksum mismatch"));
        }
        let headers = parse_headers(frame.slice(12..12 + headers_len))?;
        Ok(Some(Message {
            headers,
            payload: frame.slice(12 + headers_len..body_end),
        }))
    }
}

fn be_u32(bytes: &[u8]) -> u32 {
    u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(bytes);
    hasher.finalize()
}

/// Headers: a 1-byte name length and name, a 1-byte type, then the value as the type says.
fn parse_headers(mut raw: Bytes) -> Result<Vec<(String, String)>, FrameError> {
    const SHORT: FrameError = FrameError("truncated header");
    let mut headers = Vec::new();
    while raw.has_remaining() {
        let name_len = usize::from(raw.get_u8());
        if raw.remaining() < name_len + 1 {
            return Err(SHORT);
        }
        let name = raw.split_to(name_len);
        let fixed = match raw.get_u8() {
            0 | 1 => 0, // bool true / false: no value bytes
            2 => 1,     // byte
            3 => 2,     // short
            4 => 4,     // int
            5 | 8 => 8, // long, timestamp
            9 => 16,    // uuid
            6 | 7 => {
                // byte array, string: a 2-byte length first
                if raw.remaining() < 2 {
                    return Err(SHORT);
                }
                let len = usize::from(raw.get_u16());
                if raw.remaining() < len {
                    return Err(SHORT);
                }
                let value = raw.split_to(len);
                if let (Ok(name), Ok(value)) =
                    (std::str::from_utf8(&name), std::str::from_utf8(&value))
                {
                    headers.push((name.to_owned(), value.to_owned()));
                }
                continue;
            }
            _ => return Err(FrameError("unknown header type")),
        };
        if raw.remaining() < fixed {
            return Err(SHORT);
        }
        raw.advance(fixed);
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A message with string headers, framed as the format says.
    fn frame(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
        let mut head = Vec::new();
        for (name, value) in headers {
            head.push(name.len() as u8);
            head.extend_from_slice(name.as_bytes());
            head.push(7);
            head.extend_from_slice(&(value.len() as u16).to_be_bytes());
            head.extend_from_slice(value.as_bytes());
        }
        let total = (OVERHEAD + head.len() + payload.len()) as u32;
        let mut out = Vec::new();
        out.extend_from_slice(&total.to_be_bytes());
        out.extend_from_slice(&(head.len() as u32).to_be_bytes());
        out.extend_from_slice(&crc32(&out).to_be_bytes());
        out.extend_from_slice(&head);
        out.extend_from_slice(payload);
        out.extend_from_slice(&crc32(&out).to_be_bytes());
        out
    }

    fn event(kind: &str, payload: &str) -> Vec<u8> {
        frame(
            &[(":message-type", "event"), (":event-type", kind)],
            payload.as_bytes(),
        )
    }

    #[test]
    fn messages_split_anywhere_come_out_whole_and_in_order() {
        let mut body = event("messageStart", r#"{"role":"assistant"}"#);
        body.extend(event("contentBlockDelta", r#"{"delta":{"text":"hé"}}"#));
        for cut in 0..body.len() {
            let mut decoder = Decoder::default();
            let mut out = decoder.push(&body[..cut]).unwrap();
            out.extend(decoder.push(&body[cut..]).unwrap());
            assert_eq!(out.len(), 2, "cut at {cut}");
            assert_eq!(out[0].header(":event-type"), Some("messageStart"));
            assert_eq!(
                out[1].payload.as_ref(),
                r#"{"delta":{"text":"hé"}}"#.as_bytes()
            );
        }
        let mut decoder = Decoder::default();
        let out: Vec<Message> = body
            .iter()
            .flat_map(|b| decoder.push(std::slice::from_ref(b)).unwrap())
            .collect();
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn a_flipped_bit_anywhere_is_an_error_never_a_wrong_message() {
        let body = event("metadata", r#"{"usage":{"inputTokens":3}}"#);
        for at in 0..body.len() {
            let mut broken = body.clone();
            broken[at] ^= 0x10;
            let result = Decoder::default().push(&broken);
            // A changed length may just leave the decoder waiting; it never yields a message.
            assert!(
                result.as_ref().map_or(true, Vec::is_empty),
                "byte {at}: {result:?}"
            );
        }
    }

    #[test]
    fn other_header_types_are_skipped_and_a_cut_message_waits_for_the_rest() {
        let mut head = vec![3u8];
        head.extend_from_slice(b"num");
        head.push(4);
        head.extend_from_slice(&7u32.to_be_bytes());
        head.push(4);
        head.extend_from_slice(b"flag");
        head.push(0);
        let total = (OVERHEAD + head.len() + 2) as u32;
        let mut body = Vec::new();
        body.extend_from_slice(&total.to_be_bytes());
        body.extend_from_slice(&(head.len() as u32).to_be_bytes());
        body.extend_from_slice(&crc32(&body).to_be_bytes());
        body.extend_from_slice(&head);
        body.extend_from_slice(b"{}");
        body.extend_from_slice(&crc32(&body).to_be_bytes());
        let mut decoder = Decoder::default();
        let out = decoder.push(&body).unwrap();
        assert_eq!(out[0].headers, Vec::<(String, String)>::new());
        assert_eq!(out[0].payload.as_ref(), b"{}");

        let mut decoder = Decoder::default();
        assert!(decoder.push(&body[..body.len() - 1]).unwrap().is_empty());
        assert_eq!(decoder.push(&body[body.len() - 1..]).unwrap().len(), 1);
    }
}
