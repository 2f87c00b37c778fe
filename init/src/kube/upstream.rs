//! The files [`super`] renders, checked key by key against the upstream Go types that read them
//! (issue 11: a misspelt field must fail a test). Go's `encoding/json` ignores a key it does not
//! know and matches names case-insensitively, so a typo in a hand-written configuration is
//! silently a default: here every key must name a field exactly, with a compatible JSON type.
//!
//! The upstream types come from `tests/fixtures/k8s/upstream-types.json`: the JSON view of the
//! Go struct definitions (field → JSON key and Go type) that [`parse_go`] extracted from the
//! upstream sources named in it (kubelet's `v1beta1` types, client-go's kubeconfig `v1` types,
//! apimachinery's `TypeMeta`, the CNI library's and plugins' configuration types). The
//! `#[ignore]`d test `regenerate` rebuilds it from those sources (see the README beside it).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// One Go source file and what it is known as here.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// The package's short name in type names (`kubelet.KubeletConfiguration`).
    pub pkg: String,
    pub repo: String,
    pub tag: String,
    pub commit: String,
    pub path: String,
    /// The fixture directory's file name the generator reads.
    pub file: String,
}

/// A field as `encoding/json` sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Field {
    /// The JSON key; absent for an embedded struct whose fields are promoted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json: Option<String>,
    /// The Go type, package-qualified (`*int32`, `[]string`, `meta.Duration`).
    pub go: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum TypeDef {
    Struct(Vec<Field>),
    /// `type HairpinMode string`: the underlying type.
    Named(String),
    /// A struct the parser could not read (only an error if a rendered key reaches it).
    Unparsed(String),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schema {
    pub sources: Vec<Source>,
    pub types: BTreeMap<String, TypeDef>,
}

/// Import paths and the package names they have here; any other import keeps its path.
const PACKAGES: &[(&str, &str)] = &[
    ("k8s.io/apimachinery/pkg/apis/meta/v1", "meta"),
    ("k8s.io/apimachinery/pkg/runtime", "runtime"),
    ("github.com/containernetworking/cni/pkg/types", "cni"),
    ("net", "net"),
];

/// Types whose JSON form is not their Go structure (custom `MarshalJSON`/`UnmarshalJSON`):
/// `None` for a JSON string, `Some(T)` for "encoded as T".
const CUSTOM: &[(&str, Option<&str>)] = &[
    ("meta.Duration", None),
    ("meta.Time", None),
    ("net.IP", None),
    ("net.IPNet", None),
    ("cni.IPNet", None),
    ("cni.Route", Some("cni.route")),
];

const INTS: &[&str] = &[
    "int", "int8", "int16", "int32", "int64", "uint", "uint8", "uint16", "uint32", "uint64",
    "byte", "rune",
];

/// Removes `/* ... */` and `// ...` comments (outside backquoted and quoted strings).
fn strip_comments(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    let mut quote: Option<u8> = None;
    while i < b.len() {
        let c = b[i];
        if let Some(q) = quote {
            if c == b'\\' && q == b'"' && i + 1 < b.len() {
                out.push(c as char);
                out.push(b[i + 1] as char);
                i += 2;
                continue;
            }
            if c == q {
                quote = None;
            }
            out.push(c as char);
            i += 1;
        } else if c == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            i += 2;
            while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                if b[i] == b'\n' {
                    out.push('\n');
                }
                i += 1;
            }
            i += 2;
        } else {
            if c == b'`' || c == b'"' {
                quote = Some(c);
            }
            out.push(c as char);
            i += 1;
        }
    }
    out
}

/// The `json:"..."` tag's name and whether it says `-` (skipped).
fn json_tag(tag: &str) -> Option<String> {
    let start = tag.find("json:\"")? + 6;
    let end = tag[start..].find('"')? + start;
    Some(
        tag[start..end]
            .split(',')
            .next()
            .unwrap_or_default()
            .to_string(),
    )
}

/// A Go type expression with package-local names qualified by `pkg` and imported ones by the
/// import's name here.
fn qualify(ty: &str, pkg: &str, imports: &BTreeMap<String, String>) -> String {
    let ty = ty.trim();
    if let Some(t) = ty.strip_prefix('*') {
        return format!("*{}", qualify(t, pkg, imports));
    }
    if let Some(t) = ty.strip_prefix("[]") {
        return format!("[]{}", qualify(t, pkg, imports));
    }
    if let Some(t) = ty.strip_prefix("map[") {
        let close = t.find(']').unwrap_or(t.len());
        return format!(
            "map[{}]{}",
            qualify(&t[..close], pkg, imports),
            qualify(t.get(close + 1..).unwrap_or(""), pkg, imports)
        );
    }
    if ty == "interface{}" || ty == "any" || builtin(ty) {
        return ty.to_string();
    }
    match ty.split_once('.') {
        Some((alias, name)) => match imports.get(alias) {
            Some(p) => format!("{p}.{name}"),
            None => ty.to_string(),
        },
        None => format!("{pkg}.{ty}"),
    }
}

fn builtin(t: &str) -> bool {
    INTS.contains(&t) || matches!(t, "string" | "bool" | "float32" | "float64")
}

/// The file's imports: alias (or the path's last element) → package name here.
fn imports(src: &str) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    let mut add = |line: &str| {
        let line = line.trim();
        let Some(q) = line.find('"') else { return };
        let path = line[q..].trim_matches('"');
        let alias = line[..q].trim();
        let alias = if alias.is_empty() {
            path.rsplit('/').next().unwrap_or(path).to_string()
        } else {
            alias.to_string()
        };
        let here = PACKAGES
            .iter()
            .find(|(p, _)| *p == path)
            .map(|(_, n)| n.to_string())
            .unwrap_or_else(|| path.to_string());
        m.insert(alias, here);
    };
    let mut block = false;
    for line in src.lines() {
        let t = line.trim();
        if block {
            if t == ")" {
                block = false;
            } else {
                add(t);
            }
        } else if t == "import (" {
            block = true;
        } else if let Some(rest) = t.strip_prefix("import ") {
            add(rest);
        }
    }
    m
}

fn is_ident(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(f) if f.is_alphabetic() || f == '_')
        && c.all(|x| x.is_alphanumeric() || x == '_')
}

/// Every top-level `type X struct { ... }` (anonymous nested structs as `X.Field`) and
/// `type X Underlying` of a Go file, as `pkg.X`.
pub fn parse_go(pkg: &str, src: &str) -> BTreeMap<String, TypeDef> {
    let src = strip_comments(src);
    let imports = imports(&src);
    let mut out = BTreeMap::new();
    // The structs being read: (qualified name, fields, error, the field that holds it).
    struct Open {
        name: String,
        fields: Vec<Field>,
        error: Option<String>,
        holder: Option<(String, bool)>,
    }
    let mut stack: Vec<Open> = Vec::new();
    for line in src.lines() {
        let t = line.trim();
        if t.is_empty() {
            continue;
        }
        if stack.is_empty() {
            let Some(rest) = t.strip_prefix("type ") else {
                continue;
            };
            let (name, def) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
            let def = def.trim();
            if !is_ident(name) {
                continue;
            }
            if def == "struct {" {
                stack.push(Open {
                    name: format!("{pkg}.{name}"),
                    fields: Vec::new(),
                    error: None,
                    holder: None,
                });
            } else if !def.is_empty()
                && !def.starts_with("interface")
                && !def.starts_with("func")
                && !def.starts_with('=')
                && !def.contains('{')
            {
                out.insert(
                    format!("{pkg}.{name}"),
                    TypeDef::Named(qualify(def, pkg, &imports)),
                );
            }
            continue;
        }
        let (decl, tag) = match (t.find('`'), t.rfind('`')) {
            (Some(a), Some(b)) if b > a => (t[..a].trim(), &t[a + 1..b]),
            _ => (t, ""),
        };
        if decl == "}" {
            let Some(done) = stack.pop() else { continue };
            let def = match done.error {
                Some(e) => TypeDef::Unparsed(e),
                None => TypeDef::Struct(done.fields),
            };
            out.insert(done.name.clone(), def);
            if let (Some(parent), Some((field, ptr))) = (stack.last_mut(), done.holder) {
                let key = json_tag(tag).filter(|k| !k.is_empty()).unwrap_or(field);
                if key != "-" {
                    parent.fields.push(Field {
                        json: Some(key),
                        go: format!("{}{}", if ptr { "*" } else { "" }, done.name),
                    });
                }
            }
            continue;
        }
        let Some(cur) = stack.last_mut() else {
            continue;
        };
        if let Some((name, rest)) = decl.split_once(char::is_whitespace) {
            let ty = rest.trim();
            if name.ends_with(',') || !is_ident(name) {
                cur.error
                    .get_or_insert(format!("unsupported field declaration {t:?}"));
                continue;
            }
            if ty == "struct {" || ty == "*struct {" {
                let nested = format!("{}.{name}", cur.name);
                stack.push(Open {
                    name: nested,
                    fields: Vec::new(),
                    error: None,
                    holder: Some((name.to_string(), ty.starts_with('*'))),
                });
                continue;
            }
            if ty.replace("interface{}", "").contains('{')
                || ty.starts_with("func")
                || ty.starts_with("chan")
            {
                cur.error
                    .get_or_insert(format!("unsupported field type {t:?}"));
                continue;
            }
            let key = match json_tag(tag) {
                Some(k) if k == "-" => continue,
                Some(k) if !k.is_empty() => k,
                _ => name.to_string(),
            };
            // encoding/json ignores unexported fields.
            if !name.starts_with(|c: char| c.is_uppercase()) {
                continue;
            }
            cur.fields.push(Field {
                json: Some(key),
                go: qualify(ty, pkg, &imports),
            });
        } else {
            // Embedded: promoted unless the tag names it.
            let go = qualify(decl, pkg, &imports);
            let json = json_tag(tag).filter(|k| !k.is_empty());
            if json.as_deref() == Some("-") {
                continue;
            }
            cur.fields.push(Field { json, go });
        }
    }
    out
}

/// The type names an expression refers to (`map[string][]meta.Duration` → `meta.Duration`).
fn referenced(ty: &str) -> Vec<String> {
    let t = ty.trim_start_matches('*');
    if let Some(e) = t.strip_prefix("[]") {
        return referenced(e);
    }
    if let Some(m) = t.strip_prefix("map[") {
        let close = m.find(']').unwrap_or(m.len());
        let mut v = referenced(&m[..close]);
        v.extend(referenced(m.get(close + 1..).unwrap_or("")));
        return v;
    }
    if t.contains('.') {
        vec![t.to_string()]
    } else {
        vec![]
    }
}

/// The types reachable from `roots` among `all` (custom-encoded ones through their encoding).
pub fn closure(all: &BTreeMap<String, TypeDef>, roots: &[&str]) -> BTreeMap<String, TypeDef> {
    let mut seen = BTreeSet::new();
    let mut todo: Vec<String> = roots.iter().map(|r| r.to_string()).collect();
    let mut out = BTreeMap::new();
    while let Some(t) = todo.pop() {
        if !seen.insert(t.clone()) {
            continue;
        }
        if let Some((_, enc)) = CUSTOM.iter().find(|(n, _)| *n == t) {
            todo.extend(enc.map(str::to_string));
            continue;
        }
        let Some(def) = all.get(&t) else { continue };
        match def {
            TypeDef::Struct(fields) => {
                for f in fields {
                    todo.extend(referenced(&f.go));
                }
            }
            TypeDef::Named(u) => todo.extend(referenced(u)),
            TypeDef::Unparsed(_) => {}
        }
        out.insert(t, def.clone());
    }
    out
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl Schema {
    pub fn load() -> Schema {
        let text = include_str!("../../tests/fixtures/k8s/upstream-types.json");
        serde_json::from_str(text).expect("tests/fixtures/k8s/upstream-types.json")
    }

    /// Every field of a struct, embedded structs' promoted fields included.
    fn fields(&self, ty: &str, at: &str, errs: &mut Vec<String>) -> Option<Vec<Field>> {
        match self.types.get(ty) {
            Some(TypeDef::Struct(fs)) => {
                let mut out = Vec::new();
                for f in fs {
                    if f.json.is_some() {
                        out.push(f.clone());
                    } else {
                        out.extend(self.fields(f.go.trim_start_matches('*'), at, errs)?);
                    }
                }
                Some(out)
            }
            Some(TypeDef::Named(u)) => self.fields(u, at, errs),
            Some(TypeDef::Unparsed(why)) => {
                errs.push(format!("{at}: {ty} was not parsed upstream ({why})"));
                None
            }
            None => {
                errs.push(format!("{at}: {ty} is not in the upstream types"));
                None
            }
        }
    }

    /// Errors for `v` (at `at`) read as Go type `ty`.
    pub fn check(&self, ty: &str, v: &Value, at: &str, errs: &mut Vec<String>) {
        let ty = ty.trim_start_matches('*');
        let want = |ok: bool, what: &str, errs: &mut Vec<String>| {
            if !ok {
                errs.push(format!("{at}: {ty} wants {what}, not {}", kind(v)));
            }
        };
        if ty == "[]byte" {
            return want(v.is_string(), "a string (base64)", errs);
        }
        if let Some(elem) = ty.strip_prefix("[]") {
            match v.as_array() {
                Some(a) => {
                    for (i, e) in a.iter().enumerate() {
                        self.check(elem, e, &format!("{at}[{i}]"), errs);
                    }
                }
                None => want(false, "an array", errs),
            }
            return;
        }
        if let Some(m) = ty.strip_prefix("map[") {
            let close = m.find(']').unwrap_or(m.len());
            let val = m.get(close + 1..).unwrap_or("");
            match v.as_object() {
                Some(o) => {
                    for (k, e) in o {
                        self.check(val, e, &format!("{at}.{k}"), errs);
                    }
                }
                None => want(false, "an object", errs),
            }
            return;
        }
        match ty {
            "string" => return want(v.is_string(), "a string", errs),
            "bool" => return want(v.is_boolean(), "a boolean", errs),
            "float32" | "float64" => return want(v.is_number(), "a number", errs),
            "interface{}" | "any" => return,
            t if INTS.contains(&t) => {
                let negative = v.as_i64().is_some_and(|i| i < 0);
                let unsigned = t.starts_with('u') || t == "byte";
                let ok = (v.is_i64() || v.is_u64()) && !(unsigned && negative);
                return want(ok, "an integer", errs);
            }
            _ => {}
        }
        if let Some((_, enc)) = CUSTOM.iter().find(|(n, _)| *n == ty) {
            match enc {
                None => want(v.is_string(), "a string", errs),
                Some(e) => self.check(e, v, at, errs),
            }
            return;
        }
        if let Some(TypeDef::Named(u)) = self.types.get(ty) {
            return self.check(u, v, at, errs);
        }
        let Some(fields) = self.fields(ty, at, errs) else {
            return;
        };
        let Some(o) = v.as_object() else {
            return want(false, "an object", errs);
        };
        for (k, e) in o {
            match fields
                .iter()
                .find(|f| f.json.as_deref() == Some(k.as_str()))
            {
                Some(f) => self.check(&f.go, e, &format!("{at}.{k}"), errs),
                None => errs.push(format!("{at}: {ty} has no field {k:?}")),
            }
        }
    }

    /// A CNI network configuration list: the list's own keys as libcni reads them, each plugin
    /// as that plugin reads its configuration (`bridge`, `portmap`; its `ipam` as host-local
    /// reads it).
    pub fn check_conflist(&self, v: &Value, errs: &mut Vec<String>) {
        let mut list = v.clone();
        let plugins = list
            .as_object_mut()
            .and_then(|o| o.remove("plugins"))
            .unwrap_or(Value::Null);
        self.check("cni.NetConfList", &list, "conflist", errs);
        let Some(plugins) = plugins.as_array() else {
            return errs.push("conflist: plugins is not an array".into());
        };
        for (i, p) in plugins.iter().enumerate() {
            let at = format!("conflist.plugins[{i}]");
            let mut p = p.clone();
            let ipam = p.as_object_mut().and_then(|o| o.remove("ipam"));
            let ty = match p["type"].as_str() {
                Some("bridge") => "bridge.NetConf",
                Some("portmap") => "portmap.PortMapConf",
                Some("loopback") => "cni.NetConf",
                other => {
                    errs.push(format!("{at}: no upstream type for plugin {other:?}"));
                    continue;
                }
            };
            self.check(ty, &p, &at, errs);
            if let Some(ipam) = ipam {
                match ipam["type"].as_str() {
                    Some("host-local") => {
                        self.check("hostlocal.IPAMConfig", &ipam, &format!("{at}.ipam"), errs)
                    }
                    other => errs.push(format!("{at}.ipam: no upstream type for {other:?}")),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::tests::joined;
    use crate::kube::{cni_conflist, kubelet_files};
    use serde_json::json;

    fn errors(f: impl FnOnce(&Schema, &mut Vec<String>)) -> Vec<String> {
        let s = Schema::load();
        let mut e = Vec::new();
        f(&s, &mut e);
        e
    }

    #[test]
    fn the_schema_holds_the_upstream_types_it_says() {
        let s = Schema::load();
        for src in &s.sources {
            assert!(
                src.commit.len() == 40 && src.commit.bytes().all(|c| c.is_ascii_hexdigit()),
                "{src:?}"
            );
        }
        for root in ROOTS {
            assert!(
                matches!(s.types.get(*root), Some(TypeDef::Struct(_))),
                "{root}"
            );
        }
        // Fields the rendered files rely on, read from upstream (not echoed from kube.rs).
        let field = |t: &str, k: &str| match s.types.get(t) {
            Some(TypeDef::Struct(fs)) => fs
                .iter()
                .find(|f| f.json.as_deref() == Some(k))
                .map(|f| f.go.clone()),
            _ => None,
        };
        assert_eq!(
            field("kubelet.KubeletConfiguration", "containerRuntimeEndpoint").as_deref(),
            Some("string")
        );
        assert_eq!(
            field("kubelet.KubeletConfiguration", "resolvConf").as_deref(),
            Some("*string")
        );
        assert_eq!(
            field("kubelet.KubeletConfiguration", "readOnlyPort").as_deref(),
            Some("int32")
        );
        assert_eq!(
            field("clientcmd.Cluster", "certificate-authority-data").as_deref(),
            Some("[]byte")
        );
        assert_eq!(
            field("hostlocal.IPAMConfig", "ranges").as_deref(),
            Some("[]hostlocal.RangeSet")
        );
    }

    #[test]
    fn kubelet_configuration_matches_upstream() {
        let f = kubelet_files(&joined(), Some(crate::kube::RESOLV_CONF)).unwrap();
        let e = errors(|s, e| {
            s.check(
                "kubelet.KubeletConfiguration",
                &f.config,
                "kubelet-config.json",
                e,
            )
        });
        assert!(e.is_empty(), "{e:#?}");
        let e = errors(|s, e| {
            s.check(
                "clientcmd.Config",
                &f.bootstrap_kubeconfig,
                "bootstrap-kubelet.conf",
                e,
            )
        });
        assert!(e.is_empty(), "{e:#?}");
    }

    #[test]
    fn cni_configuration_matches_upstream() {
        let v = cni_conflist(joined().pods.as_ref().unwrap()).unwrap();
        let e = errors(|s, e| s.check_conflist(&v, e));
        assert!(e.is_empty(), "{e:#?}");
    }

    #[test]
    fn misspelt_fields_and_wrong_types_are_refused() {
        let f = kubelet_files(&joined(), Some(crate::kube::RESOLV_CONF)).unwrap();
        let edit = |v: &Value, path: &[&str], key: &str, new_key: &str, new: Value| {
            let mut v = v.clone();
            let mut o = &mut v;
            for p in path {
                o = &mut o[*p];
            }
            let obj = o.as_object_mut().unwrap();
            obj.remove(key);
            obj.insert(new_key.into(), new);
            v
        };
        let kc = |v: &Value| errors(|s, e| s.check("kubelet.KubeletConfiguration", v, "kc", e));
        // A misspelt key.
        let e = kc(&edit(
            &f.config,
            &[],
            "rotateCertificates",
            "rotateCertificate",
            json!(true),
        ));
        assert_eq!(
            e,
            ["kc: kubelet.KubeletConfiguration has no field \"rotateCertificate\""]
        );
        // A key with the wrong case (encoding/json would take it; this check does not).
        let e = kc(&edit(
            &f.config,
            &[],
            "resolvConf",
            "resolvconf",
            json!("/x"),
        ));
        assert_eq!(e.len(), 1, "{e:?}");
        // Wrong types, nested too.
        let e = kc(&edit(
            &f.config,
            &[],
            "readOnlyPort",
            "readOnlyPort",
            json!("0"),
        ));
        assert_eq!(e, ["kc.readOnlyPort: int32 wants an integer, not a string"]);
        let e = kc(&edit(
            &f.config,
            &["authentication", "anonymous"],
            "enabled",
            "enabled",
            json!("false"),
        ));
        assert_eq!(
            e,
            ["kc.authentication.anonymous.enabled: bool wants a boolean, not a string"]
        );
        let e = kc(&edit(
            &f.config,
            &[],
            "clusterDNS",
            "clusterDNS",
            json!("10.96.0.10"),
        ));
        assert_eq!(e, ["kc.clusterDNS: []string wants an array, not a string"]);
        let e = kc(&edit(
            &f.config,
            &["authentication", "x509"],
            "clientCAFile",
            "clientCaFile",
            json!("/x"),
        ));
        assert_eq!(e.len(), 1, "{e:?}");
        // The kubeconfig: a misspelt nested key.
        let k = &f.bootstrap_kubeconfig;
        let mut bad = k.clone();
        let c = bad["clusters"][0]["cluster"].as_object_mut().unwrap();
        let data = c.remove("certificate-authority-data").unwrap();
        c.insert("certificate-authority-date".into(), data);
        let e = errors(|s, e| s.check("clientcmd.Config", &bad, "kubeconfig", e));
        assert_eq!(e, ["kubeconfig.clusters[0].cluster: clientcmd.Cluster has no field \"certificate-authority-date\""]);
        // The CNI list: a misspelt bridge key, an IPAM key of the wrong type, an unknown plugin.
        let v = cni_conflist(joined().pods.as_ref().unwrap()).unwrap();
        let mut bad = v.clone();
        bad["plugins"][0]
            .as_object_mut()
            .unwrap()
            .insert("isGateWay".into(), json!(true));
        bad["plugins"][0]["ipam"]["dataDir"] = json!(["/x"]);
        bad["plugins"][1]["type"] = json!("portmapper");
        let e = errors(|s, e| s.check_conflist(&bad, e));
        assert_eq!(e.len(), 3, "{e:#?}");
        assert!(e[0].contains("\"isGateWay\""), "{e:?}");
        assert!(e[1].contains("ipam.dataDir"), "{e:?}");
        assert!(e[2].contains("portmapper"), "{e:?}");
    }

    /// Our own Go, in the shapes the upstream files use.
    const GO: &str = r#"
/*
Copyright header, with a `backquote` and a // comment marker.
*/
package sample

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"github.com/containernetworking/cni/pkg/types"
)

// Mode is a mode.
type Mode string

type Set []Item

type Outer struct {
	metav1.TypeMeta `json:",inline"`
	types.NetConf
	// Name says `json:"not-this"` in a comment.
	Name   string          `json:"name,omitempty"`
	Count  *int32          `json:"count"` // trailing comment
	Every  metav1.Duration `json:"every,omitempty"`
	Tags   map[string][]Mode `json:"tags"`
	Plain  bool
	Hidden string `json:"-"`
	secret string
	Args   struct {
		Inner Item `json:"inner"`
	} `json:"args,omitempty"`
	Opt *struct {
		X int `json:"x"`
	} `json:"opt"`
}

type Item struct {
	A, B string
}

func (o Outer) Method() {}
"#;

    #[test]
    fn the_go_parser_reads_fields_tags_embedding_and_nesting() {
        let t = parse_go("s", GO);
        let f = |json: Option<&str>, go: &str| Field {
            json: json.map(str::to_string),
            go: go.into(),
        };
        assert_eq!(t["s.Mode"], TypeDef::Named("string".into()));
        assert_eq!(t["s.Set"], TypeDef::Named("[]s.Item".into()));
        assert_eq!(
            t["s.Outer"],
            TypeDef::Struct(vec![
                f(None, "meta.TypeMeta"),
                f(None, "cni.NetConf"),
                f(Some("name"), "string"),
                f(Some("count"), "*int32"),
                f(Some("every"), "meta.Duration"),
                f(Some("tags"), "map[string][]s.Mode"),
                f(Some("Plain"), "bool"),
                f(Some("args"), "s.Outer.Args"),
                f(Some("opt"), "*s.Outer.Opt"),
            ])
        );
        assert_eq!(
            t["s.Outer.Args"],
            TypeDef::Struct(vec![f(Some("inner"), "s.Item")])
        );
        assert_eq!(t["s.Outer.Opt"], TypeDef::Struct(vec![f(Some("x"), "int")]));
        assert!(
            matches!(&t["s.Item"], TypeDef::Unparsed(e) if e.contains("A, B")),
            "{:?}",
            t["s.Item"]
        );
        let c = closure(&t, &["s.Outer"]);
        assert!(c.contains_key("s.Item") && c.contains_key("s.Mode") && !c.contains_key("s.Set"));
    }

    /// Files copied from a node (the cluster e2e): `NACRE_KUBE_FILES=DIR cargo test -p
    /// nacre-init --bin nacre-init kube::upstream::tests::node_files -- --ignored`. Each of
    /// `kubelet-config.json`, `bootstrap-kubelet.conf`, `10-nacre.conflist` present in DIR is
    /// checked against the upstream types (at least one must be); with `ca.crt` beside the
    /// kubeconfig, its `certificate-authority-data` must be that CA, and with
    /// `NACRE_KUBE_TOKEN` set, its token must be that one.
    #[test]
    #[ignore = "checks files copied from a node: NACRE_KUBE_FILES=DIR"]
    fn node_files() {
        use base64::Engine;
        let dir =
            std::path::PathBuf::from(std::env::var("NACRE_KUBE_FILES").expect("NACRE_KUBE_FILES"));
        let read = |n: &str| -> Option<Value> {
            let bytes = std::fs::read(dir.join(n)).ok()?;
            Some(serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{n}: {e}")))
        };
        let s = Schema::load();
        let mut errs = Vec::new();
        let mut seen = 0;
        if let Some(v) = read("kubelet-config.json") {
            seen += 1;
            s.check(
                "kubelet.KubeletConfiguration",
                &v,
                "kubelet-config.json",
                &mut errs,
            );
        }
        if let Some(v) = read("bootstrap-kubelet.conf") {
            seen += 1;
            s.check("clientcmd.Config", &v, "bootstrap-kubelet.conf", &mut errs);
            let data = v["clusters"][0]["cluster"]["certificate-authority-data"]
                .as_str()
                .unwrap_or("");
            let data = base64::engine::general_purpose::STANDARD
                .decode(data)
                .unwrap_or_default();
            // The same PEM (line breaks and trailing whitespace aside).
            if let Ok(ca) = std::fs::read_to_string(dir.join("ca.crt")) {
                let words = |s: &str| s.split_whitespace().map(str::to_string).collect::<Vec<_>>();
                let data =
                    String::from_utf8(data).expect("certificate-authority-data is not PEM text");
                assert_eq!(
                    words(&data),
                    words(&ca),
                    "the kubeconfig's CA is not ca.crt"
                );
            }
            if let Ok(t) = std::env::var("NACRE_KUBE_TOKEN") {
                assert_eq!(
                    v["users"][0]["user"]["token"].as_str(),
                    Some(t.as_str()),
                    "token"
                );
            }
        }
        if let Some(v) = read("10-nacre.conflist") {
            seen += 1;
            s.check_conflist(&v, &mut errs);
        }
        assert!(seen > 0, "none of the node's files in {}", dir.display());
        assert!(errs.is_empty(), "{errs:#?}");
    }

    pub const ROOTS: &[&str] = &[
        "kubelet.KubeletConfiguration",
        "clientcmd.Config",
        "cni.NetConfList",
        "cni.NetConf",
        "bridge.NetConf",
        "portmap.PortMapConf",
        "hostlocal.IPAMConfig",
        "meta.TypeMeta",
    ];

    /// Rebuilds `tests/fixtures/k8s/upstream-types.json` from the upstream files in
    /// `$NACRE_K8S_UPSTREAM` (named as the schema's `sources[].file`; README beside it).
    #[test]
    #[ignore = "needs the upstream Go sources: NACRE_K8S_UPSTREAM=DIR"]
    fn regenerate() {
        let dir = std::env::var("NACRE_K8S_UPSTREAM").expect("NACRE_K8S_UPSTREAM");
        let mut schema = Schema::load();
        let mut all = BTreeMap::new();
        for src in &schema.sources {
            let text = std::fs::read_to_string(std::path::Path::new(&dir).join(&src.file))
                .unwrap_or_else(|e| panic!("{}: {e}", src.file));
            all.extend(parse_go(&src.pkg, &text));
        }
        schema.types = closure(&all, ROOTS);
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/k8s/upstream-types.json"
        );
        let mut text = serde_json::to_string_pretty(&schema).unwrap();
        text.push('\n');
        std::fs::write(path, text).unwrap();
    }
}
