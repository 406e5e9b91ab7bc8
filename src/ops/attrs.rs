//! Op attributes as a generic typed list: how ops are (de)serialised, so a new op never
//! changes the model schema.

use crate::error::{Error, Result};

/// One attribute value.
#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue {
    /// A signed integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// A string (enum names such as `relu6`).
    Str(String),
    /// A list of integers (strides, pads, axes).
    Ints(Vec<i64>),
    /// A list of floats.
    Floats(Vec<f64>),
}

/// An op's attributes, in a fixed order, with typed getters that name the op and node.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Attrs {
    op: &'static str,
    node: String,
    items: Vec<(String, AttrValue)>,
}

impl Attrs {
    /// Attributes of `op` (for error messages).
    pub fn new(op: &'static str) -> Self {
        Attrs {
            op,
            node: String::new(),
            items: Vec::new(),
        }
    }

    /// Attributes read from a file, for op `op` at node `node`.
    pub fn from_items(op: &'static str, node: &str, items: Vec<(String, AttrValue)>) -> Self {
        Attrs {
            op,
            node: node.to_string(),
            items,
        }
    }

    /// Adds an attribute (builder style).
    pub fn with(mut self, name: &str, v: AttrValue) -> Self {
        self.items.push((name.to_string(), v));
        self
    }

    /// The attributes in order.
    pub fn items(&self) -> &[(String, AttrValue)] {
        &self.items
    }

    fn get(&self, name: &str) -> Result<&AttrValue> {
        self.items
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
            .ok_or_else(|| self.err(name, "missing"))
    }

    /// An [`Error::InvalidOpAttr`] about attribute `attr`.
    pub fn err(&self, attr: &str, reason: impl Into<String>) -> Error {
        Error::InvalidOpAttr {
            op: self.op.to_string(),
            node: self.node.clone(),
            attr: attr.to_string(),
            reason: reason.into(),
        }
    }

    /// An integer attribute.
    pub fn int(&self, name: &str) -> Result<i64> {
        match self.get(name)? {
            AttrValue::Int(v) => Ok(*v),
            other => Err(self.err(name, format!("expected an integer, found {other:?}"))),
        }
    }

    /// A non-negative integer attribute as usize, at most `max`.
    pub fn usize(&self, name: &str, max: usize) -> Result<usize> {
        let v = self.int(name)?;
        usize::try_from(v)
            .ok()
            .filter(|&u| u <= max)
            .ok_or_else(|| self.err(name, format!("{v} is outside 0..={max}")))
    }

    /// A float attribute (integers are accepted).
    pub fn float(&self, name: &str) -> Result<f64> {
        match self.get(name)? {
            AttrValue::Float(v) => Ok(*v),
            AttrValue::Int(v) => Ok(*v as f64),
            other => Err(self.err(name, format!("expected a float, found {other:?}"))),
        }
    }

    /// A boolean attribute.
    pub fn bool(&self, name: &str) -> Result<bool> {
        match self.get(name)? {
            AttrValue::Bool(v) => Ok(*v),
            other => Err(self.err(name, format!("expected a bool, found {other:?}"))),
        }
    }

    /// A string attribute.
    pub fn str(&self, name: &str) -> Result<&str> {
        match self.get(name)? {
            AttrValue::Str(v) => Ok(v),
            other => Err(self.err(name, format!("expected a string, found {other:?}"))),
        }
    }

    /// An integer-list attribute.
    pub fn ints(&self, name: &str) -> Result<&[i64]> {
        match self.get(name)? {
            AttrValue::Ints(v) => Ok(v),
            other => Err(self.err(
                name,
                format!("expected a list of integers, found {other:?}"),
            )),
        }
    }

    /// An integer-list attribute of exactly `n` values in `0..=max`, as usize.
    pub fn usizes<const N: usize>(&self, name: &str, max: usize) -> Result<[usize; N]> {
        let v = self.ints(name)?;
        if v.len() != N {
            return Err(self.err(name, format!("expected {N} values, found {}", v.len())));
        }
        let mut out = [0usize; N];
        for (o, &x) in out.iter_mut().zip(v) {
            *o = usize::try_from(x)
                .ok()
                .filter(|&u| u <= max)
                .ok_or_else(|| self.err(name, format!("{x} is outside 0..={max}")))?;
        }
        Ok(out)
    }
}
