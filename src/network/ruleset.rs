//! An nftables table as data: its named sets and maps (with their elements) and its chains
//! (with their rules), so that the rules of two plans can be compared and the kernel given
//! only what differs.
//!
//! [`Ruleset::script`] writes the whole of both tables (start-up, the resync after a drift);
//! [`changes`] writes one `nft -f` transaction that names only what differs between two
//! rulesets: the elements added to or removed from a set, a chain added, removed or rewritten
//! (flushed and filled again, in the same transaction). Applying `changes(a, b)` to the
//! kernel holding `a` leaves it holding exactly `b` (`tests/it/network_changes.rs` checks it
//! against the full script, in the kernel). [`normalize`] turns `nft -j list ruleset` into a
//! form where two listings of the same rules are equal whatever order they were made in.

use std::collections::BTreeMap;
use std::fmt::Write;

/// A named set or map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Set {
    /// `set` or `map`.
    pub kind: &'static str,
    /// What comes inside its braces before the elements: `type ifname . ipv4_addr;`.
    pub declaration: String,
    /// Keys, with a map's value.
    pub elements: BTreeMap<String, Option<String>>,
}

impl Set {
    pub fn plain(declaration: &str) -> Set {
        Set {
            kind: "set",
            declaration: declaration.into(),
            elements: BTreeMap::new(),
        }
    }

    pub fn map(declaration: &str) -> Set {
        Set {
            kind: "map",
            ..Set::plain(declaration)
        }
    }

    pub fn insert(&mut self, key: impl Into<String>) {
        self.elements.insert(key.into(), None);
    }

    pub fn insert_pair(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.elements.insert(key.into(), Some(value.into()));
    }
}

/// A chain: a base chain's hook line (`type filter hook input priority -5; policy accept;`)
/// and its rules in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Chain {
    pub hook: Option<String>,
    pub rules: Vec<String>,
}

impl Chain {
    pub fn base(hook: &str) -> Chain {
        Chain {
            hook: Some(hook.into()),
            rules: Vec::new(),
        }
    }

    pub fn rule(&mut self, rule: impl Into<String>) {
        self.rules.push(rule.into());
    }
}

/// One table (`inet extility`, `bridge extility`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub family: &'static str,
    pub name: &'static str,
    pub sets: BTreeMap<String, Set>,
    pub chains: BTreeMap<String, Chain>,
}

impl Table {
    pub fn new(family: &'static str, name: &'static str) -> Table {
        Table {
            family,
            name,
            sets: BTreeMap::new(),
            chains: BTreeMap::new(),
        }
    }

    pub fn chain(&mut self, name: &str) -> &mut Chain {
        self.chains.entry(name.into()).or_default()
    }

    fn id(&self) -> String {
        format!("{} {}", self.family, self.name)
    }

    /// The table as one block (sets declared empty, so that rules may name them), then its
    /// elements (which may name its chains).
    fn write(&self, s: &mut String) {
        let _ = writeln!(s, "table {} {{", self.id());
        for (name, set) in &self.sets {
            write_set(s, name, set);
        }
        for (name, chain) in &self.chains {
            write_chain(s, name, chain);
        }
        let _ = writeln!(s, "}}");
        for (name, set) in &self.sets {
            add_elements(s, &self.id(), name, set.elements.iter());
        }
    }
}

fn write_set(s: &mut String, name: &str, set: &Set) {
    let _ = writeln!(s, "  {} {name} {{ {} }}", set.kind, set.declaration);
}

fn write_chain(s: &mut String, name: &str, chain: &Chain) {
    let _ = writeln!(s, "  chain {name} {{");
    if let Some(hook) = &chain.hook {
        let _ = writeln!(s, "    {hook}");
    }
    for rule in &chain.rules {
        let _ = writeln!(s, "    {rule}");
    }
    let _ = writeln!(s, "  }}");
}

fn element((key, value): (&String, &Option<String>)) -> String {
    match value {
        Some(value) => format!("{key} : {value}"),
        None => key.clone(),
    }
}

fn add_elements<'a>(
    s: &mut String,
    table: &str,
    set: &str,
    elements: impl Iterator<Item = (&'a String, &'a Option<String>)>,
) {
    let elements: Vec<String> = elements.map(element).collect();
    if !elements.is_empty() {
        let _ = writeln!(s, "add element {table} {set} {{ {} }}", elements.join(", "));
    }
}

/// Both tables of the product.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ruleset {
    pub tables: Vec<Table>,
}

impl Ruleset {
    /// The script that makes the tables exactly these (each removed first).
    pub fn script(&self) -> String {
        let mut s = self.removal();
        for table in &self.tables {
            table.write(&mut s);
        }
        s
    }

    /// The script that removes the tables (if they exist).
    pub fn removal(&self) -> String {
        let mut s = String::new();
        for table in &self.tables {
            let _ = writeln!(s, "table {id}\ndelete table {id}", id = table.id());
        }
        s
    }
}

/// The one transaction that turns `old` into `new`, naming only what differs; `None` when
/// nothing does. Tables are matched by family and name; a table only one side has, or a chain
/// whose hook changed, is written whole.
pub fn changes(old: &Ruleset, new: &Ruleset) -> Option<String> {
    if old == new {
        return None;
    }
    let same_tables = old.tables.len() == new.tables.len()
        && old
            .tables
            .iter()
            .zip(&new.tables)
            .all(|(a, b)| a.family == b.family && a.name == b.name);
    let mut s = String::new();
    for (before, after) in old.tables.iter().zip(&new.tables) {
        if !same_tables || !table_changes(&mut s, before, after) {
            return Some(new.script());
        }
    }
    Some(s)
}

/// Writes the changes of one table; `false` when they cannot be made in place.
fn table_changes(s: &mut String, old: &Table, new: &Table) -> bool {
    if old == new {
        return true;
    }
    let id = old.id();
    let changed_sets = new.sets.iter().any(|(name, set)| {
        old.sets
            .get(name)
            .is_some_and(|o| o.kind != set.kind || o.declaration != set.declaration)
    });
    let changed_hooks = new
        .chains
        .iter()
        .any(|(name, chain)| old.chains.get(name).is_some_and(|o| o.hook != chain.hook));
    if changed_sets || changed_hooks {
        return false;
    }
    // 1. What is new or rewritten, in one block: new sets (which rules may name), new chains
    //    (which elements may name), and changed chains, flushed first.
    let flushed: Vec<&String> = new
        .chains
        .iter()
        .filter(|(name, chain)| old.chains.get(*name).is_some_and(|o| o != *chain))
        .map(|(name, _)| name)
        .collect();
    for name in &flushed {
        let _ = writeln!(s, "flush chain {id} {name}");
    }
    let mut block = String::new();
    for (name, set) in &new.sets {
        if !old.sets.contains_key(name) {
            write_set(&mut block, name, set);
        }
    }
    for (name, chain) in &new.chains {
        if !old.chains.contains_key(name) || flushed.contains(&name) {
            write_chain(&mut block, name, chain);
        }
    }
    if !block.is_empty() {
        let _ = write!(s, "table {id} {{\n{block}}}\n");
    }
    // 2. Elements: those gone (or whose value changed) out, then the new ones in.
    let empty = BTreeMap::new();
    for (name, set) in &old.sets {
        let Some(after) = new.sets.get(name) else {
            continue;
        };
        let gone: Vec<&String> = set
            .elements
            .iter()
            .filter(|(k, v)| after.elements.get(*k) != Some(*v))
            .map(|(k, _)| k)
            .collect();
        if !gone.is_empty() {
            let keys: Vec<&str> = gone.iter().map(|k| k.as_str()).collect();
            let _ = writeln!(s, "delete element {id} {name} {{ {} }}", keys.join(", "));
        }
    }
    for (name, set) in &new.sets {
        let before = old.sets.get(name).map_or(&empty, |o| &o.elements);
        add_elements(
            s,
            &id,
            name,
            set.elements
                .iter()
                .filter(|(k, v)| before.get(*k) != Some(*v)),
        );
    }
    // 3. What is gone, once nothing names it: chains, then sets.
    for name in old.chains.keys() {
        if !new.chains.contains_key(name) {
            let _ = writeln!(s, "delete chain {id} {name}");
        }
    }
    for (name, set) in &old.sets {
        if !new.sets.contains_key(name) {
            let _ = writeln!(s, "delete {} {id} {name}", set.kind);
        }
    }
    true
}

/// `nft -j list ruleset` of the tables named `table`, in a canonical form: objects without
/// their handles, sets' elements sorted, chains and sets by name, each chain's rules in order.
/// Two listings of the same rules are equal however the rules were made.
pub fn normalize(listing: &str, table: &str) -> Result<String, String> {
    use serde_json::Value;
    let parsed: Value = serde_json::from_str(listing).map_err(|e| e.to_string())?;
    let items = parsed["nftables"]
        .as_array()
        .ok_or("no `nftables` array in the listing")?;
    let mut objects: BTreeMap<String, Value> = BTreeMap::new();
    let mut rules: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    fn strip(value: &mut Value) {
        match value {
            Value::Object(map) => {
                map.remove("handle");
                map.values_mut().for_each(strip);
            }
            Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    for item in items {
        let Some((kind, body)) = item.as_object().and_then(|o| o.iter().next()) else {
            continue;
        };
        let name_of_table = if kind == "table" {
            &body["name"]
        } else {
            &body["table"]
        };
        if name_of_table != table {
            continue;
        }
        let mut body = body.clone();
        strip(&mut body);
        if let Some(elements) = body.get_mut("elem").and_then(Value::as_array_mut) {
            elements.sort_by_key(|e| e.to_string());
        }
        let family = body["family"].as_str().unwrap_or("").to_string();
        if kind == "rule" {
            let chain = body["chain"].as_str().unwrap_or("").to_string();
            rules
                .entry(format!("{family} {chain}"))
                .or_default()
                .push(body);
        } else {
            let name = body["name"].as_str().unwrap_or("").to_string();
            objects.insert(format!("{family} {kind} {name}"), body);
        }
    }
    let mut out = String::new();
    for (key, body) in &objects {
        let _ = writeln!(out, "{key}: {body}");
    }
    for (chain, rules) in &rules {
        for rule in rules {
            let _ = writeln!(out, "rule {chain}: {rule}");
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ruleset(ports: &[(&str, &str)], chains: &[(&str, &[&str])]) -> Ruleset {
        let mut table = Table::new("bridge", "t");
        let mut map = Set::map("type ifname : verdict;");
        for (k, v) in ports {
            map.insert_pair(format!("\"{k}\""), *v);
        }
        table.sets.insert("ports".into(), map);
        let pre = table.chain("prerouting");
        pre.hook = Some("type filter hook prerouting priority -205; policy accept;".into());
        pre.rule("iifname vmap @ports");
        for (name, rules) in chains {
            let chain = table.chain(name);
            for rule in *rules {
                chain.rule(*rule);
            }
        }
        Ruleset {
            tables: vec![table],
        }
    }

    #[test]
    fn a_change_names_only_its_elements_and_chains() {
        let a = ruleset(
            &[("tap1", "jump nic_1"), ("tap2", "jump nic_2")],
            &[("nic_1", &["drop"]), ("nic_2", &["accept"])],
        );
        assert_eq!(changes(&a, &a), None);
        // A NIC added: its chain, then its element.
        let b = ruleset(
            &[
                ("tap1", "jump nic_1"),
                ("tap2", "jump nic_2"),
                ("tap3", "jump nic_3"),
            ],
            &[
                ("nic_1", &["drop"]),
                ("nic_2", &["accept"]),
                ("nic_3", &["drop"]),
            ],
        );
        assert_eq!(
            changes(&a, &b).unwrap(),
            "table bridge t {\n  chain nic_3 {\n    drop\n  }\n}\n\
             add element bridge t ports { \"tap3\" : jump nic_3 }\n"
        );
        // Removed: its element, then its chain.
        assert_eq!(
            changes(&b, &a).unwrap(),
            "delete element bridge t ports { \"tap3\" }\ndelete chain bridge t nic_3\n"
        );
        // A chain rewritten: flushed and filled in one transaction; a value changed: the
        // key out and in again.
        let c = ruleset(
            &[("tap1", "jump nic_2"), ("tap2", "jump nic_2")],
            &[("nic_1", &["drop"]), ("nic_2", &["accept", "drop"])],
        );
        assert_eq!(
            changes(&a, &c).unwrap(),
            "flush chain bridge t nic_2\n\
             table bridge t {\n  chain nic_2 {\n    accept\n    drop\n  }\n}\n\
             delete element bridge t ports { \"tap1\" }\n\
             add element bridge t ports { \"tap1\" : jump nic_2 }\n"
        );
        // A changed hook cannot be made in place: the whole script.
        let mut d = a.clone();
        d.tables[0].chain("prerouting").hook = Some("type filter hook input priority 0;".into());
        assert_eq!(changes(&a, &d).unwrap(), d.script());
    }

    #[test]
    fn listings_compare_whatever_their_order() {
        let one = r#"{"nftables": [{"metainfo": {"version": "1"}},
            {"table": {"family": "inet", "name": "x", "handle": 2}},
            {"set": {"family": "inet", "name": "s", "table": "x", "handle": 6,
                     "elem": ["b", "a"]}},
            {"chain": {"family": "inet", "table": "x", "name": "c", "handle": 1}},
            {"chain": {"family": "inet", "table": "other", "name": "c", "handle": 1}},
            {"rule": {"family": "inet", "table": "x", "chain": "c", "handle": 9, "expr": [1]}},
            {"rule": {"family": "inet", "table": "x", "chain": "c", "handle": 3, "expr": [2]}}]}"#;
        let two = r#"{"nftables": [
            {"chain": {"family": "inet", "table": "x", "name": "c", "handle": 7}},
            {"set": {"family": "inet", "name": "s", "table": "x", "handle": 1,
                     "elem": ["a", "b"]}},
            {"table": {"family": "inet", "name": "x", "handle": 5}},
            {"rule": {"family": "inet", "table": "x", "chain": "c", "handle": 1, "expr": [1]}},
            {"rule": {"family": "inet", "table": "x", "chain": "c", "handle": 2, "expr": [2]}}]}"#;
        assert_eq!(normalize(one, "x").unwrap(), normalize(two, "x").unwrap());
        let swapped = two.replace("[1]", "[3]");
        assert_ne!(
            normalize(one, "x").unwrap(),
            normalize(&swapped, "x").unwrap()
        );
    }
}
