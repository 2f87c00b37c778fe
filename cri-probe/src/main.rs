//! nacre-cri-probe: run a pod through a CRI runtime the way kubelet does (test image only).
//! Readable lines by default, one JSON object per command with --json.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use nacre_cri_probe::api::{ContainerState, DNSConfig, PodSandboxMetadata, PodSandboxState};
use nacre_cri_probe::{container_config, log_text, pod_sandbox_config, Runtime};
use serde_json::{json, Value};

#[derive(Parser)]
#[command(
    version,
    about = "A CRI v1 test client: runs a pod through containerd's CRI plugin as kubelet does"
)]
struct Cli {
    /// The runtime's CRI socket.
    #[arg(long, default_value = "/run/containerd/containerd.sock")]
    socket: PathBuf,
    /// Seconds every CRI call may take.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
    /// One JSON object per command instead of lines.
    #[arg(long)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Version: the runtime's name and CRI version.
    Version,
    /// ImageStatus: whether the runtime has IMAGE (exit 1 if not).
    ImageStatus { image: String },
    /// RunPodSandbox (the pod's network through CNI), then PodSandboxStatus: the pod's id and IP.
    RunPod {
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "default")]
        namespace: String,
        /// The pod's UID (default: derived from namespace and name).
        #[arg(long)]
        uid: Option<String>,
        /// A DNS server for the pod's resolv.conf (may repeat).
        #[arg(long)]
        dns: Vec<String>,
        /// A DNS search domain (may repeat).
        #[arg(long)]
        search: Vec<String>,
    },
    /// PodSandboxStatus: state and IP.
    PodStatus { pod: String },
    /// CreateContainer (with the sandbox's config, as kubelet sends it) and StartContainer in POD,
    /// then ContainerStatus until the container runs (or, with --wait-exit, has exited: the
    /// probe then fails unless its exit code is 0).
    RunContainer {
        #[arg(long)]
        pod: String,
        #[arg(long)]
        name: String,
        #[arg(long)]
        image: String,
        /// NAME=VALUE (may repeat).
        #[arg(long)]
        env: Vec<String>,
        /// Wait up to S seconds for the container to exit (default: until it runs, 60 s).
        #[arg(long)]
        wait_exit: Option<u64>,
        /// Print the container's log (its output) once it has exited.
        #[arg(long)]
        log: bool,
        /// The command and its arguments.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// ContainerStatus: state and exit code.
    ContainerStatus { container: String },
    /// StopContainer (timeout 10 s).
    StopContainer { container: String },
    /// RemoveContainer.
    RemoveContainer { container: String },
    /// StopPodSandbox: stops its containers and tears its network down (CNI DEL).
    StopPod { pod: String },
    /// RemovePodSandbox.
    RemovePod { pod: String },
}

fn state_name(s: ContainerState) -> &'static str {
    match s {
        ContainerState::ContainerCreated => "created",
        ContainerState::ContainerRunning => "running",
        ContainerState::ContainerExited => "exited",
        ContainerState::ContainerUnknown => "unknown",
    }
}

fn pod_state_name(s: PodSandboxState) -> &'static str {
    match s {
        PodSandboxState::SandboxReady => "ready",
        PodSandboxState::SandboxNotready => "notready",
    }
}

fn emit(json_out: bool, line: String, v: Value) {
    if json_out {
        println!("{v}");
    } else {
        println!("{line}");
    }
}

async fn run(cli: Cli) -> Result<()> {
    let mut rt = Runtime::connect(&cli.socket, Duration::from_secs(cli.timeout)).await?;
    let j = cli.json;
    match cli.cmd {
        Cmd::Version => {
            let v = rt.version().await?;
            emit(
                j,
                format!(
                    "runtime {} {} (CRI {})",
                    v.runtime_name, v.runtime_version, v.runtime_api_version
                ),
                json!({"runtime_name": v.runtime_name, "runtime_version": v.runtime_version,
                       "runtime_api_version": v.runtime_api_version, "version": v.version}),
            );
        }
        Cmd::ImageStatus { image } => match rt.image_status(&image).await? {
            Some(i) => emit(
                j,
                format!(
                    "image {image}: {} ({} bytes) tags {}",
                    i.id,
                    i.size,
                    i.repo_tags.join(",")
                ),
                json!({"image": image, "present": true, "id": i.id, "size": i.size,
                       "repo_tags": i.repo_tags, "repo_digests": i.repo_digests, "pinned": i.pinned}),
            ),
            None => {
                emit(
                    j,
                    format!("image {image}: absent"),
                    json!({"image": image, "present": false}),
                );
                bail!("the runtime does not have image {image}");
            }
        },
        Cmd::RunPod {
            name,
            namespace,
            uid,
            dns,
            search,
        } => {
            let uid = uid.unwrap_or_else(|| format!("{namespace}-{name}-nacre-probe"));
            let dns = (!dns.is_empty() || !search.is_empty()).then(|| DNSConfig {
                servers: dns,
                searches: search,
                options: vec!["ndots:5".into()],
            });
            let meta = PodSandboxMetadata {
                name: name.clone(),
                uid,
                namespace,
                attempt: 0,
            };
            let started = Instant::now();
            let id = rt
                .run_pod_sandbox(&pod_sandbox_config(&meta, dns))
                .await
                .with_context(|| format!("RunPodSandbox for pod {name}"))?;
            let s = rt.pod_sandbox_status(&id).await?;
            let ip = s.network.as_ref().map(|n| n.ip.clone()).unwrap_or_default();
            let state = pod_state_name(s.state());
            emit(
                j,
                format!(
                    "pod {name} {id} {state} ip {} ({} ms)",
                    if ip.is_empty() { "none" } else { &ip },
                    started.elapsed().as_millis()
                ),
                json!({"pod": id, "name": name, "state": state, "ip": ip,
                       "ms": started.elapsed().as_millis() as u64}),
            );
            if s.state() != PodSandboxState::SandboxReady {
                bail!("pod {name} ({id}) is {state}, not ready");
            }
            if ip.is_empty() {
                bail!("pod {name} ({id}) has no IP: the CNI network gave it none");
            }
        }
        Cmd::PodStatus { pod } => {
            let s = rt.pod_sandbox_status(&pod).await?;
            let ip = s.network.as_ref().map(|n| n.ip.clone()).unwrap_or_default();
            let state = pod_state_name(s.state());
            let name = s
                .metadata
                .as_ref()
                .map(|m| m.name.clone())
                .unwrap_or_default();
            emit(
                j,
                format!(
                    "pod {name} {pod} {state} ip {}",
                    if ip.is_empty() { "none" } else { &ip }
                ),
                json!({"pod": pod, "name": name, "state": state, "ip": ip}),
            );
        }
        Cmd::RunContainer {
            pod,
            name,
            image,
            env,
            wait_exit,
            log,
            command,
        } => {
            let mut envs = Vec::new();
            for e in &env {
                let (k, v) = e
                    .split_once('=')
                    .with_context(|| format!("--env {e:?} is not NAME=VALUE"))?;
                envs.push((k.to_string(), v.to_string()));
            }
            // kubelet sends the pod's sandbox config with every CreateContainer: rebuilt here
            // from the sandbox's own metadata, as the pod was started.
            let s = rt.pod_sandbox_status(&pod).await?;
            let meta = s
                .metadata
                .with_context(|| format!("pod {pod}: the runtime returned no metadata"))?;
            let sandbox = pod_sandbox_config(&meta, None);
            let config = container_config(&name, &image, &command, &envs);
            let id = rt
                .create_container(&pod, &config, &sandbox)
                .await
                .with_context(|| format!("CreateContainer {name} in pod {pod}"))?;
            rt.start_container(&id)
                .await
                .with_context(|| format!("StartContainer {name} ({id})"))?;
            let wait = Duration::from_secs(wait_exit.unwrap_or(60));
            let deadline = Instant::now() + wait;
            let status = loop {
                let st = rt.container_status(&id).await?;
                let done = match st.state() {
                    ContainerState::ContainerExited => true,
                    ContainerState::ContainerRunning => wait_exit.is_none(),
                    _ => false,
                };
                if done {
                    break st;
                }
                if Instant::now() >= deadline {
                    bail!(
                        "container {name} ({id}) is {} after {} s",
                        state_name(st.state()),
                        wait.as_secs()
                    );
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            let state = state_name(status.state());
            let output = if log && status.state() == ContainerState::ContainerExited {
                let path = if status.log_path.is_empty() {
                    PathBuf::from(&sandbox.log_directory).join(&config.log_path)
                } else {
                    PathBuf::from(&status.log_path)
                };
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("read the container's log {}", path.display()))?;
                Some(log_text(&text))
            } else {
                None
            };
            emit(
                j,
                format!(
                    "container {name} {id} {state}{}",
                    if status.state() == ContainerState::ContainerExited {
                        format!(" code {}", status.exit_code)
                    } else {
                        String::new()
                    }
                ),
                json!({"container": id, "name": name, "pod": pod, "state": state,
                       "exit_code": status.exit_code, "reason": status.reason, "log": output}),
            );
            if !j {
                if let Some(out) = &output {
                    for line in out.lines() {
                        println!("  | {line}");
                    }
                }
            }
            if wait_exit.is_some() && status.exit_code != 0 {
                bail!(
                    "container {name} ({id}) exited with code {} ({})",
                    status.exit_code,
                    status.reason
                );
            }
        }
        Cmd::ContainerStatus { container } => {
            let st = rt.container_status(&container).await?;
            let state = state_name(st.state());
            emit(
                j,
                format!("container {container} {state} code {}", st.exit_code),
                json!({"container": container, "state": state, "exit_code": st.exit_code,
                       "reason": st.reason, "message": st.message}),
            );
        }
        Cmd::StopContainer { container } => {
            rt.stop_container(&container, 10).await?;
            emit(
                j,
                format!("container {container} stopped"),
                json!({"container": container, "stopped": true}),
            );
        }
        Cmd::RemoveContainer { container } => {
            rt.remove_container(&container).await?;
            emit(
                j,
                format!("container {container} removed"),
                json!({"container": container, "removed": true}),
            );
        }
        Cmd::StopPod { pod } => {
            rt.stop_pod_sandbox(&pod).await?;
            emit(
                j,
                format!("pod {pod} stopped"),
                json!({"pod": pod, "stopped": true}),
            );
        }
        Cmd::RemovePod { pod } => {
            rt.remove_pod_sandbox(&pod).await?;
            emit(
                j,
                format!("pod {pod} removed"),
                json!({"pod": pod, "removed": true}),
            );
        }
    }
    Ok(())
}

fn main() {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("nacre-cri-probe: error: tokio runtime: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = rt.block_on(run(cli)) {
        eprintln!("nacre-cri-probe: error: {e:#}");
        std::process::exit(1);
    }
}
