//! What checking a reply against a `response_format` schema can cost, bounded before it runs.
//!
//! Two things make JSON Schema validation expensive, and neither is visible in a schema's size:
//!
//! - **Backtracking patterns.** `pattern` and `patternProperties` are compiled by the `regex`
//!   engine (`jsonschema`'s `PatternOptions::regex`), which matches in time linear in the
//!   subject, with a size limit per compiled pattern. Lookaround and backreferences need a
//!   backtracking engine and are refused when the format is parsed. (Strict structured outputs
//!   cannot enforce them during generation either.) The number of patterns is capped too.
//! - **Re-applied subschemas.** Validation has no memory: a subschema reached through two
//!   `$ref`s is run twice, so a 1 KB chain of `anyOf: [{$ref: next}, {$ref: next}]` doubles
//!   per link, and a recursive schema that branches doubles per level of the reply. Neither
//!   pattern limits nor the schema's byte size bound that.
//!
//! So a schema is reduced to its [`Shape`]: which subschemas apply to a value, to its members,
//! its keys and its elements, with every `$ref` resolved inside the schema. At parse time its
//! unfolded size (every `$ref` expanded once, recursion cut) is capped, which refuses the
//! doubling chains before any money is spent. At check time, before the validator runs,
//! [`Shape::cost`] walks the reply alongside the shape and counts every (subschema, value)
//! pair the validator could visit, stopping at a budget: it never does more work than the
//! budget, and a reply over it fails as a validation error without being validated.
//!
//! The walk over-approximates (every branch of an `anyOf` is counted, `patternProperties` and
//! `additionalProperties` apply to every member), so the count is an upper bound on the
//! validator's visits. Keywords whose cost cannot be bounded this way are refused at parse
//! time: `unevaluatedProperties` and `unevaluatedItems` (the validator re-runs sibling
//! subschemas to learn what they evaluated), `$dynamicRef`/`$recursiveRef`, `$id` below the
//! root, and references that do not point inside the schema.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

/// The most `pattern`s and `patternProperties` entries one schema may hold. Each compiles to
/// at most [`PATTERN_SIZE_LIMIT`] (plus its lazy DFA's cache), so this also bounds memory.
pub const MAX_PATTERNS: usize = 100;
/// The compiled size limit of one pattern (the `regex` crate's `size_limit`), and of its lazy
/// DFA cache. A pattern over it is refused when the format is parsed.
pub const PATTERN_SIZE_LIMIT: usize = 256 * 1024;
/// The most subschemas a schema may unfold to, every `$ref` expanded (recursion cut).
pub const MAX_UNFOLDED_SUBSCHEMAS: u64 = 100_000;
/// The most (subschema, value) visits checking one reply may cost. Deciding validity visits
/// each for a few nanoseconds, so this is milliseconds of work.
pub const EVALUATION_BUDGET: u64 = 1_000_000;
/// The most visits for which a failing reply's errors are collected (each failing visit
/// builds an error, a few microseconds): well under a second on a small Lambda, inside the
/// deadline margin that leaves time to meter the call.
pub const DETAIL_BUDGET: u64 = 50_000;
/// A string checked against a pattern costs one visit per this many bytes, on top of the visit.
const PATTERN_BYTES_PER_VISIT: u64 = 64;

/// Why a schema's cost cannot be bounded: a message for the client, naming where (a JSON
/// Pointer into the schema) but never quoting the schema's values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeError(pub String);

/// The applicator structure of a compiled schema.
#[derive(Debug, Default)]
pub struct Shape {
    nodes: Vec<Node>,
}

/// One subschema: which subschemas apply to the value it applies to, and to that value's parts.
#[derive(Debug, Default)]
struct Node {
    /// To the same value: `allOf`, `anyOf`, `oneOf`, `not`, `if`/`then`/`else`, `$ref`,
    /// `dependentSchemas` and draft 7's schema `dependencies`.
    same: Vec<usize>,
    /// `properties`: the member of that name.
    named: BTreeMap<String, usize>,
    /// Every member: `patternProperties` and `additionalProperties`.
    members: Vec<usize>,
    /// Every member's name: `propertyNames`.
    keys: Vec<usize>,
    /// The element at each position: `prefixItems`, or draft 7's array form of `items`.
    positional: Vec<usize>,
    /// Every element: `items`, `additionalItems`, `contains`.
    elements: Vec<usize>,
    /// `patternProperties` entries: each member's name is matched against each.
    key_patterns: u64,
    /// Has a `pattern`: a string value is matched against it.
    pattern: bool,
}

impl Node {
    fn children(&self) -> impl Iterator<Item = usize> + '_ {
        self.same
            .iter()
            .chain(self.named.values())
            .chain(&self.members)
            .chain(&self.keys)
            .chain(&self.positional)
            .chain(&self.elements)
            .copied()
    }
}

/// What a subschema is applied to: a value of the reply, or an object member's name.
#[derive(Clone, Copy)]
enum Subject<'a> {
    Value(&'a Value),
    Key(&'a str),
}

impl Shape {
    /// The shape of `schema`, or why its cost cannot be bounded.
    pub fn of(schema: &Value) -> Result<Self, ShapeError> {
        let mut builder = Builder {
            root: schema,
            nodes: Vec::new(),
            at: HashMap::new(),
            anchors: HashMap::new(),
            refs: Vec::new(),
            patterns: 0,
        };
        builder.node(schema, String::new())?;
        // Resolving a reference can index a part of the schema no keyword reaches (a `$ref`
        // into an unknown keyword), which can hold references of its own.
        while let Some((from, reference, at)) = builder.refs.pop() {
            let target = builder.resolve(reference, &at)?;
            builder.nodes[from].same.push(target);
        }
        if builder.patterns > MAX_PATTERNS {
            return Err(ShapeError(format!(
                "has {} `pattern`s and `patternProperties` entries; the limit is {MAX_PATTERNS}",
                builder.patterns
            )));
        }
        let shape = Self {
            nodes: builder.nodes,
        };
        let unfolded = shape.unfolded(MAX_UNFOLDED_SUBSCHEMAS + 1);
        if unfolded > MAX_UNFOLDED_SUBSCHEMAS {
            return Err(ShapeError(format!(
                "unfolds to more than {MAX_UNFOLDED_SUBSCHEMAS} subschemas when its `$ref`s are expanded; \
                 validation would run each of them"
            )));
        }
        Ok(shape)
    }

    /// The subschemas the schema unfolds to, every reference expanded and every recursion
    /// counted once, up to `limit`.
    fn unfolded(&self, limit: u64) -> u64 {
        #[derive(Clone, Copy)]
        enum Seen {
            New,
            Open,
            Done(u64),
        }
        let Some(_) = self.nodes.first() else {
            return 0;
        };
        let mut seen = vec![Seen::New; self.nodes.len()];
        // Depth-first without recursion (reference chains can be long): `(node, false)` opens
        // a node, `(node, true)` sums its children once they are done.
        let mut stack = vec![(0usize, false)];
        while let Some((node, close)) = stack.pop() {
            if close {
                let size = self.nodes[node]
                    .children()
                    .map(|child| match seen[child] {
                        Seen::Done(size) => size,
                        // A reference back into the path being unfolded: recursion, cut.
                        Seen::New | Seen::Open => 1,
                    })
                    .fold(1u64, u64::saturating_add);
                seen[node] = Seen::Done(size.min(limit));
                continue;
            }
            if !matches!(seen[node], Seen::New) {
                continue;
            }
            seen[node] = Seen::Open;
            stack.push((node, true));
            stack.extend(
                self.nodes[node]
                    .children()
                    .filter(|&child| matches!(seen[child], Seen::New))
                    .map(|child| (child, false)),
            );
        }
        match seen[0] {
            Seen::Done(size) => size,
            Seen::New | Seen::Open => limit,
        }
    }

    /// An upper bound on the (subschema, value) visits validating `reply` takes, or `None`
    /// when it is over `budget`. Never does more than `budget` steps of work itself.
    pub fn cost(&self, reply: &Value, budget: u64) -> Option<u64> {
        if self.nodes.is_empty() {
            return Some(0);
        }
        let mut walk = Walk {
            spent: 1,
            budget,
            stack: vec![(0, Subject::Value(reply))],
        };
        while let Some((index, subject)) = walk.stack.pop() {
            let node = &self.nodes[index];
            for &same in &node.same {
                walk.visit(self.pattern_cost(same, subject), (same, subject))?;
            }
            match subject {
                Subject::Value(Value::Object(members)) => {
                    for (name, member) in members {
                        let member = Subject::Value(member);
                        let key = Subject::Key(name);
                        for &child in node.named.get(name).into_iter().chain(&node.members) {
                            walk.visit(self.pattern_cost(child, member), (child, member))?;
                        }
                        for &child in &node.keys {
                            walk.visit(self.pattern_cost(child, key), (child, key))?;
                        }
                        // Each `patternProperties` pattern is matched against the name.
                        let matches = node.key_patterns.saturating_mul(1 + text_cost(name));
                        walk.charge(matches)?;
                    }
                }
                Subject::Value(Value::Array(elements)) => {
                    for (position, element) in elements.iter().enumerate() {
                        let element = Subject::Value(element);
                        let applied = node.positional.get(position).into_iter();
                        for &child in applied.chain(&node.elements) {
                            walk.visit(self.pattern_cost(child, element), (child, element))?;
                        }
                    }
                }
                Subject::Value(_) | Subject::Key(_) => {}
            }
        }
        Some(walk.spent)
    }

    /// What matching `node`'s `pattern` against `subject` adds to visiting it.
    fn pattern_cost(&self, node: usize, subject: Subject<'_>) -> u64 {
        if !self.nodes[node].pattern {
            return 0;
        }
        match subject {
            Subject::Value(Value::String(text)) => text_cost(text),
            Subject::Key(text) => text_cost(text),
            Subject::Value(_) => 0,
        }
    }
}

/// A pattern match's cost beyond its visit: linear in the subject.
fn text_cost(text: &str) -> u64 {
    text.len() as u64 / PATTERN_BYTES_PER_VISIT
}

/// The state of [`Shape::cost`]: visits are charged when pushed, so the stack never holds
/// more than the budget.
struct Walk<'a> {
    spent: u64,
    budget: u64,
    stack: Vec<(usize, Subject<'a>)>,
}

impl<'a> Walk<'a> {
    fn charge(&mut self, amount: u64) -> Option<()> {
        self.spent = self.spent.saturating_add(amount);
        (self.spent <= self.budget).then_some(())
    }

    fn visit(&mut self, extra: u64, item: (usize, Subject<'a>)) -> Option<()> {
        self.charge(extra.saturating_add(1))?;
        self.stack.push(item);
        Some(())
    }
}

struct Builder<'a> {
    root: &'a Value,
    nodes: Vec<Node>,
    /// The node of each JSON Pointer indexed so far.
    at: HashMap<String, usize>,
    /// `$anchor` and `$dynamicAnchor` names.
    anchors: HashMap<&'a str, usize>,
    /// References to resolve: the node holding one, the reference, and where it is.
    refs: Vec<(usize, &'a str, String)>,
    patterns: usize,
}

/// The keywords whose value is one subschema applied to the same value.
const SAME_ONE: [&str; 4] = ["not", "if", "then", "else"];
/// The keywords whose value is an array of subschemas applied to the same value.
const SAME_MANY: [&str; 3] = ["allOf", "anyOf", "oneOf"];

impl<'a> Builder<'a> {
    /// Indexes the subschema `value` at `pointer` and everything below it.
    fn node(&mut self, value: &'a Value, pointer: String) -> Result<usize, ShapeError> {
        if let Some(&index) = self.at.get(&pointer) {
            return Ok(index);
        }
        let index = self.nodes.len();
        self.nodes.push(Node::default());
        self.at.insert(pointer.clone(), index);
        let Value::Object(schema) = value else {
            // `true`, `false`, or not a schema at all (the validator's compile refuses that).
            return Ok(index);
        };
        let at = |keyword: &str| format!("{pointer}/{}", escape(keyword));
        for refused in ["unevaluatedProperties", "unevaluatedItems"] {
            if schema.contains_key(refused) {
                return Err(ShapeError(format!(
                    "uses `{refused}` (at `{}`), which is not supported: its cost cannot be bounded \
                     ahead of validation; use `additionalProperties` or `items`",
                    at(refused)
                )));
            }
        }
        for refused in ["$dynamicRef", "$recursiveRef"] {
            if schema.contains_key(refused) {
                return Err(ShapeError(format!(
                    "uses `{refused}` (at `{}`), which is not supported; use `$ref`",
                    at(refused)
                )));
            }
        }
        if !pointer.is_empty() && schema.contains_key("$id") {
            return Err(ShapeError(format!(
                "has an `$id` below its root (at `{}`), which is not supported",
                at("$id")
            )));
        }
        for anchor in ["$anchor", "$dynamicAnchor"] {
            if let Some(Value::String(name)) = schema.get(anchor) {
                self.anchors.insert(name, index);
            }
        }
        if let Some(Value::String(reference)) = schema.get("$ref") {
            self.refs.push((index, reference, at("$ref")));
        }
        if let Some(Value::String(_)) = schema.get("pattern") {
            self.patterns += 1;
            self.nodes[index].pattern = true;
        }

        let mut same = Vec::new();
        for keyword in SAME_ONE {
            if let Some(sub) = schema.get(keyword) {
                same.push(self.node(sub, at(keyword))?);
            }
        }
        for keyword in SAME_MANY {
            if let Some(Value::Array(subs)) = schema.get(keyword) {
                for (i, sub) in subs.iter().enumerate() {
                    same.push(self.node(sub, format!("{}/{i}", at(keyword)))?);
                }
            }
        }
        for keyword in ["dependentSchemas", "dependencies"] {
            if let Some(Value::Object(subs)) = schema.get(keyword) {
                for (name, sub) in subs {
                    // Draft 7 `dependencies` also takes arrays of names, which are not schemas.
                    if sub.is_object() || sub.is_boolean() {
                        same.push(self.node(sub, format!("{}/{}", at(keyword), escape(name)))?);
                    }
                }
            }
        }

        let mut named = BTreeMap::new();
        if let Some(Value::Object(subs)) = schema.get("properties") {
            for (name, sub) in subs {
                let child = self.node(sub, format!("{}/{}", at("properties"), escape(name)))?;
                named.insert(name.clone(), child);
            }
        }
        let mut members = Vec::new();
        let mut key_patterns = 0;
        if let Some(Value::Object(subs)) = schema.get("patternProperties") {
            self.patterns += subs.len();
            key_patterns = subs.len() as u64;
            for (pattern, sub) in subs {
                members.push(self.node(
                    sub,
                    format!("{}/{}", at("patternProperties"), escape(pattern)),
                )?);
            }
        }
        if let Some(sub) = schema.get("additionalProperties") {
            members.push(self.node(sub, at("additionalProperties"))?);
        }
        let mut keys = Vec::new();
        if let Some(sub) = schema.get("propertyNames") {
            keys.push(self.node(sub, at("propertyNames"))?);
        }

        let mut positional = Vec::new();
        let mut elements = Vec::new();
        if let Some(Value::Array(subs)) = schema.get("prefixItems") {
            for (i, sub) in subs.iter().enumerate() {
                positional.push(self.node(sub, format!("{}/{i}", at("prefixItems")))?);
            }
        }
        match schema.get("items") {
            Some(Value::Array(subs)) => {
                for (i, sub) in subs.iter().enumerate() {
                    positional.push(self.node(sub, format!("{}/{i}", at("items")))?);
                }
            }
            Some(sub) => elements.push(self.node(sub, at("items"))?),
            None => {}
        }
        for keyword in ["additionalItems", "contains"] {
            if let Some(sub) = schema.get(keyword) {
                elements.push(self.node(sub, at(keyword))?);
            }
        }

        // Definitions apply to nothing by themselves; indexed so references find them.
        for keyword in ["$defs", "definitions"] {
            if let Some(Value::Object(subs)) = schema.get(keyword) {
                for (name, sub) in subs {
                    self.node(sub, format!("{}/{}", at(keyword), escape(name)))?;
                }
            }
        }

        let node = &mut self.nodes[index];
        node.same.extend(same);
        node.named = named;
        node.members = members;
        node.keys = keys;
        node.positional = positional;
        node.elements = elements;
        node.key_patterns = key_patterns;
        Ok(index)
    }

    /// The node a `$ref` found at `at` points to: `#`, a `#/...` JSON Pointer or a
    /// `#name` anchor, all within this schema.
    fn resolve(&mut self, reference: &str, at: &str) -> Result<usize, ShapeError> {
        let unresolved = || {
            ShapeError(format!(
                "has a `$ref` (at `{at}`) that points at nothing in the schema; references must be \
                 `#`, a JSON Pointer such as `#/$defs/name`, or an `$anchor` of this schema"
            ))
        };
        let Some(fragment) = reference.strip_prefix('#') else {
            return Err(unresolved());
        };
        let fragment = percent_decode(fragment).ok_or_else(unresolved)?;
        if fragment.is_empty() || fragment.starts_with('/') {
            if let Some(&index) = self.at.get(&fragment) {
                return Ok(index);
            }
            let target = self.root.pointer(&fragment).ok_or_else(unresolved)?;
            return self.node(target, fragment);
        }
        self.anchors
            .get(fragment.as_str())
            .copied()
            .ok_or_else(unresolved)
    }
}

/// A JSON Pointer token for `key`.
fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// A URI fragment's percent-escapes decoded; `None` when they are not valid UTF-8.
fn percent_decode(fragment: &str) -> Option<String> {
    if !fragment.contains('%') {
        return Some(fragment.to_owned());
    }
    let bytes = fragment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&hi), Some(&lo)) if hex(hi).is_some() && hex(lo).is_some() => {
                let (hi, lo) = (hex(hi)?, hex(lo)?);
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn shape(schema: Value) -> Shape {
        Shape::of(&schema).unwrap()
    }

    fn refused(schema: Value) -> String {
        Shape::of(&schema).unwrap_err().0
    }

    /// `links` definitions, each an `anyOf` of two references to the next: 2^links paths.
    fn doubling_chain(links: usize) -> Value {
        let mut defs = serde_json::Map::new();
        for i in 0..links {
            let next = format!("#/$defs/d{}", i + 1);
            defs.insert(
                format!("d{i}"),
                json!({"anyOf": [{"$ref": next}, {"$ref": next}]}),
            );
        }
        defs.insert(format!("d{links}"), json!({"type": "integer"}));
        json!({"type": "object", "$defs": defs, "properties": {"a": {"$ref": "#/$defs/d0"}}})
    }

    #[test]
    fn a_plain_schemas_cost_is_its_visits_of_the_reply() {
        let s = shape(json!({"type": "object", "properties": {
            "name": {"type": "string"},
            "tags": {"type": "array", "items": {"type": "string"}}
        }}));
        // root, name, tags, and the items schema once per element.
        assert_eq!(
            s.cost(&json!({"name": "a", "tags": ["x", "y", "z"]}), 100),
            Some(6)
        );
        assert_eq!(s.cost(&json!({}), 100), Some(1));
    }

    #[test]
    fn references_are_followed_and_every_branch_is_counted() {
        let s = shape(json!({"type": "object",
            "$defs": {"n": {"type": "integer"}},
            "properties": {"a": {"anyOf": [{"$ref": "#/$defs/n"}, {"type": "string"}]}}}));
        // root, a, its two branches, and the definition behind the reference.
        assert_eq!(s.cost(&json!({"a": 1}), 100), Some(5));
    }

    #[test]
    fn a_recursive_schema_costs_in_proportion_to_the_reply() {
        let s = shape(json!({"type": "object",
            "properties": {"child": {"$ref": "#"}, "name": {"type": "string"}}}));
        let mut reply = json!({"name": "leaf"});
        for _ in 0..50 {
            reply = json!({"name": "n", "child": reply});
        }
        // Per level: the node, `name`, `child` and the reference back to the root.
        let cost = s.cost(&reply, u64::MAX).unwrap();
        assert!((150..=210).contains(&cost), "{cost}");
    }

    #[test]
    fn a_branching_recursive_schema_is_cut_off_at_the_budget() {
        // Two references per level: 2^depth visits for a reply `depth` levels deep.
        let s = shape(
            json!({"type": "object", "properties": {"c": {"anyOf": [{"$ref": "#"}, {"$ref": "#"}]}}}),
        );
        let mut reply = json!({});
        for _ in 0..64 {
            reply = json!({"c": reply});
        }
        assert_eq!(s.cost(&reply, EVALUATION_BUDGET), None);
    }

    #[test]
    fn a_doubling_chain_of_references_is_refused() {
        // 2^12 paths: allowed; 2^17 paths: over the unfolded limit.
        assert!(Shape::of(&doubling_chain(12)).is_ok());
        let message = refused(doubling_chain(17));
        assert!(message.contains("unfolds to more than"), "{message}");
    }

    #[test]
    fn string_patterns_cost_their_length() {
        let s = shape(json!({"type": "object", "properties": {"a": {"pattern": "^a+$"}}}));
        let short = s.cost(&json!({"a": "aaaa"}), u64::MAX).unwrap();
        let long = s
            .cost(&json!({"a": "a".repeat(64 * 1_000)}), u64::MAX)
            .unwrap();
        assert_eq!(long - short, 1_000);
    }

    #[test]
    fn patterns_are_counted_and_capped() {
        let properties: serde_json::Map<String, Value> = (0..MAX_PATTERNS)
            .map(|i| (format!("p{i}"), json!({"type": "string", "pattern": "^a"})))
            .collect();
        let mut schema = json!({"type": "object", "properties": properties});
        assert!(Shape::of(&schema).is_ok());
        schema["patternProperties"] = json!({"^x": {}});
        let message = refused(schema);
        assert!(message.contains("the limit is 100"), "{message}");
        // A property named `pattern` is not a keyword.
        assert!(
            Shape::of(&json!({"type": "object", "properties": {"pattern": {"type": "string"}}}))
                .is_ok()
        );
    }

    #[test]
    fn unboundable_keywords_and_foreign_references_are_refused() {
        for (schema, needle) in [
            (
                json!({"type": "object", "unevaluatedProperties": false}),
                "`unevaluatedProperties`",
            ),
            (
                json!({"type": "object", "properties": {"a": {"unevaluatedItems": false}}}),
                "`/properties/a/unevaluatedItems`",
            ),
            (
                json!({"type": "object", "properties": {"a": {"$dynamicRef": "#x"}}}),
                "`$dynamicRef`",
            ),
            (
                json!({"type": "object", "properties": {"a": {"$id": "https://example.com/a"}}}),
                "`$id`",
            ),
            (
                json!({"type": "object", "properties": {"a": {"$ref": "https://example.com/a.json"}}}),
                "`/properties/a/$ref`",
            ),
            (
                json!({"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}}),
                "points at nothing",
            ),
        ] {
            let message = refused(schema);
            assert!(message.contains(needle), "{needle}: {message}");
            assert!(!message.contains("example.com"), "{message}");
        }
    }

    #[test]
    fn anchors_escaped_pointers_and_references_into_any_part_resolve() {
        let s = shape(json!({"type": "object",
        "$defs": {"a/b": {"$anchor": "ab", "type": "integer"}, "c d": {"type": "string"}},
        "x-extra": {"n": {"type": "null"}},
        "properties": {
            "p": {"$ref": "#ab"},
            "q": {"$ref": "#/$defs/a~1b"},
            "r": {"$ref": "#/$defs/c%20d"},
            "s": {"$ref": "#/x-extra/n"}
        }}));
        assert_eq!(
            s.cost(&json!({"p": 1, "q": 1, "r": "x", "s": null}), 100),
            Some(9)
        );
    }
}
