//! A YAML document as a tree of nodes that remember where they were written.
//!
//! The typed configuration is deserialized from this tree (see `de`), so every
//! type error knows its line; validation after deserialization looks a key
//! path up here to find the line of the value it refuses. `${VAR}`
//! interpolation and `CUTOVER_…` overrides are applied to the tree before it is
//! deserialized.

use super::error::{ConfigError, Location};
use serde_saphyr::granit_parser::{Event, Parser, ScalarStyle, Span};
use std::collections::HashMap;
use std::fmt;

/// One step of a key path: a mapping key or a list index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seg {
    Key(String),
    Index(usize),
}

/// Renders a key path as `environments.production.deployment_window.start_time`
/// or `alerting.rules[1].severity`.
pub(crate) struct PathDisplay<'a>(pub &'a [Seg]);

impl fmt::Display for PathDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("(top level)");
        }
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if i == 0 => f.write_str(k)?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

pub(crate) fn path_string(path: &[Seg]) -> String {
    PathDisplay(path).to_string()
}

/// Parses `a.b[2].c` back into segments (for validation code, which names
/// paths as text). Keys containing dots cannot be named this way; lookups
/// then fall back to the nearest ancestor, which still has a line.
pub(crate) fn parse_path(text: &str) -> Vec<Seg> {
    let mut out = Vec::new();
    for part in text.split('.') {
        let mut rest = part;
        if let Some(open) = rest.find('[') {
            let (key, idx) = rest.split_at(open);
            if !key.is_empty() {
                out.push(Seg::Key(key.to_string()));
            }
            rest = idx;
            for piece in rest.split('[').filter(|p| !p.is_empty()) {
                let n = piece.trim_end_matches(']');
                match n.parse() {
                    Ok(n) => out.push(Seg::Index(n)),
                    Err(_) => out.push(Seg::Key(piece.to_string())),
                }
            }
        } else if !rest.is_empty() {
            out.push(Seg::Key(rest.to_string()));
        }
    }
    out
}

#[derive(Debug, Clone)]
pub(crate) struct Key {
    pub name: String,
    pub loc: Location,
}

#[derive(Debug, Clone)]
pub(crate) enum Value {
    /// A scalar; `plain` is false when it was quoted or a block scalar, which
    /// makes it a string whatever it looks like.
    Scalar {
        text: String,
        plain: bool,
    },
    Seq(Vec<Node>),
    Map(Vec<(Key, Node)>),
}

#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub value: Value,
    pub loc: Location,
}

impl Node {
    /// True for an empty value, `~` or `null` (unquoted).
    pub(crate) fn is_null(&self) -> bool {
        matches!(&self.value, Value::Scalar { text, plain: true } if is_null_text(text))
    }

    /// The value at `path`, if it is there.
    pub(crate) fn find(&self, path: &[Seg]) -> Option<&Node> {
        let mut node = self;
        for seg in path {
            node = match (seg, &node.value) {
                (Seg::Key(k), Value::Map(entries)) => {
                    &entries.iter().find(|(key, _)| &key.name == k)?.1
                }
                (Seg::Index(i), Value::Seq(items)) => items.get(*i)?,
                _ => return None,
            };
        }
        Some(node)
    }

    /// The location of the value at `path`, or of its nearest ancestor that
    /// exists (a missing key is reported where its mapping is).
    pub(crate) fn locate(&self, path: &[Seg]) -> Location {
        for len in (0..=path.len()).rev() {
            if let Some(node) = self.find(&path[..len]) {
                return node.loc.clone();
            }
        }
        self.loc.clone()
    }

    /// The top-level keys, when the document is a mapping.
    pub(crate) fn top_keys(&self) -> Vec<&str> {
        match &self.value {
            Value::Map(entries) => entries.iter().map(|(k, _)| k.name.as_str()).collect(),
            _ => Vec::new(),
        }
    }
}

pub(crate) fn is_null_text(text: &str) -> bool {
    matches!(text, "" | "~" | "null" | "Null" | "NULL")
}

fn location(file: &str, span: &Span) -> Location {
    Location::File {
        file: file.to_string(),
        line: span.start.line(),
        column: span.start.col() + 1,
    }
}

/// Configuration is never this deep; the limit keeps recursion bounded.
const MAX_DEPTH: usize = 64;

enum Frame {
    Seq {
        items: Vec<Node>,
        loc: Location,
        anchor: usize,
    },
    Map {
        entries: Vec<(Key, Node)>,
        key: Option<Key>,
        loc: Location,
        anchor: usize,
    },
}

/// Parses the first YAML document of `text`. An empty document is an empty
/// mapping. Aliases are resolved (copied); `<<` merge keys are applied.
pub(crate) fn parse(text: &str, file: &str) -> Result<Node, ConfigError> {
    let mut parser = Parser::new_from_str(text);
    let mut stack: Vec<Frame> = Vec::new();
    let mut anchors: HashMap<usize, Node> = HashMap::new();
    let mut root: Option<Node> = None;
    let start = Location::File {
        file: file.to_string(),
        line: 1,
        column: 1,
    };
    let syntax = |message: String, loc: Location| ConfigError::Syntax {
        location: loc,
        message,
    };
    while let Some(next) = parser.next_event() {
        let (event, span) = next.map_err(|e| {
            let m = e.marker();
            syntax(
                e.info(),
                Location::File {
                    file: file.to_string(),
                    line: m.line(),
                    column: m.col() + 1,
                },
            )
        })?;
        let loc = location(file, &span);
        if stack.len() > MAX_DEPTH {
            return Err(syntax(
                format!("nesting deeper than {MAX_DEPTH} levels"),
                loc,
            ));
        }
        let completed: Option<(Node, usize)> = match event {
            Event::DocumentStart(..) if root.is_some() => break,
            Event::DocumentEnd if stack.is_empty() && root.is_some() => break,
            Event::Scalar(text, style, anchor, tag) => {
                let forced_string = tag
                    .as_ref()
                    .is_some_and(|t| t.suffix() == "str" || t.suffix().ends_with(":str"));
                let plain = matches!(style, ScalarStyle::Plain) && !forced_string;
                Some((
                    Node {
                        value: Value::Scalar {
                            text: text.into_owned(),
                            plain,
                        },
                        loc,
                    },
                    anchor,
                ))
            }
            Event::Alias(id) => match anchors.get(&id) {
                Some(node) => Some((node.clone(), 0)),
                None => return Err(syntax("alias to an unknown anchor".into(), loc)),
            },
            Event::SequenceStart(_, anchor, _) => {
                stack.push(Frame::Seq {
                    items: Vec::new(),
                    loc,
                    anchor,
                });
                None
            }
            Event::MappingStart(_, anchor, _) => {
                stack.push(Frame::Map {
                    entries: Vec::new(),
                    key: None,
                    loc,
                    anchor,
                });
                None
            }
            Event::SequenceEnd => match stack.pop() {
                Some(Frame::Seq { items, loc, anchor }) => Some((
                    Node {
                        value: Value::Seq(items),
                        loc,
                    },
                    anchor,
                )),
                _ => return Err(syntax("unbalanced sequence".into(), loc)),
            },
            Event::MappingEnd => match stack.pop() {
                Some(Frame::Map {
                    entries,
                    loc,
                    anchor,
                    ..
                }) => Some((
                    Node {
                        value: Value::Map(merge_keys(entries)?),
                        loc,
                    },
                    anchor,
                )),
                _ => return Err(syntax("unbalanced mapping".into(), loc)),
            },
            _ => None,
        };
        let Some((node, anchor)) = completed else {
            continue;
        };
        if anchor != 0 {
            anchors.insert(anchor, node.clone());
        }
        match stack.last_mut() {
            None => root = Some(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map { entries, key, .. }) => match key.take() {
                None => match node.value {
                    Value::Scalar { text, .. } => {
                        if text != "<<" && entries.iter().any(|(k, _)| k.name == text) {
                            return Err(ConfigError::Invalid {
                                location: node.loc,
                                path: text.clone(),
                                message: format!("duplicate key \"{text}\""),
                            });
                        }
                        *key = Some(Key {
                            name: text,
                            loc: node.loc,
                        });
                    }
                    _ => {
                        return Err(syntax(
                            "a key must be a plain value, not a list or mapping".into(),
                            node.loc,
                        ));
                    }
                },
                Some(k) => entries.push((k, node)),
            },
        }
    }
    Ok(match root {
        Some(node) if node.is_null() => Node {
            value: Value::Map(Vec::new()),
            loc: node.loc,
        },
        Some(node) => node,
        None => Node {
            value: Value::Map(Vec::new()),
            loc: start,
        },
    })
}

/// Applies YAML merge keys (`<<: *defaults`): keys written in the mapping win.
fn merge_keys(entries: Vec<(Key, Node)>) -> Result<Vec<(Key, Node)>, ConfigError> {
    if !entries.iter().any(|(k, _)| k.name == "<<") {
        return Ok(entries);
    }
    let mut own = Vec::new();
    let mut merged = Vec::new();
    for (key, node) in entries {
        if key.name != "<<" {
            own.push((key, node));
            continue;
        }
        let sources = match node.value {
            Value::Map(m) => vec![m],
            Value::Seq(items) => items
                .into_iter()
                .filter_map(|n| match n.value {
                    Value::Map(m) => Some(m),
                    _ => None,
                })
                .collect(),
            _ => {
                return Err(ConfigError::Syntax {
                    location: key.loc,
                    message: "a merge key (<<) needs a mapping or a list of mappings".into(),
                });
            }
        };
        for source in sources {
            merged.extend(source);
        }
    }
    for (key, node) in merged {
        if !own.iter().any(|(k, _)| k.name == key.name) {
            own.push((key, node));
        }
    }
    Ok(own)
}

/// Replaces `${VAR}` and `${VAR:-default}` in every scalar value; `$$` is a
/// literal `$`. The default is used when the variable is unset or empty.
pub(crate) fn interpolate(
    node: &mut Node,
    path: &mut Vec<Seg>,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    match &mut node.value {
        Value::Scalar { text, plain } => {
            if text.contains('$') {
                *text = substitute(text, lookup).map_err(|problem| match problem {
                    Problem::Missing(variable) => ConfigError::MissingVariable {
                        location: node.loc.clone(),
                        path: path_string(path),
                        variable,
                    },
                    Problem::Syntax(message) => ConfigError::Invalid {
                        location: node.loc.clone(),
                        path: path_string(path),
                        message,
                    },
                })?;
                // A variable that holds `~` or `null` means that text, not
                // "no value": only an empty result leaves the key unset.
                if !text.is_empty() && is_null_text(text) {
                    *plain = false;
                }
            }
        }
        Value::Seq(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                path.push(Seg::Index(i));
                interpolate(item, path, lookup)?;
                path.pop();
            }
        }
        Value::Map(entries) => {
            for (key, value) in entries.iter_mut() {
                path.push(Seg::Key(key.name.clone()));
                interpolate(value, path, lookup)?;
                path.pop();
            }
        }
    }
    Ok(())
}

enum Problem {
    Missing(String),
    Syntax(String),
}

fn substitute(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, Problem> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let Some(end) = body.find('}') else {
                return Err(Problem::Syntax(format!(
                    "unterminated ${{…}} in \"{text}\" (write $$ for a literal $)"
                )));
            };
            let inner = &body[..end];
            let (name, default) = match inner.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (inner, None),
            };
            let valid = !name.is_empty()
                && !name.starts_with(|c: char| c.is_ascii_digit())
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(Problem::Syntax(format!(
                    "\"${{{inner}}}\" is not a variable reference: expected ${{NAME}} or ${{NAME:-default}}"
                )));
            }
            match (lookup(name).filter(|v| !v.is_empty()), default) {
                (Some(value), _) => out.push_str(&value),
                (None, Some(default)) => out.push_str(default),
                (None, None) => return Err(Problem::Missing(name.to_string())),
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Applies `CUTOVER_…` overrides (see the module documentation of `config`
/// for the mapping). Variables that name no known section are ignored, so
/// unrelated settings such as `CUTOVER_LOG` or `CUTOVER_API_KEY` pass by.
pub(crate) fn apply_overrides(
    root: &mut Node,
    overrides: &[(String, String)],
    struct_sections: &[&str],
    map_sections: &[&str],
) -> Result<(), ConfigError> {
    for (variable, value) in overrides {
        let Some(path) = override_path(variable, struct_sections, map_sections) else {
            continue;
        };
        let loc = Location::Override {
            variable: variable.clone(),
        };
        let trimmed = value.trim_start();
        let mut node = if trimmed.starts_with('[') || trimmed.starts_with('{') {
            let mut parsed = parse(value, variable)?;
            relocate(&mut parsed, &loc);
            parsed
        } else {
            Node {
                value: Value::Scalar {
                    text: value.clone(),
                    plain: true,
                },
                loc: loc.clone(),
            }
        };
        node.loc = loc.clone();
        set_path(root, &path, node, &loc);
    }
    Ok(())
}

/// The key path a `CUTOVER_…` variable names, or `None` when it names none.
pub(crate) fn override_path(
    variable: &str,
    struct_sections: &[&str],
    map_sections: &[&str],
) -> Option<Vec<String>> {
    let rest = variable.strip_prefix("CUTOVER_")?.to_ascii_lowercase();
    if rest.contains("__") {
        let parts: Vec<String> = rest.split("__").map(str::to_string).collect();
        if parts.iter().any(String::is_empty) || parts.len() < 2 {
            return None;
        }
        let first = parts[0].as_str();
        if struct_sections.contains(&first) || map_sections.contains(&first) {
            return Some(parts);
        }
        return None;
    }
    let section = struct_sections
        .iter()
        .filter(|s| {
            rest.len() > s.len() + 1 && rest.starts_with(*s) && rest[s.len()..].starts_with('_')
        })
        .max_by_key(|s| s.len())?;
    Some(vec![
        section.to_string(),
        rest[section.len() + 1..].to_string(),
    ])
}

fn relocate(node: &mut Node, loc: &Location) {
    node.loc = loc.clone();
    match &mut node.value {
        Value::Scalar { .. } => {}
        Value::Seq(items) => items.iter_mut().for_each(|n| relocate(n, loc)),
        Value::Map(entries) => entries.iter_mut().for_each(|(k, n)| {
            k.loc = loc.clone();
            relocate(n, loc);
        }),
    }
}

fn set_path(node: &mut Node, path: &[String], value: Node, loc: &Location) {
    let Some((first, rest)) = path.split_first() else {
        *node = value;
        return;
    };
    if !matches!(node.value, Value::Map(_)) {
        *node = Node {
            value: Value::Map(Vec::new()),
            loc: loc.clone(),
        };
    }
    let Value::Map(entries) = &mut node.value else {
        return;
    };
    let index = match entries.iter().position(|(k, _)| &k.name == first) {
        Some(i) => i,
        None => {
            entries.push((
                Key {
                    name: first.clone(),
                    loc: loc.clone(),
                },
                Node {
                    value: Value::Map(Vec::new()),
                    loc: loc.clone(),
                },
            ));
            entries.len() - 1
        }
    };
    set_path(&mut entries[index].1, rest, value, loc);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitution_rules() {
        let env = |name: &str| match name {
            "HOST" => Some("db.internal".to_string()),
            "EMPTY" => Some(String::new()),
            _ => None,
        };
        assert_eq!(
            substitute("pg://${HOST}/x", &env).ok(),
            Some("pg://db.internal/x".into())
        );
        assert_eq!(substitute("${NOPE:-5432}", &env).ok(), Some("5432".into()));
        assert_eq!(substitute("${EMPTY:-d}", &env).ok(), Some("d".into()));
        assert_eq!(
            substitute("cost $$5 and $x", &env).ok(),
            Some("cost $5 and $x".into())
        );
        assert!(matches!(substitute("${NOPE}", &env), Err(Problem::Missing(n)) if n == "NOPE"));
        assert!(matches!(
            substitute("${OPEN", &env),
            Err(Problem::Syntax(_))
        ));
        assert!(matches!(substitute("${1X}", &env), Err(Problem::Syntax(_))));
    }

    #[test]
    fn override_names_map_to_paths() {
        let structs = ["server", "database", "security", "rollback_criteria"];
        let maps = ["environments"];
        let p = |v: &str| override_path(v, &structs, &maps);
        assert_eq!(
            p("CUTOVER_DATABASE_CONNECTION_STRING"),
            Some(vec!["database".into(), "connection_string".into()])
        );
        assert_eq!(
            p("CUTOVER_SERVER_LISTEN"),
            Some(vec!["server".into(), "listen".into()])
        );
        assert_eq!(
            p("CUTOVER_ROLLBACK_CRITERIA_MAX_FAILURE_RATE"),
            Some(vec!["rollback_criteria".into(), "max_failure_rate".into()])
        );
        assert_eq!(
            p("CUTOVER_ENVIRONMENTS__PRODUCTION__APPROVAL_REQUIRED"),
            Some(vec![
                "environments".into(),
                "production".into(),
                "approval_required".into()
            ])
        );
        assert_eq!(p("CUTOVER_LOG"), None);
        assert_eq!(p("CUTOVER_SERVER"), None);
        assert_eq!(p("CUTOVER_API_KEY"), None);
        assert_eq!(p("CUTOVER_ENVIRONMENTS_PRODUCTION"), None);
    }

    #[test]
    fn paths_round_trip() {
        let p = parse_path("alerting.rules[1].severity");
        assert_eq!(path_string(&p), "alerting.rules[1].severity");
    }
}
