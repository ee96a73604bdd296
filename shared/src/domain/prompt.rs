//! System-prompt templates, rendered per request from the tenant's configuration.
//!
//! A template is parsed once when the configuration is loaded (so a malformed template is an
//! operator error at write time, not a request failure) and rendered on every request. Rendered
//! prompts are never cached: rendering is a handful of string copies, and a cache would be one
//! more place where one tenant's prompt could reach another.
//!
//! Variables: `{{name}}` is one of the tenant's `prompt_variables` or a built-in
//! ([`BUILT_INS`]); `{{user.<key>}}` is field `<key>` of the end user's profile (the chat
//! request's `user`, see [`super::profile`]) and `{{user_profile}}` the whole profile as compact
//! JSON. Profile variables render empty when the request names no user, the user has no
//! profile or the profile lacks the field: a missing profile is never an error.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::profile::UserProfile;

/// Variables every template may use without defining them.
pub const BUILT_INS: &[&str] = &["tenant_id", "tenant_name", "date", PROFILE_BLOCK];

/// The built-in that renders the whole end-user profile.
pub const PROFILE_BLOCK: &str = "user_profile";

/// The namespace of profile fields: `{{user.<key>}}`.
const PROFILE_NAMESPACE: &str = "user.";

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Text(String),
    Var(String),
    /// `{{user.<key>}}`: a field of the end user's profile.
    ProfileField(String),
}

/// A parsed `{{variable}}` template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PromptTemplate {
    source: String,
    segments: Vec<Segment>,
}

/// Why a template was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TemplateError {
    /// A `{{` with no `}}` after it, at this byte offset.
    #[error("unclosed `{{{{` at byte {0}")]
    Unclosed(usize),
    /// A variable name that is neither letters, digits and `_` nor `user.<field>`.
    #[error(
        "invalid variable name `{0}`: use letters, digits and '_', or `user.<field>` for a profile field"
    )]
    BadName(String),
}

impl PromptTemplate {
    /// Parses a template, refusing an unclosed `{{` or a bad variable name.
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
            let plain = |n: &str| {
                !n.is_empty() && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            };
            let segment = match name.strip_prefix(PROFILE_NAMESPACE) {
                Some(key) if super::profile::valid_key(key) => {
                    Segment::ProfileField(key.to_owned())
                }
                None if plain(name) => Segment::Var(name.to_owned()),
                _ => return Err(TemplateError::BadName(name.to_owned())),
            };
            segments.push(segment);
            let consumed = start + 2 + end + 2;
            offset += consumed;
            rest = &rest[consumed..];
        }
        if !rest.is_empty() {
            segments.push(Segment::Text(rest.to_owned()));
        }
        Ok(Self { source, segments })
    }

    /// The template as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The plain `{{name}}` variables (tenant variables and built-ins), in order; profile
    /// fields (`{{user.<key>}}`) need no definition and are not listed.
    pub fn variables(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Var(name) => Some(name.as_str()),
            Segment::Text(_) | Segment::ProfileField(_) => None,
        })
    }

    /// Whether rendering reads the end user's profile: a `{{user.<key>}}` field, or
    /// `{{user_profile}}` that no tenant variable of that name shadows. The chat path reads a
    /// profile only when this holds, so templates without profile variables cost no store read.
    pub fn uses_profile(&self, variables: &BTreeMap<String, String>) -> bool {
        self.segments.iter().any(|s| match s {
            Segment::ProfileField(_) => true,
            Segment::Var(name) => name == PROFILE_BLOCK && !variables.contains_key(name),
            Segment::Text(_) => false,
        })
    }

    /// Renders with the tenant's variables, then the built-ins; profile fields from
    /// `built_ins.profile` (empty when it is `None` or lacks the field). Returns the missing
    /// variable's name if one cannot be resolved (configs are validated on write, so this means
    /// drift).
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
                        .map(|v| Cow::Borrowed(v.as_str()))
                        .or_else(|| built_ins.get(name))
                        .ok_or_else(|| name.clone())?;
                    out.push_str(&value);
                }
                Segment::ProfileField(key) => {
                    if let Some(value) = built_ins.profile.and_then(|p| p.get(key)) {
                        out.push_str(&value.render());
                    }
                }
            }
        }
        Ok(out)
    }
}

/// Values of the built-in variables for one request.
pub struct BuiltIns<'a> {
    /// Renders `{{tenant_id}}`.
    pub tenant_id: &'a str,
    /// Renders `{{tenant_name}}`: the tenant's display name.
    pub tenant_name: &'a str,
    /// Renders `{{date}}`: the request's UTC date, `YYYY-MM-DD`.
    pub date: &'a str,
    /// The end user's profile, when the request names a user who has one.
    pub profile: Option<&'a UserProfile>,
}

impl BuiltIns<'_> {
    fn get(&self, name: &str) -> Option<Cow<'_, str>> {
        match name {
            "tenant_id" => Some(Cow::Borrowed(self.tenant_id)),
            "tenant_name" => Some(Cow::Borrowed(self.tenant_name)),
            "date" => Some(Cow::Borrowed(self.date)),
            PROFILE_BLOCK => Some(self.profile.map_or(Cow::Borrowed(""), |p| {
                Cow::Owned(if p.is_empty() {
                    String::new()
                } else {
                    p.to_json()
                })
            })),
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
            profile: None,
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
    fn profile_fields_render_from_the_profile_and_empty_without_one() {
        let t = PromptTemplate::parse(
            "Customer {{user.name}} ({{ user.plan }}, vip={{user.vip}}). Profile: {{user_profile}}.",
        )
        .unwrap();
        let profile =
            crate::domain::profile::UserProfile::from_json(br#"{"name":"Ada","vip":true}"#)
                .unwrap();
        let with = BuiltIns {
            profile: Some(&profile),
            ..built_ins()
        };
        assert_eq!(
            t.render(&BTreeMap::new(), &with).unwrap(),
            r#"Customer Ada (, vip=true). Profile: {"name":"Ada","vip":true}."#
        );
        assert_eq!(
            t.render(&BTreeMap::new(), &built_ins()).unwrap(),
            "Customer  (, vip=). Profile: ."
        );
        assert_eq!(t.variables().collect::<Vec<_>>(), ["user_profile"]);
    }

    #[test]
    fn only_profile_variables_make_a_template_read_the_profile() {
        let none = BTreeMap::new();
        assert!(
            !PromptTemplate::parse("Hi {{tenant_name}}")
                .unwrap()
                .uses_profile(&none)
        );
        assert!(
            PromptTemplate::parse("Hi {{user.name}}")
                .unwrap()
                .uses_profile(&none)
        );
        let block = PromptTemplate::parse("About: {{user_profile}}").unwrap();
        assert!(block.uses_profile(&none));
        // A tenant variable of the same name shadows the built-in, as for every built-in.
        let shadow = BTreeMap::from([("user_profile".to_owned(), "static".to_owned())]);
        assert!(!block.uses_profile(&shadow));
        assert_eq!(
            block.render(&shadow, &built_ins()).unwrap(),
            "About: static"
        );
    }

    #[test]
    fn only_the_user_namespace_takes_a_dot() {
        for bad in [
            "{{user.}}",
            "{{account.name}}",
            "{{user.a.b}}",
            "{{user.na me}}",
            "{{.x}}",
        ] {
            assert!(
                matches!(PromptTemplate::parse(bad), Err(TemplateError::BadName(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn plain_text_and_unicode_survive() {
        let t = PromptTemplate::parse("Grüße {{x}}!").unwrap();
        let vars = BTreeMap::from([("x".to_owned(), "🌍".to_owned())]);
        assert_eq!(t.render(&vars, &built_ins()).unwrap(), "Grüße 🌍!");
        assert_eq!(t.source(), "Grüße {{x}}!");
    }
}
