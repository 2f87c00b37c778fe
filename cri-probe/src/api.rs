//! The subset of CRI v1 (`runtime.v1`, kubernetes/cri-api `pkg/apis/runtime/v1/api.proto`) that
//! kubelet uses to run one pod, written by hand with prost's derive: the field numbers and types
//! are upstream's (tests/proto.rs checks every field of every message here against the proto);
//! fields the probe neither sends nor reads are left out (proto3 decoding skips unknown fields,
//! and an absent field is its default on the other side).

use std::collections::HashMap;

/// A hand-written message's description, from the same tokens as its struct.
#[derive(Debug, Clone, Copy)]
pub struct MessageTable {
    /// The message's name in api.proto (the struct's name).
    pub name: &'static str,
    pub fields: &'static [FieldTable],
}

/// One field: its Rust name (the proto field's name) and its prost attribute as written.
#[derive(Debug, Clone, Copy)]
pub struct FieldTable {
    pub name: &'static str,
    /// e.g. `string, tag = "1"`, `message, optional, tag = "2"`, `map = "string, string", tag = "6"`.
    pub prost: &'static str,
    /// e.g. `Option<PodSandboxMetadata>`.
    pub rust_type: &'static str,
}

/// A hand-written enum's description: its name in api.proto and its variants (Rust name, value).
#[derive(Debug, Clone, Copy)]
pub struct EnumTable {
    pub name: &'static str,
    pub variants: &'static [(&'static str, i32)],
}

macro_rules! cri_messages {
    ($( $(#[doc = $doc:literal])* struct $name:ident {
        $( #[prost($($attr:tt)*)] $field:ident : $ty:ty, )*
    } )*) => {
        $(
            $(#[doc = $doc])*
            #[derive(Clone, PartialEq, ::prost::Message)]
            pub struct $name { $( #[prost($($attr)*)] pub $field: $ty, )* }
        )*
        /// Every hand-written message with its fields, for the check against api.proto.
        pub const MESSAGES: &[MessageTable] = &[$(MessageTable {
            name: stringify!($name),
            fields: &[$(FieldTable {
                name: stringify!($field),
                prost: stringify!($($attr)*),
                rust_type: stringify!($ty),
            },)*],
        },)*];
    };
}

macro_rules! cri_enums {
    ($( $(#[doc = $doc:literal])* enum $name:ident { $( $variant:ident = $value:literal, )* } )*) => {
        $(
            $(#[doc = $doc])*
            #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, ::prost::Enumeration)]
            #[repr(i32)]
            pub enum $name { $( $variant = $value, )* }
        )*
        /// Every hand-written enum with its values, for the check against api.proto.
        pub const ENUMS: &[EnumTable] = &[$(EnumTable {
            name: stringify!($name),
            variants: &[$((stringify!($variant), $value),)*],
        },)*];
    };
}

cri_enums! {
    /// Which namespace a pod's containers share (NamespaceOption).
    enum NamespaceMode {
        Pod = 0,
        Container = 1,
        Node = 2,
        Target = 3,
    }
    enum PodSandboxState {
        SandboxReady = 0,
        SandboxNotready = 1,
    }
    enum ContainerState {
        ContainerCreated = 0,
        ContainerRunning = 1,
        ContainerExited = 2,
        ContainerUnknown = 3,
    }
}

cri_messages! {
    struct VersionRequest {
        #[prost(string, tag = "1")] version: String,
    }
    struct VersionResponse {
        #[prost(string, tag = "1")] version: String,
        #[prost(string, tag = "2")] runtime_name: String,
        #[prost(string, tag = "3")] runtime_version: String,
        #[prost(string, tag = "4")] runtime_api_version: String,
    }
    struct ImageSpec {
        #[prost(string, tag = "1")] image: String,
        #[prost(map = "string, string", tag = "2")] annotations: HashMap<String, String>,
    }
    struct ImageStatusRequest {
        #[prost(message, optional, tag = "1")] image: Option<ImageSpec>,
        #[prost(bool, tag = "2")] verbose: bool,
    }
    struct ImageStatusResponse {
        #[prost(message, optional, tag = "1")] image: Option<Image>,
    }
    struct Image {
        #[prost(string, tag = "1")] id: String,
        #[prost(string, repeated, tag = "2")] repo_tags: Vec<String>,
        #[prost(string, repeated, tag = "3")] repo_digests: Vec<String>,
        #[prost(uint64, tag = "4")] size: u64,
        #[prost(bool, tag = "8")] pinned: bool,
    }
    struct PodSandboxMetadata {
        #[prost(string, tag = "1")] name: String,
        #[prost(string, tag = "2")] uid: String,
        #[prost(string, tag = "3")] namespace: String,
        #[prost(uint32, tag = "4")] attempt: u32,
    }
    struct DNSConfig {
        #[prost(string, repeated, tag = "1")] servers: Vec<String>,
        #[prost(string, repeated, tag = "2")] searches: Vec<String>,
        #[prost(string, repeated, tag = "3")] options: Vec<String>,
    }
    struct PodSandboxConfig {
        #[prost(message, optional, tag = "1")] metadata: Option<PodSandboxMetadata>,
        #[prost(string, tag = "2")] hostname: String,
        #[prost(string, tag = "3")] log_directory: String,
        #[prost(message, optional, tag = "4")] dns_config: Option<DNSConfig>,
        #[prost(map = "string, string", tag = "6")] labels: HashMap<String, String>,
        #[prost(map = "string, string", tag = "7")] annotations: HashMap<String, String>,
        #[prost(message, optional, tag = "8")] linux: Option<LinuxPodSandboxConfig>,
    }
    struct LinuxPodSandboxConfig {
        #[prost(string, tag = "1")] cgroup_parent: String,
        #[prost(message, optional, tag = "2")] security_context: Option<LinuxSandboxSecurityContext>,
        #[prost(map = "string, string", tag = "3")] sysctls: HashMap<String, String>,
    }
    struct LinuxSandboxSecurityContext {
        #[prost(message, optional, tag = "1")] namespace_options: Option<NamespaceOption>,
        #[prost(bool, tag = "4")] readonly_rootfs: bool,
        #[prost(int64, repeated, tag = "5")] supplemental_groups: Vec<i64>,
        #[prost(bool, tag = "6")] privileged: bool,
    }
    struct NamespaceOption {
        #[prost(enumeration = "NamespaceMode", tag = "1")] network: i32,
        #[prost(enumeration = "NamespaceMode", tag = "2")] pid: i32,
        #[prost(enumeration = "NamespaceMode", tag = "3")] ipc: i32,
        #[prost(string, tag = "4")] target_id: String,
    }
    struct RunPodSandboxRequest {
        #[prost(message, optional, tag = "1")] config: Option<PodSandboxConfig>,
        #[prost(string, tag = "2")] runtime_handler: String,
    }
    struct RunPodSandboxResponse {
        #[prost(string, tag = "1")] pod_sandbox_id: String,
    }
    struct PodSandboxStatusRequest {
        #[prost(string, tag = "1")] pod_sandbox_id: String,
        #[prost(bool, tag = "2")] verbose: bool,
    }
    struct PodSandboxStatusResponse {
        #[prost(message, optional, tag = "1")] status: Option<PodSandboxStatus>,
        #[prost(map = "string, string", tag = "2")] info: HashMap<String, String>,
    }
    struct PodSandboxStatus {
        #[prost(string, tag = "1")] id: String,
        #[prost(message, optional, tag = "2")] metadata: Option<PodSandboxMetadata>,
        #[prost(enumeration = "PodSandboxState", tag = "3")] state: i32,
        #[prost(int64, tag = "4")] created_at: i64,
        #[prost(message, optional, tag = "5")] network: Option<PodSandboxNetworkStatus>,
        #[prost(map = "string, string", tag = "7")] labels: HashMap<String, String>,
        #[prost(string, tag = "9")] runtime_handler: String,
    }
    struct PodSandboxNetworkStatus {
        #[prost(string, tag = "1")] ip: String,
        #[prost(message, repeated, tag = "2")] additional_ips: Vec<PodIP>,
    }
    struct PodIP {
        #[prost(string, tag = "1")] ip: String,
    }
    struct ContainerMetadata {
        #[prost(string, tag = "1")] name: String,
        #[prost(uint32, tag = "2")] attempt: u32,
    }
    struct KeyValue {
        #[prost(string, tag = "1")] key: String,
        #[prost(bytes = "vec", tag = "2")] value: Vec<u8>,
    }
    struct ContainerConfig {
        #[prost(message, optional, tag = "1")] metadata: Option<ContainerMetadata>,
        #[prost(message, optional, tag = "2")] image: Option<ImageSpec>,
        #[prost(string, repeated, tag = "3")] command: Vec<String>,
        #[prost(string, repeated, tag = "4")] args: Vec<String>,
        #[prost(string, tag = "5")] working_dir: String,
        #[prost(message, repeated, tag = "6")] envs: Vec<KeyValue>,
        #[prost(map = "string, string", tag = "9")] labels: HashMap<String, String>,
        #[prost(map = "string, string", tag = "10")] annotations: HashMap<String, String>,
        #[prost(string, tag = "11")] log_path: String,
        #[prost(bool, tag = "12")] stdin: bool,
        #[prost(bool, tag = "14")] tty: bool,
    }
    struct CreateContainerRequest {
        #[prost(string, tag = "1")] pod_sandbox_id: String,
        #[prost(message, optional, tag = "2")] config: Option<ContainerConfig>,
        #[prost(message, optional, tag = "3")] sandbox_config: Option<PodSandboxConfig>,
    }
    struct CreateContainerResponse {
        #[prost(string, tag = "1")] container_id: String,
    }
    struct StartContainerRequest {
        #[prost(string, tag = "1")] container_id: String,
    }
    struct StartContainerResponse {
    }
    struct ContainerStatusRequest {
        #[prost(string, tag = "1")] container_id: String,
        #[prost(bool, tag = "2")] verbose: bool,
    }
    struct ContainerStatusResponse {
        #[prost(message, optional, tag = "1")] status: Option<ContainerStatus>,
    }
    struct ContainerStatus {
        #[prost(string, tag = "1")] id: String,
        #[prost(message, optional, tag = "2")] metadata: Option<ContainerMetadata>,
        #[prost(enumeration = "ContainerState", tag = "3")] state: i32,
        #[prost(int64, tag = "4")] created_at: i64,
        #[prost(int64, tag = "5")] started_at: i64,
        #[prost(int64, tag = "6")] finished_at: i64,
        #[prost(int32, tag = "7")] exit_code: i32,
        #[prost(message, optional, tag = "8")] image: Option<ImageSpec>,
        #[prost(string, tag = "9")] image_ref: String,
        #[prost(string, tag = "10")] reason: String,
        #[prost(string, tag = "11")] message: String,
        #[prost(string, tag = "15")] log_path: String,
    }
    struct StopContainerRequest {
        #[prost(string, tag = "1")] container_id: String,
        #[prost(int64, tag = "2")] timeout: i64,
    }
    struct StopContainerResponse {
    }
    struct RemoveContainerRequest {
        #[prost(string, tag = "1")] container_id: String,
    }
    struct RemoveContainerResponse {
    }
    struct StopPodSandboxRequest {
        #[prost(string, tag = "1")] pod_sandbox_id: String,
    }
    struct StopPodSandboxResponse {
    }
    struct RemovePodSandboxRequest {
        #[prost(string, tag = "1")] pod_sandbox_id: String,
    }
    struct RemovePodSandboxResponse {
    }
}
