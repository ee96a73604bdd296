//! An incremental Server-Sent Events parser.
//!
//! Byte chunks go in as the network delivers them; complete events come out. A chunk may end
//! anywhere: inside a field, inside a multi-byte UTF-8 character, or between the `\r` and `\n`
//! of a line ending. Follows the WHATWG event-stream rules that matter to LLM providers: `\n`,
//! `\r\n` and `\r` line endings, `:` comments (keep-alives), multi-line `data`, and an event
//! dispatched only by a blank line. `id` and `retry` are ignored: provider streams are not
//! resumable.

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, if the server named the event.
    pub event: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

/// Turns byte chunks of an SSE body into events (see the module docs).
#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes of the current, unterminated line. Kept as bytes so a UTF-8 character split
    /// across chunks is decoded whole.
    line: Vec<u8>,
    /// The previous chunk ended with `\r`; a leading `\n` in the next one belongs to it.
    after_cr: bool,
    /// Nothing has been read yet (a leading byte-order mark is skipped).
    at_start: bool,
    event: Option<String>,
    data: String,
    has_data: bool,
}

impl SseParser {
    /// A parser at the start of a stream.
    pub fn new() -> Self {
        Self {
            at_start: true,
            ..Self::default()
        }
    }

    /// Feeds one chunk and returns the events it completed, in order.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        let mut events = Vec::new();
        let mut bytes = chunk;
        if self.at_start && !bytes.is_empty() {
            self.at_start = false;
            bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        }
        for &byte in bytes {
            match byte {
                b'\n' if self.after_cr => self.after_cr = false,
                b'\r' | b'\n' => {
                    self.after_cr = byte == b'\r';
                    if let Some(event) = self.end_line() {
                        events.push(event);
                    }
                }
                _ => {
                    self.after_cr = false;
                    self.line.push(byte);
                }
            }
        }
        events
    }

    fn end_line(&mut self) -> Option<SseEvent> {
        let line = std::mem::take(&mut self.line);
        if line.is_empty() {
            return self.dispatch();
        }
        let line = String::from_utf8_lossy(&line);
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line.as_ref(), ""),
        };
        match field {
            "event" => self.event = Some(value.to_owned()),
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            _ => {}
        }
        None
    }

    fn dispatch(&mut self) -> Option<SseEvent> {
        let event = self.event.take();
        if !self.has_data {
            // A blank line with no data resets the event name and dispatches nothing.
            return None;
        }
        self.has_data = false;
        Some(SseEvent {
            event,
            data: std::mem::take(&mut self.data),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(event: Option<&str>, data: &str) -> SseEvent {
        SseEvent {
            event: event.map(str::to_owned),
            data: data.to_owned(),
        }
    }

    fn parse_in_pieces(input: &[u8], piece: usize) -> Vec<SseEvent> {
        let mut parser = SseParser::new();
        input.chunks(piece).flat_map(|c| parser.push(c)).collect()
    }

    #[test]
    fn parses_data_only_events_with_lf_endings() {
        let mut parser = SseParser::new();
        let events = parser.push(b"data: {\"a\":1}\n\ndata: [DONE]\n\n");
        assert_eq!(events, vec![ev(None, "{\"a\":1}"), ev(None, "[DONE]")]);
    }

    #[test]
    fn parses_named_events_with_crlf_endings() {
        let mut parser = SseParser::new();
        let events =
            parser.push(b"event: ping\r\ndata: {}\r\n\r\nevent: message_stop\r\ndata: x\r\n\r\n");
        assert_eq!(
            events,
            vec![ev(Some("ping"), "{}"), ev(Some("message_stop"), "x")]
        );
    }

    #[test]
    fn accepts_bare_cr_line_endings() {
        let mut parser = SseParser::new();
        assert_eq!(
            parser.push(b"data: a\r\rdata: b\r\r"),
            vec![ev(None, "a"), ev(None, "b")]
        );
    }

    #[test]
    fn joins_multi_line_data_with_newlines() {
        let mut parser = SseParser::new();
        let events = parser.push(b"data: first\ndata: second\ndata:\ndata:third\n\n");
        assert_eq!(events, vec![ev(None, "first\nsecond\n\nthird")]);
    }

    #[test]
    fn skips_comments_and_unknown_fields() {
        let mut parser = SseParser::new();
        let events = parser.push(b": keep-alive\n\nid: 7\nretry: 10\n: note\ndata: x\n\n");
        assert_eq!(events, vec![ev(None, "x")]);
    }

    #[test]
    fn a_blank_line_without_data_resets_the_event_name() {
        let mut parser = SseParser::new();
        let events = parser.push(b"event: lonely\n\ndata: x\n\n");
        assert_eq!(events, vec![ev(None, "x")]);
    }

    #[test]
    fn an_empty_data_field_still_dispatches() {
        let mut parser = SseParser::new();
        assert_eq!(parser.push(b"data:\n\n"), vec![ev(None, "")]);
    }

    #[test]
    fn only_one_leading_space_is_stripped_from_values() {
        let mut parser = SseParser::new();
        assert_eq!(parser.push(b"data:  two\n\n"), vec![ev(None, " two")]);
    }

    #[test]
    fn events_split_at_every_byte_boundary_parse_the_same() {
        let input = "event: content_block_delta\r\ndata: {\"text\":\"h\u{e9}llo \u{1f600}\"}\r\n\r\n: ping\n\ndata: a\ndata: b\n\n".as_bytes();
        let whole = parse_in_pieces(input, input.len());
        assert_eq!(
            whole,
            vec![
                ev(
                    Some("content_block_delta"),
                    "{\"text\":\"h\u{e9}llo \u{1f600}\"}"
                ),
                ev(None, "a\nb"),
            ]
        );
        for piece in 1..input.len() {
            assert_eq!(parse_in_pieces(input, piece), whole, "piece size {piece}");
        }
    }

    #[test]
    fn a_crlf_split_across_chunks_is_one_line_ending() {
        let mut parser = SseParser::new();
        assert!(parser.push(b"data: a\r").is_empty());
        // Were this `\n` a second line ending, it would dispatch here.
        assert!(parser.push(b"\n").is_empty());
        assert_eq!(parser.push(b"\r"), vec![ev(None, "a")]);
        assert!(parser.push(b"\n").is_empty());
    }

    #[test]
    fn an_unterminated_event_is_not_dispatched() {
        let mut parser = SseParser::new();
        assert!(parser.push(b"data: partial\n").is_empty());
        assert!(parser.push(b"data: more").is_empty());
    }

    #[test]
    fn a_leading_byte_order_mark_is_ignored() {
        let mut parser = SseParser::new();
        assert_eq!(parser.push(b"\xEF\xBB\xBFdata: x\n\n"), vec![ev(None, "x")]);
    }
}
