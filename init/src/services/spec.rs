//! The services of `/etc/nacre/init.toml` (`[[service]]` tables), validated strictly: unknown
//! keys, duplicate or malformed names, unknown dependencies and dependency cycles are errors,
//! never defaults. [`from_config`] returns them in start order.
//!
//! ```toml
//! [[service]]
//! name = "containerd"
//! command = "/usr/bin/containerd"
//! args = ["--log-level", "warn"]
//! environment = { PATH = "/usr/sbin:/usr/bin:/sbin:/bin" }
//! ready = { socket = "/run/containerd/containerd.sock" }   # or { file = "/run/x.ready" }
//! ready_timeout_s = 30          # first start: not ready by then stops the node
//! restart = "always"            # "always" | "on-failure" | "never"
//! restart_delay_ms = 200        # first restart delay, doubled at each exit ...
//! restart_delay_max_ms = 30000  # ... up to this
//! stop_timeout_s = 10           # SIGTERM, then SIGKILL after this
//! crash_loop = { restarts = 5, window_s = 300, action = "stop-node" }  # or "give-up"; or "off"
//!
//! [[service]]
//! name = "kubelet"
//! command = "/usr/bin/kubelet"
//! after = ["containerd"]
//! args_file = "/run/nacre/kubernetes/kubelet.args"   # more arguments, read at each start
//! on_exit = "nothing"           # or "poweroff" | "reboot": when it ends and is not restarted
//! ```
//!
//! `args_file`: arguments appended after `args`, read when the service is started (each
//! restart too): one argument a line, taken literally (no shell parsing, no quoting; leading
//! and trailing whitespace trimmed), empty lines ignored. A missing, unreadable, non-UTF-8 or
//! oversized ([`MAX_ARGS_FILE`]) file fails that start, naming the file.
//!
//! For the early boot tests, `[payload] command = "..."` is still accepted: it is a last service
//! `payload` run with `/bin/sh -c`, never restarted, whose exit powers the node off.

use super::crash_loop;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

/// When a service counts as ready (its dependents may start).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum Ready {
    /// A unix stream socket that accepts a connection.
    Socket(PathBuf),
    /// A file that exists.
    File(PathBuf),
    /// A one-shot task (`ready = "exited"`): ready once it has exited with status 0, and never
    /// restarted after that; a failure is restarted as `restart` says, and one that never
    /// succeeds within `ready_timeout_s` stops the node like any service not ready at boot.
    Exited,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Restart {
    #[default]
    Always,
    OnFailure,
    Never,
}

/// What the node does when the service ends and is not restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnExit {
    #[default]
    Nothing,
    Poweroff,
    Reboot,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    pub name: String,
    pub command: PathBuf,
    #[serde(default)]
    pub args: Vec<String>,
    /// More arguments, one a line, read at each start ([`read_args_file`]).
    #[serde(default)]
    pub args_file: Option<PathBuf>,
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
    #[serde(default)]
    pub after: Vec<String>,
    #[serde(default)]
    pub ready: Option<Ready>,
    #[serde(default = "default_ready_timeout")]
    pub ready_timeout_s: u64,
    #[serde(default)]
    pub restart: Restart,
    #[serde(default = "default_restart_delay")]
    pub restart_delay_ms: u64,
    #[serde(default = "default_restart_delay_max")]
    pub restart_delay_max_ms: u64,
    #[serde(default = "default_stop_timeout")]
    pub stop_timeout_s: u64,
    #[serde(default)]
    pub on_exit: OnExit,
    /// As written; [`ServiceSpec::crash_loop_limit`] is what applies.
    #[serde(default)]
    pub crash_loop: crash_loop::Setting,
}

impl ServiceSpec {
    /// At most this many restarts in a window (None: restarted without limit): the service's
    /// `crash_loop`, or the default for its name.
    pub fn crash_loop_limit(&self) -> Option<crash_loop::Limit> {
        if self.restart == Restart::Never {
            return None;
        }
        self.crash_loop.effective(&self.name)
    }
}

fn default_ready_timeout() -> u64 {
    60
}
fn default_restart_delay() -> u64 {
    200
}
fn default_restart_delay_max() -> u64 {
    30_000
}
fn default_stop_timeout() -> u64 {
    10
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Payload {
    command: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    #[error("{config}: [[service]]: {0}", config = crate::config::CONFIG)]
    Parse(String),
    #[error("{0}")]
    Payload(String),
    #[error("service {name:?}: {reason}")]
    Invalid { name: String, reason: String },
    #[error("two services are named {0:?}")]
    Duplicate(String),
    #[error("service {name:?} is after {dep:?}, which is not a service")]
    UnknownDependency { name: String, dep: String },
    #[error("dependency cycle: {}", .0.join(" -> "))]
    Cycle(Vec<String>),
}

/// Every service of the configuration, validated, in start order.
pub fn from_config(cfg: &toml::Table) -> Result<Vec<ServiceSpec>, SpecError> {
    let mut specs: Vec<ServiceSpec> = match cfg.get("service") {
        None => Vec::new(),
        Some(v) => v
            .clone()
            .try_into()
            .map_err(|e: toml::de::Error| SpecError::Parse(e.to_string()))?,
    };
    let payload = crate::config::section::<Payload>(cfg, "payload")
        .map_err(|e| SpecError::Payload(e.to_string()))?;
    if let Some(p) = payload {
        specs.push(ServiceSpec {
            name: "payload".into(),
            command: "/bin/sh".into(),
            args: vec!["-c".into(), p.command],
            args_file: None,
            environment: BTreeMap::new(),
            after: specs.iter().map(|s| s.name.clone()).collect(),
            ready: None,
            ready_timeout_s: default_ready_timeout(),
            restart: Restart::Never,
            restart_delay_ms: default_restart_delay(),
            restart_delay_max_ms: default_restart_delay_max(),
            stop_timeout_s: default_stop_timeout(),
            on_exit: OnExit::Poweroff,
            crash_loop: crash_loop::Setting::Default,
        });
    }
    for s in &specs {
        validate(s)?;
    }
    start_order(specs)
}

fn validate(s: &ServiceSpec) -> Result<(), SpecError> {
    let bad = |reason: String| SpecError::Invalid {
        name: s.name.clone(),
        reason,
    };
    let name_ok = !s.name.is_empty()
        && s.name.len() <= 64
        && s.name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'.');
    if !name_ok {
        return Err(bad(
            "a name is 1 to 64 of A-Z a-z 0-9 - _ . (it prefixes the service's console lines)"
                .into(),
        ));
    }
    if !s.command.is_absolute() {
        return Err(bad(format!(
            "command {} is not an absolute path",
            s.command.display()
        )));
    }
    let no_nul = |v: &str| !v.contains('\0');
    if !s.args.iter().all(|a| no_nul(a)) || !no_nul(&s.command.to_string_lossy()) {
        return Err(bad("a NUL byte in the command or its arguments".into()));
    }
    for (k, v) in &s.environment {
        if k.is_empty() || k.contains('=') || !no_nul(k) || !no_nul(v) {
            return Err(bad(format!("environment variable {k:?} is malformed")));
        }
    }
    if let Some(p) = &s.args_file {
        if !p.is_absolute() {
            return Err(bad(format!(
                "args_file {} is not an absolute path",
                p.display()
            )));
        }
    }
    match &s.ready {
        Some(Ready::Socket(p)) | Some(Ready::File(p)) if !p.is_absolute() => {
            return Err(bad(format!(
                "readiness path {} is not absolute",
                p.display()
            )))
        }
        _ => {}
    }
    if s.ready_timeout_s == 0 || s.stop_timeout_s == 0 {
        return Err(bad("timeouts must be at least 1 s".into()));
    }
    if s.restart_delay_ms == 0 || s.restart_delay_max_ms < s.restart_delay_ms {
        return Err(bad(
            "restart_delay_ms must be > 0 and at most restart_delay_max_ms".into(),
        ));
    }
    if s.after.iter().any(|d| d == &s.name) {
        return Err(bad("it is after itself".into()));
    }
    if let crash_loop::Setting::Limit(l) = &s.crash_loop {
        l.validate().map_err(bad)?;
    }
    if s.restart == Restart::Never && s.crash_loop.is_set() {
        return Err(bad(
            "crash_loop is set but restart = \"never\" (it is never restarted)".into(),
        ));
    }
    Ok(())
}

/// The largest `args_file` read.
pub const MAX_ARGS_FILE: u64 = 64 * 1024;

/// A service's `args_file`: one argument a line, trimmed, empty lines skipped.
pub fn read_args_file(path: &std::path::Path) -> Result<Vec<String>, String> {
    use std::io::Read;
    let what = |e: &dyn std::fmt::Display| format!("args_file {}: {e}", path.display());
    let f = std::fs::File::open(path).map_err(|e| what(&e))?;
    let mut bytes = Vec::new();
    f.take(MAX_ARGS_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| what(&e))?;
    if bytes.len() as u64 > MAX_ARGS_FILE {
        return Err(what(&format!("larger than {MAX_ARGS_FILE} bytes")));
    }
    let text = String::from_utf8(bytes).map_err(|e| what(&format!("not UTF-8 ({e})")))?;
    if text.contains('\0') {
        return Err(what(&"a NUL byte"));
    }
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect())
}

/// Dependencies first; among services free to start, the configuration's order.
fn start_order(specs: Vec<ServiceSpec>) -> Result<Vec<ServiceSpec>, SpecError> {
    let mut index = HashMap::new();
    for (i, s) in specs.iter().enumerate() {
        if index.insert(s.name.clone(), i).is_some() {
            return Err(SpecError::Duplicate(s.name.clone()));
        }
    }
    let mut deps: Vec<Vec<usize>> = Vec::new();
    for s in &specs {
        let mut d = Vec::new();
        for dep in &s.after {
            match index.get(dep) {
                Some(&j) => d.push(j),
                None => {
                    return Err(SpecError::UnknownDependency {
                        name: s.name.clone(),
                        dep: dep.clone(),
                    })
                }
            }
        }
        deps.push(d);
    }
    let n = specs.len();
    let mut placed = vec![false; n];
    let mut order = Vec::with_capacity(n);
    while order.len() < n {
        let next = (0..n).find(|&i| !placed[i] && deps[i].iter().all(|&d| placed[d]));
        match next {
            Some(i) => {
                placed[i] = true;
                order.push(i);
            }
            None => return Err(SpecError::Cycle(find_cycle(&specs, &deps, &placed))),
        }
    }
    let mut slots: Vec<Option<ServiceSpec>> = specs.into_iter().map(Some).collect();
    Ok(order.into_iter().filter_map(|i| slots[i].take()).collect())
}

/// One cycle among the services not placed (each of them has an unplaced dependency, so
/// following those must come back to a service already on the path).
fn find_cycle(specs: &[ServiceSpec], deps: &[Vec<usize>], placed: &[bool]) -> Vec<String> {
    let Some(start) = (0..specs.len()).find(|&i| !placed[i]) else {
        return Vec::new();
    };
    let mut path = vec![start];
    loop {
        let cur = path[path.len() - 1];
        let Some(&next) = deps[cur].iter().find(|&&d| !placed[d]) else {
            return path.iter().map(|&i| specs[i].name.clone()).collect();
        };
        if let Some(pos) = path.iter().position(|&p| p == next) {
            let mut cycle: Vec<String> =
                path[pos..].iter().map(|&i| specs[i].name.clone()).collect();
            cycle.push(specs[next].name.clone());
            return cycle;
        }
        path.push(next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<ServiceSpec>, SpecError> {
        from_config(&crate::config::load(Some(text)).unwrap())
    }

    fn names(v: &[ServiceSpec]) -> Vec<&str> {
        v.iter().map(|s| s.name.as_str()).collect()
    }

    const EXAMPLE: &str = r#"
[[service]]
name = "kubelet"
command = "/usr/bin/kubelet"
args = ["--config", "/etc/kubernetes/kubelet.yaml"]
after = ["containerd"]
on_exit = "poweroff"

[[service]]
name = "containerd"
command = "/usr/bin/containerd"
environment = { PATH = "/usr/sbin:/usr/bin" }
ready = { socket = "/run/containerd/containerd.sock" }
ready_timeout_s = 20
restart = "on-failure"

[[service]]
name = "logger"
command = "/bin/logger"
ready = { file = "/run/logger.ready" }
"#;

    #[test]
    fn example_parses_in_dependency_order() {
        let s = parse(EXAMPLE).unwrap();
        assert_eq!(names(&s), ["containerd", "kubelet", "logger"]);
        let c = &s[0];
        assert_eq!(
            c.ready,
            Some(Ready::Socket("/run/containerd/containerd.sock".into()))
        );
        assert_eq!(c.ready_timeout_s, 20);
        assert_eq!(c.restart, Restart::OnFailure);
        assert_eq!(c.environment["PATH"], "/usr/sbin:/usr/bin");
        assert_eq!(c.on_exit, OnExit::Nothing);
        assert_eq!(s[1].args, ["--config", "/etc/kubernetes/kubelet.yaml"]);
        assert_eq!(s[1].restart, Restart::Always);
        assert_eq!(s[1].on_exit, OnExit::Poweroff);
        assert_eq!(s[2].ready, Some(Ready::File("/run/logger.ready".into())));
        assert!(parse("").unwrap().is_empty());
    }

    #[test]
    fn a_one_shot_is_ready_when_it_has_exited() {
        let s = parse(
            "[[service]]\nname = \"import\"\ncommand = \"/usr/bin/ctr\"\nready = \"exited\"\nrestart = \"on-failure\"\n",
        )
        .unwrap();
        assert_eq!(s[0].ready, Some(Ready::Exited));
        assert!(parse("[[service]]\nname = \"x\"\ncommand = \"/x\"\nready = \"exit\"\n").is_err());
    }

    #[test]
    fn order_is_topological_and_otherwise_the_files() {
        let cfg = |list: &[(&str, &[&str])]| {
            list.iter()
                .map(|(n, after)| {
                    format!("[[service]]\nname = \"{n}\"\ncommand = \"/x\"\nafter = {after:?}\n")
                })
                .collect::<String>()
        };
        let s = parse(&cfg(&[
            ("d", &["b", "c"]),
            ("c", &["a"]),
            ("b", &[]),
            ("a", &[]),
        ]))
        .unwrap();
        assert_eq!(names(&s), ["b", "a", "c", "d"]);
        let s = parse(&cfg(&[("x", &[]), ("y", &[]), ("z", &[])])).unwrap();
        assert_eq!(names(&s), ["x", "y", "z"]);
    }

    #[test]
    fn cycles_are_errors_naming_the_cycle() {
        let text = r#"
[[service]]
name = "free"
command = "/x"
[[service]]
name = "a"
command = "/x"
after = ["c"]
[[service]]
name = "b"
command = "/x"
after = ["a", "free"]
[[service]]
name = "c"
command = "/x"
after = ["b"]
"#;
        match parse(text) {
            Err(SpecError::Cycle(c)) => {
                assert_eq!(c.first(), c.last());
                assert_eq!(c.len(), 4, "{c:?}");
                for n in ["a", "b", "c"] {
                    assert!(c.iter().any(|x| x == n), "{c:?}");
                }
            }
            other => panic!("{other:?}"),
        }
        let own = "[[service]]\nname = \"a\"\ncommand = \"/x\"\nafter = [\"a\"]\n";
        assert!(matches!(parse(own), Err(SpecError::Invalid { .. })));
    }

    #[test]
    fn strict_errors() {
        let base = "[[service]]\nname = \"a\"\ncommand = \"/x\"\n";
        let bad = [
            (format!("{base}comand = \"/y\"\n"), "comand"),
            (format!("{base}after = [\"nope\"]\n"), "nope"),
            (format!("{base}{base}"), "two services"),
            (format!("{base}restart = \"sometimes\"\n"), "sometimes"),
            (format!("{base}ready = {{ port = 80 }}\n"), "port"),
            (
                format!("{base}ready = {{ socket = \"rel\" }}\n"),
                "absolute",
            ),
            (format!("{base}on_exit = \"explode\"\n"), "explode"),
            (format!("{base}ready_timeout_s = 0\n"), "at least"),
            (
                format!("{base}restart_delay_ms = 5000\nrestart_delay_max_ms = 10\n"),
                "restart_delay",
            ),
            (
                format!("{base}environment = {{ \"A=B\" = \"x\" }}\n"),
                "A=B",
            ),
            (
                "[[service]]\nname = \"a\"\ncommand = \"bin/x\"\n".into(),
                "absolute",
            ),
            (
                "[[service]]\nname = \"a b\"\ncommand = \"/x\"\n".into(),
                "name",
            ),
            (
                "[[service]]\nname = \"\"\ncommand = \"/x\"\n".into(),
                "name",
            ),
            ("[[service]]\nname = \"a\"\n".into(), "command"),
            ("service = 3\n".into(), "service"),
            ("[payload]\ncommand = \"x\"\nextra = 1\n".into(), "extra"),
            (
                format!("{base}crash_loop = {{ restarts = 3, window_s = 60 }}\n"),
                "action",
            ),
            (
                format!("{base}crash_loop = {{ restarts = 3, action = \"give-up\" }}\n"),
                "window_s",
            ),
            (
                format!("{base}crash_loop = {{ window_s = 3, action = \"give-up\" }}\n"),
                "restarts",
            ),
            (
                format!("{base}crash_loop = {{ restarts = 3, window_s = 60, action = \"poweroff\" }}\n"),
                "poweroff",
            ),
            (
                format!("{base}crash_loop = {{ restarts = 3, window_s = 60, action = \"give-up\", burst = 1 }}\n"),
                "burst",
            ),
            (
                format!("{base}crash_loop = {{ restarts = 0, window_s = 60, action = \"give-up\" }}\n"),
                "crash_loop.restarts",
            ),
            (
                format!("{base}crash_loop = {{ restarts = -1, window_s = 60, action = \"give-up\" }}\n"),
                "crash_loop",
            ),
            (
                format!("{base}crash_loop = {{ restarts = 3, window_s = 0, action = \"give-up\" }}\n"),
                "crash_loop.window_s",
            ),
            (format!("{base}crash_loop = \"on\"\n"), "\"on\""),
            (format!("{base}crash_loop = 5\n"), "crash_loop"),
            (
                format!("{base}restart = \"never\"\ncrash_loop = \"off\"\n"),
                "never",
            ),
        ];
        for (text, needle) in bad {
            let err = parse(&text).expect_err(&text).to_string();
            assert!(err.contains(needle), "{text}\n=> {err}");
        }
    }

    #[test]
    fn crash_loop_policies_and_their_defaults() {
        use crash_loop::{Action, Limit, Setting, DEFAULT};
        let text = r#"
[[service]]
name = "containerd"
command = "/usr/bin/containerd"
[[service]]
name = "kubelet"
command = "/usr/bin/kubelet"
restart = "on-failure"
crash_loop = { restarts = 3, window_s = 60, action = "give-up" }
[[service]]
name = "logger"
command = "/bin/logger"
[[service]]
name = "agent"
command = "/bin/agent"
crash_loop = { restarts = 10, window_s = 600, action = "stop-node" }
[[service]]
name = "once"
command = "/bin/once"
restart = "never"
"#;
        let s = parse(text).unwrap();
        assert_eq!(
            names(&s),
            ["containerd", "kubelet", "logger", "agent", "once"]
        );
        let limits: Vec<_> = s.iter().map(|x| x.crash_loop_limit()).collect();
        assert_eq!(s[0].crash_loop, Setting::Default);
        assert_eq!(
            limits,
            [
                Some(DEFAULT),
                Some(Limit {
                    restarts: 3,
                    window_s: 60,
                    action: Action::GiveUp
                }),
                None,
                Some(Limit {
                    restarts: 10,
                    window_s: 600,
                    action: Action::StopNode
                }),
                None,
            ]
        );
        assert_eq!(
            DEFAULT,
            Limit {
                restarts: 5,
                window_s: 300,
                action: Action::StopNode
            }
        );
        // "off": kubelet restarted without limit; a kubelet that is never restarted has none.
        let off =
            parse("[[service]]\nname = \"kubelet\"\ncommand = \"/k\"\ncrash_loop = \"off\"\n")
                .unwrap();
        assert_eq!(off[0].crash_loop, Setting::Off);
        assert_eq!(off[0].crash_loop_limit(), None);
        let never =
            parse("[[service]]\nname = \"kubelet\"\ncommand = \"/k\"\nrestart = \"never\"\n")
                .unwrap();
        assert_eq!(never[0].crash_loop_limit(), None);
        // [payload] is never restarted.
        let p = parse("[payload]\ncommand = \"x\"\n").unwrap();
        assert_eq!(p[0].crash_loop_limit(), None);
    }

    #[test]
    fn args_file_is_read_literally_one_argument_a_line() {
        let s = parse("[[service]]\nname = \"k\"\ncommand = \"/k\"\nargs_file = \"/run/k.args\"\n")
            .unwrap();
        assert_eq!(s[0].args_file, Some(PathBuf::from("/run/k.args")));
        assert_eq!(
            parse("[[service]]\nname = \"k\"\ncommand = \"/k\"\n").unwrap()[0].args_file,
            None
        );
        let e = parse("[[service]]\nname = \"k\"\ncommand = \"/k\"\nargs_file = \"k.args\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("args_file k.args is not an absolute path"),
            "{e}"
        );

        let dir = std::env::temp_dir().join(format!("nacre-args-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("a.args");
        std::fs::write(
            &f,
            "--node-ip=10.244.0.2\n\n  --config=/x y  \r\n'--quoted'\n$HOME\n",
        )
        .unwrap();
        assert_eq!(
            read_args_file(&f).unwrap(),
            [
                "--node-ip=10.244.0.2",
                "--config=/x y",
                "'--quoted'",
                "$HOME"
            ]
        );
        std::fs::write(&f, "").unwrap();
        assert!(read_args_file(&f).unwrap().is_empty());
        std::fs::write(&f, vec![b'a'; MAX_ARGS_FILE as usize + 1]).unwrap();
        let e = read_args_file(&f).unwrap_err();
        assert!(e.contains("a.args") && e.contains("larger than"), "{e}");
        std::fs::write(&f, b"--a\n\xff\n").unwrap();
        assert!(read_args_file(&f).unwrap_err().contains("UTF-8"));
        std::fs::write(&f, b"--a\0b\n").unwrap();
        assert!(read_args_file(&f).unwrap_err().contains("NUL"));
        let e = read_args_file(&dir.join("missing.args")).unwrap_err();
        assert!(
            e.contains("missing.args") && e.contains("No such file"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn payload_section_is_a_last_one_shot_service() {
        let s = parse("[payload]\ncommand = \"/etc/nacre/check.sh\"\n[[service]]\nname = \"c\"\ncommand = \"/c\"\n").unwrap();
        assert_eq!(names(&s), ["c", "payload"]);
        let p = &s[1];
        assert_eq!(p.command, PathBuf::from("/bin/sh"));
        assert_eq!(p.args, ["-c", "/etc/nacre/check.sh"]);
        assert_eq!(p.after, ["c"]);
        assert_eq!((p.restart, p.on_exit), (Restart::Never, OnExit::Poweroff));
    }
}
