//! The cloud channels: the cluster configuration from the cloud's instance metadata server,
//! over plain HTTP to a link-local address ([`METADATA_ADDR`]) once the underlay is up.
//!
//! | Source | Request | What comes back |
//! |---|---|---|
//! | `aws-imds` | IMDSv2: `PUT /latest/api/token` with `X-aws-ec2-metadata-token-ttl-seconds: 60` → a session token; then `GET /latest/user-data` with `X-aws-ec2-metadata-token: <token>` | the instance's user data, decoded by IMDS: the `cluster.toml` bytes as given (`aws ec2 run-instances --user-data file://cluster.toml`); 404 when the instance has none |
//! | `gcp-metadata` | `GET /computeMetadata/v1/instance/attributes/nacre-cluster` with `Metadata-Flavor: Google` | the attribute's value as is (`gcloud compute instances create ... --metadata-from-file nacre-cluster=cluster.toml`); every response must carry `Metadata-Flavor: Google`; 404 when the attribute is not set |
//! | `azure-imds` | `GET /metadata/instance/compute/userData?api-version=2021-01-01&format=text` with `Metadata: true` | base64 of the VM's user data (`az vm create ... --user-data cluster.toml`), decoded here strictly (standard alphabet, padding, no whitespace but one final line end); empty when the VM has none |
//!
//! What the clouds document (checked when this was written):
//! - AWS: IMDSv2 is session-oriented: a `PUT` to `/latest/api/token` with the required header
//!   `X-aws-ec2-metadata-token-ttl-seconds` (1 s to 6 h; without it, 400) returns the token,
//!   which every `GET` carries in `X-aws-ec2-metadata-token`; user data is "treated as opaque
//!   data: what you give is what you get back", base64-decoded for you when read through
//!   instance metadata. <https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/instancedata-data-retrieval.html>,
//!   <https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/instancedata-add-user-data.html>.
//! - GCP: the metadata server answers at `http://169.254.169.254/computeMetadata/v1/`; a request
//!   without `Metadata-Flavor: Google` is refused (403), responses carry `Metadata-Flavor:
//!   Google`; 404 is "the requested endpoint doesn't exist", 429 and 5xx are worth a retry.
//!   <https://cloud.google.com/compute/docs/metadata/querying-metadata>,
//!   <https://cloud.google.com/compute/docs/troubleshooting/troubleshoot-metadata-server>.
//! - Azure: IMDS at `169.254.169.254`, header `Metadata: true`, bypassing proxies; user data
//!   "should be base64 encoded before passed to the API", at most 64 KB, and is read back with
//!   `.../metadata/instance/compute/userData?api-version=2021-01-01&format=text` piped to
//!   `base64 --decode`. <https://learn.microsoft.com/azure/virtual-machines/user-data>,
//!   <https://learn.microsoft.com/azure/virtual-machines/instance-metadata-service>.
//!
//! The channel is untrusted either way (whoever controls the host controls it): the bytes are
//! measured before use, and `docs/cluster-config.md` explains why that suffices. The strictness
//! here is about failing clearly, not about trust.
//!
//! Metadata servers can be slow to answer right after boot: an attempt that could not connect,
//! timed out, broke off, or got 429/5xx (AWS: also 401, an expired token) is retried with
//! backoff (0.25 s doubling to 4 s) until [`Platform::wait`] has passed; a 404, any other
//! status, a malformed or oversized response, a missing `Metadata-Flavor` or bad base64 stop at
//! once.

use crate::http::{self, HttpError, Request, Response};
use crate::{ConfigError, Platform, MAX_LEN};
use base64::Engine as _;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

/// The clouds' metadata servers (AWS, GCP, Azure): 169.254.169.254, port 80.
pub const METADATA_ADDR: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(169, 254, 169, 254), 80));
/// AWS IMDSv2: the session token.
pub const AWS_TOKEN_PATH: &str = "/latest/api/token";
/// AWS IMDSv2: the instance's user data.
pub const AWS_USER_DATA_PATH: &str = "/latest/user-data";
/// The token's lifetime we ask for: long enough for one read, retries get a new one.
pub const AWS_TOKEN_TTL_S: &str = "60";
/// GCP: the instance attribute (custom metadata key) holding the configuration.
pub const GCP_ATTRIBUTE: &str = "nacre-cluster";
pub const GCP_PATH: &str = "/computeMetadata/v1/instance/attributes/nacre-cluster";
/// Azure IMDS: the VM's user data, base64 (`format=text`).
pub const AZURE_PATH: &str =
    "/metadata/instance/compute/userData?api-version=2021-01-01&format=text";

/// Longest AWS session token accepted (they are about 56 characters).
const MAX_TOKEN: usize = 1024;
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(4);

/// Why an attempt failed: try again, or stop now.
enum Fail {
    Retry(ConfigError),
    Stop(ConfigError),
}

fn url(p: &Platform, path: &str) -> String {
    match p.metadata {
        METADATA_ADDR => format!("http://169.254.169.254{path}"),
        a => format!("http://{a}{path}"),
    }
}

fn http_fail(url: &str, err: HttpError) -> Fail {
    let transient = err.is_transient();
    let e = ConfigError::Http {
        url: url.to_owned(),
        err,
    };
    if transient {
        Fail::Retry(e)
    } else {
        Fail::Stop(e)
    }
}

/// A non-200 status: 404 is "not present", 429/5xx (and `retry_also`) are transient.
fn status_fail(url: &str, r: &Response, retry_also: &[u16]) -> Fail {
    if r.status == 404 {
        return Fail::Stop(ConfigError::Missing(format!("{url} (HTTP 404)")));
    }
    let e = ConfigError::Status {
        url: url.to_owned(),
        status: r.status,
        reason: r.reason.clone(),
    };
    if r.status == 429 || r.status >= 500 || retry_also.contains(&r.status) {
        Fail::Retry(e)
    } else {
        Fail::Stop(e)
    }
}

fn get(
    p: &Platform,
    req: &Request,
    deadline: Instant,
    max_body: usize,
) -> Result<(String, Response), Fail> {
    let u = url(p, req.path);
    match http::send(p.metadata, req, deadline, max_body) {
        Ok(r) => Ok((u, r)),
        Err(e) => Err(http_fail(&u, e)),
    }
}

/// AWS IMDSv2: a session token, then the user data with it.
fn aws(p: &Platform, deadline: Instant) -> Result<Vec<u8>, Fail> {
    let (u, r) = get(
        p,
        &Request {
            method: "PUT",
            path: AWS_TOKEN_PATH,
            headers: &[("X-aws-ec2-metadata-token-ttl-seconds", AWS_TOKEN_TTL_S)],
        },
        deadline,
        MAX_TOKEN,
    )?;
    if r.status != 200 {
        return Err(status_fail(&u, &r, &[]));
    }
    let token = std::str::from_utf8(&r.body)
        .ok()
        .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| {
            Fail::Stop(ConfigError::Token {
                url: u.clone(),
                reason: format!(
                    "{} bytes, expected printable ASCII without spaces",
                    r.body.len()
                ),
            })
        })?;
    let (u, r) = get(
        p,
        &Request {
            method: "GET",
            path: AWS_USER_DATA_PATH,
            headers: &[("X-aws-ec2-metadata-token", token)],
        },
        deadline,
        MAX_LEN,
    )?;
    if r.status != 200 {
        // 401: the token expired or was not accepted; a new attempt gets a new one.
        return Err(status_fail(&u, &r, &[401]));
    }
    Ok(r.body)
}

/// GCP: the instance attribute; every response must say it is Google's metadata server.
fn gcp(p: &Platform, deadline: Instant) -> Result<Vec<u8>, Fail> {
    let (u, r) = get(
        p,
        &Request {
            method: "GET",
            path: GCP_PATH,
            headers: &[("Metadata-Flavor", "Google")],
        },
        deadline,
        MAX_LEN,
    )?;
    let flavor: Vec<&str> = r.headers("metadata-flavor").collect();
    if flavor != ["Google"] {
        return Err(Fail::Stop(ConfigError::Flavor {
            url: u,
            found: flavor.join(", "),
        }));
    }
    if r.status != 200 {
        return Err(status_fail(&u, &r, &[]));
    }
    Ok(r.body)
}

/// The largest base64 text of a [`MAX_LEN`] configuration, with a final CRLF.
const AZURE_MAX_BODY: usize = MAX_LEN.div_ceil(3) * 4 + 2;

/// Azure IMDS: the user data, base64.
fn azure(p: &Platform, deadline: Instant) -> Result<Vec<u8>, Fail> {
    let (u, r) = get(
        p,
        &Request {
            method: "GET",
            path: AZURE_PATH,
            headers: &[("Metadata", "true")],
        },
        deadline,
        AZURE_MAX_BODY,
    )?;
    if r.status != 200 {
        return Err(status_fail(&u, &r, &[]));
    }
    decode_user_data(&u, &r.body).map_err(Fail::Stop)
}

/// Strict base64 (standard alphabet, padded, canonical): no whitespace but one final line end.
pub fn decode_user_data(url: &str, body: &[u8]) -> Result<Vec<u8>, ConfigError> {
    let text = body
        .strip_suffix(b"\r\n")
        .or_else(|| body.strip_suffix(b"\n"))
        .unwrap_or(body);
    if text.is_empty() {
        return Err(ConfigError::Missing(format!("{url} (no user data)")));
    }
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| ConfigError::Base64 {
            url: url.to_owned(),
            reason: e.to_string(),
        })
}

/// Read from a metadata server, retrying transient failures until `p.wait` has passed.
pub(crate) fn read(
    p: &Platform,
    source: crate::Source,
    log: &dyn Fn(&str),
) -> Result<Vec<u8>, ConfigError> {
    let attempt: fn(&Platform, Instant) -> Result<Vec<u8>, Fail> = match source {
        crate::Source::AwsImds => aws,
        crate::Source::GcpMetadata => gcp,
        crate::Source::AzureImds => azure,
        crate::Source::QemuFwCfg => {
            return Err(ConfigError::Missing(format!(
                "{} is not a metadata server source",
                source.name()
            )))
        }
    };
    let start = Instant::now();
    let mut backoff = FIRST_BACKOFF;
    let mut attempts: u32 = 0;
    loop {
        attempts += 1;
        let budget = p.wait.saturating_sub(start.elapsed());
        let deadline = Instant::now() + p.request_timeout.min(budget).max(Duration::from_millis(1));
        let bytes = match attempt(p, deadline) {
            Ok(b) => b,
            Err(Fail::Stop(e)) => return Err(e),
            Err(Fail::Retry(e)) => {
                let left = p.wait.saturating_sub(start.elapsed());
                if left <= backoff {
                    return Err(ConfigError::GaveUp {
                        attempts,
                        secs: start.elapsed().as_secs_f64(),
                        last: Box::new(e),
                    });
                }
                log(&format!(
                    "{e}; attempt {attempts}, trying again in {:.2} s",
                    backoff.as_secs_f64()
                ));
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        if bytes.len() > MAX_LEN {
            return Err(ConfigError::TooLarge(bytes.len()));
        }
        return Ok(bytes);
    }
}
