use serde_json::{Value, json};

use super::*;
use crate::domain::image::{Detail, Image};
use crate::domain::structured::ResponseFormat;
use crate::domain::tools::{ToolCallDelta, ToolDefinition, Tools};

fn request(system: Option<&str>, messages: Vec<Message>) -> ProviderRequest {
    ProviderRequest {
        model: "anthropic.claude-sonnet-4-5-20250929-v1:0".into(),
        system: system.map(str::to_owned),
        messages,
        max_tokens: None,
        temperature: None,
        top_p: None,
        stop: vec![],
        seed: Some(7),
        presence_penalty: Some(0.5),
        frequency_penalty: None,
        response_format: Default::default(),
        tools: Default::default(),
        inference_profile: None,
        pool_key: None,
        deadline: None,
    }
}

fn body(request: &ProviderRequest) -> Value {
    serde_json::to_value(ConverseBody::new(request, 1024, 4096).unwrap()).unwrap()
}

fn tools(choice: Option<ClientChoice>) -> Tools {
    Tools {
        definitions: vec![ToolDefinition {
            name: "get_weather".into(),
            description: Some("The weather".into()),
            parameters: json!({"type": "object", "properties": {"city": {"type": "string"}}}),
            strict: None,
            cache_breakpoint: false,
        }],
        choice,
        parallel_calls: None,
    }
}

#[test]
fn the_tenant_prompt_leads_the_system_blocks_with_a_cache_point_when_long_enough() {
    let long = "Answer as Acme's support assistant, following the style guide. ".repeat(120);
    let mut client_system = Message::new(Role::System, "Answer in French.");
    client_system.cache_breakpoint = true;
    let messages = vec![client_system, Message::new(Role::User, "Hi")];

    let cached = body(&request(Some(&long), messages.clone()));
    let short = body(&request(Some("Be brief."), messages));

    assert_eq!(
        cached["system"],
        json!([{"text": long}, {"cachePoint": {"type": "default"}},
               {"text": "Answer in French."}, {"cachePoint": {"type": "default"}}])
    );
    assert_eq!(short["system"][0], json!({"text": "Be brief."}));
    assert_eq!(short["system"][1], json!({"text": "Answer in French."}));
    assert_eq!(
        short["messages"],
        json!([{"role": "user", "content": [{"text": "Hi"}]}])
    );
}

#[test]
fn parameters_go_in_inference_config_and_what_converse_lacks_is_dropped() {
    let mut req = request(None, vec![Message::new(Role::User, "Hi")]);
    req.temperature = Some(1.6);
    req.top_p = Some(0.9);
    req.stop = vec!["END".into()];
    let sent = body(&req);
    assert_eq!(
        sent["inferenceConfig"],
        json!({"maxTokens": 4096, "temperature": 1.0, "stopSequences": ["END"]})
    );
    assert!(sent.get("system").is_none());
    for absent in ["seed", "presence_penalty", "model", "stream"] {
        assert!(!sent.to_string().contains(absent), "{absent}: {sent}");
    }
    req.temperature = None;
    req.max_tokens = Some(50);
    assert_eq!(
        body(&req)["inferenceConfig"],
        json!({"maxTokens": 50, "topP": 0.9, "stopSequences": ["END"]})
    );
}

#[test]
fn a_tool_loop_becomes_tool_use_and_tool_result_blocks_in_alternating_turns() {
    let mut assistant = Message::new(Role::Assistant, "Checking.");
    assistant.tool_calls = vec![ToolCall {
        id: "call_1".into(),
        name: "get_weather".into(),
        arguments: r#"{"city":"Paris"}"#.into(),
    }];
    let mut result = Message::new(Role::Tool, "18C");
    result.tool_call_id = Some("call_1".into());
    let mut req = request(
        None,
        vec![
            Message::new(Role::User, "Weather?"),
            assistant,
            result,
            Message::new(Role::User, "And tomorrow?"),
        ],
    );
    req.tools = tools(Some(ClientChoice::None));

    let sent = body(&req);

    assert_eq!(
        sent["messages"],
        json!([
            {"role": "user", "content": [{"text": "Weather?"}]},
            {"role": "assistant", "content": [
                {"text": "Checking."},
                {"toolUse": {"toolUseId": "call_1", "name": "get_weather", "input": {"city": "Paris"}}}
            ]},
            {"role": "user", "content": [
                {"toolResult": {"toolUseId": "call_1", "content": [{"text": "18C"}]}},
                {"text": "And tomorrow?"}
            ]}
        ])
    );
    // `none` with tool turns in the conversation: Converse needs the tools, under auto.
    assert_eq!(
        sent["toolConfig"]["tools"][0]["toolSpec"]["name"],
        "get_weather"
    );
    assert!(sent["toolConfig"].get("toolChoice").is_none());
}

#[test]
fn tool_choices_map_to_auto_any_and_tool_and_none_withholds_the_tools() {
    let choice_of = |choice: Option<ClientChoice>| {
        let mut req = request(None, vec![Message::new(Role::User, "Hi")]);
        req.tools = tools(choice);
        body(&req)["toolConfig"].clone()
    };
    assert_eq!(
        choice_of(Some(ClientChoice::Auto))["toolChoice"],
        json!({"auto": {}})
    );
    assert_eq!(
        choice_of(Some(ClientChoice::Required))["toolChoice"],
        json!({"any": {}})
    );
    assert_eq!(
        choice_of(Some(ClientChoice::Function("get_weather".into())))["toolChoice"],
        json!({"tool": {"name": "get_weather"}})
    );
    assert_eq!(choice_of(Some(ClientChoice::None)), Value::Null);
    let spec = &choice_of(None)["tools"][0]["toolSpec"];
    assert_eq!(spec["inputSchema"]["json"]["type"], "object");
    assert_eq!(spec["description"], "The weather");
}

#[test]
fn a_json_schema_format_is_one_forced_tool_whose_input_is_the_reply() {
    let mut req = request(None, vec![Message::new(Role::User, "Hi")]);
    req.response_format = ResponseFormat::JsonObject;
    let sent = body(&req);
    let name = sent["toolConfig"]["tools"][0]["toolSpec"]["name"].clone();
    assert_eq!(
        sent["toolConfig"]["toolChoice"],
        json!({"tool": {"name": name}})
    );
}

#[test]
fn images_are_sent_as_bytes_and_a_url_image_is_refused_before_the_call() {
    const PNG_1X1: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";
    let image = Image::parse(&format!("data:image/png;base64,{PNG_1X1}"), Detail::Auto).unwrap();
    let mut message = Message::new(Role::User, "What is this?");
    message.parts = vec![
        ContentPart::Text("What is this?".into()),
        ContentPart::Image(image),
    ];
    let sent = body(&request(None, vec![message.clone()]));
    assert_eq!(
        sent["messages"][0]["content"][1],
        json!({"image": {"format": "png", "source": {"bytes": PNG_1X1}}})
    );

    message.parts[1] =
        ContentPart::Image(Image::parse("https://example.com/cat.png", Detail::Auto).unwrap());
    let err = ConverseBody::new(&request(None, vec![message]), 1024, 4096).unwrap_err();
    assert_eq!(err.kind, ProviderErrorKind::Rejected);
    assert!(!err.started);
}

#[test]
fn model_ids_and_profile_arns_are_one_encoded_path_segment() {
    assert_eq!(
        encode_label("us.anthropic.claude-sonnet-4-5-20250929-v1:0"),
        "us.anthropic.claude-sonnet-4-5-20250929-v1%3A0"
    );
    assert_eq!(
        encode_label("arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2"),
        "arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Aapplication-inference-profile%2Fa1b2"
    );
}

#[test]
fn usage_counts_cache_reads_and_writes_into_the_prompt() {
    let usage: BedrockUsage = serde_json::from_value(json!({
        "inputTokens": 58, "outputTokens": 12, "totalTokens": 2100,
        "cacheReadInputTokens": 1792, "cacheWriteInputTokens": 250
    }))
    .unwrap();
    assert_eq!(
        usage.normalise(),
        TokenUsage {
            prompt_tokens: 2100,
            completion_tokens: 12,
            cached_tokens: 1792,
            cache_write_tokens: 250
        }
    );
    let plain: BedrockUsage =
        serde_json::from_value(json!({"inputTokens": 9, "outputTokens": 3})).unwrap();
    assert_eq!(plain.normalise().prompt_tokens, 9);
}

#[test]
fn stop_reasons_map_to_openai_finish_reasons() {
    assert_eq!(finish_reason("end_turn", false), FinishReason::Stop);
    assert_eq!(finish_reason("stop_sequence", false), FinishReason::Stop);
    assert_eq!(finish_reason("max_tokens", false), FinishReason::Length);
    assert_eq!(finish_reason("tool_use", true), FinishReason::ToolCalls);
    assert_eq!(finish_reason("tool_use", false), FinishReason::Stop);
    assert_eq!(
        finish_reason("guardrail_intervened", false),
        FinishReason::ContentFilter
    );
}

fn event(kind: &str, payload: Value) -> event_stream::Message {
    event_stream::Message {
        headers: vec![
            (":message-type".into(), "event".into()),
            (":event-type".into(), kind.into()),
        ],
        payload: payload.to_string().into(),
    }
}

fn translate(
    translator: &mut EventTranslator,
    events: Vec<event_stream::Message>,
) -> (Vec<StreamEvent>, Result<(), ProviderError>) {
    let mut out = Vec::new();
    for event in events {
        match translator.on_event(event, &mut out) {
            Ok(Flow::Continue) => {}
            Ok(Flow::Done) => return (out, Ok(())),
            Err(err) => return (out, Err(err)),
        }
    }
    let end = translator.on_end(&mut out);
    (out, end)
}

#[test]
fn stream_events_become_deltas_tool_call_pieces_a_finish_and_one_usage() {
    let mut translator = EventTranslator {
        model: "m".into(),
        ..EventTranslator::default()
    };
    let (out, end) = translate(
        &mut translator,
        vec![
            event("messageStart", json!({"role": "assistant"})),
            event(
                "contentBlockDelta",
                json!({"contentBlockIndex": 0, "delta": {"text": "Let me"}}),
            ),
            event(
                "contentBlockDelta",
                json!({"contentBlockIndex": 0, "delta": {"text": " check."}}),
            ),
            event("contentBlockStop", json!({"contentBlockIndex": 0})),
            event(
                "contentBlockStart",
                json!({"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": "t1", "name": "get_weather"}}}),
            ),
            event(
                "contentBlockDelta",
                json!({"contentBlockIndex": 1, "delta": {"toolUse": {"input": "{\"city\":"}}}),
            ),
            event(
                "contentBlockDelta",
                json!({"contentBlockIndex": 1, "delta": {"toolUse": {"input": "\"Paris\"}"}}}),
            ),
            event("messageStop", json!({"stopReason": "tool_use"})),
            event(
                "metadata",
                json!({"usage": {"inputTokens": 40, "outputTokens": 9, "totalTokens": 49}, "metrics": {"latencyMs": 300}}),
            ),
        ],
    );
    end.unwrap();
    assert_eq!(
        out,
        vec![
            StreamEvent::Model("m".into()),
            StreamEvent::Delta("Let me".into()),
            StreamEvent::Delta(" check.".into()),
            StreamEvent::ToolCall(ToolCallDelta {
                index: 0,
                id: Some("t1".into()),
                name: Some("get_weather".into()),
                arguments: String::new()
            }),
            StreamEvent::ToolCall(ToolCallDelta {
                index: 0,
                id: None,
                name: None,
                arguments: "{\"city\":".into()
            }),
            StreamEvent::ToolCall(ToolCallDelta {
                index: 0,
                id: None,
                name: None,
                arguments: "\"Paris\"}".into()
            }),
            StreamEvent::Finish(FinishReason::ToolCalls),
            StreamEvent::Usage(TokenUsage {
                prompt_tokens: 40,
                completion_tokens: 9,
                ..TokenUsage::default()
            }),
        ]
    );
}

#[test]
fn an_exception_event_is_a_classified_error_and_a_cut_stream_is_upstream() {
    let exception = |kind: &str| event_stream::Message {
        headers: vec![
            (":message-type".into(), "exception".into()),
            (":exception-type".into(), kind.into()),
        ],
        payload: json!({"message": "slow down"}).to_string().into(),
    };
    for (kind, expected) in [
        (
            "throttlingException",
            ProviderErrorKind::RateLimited { retry_after: None },
        ),
        ("validationException", ProviderErrorKind::Rejected),
        ("modelStreamErrorException", ProviderErrorKind::Upstream),
        ("internalServerException", ProviderErrorKind::Upstream),
    ] {
        let (_, end) = translate(
            &mut EventTranslator::default(),
            vec![event("messageStart", json!({})), exception(kind)],
        );
        let err = end.unwrap_err();
        assert_eq!(err.kind, expected, "{kind}");
        assert_eq!(err.message, format!("{kind}: slow down"));
    }
    let (out, end) = translate(
        &mut EventTranslator::default(),
        vec![
            event("messageStart", json!({})),
            event("contentBlockDelta", json!({"delta": {"text": "Hi"}})),
        ],
    );
    assert_eq!(out.last(), Some(&StreamEvent::Delta("Hi".into())));
    assert_eq!(end.unwrap_err().kind, ProviderErrorKind::Upstream);
}

#[test]
fn a_structured_stream_forwards_the_output_tools_input_as_the_reply() {
    let mut translator = EventTranslator {
        blocks: ToolBlocks::new(Some("answer".into())),
        ..EventTranslator::default()
    };
    let (out, end) = translate(
        &mut translator,
        vec![
            event("messageStart", json!({})),
            event(
                "contentBlockDelta",
                json!({"contentBlockIndex": 0, "delta": {"text": "Sure:"}}),
            ),
            event(
                "contentBlockStart",
                json!({"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": "t", "name": "answer"}}}),
            ),
            event(
                "contentBlockDelta",
                json!({"contentBlockIndex": 1, "delta": {"toolUse": {"input": "{\"a\":1}"}}}),
            ),
            event("messageStop", json!({"stopReason": "tool_use"})),
            event(
                "metadata",
                json!({"usage": {"inputTokens": 1, "outputTokens": 1}}),
            ),
        ],
    );
    end.unwrap();
    assert!(out.contains(&StreamEvent::Delta("{\"a\":1}".into())));
    assert!(!out.contains(&StreamEvent::Delta("Sure:".into())));
    assert!(out.contains(&StreamEvent::Finish(FinishReason::Stop)));
}

#[test]
fn an_empty_tool_result_is_an_empty_json_block_and_empty_descriptions_are_left_out() {
    let mut assistant = Message::new(Role::Assistant, "");
    assistant.tool_calls = vec![ToolCall {
        id: "call_1".into(),
        name: "get_weather".into(),
        arguments: "{}".into(),
    }];
    let mut result = Message::new(Role::Tool, "");
    result.tool_call_id = Some("call_1".into());
    let mut req = request(
        None,
        vec![Message::new(Role::User, "Go"), assistant, result],
    );
    req.tools = tools(None);
    req.tools.definitions[0].description = Some(String::new());
    let sent = body(&req);
    assert_eq!(
        sent["messages"][2]["content"][0]["toolResult"]["content"],
        json!([{"json": {}}])
    );
    assert!(
        sent["toolConfig"]["tools"][0]["toolSpec"]
            .get("description")
            .is_none()
    );
}

#[test]
fn cache_points_go_only_to_model_families_that_cache() {
    let long = "Answer as Acme's support assistant, following the style guide. ".repeat(120);
    let mut marked = Message::new(Role::User, "Hi");
    marked.cache_breakpoint = true;
    let mut req = request(Some(&long), vec![marked]);
    req.tools = tools(None);
    req.tools.definitions[0].cache_breakpoint = true;
    let points = |model: &str| {
        let mut req = req.clone();
        req.model = model.into();
        body(&req).to_string().matches("cachePoint").count()
    };
    assert_eq!(points("us.anthropic.claude-sonnet-4-5-20250929-v1:0"), 3);
    assert_eq!(
        points("us.amazon.nova-pro-v1:0"),
        2,
        "no tool caching on Nova"
    );
    assert_eq!(points("meta.llama3-3-70b-instruct-v1:0"), 0);
}

#[test]
fn an_error_frame_is_read_from_its_headers_whatever_its_payload() {
    let frame = event_stream::Message {
        headers: vec![
            (":message-type".into(), "error".into()),
            (":error-code".into(), "throttlingException".into()),
            (":error-message".into(), "Too many tokens".into()),
        ],
        payload: bytes::Bytes::new(),
    };
    let (_, end) = translate(
        &mut EventTranslator::default(),
        vec![event("messageStart", json!({})), frame],
    );
    let err = end.unwrap_err();
    assert_eq!(
        err.kind,
        ProviderErrorKind::RateLimited { retry_after: None }
    );
    assert_eq!(err.message, "throttlingException: Too many tokens");
}
