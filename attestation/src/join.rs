//! The join protocol between nacre-init and the key service (`nacre-keyservice`), over attested
//! TLS: one request and one response per connection, each a line of JSON. Every connection is
//! attested afresh (the service's nonce, a new quote), so no request rides on an earlier one.
//!
//! * `join`: the node announces its WireGuard key, underlay address and port; the service
//!   answers with the cluster id, the node's overlay address, the current peers and what kubelet
//!   needs to join. Only for a node whose PCR 15 is still zero (not yet joined in this boot).
//! * `disk-key`: the key of the state disk with this LUKS2 UUID (HKDF of the cluster's master
//!   secret and the UUID), for a node that joined; a disk is bound to the first node that asked.
//! * `peers`: the current peer set, for a member (PCR 15 holds this cluster's id).
//!
//! The server is trusted through the CA in the node's measured configuration; the node through
//! its evidence ([`crate::atls`]). A peer whose AK is trusted through its EK certificate is only
//! *pending* after the handshake: the verifier sends an `{"activation":"challenge",...}` line
//! (TPM2_MakeCredential for that AK and EK) and serves nothing until the peer's
//! `{"activation":"credential",...}` line returns the credential ([`challenge_peer`],
//! [`answer_challenge`], [`crate::credential`]). The node challenges an attested in-cluster
//! service before its request; the service challenges a node after reading the request. A refused attestation ends the handshake with a TLS alert (the
//! reason is in the service's decision log); a refused request gets a `refused` response.

use crate::atls::{
    ca_verifier, client_config_with, Attest, AttestedCertResolver, AttestedServerVerifier,
    AuthenticatingVerifier,
};
use crate::verify::{JoinKind, Verifier};
use rustls::pki_types::ServerName;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

/// The key service's default TCP port.
pub const DEFAULT_PORT: u16 = 7443;
/// The name in the key service's certificate (nodes reach it by address; this is what they
/// check the certificate against).
pub const SERVER_NAME: &str = "nacre-keyservice";
/// Longest request or response line accepted.
pub const MAX_LINE: usize = 1 << 20;

/// What a node announces about its WireGuard endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WgAnnounce {
    /// wg0's public key, base64 (as `wg` prints it).
    pub public_key: String,
    pub underlay: IpAddr,
    pub listen_port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    Join { wireguard: WgAnnounce },
    DiskKey { disk_uuid: String },
    Peers {},
}

impl Request {
    pub fn op(&self) -> &'static str {
        match self {
            Request::Join { .. } => "join",
            Request::DiskKey { .. } => "disk-key",
            Request::Peers {} => "peers",
        }
    }
}

/// One WireGuard peer as the service hands it out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerInfo {
    pub name: String,
    /// base64
    pub public_key: String,
    pub endpoint: SocketAddr,
    /// CIDRs, e.g. `10.244.0.2/32`.
    pub allowed_ips: Vec<String>,
}

/// What kubelet needs to join the Kubernetes cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubeletJoin {
    /// `https://host:port` of the API server, if the operator configured one.
    pub api_server: Option<String>,
    /// The API server's CA certificate(s), PEM: the bootstrap kubeconfig's
    /// `certificate-authority-data` (kubelet trusts the API server through it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_server_ca: Option<String>,
    /// A kubeadm-style bootstrap token `[a-z0-9]{6}.[a-z0-9]{16}`.
    pub bootstrap_token: String,
    /// The cluster DNS service's address (KubeletConfiguration `clusterDNS`), if configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_dns: Option<String>,
    /// KubeletConfiguration `clusterDomain` (`cluster.local` unless configured otherwise).
    #[serde(default = "default_cluster_domain")]
    pub cluster_domain: String,
}

fn default_cluster_domain() -> String {
    "cluster.local".into()
}

/// The cluster's pod network as the service allocated it to this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PodNetwork {
    /// This node's pod range (`10.32.1.0/24`): its CNI bridge and host-local IPAM serve it; the
    /// other nodes route it through wg0 to this node only (its WireGuard `allowed_ips`).
    pub pod_range: String,
    /// The whole cluster's pod range (`10.32.0.0/16`), each node's range inside it.
    pub pod_cidr: String,
    /// The cluster's service range (`10.96.0.0/12`), if configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_cidr: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Joined {
    /// The node's name in the cluster (`node-<n>`).
    pub node: String,
    /// 32 bytes, hex: nacre-init extends it into PCR 15 once the join is complete.
    pub cluster_id: String,
    /// The node's overlay address on wg0 (a host CIDR, `10.244.0.3/32`).
    pub overlay: String,
    pub peers: Vec<PeerInfo>,
    /// The pod network (absent when the cluster was initialized without one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<PodNetwork>,
    pub kubelet: KubeletJoin,
    /// Whether the service knew this node (same attestation key) from an earlier boot.
    pub rejoin: bool,
}

// One answer per connection: the size of `Joined` does not matter (and boxing it would change
// every constructor of the shared contract).
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Response {
    Joined(Joined),
    DiskKey {
        /// base64 of the 64-byte disk key
        key: SecretB64,
    },
    Peers {
        peers: Vec<PeerInfo>,
    },
    Refused {
        reason: String,
    },
}

/// The first line an attested (in-cluster) service sends after the handshake, once it verified
/// the client: its evidence for this connection ([`crate::atls`], mutual mode).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerEvidenceLine {
    #[serde(rename = "server-evidence")]
    pub evidence: crate::evidence::Evidence,
}

/// A secret in base64 (a disk key in a [`Response::DiskKey`]): wiped from memory when dropped,
/// never printed by `Debug` (`Display` is not implemented). [`Self::expose`] gives the text.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretB64(zeroize::Zeroizing<String>);

impl SecretB64 {
    pub fn new(b64: String) -> Self {
        SecretB64(zeroize::Zeroizing::new(b64))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretB64 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretB64(<{} characters withheld>)", self.0.len())
    }
}

impl Serialize for SecretB64 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for SecretB64 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(SecretB64::new)
    }
}

impl Response {
    /// The kind of answer, for messages (never its content: a disk key must not reach a log).
    pub fn kind(&self) -> &'static str {
        match self {
            Response::Joined(_) => "joined",
            Response::DiskKey { .. } => "disk-key",
            Response::Peers { .. } => "peers",
            Response::Refused { .. } => "refused",
        }
    }
}

/// Why a call failed: `Unreachable` may be retried; `Refused` and `Protocol` may not (the node
/// fails closed).
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("key service {endpoint} unreachable: {reason}")]
    Unreachable { endpoint: String, reason: String },
    #[error("key service {endpoint} refused this node: {reason}")]
    Refused { endpoint: String, reason: String },
    #[error("key service {endpoint}: {reason}")]
    Protocol { endpoint: String, reason: String },
}

impl CallError {
    pub fn retryable(&self) -> bool {
        matches!(self, CallError::Unreachable { .. })
    }
}

/// How a node trusts the key service.
#[derive(Clone)]
enum ServerTrust {
    /// A CA in the node's measured configuration (the service on an operator's machine).
    Ca(rustls::RootCertStore),
    /// The service's own attestation (it runs on an attested control-plane node): mutual
    /// attested TLS, the node's nonce in SNI, the service's evidence checked by this verifier.
    Attested(Arc<dyn Verifier>),
}

/// A node's client of the key service.
pub struct Client {
    endpoint: String,
    trust: ServerTrust,
    attest: Arc<dyn Attest>,
    timeout: Duration,
}

impl Client {
    /// `endpoint` is `host:port`; `ca_pem` the service CA's certificate(s), PEM.
    pub fn new(
        endpoint: &str,
        ca_pem: &[u8],
        attest: Arc<dyn Attest>,
        timeout: Duration,
    ) -> Result<Client, String> {
        use rustls::pki_types::{pem::PemObject, CertificateDer};
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(ca_pem) {
            let c = c.map_err(|e| format!("CA certificate: {e}"))?;
            roots.add(c).map_err(|e| format!("CA certificate: {e}"))?;
        }
        if roots.is_empty() {
            return Err("no CA certificate in the PEM".into());
        }
        Ok(Client {
            endpoint: endpoint.to_string(),
            trust: ServerTrust::Ca(roots),
            attest,
            timeout,
        })
    }

    /// A client that trusts the service by its attestation (mutual attested TLS): the service's
    /// evidence must satisfy `verifier` (its golden manifests, its AK trust).
    pub fn attested(
        endpoint: &str,
        verifier: Arc<dyn Verifier>,
        attest: Arc<dyn Attest>,
        timeout: Duration,
    ) -> Client {
        Client {
            endpoint: endpoint.to_string(),
            trust: ServerTrust::Attested(verifier),
            attest,
            timeout,
        }
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// One attested request. A `refused` response becomes [`CallError::Refused`].
    pub fn call(&self, req: &Request) -> Result<Response, CallError> {
        let unreachable = |reason: String| CallError::Unreachable {
            endpoint: self.endpoint.clone(),
            reason,
        };
        let protocol = |reason: String| CallError::Protocol {
            endpoint: self.endpoint.clone(),
            reason,
        };
        let addr = self
            .endpoint
            .to_socket_addrs()
            .map_err(|e| unreachable(format!("resolving: {e}")))?
            .next()
            .ok_or_else(|| unreachable("no address".into()))?;
        let mut sock = TcpStream::connect_timeout(&addr, self.timeout)
            .map_err(|e| unreachable(e.to_string()))?;
        sock.set_read_timeout(Some(self.timeout))
            .and_then(|()| sock.set_write_timeout(Some(self.timeout)))
            .map_err(|e| unreachable(e.to_string()))?;
        let resolver = Arc::new(AttestedCertResolver::new(Box::new(self.attest.clone())));
        let mut server_verifier = None;
        let (inner, name): (Arc<dyn rustls::client::danger::ServerCertVerifier>, _) = match &self
            .trust
        {
            ServerTrust::Ca(roots) => (
                ca_verifier(roots.clone())
                    .map_err(|e| protocol(format!("TLS configuration: {e}")))?,
                ServerName::try_from(SERVER_NAME)
                    .map_err(|e| protocol(format!("server name: {e}")))?,
            ),
            ServerTrust::Attested(v) => {
                // The service runs on an initialized control-plane node: its PCR 15 is its
                // cluster's, as its golden manifest says.
                let sv = Arc::new(
                    AttestedServerVerifier::new(v.clone(), JoinKind::Rejoin).map_err(protocol)?,
                );
                let name = sv.server_name();
                server_verifier = Some(sv.clone());
                (sv, name)
            }
        };
        // Whether the service proved itself before an alert arrives decides what the alert
        // means ([`Client::classify`]).
        let auth = AuthenticatingVerifier::new(inner);
        let config = client_config_with(auth.clone(), resolver)
            .map_err(|e| protocol(format!("TLS configuration: {e}")))?;
        let mut conn = rustls::ClientConnection::new(Arc::new(config), name)
            .map_err(|e| protocol(format!("TLS: {e}")))?;
        let mut tls = rustls::Stream::new(&mut conn, &mut sock);
        // When the service counts as authenticated: with a CA, once its certificate and
        // handshake signature were verified; attested (mutual), once its evidence, sent after
        // the handshake, was accepted and its AK proven (credential activation).
        let attested_ok = std::cell::Cell::new(false);
        let authenticated = || match &server_verifier {
            Some(_) => attested_ok.get(),
            None => auth.authenticated(),
        };
        let io_err = |e: std::io::Error| self.classify(e, authenticated());
        // Before the attested service is authenticated, whatever goes wrong may be an attacker
        // on the path: a transport error, retried.
        let not_yet = |what: String| {
            unreachable(format!(
                "{what} (the service is not authenticated yet: retried)"
            ))
        };
        if let Some(sv) = &server_verifier {
            while tls.conn.is_handshaking() {
                tls.conn.complete_io(tls.sock).map_err(io_err)?;
            }
            // The service quotes only once it verified this node: its evidence is the first
            // line after the handshake (crate::atls, mutual mode).
            let mut first = Vec::new();
            read_line(&mut BufReader::new(&mut tls), &mut first).map_err(io_err)?;
            // A service that trusts this node's AK through its EK certificate proves it first
            // (credential activation), before it quotes.
            if let Ok(crate::credential::ActivationMessage::Challenge(c)) =
                serde_json::from_slice(&first)
            {
                answer_challenge(&mut tls, &c, self.attest.as_ref()).map_err(|e| match e {
                    ActivationError::Io(e) => io_err(e),
                    ActivationError::Refused(reason) => not_yet(format!(
                        "answering the service's credential challenge: {reason}"
                    )),
                })?;
                first.clear();
                read_line(&mut BufReader::new(&mut tls), &mut first).map_err(io_err)?;
            }
            if first.is_empty() {
                return Err(not_yet(
                    "the service closed the connection without its evidence".into(),
                ));
            }
            let line: ServerEvidenceLine = serde_json::from_slice(&first)
                .map_err(|e| not_yet(format!("the service's evidence line does not parse: {e}")))?;
            let accepted = sv.verify_evidence(&line.evidence).map_err(|r| {
                not_yet(format!(
                    "the service's evidence is refused: {}: {}",
                    r.check, r.reason
                ))
            })?;
            challenge_peer(&mut tls, accepted).map_err(|e| match e {
                ActivationError::Io(e) => io_err(e),
                ActivationError::Refused(reason) => {
                    not_yet(format!("the key service's credential activation: {reason}"))
                }
            })?;
            attested_ok.set(true);
        }
        let mut line = serde_json::to_vec(req).map_err(|e| protocol(e.to_string()))?;
        line.push(b'\n');
        tls.write_all(&line).map_err(io_err)?;
        tls.flush().map_err(io_err)?;
        // The answer may hold a disk key: its bytes are wiped when dropped.
        let mut buf = zeroize::Zeroizing::new(Vec::new());
        read_line(&mut BufReader::new(&mut tls), &mut buf).map_err(io_err)?;
        // The service trusts this node's AK through its EK certificate: it challenges first.
        if let Ok(crate::credential::ActivationMessage::Challenge(c)) = serde_json::from_slice(&buf)
        {
            answer_challenge(&mut tls, &c, self.attest.as_ref()).map_err(|e| match e {
                ActivationError::Io(e) => io_err(e),
                ActivationError::Refused(reason) => protocol(reason),
            })?;
            buf.clear();
            read_line(&mut BufReader::new(&mut tls), &mut buf).map_err(io_err)?;
        }
        if buf.is_empty() {
            return Err(protocol("closed the connection without an answer".into()));
        }
        let resp: Response = serde_json::from_slice(&buf)
            .map_err(|e| protocol(format!("answer does not parse: {e}")))?;
        if let Response::Refused { reason } = resp {
            return Err(CallError::Refused {
                endpoint: self.endpoint.clone(),
                reason,
            });
        }
        Ok(resp)
    }

    /// I/O errors during the exchange. The service refuses an attestation with one alert,
    /// `handshake_failure` (its certificate verifier's error); only that alert, and only once
    /// the server proved its identity in this handshake (`server_authenticated`), is a
    /// refusal. Every other TLS error may be provoked by whoever is on the path (a forged
    /// plaintext alert or record before authentication; a flipped byte in our records, which
    /// the real server answers with `bad_record_mac`; injected bytes, which fail to decrypt):
    /// those are transport errors, retried like an unreachable service (a node is not powered
    /// off, wg0's peers are not emptied). A real misconfiguration (a service this node does not
    /// trust) still fails closed when the retries run out, with this error named.
    fn classify(&self, e: std::io::Error, server_authenticated: bool) -> CallError {
        let endpoint = self.endpoint.clone();
        if let Some(tls) = e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return match tls {
                rustls::Error::AlertReceived(rustls::AlertDescription::HandshakeFailure)
                    if server_authenticated =>
                {
                    CallError::Refused {
                        endpoint,
                        reason: "TLS alert HandshakeFailure during attestation (the service's decision log says which check failed)".into(),
                    }
                }
                other if server_authenticated => CallError::Unreachable {
                    endpoint,
                    reason: format!("TLS: {other} (not the service's refusal: retried)"),
                },
                other => CallError::Unreachable {
                    endpoint,
                    reason: format!(
                        "TLS: {other} before the service proved its identity (not trusted: retried)"
                    ),
                },
            };
        }
        CallError::Unreachable {
            endpoint,
            reason: e.to_string(),
        }
    }
}

/// Why a credential-activation exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Refused(String),
}

fn write_message(
    s: &mut impl Write,
    m: &crate::credential::ActivationMessage,
) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(m).map_err(std::io::Error::other)?;
    line.push(b'\n');
    s.write_all(&line)?;
    s.flush()
}

/// The verifier's side of credential activation on an attested connection (after the
/// handshake, before anything is served): a peer acceptance that is pending
/// ([`crate::credential::Settled::Pending`], an AK trusted through an EK certificate) is
/// completed only if the peer returns the credential; a ready one is returned as it is. Both
/// directions: the key service checking a node, a node checking an in-cluster service.
pub fn challenge_peer<S: std::io::Read + Write>(
    stream: &mut S,
    accepted: crate::verify::Accepted,
) -> Result<crate::verify::Accepted, ActivationError> {
    use crate::credential::{settle, ActivationMessage, Settled};
    let pending = match settle(accepted) {
        Settled::Ready(a) => return Ok(a),
        Settled::Pending(p) => p,
    };
    write_message(
        stream,
        &ActivationMessage::Challenge(pending.challenge().clone()),
    )?;
    let mut buf = Vec::new();
    read_line(&mut BufReader::new(&mut *stream), &mut buf)?;
    if buf.is_empty() {
        return Err(ActivationError::Refused(
            "the peer closed the connection instead of answering the credential challenge".into(),
        ));
    }
    match serde_json::from_slice(&buf) {
        Ok(ActivationMessage::Credential { credential }) => pending
            .finish(&credential)
            .map_err(ActivationError::Refused),
        Ok(ActivationMessage::Challenge(_)) | Err(_) => Err(ActivationError::Refused(
            "the peer did not answer the credential challenge with a credential".into(),
        )),
    }
}

/// The prover's side: activate `challenge` with this TPM and send the credential back.
pub fn answer_challenge<S: Write>(
    stream: &mut S,
    challenge: &crate::credential::CredentialChallenge,
    attest: &dyn Attest,
) -> Result<(), ActivationError> {
    let credential = attest
        .activate_credential(challenge)
        .map_err(|e| ActivationError::Refused(format!("credential activation: {e}")))?;
    write_message(
        stream,
        &crate::credential::ActivationMessage::Credential { credential },
    )?;
    Ok(())
}

/// Read one `\n`-terminated line of at most [`MAX_LINE`] bytes (without the newline).
pub fn read_line(r: &mut impl BufRead, buf: &mut Vec<u8>) -> std::io::Result<()> {
    loop {
        let avail = match r.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if avail.is_empty() {
            return Ok(());
        }
        if let Some(i) = avail.iter().position(|&b| b == b'\n') {
            buf.extend_from_slice(&avail[..i]);
            r.consume(i + 1);
            return Ok(());
        }
        let n = avail.len();
        buf.extend_from_slice(avail);
        r.consume(n);
        if buf.len() > MAX_LINE {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("line longer than {MAX_LINE} bytes"),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_disk_key_answer_keeps_its_wire_form_and_is_never_printed() {
        let key = "q".repeat(86) + "==";
        let r = Response::DiskKey {
            key: SecretB64::new(key.clone()),
        };
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(json, format!(r#"{{"result":"disk-key","key":"{key}"}}"#));
        let back: Response = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r);
        let Response::DiskKey { key: k } = &back else {
            panic!()
        };
        assert_eq!(k.expose(), key);
        for shown in [format!("{r:?}"), r.kind().to_string()] {
            assert!(!shown.contains("qqqq"), "{shown}");
        }
    }

    #[test]
    fn wire_format_is_stable_and_strict() {
        let r = Request::DiskKey {
            disk_uuid: "u".into(),
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"op":"disk-key","disk_uuid":"u"}"#
        );
        assert_eq!(
            serde_json::to_string(&Request::Peers {}).unwrap(),
            r#"{"op":"peers"}"#
        );
        assert!(serde_json::from_str::<Request>(r#"{"op":"peers","x":1}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"op":"steal"}"#).is_err());
        let refused = Response::Refused {
            reason: "no".into(),
        };
        assert_eq!(
            serde_json::to_string(&refused).unwrap(),
            r#"{"result":"refused","reason":"no"}"#
        );
    }

    #[test]
    fn lines_are_bounded() {
        let mut buf = Vec::new();
        read_line(&mut &b"abc\ndef"[..], &mut buf).unwrap();
        assert_eq!(buf, b"abc");
        let long = vec![b'x'; MAX_LINE + 10];
        let mut buf = Vec::new();
        let mut r = BufReader::with_capacity(4096, &long[..]);
        assert!(read_line(&mut r, &mut buf).is_err());
    }
}
