//! A serde deserializer over the located YAML tree.
//!
//! It resolves plain scalars the YAML 1.2 way, turns every type error into
//! "expected …, found …" at the line of the offending value with its key path,
//! and reports keys a struct does not know as warnings (with the nearest
//! known key) instead of failing.
//!
//! Why not serde-saphyr's own deserializer: its errors carry a line but not
//! the key path, it cannot turn unknown keys into warnings, and validation
//! done after deserialization (windows, references between sections) needs
//! the line of any key path. Reading serde-saphyr's parser events into a
//! located tree (`tree`) and deserializing from that gives all three.

use super::error::{ConfigError, Location, Warning};
use super::tree::{Key, Node, Seg, Value, is_null_text, path_string};
use serde::de::{self, DeserializeSeed, IntoDeserializer, Unexpected, Visitor};
use std::cell::RefCell;
use std::fmt;

/// Shared state of one deserialization: the warnings found so far.
#[derive(Default)]
pub(crate) struct Ctx {
    pub warnings: RefCell<Vec<Warning>>,
}

/// An error while deserializing; its location and path are filled in by the
/// innermost node that sees it.
#[derive(Debug)]
pub(crate) struct DeError {
    message: String,
    location: Option<Location>,
    path: Option<String>,
    /// Set by `missing_field`: the path then names the missing key.
    missing: Option<String>,
}

impl DeError {
    fn at(mut self, node: &Node, path: &[Seg]) -> DeError {
        if self.location.is_none() {
            self.location = Some(node.loc.clone());
            let mut p = path.to_vec();
            if let Some(field) = self.missing.take() {
                p.push(Seg::Key(field));
            }
            self.path = Some(path_string(&p));
        }
        self
    }

    pub(crate) fn into_config_error(self, root: &Node) -> ConfigError {
        ConfigError::Invalid {
            location: self.location.unwrap_or_else(|| root.loc.clone()),
            path: self.path.unwrap_or_else(|| "(top level)".into()),
            message: self.message,
        }
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError {
            message: msg.to_string(),
            location: None,
            path: None,
            missing: None,
        }
    }

    fn invalid_type(unexp: Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        Self::custom(format!(
            "expected {}, found {}",
            friendly_expected(&exp.to_string()),
            describe(&unexp)
        ))
    }

    fn invalid_value(unexp: Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        Self::invalid_type(unexp, exp)
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        let mut message = format!(
            "expected one of {}, found \"{variant}\"",
            expected.join(", ")
        );
        if let Some(near) = nearest(variant, expected.iter().copied()) {
            message.push_str(&format!(" (did you mean {near}?)"));
        }
        Self::custom(message)
    }

    fn missing_field(field: &'static str) -> Self {
        let mut e = Self::custom("this required key is missing");
        e.missing = Some(field.to_string());
        e
    }

    fn duplicate_field(field: &'static str) -> Self {
        Self::custom(format!("the key {field} is given twice"))
    }
}

fn friendly_expected(exp: &str) -> String {
    match exp {
        "u8" | "u16" | "u32" | "u64" | "u128" | "usize" => "a whole number".into(),
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "a whole number".into(),
        "f32" | "f64" => "a number".into(),
        "a map" => "a mapping".into(),
        "a sequence" => "a list".into(),
        s if s.starts_with("struct ") => "a mapping".into(),
        s if s.starts_with("a sequence") => "a list".into(),
        s if s.starts_with("enum ") => "one of the known names".into(),
        s => s.to_string(),
    }
}

fn describe(unexp: &Unexpected<'_>) -> String {
    match unexp {
        Unexpected::Str(s) => format!("\"{s}\""),
        Unexpected::Bool(b) => b.to_string(),
        Unexpected::Unsigned(n) => n.to_string(),
        Unexpected::Signed(n) => n.to_string(),
        Unexpected::Float(n) => n.to_string(),
        Unexpected::Unit | Unexpected::Option => "nothing".into(),
        Unexpected::Seq => "a list".into(),
        Unexpected::Map => "a mapping".into(),
        other => other.to_string(),
    }
}

/// The known name closest to `word`, if one is close enough to be a likely
/// misspelling (same letters ignoring case and `_`/`-`, or a small edit
/// distance).
pub(crate) fn nearest<'a>(
    word: &str,
    candidates: impl Iterator<Item = &'a str>,
) -> Option<&'a str> {
    let squash = |s: &str| {
        s.chars()
            .filter(|c| *c != '_' && *c != '-')
            .flat_map(char::to_lowercase)
            .collect::<String>()
    };
    let target = squash(word);
    let mut best: Option<(&str, usize)> = None;
    for candidate in candidates {
        let squashed = squash(candidate);
        let distance = if squashed == target {
            0
        } else {
            strsim::damerau_levenshtein(&target, &squashed)
        };
        if best.is_none_or(|(_, d)| distance < d) {
            best = Some((candidate, distance));
        }
    }
    let (name, distance) = best?;
    let limit = (target.chars().count() / 3).max(1);
    (distance <= limit).then_some(name)
}

/// Shows a scalar as it was written, for messages.
fn show(node: &Node) -> String {
    match &node.value {
        Value::Scalar { text, plain } if *plain && is_null_text(text) => "nothing".into(),
        Value::Scalar { text, .. } => format!("\"{text}\""),
        Value::Seq(_) => "a list".into(),
        Value::Map(_) => "a mapping".into(),
    }
}

enum Resolved<'a> {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(&'a str),
}

fn resolve_int(text: &str) -> Option<i128> {
    let t = text.trim();
    let (neg, digits) = match t.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let value = if let Some(hex) = digits.strip_prefix("0x") {
        i128::from_str_radix(hex, 16).ok()?
    } else if let Some(oct) = digits.strip_prefix("0o") {
        i128::from_str_radix(oct, 8).ok()?
    } else if !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit()) {
        digits.parse().ok()?
    } else {
        return None;
    };
    Some(if neg { -value } else { value })
}

fn resolve_float(text: &str) -> Option<f64> {
    let t = text.trim();
    match t {
        ".inf" | ".Inf" | ".INF" | "+.inf" => return Some(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => return Some(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Some(f64::NAN),
        _ => {}
    }
    let looks_numeric = t
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E'))
        && t.chars().any(|c| c.is_ascii_digit());
    if looks_numeric { t.parse().ok() } else { None }
}

fn resolve(text: &str, plain: bool) -> Resolved<'_> {
    if !plain {
        return Resolved::Str(text);
    }
    if is_null_text(text) {
        return Resolved::Null;
    }
    match text {
        "true" | "True" | "TRUE" => return Resolved::Bool(true),
        "false" | "False" | "FALSE" => return Resolved::Bool(false),
        _ => {}
    }
    if let Some(n) = resolve_int(text) {
        return Resolved::Int(n);
    }
    if let Some(f) = resolve_float(text) {
        return Resolved::Float(f);
    }
    Resolved::Str(text)
}

/// Deserializes one node at one key path.
pub(crate) struct De<'a> {
    pub node: &'a Node,
    pub path: Vec<Seg>,
    pub ctx: &'a Ctx,
}

impl<'a> De<'a> {
    fn fail(&self, message: String) -> DeError {
        de::Error::custom(message)
    }

    fn wrong(&self, expected: &str) -> DeError {
        self.fail(format!("expected {expected}, found {}", show(self.node)))
    }

    fn scalar(&self) -> Option<(&'a str, bool)> {
        match &self.node.value {
            Value::Scalar { text, plain } => Some((text.as_str(), *plain)),
            _ => None,
        }
    }

    fn int(&self, min: i128, max: i128) -> Result<i128, DeError> {
        let expected = if min < 0 || max >= u32::MAX as i128 {
            "a whole number".to_string()
        } else {
            format!("a whole number from 0 to {max}")
        };
        match self.scalar() {
            Some((text, _)) => match resolve_int(text) {
                Some(n) if n >= min && n <= max => Ok(n),
                Some(n) => Err(self.fail(format!("expected {expected}, found {n}"))),
                None => Err(self.wrong(&expected)),
            },
            None => Err(self.wrong(&expected)),
        }
    }

    fn map_access(&self, fields: Option<&'static [&'static str]>) -> MapAccess<'a> {
        let entries: &'a [(Key, Node)] = match &self.node.value {
            Value::Map(entries) => entries,
            _ => &[],
        };
        MapAccess {
            entries: entries.iter(),
            value: None,
            fields,
            path: self.path.clone(),
            ctx: self.ctx,
        }
    }

    fn child(&self, node: &'a Node, seg: Seg) -> De<'a> {
        let mut path = self.path.clone();
        path.push(seg);
        De {
            node,
            path,
            ctx: self.ctx,
        }
    }
}

macro_rules! int_method {
    ($method:ident, $visit:ident, $ty:ty) => {
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
            let n = self
                .int(<$ty>::MIN as i128, <$ty>::MAX as i128)
                .map_err(|e| e.at(self.node, &self.path))?;
            visitor
                .$visit::<DeError>(n as $ty)
                .map_err(|e| e.at(self.node, &self.path))
        }
    };
}

impl<'de, 'a> de::Deserializer<'de> for De<'a> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let result = match &self.node.value {
            Value::Scalar { text, plain } => match resolve(text, *plain) {
                Resolved::Null => visitor.visit_unit::<DeError>(),
                Resolved::Bool(b) => visitor.visit_bool::<DeError>(b),
                Resolved::Int(n) if n >= 0 && n <= u64::MAX as i128 => {
                    visitor.visit_u64::<DeError>(n as u64)
                }
                Resolved::Int(n) if n >= i64::MIN as i128 && n < 0 => {
                    visitor.visit_i64::<DeError>(n as i64)
                }
                Resolved::Int(_) => visitor.visit_str::<DeError>(text),
                Resolved::Float(f) => visitor.visit_f64::<DeError>(f),
                Resolved::Str(s) => visitor.visit_str::<DeError>(s),
            },
            Value::Seq(items) => visitor.visit_seq(SeqAccess {
                items: items.iter().enumerate(),
                path: self.path.clone(),
                ctx: self.ctx,
            }),
            Value::Map(_) => visitor.visit_map(self.map_access(None)),
        };
        result.map_err(|e| e.at(self.node, &self.path))
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let value = match self.scalar() {
            Some((t, _)) if t.eq_ignore_ascii_case("true") => true,
            Some((t, _)) if t.eq_ignore_ascii_case("false") => false,
            _ => return Err(self.wrong("true or false").at(self.node, &self.path)),
        };
        visitor
            .visit_bool::<DeError>(value)
            .map_err(|e| e.at(self.node, &self.path))
    }

    int_method!(deserialize_i8, visit_i8, i8);
    int_method!(deserialize_i16, visit_i16, i16);
    int_method!(deserialize_i32, visit_i32, i32);
    int_method!(deserialize_i64, visit_i64, i64);
    int_method!(deserialize_u8, visit_u8, u8);
    int_method!(deserialize_u16, visit_u16, u16);
    int_method!(deserialize_u32, visit_u32, u32);
    int_method!(deserialize_u64, visit_u64, u64);

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_f64(visitor)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let value = match self.scalar() {
            Some((t, _)) => resolve_int(t)
                .map(|n| n as f64)
                .or_else(|| resolve_float(t)),
            None => None,
        };
        match value {
            Some(f) => visitor.visit_f64::<DeError>(f),
            None => Err(self.wrong("a number")),
        }
        .map_err(|e| e.at(self.node, &self.path))
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Scalar { text, plain } if !(*plain && is_null_text(text)) => {
                visitor.visit_str::<DeError>(text)
            }
            _ => Err(self.wrong("a string")),
        }
        .map_err(|e| e.at(self.node, &self.path))
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        if self.node.is_null() {
            visitor.visit_none::<DeError>()
        } else {
            let (node, path) = (self.node, self.path.clone());
            visitor.visit_some(self).map_err(|e| e.at(node, &path))
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        if self.node.is_null() {
            visitor.visit_unit::<DeError>()
        } else {
            Err(self.wrong("nothing"))
        }
        .map_err(|e| e.at(self.node, &self.path))
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let (node, path) = (self.node, self.path.clone());
        visitor
            .visit_newtype_struct(self)
            .map_err(|e| e.at(node, &path))
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Seq(items) => visitor.visit_seq(SeqAccess {
                items: items.iter().enumerate(),
                path: self.path.clone(),
                ctx: self.ctx,
            }),
            _ if self.node.is_null() => visitor.visit_seq(SeqAccess {
                items: [].iter().enumerate(),
                path: self.path.clone(),
                ctx: self.ctx,
            }),
            _ => Err(self.wrong("a list")),
        }
        .map_err(|e| e.at(self.node, &self.path))
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Map(_) => visitor.visit_map(self.map_access(None)),
            _ if self.node.is_null() => visitor.visit_map(self.map_access(None)),
            _ => Err(self.wrong("a mapping")),
        }
        .map_err(|e| e.at(self.node, &self.path))
    }

    /// A mapping is read with unknown keys reported as warnings. A scalar is
    /// handed to the visitor as it is, so that types written either as a
    /// short string or as a mapping can accept both.
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Map(_) => visitor.visit_map(self.map_access(Some(fields))),
            _ if self.node.is_null() => visitor.visit_map(self.map_access(Some(fields))),
            Value::Scalar { text, .. } => visitor.visit_str::<DeError>(text),
            Value::Seq(_) => Err(self.wrong("a mapping")),
        }
        .map_err(|e| e.at(self.node, &self.path))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let result = match &self.node.value {
            Value::Scalar { text, .. } if !self.node.is_null() => visitor.visit_enum(
                IntoDeserializer::<DeError>::into_deserializer(text.as_str()),
            ),
            Value::Map(entries) if entries.len() == 1 => {
                let (key, value) = &entries[0];
                visitor.visit_enum(EnumAccess {
                    key,
                    value: self.child(value, Seg::Key(key.name.clone())),
                })
            }
            _ => Err(self.wrong("a name, or a mapping with one key")),
        };
        result.map_err(|e| e.at(self.node, &self.path))
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit::<DeError>()
    }
}

struct SeqAccess<'a> {
    items: std::iter::Enumerate<std::slice::Iter<'a, Node>>,
    path: Vec<Seg>,
    ctx: &'a Ctx,
}

impl<'de, 'a> de::SeqAccess<'de> for SeqAccess<'a> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        let Some((i, node)) = self.items.next() else {
            return Ok(None);
        };
        let mut path = self.path.clone();
        path.push(Seg::Index(i));
        let de = De {
            node,
            path: path.clone(),
            ctx: self.ctx,
        };
        seed.deserialize(de)
            .map(Some)
            .map_err(|e| e.at(node, &path))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

struct MapAccess<'a> {
    entries: std::slice::Iter<'a, (Key, Node)>,
    value: Option<(&'a Key, &'a Node)>,
    fields: Option<&'static [&'static str]>,
    path: Vec<Seg>,
    ctx: &'a Ctx,
}

impl<'de, 'a> de::MapAccess<'de> for MapAccess<'a> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        for (key, node) in self.entries.by_ref() {
            if let Some(fields) = self.fields
                && !fields.contains(&key.name.as_str())
            {
                let mut path = self.path.clone();
                path.push(Seg::Key(key.name.clone()));
                let mut message = format!("unknown key \"{}\" is ignored", key.name);
                if let Some(near) = nearest(&key.name, fields.iter().copied()) {
                    message.push_str(&format!(" (did you mean {near}?)"));
                } else if !fields.is_empty() {
                    message.push_str(&format!(" (known keys: {})", fields.join(", ")));
                }
                self.ctx.warnings.borrow_mut().push(Warning {
                    location: key.loc.clone(),
                    path: path_string(&path),
                    message,
                });
                continue;
            }
            self.value = Some((key, node));
            let key_node = Node {
                value: Value::Scalar {
                    text: key.name.clone(),
                    plain: false,
                },
                loc: key.loc.clone(),
            };
            let mut path = self.path.clone();
            path.push(Seg::Key(key.name.clone()));
            let de = De {
                node: &key_node,
                path: path.clone(),
                ctx: self.ctx,
            };
            return seed
                .deserialize(de)
                .map(Some)
                .map_err(|e| e.at(&key_node, &path));
        }
        Ok(None)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let Some((key, node)) = self.value.take() else {
            return Err(de::Error::custom("value requested before key"));
        };
        let mut path = self.path.clone();
        path.push(Seg::Key(key.name.clone()));
        let de = De {
            node,
            path: path.clone(),
            ctx: self.ctx,
        };
        seed.deserialize(de).map_err(|e| e.at(node, &path))
    }
}

struct EnumAccess<'a> {
    key: &'a Key,
    value: De<'a>,
}

impl<'de, 'a> de::EnumAccess<'de> for EnumAccess<'a> {
    type Error = DeError;
    type Variant = De<'a>;

    fn variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<(S::Value, De<'a>), DeError> {
        let name: de::value::StrDeserializer<'_, DeError> =
            self.key.name.as_str().into_deserializer();
        let variant = seed.deserialize(name).map_err(|mut e| {
            if e.location.is_none() {
                e.location = Some(self.key.loc.clone());
                e.path = Some(path_string(&self.value.path));
            }
            e
        })?;
        Ok((variant, self.value))
    }
}

impl<'de, 'a> de::VariantAccess<'de> for De<'a> {
    type Error = DeError;

    fn unit_variant(self) -> Result<(), DeError> {
        if self.node.is_null() {
            Ok(())
        } else {
            Err(self.wrong("nothing").at(self.node, &self.path))
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, DeError> {
        seed.deserialize(self)
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, DeError> {
        de::Deserializer::deserialize_seq(self, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        de::Deserializer::deserialize_struct(self, "", fields, visitor)
    }
}
