//! Network namespaces a test makes and removes: the "node" and "pods" of the ambient data-plane
//! tests. The machine's own network namespace is never changed: every link is created inside a
//! test namespace (`ip -n NS link add ... peer ... netns OTHER`), every address and rule lives
//! in one, and deleting the namespaces removes them all. Names carry the test process's pid
//! (`mzt<pid>-...`), so a later run sweeps what a killed one left ([`sweep`]).
//!
//! Code that must run inside a namespace (a listener for a pod's server, a forwarder on the
//! node's loopback) runs on a thread of its own that entered it with `setns`: a socket stays in
//! the namespace it was created in, whatever thread uses it afterwards.

use std::fs::File;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The prefix of every namespace these tests make.
pub const PREFIX: &str = "mzt";

/// Where `ip netns` keeps its namespaces.
pub const NETNS_DIR: &str = "/var/run/netns";

/// Runs `ip ARGS`, failing with its stderr.
pub fn ip(args: &[&str]) -> Result<String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip (Debian package iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The names of every network namespace `ip netns` knows.
pub fn list() -> Result<Vec<String>> {
    Ok(ip(&["netns", "list"])?
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect())
}

/// Deletes the namespaces an earlier test process left behind (killed before its cleanup ran):
/// ours by prefix, whose pid no longer runs.
pub fn sweep() -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for name in list()? {
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            ip(&["netns", "del", &name])?;
            removed.push(name);
        }
    }
    Ok(removed)
}

/// A network namespace, deleted (with its links, addresses, routes and firewall rules) on drop.
#[derive(Debug)]
pub struct NetNs {
    pub name: String,
}

impl NetNs {
    /// Creates `mzt<pid>-<what>` with its loopback up.
    pub fn create(what: &str) -> Result<NetNs> {
        let name = format!("{PREFIX}{}-{what}", std::process::id());
        ip(&["netns", "add", &name])?;
        let ns = NetNs { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The path a CNI runtime passes as `CNI_NETNS`.
    pub fn path(&self) -> String {
        format!("{NETNS_DIR}/{}", self.name)
    }

    /// `ip -n <self> ARGS`.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// `sysctl -w SETTING` inside this namespace (net.* settings are per namespace).
    pub fn sysctl(&self, setting: &str) -> Result<()> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name, "sysctl", "-q", "-w", setting])
            .output()
            .context("running sysctl in a namespace")?;
        if !out.status.success() {
            bail!(
                "sysctl {setting} in {}: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// Runs `f` on a thread inside this namespace and returns its result.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        let path = self.path();
        std::thread::spawn(move || -> Result<T> {
            let file = File::open(&path).with_context(|| format!("opening {path}"))?;
            // SAFETY: setns on this thread only, with a namespace fd we hold open; the thread ends
            // after `f`, so no other code runs in the namespace by accident.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            if rc != 0 {
                bail!("setns {path}: {}", std::io::Error::last_os_error());
            }
            Ok(f())
        })
        .join()
        .map_err(|_| anyhow::anyhow!("a thread in {} panicked", self.name))?
    }

    /// A TCP listener inside this namespace.
    pub fn listen(&self, addr: SocketAddr) -> Result<TcpListener> {
        self.run(move || TcpListener::bind(addr))?
            .with_context(|| format!("listening on {addr} in {}", self.name))
    }

    /// Makes `target` (an address on the machine's loopback, such as the API server) reachable
    /// inside this namespace at `127.0.0.1:<returned port>`: a listener made inside it, whose
    /// connections a thread of the machine's namespace relays to `target`. How a process of the
    /// node (the CNI agent) reaches the control plane without a link into the machine's
    /// namespace. The relay lives as long as the namespace's listener (until it is deleted).
    pub fn forward(&self, target: SocketAddr) -> Result<u16> {
        let listener = self.listen("127.0.0.1:0".parse().expect("static address"))?;
        let port = listener.local_addr()?.port();
        std::thread::spawn(move || {
            for inbound in listener.incoming() {
                let Ok(inbound) = inbound else { break };
                std::thread::spawn(move || {
                    let Ok(outbound) = TcpStream::connect(target) else {
                        return;
                    };
                    relay(inbound, outbound);
                });
            }
        });
        Ok(port)
    }

    /// A TCP connection made from inside this namespace.
    pub fn connect(&self, addr: SocketAddr) -> Result<TcpStream> {
        self.run(move || TcpStream::connect(addr))?
            .with_context(|| format!("connecting to {addr} from {}", self.name))
    }

    /// Connects `pod` to this namespace (the node) with a veth pair made inside it: `eth0` in the
    /// pod with `pod_cidr` (an `a.b.c.d/len`), `host_if` here with a /32 route to the pod, and
    /// the pod's default route through the link. Nothing touches the machine's namespace.
    pub fn attach(&self, pod: &NetNs, host_if: &str, pod_cidr: &str, gateway: &str) -> Result<()> {
        self.ip(&[
            "link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", &pod.name,
        ])?;
        self.ip(&["link", "set", host_if, "up"])?;
        pod.ip(&["addr", "add", pod_cidr, "dev", "eth0"])?;
        pod.ip(&["link", "set", "eth0", "up"])?;
        let pod_ip = pod_cidr.split('/').next().unwrap_or(pod_cidr);
        // The node reaches the pod on its link; the pod reaches everything through the node,
        // which holds the gateway address and answers ARP for it on every link (as Calico-style
        // CNIs do with a link-local gateway).
        self.ip(&["route", "add", &format!("{pod_ip}/32"), "dev", host_if])?;
        self.ip(&["addr", "replace", &format!("{gateway}/32"), "dev", "lo"])?;
        self.sysctl("net.ipv4.ip_forward=1")?;
        pod.ip(&["route", "add", gateway, "dev", "eth0", "scope", "link"])?;
        pod.ip(&["route", "add", "default", "via", gateway, "dev", "eth0"])?;
        Ok(())
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
    }
}

/// Copies bytes both ways until either side closes.
fn relay(a: TcpStream, b: TcpStream) {
    let (Ok(a2), Ok(b2)) = (a.try_clone(), b.try_clone()) else {
        return;
    };
    let one = std::thread::spawn(move || copy_then_close(a, b2));
    copy_then_close(b, a2);
    let _ = one.join();
}

fn copy_then_close(mut from: TcpStream, mut to: TcpStream) {
    let _ = std::io::copy(&mut from, &mut to);
    let _ = to.shutdown(std::net::Shutdown::Write);
}

/// Frames seen on one link of a namespace: each TCP segment's addresses, ports and payload.
#[derive(Clone, Debug)]
pub struct Segment {
    pub src: std::net::Ipv4Addr,
    pub dst: std::net::Ipv4Addr,
    pub src_port: u16,
    pub dst_port: u16,
    pub payload: Vec<u8>,
}

/// A packet capture on a link, as tcpdump would make one (an AF_PACKET socket bound to the
/// link), in a namespace the test made. [`Capture::stop`] returns the IPv4 TCP segments seen.
pub struct Capture {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Vec<Segment>>,
}

impl NetNs {
    /// Starts capturing every frame on `link` (a link of this namespace).
    pub fn capture(&self, link: &str) -> Result<Capture> {
        let link = std::ffi::CString::new(link)?;
        let fd = self.run(move || -> Result<i32> {
            // SAFETY: plain socket calls on a socket this function owns; the link index comes
            // from the kernel.
            unsafe {
                let protocol = (libc::ETH_P_ALL as u16).to_be() as i32;
                let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, protocol);
                if fd < 0 {
                    bail!("packet socket: {}", std::io::Error::last_os_error());
                }
                let index = libc::if_nametoindex(link.as_ptr());
                if index == 0 {
                    libc::close(fd);
                    bail!("no link {link:?}");
                }
                let mut addr: libc::sockaddr_ll = std::mem::zeroed();
                addr.sll_family = libc::AF_PACKET as u16;
                addr.sll_protocol = protocol as u16;
                addr.sll_ifindex = index as i32;
                let rc = libc::bind(
                    fd,
                    &addr as *const libc::sockaddr_ll as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                );
                if rc != 0 {
                    libc::close(fd);
                    bail!(
                        "binding the packet socket: {}",
                        std::io::Error::last_os_error()
                    );
                }
                // Wake up every 100 ms to notice `stop`.
                let timeout = libc::timeval {
                    tv_sec: 0,
                    tv_usec: 100_000,
                };
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    &timeout as *const libc::timeval as *const libc::c_void,
                    std::mem::size_of::<libc::timeval>() as u32,
                );
                Ok(fd)
            }
        })??;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut segments = Vec::new();
            let mut buf = vec![0u8; 65536];
            while !stopping.load(std::sync::atomic::Ordering::Relaxed) {
                // SAFETY: reads into a buffer of the given length.
                let n =
                    unsafe { libc::recv(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len(), 0) };
                if n > 0 {
                    segments.extend(parse_frame(&buf[..n as usize]));
                }
            }
            // SAFETY: the fd is this thread's alone.
            unsafe { libc::close(fd) };
            segments
        });
        Ok(Capture { stop, thread })
    }
}

impl Capture {
    pub fn stop(self) -> Vec<Segment> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

/// An Ethernet frame carrying IPv4 TCP, as a segment.
fn parse_frame(frame: &[u8]) -> Option<Segment> {
    if frame.len() < 14 + 20 || frame[12..14] != [0x08, 0x00] {
        return None;
    }
    let ip = &frame[14..];
    let header = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]])).min(ip.len());
    if ip[9] != 6 || total < header + 20 {
        return None;
    }
    let tcp = &ip[header..total];
    let offset = usize::from(tcp[12] >> 4) * 4;
    Some(Segment {
        src: std::net::Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]),
        dst: std::net::Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]),
        src_port: u16::from_be_bytes([tcp[0], tcp[1]]),
        dst_port: u16::from_be_bytes([tcp[2], tcp[3]]),
        payload: tcp.get(offset..).unwrap_or_default().to_vec(),
    })
}
