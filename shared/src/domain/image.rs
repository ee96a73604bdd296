//! Images in user messages: what a client may send, what each provider is sent, and how many
//! prompt tokens an image is reserved as before the call.
//!
//! An image is a `data:` URL (base64 PNG, JPEG, GIF or WebP) or an `https` URL. A `data:`
//! image is decoded from base64 once on arrival, which checks it and gives its size; its pixel
//! dimensions are read from the format's header (never the pixels), and the reservation is the
//! provider's published formula for them:
//!
//! - OpenAI ([vision guide]): `low` detail is 85 tokens; otherwise the image is scaled to fit
//!   2048 × 2048, then its shorter side to 768, and costs 85 + 170 per 512-pixel tile.
//! - Anthropic ([vision docs]): about `width × height / 750`, after scaling to fit the long
//!   edge within 1568 pixels and the area within 1092 × 1092 pixels (the largest sizes its
//!   table lists, all about 1,590 tokens).
//!
//! A remote image is reserved at [`REMOTE_IMAGE_TOKENS`], the most either formula gives. The
//! provider's reported usage is what is metered; the reservation only has to be an upper bound
//! for the limiter, and the formulas are exactly that for the images they describe.
//!
//! [vision guide]: https://platform.openai.com/docs/guides/images-vision
//! [vision docs]: https://docs.anthropic.com/en/docs/build-with-claude/vision

use base64::Engine;
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use super::tenant::ProviderKind;

/// The most bytes one image may decode to: Anthropic's per-image limit (OpenAI's is higher),
/// so an image either provider takes is accepted for both. The request body limit
/// (`TOLLGATE_MAX_BODY_BYTES`, 4 MiB by default, under Lambda's 6 MB payload limit) binds
/// first for `data:` URLs.
pub const MAX_IMAGE_BYTES: usize = 5 * 1024 * 1024;
/// The most images one request may carry (Anthropic's per-request limit).
pub const MAX_IMAGES: usize = 100;
/// The largest width or height accepted (Anthropic refuses larger images).
pub const MAX_IMAGE_SIDE: u32 = 8_000;
/// Longest `https` image URL accepted.
pub const MAX_IMAGE_URL_LEN: usize = 2_048;
/// What a remote image is reserved as: its dimensions are unknown until the provider fetches
/// it, and no image costs more under either formula (OpenAI `high`: 8 tiles, 1,445 tokens;
/// Anthropic: 1092 × 1092 / 750, 1,590).
pub const REMOTE_IMAGE_TOKENS: u64 = 1_600;

/// The image formats both providers accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaType {
    /// `image/png`
    Png,
    /// `image/jpeg`
    Jpeg,
    /// `image/gif`
    Gif,
    /// `image/webp`
    Webp,
}

impl MediaType {
    /// The MIME type.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Png => "image/png",
            Self::Jpeg => "image/jpeg",
            Self::Gif => "image/gif",
            Self::Webp => "image/webp",
        }
    }

    fn parse(mime: &str) -> Option<Self> {
        match mime.to_ascii_lowercase().as_str() {
            "image/png" => Some(Self::Png),
            "image/jpeg" | "image/jpg" => Some(Self::Jpeg),
            "image/gif" => Some(Self::Gif),
            "image/webp" => Some(Self::Webp),
            _ => None,
        }
    }
}

/// OpenAI's `detail`: how closely the model looks (and so what the image costs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Detail {
    /// The provider decides (OpenAI: high for most images).
    #[default]
    Auto,
    /// A 512 × 512 view: 85 tokens on OpenAI.
    Low,
    /// Full detail.
    High,
}

impl Detail {
    /// Parses `auto`, `low` or `high`.
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "auto" => Some(Self::Auto),
            "low" => Some(Self::Low),
            "high" => Some(Self::High),
            _ => None,
        }
    }
}

/// Where an image comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ImageSource {
    /// Inline: base64 data (as sent, already checked to decode) of a known type and size.
    Data {
        /// Its format.
        media_type: MediaType,
        /// The base64 text, as sent.
        base64: String,
        /// Pixel dimensions, from the format's header.
        width: u32,
        /// Pixel height.
        height: u32,
    },
    /// An `https` URL the provider fetches.
    Url(String),
}

/// One image of a message.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Image {
    /// The image.
    pub source: ImageSource,
    /// OpenAI's `detail` (Anthropic has none; it is not sent there).
    pub detail: Detail,
}

/// Why an image was refused; the message names the rule, never the image's content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ImageError(pub String);

impl Image {
    /// Parses an `image_url.url`: a base64 `data:` URL of a supported type, or an `https` URL.
    pub fn parse(url: &str, detail: Detail) -> Result<Self, ImageError> {
        let source = if let Some(rest) = url.strip_prefix("data:") {
            let (mime, data) = rest.split_once(";base64,").ok_or_else(|| {
                ImageError("a `data:` image URL must be base64: `data:image/png;base64,...`".into())
            })?;
            let media_type = MediaType::parse(mime).ok_or_else(|| {
                ImageError("the image type is not supported: send PNG, JPEG, GIF or WebP".into())
            })?;
            Self::inline(media_type, data)?
        } else if url.starts_with("https://") {
            if url.len() > MAX_IMAGE_URL_LEN {
                return Err(ImageError(format!(
                    "an image URL may be at most {MAX_IMAGE_URL_LEN} characters"
                )));
            }
            ImageSource::Url(url.to_owned())
        } else {
            return Err(ImageError(
                "an image must be a `data:` URL (base64) or an `https` URL".into(),
            ));
        };
        Ok(Self { source, detail })
    }

    /// An inline image from its type and base64 data: decoded to check it, its size and its
    /// dimensions (from the header, which must match the declared type).
    pub fn inline(media_type: MediaType, base64: &str) -> Result<ImageSource, ImageError> {
        // Base64 is 4 characters per 3 bytes: refuse an oversize image before decoding it.
        if base64.len() / 4 * 3 > MAX_IMAGE_BYTES + 3 {
            return Err(too_large());
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(base64.trim_end())
            .map_err(|_| ImageError("the image's data is not valid base64".into()))?;
        if bytes.len() > MAX_IMAGE_BYTES {
            return Err(too_large());
        }
        let (width, height) = dimensions(media_type, &bytes).ok_or_else(|| {
            ImageError(format!(
                "the image's data is not a {} image (or its header is damaged)",
                media_type.as_str()
            ))
        })?;
        if width == 0 || height == 0 || width > MAX_IMAGE_SIDE || height > MAX_IMAGE_SIDE {
            return Err(ImageError(format!(
                "an image may be at most {MAX_IMAGE_SIDE} × {MAX_IMAGE_SIDE} pixels"
            )));
        }
        Ok(ImageSource::Data {
            media_type,
            base64: base64.trim_end().to_owned(),
            width,
            height,
        })
    }

    /// The `data:` URL or `https` URL, as OpenAI takes it.
    pub fn url(&self) -> String {
        match &self.source {
            ImageSource::Data {
                media_type, base64, ..
            } => format!("data:{};base64,{base64}", media_type.as_str()),
            ImageSource::Url(url) => url.clone(),
        }
    }

    /// The prompt tokens reserved for this image on `provider` (see the module docs).
    pub fn tokens(&self, provider: ProviderKind) -> u64 {
        let ImageSource::Data { width, height, .. } = self.source else {
            return REMOTE_IMAGE_TOKENS;
        };
        match provider {
            ProviderKind::Openai => openai_tokens(width, height, self.detail),
            // Bedrock: Claude's formula; Nova and Llama count images by their own rules, close
            // to it for the sizes they accept.
            ProviderKind::Anthropic | ProviderKind::Bedrock => anthropic_tokens(width, height),
        }
    }
}

fn too_large() -> ImageError {
    ImageError(format!(
        "an image may be at most {} MiB",
        MAX_IMAGE_BYTES / 1024 / 1024
    ))
}

/// OpenAI's formula for GPT-4o-class models.
pub fn openai_tokens(width: u32, height: u32, detail: Detail) -> u64 {
    const BASE: u64 = 85;
    const PER_TILE: u64 = 170;
    if detail == Detail::Low {
        return BASE;
    }
    let (mut w, mut h) = (f64::from(width), f64::from(height));
    if w > 2048.0 || h > 2048.0 {
        let scale = 2048.0 / w.max(h);
        (w, h) = (w * scale, h * scale);
    }
    if w.min(h) > 768.0 {
        let scale = 768.0 / w.min(h);
        (w, h) = (w * scale, h * scale);
    }
    let tiles = (w / 512.0).ceil() as u64 * (h / 512.0).ceil() as u64;
    BASE + PER_TILE * tiles
}

/// Anthropic's approximation, after its resize, rounded up.
pub fn anthropic_tokens(width: u32, height: u32) -> u64 {
    const LONG_EDGE: f64 = 1568.0;
    const MAX_PIXELS: f64 = 1092.0 * 1092.0;
    let (mut w, mut h) = (f64::from(width), f64::from(height));
    if w.max(h) > LONG_EDGE {
        let scale = LONG_EDGE / w.max(h);
        (w, h) = (w * scale, h * scale);
    }
    if w * h > MAX_PIXELS {
        let scale = (MAX_PIXELS / (w * h)).sqrt();
        (w, h) = (w * scale, h * scale);
    }
    (w * h / 750.0).ceil() as u64
}

/// Width and height from the image's header, if `bytes` is an image of `media_type`.
pub fn dimensions(media_type: MediaType, bytes: &[u8]) -> Option<(u32, u32)> {
    let be16 = |at: usize| Some(u16::from_be_bytes(bytes.get(at..at + 2)?.try_into().ok()?));
    let le16 = |at: usize| Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?));
    let be32 = |at: usize| Some(u32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?));
    let le24 = |at: usize| {
        let b = bytes.get(at..at + 3)?;
        Some(u32::from(b[0]) | u32::from(b[1]) << 8 | u32::from(b[2]) << 16)
    };
    match media_type {
        MediaType::Png => {
            // Signature, then the IHDR chunk: length, "IHDR", width, height.
            (bytes.get(..8)? == b"\x89PNG\r\n\x1a\n" && bytes.get(12..16)? == b"IHDR")
                .then_some(())?;
            Some((be32(16)?, be32(20)?))
        }
        MediaType::Gif => {
            matches!(bytes.get(..6)?, b"GIF87a" | b"GIF89a").then_some(())?;
            Some((u32::from(le16(6)?), u32::from(le16(8)?)))
        }
        MediaType::Webp => {
            (bytes.get(..4)? == b"RIFF" && bytes.get(8..12)? == b"WEBP").then_some(())?;
            match bytes.get(12..16)? {
                // Lossy: a key frame's start code, then 14-bit width and height.
                b"VP8 " => {
                    (bytes.get(23..26)? == [0x9d, 0x01, 0x2a]).then_some(())?;
                    Some((u32::from(le16(26)? & 0x3fff), u32::from(le16(28)? & 0x3fff)))
                }
                // Lossless: a signature byte, then 14-bit width - 1 and height - 1.
                b"VP8L" => {
                    (*bytes.get(20)? == 0x2f).then_some(())?;
                    let b = bytes.get(21..25)?;
                    let bits = u32::from_le_bytes(b.try_into().ok()?);
                    Some(((bits & 0x3fff) + 1, ((bits >> 14) & 0x3fff) + 1))
                }
                // Extended: 24-bit canvas width - 1 and height - 1.
                b"VP8X" => Some((le24(24)? + 1, le24(27)? + 1)),
                _ => None,
            }
        }
        MediaType::Jpeg => {
            (bytes.get(..2)? == [0xff, 0xd8]).then_some(())?;
            // Walk the segments to the first start-of-frame marker.
            let mut at = 2;
            loop {
                while *bytes.get(at)? != 0xff {
                    at += 1;
                }
                while *bytes.get(at)? == 0xff {
                    at += 1;
                }
                let marker = *bytes.get(at)?;
                at += 1;
                match marker {
                    // Standalone markers carry no length.
                    0xd8 | 0x01 | 0xd0..=0xd7 => continue,
                    0xd9 | 0xda => return None,
                    0xc0..=0xcf if !matches!(marker, 0xc4 | 0xc8 | 0xcc) => {
                        // Length, precision, height, width.
                        return Some((u32::from(be16(at + 5)?), u32::from(be16(at + 3)?)));
                    }
                    _ => at += usize::from(be16(at)?),
                }
            }
        }
    }
}

/// An image part in OpenAI's shape: `{"type": "image_url", "image_url": {"url", "detail"}}`
/// (`detail` omitted when `auto`, so a request that did not set it hashes as before).
impl Serialize for Image {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Url<'a> {
            url: &'a str,
            #[serde(skip_serializing_if = "is_auto")]
            detail: Detail,
        }
        let url = self.url();
        let mut map = serializer.serialize_map(Some(2))?;
        map.serialize_entry("type", "image_url")?;
        map.serialize_entry(
            "image_url",
            &Url {
                url: &url,
                detail: self.detail,
            },
        )?;
        map.end()
    }
}

fn is_auto(detail: &Detail) -> bool {
    *detail == Detail::Auto
}

/// One part of a message with images, in order: text or an image.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ContentPart {
    /// Text.
    Text(String),
    /// An image.
    Image(Image),
}

impl ContentPart {
    /// The image, if this part is one.
    pub fn image(&self) -> Option<&Image> {
        match self {
            Self::Image(image) => Some(image),
            Self::Text(_) => None,
        }
    }
}

/// OpenAI's content part: `{"type": "text", "text"}` or an image part.
impl Serialize for ContentPart {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Text(text) => {
                let mut map = serializer.serialize_map(Some(2))?;
                map.serialize_entry("type", "text")?;
                map.serialize_entry("text", text)?;
                map.end()
            }
            Self::Image(image) => image.serialize(serializer),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(width: u32, height: u32) -> Vec<u8> {
        let mut bytes = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
        bytes.extend_from_slice(&width.to_be_bytes());
        bytes.extend_from_slice(&height.to_be_bytes());
        bytes.extend_from_slice(&[8, 6, 0, 0, 0, 0, 0, 0, 0]);
        bytes
    }

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    #[test]
    fn dimensions_come_from_each_formats_header() {
        assert_eq!(
            dimensions(MediaType::Png, &png(1024, 768)),
            Some((1024, 768))
        );
        let gif = [b"GIF89a".as_slice(), &[0x40, 0x01, 0xf0, 0x00]].concat();
        assert_eq!(dimensions(MediaType::Gif, &gif), Some((320, 240)));
        // A JPEG: SOI, an APP0 segment, then SOF0 (length 17, precision 8, 480 × 640).
        let mut jpeg = vec![0xff, 0xd8, 0xff, 0xe0, 0x00, 0x04, 0x00, 0x00];
        jpeg.extend_from_slice(&[0xff, 0xc0, 0x00, 0x11, 0x08, 0x01, 0xe0, 0x02, 0x80]);
        assert_eq!(dimensions(MediaType::Jpeg, &jpeg), Some((640, 480)));
        // WebP extended: canvas 800 × 600 stored as width - 1, height - 1.
        let mut webp = b"RIFF\0\0\0\0WEBPVP8X\x0a\0\0\0\0\0\0\0".to_vec();
        webp.extend_from_slice(&[0x1f, 0x03, 0x00, 0x57, 0x02, 0x00]);
        assert_eq!(dimensions(MediaType::Webp, &webp), Some((800, 600)));
        // Lossless WebP: 14-bit fields packed after the signature byte.
        let bits: u32 = (99) | (49 << 14);
        let mut lossless = b"RIFF\0\0\0\0WEBPVP8L\0\0\0\0\x2f".to_vec();
        lossless.extend_from_slice(&bits.to_le_bytes());
        assert_eq!(dimensions(MediaType::Webp, &lossless), Some((100, 50)));
        // The wrong format, or a truncated header, is not an image.
        assert_eq!(dimensions(MediaType::Jpeg, &png(10, 10)), None);
        assert_eq!(dimensions(MediaType::Png, &png(10, 10)[..20]), None);
        assert_eq!(dimensions(MediaType::Jpeg, &[0xff, 0xd8, 0xff]), None);
    }

    #[test]
    fn token_formulas_match_the_providers_published_examples() {
        // OpenAI's examples: 1024 × 1024 high is 765; 2048 × 4096 high is 1105; low is 85.
        assert_eq!(openai_tokens(1024, 1024, Detail::High), 765);
        assert_eq!(openai_tokens(2048, 4096, Detail::High), 1105);
        assert_eq!(openai_tokens(4096, 8192, Detail::Low), 85);
        // Anthropic's table: 1092 × 1092 is about 1,590 tokens; 200 × 200 about 54.
        assert_eq!(anthropic_tokens(1092, 1092), 1590);
        assert_eq!(anthropic_tokens(200, 200), 54);
        // No image costs more than the remote reservation under either formula.
        for (w, h) in [
            (8000, 8000),
            (8000, 1),
            (1, 8000),
            (2048, 768),
            (1568, 1568),
        ] {
            assert!(
                openai_tokens(w, h, Detail::High) <= REMOTE_IMAGE_TOKENS,
                "{w}x{h}"
            );
            assert!(anthropic_tokens(w, h) <= REMOTE_IMAGE_TOKENS, "{w}x{h}");
        }
    }

    #[test]
    fn images_parse_from_data_and_https_urls_and_bad_ones_are_refused() {
        let url = format!("data:image/png;base64,{}", b64(&png(1024, 1024)));
        let image = Image::parse(&url, Detail::High).unwrap();
        assert_eq!(image.tokens(ProviderKind::Openai), 765);
        assert_eq!(image.url(), url);
        let remote = Image::parse("https://example.com/cat.png", Detail::Auto).unwrap();
        assert_eq!(remote.tokens(ProviderKind::Anthropic), REMOTE_IMAGE_TOKENS);

        let refused = |url: &str| Image::parse(url, Detail::Auto).unwrap_err().0;
        assert!(refused("http://example.com/cat.png").contains("https"));
        assert!(
            refused(&format!("data:image/tiff;base64,{}", b64(&png(1, 1)))).contains("PNG, JPEG")
        );
        assert!(refused("data:image/png;base64,@@@").contains("base64"));
        assert!(
            refused(&format!("data:image/jpeg;base64,{}", b64(&png(1, 1))))
                .contains("not a image/jpeg")
        );
        assert!(
            refused(&format!("data:image/png;base64,{}", b64(&png(9000, 10)))).contains("8000")
        );
        let huge = b64(&vec![0u8; MAX_IMAGE_BYTES + 10]);
        assert!(refused(&format!("data:image/png;base64,{huge}")).contains("MiB"));
        assert!(refused("data:image/png,rawbytes").contains("base64"));
    }

    #[test]
    fn an_image_serializes_as_openais_part() {
        let image = Image::parse("https://example.com/a.png", Detail::Low).unwrap();
        assert_eq!(
            serde_json::to_value(&image).unwrap(),
            serde_json::json!({"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "low"}})
        );
    }
}
