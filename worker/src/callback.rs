//! The completion callback: one POST to the URL the client gave, best effort.
//!
//! The URL comes from an untrusted client, so before connecting the host is resolved and the
//! request is refused if any resolved address is not a public unicast address (loopback, private,
//! link-local — which includes the cloud metadata address 169.254.169.254 — CGNAT, multicast, …)
//! or the host is a metadata server's name, unless [`Allowlist`] says otherwise. The connection is
//! then pinned to exactly the addresses that were checked, so a second, different DNS answer
//! (rebinding) cannot redirect it, and redirects are not followed.
//!
//! A callback never fails a job: its outcome ([`Outcome`]) lands in the job record's
//! `callback_status` and in the logs.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::LazyLock;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use ipnet::IpNet;
use serde_json::json;
use stemsep_common::job::{Job, JobState, Track};
use url::{Host, Url};

use crate::error::Error;

/// Host names that reach a cloud provider's instance metadata service from inside a VM or pod.
const METADATA_HOSTS: [&str; 2] = ["metadata.google.internal", "metadata"];

/// Networks that are not public unicast, with what they are: IANA's IPv4 and IPv6
/// special-purpose address registries, less the globally reachable entries. 255.255.255.255
/// (broadcast) is listed before the reserved 240/4 that holds it, so it gets its own name.
const NON_PUBLIC: [(&str, &str); 25] = [
    ("0.0.0.0/8", "unspecified address"),
    ("10.0.0.0/8", "private address"),
    ("100.64.0.0/10", "shared (CGNAT) address"),
    ("127.0.0.0/8", "loopback address"),
    ("169.254.0.0/16", "link-local address"),
    ("172.16.0.0/12", "private address"),
    ("192.0.0.0/24", "IETF protocol assignment address"),
    ("192.0.2.0/24", "documentation address"),
    ("192.168.0.0/16", "private address"),
    ("198.18.0.0/15", "benchmarking address"),
    ("198.51.100.0/24", "documentation address"),
    ("203.0.113.0/24", "documentation address"),
    ("224.0.0.0/4", "multicast address"),
    ("255.255.255.255/32", "broadcast address"),
    ("240.0.0.0/4", "reserved address"),
    ("::/128", "unspecified address"),
    ("::1/128", "loopback address"),
    ("64:ff9b:1::/48", "local-use NAT64 address"),
    ("100::/64", "discard-only address"),
    ("2001::/32", "Teredo tunnel address"),
    ("2001:db8::/32", "documentation address"),
    ("fc00::/7", "private (unique local) address"),
    ("fe80::/10", "link-local address"),
    ("fec0::/10", "site-local address"),
    ("ff00::/8", "multicast address"),
];

/// [`NON_PUBLIC`], parsed once.
static NON_PUBLIC_NETS: LazyLock<Vec<(IpNet, &'static str)>> = LazyLock::new(|| {
    NON_PUBLIC
        .iter()
        .map(|&(net, why)| (net.parse().expect("NON_PUBLIC holds valid networks"), why))
        .collect()
});

/// Why an address is not a public one, or `None` when it is: it lies in one of [`NON_PUBLIC`]'s
/// networks, or is an IPv6 address carrying such an IPv4 address in a form that routes to it
/// (mapped, compatible, NAT64 64:ff9b::/96, 6to4 2002::/16), which is judged as that address.
pub fn non_public(ip: IpAddr) -> Option<&'static str> {
    let ip = match ip {
        IpAddr::V6(v6) => embedded_v4(v6).map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    NON_PUBLIC_NETS
        .iter()
        .find(|(net, _)| net.contains(&ip))
        .map(|&(_, why)| why)
}

/// The IPv4 address an IPv6 address carries, for the forms that route to it.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let o = ip.octets();
    let tail = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    if let Some(v4) = ip.to_ipv4_mapped() {
        Some(v4)
    } else if s[..6] == [0; 6] && !(s[6] == 0 && s[7] <= 1) {
        // IPv4-compatible ::a.b.c.d (deprecated, still routed by some stacks); :: and ::1 excluded.
        Some(tail)
    } else if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        Some(tail)
    } else if s[0] == 0x2002 {
        Some(Ipv4Addr::new(o[2], o[3], o[4], o[5]))
    } else {
        None
    }
}

/// An allowed network: `10.0.0.0/8`, `fd00::/8`, or a bare address (a single-host network).
fn parse_net(s: &str) -> Result<IpNet, Error> {
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| Error::Config(format!("{s:?} is neither a host name nor an IP network")))
}

/// Destinations allowed even though they are not public: exact host names and IP networks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowlist {
    hosts: Vec<String>,
    nets: Vec<IpNet>,
}

impl Allowlist {
    /// Parses entries such as `127.0.0.1`, `10.0.0.0/8`, `hooks.internal`; blanks are skipped.
    /// An entry that parses as an address or network is one; anything else is a host name.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, Error> {
        let mut list = Allowlist::default();
        for e in entries {
            let e = e.as_ref().trim();
            if e.is_empty() {
                continue;
            }
            if e.contains('/') || e.parse::<IpAddr>().is_ok() {
                list.nets.push(parse_net(e)?);
            } else if e
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
            {
                list.hosts
                    .push(e.trim_end_matches('.').to_ascii_lowercase());
            } else {
                return Err(Error::Config(format!(
                    "{e:?} is neither a host name nor an IP network"
                )));
            }
        }
        Ok(list)
    }

    fn allows_host(&self, host: &str) -> bool {
        self.hosts.iter().any(|h| h == host)
    }

    /// IPv4-mapped IPv6 addresses count as IPv4.
    fn allows_ip(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.nets.iter().any(|n| n.contains(&ip))
    }
}

/// Whether a destination may be called: `Err(reason)` when it must be refused.
///
/// `host` is the URL's host as written (lowercase, without brackets); `addrs` are all the
/// addresses it resolved to.
pub fn check_destination(allow: &Allowlist, host: &str, addrs: &[IpAddr]) -> Result<(), String> {
    let host = host.trim_end_matches('.');
    if allow.allows_host(host) {
        return Ok(());
    }
    if METADATA_HOSTS.contains(&host) {
        return Err(format!("{host} is a metadata server"));
    }
    if addrs.is_empty() {
        return Err(format!("{host} resolved to no address"));
    }
    for &ip in addrs {
        if let Some(why) = non_public(ip) {
            if !allow.allows_ip(ip) {
                return Err(format!("{host} resolves to {ip}, a {why}"));
            }
        }
    }
    Ok(())
}

/// How a callback ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The endpoint answered with a 2xx status.
    Delivered,
    /// Not attempted: the URL is malformed or points somewhere forbidden.
    Refused(String),
    /// Attempted, but every try failed (connection error, timeout, non-2xx status).
    Failed(String),
}

impl Outcome {
    /// A short label for metrics: `delivered`, `refused`, `failed`.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Refused(_) => "refused",
            Outcome::Failed(_) => "failed",
        }
    }
}

impl std::fmt::Display for Outcome {
    /// The text stored in the job record's `callback_status`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Delivered => f.write_str("delivered"),
            Outcome::Refused(why) => write!(f, "refused: {why}"),
            Outcome::Failed(why) => write!(f, "failed: {why}"),
        }
    }
}

/// Settings for [`Notifier`].
#[derive(Debug, Clone)]
pub struct CallbackSettings {
    /// Non-public destinations that may be called anyway.
    pub allow: Allowlist,
    /// Base URL clients download stems from, e.g. `http://localhost:5000`.
    pub public_url: Url,
    /// Time limit of one try (connect + request + response).
    pub timeout: Duration,
    /// Tries before giving up (at least 1).
    pub tries: u32,
    /// Pause before the second try; doubled before each further one.
    pub backoff: Duration,
}

/// Delivers callbacks.
#[derive(Debug, Clone)]
pub struct Notifier {
    settings: CallbackSettings,
}

impl Notifier {
    /// A notifier with these settings.
    pub fn new(settings: CallbackSettings) -> Self {
        Notifier { settings }
    }

    /// The download URL of one stem of `job`.
    pub fn track_url(&self, job: &Job, track: &Track) -> String {
        let base = self.settings.public_url.as_str().trim_end_matches('/');
        format!("{base}/apiv1/track/{}/{track}.mp3", job.hash)
    }

    /// The JSON body sent for `job` ending in `state` (`error` for a failed job).
    pub fn payload(&self, job: &Job, state: JobState, error: Option<&str>) -> serde_json::Value {
        let tracks: serde_json::Map<String, serde_json::Value> = if state == JobState::Done {
            job.tracks()
                .iter()
                .map(|t| (t.name().to_owned(), self.track_url(job, t).into()))
                .collect()
        } else {
            Default::default()
        };
        let data = job
            .callback
            .as_ref()
            .map(|c| c.data.clone())
            .unwrap_or_default();
        let mut body = json!({ "hash": job.hash, "state": state, "tracks": tracks, "data": data });
        if let Some(e) = error {
            body["error"] = e.into();
        }
        body
    }

    /// Posts the callback of `job`, if it asked for one; `None` when it did not.
    pub async fn notify(&self, job: &Job, state: JobState, error: Option<&str>) -> Option<Outcome> {
        let cb = job.callback.as_ref()?;
        let body = self.payload(job, state, error);
        Some(self.post(&cb.url, &body).await)
    }

    /// Checks `url` and posts `body` to it, with retries.
    pub async fn post(&self, url: &str, body: &serde_json::Value) -> Outcome {
        let (url, pinned) = match self.admit(url).await {
            Ok(v) => v,
            Err(why) => return Outcome::Refused(why),
        };
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(self.settings.timeout)
            .connect_timeout(self.settings.timeout);
        if let Some((host, addrs)) = &pinned {
            builder = builder.resolve_to_addrs(host, addrs);
        }
        let client = match builder.build() {
            Ok(c) => c,
            Err(e) => return Outcome::Failed(format!("HTTP client: {e}")),
        };
        let tries = self.settings.tries.max(1);
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.settings.backoff)
            .with_max_times(tries as usize - 1);
        let post = || async {
            match client.post(url.clone()).json(body).send().await {
                Ok(r) if r.status().is_success() => Ok(()),
                Ok(r) => Err(format!("HTTP {}", r.status())),
                Err(e) => Err(error_chain(&e)),
            }
        };
        match post.retry(backoff).await {
            Ok(()) => Outcome::Delivered,
            Err(last) => Outcome::Failed(format!("{last} (after {tries} tries)")),
        }
    }

    /// Parses and vets `url`; for a domain, also the addresses the request must be pinned to.
    async fn admit(&self, url: &str) -> Result<(Url, Option<(String, Vec<SocketAddr>)>), String> {
        let url = Url::parse(url).map_err(|e| format!("invalid URL: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("scheme {:?} is not http or https", url.scheme()));
        }
        let port = url.port_or_known_default().ok_or("no port")?;
        match url.host() {
            None => Err("the URL has no host".into()),
            Some(Host::Ipv4(ip)) => {
                check_destination(&self.settings.allow, &ip.to_string(), &[ip.into()])?;
                Ok((url, None))
            }
            Some(Host::Ipv6(ip)) => {
                check_destination(&self.settings.allow, &ip.to_string(), &[ip.into()])?;
                Ok((url, None))
            }
            Some(Host::Domain(d)) => {
                let host = d.to_ascii_lowercase();
                let addrs: Vec<SocketAddr> = tokio::time::timeout(
                    self.settings.timeout,
                    tokio::net::lookup_host((host.as_str(), port)),
                )
                .await
                .map_err(|_| format!("resolving {host} timed out"))?
                .map_err(|e| format!("cannot resolve {host}: {e}"))?
                .collect();
                let ips: Vec<IpAddr> = addrs.iter().map(|a| a.ip()).collect();
                check_destination(&self.settings.allow, &host, &ips)?;
                Ok((url, Some((host, addrs))))
            }
        }
    }
}

/// `e` and its sources on one line: reqwest's top-level message alone says little.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn public_addresses_pass() {
        for a in [
            "8.8.8.8",
            "1.1.1.1",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.167.1.1",
            "169.253.1.1",
            "223.255.255.255",
            "2001:4860:4860::8888",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:0808:0808::1",
        ] {
            assert_eq!(non_public(ip(a)), None, "{a}");
        }
    }

    #[test]
    fn non_public_addresses_are_named() {
        for (a, why) in [
            ("0.0.0.0", "unspecified"),
            ("0.1.2.3", "unspecified"),
            ("127.0.0.1", "loopback"),
            ("127.255.0.9", "loopback"),
            ("10.0.0.1", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("100.64.0.1", "CGNAT"),
            ("100.127.255.255", "CGNAT"),
            ("169.254.169.254", "link-local"),
            ("169.254.0.1", "link-local"),
            ("255.255.255.255", "broadcast"),
            ("224.0.0.1", "multicast"),
            ("239.255.255.250", "multicast"),
            ("240.0.0.1", "reserved"),
            ("::", "unspecified"),
            ("::1", "loopback"),
            ("fc00::1", "unique local"),
            ("fd12:3456::1", "unique local"),
            ("fe80::1", "link-local"),
            ("febf::1", "link-local"),
            ("fec0::1", "site-local"),
            ("ff02::1", "multicast"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:169.254.169.254", "link-local"),
            ("::ffff:10.1.2.3", "private"),
            ("::127.0.0.1", "loopback"),
            ("64:ff9b::a9fe:a9fe", "link-local"),
            ("2002:7f00:0001::", "loopback"),
            ("64:ff9b:1::a9fe:a9fe", "NAT64"),
            ("64:ff9b:1:ffff::1", "NAT64"),
            ("2001::1", "Teredo"),
            ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo"),
            ("192.0.0.8", "IETF"),
            ("198.18.0.1", "benchmarking"),
            ("198.19.255.255", "benchmarking"),
            ("192.0.2.1", "documentation"),
            ("2001:db8::1", "documentation"),
        ] {
            let got = non_public(ip(a));
            assert!(got.is_some_and(|g| g.contains(why)), "{a}: {got:?}");
        }
    }

    #[test]
    fn allowed_networks_match_as_written() {
        let a = Allowlist::parse(&["10.0.0.0/8", "127.0.0.1", "fd00::/8"]).unwrap();
        for yes in ["10.255.1.2", "::ffff:10.0.0.1", "127.0.0.1", "fd12::1"] {
            assert!(a.allows_ip(ip(yes)), "{yes}");
        }
        for no in ["11.0.0.1", "127.0.0.2", "fe80::1", "fc00::1"] {
            assert!(!a.allows_ip(ip(no)), "{no}");
        }
        assert!(Allowlist::parse(&["0.0.0.0/0"])
            .unwrap()
            .allows_ip(ip("192.168.0.1")));
        for bad in ["10.0.0.0/33", "fd00::/129", "10.0.0/8", "x/8", "10.0.0.0/"] {
            assert!(Allowlist::parse(&[bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn allowlist_parsing() {
        let a = Allowlist::parse(&["127.0.0.1", " 10.0.0.0/8 ", "", "Hooks.Internal."]).unwrap();
        assert_eq!(a.hosts, vec!["hooks.internal"]);
        assert_eq!(a.nets.len(), 2);
        assert!(Allowlist::parse(&["http://x"]).is_err());
        assert!(Allowlist::parse(&["10.0.0.0/40"]).is_err());
        assert_eq!(Allowlist::parse::<&str>(&[]).unwrap(), Allowlist::default());
    }

    #[test]
    fn destinations() {
        let none = Allowlist::default();
        assert!(check_destination(&none, "example.com", &[ip("93.184.215.14")]).is_ok());
        let err = check_destination(&none, "localhost", &[ip("127.0.0.1"), ip("::1")]).unwrap_err();
        assert!(err.contains("loopback"), "{err}");
        // One bad address among good ones is enough to refuse: the client picks which is used.
        assert!(check_destination(&none, "mixed.test", &[ip("8.8.8.8"), ip("10.0.0.1")]).is_err());
        assert!(check_destination(&none, "metadata.google.internal", &[ip("8.8.8.8")]).is_err());
        assert!(check_destination(&none, "metadata.google.internal.", &[ip("8.8.8.8")]).is_err());
        assert!(check_destination(&none, "metadata", &[ip("8.8.8.8")]).is_err());
        assert!(check_destination(&none, "nowhere.test", &[]).is_err());

        let lo = Allowlist::parse(&["127.0.0.1"]).unwrap();
        assert!(check_destination(&lo, "localhost", &[ip("127.0.0.1")]).is_ok());
        assert!(check_destination(&lo, "localhost", &[ip("127.0.0.1"), ip("::1")]).is_err());
        assert!(check_destination(&lo, "x", &[ip("169.254.169.254")]).is_err());
        let named = Allowlist::parse(&["localhost"]).unwrap();
        assert!(check_destination(&named, "localhost", &[ip("127.0.0.1"), ip("::1")]).is_ok());
        assert!(check_destination(&named, "other", &[ip("127.0.0.1")]).is_err());
    }

    fn notifier(allow: &[&str]) -> Notifier {
        Notifier::new(CallbackSettings {
            allow: Allowlist::parse(allow).unwrap(),
            public_url: Url::parse("http://api.example:5000/").unwrap(),
            timeout: Duration::from_secs(2),
            tries: 3,
            backoff: Duration::from_millis(10),
        })
    }

    #[tokio::test]
    async fn refused_urls_are_never_contacted() {
        let n = notifier(&[]);
        let body = json!({});
        for (url, why) in [
            ("http://localhost:5000", "loopback"),
            ("http://127.0.0.1:9/x", "loopback"),
            ("http://[::1]:5000/", "loopback"),
            ("http://169.254.169.254/computeMetadata/v1/", "link-local"),
            (
                "http://metadata.google.internal/computeMetadata/v1/",
                "metadata",
            ),
            ("http://10.1.2.3/", "private"),
            ("http://[::ffff:7f00:1]/", "loopback"),
            ("http://0x7f000001/", "loopback"),
            ("http://2130706433/", "loopback"),
            ("ftp://example.com/", "scheme"),
            ("file:///etc/passwd", "scheme"),
            ("not a url", "invalid URL"),
        ] {
            match n.post(url, &body).await {
                Outcome::Refused(r) => assert!(r.contains(why), "{url}: {r}"),
                other => panic!("{url}: {other:?}"),
            }
        }
    }

    /// A local endpoint answering every POST with `status` (and a redirect target for 3xx),
    /// counting the requests it got.
    async fn endpoint(status: u16) -> (u16, Arc<AtomicUsize>, actix_web::dev::ServerHandle) {
        use actix_web::{http::StatusCode, web, App, HttpResponse, HttpServer};
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        let server = HttpServer::new(move || {
            let h = h.clone();
            App::new().default_service(web::to(move || {
                h.fetch_add(1, Ordering::SeqCst);
                async move {
                    HttpResponse::build(StatusCode::from_u16(status).unwrap())
                        .insert_header(("location", "http://127.0.0.1:9/elsewhere"))
                        .finish()
                }
            }))
        })
        .workers(1)
        .disable_signals()
        .bind("127.0.0.1:0")
        .unwrap();
        let port = server.addrs()[0].port();
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        (port, hits, handle)
    }

    #[tokio::test]
    async fn delivery_by_allowed_name_retries_and_never_follows_redirects() {
        let body = json!({"x": 1});
        let (port, hits, h) = endpoint(200).await;
        // By name: resolved, checked, then pinned to the checked addresses.
        let url = format!("http://localhost:{port}/hook");
        assert_eq!(
            notifier(&["localhost"]).post(&url, &body).await,
            Outcome::Delivered
        );
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        assert!(matches!(
            notifier(&[]).post(&url, &body).await,
            Outcome::Refused(_)
        ));
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        h.stop(false).await;

        let (port, hits, h) = endpoint(503).await;
        let got = notifier(&["127.0.0.1"])
            .post(&format!("http://127.0.0.1:{port}/"), &body)
            .await;
        assert_eq!(
            got,
            Outcome::Failed("HTTP 503 Service Unavailable (after 3 tries)".into())
        );
        assert_eq!(hits.load(Ordering::SeqCst), 3);
        h.stop(false).await;

        let (port, hits, h) = endpoint(302).await;
        let got = notifier(&["127.0.0.1"])
            .post(&format!("http://127.0.0.1:{port}/"), &body)
            .await;
        assert!(
            matches!(&got, Outcome::Failed(w) if w.starts_with("HTTP 302")),
            "{got:?}"
        );
        assert_eq!(hits.load(Ordering::SeqCst), 3);
        h.stop(false).await;
    }

    #[test]
    fn payload_shape() {
        let n = notifier(&[]);
        let hash = stemsep_common::job::SongHash::compute(b"song", "htdemucs");
        let mut job = Job::new(hash.clone(), "htdemucs".into(), None);
        job.callback = Some(stemsep_common::job::Callback {
            url: "http://x".into(),
            data: json!({"mp3": "a.mp3", "n": 1}),
        });
        let p = n.payload(&job, JobState::Done, None);
        assert_eq!(p["hash"], hash.as_str());
        assert_eq!(p["state"], "done");
        assert_eq!(p["data"], json!({"mp3": "a.mp3", "n": 1}));
        assert_eq!(
            p["tracks"]["bass"],
            format!("http://api.example:5000/apiv1/track/{hash}/bass.mp3")
        );
        assert_eq!(p["tracks"].as_object().unwrap().len(), 4);
        assert!(p.get("error").is_none());
        let f = n.payload(&job, JobState::Failed, Some("bad input"));
        assert_eq!(f["state"], "failed");
        assert_eq!(f["error"], "bad input");
        assert_eq!(f["tracks"], json!({}));
    }
}
