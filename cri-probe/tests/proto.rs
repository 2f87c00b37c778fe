//! Every hand-written CRI message and enum (src/api.rs) against upstream's api.proto
//! (tests/fixtures/api.proto, kubernetes/cri-api; origin in tests/fixtures/README.md): each field's
//! name must be a field of the proto message, with the same number, the same type (scalar kind,
//! message or enum name, map key and value types), the same cardinality (repeated or not) and so
//! the same wire type; each enum value must be the proto's. A small parser reads the proto subset
//! the file uses (messages, nested messages and enums, `repeated`, `map<K, V>`, field options).

use std::collections::HashMap;

use nacre_cri_probe::api::{EnumTable, FieldTable, MessageTable, ENUMS, MESSAGES};

const PROTO: &str = include_str!("fixtures/api.proto");

#[derive(Debug, Clone, PartialEq)]
struct ProtoField {
    ty: String,
    repeated: bool,
    number: u32,
}

#[derive(Debug, Default)]
struct Proto {
    messages: HashMap<String, HashMap<String, ProtoField>>,
    enums: HashMap<String, HashMap<String, i32>>,
}

fn strip_comments(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("//") {
            rest = r.find('\n').map_or("", |i| &r[i..]);
        } else if let Some(r) = rest.strip_prefix("/*") {
            rest = r.find("*/").map_or("", |i| &r[i + 2..]);
        } else if rest.starts_with('"') {
            let end = rest[1..].find('"').map_or(rest.len(), |i| i + 2);
            out.push_str(&rest[..end]);
            rest = &rest[end..];
        } else {
            let c = rest.chars().next().unwrap();
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

fn tokens(s: &str) -> Vec<String> {
    let mut t = Vec::new();
    let mut cur = String::new();
    for c in strip_comments(s).chars() {
        if c.is_whitespace() || "{};=<>,[]()".contains(c) {
            if !cur.is_empty() {
                t.push(std::mem::take(&mut cur));
            }
            if !c.is_whitespace() {
                t.push(c.to_string());
            }
        } else {
            cur.push(c);
        }
    }
    if !cur.is_empty() {
        t.push(cur);
    }
    t
}

struct Parser {
    t: Vec<String>,
    i: usize,
}

impl Parser {
    fn next(&mut self) -> String {
        let s = self.t.get(self.i).cloned().unwrap_or_default();
        self.i += 1;
        s
    }
    fn expect(&mut self, want: &str) {
        let got = self.next();
        assert_eq!(
            got, want,
            "api.proto: expected {want:?} at token {}",
            self.i
        );
    }
    fn skip_to(&mut self, end: &str) {
        while self.next() != end {
            assert!(self.i <= self.t.len(), "api.proto: no {end:?}");
        }
    }
    /// After `enum NAME {`.
    fn parse_enum(&mut self, name: String, p: &mut Proto) {
        let mut values = HashMap::new();
        loop {
            let v = self.next();
            match v.as_str() {
                "}" => break,
                "option" | "reserved" => self.skip_to(";"),
                _ => {
                    self.expect("=");
                    let n: i32 = self.next().parse().expect("enum value");
                    let mut t = self.next();
                    if t == "[" {
                        self.skip_to("]");
                        t = self.next();
                    }
                    assert_eq!(t, ";", "api.proto: enum {name} value {v}");
                    values.insert(v, n);
                }
            }
        }
        p.enums.insert(name, values);
    }
    /// After `message NAME {`.
    fn parse_message(&mut self, name: String, p: &mut Proto) {
        let mut fields = HashMap::new();
        loop {
            let w = self.next();
            match w.as_str() {
                "}" => break,
                "message" => {
                    let n = self.next();
                    self.expect("{");
                    self.parse_message(n, p);
                }
                "enum" => {
                    let n = self.next();
                    self.expect("{");
                    self.parse_enum(n, p);
                }
                "option" | "reserved" => self.skip_to(";"),
                "oneof" => panic!("api.proto: oneof in {name}: the parser does not handle it"),
                _ => {
                    let (ty, repeated) = match w.as_str() {
                        "repeated" => (self.next(), true),
                        "map" => {
                            self.expect("<");
                            let k = self.next();
                            self.expect(",");
                            let v = self.next();
                            self.expect(">");
                            (format!("map<{k}, {v}>"), false)
                        }
                        _ => (w.clone(), false),
                    };
                    let field = self.next();
                    self.expect("=");
                    let number: u32 = self.next().parse().expect("field number");
                    let mut t = self.next();
                    if t == "[" {
                        self.skip_to("]");
                        t = self.next();
                    }
                    assert_eq!(t, ";", "api.proto: {name}.{field}");
                    let old = fields.insert(
                        field.clone(),
                        ProtoField {
                            ty,
                            repeated,
                            number,
                        },
                    );
                    assert!(old.is_none(), "api.proto: {name}.{field} twice");
                }
            }
        }
        p.messages.insert(name, fields);
    }
}

fn parse(src: &str) -> Proto {
    let mut p = Proto::default();
    let mut ps = Parser {
        t: tokens(src),
        i: 0,
    };
    while ps.i < ps.t.len() {
        match ps.next().as_str() {
            "message" => {
                let n = ps.next();
                ps.expect("{");
                ps.parse_message(n, &mut p);
            }
            "enum" => {
                let n = ps.next();
                ps.expect("{");
                ps.parse_enum(n, &mut p);
            }
            "service" => {
                // rpc lines: skip the whole block (braces of `{}` bodies nest).
                let mut depth = 0;
                loop {
                    match ps.next().as_str() {
                        "{" => depth += 1,
                        "}" => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                }
            }
            "syntax" | "package" | "option" | "import" => ps.skip_to(";"),
            other => panic!("api.proto: unexpected {other:?} at top level"),
        }
    }
    p
}

/// A prost attribute split at its top-level commas: (kind, its value, flags, tag).
struct Prost {
    kind: String,
    value: Option<String>,
    repeated: bool,
    optional: bool,
    tag: Option<u32>,
}

fn parse_prost(attr: &str) -> Prost {
    let mut parts = Vec::new();
    let (mut cur, mut quoted) = (String::new(), false);
    for c in attr.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c)
            }
            ',' if !quoted => parts.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    parts.push(cur);
    let mut p = Prost {
        kind: String::new(),
        value: None,
        repeated: false,
        optional: false,
        tag: None,
    };
    for (i, part) in parts.iter().map(|s| s.trim()).enumerate() {
        let (k, v) = match part.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v.trim().trim_matches('"').to_string())),
            None => (part, None),
        };
        match k {
            "tag" => p.tag = v.and_then(|v| v.parse().ok()),
            "repeated" => p.repeated = true,
            "optional" => p.optional = true,
            _ if i == 0 => {
                p.kind = k.to_string();
                p.value = v;
            }
            _ => p.kind = format!("{} ?{k}", p.kind),
        }
    }
    p
}

const SCALARS: &[&str] = &[
    "string", "bytes", "bool", "int32", "int64", "uint32", "uint64", "sint32", "sint64", "fixed32",
    "fixed64", "sfixed32", "sfixed64", "double", "float",
];

/// The protobuf wire type of a field: 0 varint, 1 64-bit, 2 length-delimited, 5 32-bit (packed
/// repeated scalars and every repeated non-scalar are length-delimited).
fn wire_type(scalar: Option<&str>, repeated: bool) -> u8 {
    match scalar {
        Some("string" | "bytes") | None => 2,
        Some(_) if repeated => 2,
        Some("fixed64" | "sfixed64" | "double") => 1,
        Some("fixed32" | "sfixed32" | "float") => 5,
        Some(_) => 0,
    }
}

fn words(s: &str) -> Vec<&str> {
    s.split(|c: char| !c.is_alphanumeric() && c != '_')
        .filter(|w| !w.is_empty())
        .collect()
}

fn check_field(p: &Proto, msg: &str, f: &FieldTable, errs: &mut Vec<String>) {
    let Some(pf) = p.messages.get(msg).and_then(|m| m.get(f.name)) else {
        errs.push(format!("{msg}.{}: no such field in api.proto", f.name));
        return;
    };
    let a = parse_prost(f.prost);
    let at = format!("{msg}.{} ({})", f.name, f.prost);
    if a.tag != Some(pf.number) {
        errs.push(format!(
            "{at}: number {:?}, api.proto says {}",
            a.tag, pf.number
        ));
    }
    if a.repeated != pf.repeated && a.kind != "message" {
        errs.push(format!(
            "{at}: repeated {}, api.proto says {}",
            a.repeated, pf.repeated
        ));
    }
    let proto_scalar = SCALARS.contains(&pf.ty.as_str()).then_some(pf.ty.as_str());
    // The Rust side's wire type, from its prost kind alone.
    let rust_scalar = match a.kind.as_str() {
        "message" | "map" => None,
        "enumeration" => Some("int32"),
        k => Some(k),
    };
    if pf.ty.starts_with("map<") {
        if a.kind != "map" || a.value.as_deref() != Some(&pf.ty[4..pf.ty.len() - 1]) {
            errs.push(format!("{at}: api.proto has {}", pf.ty));
        }
    } else if let Some(s) = proto_scalar {
        if a.kind != s {
            errs.push(format!("{at}: kind {}, api.proto has {s}", a.kind));
        }
    } else if p.enums.contains_key(&pf.ty) {
        if a.kind != "enumeration" || a.value.as_deref() != Some(pf.ty.as_str()) {
            errs.push(format!("{at}: api.proto has enum {}", pf.ty));
        }
        if !ENUMS.iter().any(|e| e.name == pf.ty) {
            errs.push(format!("{at}: enum {} is not written in api.rs", pf.ty));
        }
    } else if p.messages.contains_key(&pf.ty) {
        let repeated = f.rust_type.trim().starts_with("Vec");
        if a.kind != "message" || !words(f.rust_type).contains(&pf.ty.as_str()) {
            errs.push(format!(
                "{at}: api.proto has message {} ({})",
                pf.ty, f.rust_type
            ));
        }
        if repeated != pf.repeated || a.repeated != pf.repeated || a.optional == pf.repeated {
            errs.push(format!(
                "{at}: {}, api.proto: repeated {}",
                f.rust_type, pf.repeated
            ));
        }
    } else {
        errs.push(format!(
            "{at}: api.proto's type {} is unknown to the parser",
            pf.ty
        ));
    }
    // An enum is a varint on the wire.
    let proto_wire = proto_scalar.or(p.enums.contains_key(&pf.ty).then_some("int32"));
    let (wr, wp) = (
        wire_type(rust_scalar, a.repeated),
        wire_type(proto_wire, pf.repeated),
    );
    if wr != wp {
        errs.push(format!("{at}: wire type {wr}, api.proto's is {wp}"));
    }
}

fn screaming(camel: &str) -> String {
    let mut s = String::new();
    for (i, c) in camel.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            s.push('_');
        }
        s.push(c.to_ascii_uppercase());
    }
    s
}

fn check(p: &Proto, messages: &[MessageTable], enums: &[EnumTable]) -> Vec<String> {
    let mut errs = Vec::new();
    for m in messages {
        if !p.messages.contains_key(m.name) {
            errs.push(format!("message {}: not in api.proto", m.name));
            continue;
        }
        for f in m.fields {
            check_field(p, m.name, f, &mut errs);
        }
    }
    for e in enums {
        let Some(values) = p.enums.get(e.name) else {
            errs.push(format!("enum {}: not in api.proto", e.name));
            continue;
        };
        for (v, n) in e.variants {
            match values.get(&screaming(v)) {
                Some(pn) if pn == n => {}
                Some(pn) => errs.push(format!("{}::{v} = {n}, api.proto says {pn}", e.name)),
                None => errs.push(format!("{}::{v}: no {} in api.proto", e.name, screaming(v))),
            }
        }
        if values.len() != e.variants.len() {
            errs.push(format!(
                "enum {}: {} values, api.proto has {}",
                e.name,
                e.variants.len(),
                values.len()
            ));
        }
    }
    errs
}

#[test]
fn the_parser_reads_the_whole_proto() {
    let p = parse(PROTO);
    assert!(p.messages.len() > 150, "{} messages", p.messages.len());
    let cc = &p.messages["ContainerConfig"];
    assert_eq!(cc.len(), 18, "{cc:?}");
    assert_eq!(
        cc["CDI_devices"],
        ProtoField {
            ty: "CDIDevice".into(),
            repeated: true,
            number: 17
        }
    );
    assert_eq!(cc["labels"].ty, "map<string, string>");
    // Options after the number, and a nested enum.
    assert_eq!(
        p.messages["LinuxSandboxSecurityContext"]["seccomp_profile_path"].number,
        7
    );
    assert_eq!(p.enums["ProfileType"]["Localhost"], 2);
    assert_eq!(p.messages["PodIP"]["ip"].number, 1);
}

#[test]
fn every_hand_written_message_matches_api_proto() {
    let p = parse(PROTO);
    let errs = check(&p, MESSAGES, ENUMS);
    assert!(
        errs.is_empty(),
        "api.rs differs from api.proto:\n{}",
        errs.join("\n")
    );
    let fields: usize = MESSAGES.iter().map(|m| m.fields.len()).sum();
    assert!(
        MESSAGES.len() >= 35 && fields >= 90,
        "{} messages, {fields} fields checked",
        MESSAGES.len()
    );
    // The calls the probe makes exist in upstream's services.
    for rpc in [
        "Version",
        "RunPodSandbox",
        "PodSandboxStatus",
        "CreateContainer",
        "StartContainer",
        "ContainerStatus",
        "StopContainer",
        "RemoveContainer",
        "StopPodSandbox",
        "RemovePodSandbox",
        "ImageStatus",
    ] {
        assert!(
            PROTO.contains(&format!("rpc {rpc}({rpc}Request) returns ({rpc}Response)")),
            "no rpc {rpc}"
        );
    }
}

/// The check catches a wrong number, a wrong name, a wrong type, a wrong cardinality, a wrong
/// enum value: each mutation of a real entry of the table is reported.
#[test]
fn a_wrong_field_is_caught() {
    let p = parse(PROTO);
    let md = MESSAGES
        .iter()
        .find(|m| m.name == "PodSandboxMetadata")
        .unwrap();
    let attempt = md.fields.iter().find(|f| f.name == "attempt").unwrap();
    assert_eq!(attempt.prost, r#"uint32, tag = "4""#);
    let cases: &[(FieldTable, &str)] = &[
        (
            FieldTable {
                prost: r#"uint32, tag = "5""#,
                ..*attempt
            },
            "number Some(5), api.proto says 4",
        ),
        (
            FieldTable {
                name: "attempts",
                ..*attempt
            },
            "no such field",
        ),
        (
            FieldTable {
                prost: r#"int64, tag = "4""#,
                ..*attempt
            },
            "kind int64, api.proto has uint32",
        ),
        (
            FieldTable {
                prost: r#"string, tag = "4""#,
                ..*attempt
            },
            "wire type 2, api.proto's is 0",
        ),
        (
            FieldTable {
                prost: r#"uint32, repeated, tag = "4""#,
                ..*attempt
            },
            "repeated true",
        ),
    ];
    for (f, want) in cases {
        let fields: &'static [FieldTable] = Box::leak(Box::new([*f]));
        let m = MessageTable {
            name: md.name,
            fields,
        };
        let errs = check(&p, &[m], &[]);
        assert!(errs.iter().any(|e| e.contains(want)), "{f:?}: {errs:?}");
    }
    // A message field that is repeated upstream (PodSandboxNetworkStatus.additional_ips) written
    // as a single one.
    let f = FieldTable {
        name: "additional_ips",
        prost: r#"message, optional, tag = "2""#,
        rust_type: "Option<PodIP>",
    };
    let errs = check(
        &p,
        &[MessageTable {
            name: "PodSandboxNetworkStatus",
            fields: Box::leak(Box::new([f])),
        }],
        &[],
    );
    assert!(errs.iter().any(|e| e.contains("repeated true")), "{errs:?}");
    // An enum value off by one.
    let e = EnumTable {
        name: "ContainerState",
        variants: &[
            ("ContainerCreated", 0),
            ("ContainerRunning", 2),
            ("ContainerExited", 2),
            ("ContainerUnknown", 3),
        ],
    };
    let errs = check(&p, &[], &[e]);
    assert_eq!(
        errs,
        ["ContainerState::ContainerRunning = 2, api.proto says 1"]
    );
}
