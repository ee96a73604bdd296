#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failure report.
//! Images through the real invoke handler: `image_url` parts reach OpenAI as sent and
//! Anthropic as `image` blocks (base64 or URL sources), in place among the text; the
//! reservation counts each image by the provider's formula from the dimensions in its header
//! (a fixed amount for remote images); bad images are a 400 naming the part; the Messages
//! API's image blocks take the same path.

use base64::Engine;
use bytes::Bytes;
use http::{Method, Request};
use serde_json::{Value, json};
use tollgate::domain::image::REMOTE_IMAGE_TOKENS;
use tollgate_tests::harness::Gateway;
use tollgate_tests::{AnthropicStandIn, Behavior, OpenAiStandIn};

/// A PNG's signature and header (all the gateway reads), then some bytes.
fn png(width: u32, height: u32) -> String {
    let mut bytes = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
    bytes.extend_from_slice(&width.to_be_bytes());
    bytes.extend_from_slice(&height.to_be_bytes());
    bytes.extend_from_slice(&[8, 6, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn data_url(width: u32, height: u32) -> String {
    format!("data:image/png;base64,{}", png(width, height))
}

fn with_image(model: &str, text: &str, url: &str, detail: Option<&str>) -> Value {
    let mut image = json!({"url": url});
    if let Some(detail) = detail {
        image["detail"] = json!(detail);
    }
    json!({"model": model, "max_tokens": 10, "messages": [{"role": "user", "content": [
        {"type": "text", "text": text},
        {"type": "image_url", "image_url": image},
        {"type": "text", "text": "Answer briefly."},
    ]}]})
}

async fn gateway() -> (OpenAiStandIn, AnthropicStandIn, Gateway) {
    let openai = OpenAiStandIn::start().await;
    let anthropic = AnthropicStandIn::start().await;
    let gw = Gateway::with_standins(&openai, &anthropic).await;
    (openai, anthropic, gw)
}

#[tokio::test]
async fn images_reach_each_provider_in_its_own_shape_in_place() {
    let (openai, anthropic, gw) = gateway().await;
    let url = data_url(640, 480);
    let res = gw
        .chat(
            "acme",
            with_image("gpt-4o-mini", "What is in", &url, Some("low")),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    let sent = openai.last_request().body;
    let content = sent["messages"].as_array().unwrap().last().unwrap()["content"].clone();
    assert_eq!(
        content,
        json!([
            {"type": "text", "text": "What is in"},
            {"type": "image_url", "image_url": {"url": url, "detail": "low"}},
            {"type": "text", "text": "Answer briefly."},
        ])
    );

    let res = gw
        .chat(
            "acme",
            with_image("claude-haiku", "What is in", &url, Some("low")),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    let sent = anthropic.last_request().body;
    assert_eq!(
        sent["messages"][0]["content"],
        json!([
            {"type": "text", "text": "What is in"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": png(640, 480)}},
            {"type": "text", "text": "Answer briefly."},
        ])
    );
    let remote = gw
        .chat(
            "acme",
            with_image(
                "claude-haiku",
                "And this",
                "https://example.com/cat.jpg",
                None,
            ),
        )
        .await;
    assert_eq!(remote.status, 200, "{}", remote.text());
    assert_eq!(
        anthropic.last_request().body["messages"][0]["content"][1],
        json!({"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}})
    );
    assert_eq!(gw.usage_events().len(), 3, "each call metered once");
}

/// The tokens an image is counted as before the call: the provider answers unreadably
/// after the request was sent, so each call is metered at the gateway's own count (the
/// reservation's prompt), and two requests that differ only by the image differ by exactly it.
async fn reserved_for(
    gw: &Gateway,
    standin: &tollgate_tests::StandIn,
    model: &str,
    url: &str,
    detail: Option<&str>,
    n: usize,
) -> u64 {
    let text = format!("Question {n}:");
    let mut plain = with_image(model, &text, url, detail);
    plain["messages"][0]["content"]
        .as_array_mut()
        .unwrap()
        .remove(1);
    let mut prompts = Vec::new();
    for body in [plain, with_image(model, &text, url, detail)] {
        standin.push(Behavior::Malformed);
        let res = gw.chat("acme", body).await;
        assert_eq!(res.status, 502, "{}", res.text());
        let id = res.header("x-request-id").unwrap().to_owned();
        let event = gw
            .usage_events()
            .into_iter()
            .find(|e| e.request_id.as_str() == id)
            .expect("metered at the estimate");
        prompts.push(event.usage.prompt_tokens);
    }
    prompts[1] - prompts[0]
}

#[tokio::test]
async fn an_image_is_reserved_by_the_providers_formula_from_its_header() {
    let (openai, anthropic, gw) = gateway().await;
    let (o, a) = (&*openai, &*anthropic);
    // OpenAI, 1024 × 1024 at high detail: 4 tiles, 85 + 4 × 170 = 765; low: 85.
    let hd = data_url(1024, 1024);
    assert_eq!(
        reserved_for(&gw, o, "gpt-4o-mini", &hd, Some("high"), 1).await,
        765
    );
    assert_eq!(
        reserved_for(&gw, o, "gpt-4o-mini", &hd, Some("low"), 2).await,
        85
    );
    // Anthropic, 200 × 200: 200 × 200 / 750, rounded up, 54.
    let small = data_url(200, 200);
    assert_eq!(
        reserved_for(&gw, a, "claude-haiku", &small, None, 3).await,
        54
    );
    // A remote image's size is unknown: the fixed reservation.
    let remote = "https://example.com/big.png";
    assert_eq!(
        reserved_for(&gw, a, "claude-haiku", remote, None, 4).await,
        REMOTE_IMAGE_TOKENS
    );
}

#[tokio::test]
async fn bad_images_are_a_400_naming_the_part_and_reach_no_provider() {
    let (openai, _anthropic, gw) = gateway().await;
    let at = "messages[0].content[1].image_url";
    let truncated = format!("data:image/png;base64,{}", &png(10, 10)[..16]);
    let oversized = format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(vec![0u8; 6 * 1024 * 1024])
    );
    for (url, detail, param, needle) in [
        ("http://example.com/a.png".to_owned(), None, "url", "https"),
        (
            "data:image/tiff;base64,AAAA".to_owned(),
            None,
            "url",
            "PNG, JPEG, GIF or WebP",
        ),
        (truncated, None, "url", "not a image/png image"),
        (data_url(9_000, 10), None, "url", "8000"),
        (
            data_url(10, 10),
            Some("ultra"),
            "detail",
            "`auto`, `low` or `high`",
        ),
        (
            "data:image/png;base64,!!!".to_owned(),
            None,
            "url",
            "base64",
        ),
        (oversized, None, "url", "MiB"),
    ] {
        let res = gw
            .chat("acme", with_image("gpt-4o-mini", "x", &url, detail))
            .await;
        let expected = if param == "url" && needle == "MiB" {
            [400, 413]
        } else {
            [400, 400]
        };
        assert!(
            expected.contains(&res.status.as_u16()),
            "{needle}: {}",
            res.text()
        );
        if res.status == 400 {
            assert_eq!(
                res.json()["error"]["param"],
                format!("{at}.{param}"),
                "{needle}"
            );
            assert!(
                res.json()["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains(needle),
                "{}",
                res.text()
            );
        }
    }
    assert!(openai.requests().is_empty());
    assert!(gw.usage_events().is_empty());
}

#[tokio::test]
async fn the_messages_api_takes_image_blocks_to_either_provider() {
    let (openai, anthropic, gw) = gateway().await;
    let key = gw.key("acme").to_owned();
    for model in ["claude-haiku", "gpt-4o-mini"] {
        let body = json!({"model": model, "max_tokens": 50, "messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": png(64, 64)}},
            {"type": "text", "text": format!("Describe it ({model}).")},
        ]}]});
        let req = Request::builder()
            .method(Method::POST)
            .uri("/v1/messages")
            .header("content-type", "application/json")
            .header("x-api-key", &key)
            .body(Bytes::from(body.to_string()))
            .unwrap();
        let res = gw.send(req).await;
        assert_eq!(res.status, 200, "{}", res.text());
        assert_eq!(res.json()["type"], "message");
    }
    assert_eq!(
        anthropic.last_request().body["messages"][0]["content"][0],
        json!({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": png(64, 64)}})
    );
    assert_eq!(
        openai.last_request().body["messages"]
            .as_array()
            .unwrap()
            .last()
            .unwrap()["content"][0],
        json!({"type": "image_url", "image_url": {"url": data_url(64, 64)}})
    );
}

#[tokio::test]
async fn the_simulated_provider_sees_the_images() {
    let gw = Gateway::simulated().await;
    let mut body = with_image("gpt-4o-mini", "Look", &data_url(32, 32), None);
    body.as_object_mut().unwrap().remove("max_tokens");
    let res = gw.chat("acme", body).await;
    assert_eq!(res.status, 200, "{}", res.text());
    let text = res.json()["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(text.contains("You sent 1 image."), "{text}");
}
