//! System-prompt templates, rendered per request from the tenant's configuration.
//!
//! A template is parsed once when the configuration is loaded (so a malformed template is an
//! operator error at write time, not a request failure) and rendered on every request. Rendered
//! prompts are never cached: rendering is a handful of string copies, and a cache would be one
//! more place where one tenant's prompt could reach another.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Variables every template may use without defining them.
pub const BUILT_INS: &[&str] = &["tenant_id", "tenant_name", "date"];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Text(String),
    Var(String),
}

/// A parsed `{{variable}}` template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PromptTemplate {
    source: String,
    segments: Vec<Segment>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TemplateError {
    #[error("unclosed `{{{{` at byte {0}")]
    Unclosed(usize),
    #[error("invalid variable name `{0}`: use letters, digits and '_'")]
    BadName(String),
}

impl PromptTemplate {
    pub fn parse(source: impl Into<String>) -> Result<Self, TemplateError> {
        let source = source.into();
        let mut segments = Vec::new();
        let mut rest = source.as_str();
        let mut offset = 0;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                segments.push(Segment::Text(rest[..start].to_owned()));
            }
            let after = &rest[start + 2..];
            let end = after
                .find("}}")
                .ok_or(TemplateError::Unclosed(offset + start))?;
            let name = after[..end].trim();
            let valid =
                !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !valid {
                return Err(TemplateError::BadName(name.to_owned()));
            }
            segments.push(Segment::Var(name.to_owned()));
            let consumed = start + 2 + end + 2;
            offset += consumed;
            rest = &rest[consumed..];
        }
        if !rest.is_empty() {
            segments.push(Segment::Text(rest.to_owned()));
        }
        Ok(Self { source, segments })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn variables(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Var(name) => Some(name.as_str()),
            Segment::Text(_) => None,
        })
    }

    /// Renders with the tenant's variables, then the built-ins. Returns the missing variable's
    /// name if one cannot be resolved (configs are validated on write, so this means drift).
    pub fn render(
        &self,
        variables: &BTreeMap<String, String>,
        built_ins: &BuiltIns<'_>,
    ) -> Result<String, String> {
        let mut out = String::with_capacity(self.source.len() + 64);
        for segment in &self.segments {
            match segment {
                Segment::Text(text) => out.push_str(text),
                Segment::Var(name) => {
                    let value = variables
                        .get(name)
                        .map(String::as_str)
                        .or_else(|| built_ins.get(name))
                        .ok_or_else(|| name.clone())?;
                    out.push_str(value);
                }
            }
        }
        Ok(out)
    }
}

/// Values of the built-in variables for one request.
pub struct BuiltIns<'a> {
    pub tenant_id: &'a str,
    pub tenant_name: &'a str,
    pub date: &'a str,
}

impl BuiltIns<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        match name {
            "tenant_id" => Some(self.tenant_id),
            "tenant_name" => Some(self.tenant_name),
            "date" => Some(self.date),
            _ => None,
        }
    }
}

impl TryFrom<String> for PromptTemplate {
    type Error = TemplateError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(value)
    }
}

impl From<PromptTemplate> for String {
    fn from(value: PromptTemplate) -> Self {
        value.source
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn built_ins() -> BuiltIns<'static> {
        BuiltIns {
            tenant_id: "acme",
            tenant_name: "Acme Corp",
            date: "2026-11-26",
        }
    }

    #[test]
    fn renders_tenant_variables_and_built_ins() {
        let t = PromptTemplate::parse(
            "You help {{ tenant_name }} customers about {{product}}. Today is {{date}}.",
        )
        .unwrap();
        let vars = BTreeMap::from([("product".to_owned(), "rockets".to_owned())]);
        assert_eq!(
            t.render(&vars, &built_ins()).unwrap(),
            "You help Acme Corp customers about rockets. Today is 2026-11-26."
        );
    }

    #[test]
    fn tenant_variables_shadow_built_ins() {
        let t = PromptTemplate::parse("{{tenant_name}}").unwrap();
        let vars = BTreeMap::from([("tenant_name".to_owned(), "ACME".to_owned())]);
        assert_eq!(t.render(&vars, &built_ins()).unwrap(), "ACME");
    }

    #[test]
    fn a_missing_variable_is_reported_by_name() {
        let t = PromptTemplate::parse("Hi {{who}}").unwrap();
        assert_eq!(
            t.render(&BTreeMap::new(), &built_ins()),
            Err("who".to_owned())
        );
    }

    #[test]
    fn malformed_templates_are_rejected_at_parse_time() {
        assert_eq!(
            PromptTemplate::parse("a {{b"),
            Err(TemplateError::Unclosed(2))
        );
        assert!(matches!(
            PromptTemplate::parse("{{a b}}"),
            Err(TemplateError::BadName(_))
        ));
        assert!(matches!(
            PromptTemplate::parse("{{}}"),
            Err(TemplateError::BadName(_))
        ));
    }

    #[test]
    fn plain_text_and_unicode_survive() {
        let t = PromptTemplate::parse("Grüße {{x}}!").unwrap();
        let vars = BTreeMap::from([("x".to_owned(), "🌍".to_owned())]);
        assert_eq!(t.render(&vars, &built_ins()).unwrap(), "Grüße 🌍!");
        assert_eq!(t.source(), "Grüße {{x}}!");
    }
}
