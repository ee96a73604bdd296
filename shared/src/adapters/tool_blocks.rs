//! What the content blocks of a streamed reply carry, for the providers whose streams open a
//! block per tool call and then send its input as JSON fragments (Anthropic's `tool_use`
//! blocks, Bedrock's `toolUse`): the structured-output tool's input is the reply's text, a
//! client tool's is a tool call's arguments, anything else is not part of the reply.

use crate::domain::tools::ToolCallDelta;
use crate::ports::provider::StreamEvent;

/// What a content block of the stream carries, decided at its start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BlockRole {
    /// The structured-output tool's input: the reply's text.
    Answer,
    /// A call of the client's tools: the call with this index in the reply.
    Call(u32),
    /// Text, thinking, or anything else.
    Other,
}

/// Each block's role by its index, and the client tool calls started so far.
#[derive(Debug, Default)]
pub(crate) struct ToolBlocks {
    /// Structured output: the output tool's input is the reply, text deltas are not.
    output_tool: Option<String>,
    blocks: Vec<BlockRole>,
    calls: u32,
}

impl ToolBlocks {
    /// Blocks of a reply to a request whose structured-output tool (if any) is `output_tool`.
    pub(crate) fn new(output_tool: Option<String>) -> Self {
        Self {
            output_tool,
            ..Self::default()
        }
    }

    /// Whether the reply is the output tool's input (text deltas are then commentary).
    pub(crate) fn structured(&self) -> bool {
        self.output_tool.is_some()
    }

    /// Whether the model called any of the client's tools.
    pub(crate) fn called_tools(&self) -> bool {
        self.calls > 0
    }

    /// Block `index` starts: a tool-use block with `tool` (its id and name), or another kind.
    /// A client tool's call is announced with its id and name.
    pub(crate) fn start(
        &mut self,
        index: usize,
        tool: Option<(String, String)>,
        out: &mut Vec<StreamEvent>,
    ) {
        let role = match tool {
            Some((_, name)) if Some(&name) == self.output_tool.as_ref() => BlockRole::Answer,
            Some((id, name)) => {
                let call = self.calls;
                self.calls += 1;
                out.push(StreamEvent::ToolCall(ToolCallDelta {
                    index: call,
                    id: Some(id),
                    name: Some(name),
                    arguments: String::new(),
                }));
                BlockRole::Call(call)
            }
            None => BlockRole::Other,
        };
        if self.blocks.len() <= index {
            self.blocks.resize(index + 1, BlockRole::Other);
        }
        self.blocks[index] = role;
    }

    /// A fragment of block `index`'s tool input: the reply's text, a call's arguments, or
    /// nothing.
    pub(crate) fn input(&self, index: usize, fragment: String, out: &mut Vec<StreamEvent>) {
        if fragment.is_empty() {
            return;
        }
        // A fragment without its start (never sent): read by the request's shape.
        let fallback = if self.structured() {
            BlockRole::Answer
        } else {
            BlockRole::Other
        };
        match self.blocks.get(index).copied().unwrap_or(fallback) {
            BlockRole::Answer => out.push(StreamEvent::Delta(fragment)),
            BlockRole::Call(call) => out.push(StreamEvent::ToolCall(ToolCallDelta {
                index: call,
                id: None,
                name: None,
                arguments: fragment,
            })),
            BlockRole::Other => {}
        }
    }
}
