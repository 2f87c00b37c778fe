//! nacre-cri-probe: a CRI v1 client for tests. It talks to containerd's CRI plugin over its unix
//! socket the way kubelet does when it starts a pod (RunPodSandbox with the pod's metadata,
//! hostname, log directory and Linux options, so that the runtime sets the pod's network up
//! through CNI; PodSandboxStatus for the pod IP; CreateContainer with the sandbox's config;
//! StartContainer; ContainerStatus; StopPodSandbox; RemovePodSandbox), plus Version and
//! ImageStatus. It only goes into the test image: on a real node kubelet does this.
//!
//! [`api`]: the hand-written messages (checked against upstream's api.proto by tests/proto.rs);
//! [`grpc`]: unary gRPC over HTTP/2 (h2) on a unix socket; [`Runtime`]: the CRI calls.

pub mod api;
pub mod grpc;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use api::*;

const RUNTIME: &str = "/runtime.v1.RuntimeService/";
const IMAGE: &str = "/runtime.v1.ImageService/";

/// The CRI services of one runtime endpoint.
pub struct Runtime {
    client: grpc::Client,
}

impl Runtime {
    pub async fn connect(socket: &Path, timeout: Duration) -> Result<Runtime, grpc::Error> {
        Ok(Runtime {
            client: grpc::Client::connect(socket, timeout).await?,
        })
    }

    async fn runtime<Req: prost::Message, Resp: prost::Message + Default>(
        &mut self,
        method: &str,
        req: &Req,
    ) -> Result<Resp, grpc::Error> {
        self.client.call(&format!("{RUNTIME}{method}"), req).await
    }

    pub async fn version(&mut self) -> Result<VersionResponse, grpc::Error> {
        // kubelet sends its CRI API version, "0.1.0".
        let req = VersionRequest {
            version: "0.1.0".into(),
        };
        self.runtime("Version", &req).await
    }

    /// The image's status; `None` when the runtime does not have it.
    pub async fn image_status(&mut self, image: &str) -> Result<Option<Image>, grpc::Error> {
        let req = ImageStatusRequest {
            image: Some(ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            verbose: false,
        };
        let resp: ImageStatusResponse = self
            .client
            .call(&format!("{IMAGE}ImageStatus"), &req)
            .await?;
        Ok(resp.image)
    }

    pub async fn run_pod_sandbox(
        &mut self,
        config: &PodSandboxConfig,
    ) -> Result<String, grpc::Error> {
        let req = RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        };
        let resp: RunPodSandboxResponse = self.runtime("RunPodSandbox", &req).await?;
        Ok(resp.pod_sandbox_id)
    }

    pub async fn pod_sandbox_status(&mut self, id: &str) -> Result<PodSandboxStatus, grpc::Error> {
        let req = PodSandboxStatusRequest {
            pod_sandbox_id: id.into(),
            verbose: false,
        };
        let resp: PodSandboxStatusResponse = self.runtime("PodSandboxStatus", &req).await?;
        resp.status.ok_or_else(|| grpc::Error::Frame {
            method: format!("{RUNTIME}PodSandboxStatus"),
            why: format!("no status for pod {id}"),
        })
    }

    pub async fn create_container(
        &mut self,
        pod: &str,
        config: &ContainerConfig,
        sandbox: &PodSandboxConfig,
    ) -> Result<String, grpc::Error> {
        let req = CreateContainerRequest {
            pod_sandbox_id: pod.into(),
            config: Some(config.clone()),
            sandbox_config: Some(sandbox.clone()),
        };
        let resp: CreateContainerResponse = self.runtime("CreateContainer", &req).await?;
        Ok(resp.container_id)
    }

    pub async fn start_container(&mut self, id: &str) -> Result<(), grpc::Error> {
        let req = StartContainerRequest {
            container_id: id.into(),
        };
        let _: StartContainerResponse = self.runtime("StartContainer", &req).await?;
        Ok(())
    }

    pub async fn container_status(&mut self, id: &str) -> Result<ContainerStatus, grpc::Error> {
        let req = ContainerStatusRequest {
            container_id: id.into(),
            verbose: false,
        };
        let resp: ContainerStatusResponse = self.runtime("ContainerStatus", &req).await?;
        resp.status.ok_or_else(|| grpc::Error::Frame {
            method: format!("{RUNTIME}ContainerStatus"),
            why: format!("no status for container {id}"),
        })
    }

    pub async fn stop_container(&mut self, id: &str, timeout_s: i64) -> Result<(), grpc::Error> {
        let req = StopContainerRequest {
            container_id: id.into(),
            timeout: timeout_s,
        };
        let _: StopContainerResponse = self.runtime("StopContainer", &req).await?;
        Ok(())
    }

    pub async fn remove_container(&mut self, id: &str) -> Result<(), grpc::Error> {
        let req = RemoveContainerRequest {
            container_id: id.into(),
        };
        let _: RemoveContainerResponse = self.runtime("RemoveContainer", &req).await?;
        Ok(())
    }

    pub async fn stop_pod_sandbox(&mut self, id: &str) -> Result<(), grpc::Error> {
        let req = StopPodSandboxRequest {
            pod_sandbox_id: id.into(),
        };
        let _: StopPodSandboxResponse = self.runtime("StopPodSandbox", &req).await?;
        Ok(())
    }

    pub async fn remove_pod_sandbox(&mut self, id: &str) -> Result<(), grpc::Error> {
        let req = RemovePodSandboxRequest {
            pod_sandbox_id: id.into(),
        };
        let _: RemovePodSandboxResponse = self.runtime("RemovePodSandbox", &req).await?;
        Ok(())
    }
}

/// A pod's sandbox configuration as kubelet builds it (pkg/kubelet/kuberuntime
/// `generatePodSandboxConfig`): metadata, hostname, `/var/log/pods/<ns>_<name>_<uid>`, the
/// `io.kubernetes.pod.*` labels, the cgroupfs parent of a best-effort pod, and the pod's own
/// network, IPC and (per container) PID namespaces: the network one is what the runtime sets up
/// through CNI.
pub fn pod_sandbox_config(
    metadata: &PodSandboxMetadata,
    dns: Option<DNSConfig>,
) -> PodSandboxConfig {
    let m = metadata;
    let labels = HashMap::from([
        ("io.kubernetes.pod.name".to_string(), m.name.clone()),
        (
            "io.kubernetes.pod.namespace".to_string(),
            m.namespace.clone(),
        ),
        ("io.kubernetes.pod.uid".to_string(), m.uid.clone()),
    ]);
    PodSandboxConfig {
        metadata: Some(m.clone()),
        hostname: m.name.clone(),
        log_directory: format!("/var/log/pods/{}_{}_{}", m.namespace, m.name, m.uid),
        dns_config: dns,
        labels,
        annotations: HashMap::new(),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: format!("/kubepods/besteffort/pod{}", m.uid),
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption {
                    network: NamespaceMode::Pod as i32,
                    pid: NamespaceMode::Container as i32,
                    ipc: NamespaceMode::Pod as i32,
                    target_id: String::new(),
                }),
                ..Default::default()
            }),
            sysctls: HashMap::new(),
        }),
    }
}

/// A container's configuration as kubelet builds it (`generateContainerConfig`): metadata,
/// image, command and args, environment, the `io.kubernetes.container.name` label and the log
/// path `<name>/<attempt>.log` under the pod's log directory.
pub fn container_config(
    name: &str,
    image: &str,
    command: &[String],
    env: &[(String, String)],
) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        command: command.to_vec(),
        envs: env
            .iter()
            .map(|(k, v)| KeyValue {
                key: k.clone(),
                value: v.clone().into_bytes(),
            })
            .collect(),
        labels: HashMap::from([("io.kubernetes.container.name".to_string(), name.to_string())]),
        log_path: format!("{name}/0.log"),
        ..Default::default()
    }
}

/// The text of a CRI container log (containerd's format, one line per write:
/// `<RFC3339Nano time> <stdout|stderr> <F|P> <content>`): the contents, partial lines joined.
pub fn log_text(log: &str) -> String {
    let mut out = String::new();
    for line in log.lines() {
        let mut parts = line.splitn(4, ' ');
        let (_time, _stream, tag, content) =
            (parts.next(), parts.next(), parts.next(), parts.next());
        out.push_str(content.unwrap_or(""));
        if tag != Some("P") {
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn version_request_on_the_wire() {
        // Field 1, wire type 2 (0x0a), length 5, "0.1.0".
        let b = VersionRequest {
            version: "0.1.0".into(),
        }
        .encode_to_vec();
        assert_eq!(b, b"\x0a\x050.1.0");
    }

    #[test]
    fn pod_status_decodes_the_pod_ip_from_upstream_numbers() {
        // PodSandboxStatus{id:"p" (1), state: NOTREADY (3 = varint 1),
        // network (5) {ip (1) "10.32.1.2"}}, written field by field.
        let mut b = vec![0x0a, 1, b'p', 0x18, 1, 0x2a, 11, 0x0a, 9];
        b.extend_from_slice(b"10.32.1.2");
        let s = PodSandboxStatus::decode(&b[..]).unwrap();
        assert_eq!(s.id, "p");
        assert_eq!(s.state(), PodSandboxState::SandboxNotready);
        assert_eq!(s.network.unwrap().ip, "10.32.1.2");
    }

    #[test]
    fn kubelet_like_pod_config() {
        let m = PodSandboxMetadata {
            name: "web".into(),
            uid: "u1".into(),
            namespace: "default".into(),
            attempt: 0,
        };
        let c = pod_sandbox_config(&m, None);
        assert_eq!(c.log_directory, "/var/log/pods/default_web_u1");
        let ns = c
            .linux
            .unwrap()
            .security_context
            .unwrap()
            .namespace_options
            .unwrap();
        assert_eq!((ns.network, ns.pid, ns.ipc), (0, 1, 0));
        let cc = container_config("srv", "img", &["httpd".into()], &[("A".into(), "b".into())]);
        assert_eq!(cc.log_path, "srv/0.log");
        assert_eq!(cc.envs[0].value, b"b");
    }

    #[test]
    fn container_log_lines() {
        let log = "2026-12-03T20:00:00.1Z stdout F hello\n2026-12-03T20:00:00.2Z stdout P par\n2026-12-03T20:00:00.3Z stdout F tial\n";
        assert_eq!(log_text(log), "hello\npartial\n");
    }
}
