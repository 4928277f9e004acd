//! Path expressions (Aerospike 8.1): one op, `[0xfe, [ctx type, ctx value, …], flags]`
//! (and a fourth element, an expression, to modify), walks a list or map bin along a path
//! of contexts, each of which may match many children: by index, rank, key or value as a
//! nested op's context does, by a list of keys (0x2a), or by a filter expression on each
//! child (0x04, `true` for all of them), which reads the child through loop variables
//! (its key, value or index). A context of type 0x204 adds a filter to the one before it.
//!
//! Flags (low nibble): 0 returns the bin pruned to the matching paths, 1 the leaves' values
//! as a list, 2 their map keys, 3 keys and values interleaved; 4 replaces each leaf by the
//! modify expression's value, or removes it where the expression is `remove_result`. 0x10
//! (NO_FAIL) makes a filter or modify expression that cannot be evaluated (a loop
//! variable of another type) false or a no-op instead of an error.
//!
//! As in the real server: a child that is not a list or map above the last level is
//! skipped (kept whole in a pruned tree); a map context on a list, or a list context on a
//! map, is a PARAMETER error; keys asked of a list leaf are INCOMPATIBLE_TYPE; a filter
//! that is unknown is PARAMETER, a modify expression that is unknown UNKNOWN (1). An
//! ordered list whose elements changed is sorted again; maps keep their key order.
//!
//! Pure: expressions are evaluated by the caller's [`Evaluator`] (`filter`, which knows
//! the record). Cost: a walk of the parts of the bin the path reaches, plus the
//! expressions; the bin is decoded and, when modified, encoded once.

use super::cdt::CdtError;
use super::msgpack::{canonical_cmp, Value};
use std::cmp::Ordering;

type Result<T> = std::result::Result<T, CdtError>;

/// The op code that marks a path op.
pub const PATH_MARKER: i64 = 0xfe;
/// Contexts a path may have (as the real server bounds them).
const LEVELS_MAX: usize = 64;

const KIND_MASK: u64 = 0xf0;
const KIND_LIST: u64 = 0x10;
const KIND_MAP: u64 = 0x20;
const BY_INDEX: u64 = 0;
const BY_RANK: u64 = 1;
const BY_KEY: u64 = 2;
const BY_VALUE: u64 = 3;
const BY_FILTER: u64 = 4;
const BY_KEY_LIST: u64 = 0x0a;
const AND_FILTER: u64 = 0x200 | BY_FILTER;
const NO_FAIL: i64 = 0x10;

/// What a path op returns or does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Tree,
    Values,
    Keys,
    KeyValues,
    Apply,
}

/// How one context picks children.
#[derive(Debug)]
enum Selector<'p> {
    Index(i64),
    Rank(i64),
    Key(&'p Value),
    Value(&'p Value),
    KeyList(&'p Value),
    /// None: every child (the context's expression is `true`).
    Filter(Option<&'p Value>),
}

#[derive(Debug)]
struct Level<'p> {
    /// The context type's kind bits: 0 (either), list or map.
    kind: u64,
    selector: Selector<'p>,
    and_filter: Option<&'p Value>,
}

/// A decoded path op.
#[derive(Debug)]
pub struct Path<'p> {
    levels: Vec<Level<'p>>,
    mode: Mode,
    no_fail: bool,
    modify: Option<&'p Value>,
}

/// The child an expression's loop variables name.
pub struct LoopVar<'a> {
    pub key: Option<&'a Value>,
    pub value: &'a Value,
    pub index: Option<usize>,
}

/// What an expression gave.
pub enum Outcome {
    Value(Value),
    Unknown,
    /// `remove_result`: the leaf goes.
    Remove,
}

/// Evaluates a path's expressions with their loop variables bound.
pub trait Evaluator {
    fn eval(&mut self, expression: &Value, var: &LoopVar<'_>) -> Result<Outcome>;
}

impl<'p> Path<'p> {
    /// The path op's arguments after the marker: `[contexts, flags]`, or `[contexts,
    /// flags, modify expression]` when the flags say modify.
    pub fn parse(args: &'p [Value]) -> Result<Path<'p>> {
        let (Some(Value::List(pairs)), Some(Value::Int(flags))) = (args.first(), args.get(1)) else {
            return Err(CdtError::Parameter);
        };
        if pairs.is_empty() || pairs.len() % 2 != 0 || pairs.len() / 2 > LEVELS_MAX {
            return Err(CdtError::Parameter);
        }
        let mode = match flags & 0xf {
            0 => Mode::Tree,
            1 => Mode::Values,
            2 => Mode::Keys,
            3 => Mode::KeyValues,
            4 => Mode::Apply,
            _ => return Err(CdtError::Parameter),
        };
        let modify = match (mode, &args[2..]) {
            (Mode::Apply, [expression]) => Some(expression),
            (Mode::Apply, _) => return Err(CdtError::Parameter),
            (_, []) => None,
            _ => return Err(CdtError::Parameter),
        };
        let mut levels: Vec<Level<'p>> = Vec::with_capacity(pairs.len() / 2);
        for pair in pairs.chunks_exact(2) {
            let Value::Int(ctx_type) = pair[0] else { return Err(CdtError::Parameter) };
            let ctx_type = u64::try_from(ctx_type).map_err(|_| CdtError::Parameter)?;
            if ctx_type & 0x200 != 0 {
                let previous = levels.last_mut().ok_or(CdtError::Parameter)?;
                let on_filter = matches!(previous.selector, Selector::Filter(_));
                if ctx_type != AND_FILTER || previous.and_filter.is_some() || on_filter {
                    return Err(CdtError::Parameter);
                }
                previous.and_filter = Some(filter_expression(&pair[1])?.ok_or(CdtError::Parameter)?);
                continue;
            }
            let selector = match ctx_type & 0x0f {
                BY_INDEX | BY_RANK => {
                    let Value::Int(at) = pair[1] else { return Err(CdtError::Parameter) };
                    if ctx_type & 0x0f == BY_INDEX {
                        Selector::Index(at)
                    } else {
                        Selector::Rank(at)
                    }
                }
                BY_KEY => Selector::Key(&pair[1]),
                BY_VALUE => Selector::Value(&pair[1]),
                BY_KEY_LIST => Selector::KeyList(&pair[1]),
                BY_FILTER => Selector::Filter(filter_expression(&pair[1])?),
                _ => return Err(CdtError::Parameter),
            };
            levels.push(Level { kind: ctx_type & KIND_MASK, selector, and_filter: None });
        }
        Ok(Path { levels, mode, no_fail: flags & NO_FAIL != 0, modify })
    }

    pub fn modifies(&self) -> bool {
        self.mode == Mode::Apply
    }

    /// What a reading path returns from `root` (a list or map).
    pub fn select(&self, root: &Value, evaluator: &mut dyn Evaluator) -> Result<Value> {
        check_container(root)?;
        let mut walk = Walk { path: self, evaluator };
        match self.mode {
            Mode::Tree => walk.tree(root, 0),
            _ => {
                let mut leaves = Vec::new();
                walk.leaves(root, 0, &mut leaves)?;
                Ok(Value::List(leaves))
            }
        }
    }

    /// Applies a modifying path to `root` (a list or map) in place.
    pub fn modify(&self, root: &mut Value, evaluator: &mut dyn Evaluator) -> Result<()> {
        check_container(root)?;
        Walk { path: self, evaluator }.apply(root, 0).map(|_| ())
    }
}

/// A context's expression: a list (an expression) or `true` (every child).
fn filter_expression(value: &Value) -> Result<Option<&Value>> {
    match value {
        Value::List(_) => Ok(Some(value)),
        Value::Bool(true) => Ok(None),
        _ => Err(CdtError::Parameter),
    }
}

fn check_container(value: &Value) -> Result<()> {
    match value {
        Value::List(_) | Value::Map { .. } => Ok(()),
        _ => Err(CdtError::IncompatibleType),
    }
}

fn is_container(value: &Value) -> bool {
    matches!(value, Value::List(_) | Value::Map { .. })
}

/// A list's leading ext header (order flags), if it has one: its elements follow it.
fn list_header(items: &[Value]) -> usize {
    usize::from(matches!(items.first(), Some(Value::Ext { data, .. }) if data.is_empty()))
}

fn list_is_ordered(items: &[Value]) -> bool {
    matches!(items.first(), Some(Value::Ext { kind, data }) if data.is_empty() && kind & 1 != 0)
}

/// An index counted from the end when negative; None outside `len`.
fn position(at: i64, len: usize) -> Option<usize> {
    let at = if at < 0 { len as i64 + at } else { at };
    (0..len as i64).contains(&at).then_some(at as usize)
}

/// The position of the element of rank `rank` among `values` (ties by position).
fn rank_position<'v>(values: impl Iterator<Item = &'v Value>, rank: i64) -> Option<usize> {
    let mut order: Vec<(usize, &Value)> = values.enumerate().collect();
    let at = position(rank, order.len())?;
    order.sort_by(|a, b| canonical_cmp(a.1, b.1).then(a.0.cmp(&b.0)));
    Some(order[at].0)
}

struct Walk<'w, 'p> {
    path: &'w Path<'p>,
    evaluator: &'w mut dyn Evaluator,
}

impl Walk<'_, '_> {
    fn is_leaf(&self, level: usize) -> bool {
        level + 1 == self.path.levels.len()
    }

    /// A filter's verdict on a child: true, false, or an error where it is unknown (false
    /// under NO_FAIL).
    fn test(&mut self, filter: &Value, var: &LoopVar<'_>) -> Result<bool> {
        match self.evaluator.eval(filter, var)? {
            Outcome::Value(Value::Bool(verdict)) => Ok(verdict),
            _ if self.path.no_fail => Ok(false),
            _ => Err(CdtError::Parameter),
        }
    }

    /// Positions (among elements, after any header; or among map entries) of the children
    /// of `container` that level `level` matches.
    fn matches(&mut self, container: &Value, level: usize) -> Result<Vec<usize>> {
        let context = &self.path.levels[level];
        let (is_map, kind) = match container {
            Value::List(_) => (false, KIND_LIST),
            _ => (true, KIND_MAP),
        };
        if context.kind != 0 && context.kind != kind {
            return Err(CdtError::Parameter);
        }
        let children: Vec<(Option<&Value>, &Value)> = match container {
            Value::List(items) => items[list_header(items)..].iter().map(|v| (None, v)).collect(),
            Value::Map { entries, .. } => entries.iter().map(|(k, v)| (Some(k), v)).collect(),
            _ => return Err(CdtError::IncompatibleType),
        };
        let wants_keys = matches!(self.path.mode, Mode::Keys | Mode::KeyValues);
        if !is_map && wants_keys && self.is_leaf(level) && !children.is_empty() {
            return if self.path.no_fail { Ok(Vec::new()) } else { Err(CdtError::IncompatibleType) };
        }
        let candidates: Vec<usize> = match &context.selector {
            Selector::Index(at) => position(*at, children.len()).into_iter().collect(),
            Selector::Rank(rank) => {
                let values = children.iter().map(|(_, v)| *v);
                match container {
                    Value::List(items) if list_is_ordered(items) => position(*rank, children.len()),
                    _ => rank_position(values, *rank),
                }
                .into_iter()
                .collect()
            }
            _ => (0..children.len()).collect(),
        };
        let mut found = Vec::new();
        for at in candidates {
            let (key, value) = children[at];
            let var = LoopVar { key, value, index: (!is_map).then_some(at) };
            let verdict = match &context.selector {
                Selector::Index(_) | Selector::Rank(_) | Selector::Filter(None) => true,
                Selector::Filter(Some(filter)) => self.test(filter, &var)?,
                Selector::Value(wanted) => canonical_cmp(value, wanted) == Ordering::Equal,
                Selector::Key(wanted) if is_map => {
                    key.is_some_and(|k| canonical_cmp(k, wanted) == Ordering::Equal)
                }
                Selector::KeyList(Value::List(keys)) if is_map => {
                    key.is_some_and(|k| keys.iter().any(|w| canonical_cmp(k, w) == Ordering::Equal))
                }
                Selector::KeyList(_) if is_map => return Err(CdtError::Parameter),
                // A key context on a list: unknown.
                _ if self.path.no_fail => false,
                _ => return Err(CdtError::Parameter),
            };
            let verdict = match context.and_filter {
                Some(filter) if verdict => self.test(filter, &var)?,
                _ => verdict,
            };
            if verdict {
                found.push(at);
                if matches!(context.selector, Selector::Key(_)) {
                    break; // a map's keys are unique
                }
            }
        }
        Ok(found)
    }

    /// Appends the leaves reached from `container` (values, keys, or both) to `out`.
    fn leaves(&mut self, container: &Value, level: usize, out: &mut Vec<Value>) -> Result<()> {
        let found = self.matches(container, level)?;
        let leaf = self.is_leaf(level);
        for at in found {
            let (key, value) = child(container, at)?;
            if !leaf {
                if is_container(value) {
                    self.leaves(value, level + 1, out)?;
                }
                continue;
            }
            match (self.path.mode, key) {
                (Mode::Keys, Some(key)) => out.push(key.clone()),
                (Mode::KeyValues, Some(key)) => out.extend([key.clone(), value.clone()]),
                _ => out.push(value.clone()),
            }
        }
        Ok(())
    }

    /// `container` pruned to the children on matching paths (a child that is not a list
    /// or map above the last level is kept whole).
    fn tree(&mut self, container: &Value, level: usize) -> Result<Value> {
        let found = self.matches(container, level)?;
        let leaf = self.is_leaf(level);
        let mut kept = Vec::with_capacity(found.len());
        for at in found {
            let (key, value) = child(container, at)?;
            let value =
                if !leaf && is_container(value) { self.tree(value, level + 1)? } else { value.clone() };
            kept.push((key.cloned(), value));
        }
        Ok(match container {
            Value::Map { .. } => Value::Map {
                order: None,
                entries: kept.into_iter().map(|(k, v)| (k.unwrap_or(Value::Nil), v)).collect(),
            },
            _ => Value::List(kept.into_iter().map(|(_, v)| v).collect()),
        })
    }

    /// Replaces or removes the leaves under `container`; true if anything changed.
    fn apply(&mut self, container: &mut Value, level: usize) -> Result<bool> {
        let found = self.matches(container, level)?;
        let leaf = self.is_leaf(level);
        let mut changed = false;
        let mut removed = Vec::new();
        for at in found {
            if !leaf {
                let slot = child_mut(container, at)?;
                if is_container(slot) {
                    changed |= self.apply(slot, level + 1)?;
                }
                continue;
            }
            let (key, value) = child(container, at)?;
            let var = LoopVar { key, value, index: matches!(container, Value::List(_)).then_some(at) };
            let modify = self.path.modify.ok_or(CdtError::Parameter)?;
            match self.evaluator.eval(modify, &var)? {
                Outcome::Value(new) => {
                    *child_mut(container, at)? = new;
                    changed = true;
                }
                Outcome::Remove => removed.push(at),
                Outcome::Unknown if self.path.no_fail => {}
                Outcome::Unknown => return Err(CdtError::Unknown),
            }
        }
        changed |= !removed.is_empty();
        match container {
            Value::List(items) => {
                let header = list_header(items);
                for at in removed.into_iter().rev() {
                    items.remove(header + at);
                }
                if changed && list_is_ordered(items) {
                    items[header..].sort_by(canonical_cmp);
                }
            }
            Value::Map { entries, .. } => {
                for at in removed.into_iter().rev() {
                    entries.remove(at);
                }
            }
            _ => {}
        }
        Ok(changed)
    }
}

/// Child `at` of a list (after its header) or map: its key (maps) and value. `matches`
/// yields only positions that exist.
fn child(container: &Value, at: usize) -> Result<(Option<&Value>, &Value)> {
    match container {
        Value::List(items) => items.get(list_header(items) + at).map(|v| (None, v)),
        Value::Map { entries, .. } => entries.get(at).map(|(k, v)| (Some(k), v)),
        _ => None,
    }
    .ok_or(CdtError::Parameter)
}

fn child_mut(container: &mut Value, at: usize) -> Result<&mut Value> {
    match container {
        Value::List(items) => {
            let header = list_header(items);
            items.get_mut(header + at)
        }
        Value::Map { entries, .. } => entries.get_mut(at).map(|(_, v)| v),
        _ => None,
    }
    .ok_or(CdtError::Parameter)
}

#[cfg(test)]
#[path = "cdt_path_tests.rs"]
mod tests;
